//! Storage destinations: where backups are written, shared by the agent (which uploads) and
//! scheduling (which probes destinations and deletes for retention).
//!
//! - [`Location`]: an S3-compatible bucket (endpoint, region, bucket, prefix, path-style) or a
//!   local directory (development, NAS mounts).
//! - [`Store`]: an object-store handle over a location: [`Store::list`], [`Store::put`],
//!   [`Store::get`], and — only with the cargo feature `delete`, which only scheduling enables —
//!   `Store::delete` and `Store::probe` (list → write → read back → delete of a small random
//!   object). The agent never has a delete call compiled in.
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

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};

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

    /// Writes `bytes` at `key`, replacing any object there.
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
