//! `coffer-sdk`: a typed Rust client for the Coffer API, the one the `coffer` CLI and the
//! dashboard use.
//!
//! This crate owns the client side of Coffer's API contract:
//!
//! - **Authentication.** A [`Client`] is made from an API key (`coffer_…`), which it exchanges
//!   at `TokenService.Exchange` for a short-lived access token. It replaces the token before
//!   it expires (once less than the smaller of 60 s and a fifth of its lifetime is left;
//!   [`ClientOptions::refresh_margin`]), with one exchange however many calls are waiting,
//!   and once more if the server refuses a token anyway. The key and tokens are
//!   [`secrecy::SecretString`]s: they never appear in `Debug` output, logs or [`Error`]s.
//! - **Retries.** Calls failing with `UNAVAILABLE` or a connection error are retried with
//!   exponential backoff and jitter ([`RetryPolicy`]). Reads are retried after any such
//!   failure; writes only when the server certainly applied nothing (it answered
//!   `UNAVAILABLE` itself, or the connection never opened). No other code is retried.
//! - **Types.** One typed client per service ([`Client::orgs`], [`Client::members`],
//!   [`Client::api_keys`], [`Client::tokens`], [`Client::enrollment_tokens`],
//!   [`Client::agents`], [`Client::credentials`], [`Client::org_keys`],
//!   [`Client::master_keys`], [`Client::audit`], [`Client::databases`],
//!   [`Client::destinations`], [`Client::schedules`], [`Client::jobs`], [`Client::diagnostics`])
//!   taking and returning SDK types: ids as the
//!   [`OrgId`]/[`UserId`]/[`ApiKeyId`]/[`AgentId`]/[`EnrollmentTokenId`]/[`CredentialId`]/
//!   [`DatabaseId`]/[`DestinationId`]/[`ScheduleId`]/[`JobId`] newtypes, roles as [`Role`],
//!   closed sets of names as enums ([`Engine`], [`JobState`], [`JobKind`], …), times as
//!   `chrono` UTC, durations as [`std::time::Duration`], audit-log hashes as [`Hash`]. Answers
//!   are validated; a malformed one is [`Error::Protocol`]. The one protobuf type exposed is
//!   [`BundleRecord`], because the audit export bundle file is made of exactly those messages.
//! - **Secrets.** Secrets the server returns (new API keys and enrollment tokens, the
//!   recovery key) are [`SecretString`]s, and credential values are given as [`SecretSlice`]s:
//!   zeroed on drop, `[REDACTED]` in `Debug` (see [`Credentials`] for the copy each request
//!   makes).
//! - **Errors.** [`Error`] keeps the gRPC code (as its variant) and the server's message.
//!
//! # Example
//!
//! ```no_run
//! use coffer_sdk::{Client, NewApiKey, Role};
//!
//! # async fn example() -> Result<(), coffer_sdk::Error> {
//! let api_key = std::env::var("COFFER_API_KEY").unwrap_or_default();
//! let client = Client::connect("http://127.0.0.1:7443", api_key).await?;
//! let org = client.org(); // the key's org
//!
//! let bob = client.members().add(org, "bob@example.com", Role::Operator).await?;
//! client.members().change_role(org, bob.user_id, Role::Admin).await?;
//! for member in client.members().list(org).await? {
//!     println!("{} {}", member.email, member.role);
//! }
//!
//! let ci = client
//!     .api_keys()
//!     .create(org, NewApiKey::new("ci", Role::Operator).scope("job.run"))
//!     .await?;
//! // `ci.secret` is shown by the server only this once: store it now.
//! # let _ = ci;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors and retries in practice
//!
//! ```no_run
//! use coffer_sdk::{Client, Error, Role};
//!
//! # async fn example(client: Client, user: coffer_sdk::UserId) {
//! match client.members().change_role(client.org(), user, Role::Viewer).await {
//!     Ok(member) => println!("{} is now {}", member.email, member.role),
//!     Err(Error::FailedPrecondition { message }) => eprintln!("refused: {message}"),
//!     Err(Error::NotFound { .. }) => eprintln!("no such member"),
//!     Err(e) => eprintln!("{e}"),
//! }
//! # }
//! ```

#![warn(missing_docs)]

mod api;
mod client;
mod error;
mod model;
mod retry;
mod token;

pub use api::{
    Agents, ApiKeys, Audit, BundleStream, Credentials, Databases, Destinations, Diagnostics,
    EnrollmentTokens, Jobs, MasterKeys, Members, OrgKeys, Orgs, Schedules, Tokens,
};
pub use client::{Client, ClientOptions};
pub use coffer_auth::Role;
/// A record of an export bundle, as streamed and as stored in the bundle file (the protobuf
/// message itself: the file format is made of these).
pub use coffer_proto::audit::v1::BundleRecord;
pub use coffer_types::{
    Actor, ActorKind, AgentId, AggregateId, ApiKeyId, CredentialId, DatabaseId, DestinationId,
    EnrollmentTokenId, EventId, JobId, OrgId, ScheduleId, UserId,
};
pub use error::Error;
pub use model::{
    AccessToken, Agent, ApiKey, Artifact, AuditEntry, AuditQuery, Checkpoint, ConsistencyProof,
    CreatedApiKey, CreatedEnrollmentToken, CreatedOrg, Credential, Crl, Database, DatabaseFields,
    Destination, DestinationFields, DestinationKind, Engine, EnrollmentToken, EntryProof, Event,
    ExportOptions, ExportedBundle, Hash, Job, JobKind, JobQuery, JobState, JobTrigger, Jwk, Jwks,
    KeyCoverage, KeyCoverageEntry, MasterKeyRotation, Member, MissedRuns, NewApiKey, Org,
    OrgRecipient, Page, ParseNameError, ParsePurposeError, Probe, Progress, Purpose, RecoveryKey,
    Retention, RotationState, Schedule, ScheduleFields, SentProbe, WrappedKeyPurpose,
};
pub use retry::RetryPolicy;
pub use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
pub use tonic::Code;
