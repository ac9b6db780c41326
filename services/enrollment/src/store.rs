//! Read models of the enrollment service (projections kept in the append transaction) and
//! the queries over them.

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_db::TenantTx;
use coffer_eventstore::{Projection, ProjectionError, RecordedEvent};
use coffer_types::{ApiKeyId, OrgId, UserId};
use sqlx::{PgConnection, Row};

use crate::domain::agent::{Agent, AgentEvent, IssuedCertificate};
use crate::domain::api_key::{ApiKey, ApiKeyEvent};
use crate::domain::ca::{Ca, CaEvent};
use crate::domain::enrollment_token::{EnrollmentToken, EnrollmentTokenEvent};
use crate::domain::org::{Org, OrgEvent};
use crate::domain::signing_key::{SigningKey, SigningKeyEvent};

use coffer_eventstore::Aggregate;

/// `orgs` and `members`, from the Org aggregate.
pub(crate) struct Orgs;

#[async_trait::async_trait]
impl Projection for Orgs {
    fn name(&self) -> &'static str {
        "orgs"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["orgs", "members"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Org::TYPE {
            return Ok(());
        }
        let org = event.org_id.as_uuid();
        match event.decode::<OrgEvent>()? {
            OrgEvent::OrgCreated {
                name,
                owner,
                owner_email,
            } => {
                sqlx::query("INSERT INTO orgs (org_id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(org)
                    .bind(name)
                    .bind(event.occurred_at)
                    .execute(&mut *conn)
                    .await?;
                insert_member(conn, event, owner, &owner_email, Role::Owner).await?;
            }
            OrgEvent::MemberAdded { user, email, role } => {
                insert_member(conn, event, user, &email, role).await?;
            }
            OrgEvent::MemberRoleChanged { user, to, .. } => {
                sqlx::query("UPDATE members SET role = $2 WHERE user_id = $1")
                    .bind(user.as_uuid())
                    .bind(to.as_str())
                    .execute(conn)
                    .await?;
            }
            OrgEvent::MemberRemoved { user } => {
                sqlx::query("DELETE FROM members WHERE user_id = $1")
                    .bind(user.as_uuid())
                    .execute(conn)
                    .await?;
            }
            OrgEvent::MemberSuspended { user, .. } => set_suspended(conn, user, true).await?,
            OrgEvent::MemberReactivated { user } => set_suspended(conn, user, false).await?,
        }
        Ok(())
    }
}

async fn insert_member(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    user: UserId,
    email: &str,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO members (org_id, user_id, email, role, joined_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.org_id.as_uuid())
    .bind(user.as_uuid())
    .bind(email)
    .bind(role.as_str())
    .bind(event.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn set_suspended(
    conn: &mut PgConnection,
    user: UserId,
    suspended: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE members SET suspended = $2 WHERE user_id = $1")
        .bind(user.as_uuid())
        .bind(suspended)
        .execute(conn)
        .await?;
    Ok(())
}

/// `api_keys`, from the ApiKey aggregate.
pub(crate) struct ApiKeys;

#[async_trait::async_trait]
impl Projection for ApiKeys {
    fn name(&self) -> &'static str {
        "api_keys"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["api_keys"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != ApiKey::TYPE {
            return Ok(());
        }
        match event.decode::<ApiKeyEvent>()? {
            ApiKeyEvent::ApiKeyCreated {
                name,
                role,
                scopes,
                display_prefix,
                secret_sha256,
                expires_at,
            } => {
                sqlx::query(
                    "INSERT INTO api_keys (org_id, key_id, name, role, scopes, display_prefix,
                        secret_sha256, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(event.org_id.as_uuid())
                .bind(event.aggregate_id.as_uuid())
                .bind(name)
                .bind(role.as_str())
                .bind(scopes)
                .bind(display_prefix)
                .bind(secret_sha256.as_slice())
                .bind(event.occurred_at)
                .bind(expires_at)
                .execute(conn)
                .await?;
            }
            ApiKeyEvent::ApiKeyRevoked { .. } => {
                sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1")
                    .bind(event.aggregate_id.as_uuid())
                    .bind(event.occurred_at)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// `signing_keys`, from the SigningKey aggregate.
pub(crate) struct SigningKeys;

#[async_trait::async_trait]
impl Projection for SigningKeys {
    fn name(&self) -> &'static str {
        "signing_keys"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["signing_keys"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != SigningKey::TYPE {
            return Ok(());
        }
        match event.decode::<SigningKeyEvent>()? {
            SigningKeyEvent::SigningKeyCreated {
                kid,
                public_key,
                wrapped_private_key,
                kms_key_id,
            } => {
                sqlx::query(
                    "INSERT INTO signing_keys (org_id, signing_key_id, kid, public_key,
                        wrapped_private_key, kms_key_id, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(event.org_id.as_uuid())
                .bind(event.aggregate_id.as_uuid())
                .bind(kid)
                .bind(public_key.as_slice())
                .bind(wrapped_private_key)
                .bind(kms_key_id)
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// An org as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgView {
    /// The org.
    pub org_id: OrgId,
    /// Display name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A member as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The org.
    pub org_id: OrgId,
    /// The user.
    pub user_id: UserId,
    /// Their address.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Whether suspended.
    pub suspended: bool,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

/// An API key as listed: metadata only, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyView {
    /// The org.
    pub org_id: OrgId,
    /// The key.
    pub key_id: ApiKeyId,
    /// Display name.
    pub name: String,
    /// The role it acts with.
    pub role: Role,
    /// Scopes.
    pub scopes: Vec<String>,
    /// First 12 characters of the secret.
    pub display_prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last exchanged for a token.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A stored signing key.
#[derive(Debug, Clone)]
pub struct SigningKeyRow {
    /// The JWS key id.
    pub kid: String,
    /// Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The private key wrapped by KMS.
    pub wrapped_private_key: Vec<u8>,
    /// The master key that wrapped it.
    pub kms_key_id: String,
    /// Aggregate id (the KMS context's object id).
    pub signing_key_id: uuid::Uuid,
}

/// A stored row that no longer parses: the database was edited behind the service's back.
fn corrupt(what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("{what}: {e}").into())
}

fn role_of(row: &sqlx::postgres::PgRow) -> Result<Role, sqlx::Error> {
    let role: String = row.try_get("role")?;
    role.parse().map_err(|e| corrupt("role", e))
}

pub(crate) async fn get_org(tx: &mut TenantTx) -> Result<Option<OrgView>, sqlx::Error> {
    let row = sqlx::query("SELECT org_id, name, created_at FROM orgs WHERE org_id = $1")
        .bind(tx.org().as_uuid())
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| {
        Ok(OrgView {
            org_id: OrgId::from(r.try_get::<uuid::Uuid, _>("org_id")?),
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

fn member_row(r: &sqlx::postgres::PgRow) -> Result<MemberView, sqlx::Error> {
    Ok(MemberView {
        org_id: OrgId::from(r.try_get::<uuid::Uuid, _>("org_id")?),
        user_id: UserId::from(r.try_get::<uuid::Uuid, _>("user_id")?),
        email: r.try_get("email")?,
        role: role_of(r)?,
        suspended: r.try_get("suspended")?,
        joined_at: r.try_get("joined_at")?,
    })
}

const MEMBER_COLUMNS: &str = "org_id, user_id, email, role, suspended, joined_at";

pub(crate) async fn list_members(tx: &mut TenantTx) -> Result<Vec<MemberView>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members ORDER BY joined_at, user_id"
    ))
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(member_row)
    .collect()
}

pub(crate) async fn get_member(
    tx: &mut TenantTx,
    user: UserId,
) -> Result<Option<MemberView>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE user_id = $1"
    ))
    .bind(user.as_uuid())
    .fetch_optional(tx.conn())
    .await?
    .as_ref()
    .map(member_row)
    .transpose()
}

const API_KEY_SELECT: &str =
    "SELECT k.org_id, k.key_id, k.name, k.role, k.scopes, k.display_prefix,
        k.created_at, k.expires_at, k.revoked_at, u.last_used_at
     FROM api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.key_id";

fn api_key_row(r: &sqlx::postgres::PgRow) -> Result<ApiKeyView, sqlx::Error> {
    Ok(ApiKeyView {
        org_id: OrgId::from(r.try_get::<uuid::Uuid, _>("org_id")?),
        key_id: ApiKeyId::from(r.try_get::<uuid::Uuid, _>("key_id")?),
        name: r.try_get("name")?,
        role: role_of(r)?,
        scopes: r.try_get("scopes")?,
        display_prefix: r.try_get("display_prefix")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(crate) async fn list_api_keys(tx: &mut TenantTx) -> Result<Vec<ApiKeyView>, sqlx::Error> {
    sqlx::query(&format!("{API_KEY_SELECT} ORDER BY k.created_at, k.key_id"))
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(api_key_row)
        .collect()
}

pub(crate) async fn get_api_key(
    tx: &mut TenantTx,
    key: ApiKeyId,
) -> Result<Option<ApiKeyView>, sqlx::Error> {
    sqlx::query(&format!("{API_KEY_SELECT} WHERE k.key_id = $1"))
        .bind(key.as_uuid())
        .fetch_optional(tx.conn())
        .await?
        .as_ref()
        .map(api_key_row)
        .transpose()
}

/// Which org and key hold this secret hash, across tenants (through the narrow
/// `find_api_key` function; the service role itself cannot read other orgs' rows).
pub(crate) async fn find_api_key(
    conn: &mut PgConnection,
    hash: &[u8; 32],
) -> Result<Option<(OrgId, ApiKeyId)>, sqlx::Error> {
    let row = sqlx::query("SELECT org_id, key_id FROM find_api_key($1)")
        .bind(hash.as_slice())
        .fetch_one(conn)
        .await?;
    let org: Option<uuid::Uuid> = row.try_get("org_id")?;
    let key: Option<uuid::Uuid> = row.try_get("key_id")?;
    Ok(org
        .zip(key)
        .map(|(o, k)| (OrgId::from(o), ApiKeyId::from(k))))
}

pub(crate) async fn touch_api_key(
    tx: &mut TenantTx,
    key: ApiKeyId,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let org = tx.org();
    sqlx::query(
        "INSERT INTO api_key_usage (org_id, key_id, last_used_at) VALUES ($1, $2, $3)
         ON CONFLICT (key_id) DO UPDATE SET last_used_at = EXCLUDED.last_used_at",
    )
    .bind(org.as_uuid())
    .bind(key.as_uuid())
    .bind(at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

pub(crate) async fn signing_keys(tx: &mut TenantTx) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query(
        "SELECT signing_key_id, kid, public_key, wrapped_private_key, kms_key_id
         FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, signing_key_id DESC",
    )
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(|r| {
        Ok(SigningKeyRow {
            signing_key_id: r.try_get("signing_key_id")?,
            kid: r.try_get("kid")?,
            public_key: r.try_get("public_key")?,
            wrapped_private_key: r.try_get("wrapped_private_key")?,
            kms_key_id: r.try_get("kms_key_id")?,
        })
    })
    .collect()
}

/// `certificate_authorities`, from the CertificateAuthority aggregate.
pub(crate) struct CertificateAuthorities;

#[async_trait::async_trait]
impl Projection for CertificateAuthorities {
    fn name(&self) -> &'static str {
        "certificate_authorities"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["certificate_authorities"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Ca::TYPE {
            return Ok(());
        }
        let CaEvent::CaCreated {
            kind,
            certificate_der,
            wrapped_private_key,
            kms_key_id,
        } = event.decode::<CaEvent>()?;
        sqlx::query(
            "INSERT INTO certificate_authorities (org_id, ca_id, kind, certificate_der,
                wrapped_private_key, kms_key_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event.org_id.as_uuid())
        .bind(event.aggregate_id.as_uuid())
        .bind(kind.as_str())
        .bind(certificate_der)
        .bind(wrapped_private_key)
        .bind(kms_key_id)
        .bind(event.occurred_at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// `enrollment_tokens`, from the EnrollmentToken aggregate.
pub(crate) struct EnrollmentTokens;

#[async_trait::async_trait]
impl Projection for EnrollmentTokens {
    fn name(&self) -> &'static str {
        "enrollment_tokens"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["enrollment_tokens"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != EnrollmentToken::TYPE {
            return Ok(());
        }
        let id = event.aggregate_id.as_uuid();
        match event.decode::<EnrollmentTokenEvent>()? {
            EnrollmentTokenEvent::EnrollmentTokenCreated {
                name,
                display_prefix,
                secret_sha256,
                expires_at,
            } => {
                sqlx::query(
                    "INSERT INTO enrollment_tokens (org_id, token_id, name, display_prefix,
                        secret_sha256, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(event.org_id.as_uuid())
                .bind(id)
                .bind(name)
                .bind(display_prefix)
                .bind(secret_sha256.as_slice())
                .bind(event.occurred_at)
                .bind(expires_at)
                .execute(conn)
                .await?;
            }
            EnrollmentTokenEvent::EnrollmentTokenConsumed { agent } => {
                sqlx::query(
                    "UPDATE enrollment_tokens SET used_by_agent_id = $2 WHERE token_id = $1",
                )
                .bind(id)
                .bind(agent)
                .execute(conn)
                .await?;
            }
            EnrollmentTokenEvent::EnrollmentTokenRevoked { .. } => {
                sqlx::query("UPDATE enrollment_tokens SET revoked_at = $2 WHERE token_id = $1")
                    .bind(id)
                    .bind(event.occurred_at)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// `agents` and `agent_certificates`, from the Agent aggregate.
pub(crate) struct Agents;

async fn insert_certificate(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    c: &IssuedCertificate,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agent_certificates (org_id, serial, agent_id, not_before, not_after, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.org_id.as_uuid())
    .bind(&c.serial)
    .bind(event.aggregate_id.as_uuid())
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(event.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Projection for Agents {
    fn name(&self) -> &'static str {
        "agents"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["agents", "agent_certificates"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Agent::TYPE {
            return Ok(());
        }
        let id = event.aggregate_id.as_uuid();
        match event.decode::<AgentEvent>()? {
            AgentEvent::AgentEnrolled { certificate, .. } => {
                sqlx::query(
                    "INSERT INTO agents (org_id, agent_id, current_serial, not_after, enrolled_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(event.org_id.as_uuid())
                .bind(id)
                .bind(&certificate.serial)
                .bind(certificate.not_after)
                .bind(event.occurred_at)
                .execute(&mut *conn)
                .await?;
                insert_certificate(conn, event, &certificate).await?;
            }
            AgentEvent::CertificateRenewed { certificate } => {
                sqlx::query(
                    "UPDATE agents SET current_serial = $2, not_after = $3 WHERE agent_id = $1",
                )
                .bind(id)
                .bind(&certificate.serial)
                .bind(certificate.not_after)
                .execute(&mut *conn)
                .await?;
                insert_certificate(conn, event, &certificate).await?;
            }
            AgentEvent::AgentRevoked { .. } => {
                sqlx::query("UPDATE agents SET revoked_at = $2 WHERE agent_id = $1")
                    .bind(id)
                    .bind(event.occurred_at)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "UPDATE agent_certificates SET revoked_at = $2 WHERE agent_id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// A stored CA.
#[derive(Debug, Clone)]
pub struct CaRow {
    /// Aggregate id.
    pub ca_id: uuid::Uuid,
    /// The certificate.
    pub certificate_der: Vec<u8>,
    /// The wrapped key.
    pub wrapped_private_key: Vec<u8>,
    /// The master key that wrapped it.
    pub kms_key_id: String,
}

pub(crate) async fn certificate_authority(tx: &mut TenantTx) -> Result<Option<CaRow>, sqlx::Error> {
    sqlx::query(
        "SELECT ca_id, certificate_der, wrapped_private_key, kms_key_id
         FROM certificate_authorities WHERE org_id = $1",
    )
    .bind(tx.org().as_uuid())
    .fetch_optional(tx.conn())
    .await?
    .map(|r| {
        Ok(CaRow {
            ca_id: r.try_get("ca_id")?,
            certificate_der: r.try_get("certificate_der")?,
            wrapped_private_key: r.try_get("wrapped_private_key")?,
            kms_key_id: r.try_get("kms_key_id")?,
        })
    })
    .transpose()
}

/// An enrollment token as listed: metadata only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenView {
    /// The org.
    pub org_id: OrgId,
    /// The token.
    pub token_id: uuid::Uuid,
    /// What it is for.
    pub name: String,
    /// First 12 characters of the secret.
    pub display_prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The agent that used it.
    pub used_by_agent_id: Option<uuid::Uuid>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

const TOKEN_SELECT: &str = "SELECT org_id, token_id, name, display_prefix, created_at, expires_at,
        used_by_agent_id, revoked_at FROM enrollment_tokens";

fn token_row(r: &sqlx::postgres::PgRow) -> Result<EnrollmentTokenView, sqlx::Error> {
    Ok(EnrollmentTokenView {
        org_id: OrgId::from(r.try_get::<uuid::Uuid, _>("org_id")?),
        token_id: r.try_get("token_id")?,
        name: r.try_get("name")?,
        display_prefix: r.try_get("display_prefix")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_by_agent_id: r.try_get("used_by_agent_id")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(crate) async fn list_enrollment_tokens(
    tx: &mut TenantTx,
) -> Result<Vec<EnrollmentTokenView>, sqlx::Error> {
    sqlx::query(&format!("{TOKEN_SELECT} ORDER BY created_at, token_id"))
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(token_row)
        .collect()
}

pub(crate) async fn get_enrollment_token(
    tx: &mut TenantTx,
    token: uuid::Uuid,
) -> Result<Option<EnrollmentTokenView>, sqlx::Error> {
    sqlx::query(&format!("{TOKEN_SELECT} WHERE token_id = $1"))
        .bind(token)
        .fetch_optional(tx.conn())
        .await?
        .as_ref()
        .map(token_row)
        .transpose()
}

/// Which org and token hold this secret hash, across tenants (see [`find_api_key`]).
pub(crate) async fn find_enrollment_token(
    conn: &mut PgConnection,
    hash: &[u8; 32],
) -> Result<Option<(OrgId, uuid::Uuid)>, sqlx::Error> {
    let row = sqlx::query("SELECT org_id, token_id FROM find_enrollment_token($1)")
        .bind(hash.as_slice())
        .fetch_one(conn)
        .await?;
    let org: Option<uuid::Uuid> = row.try_get("org_id")?;
    let token: Option<uuid::Uuid> = row.try_get("token_id")?;
    Ok(org.zip(token).map(|(o, t)| (OrgId::from(o), t)))
}

/// An agent as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    /// The org.
    pub org_id: OrgId,
    /// The agent.
    pub agent_id: uuid::Uuid,
    /// Its current certificate's serial.
    pub current_serial: String,
    /// When that certificate expires.
    pub not_after: DateTime<Utc>,
    /// When it enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

const AGENT_SELECT: &str =
    "SELECT org_id, agent_id, current_serial, not_after, enrolled_at, revoked_at FROM agents";

fn agent_row(r: &sqlx::postgres::PgRow) -> Result<AgentView, sqlx::Error> {
    Ok(AgentView {
        org_id: OrgId::from(r.try_get::<uuid::Uuid, _>("org_id")?),
        agent_id: r.try_get("agent_id")?,
        current_serial: r.try_get("current_serial")?,
        not_after: r.try_get("not_after")?,
        enrolled_at: r.try_get("enrolled_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(crate) async fn list_agents(tx: &mut TenantTx) -> Result<Vec<AgentView>, sqlx::Error> {
    sqlx::query(&format!("{AGENT_SELECT} ORDER BY enrolled_at, agent_id"))
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(agent_row)
        .collect()
}

pub(crate) async fn get_agent(
    tx: &mut TenantTx,
    agent: uuid::Uuid,
) -> Result<Option<AgentView>, sqlx::Error> {
    sqlx::query(&format!("{AGENT_SELECT} WHERE agent_id = $1"))
        .bind(agent)
        .fetch_optional(tx.conn())
        .await?
        .as_ref()
        .map(agent_row)
        .transpose()
}

/// Revoked certificates of the org that have not expired yet (expired ones need no CRL entry).
pub(crate) async fn revoked_certificates(
    tx: &mut TenantTx,
    now: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query(
        "SELECT serial, revoked_at FROM agent_certificates
         WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY revoked_at, serial",
    )
    .bind(now)
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(|r| Ok((r.try_get("serial")?, r.try_get("revoked_at")?)))
    .collect()
}

/// Every CA certificate of every org (public material only), through the narrow
/// `list_ca_certificates` function.
pub(crate) async fn all_ca_certificates(
    conn: &mut PgConnection,
) -> Result<Vec<(OrgId, Vec<u8>)>, sqlx::Error> {
    sqlx::query("SELECT org_id, certificate_der FROM list_ca_certificates()")
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| {
            Ok((
                OrgId::from(r.try_get::<uuid::Uuid, _>("org_id")?),
                r.try_get("certificate_der")?,
            ))
        })
        .collect()
}
