//! The SDK's view of Coffer's resources, and their validated conversions from protobuf.
//!
//! Every conversion checks what it receives: a missing required field, an id that is not a
//! UUID or an unknown role is an [`Error::Protocol`] naming the message and field, never a
//! panic or a default value.

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_proto::credentials::v1 as cred_pb;
use coffer_proto::diagnostics::v1 as diag_pb;
use coffer_proto::enrollment::v1 as pb;
use coffer_proto::time::from_timestamp;
use coffer_types::{
    AgentId, AggregateId, ApiKeyId, CredentialId, EnrollmentTokenId, EventId, OrgId, UserId,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::Error;

/// A customer organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Org {
    /// Its id.
    pub org_id: OrgId,
    /// Its display name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A person's membership of an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Member {
    /// The org.
    pub org_id: OrgId,
    /// The person.
    pub user_id: UserId,
    /// Their email address, lowercased by the server.
    pub email: String,
    /// What they may do in the org.
    pub role: Role,
    /// A suspended member keeps their role but is refused everywhere until reactivated.
    pub suspended: bool,
    /// When they were added.
    pub joined_at: DateTime<Utc>,
}

/// An API key's metadata. The secret is only ever in [`CreatedApiKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ApiKey {
    /// The org the key acts in.
    pub org_id: OrgId,
    /// Its id.
    pub key_id: ApiKeyId,
    /// A name to recognise it by.
    pub name: String,
    /// The role its tokens carry.
    pub role: Role,
    /// Scopes restricting it further, if any.
    pub scopes: Vec<String>,
    /// The first 12 characters of the secret.
    pub display_prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last exchanged for a token; `None`: never.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Whether it has been revoked.
    pub revoked: bool,
}

/// A new API key and its secret. The server shows the secret only in this answer: store it.
/// `Debug` shows `[REDACTED]` in its place.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreatedApiKey {
    /// The key's metadata.
    pub key: ApiKey,
    /// `coffer_…`: what [`crate::Client::connect`] takes.
    pub secret: SecretString,
}

/// A new org, its first owner, and an owner API key for it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreatedOrg {
    /// The org.
    pub org: Org,
    /// Its first owner.
    pub owner: Member,
    /// An owner API key of the new org, shown once.
    pub owner_api_key: CreatedApiKey,
}

/// What [`crate::ApiKeys::create`] makes: a name and role, optionally scopes and an expiry.
///
/// ```
/// use coffer_sdk::{NewApiKey, Role};
/// let key = NewApiKey::new("ci", Role::Operator)
///     .scope("job.run")
///     .expires_at(chrono::Utc::now() + chrono::Duration::days(30));
/// # let _ = key;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    name: String,
    role: Role,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl NewApiKey {
    /// A key named `name` (1 to 64 characters) with `role`, no scopes, never expiring.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            role,
            scopes: Vec::new(),
            expires_at: None,
        }
    }

    /// Adds a scope (`a-z 0-9 . : _ *`, up to 64 characters).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Makes the key stop working at `at` (which must be in the future).
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    pub(crate) fn into_request(self, org: OrgId) -> pb::CreateApiKeyRequest {
        pb::CreateApiKeyRequest {
            org_id: org.to_string(),
            name: self.name,
            role: self.role.as_str().to_owned(),
            scopes: self.scopes,
            expires_at: self.expires_at.map(coffer_proto::time::to_timestamp),
        }
    }
}

/// An access token: what the client sends as `authorization: Bearer …`. A secret: `Debug`
/// shows `[REDACTED]` in its place.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccessToken {
    /// The compact JWS.
    pub token: SecretString,
    /// When the server stops accepting it.
    pub expires_at: DateTime<Utc>,
    /// The org it acts in.
    pub org_id: OrgId,
    /// The role it carries.
    pub role: Role,
}

/// The public keys access tokens are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Jwks {
    /// The key set as the server published it (RFC 7517 JSON), for JWT libraries.
    pub json: String,
    /// The keys in it.
    pub keys: Vec<Jwk>,
}

/// One public key of a [`Jwks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Jwk {
    /// Key id: the `kid` header of the tokens it verifies.
    pub kid: String,
    /// Key type (`OKP` for Ed25519).
    pub kty: String,
    /// Algorithm (`EdDSA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Curve (`Ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
}

/// A diagnostics probe just appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SentProbe {
    /// The probe aggregate.
    pub probe_id: AggregateId,
    /// The `ProbeSent` event.
    pub event_id: EventId,
    /// The aggregate's version after the append.
    pub version: u64,
}

/// How far a probe's latest event has travelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Probe {
    /// The probe aggregate.
    pub probe_id: AggregateId,
    /// The text it carries.
    pub note: String,
    /// How many probes were sent on it.
    pub probes_sent: u64,
    /// When the latest was appended.
    pub sent_at: DateTime<Utc>,
    /// Whether the outbox relay has published it to JetStream.
    pub published: bool,
    /// When the consumer projected it; `None`: not yet.
    pub observed_at: Option<DateTime<Utc>>,
    /// The JetStream stream sequence the consumer saw, once observed.
    pub stream_sequence: Option<u64>,
    /// The trace id the consumer ran under, once observed.
    pub consumer_trace_id: Option<String>,
}

/// An enrollment token's metadata. The secret is only ever in [`CreatedEnrollmentToken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EnrollmentToken {
    /// The org an agent enrolling with it joins.
    pub org_id: OrgId,
    /// Its id.
    pub token_id: EnrollmentTokenId,
    /// A name to recognise it by, such as the host the agent will run on.
    pub name: String,
    /// The first 12 characters of the secret.
    pub display_prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working if unused.
    pub expires_at: DateTime<Utc>,
    /// The agent that enrolled with it; `None`: unused.
    pub used_by_agent_id: Option<AgentId>,
    /// Whether it has been revoked.
    pub revoked: bool,
}

impl EnrollmentToken {
    /// `used`, `revoked`, `expired` (as of `now`) or `active`: whether an agent can still
    /// enroll with it.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.used_by_agent_id.is_some() {
            "used"
        } else if self.revoked {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "active"
        }
    }
}

/// A new enrollment token and its secret. The server shows the secret only in this answer:
/// hand it to the agent (`coffer-agent enroll --token …`). `Debug` shows `[REDACTED]` in its
/// place.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreatedEnrollmentToken {
    /// The token's metadata.
    pub token: EnrollmentToken,
    /// `coffer_enroll_…`: works once, until [`EnrollmentToken::expires_at`].
    pub secret: SecretString,
}

/// An enrolled agent and its current certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Agent {
    /// Its org.
    pub org_id: OrgId,
    /// Its id.
    pub agent_id: AgentId,
    /// `spiffe://<trust-domain>/org/<org_id>/agent/<agent_id>`: the URI in its certificate.
    pub spiffe_id: String,
    /// Its current certificate's serial number, lowercase hex.
    pub serial: String,
    /// When its current certificate expires (it renews at 80 % of the lifetime).
    pub not_after: DateTime<Utc>,
    /// When it enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// Whether it has been revoked: every certificate it held is on the org's CRL.
    pub revoked: bool,
}

/// An org's certificate revocation list, signed by the org's intermediate CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Crl {
    /// DER encoding.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// PEM encoding (`-----BEGIN X509 CRL-----`), for `openssl verify -CRLfile`.
    pub pem: String,
    /// The CRL number; it grows with every revocation.
    pub number: u64,
    /// When it was issued.
    pub this_update: DateTime<Utc>,
    /// When the next one will be issued at the latest; a copy older than this is stale.
    pub next_update: DateTime<Utc>,
}

/// What a credential is for. It tells the services that use a credential which kind of
/// secret its vault reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// A database password or connection secret.
    Database,
    /// Storage destination keys (an S3 access key, and the like).
    Storage,
    /// An SSH private key.
    Ssh,
    /// Anything else.
    Generic,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 4] = [
        Purpose::Database,
        Purpose::Storage,
        Purpose::Ssh,
        Purpose::Generic,
    ];

    /// The wire name, e.g. `"database"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Database => "database",
            Purpose::Storage => "storage",
            Purpose::Ssh => "ssh",
            Purpose::Generic => "generic",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Purpose {
    type Err = ParsePurposeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(ParsePurposeError)
    }
}

/// Error returned when a string is not a purpose name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("purpose must be one of database, storage, ssh, generic")]
pub struct ParsePurposeError;

/// A credential's metadata. Its value goes to the server and never comes back: only agents
/// receive it, for a job they hold a ticket for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Credential {
    /// Its org.
    pub org_id: OrgId,
    /// Its id.
    pub credential_id: CredentialId,
    /// Its name, path-like (`prod/orders-db`); unique among the org's live credentials.
    pub name: String,
    /// What it is for.
    pub purpose: Purpose,
    /// `vault:coffer/<org_id>/<credential_id>`: how other services refer to it.
    pub vault_ref: String,
    /// The current version: 1 on creation, one more with every replaced value.
    pub version: u32,
    /// Length of the current value in bytes.
    pub value_bytes: u32,
    /// The KMS master key the current version's data key is wrapped under.
    pub kms_key_id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The public half of an org's age key pair: agents encrypt every backup to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OrgRecipient {
    /// The org.
    pub org_id: OrgId,
    /// `age1…`: pass it to `age -r`.
    pub recipient: String,
    /// When the key pair was generated.
    pub created_at: DateTime<Utc>,
}

/// An org's exported age key pair. `Debug` shows `[REDACTED]` in place of the identity.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecoveryKey {
    /// The org.
    pub org_id: OrgId,
    /// `AGE-SECRET-KEY-1…`, for `age -d -i`: anyone holding it decrypts every backup of the
    /// org. Store it offline.
    pub identity: SecretString,
    /// The matching public recipient (`age1…`).
    pub recipient: String,
}

/// Where the platform's latest master-key rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationState {
    /// The platform has never rotated its master key.
    None,
    /// Wrapped keys are being moved onto the target in batches.
    Running,
    /// Every wrapped key was under the target at the last batch.
    Completed,
}

impl RotationState {
    /// The wire name, e.g. `"running"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationState::None => "none",
            RotationState::Running => "running",
            RotationState::Completed => "completed",
        }
    }
}

impl std::fmt::Display for RotationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The platform's latest master-key rotation and its progress. A rotation moves every wrapped
/// key (credential data keys, org age keys) onto the master key the service is configured
/// with; credential ciphertexts are not touched. With [`RotationState::None`] the counters are
/// 0 and `to_key_id` and `reason` are empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MasterKeyRotation {
    /// Whether it is running or completed.
    pub state: RotationState,
    /// 1 for the platform's first rotation, then 2, …; 0 when there has been none.
    pub number: u32,
    /// The master key everything moves onto.
    pub to_key_id: String,
    /// Why it was started, as recorded in the audit log.
    pub reason: String,
    /// Wrapped keys under another master key when it started.
    pub pending_at_start: u64,
    /// Wrapped keys it has moved so far.
    pub rewrapped: u64,
    /// Wrapped keys still under another master key at its last batch.
    pub remaining: u64,
    /// The master key the service wraps new keys under now.
    pub current_key_id: String,
}

/// The kind of key a master key wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WrappedKeyPurpose {
    /// The data key of one stored credential value (each version has its own).
    CredentialDek,
    /// An org's age private key, which decrypts its backups.
    OrgAgeKey,
}

impl WrappedKeyPurpose {
    /// The wire name, e.g. `"credential_dek"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WrappedKeyPurpose::CredentialDek => "credential_dek",
            WrappedKeyPurpose::OrgAgeKey => "org_age_key",
        }
    }
}

impl std::fmt::Display for WrappedKeyPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many wrapped keys sit under each master key, across every org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyCoverage {
    /// The master key the service wraps new keys under.
    pub current_key_id: String,
    /// One entry per purpose and master key, by purpose then key id.
    pub entries: Vec<KeyCoverageEntry>,
}

impl KeyCoverage {
    /// Wrapped keys under any master key but `key`: what a rotation onto `key` has left to
    /// move. `not_under(&coverage.current_key_id)` is 0 once a rotation has completed.
    pub fn not_under(&self, key: &str) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kms_key_id != key)
            .map(|e| e.wrapped_keys)
            .sum()
    }
}

/// The wrapped keys of one purpose under one master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyCoverageEntry {
    /// What kind of key they are.
    pub purpose: WrappedKeyPurpose,
    /// The KMS master key they are wrapped under.
    pub kms_key_id: String,
    /// How many there are.
    pub wrapped_keys: u64,
}

fn id<T: std::str::FromStr>(s: &str, field: &str) -> Result<T, Error> {
    s.parse()
        .map_err(|_| Error::protocol(format!("{field} is not a UUID")))
}

fn role(s: &str, field: &str) -> Result<Role, Error> {
    s.parse()
        .map_err(|_| Error::protocol(format!("{field} is not a known role")))
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Error> {
    value.ok_or_else(|| Error::protocol(format!("{field} is missing")))
}

fn time(ts: Option<prost_types::Timestamp>, field: &str) -> Result<DateTime<Utc>, Error> {
    let ts = required(ts, field)?;
    from_timestamp(&ts).map_err(|e| Error::protocol(format!("{field} {e}")))
}

fn optional_time(
    ts: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, Error> {
    ts.map(|ts| from_timestamp(&ts).map_err(|e| Error::protocol(format!("{field} {e}"))))
        .transpose()
}

impl TryFrom<pb::Org> for Org {
    type Error = Error;
    fn try_from(o: pb::Org) -> Result<Self, Error> {
        Ok(Self {
            org_id: id(&o.org_id, "Org.org_id")?,
            name: o.name,
            created_at: time(o.created_at, "Org.created_at")?,
        })
    }
}

impl TryFrom<pb::Member> for Member {
    type Error = Error;
    fn try_from(m: pb::Member) -> Result<Self, Error> {
        Ok(Self {
            org_id: id(&m.org_id, "Member.org_id")?,
            user_id: id(&m.user_id, "Member.user_id")?,
            email: m.email,
            role: role(&m.role, "Member.role")?,
            suspended: m.suspended,
            joined_at: time(m.joined_at, "Member.joined_at")?,
        })
    }
}

impl TryFrom<pb::ApiKey> for ApiKey {
    type Error = Error;
    fn try_from(k: pb::ApiKey) -> Result<Self, Error> {
        Ok(Self {
            org_id: id(&k.org_id, "ApiKey.org_id")?,
            key_id: id(&k.key_id, "ApiKey.key_id")?,
            name: k.name,
            role: role(&k.role, "ApiKey.role")?,
            scopes: k.scopes,
            display_prefix: k.display_prefix,
            created_at: time(k.created_at, "ApiKey.created_at")?,
            expires_at: optional_time(k.expires_at, "ApiKey.expires_at")?,
            last_used_at: optional_time(k.last_used_at, "ApiKey.last_used_at")?,
            revoked: k.revoked,
        })
    }
}

impl TryFrom<pb::CreateApiKeyResponse> for CreatedApiKey {
    type Error = Error;
    fn try_from(c: pb::CreateApiKeyResponse) -> Result<Self, Error> {
        if c.secret.is_empty() {
            return Err(Error::protocol("CreateApiKeyResponse.secret is missing"));
        }
        Ok(Self {
            key: required(c.key, "CreateApiKeyResponse.key")?.try_into()?,
            secret: SecretString::from(c.secret),
        })
    }
}

impl TryFrom<pb::CreateOrgResponse> for CreatedOrg {
    type Error = Error;
    fn try_from(c: pb::CreateOrgResponse) -> Result<Self, Error> {
        Ok(Self {
            org: required(c.org, "CreateOrgResponse.org")?.try_into()?,
            owner: required(c.owner, "CreateOrgResponse.owner")?.try_into()?,
            owner_api_key: required(c.owner_api_key, "CreateOrgResponse.owner_api_key")?
                .try_into()?,
        })
    }
}

impl TryFrom<pb::AccessToken> for AccessToken {
    type Error = Error;
    fn try_from(t: pb::AccessToken) -> Result<Self, Error> {
        if t.access_token.is_empty() {
            return Err(Error::protocol("AccessToken.access_token is missing"));
        }
        Ok(Self {
            expires_at: time(t.expires_at, "AccessToken.expires_at")?,
            org_id: id(&t.org_id, "AccessToken.org_id")?,
            role: role(&t.role, "AccessToken.role")?,
            token: SecretString::from(t.access_token),
        })
    }
}

impl TryFrom<pb::Jwks> for Jwks {
    type Error = Error;
    fn try_from(j: pb::Jwks) -> Result<Self, Error> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<Jwk>,
        }
        let set: Set = serde_json::from_str(&j.json)
            .map_err(|e| Error::protocol(format!("Jwks.json is not a JSON Web Key Set: {e}")))?;
        Ok(Self {
            json: j.json,
            keys: set.keys,
        })
    }
}

impl TryFrom<pb::EnrollmentToken> for EnrollmentToken {
    type Error = Error;
    fn try_from(t: pb::EnrollmentToken) -> Result<Self, Error> {
        let used_by_agent_id = if t.used_by_agent_id.is_empty() {
            None
        } else {
            Some(id(&t.used_by_agent_id, "EnrollmentToken.used_by_agent_id")?)
        };
        Ok(Self {
            org_id: id(&t.org_id, "EnrollmentToken.org_id")?,
            token_id: id(&t.token_id, "EnrollmentToken.token_id")?,
            name: t.name,
            display_prefix: t.display_prefix,
            created_at: time(t.created_at, "EnrollmentToken.created_at")?,
            expires_at: time(t.expires_at, "EnrollmentToken.expires_at")?,
            used_by_agent_id,
            revoked: t.revoked,
        })
    }
}

impl TryFrom<pb::CreateEnrollmentTokenResponse> for CreatedEnrollmentToken {
    type Error = Error;
    fn try_from(c: pb::CreateEnrollmentTokenResponse) -> Result<Self, Error> {
        if c.secret.is_empty() {
            return Err(Error::protocol(
                "CreateEnrollmentTokenResponse.secret is missing",
            ));
        }
        Ok(Self {
            token: required(c.token, "CreateEnrollmentTokenResponse.token")?.try_into()?,
            secret: SecretString::from(c.secret),
        })
    }
}

impl TryFrom<pb::Agent> for Agent {
    type Error = Error;
    fn try_from(a: pb::Agent) -> Result<Self, Error> {
        Ok(Self {
            org_id: id(&a.org_id, "Agent.org_id")?,
            agent_id: id(&a.agent_id, "Agent.agent_id")?,
            spiffe_id: a.spiffe_id,
            serial: a.serial,
            not_after: time(a.not_after, "Agent.not_after")?,
            enrolled_at: time(a.enrolled_at, "Agent.enrolled_at")?,
            revoked: a.revoked,
        })
    }
}

impl TryFrom<pb::Crl> for Crl {
    type Error = Error;
    fn try_from(c: pb::Crl) -> Result<Self, Error> {
        if c.der.is_empty() || c.pem.is_empty() {
            return Err(Error::protocol("Crl.der and Crl.pem are both required"));
        }
        Ok(Self {
            der: c.der,
            pem: c.pem,
            number: c.number,
            this_update: time(c.this_update, "Crl.this_update")?,
            next_update: time(c.next_update, "Crl.next_update")?,
        })
    }
}

impl TryFrom<cred_pb::Credential> for Credential {
    type Error = Error;
    fn try_from(c: cred_pb::Credential) -> Result<Self, Error> {
        Ok(Self {
            org_id: id(&c.org_id, "Credential.org_id")?,
            credential_id: id(&c.credential_id, "Credential.credential_id")?,
            name: c.name,
            purpose: c
                .purpose
                .parse()
                .map_err(|_| Error::protocol("Credential.purpose is not a known purpose"))?,
            vault_ref: c.vault_ref,
            version: c.version,
            value_bytes: c.value_bytes,
            kms_key_id: c.kms_key_id,
            created_at: time(c.created_at, "Credential.created_at")?,
            updated_at: time(c.updated_at, "Credential.updated_at")?,
        })
    }
}

impl TryFrom<cred_pb::OrgRecipient> for OrgRecipient {
    type Error = Error;
    fn try_from(r: cred_pb::OrgRecipient) -> Result<Self, Error> {
        if r.recipient.is_empty() {
            return Err(Error::protocol("OrgRecipient.recipient is missing"));
        }
        Ok(Self {
            org_id: id(&r.org_id, "OrgRecipient.org_id")?,
            recipient: r.recipient,
            created_at: time(r.created_at, "OrgRecipient.created_at")?,
        })
    }
}

impl TryFrom<cred_pb::RecoveryKey> for RecoveryKey {
    type Error = Error;
    fn try_from(mut k: cred_pb::RecoveryKey) -> Result<Self, Error> {
        // Wrapped before anything is checked, so a refused answer still drops it zeroed.
        let identity = SecretString::from(std::mem::take(&mut k.identity));
        if identity.expose_secret().is_empty() || k.recipient.is_empty() {
            return Err(Error::protocol(
                "RecoveryKey.identity and RecoveryKey.recipient are both required",
            ));
        }
        Ok(Self {
            org_id: id(&k.org_id, "RecoveryKey.org_id")?,
            identity,
            recipient: std::mem::take(&mut k.recipient),
        })
    }
}

impl TryFrom<cred_pb::MasterKeyRotation> for MasterKeyRotation {
    type Error = Error;
    fn try_from(r: cred_pb::MasterKeyRotation) -> Result<Self, Error> {
        let state = match r.state.as_str() {
            "none" => RotationState::None,
            "running" => RotationState::Running,
            "completed" => RotationState::Completed,
            _ => {
                return Err(Error::protocol(
                    "MasterKeyRotation.state is not a known state",
                ));
            }
        };
        if r.current_key_id.is_empty() {
            return Err(Error::protocol(
                "MasterKeyRotation.current_key_id is missing",
            ));
        }
        if state != RotationState::None && (r.number == 0 || r.to_key_id.is_empty()) {
            return Err(Error::protocol(
                "MasterKeyRotation.number and MasterKeyRotation.to_key_id are required once a \
                 rotation has started",
            ));
        }
        Ok(Self {
            state,
            number: r.number,
            to_key_id: r.to_key_id,
            reason: r.reason,
            pending_at_start: r.pending_at_start,
            rewrapped: r.rewrapped,
            remaining: r.remaining,
            current_key_id: r.current_key_id,
        })
    }
}

impl TryFrom<cred_pb::KeyCoverage> for KeyCoverage {
    type Error = Error;
    fn try_from(c: cred_pb::KeyCoverage) -> Result<Self, Error> {
        if c.current_key_id.is_empty() {
            return Err(Error::protocol("KeyCoverage.current_key_id is missing"));
        }
        Ok(Self {
            current_key_id: c.current_key_id,
            entries: c
                .entries
                .into_iter()
                .map(KeyCoverageEntry::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TryFrom<cred_pb::KeyCoverageEntry> for KeyCoverageEntry {
    type Error = Error;
    fn try_from(e: cred_pb::KeyCoverageEntry) -> Result<Self, Error> {
        let purpose = match e.purpose.as_str() {
            "credential_dek" => WrappedKeyPurpose::CredentialDek,
            "org_age_key" => WrappedKeyPurpose::OrgAgeKey,
            _ => {
                return Err(Error::protocol(
                    "KeyCoverageEntry.purpose is not a known purpose",
                ));
            }
        };
        if e.kms_key_id.is_empty() {
            return Err(Error::protocol("KeyCoverageEntry.kms_key_id is missing"));
        }
        Ok(Self {
            purpose,
            kms_key_id: e.kms_key_id,
            wrapped_keys: e.wrapped_keys,
        })
    }
}

impl TryFrom<diag_pb::SendProbeResponse> for SentProbe {
    type Error = Error;
    fn try_from(s: diag_pb::SendProbeResponse) -> Result<Self, Error> {
        Ok(Self {
            probe_id: id(&s.probe_id, "SendProbeResponse.probe_id")?,
            event_id: id(&s.event_id, "SendProbeResponse.event_id")?,
            version: s.version,
        })
    }
}

impl TryFrom<diag_pb::GetProbeResponse> for Probe {
    type Error = Error;
    fn try_from(p: diag_pb::GetProbeResponse) -> Result<Self, Error> {
        let observed_at = optional_time(p.observed_at, "GetProbeResponse.observed_at")?;
        let observed = observed_at.is_some();
        Ok(Self {
            probe_id: id(&p.probe_id, "GetProbeResponse.probe_id")?,
            note: p.note,
            probes_sent: p.probes_sent,
            sent_at: time(p.sent_at, "GetProbeResponse.sent_at")?,
            published: p.published,
            observed_at,
            stream_sequence: observed.then_some(p.stream_sequence),
            consumer_trace_id: observed.then_some(p.consumer_trace_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use coffer_proto::time::to_timestamp;

    use super::*;

    fn member() -> pb::Member {
        pb::Member {
            org_id: OrgId::new().to_string(),
            user_id: UserId::new().to_string(),
            email: "bob@acme.test".into(),
            role: "operator".into(),
            suspended: false,
            joined_at: Some(to_timestamp(Utc::now())),
        }
    }

    #[test]
    fn a_well_formed_member_converts() {
        let m = Member::try_from(member()).unwrap();
        assert_eq!(
            (m.email.as_str(), m.role),
            ("bob@acme.test", Role::Operator)
        );
    }

    #[test]
    fn malformed_answers_are_protocol_errors_naming_the_field() {
        let cases: [(pb::Member, &str); 4] = [
            (
                pb::Member {
                    user_id: "nope".into(),
                    ..member()
                },
                "Member.user_id is not a UUID",
            ),
            (
                pb::Member {
                    role: "root".into(),
                    ..member()
                },
                "Member.role is not a known role",
            ),
            (
                pb::Member {
                    joined_at: None,
                    ..member()
                },
                "Member.joined_at is missing",
            ),
            (
                pb::Member {
                    joined_at: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -1,
                    }),
                    ..member()
                },
                "Member.joined_at nanos must be in 0..1e9",
            ),
        ];
        for (bad, message) in cases {
            assert_eq!(
                Member::try_from(bad).unwrap_err(),
                Error::Protocol {
                    message: message.into()
                }
            );
        }
        let token = pb::AccessToken {
            access_token: String::new(),
            expires_at: Some(to_timestamp(Utc::now())),
            org_id: OrgId::new().to_string(),
            role: "owner".into(),
        };
        assert!(matches!(
            AccessToken::try_from(token),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            Jwks::try_from(pb::Jwks { json: "{".into() }),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn rotation_answers_are_validated_and_coverage_counts_keys_under_other_master_keys() {
        let running = cred_pb::MasterKeyRotation {
            state: "running".into(),
            number: 2,
            to_key_id: "kms-2".into(),
            reason: "yearly".into(),
            pending_at_start: 10,
            rewrapped: 4,
            remaining: 6,
            current_key_id: "kms-2".into(),
        };
        let r = MasterKeyRotation::try_from(running.clone()).unwrap();
        assert_eq!(
            (r.state, r.rewrapped, r.remaining),
            (RotationState::Running, 4, 6)
        );
        let none = MasterKeyRotation::try_from(cred_pb::MasterKeyRotation {
            state: "none".into(),
            current_key_id: "kms-1".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((none.state, none.number), (RotationState::None, 0));
        for (bad, message) in [
            (
                cred_pb::MasterKeyRotation {
                    state: "paused".into(),
                    ..running.clone()
                },
                "MasterKeyRotation.state is not a known state",
            ),
            (
                cred_pb::MasterKeyRotation {
                    current_key_id: String::new(),
                    ..running.clone()
                },
                "MasterKeyRotation.current_key_id is missing",
            ),
        ] {
            assert_eq!(
                MasterKeyRotation::try_from(bad).unwrap_err(),
                Error::Protocol {
                    message: message.into()
                }
            );
        }
        assert!(matches!(
            MasterKeyRotation::try_from(cred_pb::MasterKeyRotation {
                number: 0,
                ..running
            }),
            Err(Error::Protocol { .. })
        ));

        let entry = |purpose: &str, key: &str, n| cred_pb::KeyCoverageEntry {
            purpose: purpose.into(),
            kms_key_id: key.into(),
            wrapped_keys: n,
        };
        let coverage = KeyCoverage::try_from(cred_pb::KeyCoverage {
            current_key_id: "kms-2".into(),
            entries: vec![
                entry("credential_dek", "kms-1", 5),
                entry("credential_dek", "kms-2", 3),
                entry("org_age_key", "kms-1", 2),
            ],
        })
        .unwrap();
        assert_eq!(coverage.entries[2].purpose, WrappedKeyPurpose::OrgAgeKey);
        assert_eq!(coverage.not_under("kms-2"), 7);
        assert_eq!(coverage.not_under("kms-1"), 3);
        assert_eq!(
            KeyCoverage::try_from(cred_pb::KeyCoverage {
                current_key_id: "kms-2".into(),
                entries: vec![entry("backup_key", "kms-2", 1)],
            })
            .unwrap_err(),
            Error::Protocol {
                message: "KeyCoverageEntry.purpose is not a known purpose".into()
            }
        );
    }

    #[test]
    fn a_created_keys_debug_output_hides_the_secret() {
        let created = CreatedApiKey::try_from(pb::CreateApiKeyResponse {
            key: Some(pb::ApiKey {
                org_id: OrgId::new().to_string(),
                key_id: ApiKeyId::new().to_string(),
                name: "ci".into(),
                role: "viewer".into(),
                scopes: vec![],
                display_prefix: "coffer_abcde".into(),
                created_at: Some(to_timestamp(Utc::now())),
                expires_at: None,
                last_used_at: None,
                revoked: false,
            }),
            secret: "coffer_abcdeSECRETSECRETSECRET".into(),
        })
        .unwrap();
        let debug = format!("{created:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
    }
}
