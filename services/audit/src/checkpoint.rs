//! Checkpoints: signed tree heads in the C2SP tlog-checkpoint signed-note form, and the
//! per-org Ed25519 keys that sign them.
//!
//! Each org has its own signing key, created at its first checkpoint. The private half is
//! stored only wrapped through KMS (purpose `signing_key`, object `audit-checkpoint/<org>`)
//! and unwrapped once per process. The key name, which is also the checkpoint origin, is
//! `<deployment>/audit/<org_id>`.
//!
//! Issuing is separate from appending, so a KMS outage never stops the log from taking
//! entries: the background [`Checkpointer::run`] signs every org that has `every_entries`
//! unsigned entries, or any unsigned entry and a last checkpoint older than `interval`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_db::{Database, TenantTx};
use coffer_kms::{EncryptionContext, KeyId, Kms, Purpose, WrappedKey};
use coffer_tlog::note::{Checkpoint, Signer, Verifier};
use coffer_types::OrgId;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::app::Error;
use crate::store::{self, SigningKeyRow};

/// `[audit]` in the server configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Names this deployment in checkpoint origins: `<deployment>/audit/<org_id>`.
    pub deployment: String,
    /// Issue a checkpoint once this many entries are unsigned.
    pub checkpoint_every_entries: u64,
    /// Issue a checkpoint when any entry is unsigned and the last checkpoint is this old.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// How often the checkpointer looks for orgs owed one.
    #[serde(with = "humantime_serde")]
    pub checkpoint_poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            deployment: "coffer".to_owned(),
            checkpoint_every_entries: 1000,
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_poll: Duration::from_secs(1),
        }
    }
}

impl Settings {
    /// Refuses settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.deployment;
        if d.is_empty() || d.len() > 200 || d.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(
                "audit.deployment must be 1..=200 characters without whitespace or '+'".into(),
            );
        }
        if self.checkpoint_every_entries == 0 {
            return Err("audit.checkpoint_every_entries must be at least 1".into());
        }
        if self.checkpoint_interval.is_zero() || self.checkpoint_poll.is_zero() {
            return Err(
                "audit.checkpoint_interval and audit.checkpoint_poll must be above 0".into(),
            );
        }
        Ok(())
    }

    /// The checkpoint origin (and signing key name) of `org`.
    pub fn origin(&self, org: OrgId) -> String {
        format!("{}/audit/{org}", self.deployment)
    }
}

/// Issues checkpoints. Cheap to clone; clones share the unwrapped keys.
#[derive(Clone)]
pub struct Checkpointer {
    db: Database,
    kms: Arc<dyn Kms>,
    settings: Settings,
    /// Unwrapped signing keys by org, so KMS is asked once per org per process.
    signers: Arc<Mutex<HashMap<OrgId, Arc<Signer>>>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn key_context(org: OrgId) -> Result<EncryptionContext, Error> {
    EncryptionContext::new(org, Purpose::SigningKey, format!("audit-checkpoint/{org}"))
        .map_err(|e| Error::Corrupt(format!("cannot build the KMS context: {e}")))
}

impl Checkpointer {
    /// A checkpointer signing through keys wrapped by `kms`.
    pub fn new(db: Database, kms: Arc<dyn Kms>, settings: Settings) -> Self {
        Self {
            db,
            kms,
            settings,
            signers: Arc::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Signs a checkpoint of `org`'s log at its current size unless one exists. Returns the
    /// size signed, or `None` when the log is empty or already signed at its size.
    pub async fn issue(&self, org: OrgId) -> Result<Option<u64>, Error> {
        let signer = self.signer(org).await?;
        let mut tx = self.db.begin_tenant(org).await?;
        let Some(head) = store::head(&mut tx).await? else {
            return Ok(None);
        };
        if let Some(latest) = store::checkpoint(&mut tx, None).await?
            && latest.size >= head.size
        {
            return Ok(None);
        }
        let root = root(&mut tx, head.size).await?;
        let body = Checkpoint {
            origin: self.settings.origin(org),
            size: head.size,
            root,
            extensions: Vec::new(),
        }
        .to_body();
        let note = signer
            .sign(&body)
            .map_err(|e| Error::Corrupt(format!("cannot sign a checkpoint: {e}")))?;
        let fresh = store::insert_checkpoint(&mut tx, head.size, &root, &note).await?;
        tx.commit().await?;
        if fresh {
            tracing::debug!(%org, size = head.size, "audit checkpoint issued");
        }
        Ok(fresh.then_some(head.size))
    }

    /// The verifier of `org`'s checkpoints, if the org has a signing key yet.
    pub async fn verifier(&self, tx: &mut TenantTx) -> Result<Option<Verifier>, Error> {
        store::signing_key(tx)
            .await?
            .map(|row| verifier_of(&row))
            .transpose()
    }

    /// The org's signer: cached, else unwrapped from storage, else created and stored.
    async fn signer(&self, org: OrgId) -> Result<Arc<Signer>, Error> {
        if let Some(s) = self.signers.lock().expect("never poisoned").get(&org) {
            return Ok(s.clone());
        }
        let mut tx = self.db.begin_tenant(org).await?;
        let row = match store::signing_key(&mut tx).await? {
            Some(row) => row,
            None => {
                self.create_key(&mut tx, org).await?;
                store::signing_key(&mut tx)
                    .await?
                    .ok_or_else(|| Error::Corrupt("the stored signing key vanished".into()))?
            }
        };
        tx.commit().await?;
        let wrapped = WrappedKey {
            key_id: KeyId::new(row.kms_key_id.clone()),
            ciphertext: row.wrapped_private_key.clone(),
        };
        let seed = self.kms.decrypt_bytes(&wrapped, &key_context(org)?).await?;
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            secrecy::ExposeSecret::expose_secret(&seed)
                .try_into()
                .map_err(|_| Error::Corrupt("the checkpoint signing key is not 32 bytes".into()))?,
        );
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().to_bytes() != row.public_key {
            return Err(Error::Corrupt(
                "the checkpoint signing key does not match its stored public key".into(),
            ));
        }
        let signer =
            Arc::new(Signer::new(row.key_name, key).map_err(|e| Error::Corrupt(e.to_string()))?);
        self.signers
            .lock()
            .expect("never poisoned")
            .insert(org, signer.clone());
        Ok(signer)
    }

    async fn create_key(&self, tx: &mut TenantTx, org: OrgId) -> Result<(), Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        let key = SigningKey::from_bytes(&seed);
        let wrapped = self.kms.encrypt(seed.as_ref(), &key_context(org)?).await?;
        let row = SigningKeyRow {
            key_name: self.settings.origin(org),
            public_key: key.verifying_key().to_bytes(),
            kms_key_id: wrapped.key_id.as_str().to_owned(),
            wrapped_private_key: wrapped.ciphertext,
        };
        store::insert_signing_key(tx, &row).await
    }

    /// Issues every checkpoint owed, every `checkpoint_poll`, until dropped. Failures (KMS or
    /// the database away) are logged and retried on the next round.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.settings.checkpoint_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due = match store::checkpoints_due(
                self.db.pool(),
                self.settings.checkpoint_every_entries,
                self.settings.checkpoint_interval,
            )
            .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the logs owed a checkpoint; retrying");
                    continue;
                }
            };
            for org in due {
                let org = OrgId::from_uuid(org);
                if let Err(e) = self.issue(org).await {
                    tracing::warn!(%org, error = %e, "audit checkpoint not issued; retrying");
                }
            }
        }
    }
}

pub(crate) fn verifier_of(row: &SigningKeyRow) -> Result<Verifier, Error> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&row.public_key)
        .map_err(|_| Error::Corrupt("the stored checkpoint public key is not Ed25519".into()))?;
    Verifier::new(row.key_name.clone(), key).map_err(|e| Error::Corrupt(e.to_string()))
}

/// The RFC 9162 root of the first `size` leaves, from O(log n) stored nodes.
pub(crate) async fn root(tx: &mut TenantTx, size: u64) -> Result<coffer_tlog::Hash, Error> {
    Ok(crate::log::frontier(tx, size).await?.root())
}
