//! `schedules`: the org's live schedules, with the due time each waits for.

use chrono::{DateTime, Utc};
use coffer_eventstore::{Aggregate, Projection, ProjectionError, RecordedEvent};
use coffer_types::OrgId;
use sqlx::{PgConnection, Row};

use super::decode_err;
use crate::domain::job::{Job, JobEvent};
use crate::domain::retention::Retention;
use crate::domain::schedule::{Schedule, ScheduleEvent, ScheduleFields, ScheduleSpec};

/// The projection.
pub(crate) struct Schedules;

/// Writes a spec's columns and the due and fire times.
async fn write_spec(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    spec: &ScheduleSpec,
    next_due_at: Option<DateTime<Utc>>,
    version: u32,
) -> Result<(), sqlx::Error> {
    let id = *event.aggregate_id.as_uuid();
    let fire_at = next_due_at.map(|due| spec.timing.fire_at(id, due));
    let r = spec.retention;
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    sqlx::query(
        "INSERT INTO schedules \
         (org_id, schedule_id, name, database_id, destination_id, cron, timezone, jitter_seconds, \
          missed_runs, keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly, \
          max_attempts, paused, next_due_at, next_fire_at, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, false, $16, \
                 $17, $18, $19, $19) \
         ON CONFLICT (schedule_id) DO UPDATE SET name = $3, database_id = $4, \
           destination_id = $5, cron = $6, timezone = $7, jitter_seconds = $8, missed_runs = $9, \
           keep_last = $10, keep_daily = $11, keep_weekly = $12, keep_monthly = $13, \
           keep_yearly = $14, max_attempts = $15, next_due_at = $16, next_fire_at = $17, \
           version = $18, updated_at = $19",
    )
    .bind(event.org_id.as_uuid())
    .bind(id)
    .bind(&spec.name)
    .bind(spec.database_id)
    .bind(spec.destination_id)
    .bind(spec.timing.cron())
    .bind(spec.timing.zone().name())
    .bind(count(spec.timing.jitter_secs()))
    .bind(spec.timing.missed_runs().as_str())
    .bind(count(r.keep_last))
    .bind(count(r.daily))
    .bind(count(r.weekly))
    .bind(count(r.monthly))
    .bind(count(r.yearly))
    .bind(count(spec.max_attempts))
    .bind(next_due_at)
    .bind(fire_at)
    .bind(count(version))
    .bind(event.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves schedule `id` to wait for `next_due_at` (its fire time from its stored timing).
async fn set_next(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    id: uuid::Uuid,
    next_due_at: Option<DateTime<Utc>>,
    paused: Option<bool>,
    last_due_at: Option<DateTime<Utc>>,
) -> Result<(), ProjectionError> {
    // A schedule deleted since (in a replay) has no row to move on.
    let Some(view) = schedule(&mut *conn, id).await? else {
        return Ok(());
    };
    let fire_at = next_due_at.map(|due| view.spec.timing.fire_at(id, due));
    sqlx::query(
        "UPDATE schedules SET next_due_at = $2, next_fire_at = $3, \
         paused = COALESCE($4, paused), last_due_at = COALESCE($5, last_due_at), \
         updated_at = $6 WHERE schedule_id = $1",
    )
    .bind(id)
    .bind(next_due_at)
    .bind(fire_at)
    .bind(paused)
    .bind(last_due_at)
    .bind(event.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Projection for Schedules {
    fn name(&self) -> &'static str {
        "schedules"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["schedules"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let id = *event.aggregate_id.as_uuid();
        if event.aggregate_type == Job::TYPE {
            // A run its schedule fired moves the schedule on to its next due time.
            if let JobEvent::JobCreated {
                spec,
                fired: Some(fired),
                ..
            } = event.decode::<JobEvent>()?
                && let Some(schedule) = spec.schedule_id
            {
                set_next(
                    conn,
                    event,
                    schedule,
                    fired.next_due_at,
                    None,
                    Some(spec.due_at),
                )
                .await?;
            }
            return Ok(());
        }
        if event.aggregate_type != Schedule::TYPE {
            return Ok(());
        }
        match event.decode::<ScheduleEvent>()? {
            ScheduleEvent::ScheduleCreated { spec, next_due_at } => {
                write_spec(conn, event, &spec, next_due_at, 1).await?;
            }
            ScheduleEvent::ScheduleChanged {
                version,
                spec,
                next_due_at,
            } => write_spec(conn, event, &spec, next_due_at, version).await?,
            ScheduleEvent::SchedulePaused => {
                set_next(conn, event, id, None, Some(true), None).await?;
            }
            ScheduleEvent::ScheduleResumed { next_due_at } => {
                set_next(conn, event, id, next_due_at, Some(false), None).await?;
            }
            ScheduleEvent::ScheduleRunsSkipped {
                last_due_at,
                next_due_at,
                ..
            } => set_next(conn, event, id, next_due_at, None, Some(last_due_at)).await?,
            ScheduleEvent::ScheduleDeleted { .. } => {
                sqlx::query("DELETE FROM schedules WHERE schedule_id = $1")
                    .bind(id)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// A live schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleView {
    /// The org.
    pub org_id: OrgId,
    /// The schedule.
    pub schedule_id: uuid::Uuid,
    /// Its fields.
    pub spec: ScheduleSpec,
    /// Paused.
    pub paused: bool,
    /// The due time it waits for.
    pub next_due_at: Option<DateTime<Utc>>,
    /// When that run fires (with jitter).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last due time fired or skipped.
    pub last_due_at: Option<DateTime<Utc>>,
    /// Its version.
    pub version: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "org_id, schedule_id, name, database_id, destination_id, cron, timezone, \
     jitter_seconds, missed_runs, keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly, \
     max_attempts, paused, next_due_at, next_fire_at, last_due_at, version, created_at, updated_at";

fn count(row: &sqlx::postgres::PgRow, column: &str) -> Result<u32, sqlx::Error> {
    u32::try_from(row.try_get::<i32, _>(column)?).map_err(decode_err)
}

fn schedule_view(row: &sqlx::postgres::PgRow) -> Result<ScheduleView, sqlx::Error> {
    let fields = ScheduleFields {
        name: row.try_get("name")?,
        database_id: row.try_get::<uuid::Uuid, _>("database_id")?.to_string(),
        destination_id: row.try_get::<uuid::Uuid, _>("destination_id")?.to_string(),
        cron: row.try_get("cron")?,
        timezone: row.try_get("timezone")?,
        jitter_seconds: count(row, "jitter_seconds")?,
        missed_runs: row.try_get("missed_runs")?,
        retention: Retention {
            keep_last: count(row, "keep_last")?,
            daily: count(row, "keep_daily")?,
            weekly: count(row, "keep_weekly")?,
            monthly: count(row, "keep_monthly")?,
            yearly: count(row, "keep_yearly")?,
        },
        max_attempts: count(row, "max_attempts")?,
    };
    Ok(ScheduleView {
        org_id: OrgId::from(row.try_get::<uuid::Uuid, _>("org_id")?),
        schedule_id: row.try_get("schedule_id")?,
        spec: ScheduleSpec::check(&fields).map_err(decode_err)?,
        paused: row.try_get("paused")?,
        next_due_at: row.try_get("next_due_at")?,
        next_fire_at: row.try_get("next_fire_at")?,
        last_due_at: row.try_get("last_due_at")?,
        version: count(row, "version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One live schedule of the transaction's org.
pub(crate) async fn schedule(
    conn: &mut PgConnection,
    id: uuid::Uuid,
) -> Result<Option<ScheduleView>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE schedule_id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(schedule_view)
    .transpose()
}

/// Locks a schedule that is due to fire at `now`, unless another scheduler holds it.
pub(crate) async fn lock_due(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, i32>(
        "SELECT 1 FROM schedules WHERE schedule_id = $1 AND next_fire_at <= $2 \
         FOR UPDATE SKIP LOCKED",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// Every live schedule of the transaction's org, by name.
pub(crate) async fn schedules(conn: &mut PgConnection) -> Result<Vec<ScheduleView>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))
        .fetch_all(conn)
        .await?
        .iter()
        .map(schedule_view)
        .collect()
}

/// Whether a live schedule other than `except` is called `name`
/// (the name stays locked until the transaction ends).
pub(crate) async fn name_taken(
    conn: &mut PgConnection,
    name: &str,
    except: uuid::Uuid,
) -> Result<bool, sqlx::Error> {
    super::lock_name(conn, "schedule", name).await?;
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM schedules WHERE name = $1 AND schedule_id <> $2)",
    )
    .bind(name)
    .bind(except)
    .fetch_one(conn)
    .await
}

/// Schedules of every org whose run is due to fire at `now`, soonest first (owner's rights,
/// identifiers only).
pub(crate) async fn due(
    pool: &sqlx::PgPool,
    now: DateTime<Utc>,
    limit: i32,
) -> Result<Vec<(OrgId, uuid::Uuid, DateTime<Utc>)>, sqlx::Error> {
    let rows: Vec<(uuid::Uuid, uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT org_id, schedule_id, next_due_at FROM scheduling_due_schedules($1, $2)",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(org, id, due)| (OrgId::from(org), id, due))
        .collect())
}
