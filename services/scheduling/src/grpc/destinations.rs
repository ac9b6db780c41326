//! `DestinationService`: protobuf in, one application call, protobuf out.

use coffer_auth::grpc::authorize;
use coffer_proto::request::{id, text};
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::time::to_timestamp;
use coffer_types::OrgId;
use tonic::{Request, Response, Status};

use super::SchedulingGrpc;
use crate::domain::destination::{DestinationFields, Kind, KindFields};
use crate::store::destinations::DestinationView;

impl TryFrom<Option<pb::DestinationFields>> for DestinationFields {
    type Error = Status;

    fn try_from(fields: Option<pb::DestinationFields>) -> Result<Self, Status> {
        let f = fields.ok_or_else(|| Status::invalid_argument("fields is required"))?;
        let kind = match f.kind {
            Some(pb::destination_fields::Kind::S3(s3)) => KindFields::S3 {
                endpoint: text(&s3.endpoint, "endpoint")?.to_owned(),
                region: text(&s3.region, "region")?.to_owned(),
                bucket: text(&s3.bucket, "bucket")?.to_owned(),
                prefix: text(&s3.prefix, "prefix")?.to_owned(),
                path_style: s3.path_style,
                access_key_vault_ref: text(&s3.access_key_vault_ref, "access_key_vault_ref")?
                    .to_owned(),
            },
            Some(pb::destination_fields::Kind::Local(local)) => KindFields::Local {
                path: text(&local.path, "path")?.to_owned(),
            },
            None => return Err(Status::invalid_argument("kind must be s3 or local")),
        };
        Ok(DestinationFields {
            name: text(&f.name, "name")?.to_owned(),
            kind,
        })
    }
}

impl From<DestinationView> for pb::Destination {
    fn from(d: DestinationView) -> Self {
        let kind = match d.spec.kind {
            Kind::S3(s3) => pb::destination::Kind::S3(pb::S3Destination {
                endpoint: s3.endpoint.to_string(),
                region: s3.region,
                bucket: s3.bucket,
                prefix: s3.prefix,
                path_style: s3.path_style,
                access_key_vault_ref: s3.access_key_vault_ref.to_string(),
            }),
            Kind::Local { path } => pb::destination::Kind::Local(pb::LocalDestination {
                path: path.to_string_lossy().into_owned(),
            }),
        };
        Self {
            org_id: d.org_id.to_string(),
            destination_id: d.destination_id.to_string(),
            name: d.spec.name,
            kind: Some(kind),
            version: d.version,
            created_at: Some(to_timestamp(d.created_at)),
            updated_at: Some(to_timestamp(d.updated_at)),
        }
    }
}

#[tonic::async_trait]
impl pb::destination_service_server::DestinationService for SchedulingGrpc {
    async fn register_destination(
        &self,
        mut request: Request<pb::RegisterDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let fields = request.get_mut().fields.take();
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        let actor = authorize(&request, org)?.actor();
        let fields = DestinationFields::try_from(fields)?;
        let registered = self.app.register_destination(&actor, org, fields).await?;
        Ok(Response::new(registered.into()))
    }

    async fn change_destination(
        &self,
        mut request: Request<pb::ChangeDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let fields = request.get_mut().fields.take();
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let destination_id = id(&r.destination_id, "destination_id")?;
        let actor = authorize(&request, org)?.actor();
        let fields = DestinationFields::try_from(fields)?;
        let changed = self
            .app
            .change_destination(&actor, org, destination_id, fields)
            .await?;
        Ok(Response::new(changed.into()))
    }

    async fn get_destination(
        &self,
        request: Request<pb::GetDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let destination_id = id(&r.destination_id, "destination_id")?;
        authorize(&request, org)?;
        Ok(Response::new(
            self.app.get_destination(org, destination_id).await?.into(),
        ))
    }

    async fn list_destinations(
        &self,
        request: Request<pb::ListDestinationsRequest>,
    ) -> Result<Response<pb::ListDestinationsResponse>, Status> {
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let destinations = self.app.list_destinations(org).await?;
        Ok(Response::new(pb::ListDestinationsResponse {
            destinations: destinations.into_iter().map(Into::into).collect(),
        }))
    }

    async fn remove_destination(
        &self,
        request: Request<pb::RemoveDestinationRequest>,
    ) -> Result<Response<pb::RemoveDestinationResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let destination_id = id(&r.destination_id, "destination_id")?;
        let actor = authorize(&request, org)?.actor();
        let reason = text(&r.reason, "reason")?;
        self.app
            .remove_destination(&actor, org, destination_id, reason)
            .await?;
        Ok(Response::new(pb::RemoveDestinationResponse {}))
    }

    async fn probe_destination(
        &self,
        request: Request<pb::ProbeDestinationRequest>,
    ) -> Result<Response<pb::ProbeDestinationResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let destination_id = id(&r.destination_id, "destination_id")?;
        authorize(&request, org)?;
        let probed = self.app.probe_destination(org, destination_id).await?;
        Ok(Response::new(pb::ProbeDestinationResponse {
            destination: Some(probed.into()),
        }))
    }
}
