//! A tiny aggregate, projection and consumer handler used by the event store tests.

use std::sync::Arc;

use coffer_db::{Database, Schema, ServiceName, TenantTx};
use coffer_eventstore::{
    Aggregate, DecodeError, Delivery, DomainEvent, EventStore, Handler, HandlerError, Projection,
    ProjectionError, RecordedEvent,
};
use coffer_testkit::TestDb;
use sqlx::PgConnection;

pub const SERVICE: ServiceName = ServiceName("estest");

static TEST_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/it/migrations");

pub const SCHEMAS: &[Schema] = &[Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &TEST_MIGRATOR],
}];

/// A counter that refuses to go negative.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counter {
    pub total: i64,
}

#[derive(Debug, Clone)]
pub enum CounterCommand {
    Add(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum CounterEvent {
    Added(i64),
}

#[derive(Debug, thiserror::Error)]
#[error("counter would go negative")]
pub struct WouldGoNegative;

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = WouldGoNegative;

    fn decide(&self, command: CounterCommand) -> Result<Vec<CounterEvent>, WouldGoNegative> {
        match command {
            CounterCommand::Add(n) if self.total + n < 0 => Err(WouldGoNegative),
            CounterCommand::Add(n) => Ok(vec![CounterEvent::Added(n)]),
        }
    }

    fn evolve(self, event: &CounterEvent) -> Self {
        match event {
            CounterEvent::Added(n) => Counter {
                total: self.total + n,
            },
        }
    }
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        "CounterAdded"
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            CounterEvent::Added(n) => n.to_be_bytes().to_vec(),
        }
    }

    fn decode(event_type: &str, _schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match event_type {
            "CounterAdded" => {
                let bytes: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| DecodeError::malformed(event_type, "expected 8 bytes"))?;
                Ok(CounterEvent::Added(i64::from_be_bytes(bytes)))
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// `counters`: one row per counter with its total.
pub struct CountersProjection;

#[async_trait::async_trait]
impl Projection for CountersProjection {
    fn name(&self) -> &'static str {
        "counters"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["counters"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let CounterEvent::Added(n) = event.decode::<CounterEvent>()?;
        sqlx::query(
            "INSERT INTO counters (org_id, counter_id, total, updates, last_at) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (counter_id) DO UPDATE
               SET total = counters.total + EXCLUDED.total, updates = counters.updates + 1, last_at = EXCLUDED.last_at",
        )
        .bind(event.org_id.as_uuid())
        .bind(event.aggregate_id.as_uuid())
        .bind(n)
        .bind(event.occurred_at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

pub async fn setup() -> (TestDb, Database, EventStore) {
    coffer_testkit::telemetry();
    let test_db = TestDb::migrated(SCHEMAS).await;
    let db = test_db.service(SERVICE).await;
    let store = EventStore::new(db.clone(), vec![Arc::new(CountersProjection)]);
    (test_db, db, store)
}

/// Records every event it sees in `seen`; can be told to fail.
pub struct SeenHandler {
    pub fail: Option<fn(&Delivery) -> Option<HandlerError>>,
}

#[async_trait::async_trait]
impl Handler for SeenHandler {
    async fn handle(&self, tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError> {
        if let Some(fail) = self.fail
            && let Some(e) = fail(delivery)
        {
            return Err(e);
        }
        let event = &delivery.event;
        let traceparent = coffer_telemetry::current_context_headers().remove("traceparent");
        sqlx::query("INSERT INTO seen (org_id, event_id, aggregate_id, version, stream_seq, trace) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(event.org_id.as_uuid())
            .bind(event.event_id.as_uuid())
            .bind(event.aggregate_id.as_uuid())
            .bind(event.version as i64)
            .bind(delivery.stream_sequence as i64)
            .bind(traceparent)
            .execute(tx.conn())
            .await
            .map_err(|e| HandlerError::Transient(Box::new(e)))?;
        Ok(())
    }
}

/// Trace id (second field) of a W3C traceparent.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}
