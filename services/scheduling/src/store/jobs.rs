//! `jobs`: every job of the org and where it is; `job_leases`: the held jobs' leases and
//! progress, kept fresh by heartbeats outside the event stream.

use chrono::{DateTime, Utc};
use coffer_eventstore::{Aggregate, Projection, ProjectionError, RecordedEvent};
use coffer_types::{AgentId, OrgId};
use sqlx::{PgConnection, Row};

use super::decode_err;
use crate::domain::job::{Artifact, Job, JobEvent, JobKind, JobSpec, JobState, Trigger};

/// The projection.
pub(crate) struct Jobs;

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Sets the state (and what comes with it) of the event's job.
async fn set_state(
    conn: &mut PgConnection,
    event: &RecordedEvent,
    state: JobState,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET state = $2, reason = COALESCE($3, reason), version = $4, \
         updated_at = $5, finished_at = CASE WHEN $6 THEN $5 ELSE finished_at END \
         WHERE job_id = $1",
    )
    .bind(event.aggregate_id.as_uuid())
    .bind(state.as_str())
    .bind(reason)
    .bind(i32::try_from(event.version).unwrap_or(i32::MAX))
    .bind(event.occurred_at)
    .bind(state.is_terminal())
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Projection for Jobs {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["jobs"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Job::TYPE {
            return Ok(());
        }
        let id = *event.aggregate_id.as_uuid();
        match event.decode::<JobEvent>()? {
            JobEvent::JobCreated {
                spec, not_before, ..
            } => {
                sqlx::query(
                    "INSERT INTO jobs (org_id, job_id, kind, trigger, schedule_id, database_id, \
                     destination_id, agent_id, restore_of, due_at, state, attempt, max_attempts, \
                     fencing_token, not_before, cancel_requested, reason, version, created_at, \
                     updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 1, $11, 0, $12, \
                             false, '', $13, $14, $14)",
                )
                .bind(event.org_id.as_uuid())
                .bind(id)
                .bind(spec.kind.as_str())
                .bind(spec.trigger.as_str())
                .bind(spec.schedule_id)
                .bind(spec.database_id)
                .bind(spec.destination_id)
                .bind(spec.agent_id.as_uuid())
                .bind(spec.restore_of)
                .bind(spec.due_at)
                .bind(int(spec.max_attempts))
                .bind(not_before)
                .bind(i32::try_from(event.version).unwrap_or(i32::MAX))
                .bind(event.occurred_at)
                .execute(&mut *conn)
                .await?;
            }
            JobEvent::JobClaimed {
                attempt,
                fencing_token,
                ..
            } => {
                sqlx::query("UPDATE jobs SET attempt = $2, fencing_token = $3 WHERE job_id = $1")
                    .bind(id)
                    .bind(int(attempt))
                    .bind(i64::try_from(fencing_token).unwrap_or(i64::MAX))
                    .execute(&mut *conn)
                    .await?;
                set_state(conn, event, JobState::Claimed, None).await?;
            }
            JobEvent::JobStarted { .. } => set_state(conn, event, JobState::Running, None).await?,
            JobEvent::JobSucceeded { artifact, .. } => {
                if let Some(a) = artifact {
                    sqlx::query(
                        "UPDATE jobs SET artifact_object_key = $2, artifact_size_bytes = $3, \
                         artifact_sha256 = $4, artifact_recipient = $5, \
                         artifact_age_header_sha256 = $6, artifact_dump_bytes = $7 \
                         WHERE job_id = $1",
                    )
                    .bind(id)
                    .bind(&a.object_key)
                    .bind(i64::try_from(a.size_bytes).unwrap_or(i64::MAX))
                    .bind(&a.sha256)
                    .bind(&a.recipient)
                    .bind(&a.age_header_sha256)
                    .bind(i64::try_from(a.dump_bytes).unwrap_or(i64::MAX))
                    .execute(&mut *conn)
                    .await?;
                }
                set_state(conn, event, JobState::Succeeded, None).await?;
            }
            JobEvent::JobAttemptFailed {
                attempt,
                reason,
                retry_at,
            } => match retry_at {
                Some(at) => {
                    sqlx::query(
                        "UPDATE jobs SET attempt = $2, not_before = $3, cancel_requested = false \
                         WHERE job_id = $1",
                    )
                    .bind(id)
                    .bind(int(attempt + 1))
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                    set_state(conn, event, JobState::Pending, Some(&reason)).await?;
                }
                None => set_state(conn, event, JobState::Failed, Some(&reason)).await?,
            },
            JobEvent::JobLeaseExpired { attempt, requeued } => {
                if requeued {
                    sqlx::query("UPDATE jobs SET attempt = $2 WHERE job_id = $1")
                        .bind(id)
                        .bind(int(attempt + 1))
                        .execute(&mut *conn)
                        .await?;
                    set_state(conn, event, JobState::Pending, None).await?;
                } else {
                    set_state(
                        conn,
                        event,
                        JobState::TimedOut,
                        Some("the lease expired on the last attempt"),
                    )
                    .await?;
                }
            }
            JobEvent::JobCancelRequested { reason } => {
                sqlx::query(
                    "UPDATE jobs SET cancel_requested = true, reason = $2, version = $3, \
                     updated_at = $4 WHERE job_id = $1",
                )
                .bind(id)
                .bind(&reason)
                .bind(i32::try_from(event.version).unwrap_or(i32::MAX))
                .bind(event.occurred_at)
                .execute(&mut *conn)
                .await?;
            }
            JobEvent::JobCancelled { reason } => {
                set_state(conn, event, JobState::Cancelled, Some(&reason)).await?;
            }
            JobEvent::BackupExpired { .. } => {
                sqlx::query(
                    "UPDATE jobs SET expired_at = $2, version = $3, updated_at = $2 \
                     WHERE job_id = $1",
                )
                .bind(id)
                .bind(event.occurred_at)
                .bind(i32::try_from(event.version).unwrap_or(i32::MAX))
                .execute(&mut *conn)
                .await?;
            }
            JobEvent::BackupDeleted { error, .. } => {
                sqlx::query(
                    "UPDATE jobs SET deleted_at = CASE WHEN $2::text IS NULL THEN $3 END, \
                     deletion_error = $2, version = $4, updated_at = $3 WHERE job_id = $1",
                )
                .bind(id)
                .bind(error)
                .bind(event.occurred_at)
                .bind(i32::try_from(event.version).unwrap_or(i32::MAX))
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// The org.
    pub org_id: OrgId,
    /// The job.
    pub job_id: uuid::Uuid,
    /// What it is for.
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    /// The current attempt.
    pub attempt: u32,
    /// The current claim's token (0 before the first).
    pub fencing_token: u64,
    /// Claimable from.
    pub not_before: DateTime<Utc>,
    /// Cancellation asked for while held.
    pub cancel_requested: bool,
    /// Why it failed, timed out or was cancelled (or the last attempt's failure).
    pub reason: String,
    /// The backup's artifact.
    pub artifact: Option<Artifact>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Retention deleted its backup object.
    pub backup_deleted: bool,
}

const COLUMNS: &str = "org_id, job_id, kind, trigger, schedule_id, database_id, destination_id, \
     agent_id, restore_of, due_at, state, attempt, max_attempts, fencing_token, not_before, \
     cancel_requested, reason, artifact_object_key, artifact_size_bytes, artifact_sha256, \
     artifact_recipient, artifact_age_header_sha256, artifact_dump_bytes, created_at, updated_at, finished_at, \
     deleted_at";

fn job_view(row: &sqlx::postgres::PgRow) -> Result<JobView, sqlx::Error> {
    let count = |c: &str| -> Result<u32, sqlx::Error> {
        u32::try_from(row.try_get::<i32, _>(c)?).map_err(decode_err)
    };
    let kind: String = row.try_get("kind")?;
    let trigger: String = row.try_get("trigger")?;
    let state: String = row.try_get("state")?;
    let artifact = match row.try_get::<Option<String>, _>("artifact_object_key")? {
        None => None,
        Some(object_key) => Some(Artifact {
            object_key,
            size_bytes: u64::try_from(row.try_get::<i64, _>("artifact_size_bytes")?)
                .map_err(decode_err)?,
            sha256: row.try_get("artifact_sha256")?,
            recipient: row.try_get("artifact_recipient")?,
            age_header_sha256: row.try_get("artifact_age_header_sha256")?,
            dump_bytes: u64::try_from(row.try_get::<i64, _>("artifact_dump_bytes")?)
                .map_err(decode_err)?,
        }),
    };
    Ok(JobView {
        org_id: OrgId::from(row.try_get::<uuid::Uuid, _>("org_id")?),
        job_id: row.try_get("job_id")?,
        spec: JobSpec {
            kind: JobKind::parse(&kind).map_err(decode_err)?,
            trigger: Trigger::parse(&trigger).map_err(decode_err)?,
            schedule_id: row.try_get("schedule_id")?,
            database_id: row.try_get("database_id")?,
            destination_id: row.try_get("destination_id")?,
            agent_id: AgentId::from(row.try_get::<uuid::Uuid, _>("agent_id")?),
            restore_of: row.try_get("restore_of")?,
            due_at: row.try_get("due_at")?,
            max_attempts: count("max_attempts")?,
        },
        state: JobState::parse(&state).map_err(decode_err)?,
        attempt: count("attempt")?,
        fencing_token: u64::try_from(row.try_get::<i64, _>("fencing_token")?)
            .map_err(decode_err)?,
        not_before: row.try_get("not_before")?,
        cancel_requested: row.try_get("cancel_requested")?,
        reason: row.try_get("reason")?,
        artifact,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        backup_deleted: row
            .try_get::<Option<DateTime<Utc>>, _>("deleted_at")?
            .is_some(),
    })
}

/// One job of the transaction's org.
pub(crate) async fn job(
    conn: &mut PgConnection,
    id: uuid::Uuid,
) -> Result<Option<JobView>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE job_id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(job_view)
        .transpose()
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this schedule's.
    pub schedule_id: Option<uuid::Uuid>,
    /// Only in this state.
    pub state: Option<JobState>,
    /// Only jobs created before this one (paging, newest first).
    pub before: Option<uuid::Uuid>,
    /// At most this many.
    pub limit: u32,
}

/// Jobs of the transaction's org, newest first.
pub(crate) async fn jobs(
    conn: &mut PgConnection,
    filter: &JobFilter,
) -> Result<Vec<JobView>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE ($1::uuid IS NULL OR schedule_id = $1) \
         AND ($2::text IS NULL OR state = $2) AND ($3::uuid IS NULL OR job_id < $3) \
         ORDER BY job_id DESC LIMIT $4"
    ))
    .bind(filter.schedule_id)
    .bind(filter.state.map(JobState::as_str))
    .bind(filter.before)
    .bind(i64::from(filter.limit))
    .fetch_all(conn)
    .await?
    .iter()
    .map(job_view)
    .collect()
}

/// The oldest claimable job of `agent`, locked, skipping jobs another poll is claiming.
pub(crate) async fn next_claimable(
    conn: &mut PgConnection,
    agent: AgentId,
    now: DateTime<Utc>,
) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT job_id FROM jobs WHERE agent_id = $1 AND state = 'pending' AND not_before <= $2 \
         ORDER BY not_before, job_id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(agent.as_uuid())
    .bind(now)
    .fetch_optional(conn)
    .await
}

/// A succeeded backup retention weighs: not deleted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedBackup {
    /// Its job.
    pub job_id: uuid::Uuid,
    /// When it was taken (its due time).
    pub due_at: DateTime<Utc>,
    /// Its object.
    pub object_key: String,
    /// Retention already expired it (an earlier deletion failed or was cut short).
    pub expired: bool,
}

/// The succeeded, undeleted backups of `schedule`, oldest first.
pub(crate) async fn retained_backups(
    conn: &mut PgConnection,
    schedule: uuid::Uuid,
) -> Result<Vec<RetainedBackup>, sqlx::Error> {
    let rows: Vec<(uuid::Uuid, DateTime<Utc>, String, bool)> = sqlx::query_as(
        "SELECT job_id, due_at, artifact_object_key, expired_at IS NOT NULL FROM jobs \
         WHERE schedule_id = $1 AND kind = 'backup' AND state = 'succeeded' \
         AND deleted_at IS NULL AND artifact_object_key IS NOT NULL ORDER BY due_at, job_id",
    )
    .bind(schedule)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job_id, due_at, object_key, expired)| RetainedBackup {
            job_id,
            due_at,
            object_key,
            expired,
        })
        .collect())
}

/// Schedules of every org with a retention policy (owner's rights, identifiers only).
pub(crate) async fn retained_schedules(
    pool: &sqlx::PgPool,
) -> Result<Vec<(OrgId, uuid::Uuid)>, sqlx::Error> {
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> =
        sqlx::query_as("SELECT org_id, schedule_id FROM scheduling_retained_schedules()")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(org, schedule)| (OrgId::from(org), schedule))
        .collect())
}

/// A held job's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The claim's token.
    pub fencing_token: u64,
    /// When it runs out.
    pub expires_at: DateTime<Utc>,
}

/// Progress an agent reports with a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes read from the database (or the destination, for a restore).
    pub bytes_read: u64,
    /// Bytes written to the destination (or the database).
    pub bytes_written: u64,
    /// Current rate.
    pub bytes_per_second: u64,
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Starts the lease of a new claim (replacing any earlier claim's row).
pub(crate) async fn start_lease(
    conn: &mut PgConnection,
    org: OrgId,
    job: uuid::Uuid,
    agent: AgentId,
    lease: Lease,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_leases (org_id, job_id, fencing_token, agent_id, lease_expires_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO UPDATE SET \
         fencing_token = $3, agent_id = $4, lease_expires_at = $5, bytes_read = 0, \
         bytes_written = 0, bytes_per_second = 0, progress_at = NULL",
    )
    .bind(org.as_uuid())
    .bind(job)
    .bind(big(lease.fencing_token))
    .bind(agent.as_uuid())
    .bind(lease.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Extends the lease of claim `fencing_token` to `until` and records progress; false when that
/// claim holds no lease (it ended).
pub(crate) async fn extend_lease(
    conn: &mut PgConnection,
    job: uuid::Uuid,
    fencing_token: u64,
    until: DateTime<Utc>,
    progress: Progress,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE job_leases SET lease_expires_at = $3, bytes_read = $4, bytes_written = $5, \
         bytes_per_second = $6, progress_at = $7 WHERE job_id = $1 AND fencing_token = $2",
    )
    .bind(job)
    .bind(big(fencing_token))
    .bind(until)
    .bind(big(progress.bytes_read))
    .bind(big(progress.bytes_written))
    .bind(big(progress.bytes_per_second))
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Ends a claim's lease.
pub(crate) async fn end_lease(conn: &mut PgConnection, job: uuid::Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM job_leases WHERE job_id = $1")
        .bind(job)
        .execute(conn)
        .await?;
    Ok(())
}

/// The last progress a held job reported: (progress, lease expiry).
pub(crate) async fn progress(
    conn: &mut PgConnection,
    job: uuid::Uuid,
) -> Result<Option<(Progress, DateTime<Utc>)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT bytes_read, bytes_written, bytes_per_second, lease_expires_at \
         FROM job_leases WHERE job_id = $1",
    )
    .bind(job)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        let n = |c: &str| -> Result<u64, sqlx::Error> {
            u64::try_from(r.try_get::<i64, _>(c)?).map_err(decode_err)
        };
        Ok((
            Progress {
                bytes_read: n("bytes_read")?,
                bytes_written: n("bytes_written")?,
                bytes_per_second: n("bytes_per_second")?,
            },
            r.try_get("lease_expires_at")?,
        ))
    })
    .transpose()
}

/// Leases of every org that ran out by `now` (owner's rights, identifiers only).
pub(crate) async fn expired_leases(
    pool: &sqlx::PgPool,
    now: DateTime<Utc>,
    limit: i32,
) -> Result<Vec<(OrgId, uuid::Uuid, u64)>, sqlx::Error> {
    let rows: Vec<(uuid::Uuid, uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT org_id, job_id, fencing_token FROM scheduling_expired_leases($1, $2)",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(org, job, token)| (OrgId::from(org), job, u64::try_from(token).unwrap_or(0)))
        .collect())
}

/// Agents of every org with a pending job that became claimable in `(after, upto]`.
pub(crate) async fn ready_agents(
    pool: &sqlx::PgPool,
    after: DateTime<Utc>,
    upto: DateTime<Utc>,
    limit: i32,
) -> Result<Vec<(OrgId, AgentId)>, sqlx::Error> {
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> =
        sqlx::query_as("SELECT org_id, agent_id FROM scheduling_ready_jobs($1, $2, $3)")
            .bind(after)
            .bind(upto)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(org, agent)| (OrgId::from(org), AgentId::from(agent)))
        .collect())
}
