//! The scheduling service. It holds the database registry (the backup targets of an org:
//! engine, where to connect, as whom, the vault reference of the password, and the agent that
//! serves them) and the storage destinations (S3-compatible buckets and local directories,
//! probed before they are saved, reached only through the SSRF guard of `coffer_storage`).
//!
//! - [`domain`]: the pure `Database` and `Destination` aggregates: every rule, no I/O.
//! - [`app`]: commands and queries; [`store`]: the read model; [`grpc`]: the adapter.
//! - [`consumers`]: `scheduling-agents`, scheduling's view of enrollment's agents.
//! - `codec`: protobuf encoding of the domain events (`coffer.events.v1`).

pub mod app;
mod codec;
pub mod consumers;
pub mod domain;
pub mod grpc;
pub mod store;

use coffer_db::{Schema, ServiceName};

pub use app::{Error, Scheduling};

/// The service's name: schema `coffer_scheduling`, role `coffer_scheduling`.
pub const SERVICE: ServiceName = ServiceName("scheduling");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/scheduling");

/// Tables of the scheduling service.
pub const SCHEMA: Schema = Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &MIGRATOR],
};
