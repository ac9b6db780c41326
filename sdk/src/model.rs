//! The SDK's view of Coffer's resources, and their validated conversions from protobuf.
//!
//! Every conversion checks what it receives: a missing required field, an id that is not a
//! UUID or an unknown role is an [`Error::Protocol`] naming the message and field, never a
//! panic or a default value.

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_proto::audit::v1 as audit_pb;
use coffer_proto::common::v1 as common_pb;
use coffer_proto::credentials::v1 as cred_pb;
use coffer_proto::diagnostics::v1 as diag_pb;
use coffer_proto::enrollment::v1 as pb;
use coffer_proto::events::v1 as events_pb;
use coffer_proto::time::{from_timestamp, to_timestamp};
use coffer_types::{
    Actor, ActorKind, AgentId, AggregateId, ApiKeyId, CredentialId, EnrollmentTokenId, EventId,
    OrgId, UserId,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::Error;

mod scheduling;

pub use scheduling::{
    Artifact, Database, DatabaseFields, Destination, DestinationFields, DestinationKind, Engine,
    Job, JobKind, JobQuery, JobState, JobTrigger, MissedRuns, ParseNameError, Progress, Retention,
    Schedule, ScheduleFields,
};

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

/// A SHA-256 digest in the audit log: a leaf hash, chain hash, Merkle root or proof node.
/// Shown and serialised as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn from_wire(bytes: &[u8], field: &str) -> Result<Self, Error> {
        bytes
            .try_into()
            .map(Hash)
            .map_err(|_| Error::protocol(format!("{field} is not 32 bytes")))
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&to_hex(&self.0))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&to_hex(bytes))
}

/// One event as the audit log holds it: who did what to which aggregate, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Event {
    /// Its id.
    pub event_id: EventId,
    /// Its org ([`OrgId::PLATFORM`] for platform events).
    pub org_id: OrgId,
    /// The service that recorded it, e.g. `credentials`.
    pub service: String,
    /// The kind of thing it happened to, e.g. `Credential`.
    pub aggregate_type: String,
    /// The thing it happened to.
    pub aggregate_id: AggregateId,
    /// Its position in that aggregate's history, from 1.
    pub version: u64,
    /// What happened, in the past tense, e.g. `CredentialCreated`.
    pub event_type: String,
    /// The version of the payload's schema.
    pub schema_version: u32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: Actor,
    /// The event's own protobuf message (named by `event_type`), encoded; hex in JSON.
    #[serde(serialize_with = "hex_bytes")]
    pub payload: Vec<u8>,
}

/// An entry of an org's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Its position, from 1 (the Merkle leaf index is `seq - 1`).
    pub seq: u64,
    /// The event it records.
    pub event: Event,
    /// SHA-256(0x00 || leaf), the leaf being the encoded `AuditEntry` protobuf.
    pub leaf_hash: Hash,
    /// h_seq = SHA-256(h_{seq-1} || leaf_hash), h_0 = SHA-256("coffer-audit-v1" || org id).
    pub chain_hash: Hash,
    /// When the audit service appended it.
    pub appended_at: DateTime<Utc>,
}

/// A signed tree head of an org's audit log: a C2SP tlog-checkpoint in signed-note form.
///
/// The fields beside [`Checkpoint::signed_note`] are the server's reading of it; only the note
/// and its signature are evidence. Check the signature with the verifier key (and pin that key
/// once known) before relying on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The org whose log it is.
    pub org_id: OrgId,
    /// How many entries it covers.
    pub size: u64,
    /// The RFC 9162 Merkle root of entries `1..=size`.
    pub root_hash: Hash,
    /// The signed note, origin `<deployment>/audit/<org_id>`. Keep it to witness the log later
    /// (`coffer audit verify --witness`).
    pub signed_note: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// The note verifier key (`<name>+<key hash>+<base64 key>`) that verifies it.
    pub verifier_key: String,
}

/// An entry with the evidence that it is in the log: its leaf bytes and an RFC 9162 inclusion
/// proof against a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EntryProof {
    /// The entry.
    pub entry: AuditEntry,
    /// The leaf: the encoded `coffer.audit.v1.AuditEntry` whose hash is the Merkle leaf; hex in
    /// JSON.
    #[serde(serialize_with = "hex_bytes")]
    pub leaf: Vec<u8>,
    /// The proof of leaf index `seq - 1` in the tree of `checkpoint.size` leaves.
    pub inclusion_proof: Vec<Hash>,
    /// The checkpoint it proves inclusion in.
    pub checkpoint: Checkpoint,
}

/// An RFC 9162 consistency proof: the log at `from_size` is a prefix of the log at `to_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsistencyProof {
    /// The older size.
    pub from_size: u64,
    /// The newer size.
    pub to_size: u64,
    /// The root at `from_size`, as the server computed it.
    pub from_root: Hash,
    /// The root at `to_size`, as the server computed it.
    pub to_root: Hash,
    /// The proof's hashes.
    pub proof: Vec<Hash>,
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass it to the next request for the following page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Which audit entries [`crate::Audit::query`] returns: every filter is optional, entries come
/// oldest first, a page at a time.
///
/// ```
/// use coffer_sdk::{ActorKind, AuditQuery};
/// let query = AuditQuery::new()
///     .action("CredentialsReleased")
///     .actor_kind(ActorKind::Agent)
///     .from(chrono::Utc::now() - chrono::Duration::days(7))
///     .page_size(500);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    actor_kind: Option<ActorKind>,
    actor_id: Option<String>,
    action: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<AggregateId>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

impl AuditQuery {
    /// Every entry, first page, the server's default page size (100).
    pub fn new() -> Self {
        Self::default()
    }

    /// Events that occurred at or after `at`.
    pub fn from(mut self, at: DateTime<Utc>) -> Self {
        self.from = Some(at);
        self
    }

    /// Events that occurred before `at`.
    pub fn to(mut self, at: DateTime<Utc>) -> Self {
        self.to = Some(at);
        self
    }

    /// Events caused by this kind of principal.
    pub fn actor_kind(mut self, kind: ActorKind) -> Self {
        self.actor_kind = Some(kind);
        self
    }

    /// Events caused by the principal with this id (needs [`AuditQuery::actor_kind`]).
    pub fn actor_id(mut self, id: impl Into<String>) -> Self {
        self.actor_id = Some(id.into());
        self
    }

    /// Events caused by `actor`.
    pub fn actor(self, actor: &Actor) -> Self {
        self.actor_kind(actor.kind).actor_id(actor.id.clone())
    }

    /// Events of this type, e.g. `CredentialCreated`.
    pub fn action(mut self, event_type: impl Into<String>) -> Self {
        self.action = Some(event_type.into());
        self
    }

    /// Events of aggregates of this type, e.g. `Credential`.
    pub fn aggregate_type(mut self, aggregate_type: impl Into<String>) -> Self {
        self.aggregate_type = Some(aggregate_type.into());
        self
    }

    /// Events of this aggregate.
    pub fn aggregate_id(mut self, id: AggregateId) -> Self {
        self.aggregate_id = Some(id);
        self
    }

    /// At most `size` entries per page (1 to 1000).
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// The page that `token` (a [`Page::next_page_token`]) starts.
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.page_token = Some(token.into());
        self
    }

    pub(crate) fn to_request(&self, org: OrgId) -> audit_pb::QueryEntriesRequest {
        audit_pb::QueryEntriesRequest {
            org_id: org.to_string(),
            from: self.from.map(to_timestamp),
            to: self.to.map(to_timestamp),
            actor_kind: self
                .actor_kind
                .map(|k| k.as_str().to_owned())
                .unwrap_or_default(),
            actor_id: self.actor_id.clone().unwrap_or_default(),
            action: self.action.clone().unwrap_or_default(),
            aggregate_type: self.aggregate_type.clone().unwrap_or_default(),
            aggregate_id: self
                .aggregate_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            page: page_request(self.page_size, self.page_token.as_deref()),
        }
    }
}

pub(crate) fn page_request(
    size: Option<u32>,
    token: Option<&str>,
) -> Option<common_pb::PageRequest> {
    Some(common_pb::PageRequest {
        page_size: size.unwrap_or(0),
        page_token: token.unwrap_or_default().to_owned(),
    })
}

/// What [`crate::Audit::export`] puts in the bundle. By default: the whole log, up to the latest
/// checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    pub(crate) from_seq: u64,
    pub(crate) tree_size: u64,
    pub(crate) consistency_from: u64,
}

impl ExportOptions {
    /// The whole log up to the latest checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Start at entry `seq` (the earlier ones are summarised by their Merkle subtrees and the
    /// chain hash before `seq`).
    pub fn from_seq(mut self, seq: u64) -> Self {
        self.from_seq = seq;
        self
    }

    /// End at the checkpoint of this size instead of the latest.
    pub fn tree_size(mut self, size: u64) -> Self {
        self.tree_size = size;
        self
    }

    /// Also carry a consistency proof from this older size, for a witness that holds a
    /// checkpoint older than [`ExportOptions::from_seq`].
    pub fn consistency_from(mut self, size: u64) -> Self {
        self.consistency_from = size;
        self
    }
}

/// What [`crate::BundleStream::write_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ExportedBundle {
    /// The first entry in the bundle.
    pub from_seq: u64,
    /// How many entries it holds.
    pub entries: u64,
    /// The size of the checkpoint it ends at: `from_seq - 1 + entries`.
    pub size: u64,
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

fn hashes(list: Vec<Vec<u8>>, field: &str) -> Result<Vec<Hash>, Error> {
    list.iter().map(|h| Hash::from_wire(h, field)).collect()
}

impl TryFrom<events_pb::EventEnvelope> for Event {
    type Error = Error;
    fn try_from(e: events_pb::EventEnvelope) -> Result<Self, Error> {
        let actor = required(e.actor, "EventEnvelope.actor")?;
        Ok(Self {
            event_id: id(&e.event_id, "EventEnvelope.event_id")?,
            org_id: id(&e.org_id, "EventEnvelope.org_id")?,
            service: e.service,
            aggregate_type: e.aggregate_type,
            aggregate_id: id(&e.aggregate_id, "EventEnvelope.aggregate_id")?,
            version: e.version,
            event_type: e.event_type,
            schema_version: e.schema_version,
            occurred_at: time(e.occurred_at, "EventEnvelope.occurred_at")?,
            actor: Actor {
                kind: actor
                    .kind
                    .parse()
                    .map_err(|_| Error::protocol("EventEnvelope.actor.kind is not a known kind"))?,
                id: actor.id,
            },
            payload: e.payload,
        })
    }
}

impl TryFrom<audit_pb::Entry> for AuditEntry {
    type Error = Error;
    fn try_from(e: audit_pb::Entry) -> Result<Self, Error> {
        Ok(Self {
            seq: e.seq,
            event: required(e.event, "Entry.event")?.try_into()?,
            leaf_hash: Hash::from_wire(&e.leaf_hash, "Entry.leaf_hash")?,
            chain_hash: Hash::from_wire(&e.chain_hash, "Entry.chain_hash")?,
            appended_at: time(e.appended_at, "Entry.appended_at")?,
        })
    }
}

impl TryFrom<audit_pb::Checkpoint> for Checkpoint {
    type Error = Error;
    fn try_from(c: audit_pb::Checkpoint) -> Result<Self, Error> {
        if c.signed_note.is_empty() || c.verifier_key.is_empty() {
            return Err(Error::protocol(
                "Checkpoint.signed_note and Checkpoint.verifier_key are both required",
            ));
        }
        Ok(Self {
            org_id: id(&c.org_id, "Checkpoint.org_id")?,
            size: c.size,
            root_hash: Hash::from_wire(&c.root_hash, "Checkpoint.root_hash")?,
            signed_note: c.signed_note,
            issued_at: time(c.issued_at, "Checkpoint.issued_at")?,
            verifier_key: c.verifier_key,
        })
    }
}

impl TryFrom<audit_pb::GetEntryResponse> for EntryProof {
    type Error = Error;
    fn try_from(r: audit_pb::GetEntryResponse) -> Result<Self, Error> {
        if r.leaf.is_empty() {
            return Err(Error::protocol("GetEntryResponse.leaf is missing"));
        }
        Ok(Self {
            entry: required(r.entry, "GetEntryResponse.entry")?.try_into()?,
            leaf: r.leaf,
            inclusion_proof: hashes(r.inclusion_proof, "GetEntryResponse.inclusion_proof")?,
            checkpoint: required(r.checkpoint, "GetEntryResponse.checkpoint")?.try_into()?,
        })
    }
}

impl TryFrom<audit_pb::ConsistencyProof> for ConsistencyProof {
    type Error = Error;
    fn try_from(p: audit_pb::ConsistencyProof) -> Result<Self, Error> {
        Ok(Self {
            from_size: p.from_size,
            to_size: p.to_size,
            from_root: Hash::from_wire(&p.from_root, "ConsistencyProof.from_root")?,
            to_root: Hash::from_wire(&p.to_root, "ConsistencyProof.to_root")?,
            proof: hashes(p.proof, "ConsistencyProof.proof")?,
        })
    }
}

/// The next page token of a list answer: `None` when empty (the last page).
pub(crate) fn next_page(page: Option<common_pb::PageResponse>) -> Option<String> {
    page.map(|p| p.next_page_token).filter(|t| !t.is_empty())
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
    fn audit_answers_are_validated_and_hashes_show_as_hex() {
        let event = || events_pb::EventEnvelope {
            event_id: EventId::new().to_string(),
            org_id: OrgId::new().to_string(),
            service: "credentials".into(),
            aggregate_type: "Credential".into(),
            aggregate_id: AggregateId::new().to_string(),
            version: 1,
            event_type: "CredentialCreated".into(),
            schema_version: 1,
            occurred_at: Some(to_timestamp(Utc::now())),
            actor: Some(coffer_proto::common::v1::Actor {
                kind: "api_key".into(),
                id: ApiKeyId::new().to_string(),
            }),
            trace_context: Default::default(),
            payload: vec![1, 2],
        };
        let entry = audit_pb::Entry {
            seq: 7,
            event: Some(event()),
            leaf_hash: vec![0xab; 32],
            chain_hash: vec![0x01; 32],
            appended_at: Some(to_timestamp(Utc::now())),
        };
        let converted = AuditEntry::try_from(entry.clone()).unwrap();
        assert_eq!(converted.event.actor.kind, ActorKind::ApiKey);
        assert_eq!(converted.leaf_hash.to_string(), "ab".repeat(32));
        let json = serde_json::to_value(&converted).unwrap();
        assert_eq!(json["chain_hash"], "01".repeat(32));
        assert_eq!(json["event"]["payload"], "0102");

        for (bad, message) in [
            (
                audit_pb::Entry {
                    leaf_hash: vec![0; 31],
                    ..entry.clone()
                },
                "Entry.leaf_hash is not 32 bytes",
            ),
            (
                audit_pb::Entry {
                    event: None,
                    ..entry.clone()
                },
                "Entry.event is missing",
            ),
            (
                audit_pb::Entry {
                    event: Some(events_pb::EventEnvelope {
                        actor: Some(coffer_proto::common::v1::Actor {
                            kind: "robot".into(),
                            id: "r2".into(),
                        }),
                        ..event()
                    }),
                    ..entry.clone()
                },
                "EventEnvelope.actor.kind is not a known kind",
            ),
        ] {
            assert_eq!(
                AuditEntry::try_from(bad).unwrap_err(),
                Error::Protocol {
                    message: message.into()
                }
            );
        }
        assert_eq!(
            ConsistencyProof::try_from(audit_pb::ConsistencyProof {
                from_size: 1,
                to_size: 2,
                from_root: vec![0; 32],
                to_root: vec![0; 32],
                proof: vec![vec![0; 32], vec![0; 3]],
            })
            .unwrap_err(),
            Error::Protocol {
                message: "ConsistencyProof.proof is not 32 bytes".into()
            }
        );
        assert_eq!(
            next_page(Some(common_pb::PageResponse {
                next_page_token: String::new()
            })),
            None
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
