//! Where things live: the repository root and its git-ignored `.coffer/` directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
}

impl Repo {
    /// The workspace root: the parent of xtask's manifest directory. `cargo run` sets
    /// `CARGO_MANIFEST_DIR` at run time; the compile-time value is the fallback for running
    /// the binary directly (it can be stale when a shared target dir served another clone).
    pub fn locate() -> Result<Repo> {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .context("find the workspace root above xtask/")?
            .to_path_buf();
        let root = root
            .canonicalize()
            .with_context(|| format!("resolve {}", root.display()))?;
        Ok(Repo { root })
    }

    /// `.coffer/`, created on first use.
    pub fn coffer_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join(".coffer");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(dir)
    }

    /// A file in `infra/dev/`.
    pub fn infra_dev(&self, file: &str) -> PathBuf {
        self.root.join("infra/dev").join(file)
    }

    /// A path relative to the root, for messages.
    pub fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}
