//! The scheduling service: the database registry (backup targets and the agents serving
//! them), storage destinations (S3-compatible buckets and local directories, probed before
//! they are saved, reached only through the SSRF guard of `coffer_storage`), schedules (cron in
//! an IANA zone, jitter, missed-run policy, GFS retention), and jobs (claims with leases and
//! fencing tokens, retries, cancellation, signed job tickets).
//!
//! - [`domain`]: the pure `Database`, `Destination`, `Schedule` and `Job` aggregates: every
//!   rule, no I/O.
//! - [`tickets`]: the job-ticket signing key; [`wakeups`]: how a claimable job reaches a
//!   long-polling agent.
//! - [`app`]: commands and queries; [`store`]: the read model; [`grpc`]: the adapter.
//! - [`consumers`]: `scheduling-agents`, scheduling's view of enrollment's agents.
//! - `codec`: protobuf encoding of the domain events (`coffer.events.v1`).

pub mod app;
mod codec;
pub mod consumers;
pub mod domain;
pub mod grpc;
pub mod store;
pub mod tickets;
pub mod wakeups;

use coffer_db::{Schema, ServiceName};

pub use app::{ClaimedJob, Error, HeartbeatReply, JobRuntime, Scheduling, Settings};

/// The service's name: schema `coffer_scheduling`, role `coffer_scheduling`.
pub const SERVICE: ServiceName = ServiceName("scheduling");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/scheduling");

/// Tables of the scheduling service.
pub const SCHEMA: Schema = Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &MIGRATOR],
};
