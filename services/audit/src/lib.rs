//! The audit service: every org's append-only, tamper-evident log of everything that happened
//! in it, and the proofs that let the org check the log without trusting us.
//!
//! - [`log`]: appending an event (leaf, hash chain, Merkle nodes), one appender per org.
//! - [`checkpoint`]: signed tree heads (C2SP tlog-checkpoint notes) and the org signing keys.
//! - [`app`]: queries, entries with inclusion proofs, consistency proofs, export.
//! - [`bundle`]: the export bundle's file format and its offline verification.
//! - [`grpc`]: the `AuditService` adapter; [`consumers`]: the `audit-log` consumer of every
//!   event on the stream.
//! - `store`: the SQL.

pub mod app;
pub mod bundle;
pub mod checkpoint;
pub mod consumers;
pub mod grpc;
pub mod log;
mod store;

use coffer_db::{Schema, ServiceName};

pub use app::{Audit, Error};
pub use checkpoint::{Checkpointer, Settings};

/// The service's name: schema `coffer_audit`, role `coffer_audit`.
pub const SERVICE: ServiceName = ServiceName("audit");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/audit");

/// Tables of the audit service.
pub const SCHEMA: Schema = Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &MIGRATOR],
};
