//! The credentials service: where secrets live, and the only place they are ever decrypted.
//!
//! - [`domain`]: the pure aggregates (`Credential`, `OrgKey`): every rule, no I/O.
//! - [`envelope`]: XChaCha20-Poly1305 under per-version data keys from KMS.
//! - [`age_key`]: the org's age X25519 key pair, wrapped through KMS.
//! - [`vault_ref`]: `vault:coffer/<org_id>/<credential_id>`, how other services name a
//!   credential.
//! - [`app`]: commands and queries; [`store`]: read models and secret tables; [`grpc`]: the
//!   adapters; [`consumers`]: org keys for new orgs.
//! - `codec`: protobuf encoding of the domain events (`coffer.events.v1`).

pub mod age_key;
pub mod app;
mod codec;
pub mod consumers;
pub mod domain;
pub mod envelope;
pub mod file_key;
pub mod grpc;
pub mod rotation;
pub mod store;
pub mod vault_ref;

use coffer_db::{Schema, ServiceName};

pub use app::{Credentials, Error};

/// The service's name: schema `coffer_credentials`, role `coffer_credentials`.
pub const SERVICE: ServiceName = ServiceName("credentials");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/credentials");

/// Tables of the credentials service.
pub const SCHEMA: Schema = Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &MIGRATOR],
};
