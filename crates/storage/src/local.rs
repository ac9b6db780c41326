//! Local directories (development, NAS mounts). Keys map to files under the root; symbolic
//! links are never followed out of it: the root's real path must lie under a configured local
//! root at every operation (so a path swapped for a symlink after saving is refused, the file
//! system's version of DNS rebinding), and the directory an object lands in must lie under the
//! root's real path.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::{Error, Refused};

pub(crate) struct LocalStore {
    pub(crate) root: PathBuf,
    allowed_roots: Vec<PathBuf>,
}

fn io(what: &str, e: &std::io::Error) -> Error {
    Error::Failed(format!("{what}: {e}"))
}

impl LocalStore {
    pub(crate) fn new(root: PathBuf, allowed_roots: Vec<PathBuf>) -> Self {
        Self {
            root,
            allowed_roots,
        }
    }

    /// The root's real path, checked to be a directory under a configured root's real path.
    async fn real_root(&self) -> Result<PathBuf, Error> {
        let real = tokio::fs::canonicalize(&self.root)
            .await
            .map_err(|e| io(&format!("cannot open {}", self.root.display()), &e))?;
        let meta = tokio::fs::metadata(&real)
            .await
            .map_err(|e| io(&format!("cannot open {}", self.root.display()), &e))?;
        if !meta.is_dir() {
            return Err(Error::Failed(format!(
                "{} is not a directory",
                self.root.display()
            )));
        }
        for allowed in &self.allowed_roots {
            if let Ok(allowed) = tokio::fs::canonicalize(allowed).await
                && real.starts_with(&allowed)
            {
                return Ok(real);
            }
        }
        Err(Error::Refused(Refused {
            field: "path",
            rule: "resolves (through a symbolic link) outside the deployment's local roots".into(),
        }))
    }

    /// The file for `key`, after checking that its directory really lies under the root.
    async fn file(&self, key: &str, create_dirs: bool) -> Result<PathBuf, Error> {
        let root = self.real_root().await?;
        let path = root.join(key);
        let parent = path.parent().unwrap_or(&root).to_path_buf();
        if create_dirs {
            tokio::fs::create_dir_all(&parent).await.map_err(|e| {
                io(
                    &format!("cannot create directory {}", relative(&root, &parent)),
                    &e,
                )
            })?;
        }
        match tokio::fs::canonicalize(&parent).await {
            Ok(real) if real.starts_with(&root) => {}
            Ok(_) => {
                return Err(Error::Failed(format!(
                    "{} leads outside the destination through a symbolic link",
                    relative(&root, &parent)
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound),
            Err(e) => return Err(io(&format!("cannot open {}", relative(&root, &parent)), &e)),
        }
        if let Ok(meta) = tokio::fs::symlink_metadata(&path).await
            && meta.file_type().is_symlink()
        {
            return Err(Error::Failed(format!(
                "{key} is a symbolic link, which is never followed"
            )));
        }
        Ok(path)
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let root = self.real_root().await?;
        let dir_part = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut keys = Vec::new();
        let mut pending = vec![if dir_part.is_empty() {
            root.clone()
        } else {
            root.join(dir_part)
        }];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                // Like an S3 prefix with no objects: nothing there (or a file in the way).
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(io(&format!("cannot list {}", relative(&root, &dir)), &e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| io(&format!("cannot list {}", relative(&root, &dir)), &e))?
            {
                let kind = entry.file_type().await.map_err(|e| io("cannot list", &e))?;
                let path = entry.path();
                if kind.is_dir() {
                    pending.push(path);
                } else if kind.is_file() {
                    let key = relative(&root, &path);
                    if key.starts_with(prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub(crate) async fn put(&self, key: &str, bytes: Bytes) -> Result<(), Error> {
        let path = self.file(key, true).await?;
        // Written aside and renamed, so a reader never sees half an object.
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        ));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(|e| io(&format!("cannot write {key}"), &e))?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io(&format!("cannot write {key}"), &e));
        }
        Ok(())
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Bytes, Error> {
        let path = self.file(key, false).await?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound),
            Err(e) => Err(io(&format!("cannot read {key}"), &e)),
        }
    }

    #[cfg(feature = "delete")]
    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        let path = match self.file(key, false).await {
            Ok(path) => path,
            Err(Error::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&format!("cannot delete {key}"), &e)),
        }
    }
}

/// `path` relative to `root`, `/`-separated (for keys and messages).
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let text = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    if text.is_empty() { ".".into() } else { text }
}
