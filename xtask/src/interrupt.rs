//! Ctrl-C, SIGTERM and SIGHUP handling.
//!
//! The handler only raises a flag: the main thread notices it in its wait loops
//! ([`crate::proc`]), returns [`Interrupted`], and the stack's drop guard stops everything in
//! one place. A second signal exits at once, for when a stop itself hangs; the next run then
//! stops whatever `.coffer/stack.pids` still lists.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

pub fn install() -> Result<()> {
    ctrlc::set_handler(|| {
        if SIGNALS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("xtask: interrupted, stopping (interrupt again to exit at once)");
        } else {
            eprintln!(
                "xtask: interrupted twice, exiting now; the next run stops what .coffer/stack.pids lists"
            );
            std::process::exit(130);
        }
    })
    .context("install the Ctrl-C handler")
}

/// Whether the user (or CI) asked xtask to stop.
pub fn requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Returns [`Interrupted`] once a stop was requested.
pub fn check() -> Result<()> {
    if requested() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// The error a wait loop returns when it gave up because of a signal.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}
