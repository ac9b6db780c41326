//! The read model of the scheduling service (a projection kept in the append transaction) and
//! the queries over it.

pub mod destinations;

use chrono::{DateTime, Utc};
use coffer_eventstore::{Aggregate, Projection, ProjectionError, RecordedEvent};
use coffer_types::{AgentId, OrgId, VaultRef};
use sqlx::{PgConnection, Row};

use crate::domain::database::{Database, DatabaseEvent, DatabaseSpec, Engine};

mod jobs;
mod schedules;

pub use jobs::{JobFilter, JobView, Lease, Progress, RetainedBackup};
pub(crate) use jobs::{
    Jobs, end_lease, expired_leases, extend_lease, job, jobs, next_claimable, progress,
    ready_agents, retained_backups, retained_schedules, start_lease,
};
pub use schedules::ScheduleView;
pub(crate) use schedules::{
    Schedules, due, lock_due, name_taken as schedule_name_taken, schedule, schedules,
};

/// `databases`, from the Database aggregate: the org's live databases.
pub(crate) struct Databases;

#[async_trait::async_trait]
impl Projection for Databases {
    fn name(&self) -> &'static str {
        "databases"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["databases"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != Database::TYPE {
            return Ok(());
        }
        let id = event.aggregate_id.as_uuid();
        match event.decode::<DatabaseEvent>()? {
            DatabaseEvent::DatabaseRegistered(spec) => {
                sqlx::query(
                    "INSERT INTO databases \
                     (org_id, database_id, name, engine, host, port, database, db_user, \
                      password_vault_ref, agent_id, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)",
                )
                .bind(event.org_id.as_uuid())
                .bind(id)
                .bind(&spec.name)
                .bind(spec.engine.as_str())
                .bind(&spec.host)
                .bind(i32::from(spec.port))
                .bind(&spec.database)
                .bind(&spec.user)
                .bind(spec.password_vault_ref.to_string())
                .bind(spec.agent_id.as_uuid())
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            DatabaseEvent::DatabaseChanged { version, spec } => {
                sqlx::query(
                    "UPDATE databases SET name = $2, engine = $3, host = $4, port = $5, \
                     database = $6, db_user = $7, password_vault_ref = $8, agent_id = $9, \
                     version = $10, updated_at = $11 WHERE database_id = $1",
                )
                .bind(id)
                .bind(&spec.name)
                .bind(spec.engine.as_str())
                .bind(&spec.host)
                .bind(i32::from(spec.port))
                .bind(&spec.database)
                .bind(&spec.user)
                .bind(spec.password_vault_ref.to_string())
                .bind(spec.agent_id.as_uuid())
                .bind(i32::try_from(version).unwrap_or(i32::MAX))
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            DatabaseEvent::DatabaseRemoved { .. } => {
                sqlx::query("DELETE FROM databases WHERE database_id = $1")
                    .bind(id)
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// A live database, as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseView {
    /// The org.
    pub org_id: OrgId,
    /// The database.
    pub database_id: uuid::Uuid,
    /// Its current fields.
    pub spec: DatabaseSpec,
    /// Its version.
    pub version: u32,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "org_id, database_id, name, engine, host, port, database, db_user, \
     password_vault_ref, agent_id, version, created_at, updated_at";

pub(crate) fn decode_err(e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

fn database_view(row: &sqlx::postgres::PgRow) -> Result<DatabaseView, sqlx::Error> {
    let engine: String = row.try_get("engine")?;
    let vault_ref: String = row.try_get("password_vault_ref")?;
    let port: i32 = row.try_get("port")?;
    let version: i32 = row.try_get("version")?;
    Ok(DatabaseView {
        org_id: OrgId::from(row.try_get::<uuid::Uuid, _>("org_id")?),
        database_id: row.try_get("database_id")?,
        spec: DatabaseSpec {
            name: row.try_get("name")?,
            engine: Engine::parse(&engine).map_err(decode_err)?,
            host: row.try_get("host")?,
            port: u16::try_from(port).map_err(decode_err)?,
            database: row.try_get("database")?,
            user: row.try_get("db_user")?,
            password_vault_ref: vault_ref.parse::<VaultRef>().map_err(decode_err)?,
            agent_id: AgentId::from(row.try_get::<uuid::Uuid, _>("agent_id")?),
        },
        version: u32::try_from(version).map_err(decode_err)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// One live database of the transaction's org.
pub(crate) async fn database(
    conn: &mut PgConnection,
    id: uuid::Uuid,
) -> Result<Option<DatabaseView>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM databases WHERE database_id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(database_view)
    .transpose()
}

/// Every live database of the transaction's org, by name.
pub(crate) async fn databases(conn: &mut PgConnection) -> Result<Vec<DatabaseView>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM databases ORDER BY name"))
        .fetch_all(conn)
        .await?
        .iter()
        .map(database_view)
        .collect()
}

/// Holds `name` of a `kind` of thing in the transaction's org until the transaction ends, so
/// two requests registering one name at once serialise: the second sees the first's row when
/// it checks the name and answers AlreadyExists, instead of losing on the unique constraint.
pub(crate) async fn lock_name(
    conn: &mut PgConnection,
    kind: &str,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(
             current_setting('coffer.org_id', true) || '/' || $1 || '/' || $2, 0))",
    )
    .bind(kind)
    .bind(name)
    .execute(conn)
    .await
    .map(drop)
}

/// Whether a live database of the transaction's org other than `except` is called `name`
/// (the name stays locked until the transaction ends).
pub(crate) async fn name_taken(
    conn: &mut PgConnection,
    name: &str,
    except: uuid::Uuid,
) -> Result<bool, sqlx::Error> {
    lock_name(conn, "database", name).await?;
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM databases WHERE name = $1 AND database_id <> $2)",
    )
    .bind(name)
    .bind(except)
    .fetch_one(conn)
    .await
}

/// What scheduling knows of an agent of the transaction's org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentState {
    /// Never seen enrolled in this org (or an agent of another org: RLS hides it).
    Unknown,
    /// Enrolled and not revoked.
    Enrolled,
    /// Revoked.
    Revoked,
}

/// The state of `agent` in the transaction's org. The row is locked `FOR SHARE` so a
/// revocation the consumer applies concurrently waits for this transaction: a database is never
/// committed naming an agent whose revocation committed first.
pub(crate) async fn agent_state(
    conn: &mut PgConnection,
    agent: AgentId,
) -> Result<AgentState, sqlx::Error> {
    let row: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT revoked_at FROM agents WHERE agent_id = $1 FOR SHARE")
            .bind(agent.as_uuid())
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        None => AgentState::Unknown,
        Some(None) => AgentState::Enrolled,
        Some(Some(_)) => AgentState::Revoked,
    })
}

/// Records that `agent` of `org` enrolled at `at`; an agent already known (enrolled or
/// revoked) is left alone.
pub(crate) async fn agent_enrolled(
    conn: &mut PgConnection,
    org: OrgId,
    agent: uuid::Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agents (org_id, agent_id, enrolled_at) VALUES ($1, $2, $3) \
         ON CONFLICT (agent_id) DO NOTHING",
    )
    .bind(org.as_uuid())
    .bind(agent)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that `agent` of `org` was revoked at `at`. A revocation seen before the enrollment
/// inserts the row already revoked (the enrollment then changes nothing); a second revocation
/// keeps the first time.
pub(crate) async fn agent_revoked(
    conn: &mut PgConnection,
    org: OrgId,
    agent: uuid::Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agents (org_id, agent_id, enrolled_at, revoked_at) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (agent_id) DO UPDATE \
         SET revoked_at = COALESCE(agents.revoked_at, EXCLUDED.revoked_at)",
    )
    .bind(org.as_uuid())
    .bind(agent)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}
