//! The event store every Coffer service is built on (DESIGN §3).
//!
//! - [`Aggregate`]: pure `decide`/`evolve`, no I/O.
//! - [`EventStore`]: append with optimistic concurrency (`UNIQUE(aggregate_id, version)`,
//!   a violation is [`Error::Conflict`]), load, projections updated in the append transaction,
//!   and [`rebuild`] that replays the stream into them.
//! - [`Relay`]: the transactional outbox's publisher — one active per service (Postgres
//!   advisory lock), `FOR UPDATE SKIP LOCKED`, publishes to JetStream with
//!   `Nats-Msg-Id = event_id`, deletes on ack.
//! - [`Consumer`]: durable pull consumer with explicit ack, bounded redelivery, a dead-letter
//!   subject, and idempotent effects (`processed_events` commits with the effect).

mod aggregate;
mod bus;
mod consumer;
mod event;
mod relay;
mod store;

pub use aggregate::{Aggregate, DecodeError, DomainEvent, replay};
pub use bus::{BusConfig, DeadLetter, headers as bus_headers};
pub use consumer::{Consumer, ConsumerConfig, Delivery, Handler, HandlerError, LaneKey};
pub use event::{EnvelopeError, RecordedEvent};
pub use relay::{Relay, RelayConfig};
pub use store::{
    Committed, EventStore, ExecuteError, NewEvent, Projection, ProjectionError, decode_recorded,
    rebuild,
};

use coffer_types::{AggregateId, EventId};

/// Event store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer appended to the stream first. Retry from a fresh load, or surface as
    /// gRPC ABORTED.
    #[error("aggregate {aggregate_id} changed concurrently (expected version {expected_version})")]
    Conflict {
        /// The contended aggregate.
        aggregate_id: AggregateId,
        /// The version the writer expected.
        expected_version: u64,
    },
    /// A stream holds events of another aggregate type than the one loaded.
    #[error("aggregate {aggregate_id} is a {found}, not a {expected}")]
    WrongAggregateType {
        /// The aggregate.
        aggregate_id: AggregateId,
        /// The type the caller asked for.
        expected: &'static str,
        /// The type on record.
        found: String,
    },
    /// A stored event does not decode.
    #[error("stored event {event_id} does not decode: {cause}")]
    Decode {
        /// The event.
        event_id: EventId,
        /// Why.
        cause: DecodeError,
    },
    /// A projection failed; the append was not committed.
    #[error("projection {projection} failed on event {event_id}: {cause}")]
    Projection {
        /// The projection's name.
        projection: &'static str,
        /// The event it failed on.
        event_id: EventId,
        /// Its error.
        cause: ProjectionError,
    },
    /// A rebuild was attempted under a role that row-level security confines to one tenant.
    #[error(
        "rebuilding projections needs the owner role (BYPASSRLS); a service role would replay nothing"
    )]
    RebuildNeedsOwner,
    /// Database failure.
    #[error(transparent)]
    Db(#[from] coffer_db::Error),
    /// NATS / JetStream failure.
    #[error("jetstream: {0}")]
    Nats(String),
}

impl Error {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Error::Nats(e.to_string())
    }
}

/// The event store's tables (events, outbox, processed_events), applied into every service's
/// schema alongside the service's own migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/eventstore");
