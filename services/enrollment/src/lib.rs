//! The enrollment service: who is who. Organisations and their members, API keys for
//! integrators and the access tokens they are exchanged for, and (as it lands) enrollment
//! tokens and agents with X.509 identities.
//!
//! - [`domain`]: the pure aggregates (`Org`, `ApiKey`, `SigningKey`): every rule, no I/O.
//! - [`secret`]: API key secrets — generated once, shown once, stored only as a hash.
//! - [`app`]: commands and queries; [`store`]: the read models; [`grpc`]: the adapters.
//! - [`tokens`]: access-token signing keys, issuance, and revocation propagation.
//! - `codec`: protobuf encoding of the domain events (`coffer.events.v1`).

pub mod agents;
pub mod app;
mod codec;
pub mod consumers;
pub mod domain;
pub mod grpc;
pub mod pki;
pub mod secret;
pub mod store;
pub mod tokens;

use coffer_db::{Schema, ServiceName};

pub use app::{Enrollment, Error};

/// The service's name: schema `coffer_enrollment`, role `coffer_enrollment`.
pub const SERVICE: ServiceName = ServiceName("enrollment");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/enrollment");

/// Tables of the enrollment service.
pub const SCHEMA: Schema = Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &MIGRATOR],
};
