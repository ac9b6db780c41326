//! Storage destinations: where backups are written, shared by the agent (which uploads) and
//! scheduling (which probes destinations and deletes for retention).
//!
//! - [`Location`]: an S3-compatible bucket (endpoint, region, bucket, prefix, path-style) or a
//!   local directory (development, NAS mounts).
//! - [`Store`]: an object-store handle over a location: [`Store::list`], [`Store::put`],
//!   [`Store::get`], the streaming [`Store::upload`] and [`Store::download`], and — only with the
//!   cargo feature `delete`, which only scheduling enables — `Store::delete` and `Store::probe`
//!   (list → write → read back → delete of a small random object). The agent never has a delete
//!   call compiled in.
//! - [`Upload`]: an object being written in chunks with bounded memory (S3: a multipart upload
//!   of [`PART_SIZE`] parts; local: an unnamed file named on finish). Nothing is visible at the
//!   key until [`Upload::finish`]; [`Upload::abort`] leaves nothing behind, without a delete call.
//! - [`Download`]: an object read as a stream ([`tokio::io::AsyncRead`]).
//! - [`guard`]: the SSRF guard, checked when a destination is saved and on every connection.
//! - [`S3Key`]: an S3 access key as a storage credential holds it; the secret never prints.
//!
//! Keys given to a [`Store`] are relative to the location's prefix (local: its root), use `/`
//! as separator and may not hold empty, `.` or `..` segments.

pub mod guard;
mod local;
mod s3;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, ReadBuf};

pub use guard::{AddressClass, EndpointError, Guard, Policy, Refused};

/// Where a destination's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3-compatible bucket.
    S3 {
        /// `http(s)://host[:port]`, without path, query or credentials.
        endpoint: url::Url,
        /// The signing region, e.g. `us-east-1`.
        region: String,
        /// The bucket.
        bucket: String,
        /// Key prefix: empty, or ending with `/`.
        prefix: String,
        /// Address the bucket in the path (`endpoint/bucket/key`) rather than the host name
        /// (`bucket.endpoint/key`); most S3-compatible servers want this.
        path_style: bool,
    },
    /// A directory on the control plane's file system (development, NAS mounts); absolute,
    /// normalised, under one of the deployment's local roots.
    Local {
        /// The directory; it must exist.
        root: PathBuf,
    },
}

/// An S3 access key, as the value of a `storage` credential holds it:
/// `{"access_key_id": "...", "secret_access_key": "..."}`. Never printed.
pub struct S3Key {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
}

impl fmt::Debug for S3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Key([REDACTED])")
    }
}

/// A storage credential's value is not an S3 key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must hold JSON {{\"access_key_id\": \"...\", \"secret_access_key\": \"...\"}} with both fields non-empty"
)]
pub struct KeyFormatError;

impl S3Key {
    /// Parses a credential value. The error never echoes the value (serde's messages can).
    pub fn from_json(value: &[u8]) -> Result<Self, KeyFormatError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            access_key_id: String,
            secret_access_key: SecretString,
        }
        let raw: Raw = serde_json::from_slice(value).map_err(|_| KeyFormatError)?;
        if raw.access_key_id.trim().is_empty() || raw.secret_access_key.expose_secret().is_empty() {
            return Err(KeyFormatError);
        }
        Ok(S3Key {
            access_key_id: raw.access_key_id,
            secret_access_key: raw.secret_access_key,
        })
    }
}

/// A storage operation failed. `cause` never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The SSRF guard refused the connection (connect-time check).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A key breaks the key rules.
    #[error("key {0}")]
    BadKey(&'static str),
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// The destination answered with an error, or could not be reached.
    #[error("{0}")]
    Failed(String),
}

/// A step of [`Store::probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Listing the prefix.
    List,
    /// Writing the probe object.
    Write,
    /// Reading it back and comparing the bytes.
    Read,
    /// Deleting it.
    Delete,
}

impl Step {
    /// `list`, `write`, `read` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::List => "list",
            Step::Write => "write",
            Step::Read => "read",
            Step::Delete => "delete",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A probe failed: the step and why. `Display`: `probe failed at <step>: <cause>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("probe failed at {step}: {cause}")]
pub struct ProbeError {
    /// The step that failed.
    pub step: Step,
    /// Why.
    pub cause: Error,
}

/// The size of the parts a streaming upload sends to S3 (the last part may be shorter). S3 wants
/// at least 5 MiB for all but the last part and allows 10,000 parts, so one object can hold up to
/// 78 GiB. An upload buffers about two parts: one being filled while the previous one is sent.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where [`Store::probe`] writes its object, under the location's prefix.
pub const PROBE_DIR: &str = ".coffer-probe";

/// Checks a key: relative, `/`-separated, no empty, `.` or `..` segments, no NUL or `\`.
pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::BadKey("must not be empty"));
    }
    if key.len() > 900 {
        return Err(Error::BadKey("must be at most 900 bytes"));
    }
    if key.contains(['\0', '\\']) || key.chars().any(char::is_control) {
        return Err(Error::BadKey("must not contain control characters or \\"));
    }
    if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(Error::BadKey(
            "must be relative with no empty, . or .. segments",
        ));
    }
    Ok(())
}

enum Backend {
    S3(s3::S3Store),
    Local(local::LocalStore),
}

/// An object-store handle over a [`Location`].
pub struct Store {
    backend: Backend,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::S3(s) => f
                .debug_struct("Store")
                .field("bucket", &s.bucket)
                .field("prefix", &s.prefix)
                .finish(),
            Backend::Local(l) => f.debug_struct("Store").field("root", &l.root).finish(),
        }
    }
}

impl Store {
    /// A handle over `location`. Checks the location against `guard` first (an IP-literal
    /// endpoint here, since connectors never resolve one; a name is checked on every connection
    /// by the guarded resolver; a local path against the deployment's roots). An S3 location
    /// needs `key`.
    pub async fn open(
        location: &Location,
        key: Option<S3Key>,
        guard: &Guard,
    ) -> Result<Self, OpenError> {
        let backend = match location {
            Location::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                path_style,
            } => {
                if !endpoint.username().is_empty() || endpoint.password().is_some() {
                    return Err(OpenError::Refused(Refused {
                        field: "endpoint",
                        rule: "must not carry credentials".into(),
                    }));
                }
                match endpoint.host() {
                    Some(url::Host::Ipv4(ip)) => guard.check_literal(ip.into())?,
                    Some(url::Host::Ipv6(ip)) => guard.check_literal(ip.into())?,
                    Some(url::Host::Domain(_)) => {}
                    None => return Err(OpenError::Refused(guard_host_missing())),
                }
                let key = key.ok_or(OpenError::MissingKey)?;
                Backend::S3(s3::S3Store::new(
                    endpoint,
                    region,
                    bucket,
                    prefix,
                    *path_style,
                    key,
                    guard,
                ))
            }
            Location::Local { root } => {
                guard.check_local_path(root)?;
                Backend::Local(local::LocalStore::new(
                    root.clone(),
                    guard.policy().local_roots.clone(),
                ))
            }
        };
        Ok(Self { backend })
    }

    /// Every key under `prefix` (relative to the location's prefix), in key order. An empty
    /// `prefix` lists everything.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, Error> {
        match &self.backend {
            Backend::S3(s) => s.list(prefix).await,
            Backend::Local(l) => l.list(prefix).await,
        }
    }

    /// Writes `bytes` at `key`, replacing any object there. Replacing an object destroys it,
    /// so, like `delete`, only the `delete` feature has it; uploads ([`Store::upload`]) never
    /// replace one.
    #[cfg(feature = "delete")]
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), Error> {
        check_key(key)?;
        match &self.backend {
            Backend::S3(s) => s.put(key, bytes).await,
            Backend::Local(l) => l.put(key, bytes).await,
        }
    }

    /// Reads the object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, Error> {
        check_key(key)?;
        match &self.backend {
            Backend::S3(s) => s.get(key).await,
            Backend::Local(l) => l.get(key).await,
        }
    }

    /// Starts writing a new object at `key`; nothing is visible at `key` until
    /// [`Upload::finish`]. Give up with [`Upload::abort`].
    ///
    /// An S3 upload replaces an object already at `key` when it finishes; a local one refuses to
    /// (here, and again at finish). A local upload needs Linux and a file system with `O_TMPFILE`
    /// (ext4, xfs, btrfs, tmpfs do; NFS does not, so an NFS-mounted NAS fails here with a message
    /// saying so), and creates the directories of `key` at once, which stay if the upload is
    /// abandoned (they hold no object).
    pub async fn upload(&self, key: &str) -> Result<Upload, Error> {
        check_key(key)?;
        let inner = match &self.backend {
            Backend::S3(s) => UploadInner::S3(s.upload(key).await?),
            #[cfg(target_os = "linux")]
            Backend::Local(l) => UploadInner::Local(l.upload(key).await?),
            #[cfg(not(target_os = "linux"))]
            Backend::Local(_) => {
                return Err(Error::Failed(
                    "streaming uploads to a local directory need Linux (O_TMPFILE)".into(),
                ));
            }
        };
        Ok(Upload {
            inner,
            key: key.to_owned(),
            written: 0,
            broken: false,
        })
    }

    /// Streams the object at `key` ([`Error::NotFound`] if there is none).
    pub async fn download(&self, key: &str) -> Result<Download, Error> {
        check_key(key)?;
        let (body, size): (Pin<Box<dyn AsyncRead + Send + Sync>>, _) = match &self.backend {
            Backend::S3(s) => {
                let (body, size) = s.download(key).await?;
                (Box::pin(body), size)
            }
            Backend::Local(l) => {
                let (file, size) = l.download(key).await?;
                (Box::pin(file), Some(size))
            }
        };
        Ok(Download {
            body,
            size,
            key: key.to_owned(),
        })
    }

    /// Deletes the object at `key` (no error if there is none).
    #[cfg(feature = "delete")]
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        match &self.backend {
            Backend::S3(s) => s.delete(key).await,
            Backend::Local(l) => l.delete(key).await,
        }
    }

    /// Proves the destination usable: lists the prefix, writes a small random object under
    /// [`PROBE_DIR`], reads it back and compares the bytes, and deletes it. Returns the first
    /// step that failed and why.
    #[cfg(feature = "delete")]
    pub async fn probe(&self) -> Result<(), ProbeError> {
        use rand::RngCore;
        let at = |step| move |cause| ProbeError { step, cause };
        self.list(&format!("{PROBE_DIR}/"))
            .await
            .map_err(at(Step::List))?;
        let key = format!("{PROBE_DIR}/{}", uuid::Uuid::new_v4().simple());
        let mut body = vec![0_u8; 64];
        rand::thread_rng().fill_bytes(&mut body);
        let body = Bytes::from(body);
        self.put(&key, body.clone())
            .await
            .map_err(at(Step::Write))?;
        let read = match self.get(&key).await {
            Ok(read) => read,
            Err(cause) => {
                // Best effort: do not leave the probe object behind.
                let _ = self.delete(&key).await;
                return Err(ProbeError {
                    step: Step::Read,
                    cause,
                });
            }
        };
        if read != body {
            let _ = self.delete(&key).await;
            return Err(ProbeError {
                step: Step::Read,
                cause: Error::Failed(format!(
                    "the object read back differs from the one written ({} bytes written, {} read)",
                    body.len(),
                    read.len()
                )),
            });
        }
        self.delete(&key).await.map_err(at(Step::Delete))?;
        Ok(())
    }
}

enum UploadInner {
    S3(s3::Upload),
    #[cfg(target_os = "linux")]
    Local(local::Upload),
}

/// An object being written by [`Store::upload`]. Call [`Upload::finish`] to make it appear, or
/// [`Upload::abort`] to give it up.
///
/// Dropping an upload without either leaves no object at the key. A local upload then leaves
/// nothing at all (its unnamed file is freed when it closes). An S3 upload's parts already sent
/// stay in the bucket, invisible to listings but billed, until an `AbortMultipartUpload` or a
/// bucket lifecycle rule (`AbortIncompleteMultipartUpload`) discards them: call
/// [`Upload::abort`] on every path that gives up.
pub struct Upload {
    inner: UploadInner,
    key: String,
    written: u64,
    /// A write failed, so the object would miss bytes: only `abort` is left.
    broken: bool,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.inner {
            UploadInner::S3(_) => "s3",
            #[cfg(target_os = "linux")]
            UploadInner::Local(_) => "local",
        };
        f.debug_struct("Upload")
            .field("backend", &backend)
            .field("key", &self.key)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// Appends `chunk`, of any size. S3 uploads buffer into [`PART_SIZE`] parts and send one
    /// whenever it is full, waiting first for the previous one, so a producer faster than the
    /// destination is held back here.
    ///
    /// After an error the upload cannot go on (a part may be missing): every later `write` and
    /// `finish` fails, and [`Upload::abort`] discards it.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        if self.broken {
            return Err(broken());
        }
        let len = chunk.len() as u64;
        let result = match &mut self.inner {
            UploadInner::S3(u) => u.write(chunk).await,
            #[cfg(target_os = "linux")]
            UploadInner::Local(u) => u.write(chunk).await,
        };
        match result {
            Ok(()) => {
                self.written += len;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Completes the object and returns its size in bytes; only now does it appear at the key.
    /// If this fails, nothing appears and nothing is left behind (an S3 upload is aborted).
    pub async fn finish(self) -> Result<u64, Error> {
        if self.broken {
            // Best effort: the error the caller needs is that the upload cannot finish.
            let _ = self.abort().await;
            return Err(broken());
        }
        match self.inner {
            UploadInner::S3(u) => u.finish().await?,
            #[cfg(target_os = "linux")]
            UploadInner::Local(u) => u.finish().await?,
        }
        Ok(self.written)
    }

    /// Abandons the upload; nothing is left behind at the destination. S3: an
    /// `AbortMultipartUpload`, which discards the parts sent (it cannot remove a finished
    /// object). Local: the unnamed file is closed, and the kernel frees it.
    pub async fn abort(self) -> Result<(), Error> {
        match self.inner {
            UploadInner::S3(mut u) => u.abort().await,
            #[cfg(target_os = "linux")]
            UploadInner::Local(u) => {
                drop(u);
                Ok(())
            }
        }
    }
}

// The agent moves uploads and downloads into tasks; keep that possible.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Upload>();
    send_sync::<Download>();
};

fn broken() -> Error {
    Error::Failed("an earlier write of this upload failed; it can only be aborted".into())
}

/// An object being read by [`Store::download`]: an [`AsyncRead`] of its bytes, streamed from the
/// destination as they are read.
pub struct Download {
    body: Pin<Box<dyn AsyncRead + Send + Sync>>,
    size: Option<u64>,
    key: String,
}

impl Download {
    /// The object's size in bytes, when the destination said.
    pub fn size(&self) -> Option<u64> {
        self.size
    }
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Download {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.body.as_mut().poll_read(cx, buf)
    }
}

fn guard_host_missing() -> Refused {
    Refused {
        field: "endpoint",
        rule: "must name a host".into(),
    }
}

/// A [`Store`] could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The guard refused the location.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// An S3 location was opened without a key.
    #[error("an S3 location needs an access key")]
    MissingKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_relative_and_clean() {
        for good in ["a", "a/b", ".coffer-probe/x", "2026/11/28/db.age"] {
            check_key(good).unwrap();
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "./a", "a\\b", "a\0b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_s3_key_parses_from_its_json_and_never_prints() {
        let key = S3Key::from_json(
            br#"{"access_key_id": "AKIAEXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG"}"#,
        )
        .unwrap();
        assert_eq!(key.access_key_id, "AKIAEXAMPLE");
        let printed = format!("{key:?}");
        assert!(
            !printed.contains("wJalr") && !printed.contains("AKIA"),
            "{printed}"
        );
        for bad in [
            &b"not json wJalrXUtnFEMI"[..],
            br#"{"access_key_id": "AKIA"}"#,
            br#"{"access_key_id": "", "secret_access_key": "s"}"#,
            br#"{"access_key_id": "a", "secret_access_key": ""}"#,
            br#"{"access_key_id": "a", "secret_access_key": "wJalrXUtnFEMI", "x": 1}"#,
            br#"{"access_key_id": 7, "secret_access_key": "wJalrXUtnFEMI"}"#,
        ] {
            let err = S3Key::from_json(bad).unwrap_err().to_string();
            assert!(!err.contains("wJalr"), "{err}");
        }
    }
}
