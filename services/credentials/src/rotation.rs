//! Master-key rotation: moving every wrapped key of the service onto the current KMS master
//! key (DESIGN §6).
//!
//! Operators first configure the new master key (`kms.key_id`) and restart, so new data keys
//! are wrapped under it, then start a rotation onto it. A background worker re-wraps the rest
//! in batches: KMS `ReEncrypt` on AWS (the plaintext key never leaves KMS), decrypt then
//! encrypt on the local provider, each with the key's own encryption context. Each key moves in
//! its org's transaction by compare-and-set on its wrapping, touching only the wrapping
//! columns: credential ciphertexts are not read or written. After every batch the progress is
//! recorded on the platform's rotation stream, so a restarted service sees a running rotation
//! and resumes it; keys moved before a crash are simply no longer pending.

use std::time::Duration;

use coffer_kms::{KeyId, WrappedKey};
use coffer_types::{Actor, AggregateId, OrgId};

use crate::age_key;
use crate::app::{Credentials, Error};
use crate::domain::rotation::{
    MasterKeyRotation, Rotation, RotationCommand, RotationError, rotation_stream_id,
};
use crate::envelope::ValueSlot;
use crate::store::{self, PendingKey};

/// How the rotation worker paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationSettings {
    /// Keys of each kind re-wrapped per batch (progress is recorded after each). Default 100.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Pause between batches, to spread the KMS load. Default none.
    #[serde(default, with = "humantime_serde")]
    pub batch_pause: Duration,
}

fn default_batch_size() -> u32 {
    100
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            batch_pause: Duration::ZERO,
        }
    }
}

/// The latest rotation and the master key the service wraps new keys under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStatus {
    /// The latest rotation, if there was one.
    pub latest: Option<Rotation>,
    /// The configured current master key.
    pub current_key_id: String,
}

/// Wrapped keys per master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCoverage {
    /// The configured current master key.
    pub current_key_id: String,
    /// `(purpose, kms_key_id, wrapped keys)`, by purpose then key.
    pub entries: Vec<(String, String, u64)>,
}

impl KeyCoverage {
    /// Wrapped keys under any master key but `key`.
    pub fn not_under(&self, key: &str) -> u64 {
        self.entries
            .iter()
            .filter(|(_, k, _)| k != key)
            .map(|(_, _, n)| n)
            .sum()
    }
}

impl From<RotationError> for Error {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::Invalid(f) => Error::Invalid(f),
            e @ (RotationError::OtherRunning(_) | RotationError::NotRunning) => {
                Error::FailedPrecondition(e.to_string())
            }
        }
    }
}

impl From<coffer_eventstore::ExecuteError<RotationError>> for Error {
    fn from(e: coffer_eventstore::ExecuteError<RotationError>) -> Self {
        match e {
            coffer_eventstore::ExecuteError::Rejected(e) => e.into(),
            coffer_eventstore::ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

fn stream() -> AggregateId {
    AggregateId::from(rotation_stream_id())
}

impl Credentials {
    /// Starts a rotation onto `new_key_id` (or resumes the running one with that target) and
    /// returns its status; the caller runs [`Credentials::run_rotation`] to do the work.
    pub async fn start_rotation(
        &self,
        actor: &Actor,
        new_key_id: &str,
        reason: &str,
    ) -> Result<RotationStatus, Error> {
        let current = self.kms.current_key_id().as_str();
        if new_key_id != current {
            return Err(Error::FailedPrecondition(format!(
                "new_key_id must be the master key the service is configured with ({current}); \
                 set kms.key_id to the new key and restart first"
            )));
        }
        let pending = self.key_coverage().await?.not_under(current);
        let mut tx = self.begin(OrgId::PLATFORM).await?;
        let command = RotationCommand::Start {
            to_key_id: new_key_id.to_owned(),
            reason: reason.to_owned(),
            pending,
        };
        self.store
            .execute_in::<MasterKeyRotation>(&mut tx, stream(), actor, command)
            .await?;
        tx.commit().await?;
        self.rotation_wake.notify_one();
        self.rotation_status().await
    }

    /// The latest rotation.
    pub async fn rotation_status(&self) -> Result<RotationStatus, Error> {
        let mut tx = self.begin(OrgId::PLATFORM).await?;
        let (state, _) = self
            .store
            .load::<MasterKeyRotation>(&mut tx, stream())
            .await?;
        Ok(RotationStatus {
            latest: state.latest,
            current_key_id: self.kms.current_key_id().as_str().to_owned(),
        })
    }

    /// Wrapped keys per master key, across every org.
    pub async fn key_coverage(&self) -> Result<KeyCoverage, Error> {
        let mut tx = self.begin(OrgId::PLATFORM).await?;
        let entries = store::key_coverage(&mut tx).await?;
        Ok(KeyCoverage {
            current_key_id: self.kms.current_key_id().as_str().to_owned(),
            entries,
        })
    }

    /// Runs the running rotation, if any, to its end: batch after batch until no key remains
    /// under another master key, recording progress after each. Returns at once if this
    /// process is already running it, or if its target is not the configured master key (a
    /// service not yet restarted with the new key leaves it to one that is).
    pub async fn run_rotation(&self, settings: RotationSettings) -> Result<(), Error> {
        let Ok(_running_here) = self.rotation_lock.try_lock() else {
            return Ok(());
        };
        let actor = Actor::service("credentials-master-key-rotation");
        loop {
            let Some(rotation) = self
                .rotation_status()
                .await?
                .latest
                .filter(|r| !r.completed)
            else {
                return Ok(());
            };
            let target = KeyId::new(rotation.to_key_id.clone());
            if &target != self.kms.current_key_id() {
                tracing::warn!(
                    rotation = rotation.number,
                    "the rotation's target is not this service's master key; not running it"
                );
                return Ok(());
            }
            let batch = {
                let mut tx = self.begin(OrgId::PLATFORM).await?;
                store::rotation_pending(&mut tx, target.as_str(), settings.batch_size.max(1))
                    .await?
            };
            let command = if batch.is_empty() {
                RotationCommand::Complete
            } else {
                let mut moved = 0;
                for key in batch {
                    if self.rewrap(key, &target).await? {
                        moved += 1;
                    }
                }
                let remaining = self.key_coverage().await?.not_under(target.as_str());
                RotationCommand::Progress {
                    rewrapped: moved,
                    remaining,
                }
            };
            let done = matches!(command, RotationCommand::Complete);
            let mut tx = self.begin(OrgId::PLATFORM).await?;
            self.store
                .execute_in::<MasterKeyRotation>(&mut tx, stream(), &actor, command)
                .await?;
            tx.commit().await?;
            if done {
                tracing::info!(rotation = rotation.number, "master-key rotation completed");
                return Ok(());
            }
            if !settings.batch_pause.is_zero() {
                tokio::time::sleep(settings.batch_pause).await;
            }
        }
    }

    /// Moves one key onto `target`; false if it is gone or another worker moved it first.
    async fn rewrap(&self, key: PendingKey, target: &KeyId) -> Result<bool, Error> {
        let org = key.org();
        let old: Option<WrappedKey> = {
            let mut tx = self.begin(org).await?;
            store::wrapped_key(&mut tx, key).await?
        };
        let Some(old) = old.filter(|old| &old.key_id != target) else {
            return Ok(false);
        };
        let context = match key {
            PendingKey::CredentialDek {
                credential,
                version,
                ..
            } => ValueSlot {
                org,
                credential,
                version,
            }
            .kms_context()?,
            PendingKey::OrgAgeKey { .. } => age_key::kms_context(org)?,
        };
        let new = self.kms.re_encrypt(&old, &context, target).await?;
        let mut tx = self.begin(org).await?;
        let moved = store::rewrap(&mut tx, key, &old, &new).await?;
        tx.commit().await?;
        Ok(moved)
    }
}

/// Runs rotations in the background for the life of the service: resumes a running one at
/// boot, and runs each one started through the API (`wake`). Transient failures (KMS or the
/// database away) are retried after `retry`.
pub async fn worker(app: Credentials, settings: RotationSettings, retry: Duration) {
    let wake = app.rotation_wake.clone();
    loop {
        match app.run_rotation(settings).await {
            Ok(()) => wake.notified().await,
            Err(e) => {
                tracing::warn!(error = %e, ?retry, "master-key rotation interrupted; retrying");
                tokio::time::sleep(retry).await;
            }
        }
    }
}
