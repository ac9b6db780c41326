//! Revoked API keys, suspended users and revoked agent certificates, shared through a
//! JetStream KV bucket that every service watches (DESIGN.md §5), so they bite within about a
//! second, long before a 5-minute access token or a 24-hour certificate expires.
//!
//! This module does I/O: [`Revocations::open`] talks to NATS and spawns a watch task.
//!
//! # Bucket layout
//!
//! One bucket ([`DEFAULT_BUCKET`] unless configured), history 1, file storage. A key's presence
//! means "revoked"; deleting (purging) it lifts a suspension. Keys:
//!
//! | key                         | meaning                              |
//! |-----------------------------|--------------------------------------|
//! | `api_key.<uuid>`            | the API key is revoked               |
//! | `user.<org>.<uuid>`         | the user is suspended in that org    |
//! | `cert.<org>.<serial-hex>`   | the agent certificate is revoked     |
//!
//! Values are `{"revoked_at":"<RFC 3339>"}` (for users: when they were suspended). They carry
//! no reason and no secret; only a key's presence is read.
//!
//! # Consistency and failure
//!
//! [`Revocations::open`] returns after the watch is set up; [`Revocations::wait_synced`]
//! returns once every entry present at that time has been loaded, and services should not serve
//! before it (the [`crate::bearer::Authenticator`] refuses until then). After that the
//! in-memory set follows the bucket through a JetStream watch. If the watch ends or fails (a
//! NATS outage that outlives the client's own reconnects, a deleted consumer), it is reopened
//! with backoff and the whole set is reloaded, so deletions missed meanwhile are not lost.
//!
//! Reads never block on NATS: while NATS is unreachable they answer from the last known set
//! (fail open for reads). That is deliberate: access tokens live 5 minutes and agent
//! certificates are also checked against the signed CRL, so an outage delays a revocation by
//! at most a token lifetime instead of taking every service down with NATS. Publishing
//! ([`Revocations::revoke_api_key`] and friends) does fail when NATS is down.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use coffer_types::{ApiKeyId, OrgId, UserId};
use futures::StreamExt as _;
use tracing::Instrument as _;

/// The bucket services share unless configured otherwise.
pub const DEFAULT_BUCKET: &str = "COFFER_REVOCATIONS";

/// The first wait before reopening a failed watch; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between attempts to reopen the watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a revocation could not be published or the bucket opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bucket name is not a valid JetStream KV bucket name (`[A-Za-z0-9_-]+`).
    #[error("revocation bucket name must match [A-Za-z0-9_-]+")]
    BucketName,
    /// NATS refused or could not be reached.
    #[error("{op} revocation bucket {bucket}")]
    Nats {
        /// What was being done, e.g. `"open"`.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

/// An X.509 certificate serial number, normalized to lowercase hex without leading zeros.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertSerial(String);

/// Error returned when a serial number is empty, not hex, or longer than 20 octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate serial must be 1 to 20 octets of hex")]
pub struct ParseSerialError;

impl CertSerial {
    /// The serial from its big-endian bytes (a DER `INTEGER`'s content octets; a leading
    /// `0x00` sign octet is fine).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ParseSerialError> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        hex.parse()
    }

    /// The normalized hex form, as used in bucket keys.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl FromStr for CertSerial {
    type Err = ParseSerialError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseSerialError);
        }
        let trimmed = s.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        // RFC 5280 §4.1.2.2: at most 20 octets.
        if digits.len() > 40 {
            return Err(ParseSerialError);
        }
        Ok(CertSerial(digits.to_ascii_lowercase()))
    }
}

impl fmt::Display for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertSerial({})", self.0)
    }
}

fn api_key_key(key: ApiKeyId) -> String {
    format!("api_key.{key}")
}

fn user_key(org: OrgId, user: UserId) -> String {
    format!("user.{org}.{user}")
}

fn cert_key(org: OrgId, serial: &CertSerial) -> String {
    format!("cert.{org}.{serial}")
}

/// What a bucket entry holds.
#[derive(serde::Serialize)]
struct Record {
    revoked_at: chrono::DateTime<chrono::Utc>,
}

/// State shared between the handles and the watch task.
#[derive(Debug)]
struct Shared {
    /// The keys currently present in the bucket: written by the watch task (and by this
    /// process's own publishes, for read-your-writes), read by every check.
    revoked: RwLock<HashSet<String>>,
    /// Becomes `true` once the first full load has finished, and stays `true`.
    synced: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn contains(&self, key: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    fn insert(&self, key: String) {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key);
    }

    fn remove(&self, key: &str) {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    fn replace(&self, fresh: HashSet<String>) {
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        self.synced.send_replace(true);
    }

    fn apply(&self, entry: &kv::Entry) {
        match entry.operation {
            kv::Operation::Put => self.insert(entry.key.clone()),
            kv::Operation::Delete | kv::Operation::Purge => self.remove(&entry.key),
        }
    }
}

/// Aborts the watch task when the last [`Revocations`] handle is dropped.
#[derive(Debug)]
struct WatchTask(tokio::task::JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A live view of the revocation bucket, and the way to publish to it. Cheap to clone; the
/// watch task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Revocations {
    store: kv::Store,
    shared: Arc<Shared>,
    _task: Arc<WatchTask>,
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("bucket", &self.store.name)
            .field("synced", &self.is_synced())
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Opens `bucket` (creating it, history 1, file storage, one replica, if it does not
    /// exist) and starts watching it. Must be called inside a Tokio runtime.
    ///
    /// A bucket that already exists is used as it is, so production can create it with three
    /// replicas ahead of time.
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, Error> {
        let valid = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(Error::BucketName);
        }
        let nats = |op| {
            move |source: async_nats::Error| Error::Nats {
                op,
                bucket: bucket.to_owned(),
                source,
            }
        };
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => match js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "Coffer revoked API keys, suspended users, revoked certificates"
                        .to_owned(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
            {
                Ok(store) => store,
                // Another service may have created it between our two calls.
                Err(create) => js
                    .get_key_value(bucket)
                    .await
                    .map_err(|_| nats("create")(create.into()))?,
            },
        };
        let (synced, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            revoked: RwLock::new(HashSet::new()),
            synced,
        });
        // The first watch is opened here, so `open` fails loudly if the bucket cannot be read.
        let watch = open_watch(&store).await.map_err(nats("watch"))?;
        let span = tracing::info_span!("revocation_watch", bucket = %bucket);
        let task = tokio::spawn(run(store.clone(), Arc::clone(&shared), watch).instrument(span));
        Ok(Revocations {
            store,
            shared,
            _task: Arc::new(WatchTask(task)),
        })
    }

    /// Whether the initial load has finished.
    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Waits until the initial load has finished. Wrap it in a timeout at boot: a bucket that
    /// cannot be read never syncs.
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Whether API key `key` has been revoked.
    pub fn is_api_key_revoked(&self, key: ApiKeyId) -> bool {
        self.shared.contains(&api_key_key(key))
    }

    /// Whether `user` is suspended in `org`.
    pub fn is_user_suspended(&self, org: OrgId, user: UserId) -> bool {
        self.shared.contains(&user_key(org, user))
    }

    /// Whether the agent certificate with `serial`, issued by `org`'s CA, has been revoked.
    pub fn is_cert_revoked(&self, org: OrgId, serial: &CertSerial) -> bool {
        self.shared.contains(&cert_key(org, serial))
    }

    /// Revokes API key `key` everywhere. Permanent.
    pub async fn revoke_api_key(&self, key: ApiKeyId) -> Result<(), Error> {
        self.put(api_key_key(key)).await
    }

    /// Suspends `user` in `org` everywhere until [`Revocations::reactivate_user`].
    pub async fn suspend_user(&self, org: OrgId, user: UserId) -> Result<(), Error> {
        self.put(user_key(org, user)).await
    }

    /// Lifts a suspension of `user` in `org`.
    pub async fn reactivate_user(&self, org: OrgId, user: UserId) -> Result<(), Error> {
        let key = user_key(org, user);
        self.store
            .purge(&key)
            .await
            .map_err(|e| self.nats_error("purge a key in", e.into()))?;
        self.shared.remove(&key);
        Ok(())
    }

    /// Revokes the agent certificate with `serial` issued by `org`'s CA. Permanent.
    pub async fn revoke_cert(&self, org: OrgId, serial: &CertSerial) -> Result<(), Error> {
        self.put(cert_key(org, serial)).await
    }

    async fn put(&self, key: String) -> Result<(), Error> {
        let record = Record {
            revoked_at: chrono::Utc::now(),
        };
        let value = serde_json::to_vec(&record).expect("a timestamp serializes");
        self.store
            .put(&key, value.into())
            .await
            .map_err(|e| self.nats_error("write to", e.into()))?;
        self.shared.insert(key);
        Ok(())
    }

    fn nats_error(&self, op: &'static str, source: async_nats::Error) -> Error {
        Error::Nats {
            op,
            bucket: self.store.name.clone(),
            source,
        }
    }
}

/// A watch over every key, delivering the latest value of each first, plus whether the bucket
/// was empty (in which case nothing is delivered until something changes).
async fn open_watch(store: &kv::Store) -> Result<(kv::Watch, bool), async_nats::Error> {
    let watch = store.watch_with_history(">").await?;
    // Asked after the watch exists: if the bucket is empty now, the watch will deliver every
    // later change; if not, it delivers at least one entry, the last with `delta == 0`.
    let empty = store.stream.get_info().await?.state.messages == 0;
    Ok((watch, empty))
}

/// The watch task: follows the bucket, reopening the watch whenever it ends.
async fn run(store: kv::Store, shared: Arc<Shared>, first: (kv::Watch, bool)) {
    let mut next = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let opened = match next.take() {
            Some(watch) => Ok(watch),
            None => open_watch(&store).await,
        };
        match opened {
            Ok((watch, empty)) => match follow(watch, empty, &shared).await {
                (Ok(()), _) => tracing::warn!("revocation watch ended; reopening"),
                (Err(error), loaded) => {
                    if loaded {
                        backoff = MIN_BACKOFF;
                    }
                    tracing::warn!(error = %error, "revocation watch failed; reopening");
                }
            },
            Err(error) => tracing::warn!(error = %error, "open revocation watch"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies one watch until it ends. Entries are collected into a fresh set until the watch
/// has caught up, which then replaces the shared set whole; later entries apply directly.
/// Returns how it ended and whether it caught up.
async fn follow(
    mut watch: kv::Watch,
    empty: bool,
    shared: &Shared,
) -> (Result<(), async_nats::Error>, bool) {
    let mut loading = if empty {
        shared.replace(HashSet::new());
        tracing::debug!(entries = 0, "revocations loaded");
        None
    } else {
        Some(HashSet::new())
    };
    while let Some(entry) = watch.next().await {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => return (Err(error.into()), loading.is_none()),
        };
        match loading.as_mut() {
            Some(fresh) => {
                match entry.operation {
                    kv::Operation::Put => fresh.insert(entry.key.clone()),
                    kv::Operation::Delete | kv::Operation::Purge => fresh.remove(&entry.key),
                };
                if entry.delta == 0 {
                    let fresh = loading.take().unwrap_or_default();
                    tracing::debug!(entries = fresh.len(), "revocations loaded");
                    shared.replace(fresh);
                }
            }
            None => shared.apply(&entry),
        }
    }
    (Ok(()), loading.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize_to_lowercase_hex_without_leading_zeros() {
        let a: CertSerial = "00AbC1".parse().unwrap();
        assert_eq!(a.as_hex(), "abc1");
        assert_eq!(CertSerial::from_bytes(&[0x00, 0xab, 0xc1]).unwrap(), a);
        assert_eq!("0000".parse::<CertSerial>().unwrap().as_hex(), "0");
        let twenty = CertSerial::from_bytes(&[0x7f; 20]).unwrap();
        assert_eq!(twenty.as_hex().len(), 40);
        assert!(CertSerial::from_bytes(&[0x00; 21]).is_ok());
        assert!(CertSerial::from_bytes(&[0x01; 21]).is_err());
        for bad in ["", "xyz", "12 34", "ab:cd", "-1"] {
            assert!(bad.parse::<CertSerial>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_keys_use_only_characters_kv_allows() {
        let org = OrgId::new();
        let serial: CertSerial = "0a1b".parse().unwrap();
        for key in [
            api_key_key(ApiKeyId::new()),
            user_key(org, UserId::new()),
            cert_key(org, &serial),
        ] {
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "{key}"
            );
            assert!(!key.starts_with('.') && !key.ends_with('.'), "{key}");
        }
        assert_eq!(cert_key(org, &serial), format!("cert.{org}.a1b"));
    }

    #[test]
    fn records_carry_only_a_timestamp() {
        let record = Record {
            revoked_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"revoked_at":"2026-01-01T00:00:00Z"}"#
        );
    }
}
