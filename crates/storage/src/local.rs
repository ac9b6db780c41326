//! Local directories (development, NAS mounts). Keys map to files under the root; symbolic
//! links are never followed out of it: the root's real path must lie under a configured local
//! root at every operation (so a path swapped for a symlink after saving is refused, the file
//! system's version of DNS rebinding), and the directory an object lands in must lie under the
//! root's real path.
//!
//! A streaming upload writes an unnamed file (`O_TMPFILE`) in the directory the object lands in
//! and names it only when finished (`linkat`), so an unfinished upload is never visible and an
//! abandoned one is freed by the kernel when its descriptor closes: nothing is ever removed,
//! which keeps the agent free of delete calls. Linux only.

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
        Ok(self.located(key, create_dirs).await?.1)
    }

    /// The root's real path and the file for `key`, after checking that its directory really
    /// lies under the root.
    async fn located(&self, key: &str, create_dirs: bool) -> Result<(PathBuf, PathBuf), Error> {
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
        Ok((root, path))
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

    #[cfg(feature = "delete")]
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

    /// Starts a streaming upload at `key`: an unnamed file in the directory the object lands in.
    #[cfg(target_os = "linux")]
    pub(crate) async fn upload(&self, key: &str) -> Result<Upload, Error> {
        let (root, path) = self.located(key, true).await?;
        // Checked again when finishing (the link fails if a file appeared since); this spares
        // streaming gigabytes only to be refused at the end.
        if tokio::fs::symlink_metadata(&path).await.is_ok() {
            return Err(exists(key));
        }
        let name = path
            .file_name()
            .ok_or(Error::BadKey("must name a file"))?
            .to_owned();
        let parent = path.parent().unwrap_or(&root).to_path_buf();
        let owned_key = key.to_owned();
        let (dir, file) =
            tokio::task::spawn_blocking(move || open_unnamed(&root, &parent, &owned_key))
                .await
                .map_err(|e| Error::Failed(format!("cannot start the upload: {e}")))??;
        Ok(Upload {
            file: tokio::fs::File::from_std(file),
            dir,
            name,
            key: key.to_owned(),
        })
    }

    /// Opens the object at `key` for streaming; returns the file and its size.
    pub(crate) async fn download(&self, key: &str) -> Result<(tokio::fs::File, u64), Error> {
        let path = self.file(key, false).await?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound),
            Err(e) => return Err(io(&format!("cannot read {key}"), &e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| io(&format!("cannot read {key}"), &e))?;
        // A directory is not an object, as `list` sees it.
        if !meta.is_file() {
            return Err(Error::NotFound);
        }
        Ok((file, meta.len()))
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

#[cfg(target_os = "linux")]
fn exists(key: &str) -> Error {
    Error::Failed(format!(
        "an object already exists at {key}; uploads never replace one"
    ))
}

/// `/proc/self/fd/<fd>`: the path through which the kernel links an unnamed file (`linkat` with
/// `AT_EMPTY_PATH` would need `CAP_DAC_READ_SEARCH`), and reads a descriptor's real path.
#[cfg(target_os = "linux")]
fn proc_fd(fd: std::os::fd::BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens `parent` and an unnamed file in it. The object is later linked into the directory this
/// descriptor holds, whatever happens to the path meanwhile, so that directory is the one checked
/// against the root.
#[cfg(target_os = "linux")]
fn open_unnamed(
    root: &Path,
    parent: &Path,
    key: &str,
) -> Result<(std::os::fd::OwnedFd, std::fs::File), Error> {
    use std::os::fd::AsFd;

    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;

    let shown = relative(root, parent);
    let dir = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(&format!("cannot open {shown}"), &e.into()))?;
    let real = std::fs::read_link(proc_fd(dir.as_fd())).map_err(|e| {
        io(
            &format!("cannot resolve {shown} through /proc/self/fd (is /proc mounted?)"),
            &e,
        )
    })?;
    if !real.starts_with(root) {
        return Err(Error::Failed(format!(
            "{shown} leads outside the destination through a symbolic link"
        )));
    }
    // Mode as `put` creates files: 0666 less the umask.
    let file = rustix::fs::openat(
        &dir,
        ".",
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )
    .map_err(|e| match e {
        // EOPNOTSUPP: the file system has no O_TMPFILE; EISDIR: the kernel has none (< 3.11).
        Errno::OPNOTSUPP | Errno::ISDIR => Error::Failed(format!(
            "the file system of {shown} does not support unnamed temporary files (O_TMPFILE), \
             which streaming uploads to a local directory need"
        )),
        e => io(&format!("cannot write {key}"), &e.into()),
    })?;
    Ok((dir, std::fs::File::from(file)))
}

/// A streaming upload to a local directory: an unnamed file, named when finished.
#[cfg(target_os = "linux")]
pub(crate) struct Upload {
    file: tokio::fs::File,
    /// The directory the object lands in, checked against the root when the upload started.
    dir: std::os::fd::OwnedFd,
    name: std::ffi::OsString,
    key: String,
}

#[cfg(target_os = "linux")]
impl Upload {
    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(&chunk)
            .await
            .map_err(|e| io(&format!("cannot write {}", self.key), &e))
    }

    /// Makes the data durable, then gives the file its name; refuses if the name is taken.
    pub(crate) async fn finish(self) -> Result<(), Error> {
        use tokio::io::AsyncWriteExt;
        let Upload {
            mut file,
            dir,
            name,
            key,
        } = self;
        // tokio writes in the background; its last write's error surfaces here.
        file.flush()
            .await
            .map_err(|e| io(&format!("cannot write {key}"), &e))?;
        let file = file.into_std().await;
        tokio::task::spawn_blocking(move || link(&file, &dir, &name, &key))
            .await
            .map_err(|e| Error::Failed(format!("cannot finish the upload: {e}")))?
    }
}

#[cfg(target_os = "linux")]
fn link(
    file: &std::fs::File,
    dir: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
    key: &str,
) -> Result<(), Error> {
    use std::os::fd::AsFd;

    use rustix::fs::{AtFlags, CWD};
    use rustix::io::Errno;

    // Durable before it has a name: a crash never leaves a named, half-written object.
    file.sync_all()
        .map_err(|e| io(&format!("cannot write {key}"), &e))?;
    // linkat never replaces an existing name, so a finished object is never overwritten.
    rustix::fs::linkat(
        CWD,
        proc_fd(file.as_fd()),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(|e| match e {
        Errno::EXIST => exists(key),
        e => io(&format!("cannot name {key}"), &e.into()),
    })?;
    // And the new name durable too.
    rustix::fs::fsync(dir).map_err(|e| io(&format!("cannot name {key}"), &e.into()))
}
