//! Appending and loading streams, projections in the append transaction, and rebuilds.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use coffer_db::{Database, TenantTx};
use coffer_types::{Actor, ActorKind, AggregateId, EventId, OrgId};
use futures::TryStreamExt;
use sqlx::{Connection, PgConnection, Row};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::event::RecordedEvent;
use crate::{DecodeError, Error};

/// How many times [`EventStore::execute`] reloads and retries after a concurrent write.
const CONFLICT_RETRIES: usize = 5;

/// An event about to be appended: its wire name, schema version and encoded payload.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Past-tense name.
    pub event_type: &'static str,
    /// Payload schema version.
    pub schema_version: u32,
    /// Protobuf payload.
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// Encodes a domain event.
    pub fn from_domain<E: DomainEvent>(event: &E) -> Self {
        Self {
            event_type: event.event_type(),
            schema_version: event.schema_version(),
            payload: event.encode(),
        }
    }
}

/// Error a projection reports; it aborts the append that triggered it.
pub type ProjectionError = Box<dyn std::error::Error + Send + Sync>;

/// A read model kept up to date in the append transaction (read-your-writes) and rebuildable
/// by replaying the stream.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name, for errors and logs.
    fn name(&self) -> &'static str;
    /// Tables this projection owns: emptied before a rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event. Must depend only on the event (never on `now()` or other tables
    /// that a rebuild would not recreate) so that a rebuild yields identical rows.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
}

/// The result of a command that was accepted and committed.
#[derive(Debug)]
pub struct Committed<A> {
    /// State after the new events.
    pub state: A,
    /// Stream version after the new events.
    pub version: u64,
    /// The events as recorded.
    pub events: Vec<RecordedEvent>,
}

/// A command failed: either the aggregate refused it or storage failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate's rules refused the command; nothing was written.
    #[error(transparent)]
    Rejected(E),
    /// Storage failed or the aggregate stayed contended after retries.
    #[error(transparent)]
    Store(#[from] Error),
}

/// One service's event store: its `events` and `outbox` tables and the projections fed by
/// them.
#[derive(Clone)]
pub struct EventStore {
    db: Database,
    service: &'static str,
    projections: Arc<[Arc<dyn Projection>]>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("service", &self.service)
            .field(
                "projections",
                &self
                    .projections
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl EventStore {
    /// An event store over `db` whose appends update `projections`.
    pub fn new(db: Database, projections: Vec<Arc<dyn Projection>>) -> Self {
        Self {
            service: db.service().0,
            db,
            projections: projections.into(),
        }
    }

    /// The service's database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The owning service's name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Loads an aggregate's state and version inside `tx`.
    pub async fn load<A: Aggregate>(
        &self,
        tx: &mut TenantTx,
        id: AggregateId,
    ) -> Result<(A, u64), Error> {
        let events = self.read_stream(tx, id).await?;
        let mut state = A::default();
        let mut version = 0;
        for e in &events {
            if e.aggregate_type != A::TYPE {
                return Err(Error::WrongAggregateType {
                    aggregate_id: id,
                    expected: A::TYPE,
                    found: e.aggregate_type.clone(),
                });
            }
            let event: A::Event = e.decode().map_err(|cause| Error::Decode {
                event_id: e.event_id,
                cause,
            })?;
            state = state.evolve(&event);
            version = e.version;
        }
        Ok((state, version))
    }

    /// Every event of one aggregate, in version order.
    pub async fn read_stream(
        &self,
        tx: &mut TenantTx,
        id: AggregateId,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let rows = sqlx::query(&format!(
            "{SELECT_EVENTS} WHERE aggregate_id = $1 ORDER BY version"
        ))
        .bind(id.as_uuid())
        .fetch_all(tx.conn())
        .await
        .map_err(coffer_db::Error::from)?;
        rows.iter().map(|r| row_to_event(self.service, r)).collect()
    }

    /// Appends `events` to an aggregate's stream inside `tx`, expecting the stream to be at
    /// `expected_version`; writes the outbox rows and updates projections in the same
    /// transaction. Another writer having moved the stream on is [`Error::Conflict`] (the
    /// transaction is then aborted: roll it back and retry from a fresh load).
    pub async fn append(
        &self,
        tx: &mut TenantTx,
        aggregate_type: &str,
        aggregate_id: AggregateId,
        expected_version: u64,
        actor: &Actor,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Postgres keeps microseconds; truncating here makes the returned events equal the
        // stored ones, so replays and rebuilds compare exactly.
        let occurred_at = Utc::now().trunc_subsecs(6);
        let trace_context = coffer_telemetry::current_context_headers();
        let recorded: Vec<RecordedEvent> = events
            .iter()
            .zip(expected_version + 1..)
            .map(|(e, version)| RecordedEvent {
                event_id: EventId::new(),
                org_id: tx.org(),
                service: self.service.to_owned(),
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id,
                version,
                event_type: e.event_type.to_owned(),
                schema_version: e.schema_version,
                occurred_at,
                actor: actor.clone(),
                trace_context: trace_context.clone(),
                payload: e.payload.clone(),
            })
            .collect();
        insert_events(tx.conn(), &recorded, expected_version).await?;
        tx.note_outbox_write();
        for event in &recorded {
            apply_projections(&self.projections, tx.conn(), event).await?;
        }
        Ok(recorded)
    }

    /// Loads, decides and appends in `tx`, without retrying: for callers that already hold
    /// a transaction (consumer handlers).
    pub async fn execute_in<A: Aggregate>(
        &self,
        tx: &mut TenantTx,
        id: AggregateId,
        actor: &Actor,
        command: A::Command,
    ) -> Result<Committed<A>, ExecuteError<A::Error>> {
        let (state, version) = self.load::<A>(tx, id).await?;
        let new_events = state.decide(command).map_err(ExecuteError::Rejected)?;
        let encoded: Vec<NewEvent> = new_events.iter().map(NewEvent::from_domain).collect();
        let recorded = self
            .append(tx, A::TYPE, id, version, actor, &encoded)
            .await?;
        let state = new_events.iter().fold(state, A::evolve);
        Ok(Committed {
            state,
            version: version + recorded.len() as u64,
            events: recorded,
        })
    }

    /// Runs a command against an aggregate of `org` in its own transaction: load, decide,
    /// append, commit. A concurrent write is retried from a fresh load a few times before it
    /// surfaces as [`Error::Conflict`].
    pub async fn execute<A: Aggregate>(
        &self,
        org: OrgId,
        id: AggregateId,
        actor: &Actor,
        command: A::Command,
    ) -> Result<Committed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.db.begin_tenant(org).await.map_err(Error::from)?;
            match self
                .execute_in::<A>(&mut tx, id, actor, command.clone())
                .await
            {
                Ok(done) => {
                    tx.commit().await.map_err(Error::from)?;
                    return Ok(done);
                }
                Err(ExecuteError::Store(Error::Conflict { .. })) if attempt < CONFLICT_RETRIES => {
                    tracing::debug!(%id, attempt, "concurrent write; retrying from a fresh load");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

const SELECT_EVENTS: &str = "SELECT position, event_id, org_id, aggregate_type, aggregate_id, version, event_type, \
     schema_version, occurred_at, actor_kind, actor_id, trace_context, payload FROM events";

fn row_to_event(service: &str, row: &sqlx::postgres::PgRow) -> Result<RecordedEvent, Error> {
    let get = || -> Result<RecordedEvent, sqlx::Error> {
        let actor_kind: String = row.try_get("actor_kind")?;
        let trace: sqlx::types::Json<BTreeMap<String, String>> = row.try_get("trace_context")?;
        Ok(RecordedEvent {
            event_id: EventId::from_uuid(row.try_get("event_id")?),
            org_id: OrgId::from_uuid(row.try_get("org_id")?),
            service: service.to_owned(),
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: AggregateId::from_uuid(row.try_get("aggregate_id")?),
            version: row.try_get::<i64, _>("version")? as u64,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get::<i32, _>("schema_version")? as u32,
            occurred_at: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
            actor: Actor {
                kind: actor_kind.parse().unwrap_or(ActorKind::Service),
                id: row.try_get("actor_id")?,
            },
            trace_context: trace.0,
            payload: row.try_get("payload")?,
        })
    };
    get().map_err(|e| Error::Db(e.into()))
}

/// Inserts the events and their outbox rows in one statement (one round trip). The guard
/// makes a stale or skipped-ahead expected version a conflict even when no unique index
/// would catch it (expected ahead of the stream).
async fn insert_events(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
    expected_version: u64,
) -> Result<(), Error> {
    let first = &events[0];
    let versions: Vec<i64> = events.iter().map(|e| e.version as i64).collect();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id.0).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schema_versions: Vec<i32> = events.iter().map(|e| e.schema_version as i32).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let envelopes: Vec<Vec<u8>> = events.iter().map(RecordedEvent::encode_envelope).collect();
    let inserted: i64 = sqlx::query_scalar(
        "WITH guard AS (SELECT coalesce(max(version), 0) AS v FROM events WHERE aggregate_id = $1),
              new AS (
                SELECT t.* FROM guard,
                  unnest($8::bigint[], $9::uuid[], $10::text[], $11::int[], $12::bytea[], $14::bytea[])
                    AS t(version, event_id, event_type, schema_version, payload, envelope)
                WHERE guard.v = $13),
              ins AS (
                INSERT INTO events (org_id, aggregate_type, aggregate_id, version, event_id, event_type,
                                    schema_version, occurred_at, actor_kind, actor_id, trace_context, payload)
                SELECT $2, $3, $1, version, event_id, event_type, schema_version, $4, $5, $6, $7, payload FROM new
                RETURNING 1),
              out AS (
                INSERT INTO outbox (org_id, event_id, aggregate_id, event_type, envelope, trace_context)
                SELECT $2, event_id, $1, event_type, envelope, $7 FROM new ORDER BY version)
         SELECT count(*) FROM ins",
    )
    .bind(first.aggregate_id.as_uuid())
    .bind(first.org_id.as_uuid())
    .bind(&first.aggregate_type)
    .bind(first.occurred_at)
    .bind(first.actor.kind.as_str())
    .bind(&first.actor.id)
    .bind(sqlx::types::Json(&first.trace_context))
    .bind(&versions)
    .bind(&ids)
    .bind(&types)
    .bind(&schema_versions)
    .bind(&payloads)
    .bind(expected_version as i64)
    .bind(&envelopes)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("events_aggregate_version") => Error::Conflict {
            aggregate_id: first.aggregate_id,
            expected_version,
        },
        _ => Error::Db(e.into()),
    })?;
    if inserted as usize != events.len() {
        return Err(Error::Conflict {
            aggregate_id: first.aggregate_id,
            expected_version,
        });
    }
    Ok(())
}

async fn apply_projections(
    projections: &[Arc<dyn Projection>],
    conn: &mut PgConnection,
    event: &RecordedEvent,
) -> Result<(), Error> {
    for p in projections {
        p.apply(conn, event)
            .await
            .map_err(|cause| Error::Projection {
                projection: p.name(),
                event_id: event.event_id,
                cause,
            })?;
    }
    Ok(())
}

/// Empties `projections`' tables and replays the whole `events` table of `service` into them,
/// in one transaction, so readers see either the old or the rebuilt tables.
///
/// Must run as a role that bypasses row-level security (the owner role): under a service
/// role the replay would see no tenant's events and silently produce empty tables, so that
/// is refused. Returns the number of events replayed.
pub async fn rebuild(
    owner: &mut PgConnection,
    service: coffer_db::ServiceName,
    projections: &[Arc<dyn Projection>],
) -> Result<u64, Error> {
    let bypass: bool = sqlx::query_scalar(
        "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *owner)
    .await
    .map_err(coffer_db::Error::from)?;
    if !bypass {
        return Err(Error::RebuildNeedsOwner);
    }
    let schema = service.schema();
    let mut tx = owner.begin().await.map_err(coffer_db::Error::from)?;
    let q = |e: sqlx::Error| Error::Db(e.into());
    sqlx::query(&format!("SET LOCAL search_path = {schema}"))
        .execute(&mut *tx)
        .await
        .map_err(q)?;
    for p in projections {
        for table in p.tables() {
            sqlx::query(&format!("TRUNCATE {table}"))
                .execute(&mut *tx)
                .await
                .map_err(q)?;
        }
    }
    // Replay in pages of 1,000 by position: the transaction's one connection cannot stream a
    // query and run the projections' writes at the same time.
    let mut count = 0u64;
    let mut last_position = 0i64;
    loop {
        let rows = sqlx::query(&format!(
            "{SELECT_EVENTS} WHERE position > $1 ORDER BY position LIMIT 1000"
        ))
        .bind(last_position)
        .fetch(&mut *tx)
        .try_collect::<Vec<_>>()
        .await
        .map_err(q)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            last_position = row.try_get("position").map_err(q)?;
            let event = row_to_event(service.0, row)?;
            sqlx::query("SELECT set_config('coffer.org_id', $1, true)")
                .bind(event.org_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(q)?;
            apply_projections(projections, &mut tx, &event).await?;
            count += 1;
        }
    }
    tx.commit().await.map_err(q)?;
    Ok(count)
}

/// Decodes a stored event for a caller that knows its type.
pub fn decode_recorded<E: DomainEvent>(event: &RecordedEvent) -> Result<E, Error> {
    event.decode().map_err(|cause: DecodeError| Error::Decode {
        event_id: event.event_id,
        cause,
    })
}
