//! A long-running process the demo starts (`coffer serve`, `coffer-agent run`); dropping it
//! stops it, so it stops on success, failure, panic and interrupt alike.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::proc::{self, step};

#[derive(Debug)]
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` in its own process group (a Ctrl-C at the terminal reaches xtask, which
    /// stops it in order), stdout and stderr to a fresh `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Daemon> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("duplicate a log file handle")?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start `{}`", proc::describe(&cmd)))?;
        Ok(Daemon {
            name,
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Fails, quoting the log's tail, if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child
                .try_wait()
                .with_context(|| format!("check on {}", self.name))?
        {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                proc::tail(&self.log, 15)
            );
        }
        Ok(())
    }

    /// The last lines of its log, for error messages.
    pub fn tail(&self) -> String {
        format!(
            "last lines of {}:\n{}",
            self.log.display(),
            proc::tail(&self.log, 15)
        )
    }

    /// SIGTERM, then SIGKILL after 10 s. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            step(format!("stopping {} (pid {})", self.name, child.id()));
            if !proc::stop_child(&mut child, Signal::SIGTERM, Duration::from_secs(10)) {
                eprintln!(
                    "xtask: {} did not exit within 10s of SIGTERM; killed it",
                    self.name
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
