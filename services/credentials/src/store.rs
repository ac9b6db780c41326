//! Read models of the credentials service (projections kept in the append transaction), the
//! secret tables, and the queries over both.

use chrono::{DateTime, Utc};
use coffer_eventstore::{Aggregate, Projection, ProjectionError, RecordedEvent};
use coffer_kms::{KeyId, WrappedKey};
use coffer_types::OrgId;
use sqlx::{PgConnection, Row};

use crate::domain::credential::{Credential, CredentialEvent, Purpose};
use crate::domain::org_key::{OrgKey, OrgKeyEvent};
use crate::envelope::{NONCE_LEN, Sealed};

/// `credentials`, from the Credential aggregate: metadata of live credentials.
pub(crate) struct Credentials;

#[async_trait::async_trait]
impl Projection for Credentials {
    fn name(&self) -> &'static str {
        "credentials"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["credentials"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Credential::TYPE {
            return Ok(());
        }
        let id = event.aggregate_id.as_uuid();
        match event.decode::<CredentialEvent>()? {
            CredentialEvent::CredentialCreated { name, purpose } => {
                sqlx::query(
                    "INSERT INTO credentials \
                     (org_id, credential_id, name, purpose, version, value_bytes, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 0, 0, $5, $5)",
                )
                .bind(event.org_id.as_uuid())
                .bind(id)
                .bind(name)
                .bind(purpose.as_str())
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            CredentialEvent::CredentialValueSet(v) => {
                sqlx::query(
                    "UPDATE credentials SET version = $2, value_bytes = $3, updated_at = $4 \
                     WHERE credential_id = $1",
                )
                .bind(id)
                .bind(i32::try_from(v.version).unwrap_or(i32::MAX))
                .bind(i32::try_from(v.value_bytes).unwrap_or(i32::MAX))
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            CredentialEvent::CredentialDeleted { .. } => {
                sqlx::query("DELETE FROM credentials WHERE credential_id = $1")
                    .bind(id)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// `org_keys`, from the OrgKey aggregate: each org's public recipient.
pub(crate) struct OrgKeys;

#[async_trait::async_trait]
impl Projection for OrgKeys {
    fn name(&self) -> &'static str {
        "org_keys"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["org_keys"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != OrgKey::TYPE {
            return Ok(());
        }
        match event.decode::<OrgKeyEvent>()? {
            OrgKeyEvent::OrgKeyGenerated { recipient, .. } => {
                sqlx::query(
                    "INSERT INTO org_keys (org_id, recipient, created_at) VALUES ($1, $2, $3)",
                )
                .bind(event.org_id.as_uuid())
                .bind(recipient)
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            OrgKeyEvent::RecoveryKeyExported { .. } => {
                sqlx::query(
                    "UPDATE org_keys SET recovery_exports = recovery_exports + 1, \
                     last_exported_at = $2 WHERE org_id = $1",
                )
                .bind(event.org_id.as_uuid())
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// A credential's metadata, with the master key its current version is wrapped under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialView {
    /// The org.
    pub org_id: OrgId,
    /// The credential.
    pub credential_id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub purpose: Purpose,
    /// The current version.
    pub version: u32,
    /// The current value's length.
    pub value_bytes: u32,
    /// The master key wrapping the current version's data key.
    pub kms_key_id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its value last changed.
    pub updated_at: DateTime<Utc>,
}

const CREDENTIAL_COLUMNS: &str = "c.org_id, c.credential_id, c.name, c.purpose, c.version, \
     c.value_bytes, c.created_at, c.updated_at, s.kms_key_id";

fn credential_view(row: &sqlx::postgres::PgRow) -> Result<CredentialView, sqlx::Error> {
    let purpose: String = row.try_get("purpose")?;
    let number = |column: &str| -> Result<u32, sqlx::Error> {
        let n: i32 = row.try_get(column)?;
        u32::try_from(n).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    Ok(CredentialView {
        org_id: OrgId::from(row.try_get::<uuid::Uuid, _>("org_id")?),
        credential_id: row.try_get("credential_id")?,
        name: row.try_get("name")?,
        purpose: Purpose::parse(&purpose).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        version: number("version")?,
        value_bytes: number("value_bytes")?,
        kms_key_id: row.try_get("kms_key_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One live credential of the transaction's org.
pub(crate) async fn credential(
    conn: &mut PgConnection,
    id: uuid::Uuid,
) -> Result<Option<CredentialView>, sqlx::Error> {
    let sql = format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM credentials c \
         JOIN credential_secrets s ON s.credential_id = c.credential_id AND s.version = c.version \
         WHERE c.credential_id = $1"
    );
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(credential_view)
        .transpose()
}

/// Every live credential of the transaction's org, by name.
pub(crate) async fn credentials(
    conn: &mut PgConnection,
) -> Result<Vec<CredentialView>, sqlx::Error> {
    let sql = format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM credentials c \
         JOIN credential_secrets s ON s.credential_id = c.credential_id AND s.version = c.version \
         ORDER BY c.name"
    );
    sqlx::query(&sql)
        .fetch_all(conn)
        .await?
        .iter()
        .map(credential_view)
        .collect()
}

/// Whether a live credential of the transaction's org is called `name`.
pub(crate) async fn name_taken(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM credentials WHERE name = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
}

/// One stored version of a value: its wrapped data key and sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// The data key, wrapped.
    pub wrapped_dek: WrappedKey,
    /// The sealed value.
    pub sealed: Sealed,
}

/// Stores a version of a value.
pub(crate) async fn insert_value(
    conn: &mut PgConnection,
    org: OrgId,
    credential: uuid::Uuid,
    version: u32,
    value: &StoredValue,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credential_secrets \
         (org_id, credential_id, version, kms_key_id, wrapped_dek, nonce, ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(org.as_uuid())
    .bind(credential)
    .bind(i32::try_from(version).unwrap_or(i32::MAX))
    .bind(value.wrapped_dek.key_id.as_str())
    .bind(&value.wrapped_dek.ciphertext)
    .bind(value.sealed.nonce.as_slice())
    .bind(&value.sealed.ciphertext)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored version, if it exists in the transaction's org.
pub(crate) async fn value(
    conn: &mut PgConnection,
    credential: uuid::Uuid,
    version: u32,
) -> Result<Option<StoredValue>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT kms_key_id, wrapped_dek, nonce, ciphertext FROM credential_secrets \
         WHERE credential_id = $1 AND version = $2",
    )
    .bind(credential)
    .bind(i32::try_from(version).unwrap_or(i32::MAX))
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let nonce: Vec<u8> = row.try_get("nonce")?;
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| sqlx::Error::Decode("nonce is not 24 bytes".into()))?;
    Ok(Some(StoredValue {
        wrapped_dek: WrappedKey {
            key_id: KeyId::new(row.try_get::<String, _>("kms_key_id")?),
            ciphertext: row.try_get("wrapped_dek")?,
        },
        sealed: Sealed {
            nonce,
            ciphertext: row.try_get("ciphertext")?,
        },
    }))
}

/// Destroys every stored version of a credential.
pub(crate) async fn delete_values(
    conn: &mut PgConnection,
    credential: uuid::Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM credential_secrets WHERE credential_id = $1")
            .bind(credential)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// The org's public key, as members and agents read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgKeyView {
    /// The org.
    pub org_id: OrgId,
    /// `age1…`.
    pub recipient: String,
    /// When it was generated.
    pub created_at: DateTime<Utc>,
}

/// The transaction's org's public key, once generated.
pub(crate) async fn org_key(conn: &mut PgConnection) -> Result<Option<OrgKeyView>, sqlx::Error> {
    let row = sqlx::query("SELECT org_id, recipient, created_at FROM org_keys")
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(OrgKeyView {
            org_id: OrgId::from(row.try_get::<uuid::Uuid, _>("org_id")?),
            recipient: row.try_get("recipient")?,
            created_at: row.try_get("created_at")?,
        })
    })
    .transpose()
}

/// Stores the org's wrapped private key.
pub(crate) async fn insert_org_key_secret(
    conn: &mut PgConnection,
    org: OrgId,
    wrapped: &WrappedKey,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO org_key_secrets (org_id, kms_key_id, wrapped_identity) VALUES ($1, $2, $3)",
    )
    .bind(org.as_uuid())
    .bind(wrapped.key_id.as_str())
    .bind(&wrapped.ciphertext)
    .execute(conn)
    .await?;
    Ok(())
}

/// The transaction's org's wrapped private key.
pub(crate) async fn org_key_secret(
    conn: &mut PgConnection,
) -> Result<Option<WrappedKey>, sqlx::Error> {
    let row = sqlx::query("SELECT kms_key_id, wrapped_identity FROM org_key_secrets")
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(WrappedKey {
            key_id: KeyId::new(row.try_get::<String, _>("kms_key_id")?),
            ciphertext: row.try_get("wrapped_identity")?,
        })
    })
    .transpose()
}

/// One wrapped key a rotation still has to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingKey {
    /// A credential version's data key.
    CredentialDek {
        org: OrgId,
        credential: uuid::Uuid,
        version: u32,
    },
    /// An org's age private key.
    OrgAgeKey { org: OrgId },
}

impl PendingKey {
    pub(crate) fn org(&self) -> OrgId {
        match *self {
            PendingKey::CredentialDek { org, .. } | PendingKey::OrgAgeKey { org } => org,
        }
    }
}

/// Up to `max` credential data keys and up to `max` org keys not wrapped under `target`, across
/// every org (`rotation_pending`, which returns identifiers only).
pub(crate) async fn rotation_pending(
    conn: &mut PgConnection,
    target: &str,
    max: u32,
) -> Result<Vec<PendingKey>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT purpose, org_id, credential_id, version FROM rotation_pending($1, $2)")
            .bind(target)
            .bind(i32::try_from(max).unwrap_or(i32::MAX))
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|row| {
            let org = OrgId::from_uuid(row.try_get::<uuid::Uuid, _>("org_id")?);
            match row.try_get::<&str, _>("purpose")? {
                "credential_dek" => Ok(PendingKey::CredentialDek {
                    org,
                    credential: row.try_get("credential_id")?,
                    version: u32::try_from(row.try_get::<i32, _>("version")?)
                        .map_err(|e| sqlx::Error::Decode(e.into()))?,
                }),
                _ => Ok(PendingKey::OrgAgeKey { org }),
            }
        })
        .collect()
}

/// Wrapped keys per master key: `(purpose, kms_key_id, count)`, across every org.
pub(crate) async fn key_coverage(
    conn: &mut PgConnection,
) -> Result<Vec<(String, String, u64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT purpose, kms_key_id, wrapped_keys FROM key_coverage()")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("purpose")?,
                row.try_get("kms_key_id")?,
                u64::try_from(row.try_get::<i64, _>("wrapped_keys")?).unwrap_or(0),
            ))
        })
        .collect()
}

/// A pending key's wrapping, read in its org's transaction; `None` if it is gone (deleted).
pub(crate) async fn wrapped_key(
    conn: &mut PgConnection,
    key: PendingKey,
) -> Result<Option<WrappedKey>, sqlx::Error> {
    match key {
        PendingKey::CredentialDek {
            credential,
            version,
            ..
        } => Ok(value(conn, credential, version)
            .await?
            .map(|stored| stored.wrapped_dek)),
        PendingKey::OrgAgeKey { .. } => org_key_secret(conn).await,
    }
}

/// Replaces a key's wrapping if it is still `old` (compare-and-set, so two workers never undo
/// each other). Touches only the wrapping columns, the only ones the role may update: the
/// credential ciphertext stays byte for byte. Returns whether this call moved it.
pub(crate) async fn rewrap(
    conn: &mut PgConnection,
    key: PendingKey,
    old: &WrappedKey,
    new: &WrappedKey,
) -> Result<bool, sqlx::Error> {
    let result = match key {
        PendingKey::CredentialDek {
            credential,
            version,
            ..
        } => {
            sqlx::query(
                "UPDATE credential_secrets SET kms_key_id = $3, wrapped_dek = $4 \
                 WHERE credential_id = $1 AND version = $2 AND kms_key_id = $5 AND wrapped_dek = $6",
            )
            .bind(credential)
            .bind(i32::try_from(version).unwrap_or(i32::MAX))
            .bind(new.key_id.as_str())
            .bind(&new.ciphertext)
            .bind(old.key_id.as_str())
            .bind(&old.ciphertext)
            .execute(conn)
            .await?
        }
        PendingKey::OrgAgeKey { .. } => {
            sqlx::query(
                "UPDATE org_key_secrets SET kms_key_id = $1, wrapped_identity = $2 \
                 WHERE kms_key_id = $3 AND wrapped_identity = $4",
            )
            .bind(new.key_id.as_str())
            .bind(&new.ciphertext)
            .bind(old.key_id.as_str())
            .bind(&old.ciphertext)
            .execute(conn)
            .await?
        }
    };
    Ok(result.rows_affected() == 1)
}
