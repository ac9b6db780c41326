//! Diagnostics: proves the event pipeline works end to end on a running deployment.
//!
//! `SendProbe` appends a `ProbeSent` event; the outbox relay publishes it to JetStream; this
//! module's consumer receives it and appends `ProbeObserved` (idempotently, through the
//! consumer runner); the `probes` projection shows each step; `GetProbe` reports it.
//! `coffer diag round-trip` drives the whole thing from the command line.

pub mod domain;
pub mod grpc;
mod projection;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use coffer_db::{Database, Schema, ServiceName, TenantTx};
use coffer_eventstore::{
    BusConfig, ConsumerConfig, Delivery, EventStore, ExecuteError, Handler, HandlerError,
    Projection,
};
use coffer_types::{Actor, AggregateId, EventId, OrgId};
use sqlx::Row;

use self::domain::{PROBE_SENT, Probe, ProbeCommand, ProbeError, ProbeEvent};

/// The service's name: schema `coffer_diag`, role `coffer_diag`.
pub const SERVICE: ServiceName = ServiceName("diag");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/diag");

/// Tables of the diagnostics service.
pub const SCHEMA: Schema = Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &MIGRATOR],
};

/// Durable consumer name.
pub const CONSUMER: &str = "diag-probe-observer";

/// Errors of the diagnostics application.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such probe in this org.
    #[error("probe not found")]
    NotFound,
    /// The command broke a rule.
    #[error(transparent)]
    Rejected(#[from] ProbeError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] coffer_eventstore::Error),
}

impl From<coffer_db::Error> for Error {
    fn from(e: coffer_db::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<ExecuteError<ProbeError>> for Error {
    fn from(e: ExecuteError<ProbeError>) -> Self {
        match e {
            ExecuteError::Rejected(r) => Error::Rejected(r),
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

/// A probe that was appended.
#[derive(Debug, Clone)]
pub struct SentProbe {
    /// The probe aggregate.
    pub probe_id: AggregateId,
    /// The `ProbeSent` event.
    pub event_id: EventId,
    /// Stream version after it.
    pub version: u64,
}

/// How far a probe's latest `ProbeSent` has travelled.
#[derive(Debug, Clone)]
pub struct ProbeView {
    /// The probe.
    pub probe_id: AggregateId,
    /// Latest note.
    pub note: String,
    /// Times sent.
    pub probes_sent: u64,
    /// When the latest was sent.
    pub sent_at: DateTime<Utc>,
    /// Whether the relay has published it (its outbox row is gone).
    pub published: bool,
    /// When the consumer recorded it, once it has.
    pub observed_at: Option<DateTime<Utc>>,
    /// The stream sequence the consumer saw.
    pub stream_sequence: Option<u64>,
    /// The consumer's trace id.
    pub consumer_trace_id: Option<String>,
}

/// The diagnostics application.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    store: EventStore,
}

impl Diagnostics {
    /// The application over the service's database.
    pub fn new(db: Database) -> Self {
        Self {
            store: EventStore::new(db, projections()),
        }
    }

    /// The event store (for tests and admin tools).
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Appends a `ProbeSent` to `probe_id` (a new probe when `None`).
    pub async fn send_probe(
        &self,
        org: OrgId,
        probe_id: Option<AggregateId>,
        note: String,
        actor: &Actor,
    ) -> Result<SentProbe, Error> {
        let probe_id = probe_id.unwrap_or_default();
        let done = self
            .store
            .execute::<Probe>(org, probe_id, actor, ProbeCommand::SendProbe { note })
            .await?;
        let event = done
            .events
            .last()
            .expect("SendProbe always records one event");
        Ok(SentProbe {
            probe_id,
            event_id: event.event_id,
            version: done.version,
        })
    }

    /// Reads a probe of `org`. Another org's probe is [`Error::NotFound`], like a missing one.
    pub async fn get_probe(&self, org: OrgId, probe_id: AggregateId) -> Result<ProbeView, Error> {
        let mut tx = self.store.db().begin_tenant(org).await?;
        let row = sqlx::query(
            "SELECT p.note, p.probes_sent, p.last_sent_at, p.last_observed_event_id = p.last_sent_event_id AS seen,
                    p.last_observed_at, p.last_stream_sequence, p.last_consumer_trace_id,
                    NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = p.last_sent_event_id) AS published
             FROM probes p WHERE p.probe_id = $1",
        )
        .bind(probe_id.as_uuid())
        .fetch_optional(tx.conn())
        .await
        .map_err(coffer_db::Error::from)?
        .ok_or(Error::NotFound)?;
        let get = |r: &sqlx::postgres::PgRow| -> Result<ProbeView, sqlx::Error> {
            let seen: Option<bool> = r.try_get("seen")?;
            let seen = seen.unwrap_or(false);
            Ok(ProbeView {
                probe_id,
                note: r.try_get("note")?,
                probes_sent: r.try_get::<i64, _>("probes_sent")? as u64,
                sent_at: r.try_get("last_sent_at")?,
                published: r.try_get("published")?,
                observed_at: if seen {
                    r.try_get("last_observed_at")?
                } else {
                    None
                },
                stream_sequence: if seen {
                    r.try_get::<Option<i64>, _>("last_stream_sequence")?
                        .map(|s| s as u64)
                } else {
                    None
                },
                consumer_trace_id: if seen {
                    r.try_get("last_consumer_trace_id")?
                } else {
                    None
                },
            })
        };
        get(&row).map_err(|e| Error::from(coffer_db::Error::from(e)))
    }

    /// The consumer that observes probes.
    pub fn consumer_config(bus: &BusConfig) -> ConsumerConfig {
        ConsumerConfig::new(CONSUMER, vec![bus.event_filter(SERVICE.0, PROBE_SENT)])
    }

    /// Its handler.
    pub fn handler(&self) -> Arc<dyn Handler> {
        Arc::new(ObserveProbes {
            store: self.store.clone(),
        })
    }
}

/// The projections this service maintains (also used by `coffer admin rebuild-projections`).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(projection::Probes)]
}

/// Records each received `ProbeSent` as a `ProbeObserved` on the same probe.
struct ObserveProbes {
    store: EventStore,
}

#[async_trait::async_trait]
impl Handler for ObserveProbes {
    async fn handle(&self, tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = &delivery.event;
        match event.decode::<ProbeEvent>() {
            Ok(ProbeEvent::ProbeSent { .. }) => {}
            Ok(other) => {
                return Err(HandlerError::Permanent(format!(
                    "{CONSUMER} does not handle {}",
                    coffer_eventstore::DomainEvent::event_type(&other)
                )));
            }
            Err(e) => return Err(HandlerError::Permanent(e.to_string())),
        }
        let consumer_trace_id = coffer_telemetry::current_context_headers()
            .get("traceparent")
            .and_then(|tp| tp.split('-').nth(1).map(str::to_owned))
            .unwrap_or_default();
        let command = ProbeCommand::ObserveProbe {
            probe_event_id: event.event_id,
            stream_sequence: delivery.stream_sequence,
            consumer_trace_id,
        };
        match self
            .store
            .execute_in::<Probe>(tx, event.aggregate_id, &Actor::service(CONSUMER), command)
            .await
        {
            Ok(_) => Ok(()),
            Err(ExecuteError::Rejected(e)) => Err(HandlerError::Permanent(e.to_string())),
            Err(ExecuteError::Store(e)) => Err(e.into()),
        }
    }
}
