//! The scheduling application: commands and queries over the database registry, schedules
//! (`schedules`) and jobs (`jobs`, which also holds the scheduler).
//!
//! Callers have already been authenticated and authorised for the RPC's permission by the
//! gRPC layer (`coffer_auth`'s table). Every change commits its event and the read model in one
//! tenant transaction.

mod destinations;

use std::sync::Arc;

pub use destinations::{KeyError, KeyPurpose, StorageAccess, StorageKeys, location};

use coffer_db::TenantTx;
use coffer_eventstore::{EventStore, ExecuteError, Projection};
use coffer_types::{Actor, AggregateId, OrgId};

use crate::domain::FieldError;
use crate::domain::database::{
    Database, DatabaseCommand, DatabaseError, DatabaseFields, DatabaseSpec,
};
use crate::store::{self, AgentState, DatabaseView};

mod jobs;
mod retention;
mod schedules;

pub use jobs::{ClaimedJob, HeartbeatReply, JobRuntime, Settings};
pub use retention::RetentionPass;

/// Why a scheduling request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such thing in the caller's org (NotFound). Another org's things are reported the
    /// same way.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request names something in a state that forbids it (FailedPrecondition), e.g. an
    /// agent that is unknown in the org or revoked.
    #[error("{0}")]
    Precondition(&'static str),
    /// It exists already (AlreadyExists); the message names the field.
    #[error("{0}")]
    AlreadyExists(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] coffer_eventstore::Error),
    /// The request is refused in the current state with a message built at run time
    /// (FailedPrecondition): a failed destination probe, an unusable access key, a stale
    /// fencing token, a job no longer held.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something this request needs cannot answer now, or is not available in this deployment
    /// (Unavailable). Nothing was stored.
    #[error("{0}")]
    Unavailable(String),
}

impl From<coffer_db::Error> for Error {
    fn from(e: coffer_db::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(coffer_db::Error::from(e).into())
    }
}

impl From<ExecuteError<DatabaseError>> for Error {
    fn from(e: ExecuteError<DatabaseError>) -> Self {
        match e {
            ExecuteError::Rejected(DatabaseError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(DatabaseError::NotFound) => Error::NotFound("database"),
            ExecuteError::Rejected(e @ DatabaseError::AlreadyExists) => {
                Error::AlreadyExists(e.to_string())
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

/// The projections this service maintains (also used by `coffer admin rebuild-projections`).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(store::Databases),
        Arc::new(store::Schedules),
        Arc::new(store::Jobs),
        Arc::new(store::destinations::Destinations),
    ]
}

/// The scheduling service's application layer.
#[derive(Debug, Clone)]
pub struct Scheduling {
    store: EventStore,
    /// The job runtime (wake-ups, ticket signer, timing); `None` in tools that only rebuild
    /// projections.
    jobs: Option<Arc<JobRuntime>>,
    /// The SSRF guard and the access-key source destinations are probed with.
    storage: StorageAccess,
}

/// The aggregate id of a database: its database id.
fn database_aggregate(id: uuid::Uuid) -> AggregateId {
    AggregateId::from(id)
}

fn name_conflict(name: &str) -> Error {
    Error::AlreadyExists(format!(
        "name {name} is taken by another database of the org"
    ))
}

/// Refuses an agent that cannot serve a database of the transaction's org. Checked in the
/// command's transaction with the agent's row locked, so a revocation cannot slip in between.
/// Scheduling learns of agents through events, so a just-enrolled agent may be refused until the
/// `scheduling-agents` consumer has seen it.
async fn check_agent(tx: &mut TenantTx, spec: &DatabaseSpec) -> Result<(), Error> {
    match store::agent_state(tx, spec.agent_id).await? {
        AgentState::Enrolled => Ok(()),
        // Another org's agent is hidden by row-level security: it looks unknown.
        AgentState::Unknown => Err(Error::Precondition(
            "agent_id names no enrolled agent of this org",
        )),
        AgentState::Revoked => Err(Error::Precondition("agent_id names a revoked agent")),
    }
}

impl Scheduling {
    /// The application over the service's database.
    pub fn new(db: coffer_db::Database) -> Self {
        Self {
            store: EventStore::new(db, projections()),
            jobs: None,
            storage: StorageAccess::default(),
        }
    }

    /// The same application, able to run schedules and hand out jobs.
    pub fn with_jobs(mut self, runtime: JobRuntime) -> Self {
        self.jobs = Some(Arc::new(runtime));
        self
    }

    /// The same application, probing destinations with `storage` (by default every guarded
    /// address class and every local path is refused, and S3 destinations have no keys).
    pub fn with_storage(mut self, storage: StorageAccess) -> Self {
        self.storage = storage;
        self
    }

    async fn begin(&self, org: OrgId) -> Result<TenantTx, Error> {
        Ok(self.store.db().begin_tenant(org).await?)
    }

    /// Registers a database of `org`.
    pub async fn register_database(
        &self,
        actor: &Actor,
        org: OrgId,
        fields: DatabaseFields,
    ) -> Result<DatabaseView, Error> {
        let id = uuid::Uuid::now_v7();
        self.write(
            actor,
            org,
            id,
            &fields,
            DatabaseCommand::RegisterDatabase {
                org,
                fields: fields.clone(),
            },
        )
        .await
    }

    /// Replaces every field of a database of `org`.
    pub async fn change_database(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        fields: DatabaseFields,
    ) -> Result<DatabaseView, Error> {
        self.write(
            actor,
            org,
            id,
            &fields,
            DatabaseCommand::ChangeDatabase {
                org,
                fields: fields.clone(),
            },
        )
        .await
    }

    /// Registers or changes database `id`: the checks the aggregate cannot make (a name free
    /// in the org, a serving agent it knows), then the command, in one tenant transaction.
    async fn write(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        fields: &DatabaseFields,
        command: DatabaseCommand,
    ) -> Result<DatabaseView, Error> {
        // Checked here first for the name the uniqueness check needs; the aggregate checks
        // again what it records.
        let spec = DatabaseSpec::check(org, fields)?;
        let mut tx = self.begin(org).await?;
        if matches!(command, DatabaseCommand::ChangeDatabase { .. })
            && store::database(&mut tx, id).await?.is_none()
        {
            return Err(Error::NotFound("database"));
        }
        if store::name_taken(&mut tx, &spec.name, id).await? {
            return Err(name_conflict(&spec.name));
        }
        check_agent(&mut tx, &spec).await?;
        self.store
            .execute_in::<Database>(&mut tx, database_aggregate(id), actor, command)
            .await?;
        let view = store::database(&mut tx, id)
            .await?
            .expect("written in this transaction");
        tx.commit().await?;
        Ok(view)
    }

    /// Removes a database of `org` from the registry.
    pub async fn remove_database(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        reason: &str,
    ) -> Result<(), Error> {
        let mut tx = self.begin(org).await?;
        let command = DatabaseCommand::RemoveDatabase {
            reason: reason.to_owned(),
        };
        self.store
            .execute_in::<Database>(&mut tx, database_aggregate(id), actor, command)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One live database of `org`.
    pub async fn get_database(&self, org: OrgId, id: uuid::Uuid) -> Result<DatabaseView, Error> {
        let mut tx = self.begin(org).await?;
        store::database(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("database"))
    }

    /// Every live database of `org`, by name.
    pub async fn list_databases(&self, org: OrgId) -> Result<Vec<DatabaseView>, Error> {
        let mut tx = self.begin(org).await?;
        Ok(store::databases(&mut tx).await?)
    }
}
