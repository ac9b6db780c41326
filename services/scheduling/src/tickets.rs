//! Scheduling's job-ticket key: the Ed25519 key that signs the ticket an agent presents to
//! the credentials service for one job attempt (DESIGN §6).
//!
//! The key is created once (the first replica to boot takes a transaction-scoped advisory lock,
//! so two replicas booting together create one), stored only wrapped through KMS, unwrapped at
//! boot, and its public half published as `job_ticket.jwks` in the published-keys bucket,
//! where the credentials service reads it.

use std::time::Duration;

use coffer_auth::published::Publisher;
use coffer_auth::ticket::JobTicket;
use coffer_auth::token::{Jwk, Jwks, Signer};
use coffer_db::Database;
use coffer_kms::{EncryptionContext, KeyId, Kms, Purpose, WrappedKey};
use coffer_types::OrgId;
use rand::RngCore;
use sqlx::Row;
use zeroize::Zeroizing;

/// Why the ticket key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] coffer_db::Error),
    /// KMS failed.
    #[error("kms: {0}")]
    Kms(#[from] coffer_kms::Error),
    /// The stored key is not what it should be.
    #[error("job-ticket key: {0}")]
    Corrupt(String),
    /// Publishing the public key failed.
    #[error("publish the job-ticket key: {0}")]
    Publish(String),
    /// A ticket could not be signed.
    #[error("sign a job ticket: {0}")]
    Sign(#[from] coffer_auth::ticket::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(e.into())
    }
}

fn context(key: uuid::Uuid) -> Result<EncryptionContext, Error> {
    EncryptionContext::new(
        OrgId::PLATFORM,
        Purpose::SigningKey,
        format!("job-ticket/{key}"),
    )
    .map_err(|e| Error::Corrupt(format!("cannot build the KMS context: {e}")))
}

/// Signs job tickets with scheduling's newest key.
pub struct Tickets {
    signer: Signer,
    jwks: Jwks,
    lifetime: Duration,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("kid", &self.signer.kid())
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// Loads the newest key (creating the first one if there is none) and the public keys of
    /// all.
    pub async fn load(db: &Database, kms: &dyn Kms, lifetime: Duration) -> Result<Self, Error> {
        let mut tx = db.begin_tenant(OrgId::PLATFORM).await?;
        // One creator across replicas booting at once.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('coffer_scheduling.ticket_keys'))")
            .execute(tx.conn())
            .await?;
        let mut rows = sqlx::query(
            "SELECT key_id, public_key, kms_key_id, wrapped_private_key FROM ticket_keys \
             ORDER BY created_at DESC, key_id DESC",
        )
        .fetch_all(tx.conn())
        .await?;
        if rows.is_empty() {
            create(&mut tx, kms).await?;
            rows = sqlx::query(
                "SELECT key_id, public_key, kms_key_id, wrapped_private_key FROM ticket_keys",
            )
            .fetch_all(tx.conn())
            .await?;
        }
        tx.commit().await?;
        let newest = &rows[0];
        let key_id: uuid::Uuid = newest.try_get("key_id")?;
        let wrapped = WrappedKey {
            key_id: KeyId::new(newest.try_get::<String, _>("kms_key_id")?),
            ciphertext: newest.try_get("wrapped_private_key")?,
        };
        let seed = kms.decrypt_bytes(&wrapped, &context(key_id)?).await?;
        let signer = Signer::from_seed(secrecy::ExposeSecret::expose_secret(&seed))
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let public: Vec<u8> = row.try_get("public_key")?;
            let public: [u8; 32] = public
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("a public key is not 32 bytes".into()))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
                .map_err(|_| Error::Corrupt("a public key is not Ed25519".into()))?;
            keys.push(Jwk::from_public_key(key));
        }
        if keys[0].kid() != signer.kid() {
            return Err(Error::Corrupt(
                "the newest key does not match its stored public key".into(),
            ));
        }
        Ok(Tickets {
            signer,
            jwks: Jwks::new(keys),
            lifetime,
        })
    }

    /// Publishes the public keys where the credentials service reads them.
    pub async fn publish(&self, publisher: &Publisher) -> Result<(), Error> {
        publisher
            .ticket_keys(&self.jwks)
            .await
            .map_err(|e| Error::Publish(e.to_string()))
    }

    /// The published key set.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Signs a ticket for one attempt of a job, issued now.
    pub fn issue(&self, ticket: JobTicket) -> Result<String, Error> {
        Ok(self.signer.issue_ticket(&ticket)?)
    }

    /// How long a ticket lives.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

async fn create(tx: &mut coffer_db::TenantTx, kms: &dyn Kms) -> Result<(), Error> {
    let key_id = uuid::Uuid::now_v7();
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let signer = Signer::from_seed(seed.as_ref()).map_err(|e| Error::Corrupt(e.to_string()))?;
    let wrapped = kms.encrypt(seed.as_ref(), &context(key_id)?).await?;
    sqlx::query(
        "INSERT INTO ticket_keys (org_id, key_id, kid, public_key, kms_key_id, \
         wrapped_private_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, now())",
    )
    .bind(OrgId::PLATFORM.as_uuid())
    .bind(key_id)
    .bind(signer.kid())
    .bind(signer.jwk().public_key().to_bytes().to_vec())
    .bind(wrapped.key_id.as_str())
    .bind(wrapped.ciphertext)
    .execute(tx.conn())
    .await?;
    tracing::info!(kid = signer.kid(), "created the job-ticket signing key");
    Ok(())
}
