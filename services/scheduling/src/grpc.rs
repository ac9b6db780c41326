//! gRPC adapter: protobuf in, one application call, protobuf out.
//!
//! Every handler asks the `Caller` the server's auth layer attached to authorise the org the
//! request names; the permission comes from the RPC table in `coffer_auth`.

mod destinations;

use coffer_auth::grpc::authorize;
use coffer_proto::request::{id, text};
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::time::to_timestamp;
use coffer_types::OrgId;
use tonic::{Request, Response, Status};

use crate::app::{Error, Scheduling};
use crate::domain::database::DatabaseFields;
use crate::store::DatabaseView;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(f) => Status::invalid_argument(f.to_string()),
            Error::NotFound(_) => Status::not_found(e.to_string()),
            Error::Precondition(m) => Status::failed_precondition(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Store(coffer_eventstore::Error::Conflict { .. }) => {
                Status::aborted("the resource changed concurrently; retry")
            }
            Error::Refused(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Store(e) => {
                tracing::error!(error = %e, "scheduling storage failure");
                Status::unavailable("storage is unavailable")
            }
        }
    }
}

impl TryFrom<Option<pb::DatabaseFields>> for DatabaseFields {
    type Error = Status;

    fn try_from(fields: Option<pb::DatabaseFields>) -> Result<Self, Status> {
        let f = fields.ok_or_else(|| Status::invalid_argument("fields is required"))?;
        Ok(DatabaseFields {
            name: text(&f.name, "name")?.to_owned(),
            engine: text(&f.engine, "engine")?.to_owned(),
            host: text(&f.host, "host")?.to_owned(),
            port: f.port,
            database: text(&f.database, "database")?.to_owned(),
            user: text(&f.user, "user")?.to_owned(),
            password_vault_ref: text(&f.password_vault_ref, "password_vault_ref")?.to_owned(),
            agent_id: text(&f.agent_id, "agent_id")?.to_owned(),
        })
    }
}

impl From<DatabaseView> for pb::Database {
    fn from(d: DatabaseView) -> Self {
        Self {
            org_id: d.org_id.to_string(),
            database_id: d.database_id.to_string(),
            name: d.spec.name,
            engine: d.spec.engine.as_str().to_owned(),
            host: d.spec.host,
            port: u32::from(d.spec.port),
            database: d.spec.database,
            user: d.spec.user,
            password_vault_ref: d.spec.password_vault_ref.to_string(),
            agent_id: d.spec.agent_id.to_string(),
            version: d.version,
            created_at: Some(to_timestamp(d.created_at)),
            updated_at: Some(to_timestamp(d.updated_at)),
        }
    }
}

/// `DatabaseService` and `DestinationService`.
#[derive(Debug, Clone)]
pub struct SchedulingGrpc {
    app: Scheduling,
}

impl SchedulingGrpc {
    /// Wraps the application.
    pub fn new(app: Scheduling) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl pb::database_service_server::DatabaseService for SchedulingGrpc {
    async fn register_database(
        &self,
        mut request: Request<pb::RegisterDatabaseRequest>,
    ) -> Result<Response<pb::Database>, Status> {
        let fields = request.get_mut().fields.take();
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        let actor = authorize(&request, org)?.actor();
        let fields = DatabaseFields::try_from(fields)?;
        let registered = self.app.register_database(&actor, org, fields).await?;
        Ok(Response::new(registered.into()))
    }

    async fn change_database(
        &self,
        mut request: Request<pb::ChangeDatabaseRequest>,
    ) -> Result<Response<pb::Database>, Status> {
        let fields = request.get_mut().fields.take();
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let database_id = id(&r.database_id, "database_id")?;
        let actor = authorize(&request, org)?.actor();
        let fields = DatabaseFields::try_from(fields)?;
        let changed = self
            .app
            .change_database(&actor, org, database_id, fields)
            .await?;
        Ok(Response::new(changed.into()))
    }

    async fn get_database(
        &self,
        request: Request<pb::GetDatabaseRequest>,
    ) -> Result<Response<pb::Database>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let database_id = id(&r.database_id, "database_id")?;
        authorize(&request, org)?;
        Ok(Response::new(
            self.app.get_database(org, database_id).await?.into(),
        ))
    }

    async fn list_databases(
        &self,
        request: Request<pb::ListDatabasesRequest>,
    ) -> Result<Response<pb::ListDatabasesResponse>, Status> {
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let databases = self.app.list_databases(org).await?;
        Ok(Response::new(pb::ListDatabasesResponse {
            databases: databases.into_iter().map(Into::into).collect(),
        }))
    }

    async fn remove_database(
        &self,
        request: Request<pb::RemoveDatabaseRequest>,
    ) -> Result<Response<pb::RemoveDatabaseResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let database_id = id(&r.database_id, "database_id")?;
        let actor = authorize(&request, org)?.actor();
        let reason = text(&r.reason, "reason")?;
        self.app
            .remove_database(&actor, org, database_id, reason)
            .await?;
        Ok(Response::new(pb::RemoveDatabaseResponse {}))
    }
}
