//! Liveness and readiness files, for a supervisor (systemd, a Kubernetes exec probe, a
//! monitoring check) to read without the agent opening any socket:
//!
//! - `live`: rewritten with the current time every few seconds while the agent runs; stale
//!   means hung;
//! - `ready`: present while the agent is connected and taking jobs;
//! - `halted`: why the agent stopped for good (a revoked identity), written once.

use std::path::{Path, PathBuf};

use chrono::Utc;

/// The status directory.
#[derive(Debug, Clone)]
pub struct Status {
    dir: PathBuf,
}

const LIVE: &str = "live";
const READY: &str = "ready";
const HALTED: &str = "halted";

impl Status {
    /// Status files in `dir` (created if missing). A `halted` file left by an earlier run
    /// stays until the operator removes it with the identity it speaks of.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let status = Self {
            dir: dir.to_path_buf(),
        };
        status.set_ready(false)?;
        Ok(status)
    }

    /// Marks the agent alive now.
    pub fn alive(&self) -> std::io::Result<()> {
        self.write(LIVE, &Utc::now().to_rfc3339())
    }

    /// Marks the agent ready (or not) to take jobs.
    pub fn set_ready(&self, ready: bool) -> std::io::Result<()> {
        if ready {
            return self.write(READY, &Utc::now().to_rfc3339());
        }
        match std::fs::remove_file(self.dir.join(READY)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Records why the agent halted, and that it is neither ready nor alive.
    pub fn halted(&self, reason: &str) -> std::io::Result<()> {
        self.set_ready(false)?;
        self.write(HALTED, reason)?;
        match std::fs::remove_file(self.dir.join(LIVE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The agent stopped normally: neither ready nor alive.
    pub fn stopped(&self) -> std::io::Result<()> {
        self.set_ready(false)?;
        match std::fs::remove_file(self.dir.join(LIVE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn write(&self, name: &str, contents: &str) -> std::io::Result<()> {
        let next = self.dir.join(format!(".{name}.next"));
        std::fs::write(&next, format!("{contents}\n"))?;
        std::fs::rename(next, self.dir.join(name))
    }
}
