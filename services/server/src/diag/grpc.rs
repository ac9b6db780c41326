//! gRPC adapter: protobuf in, one application call, protobuf out.

use coffer_auth::grpc::authorize;
use coffer_proto::diagnostics::v1::{self as pb, diagnostics_service_server::DiagnosticsService};
use coffer_proto::time::to_timestamp;
use coffer_types::{AggregateId, OrgId};
use tonic::{Request, Response, Status};

use super::{Diagnostics, Error, ProbeView, SentProbe};

/// `coffer.diagnostics.v1.DiagnosticsService`.
#[derive(Debug, Clone)]
pub struct DiagnosticsGrpc {
    app: Diagnostics,
}

impl DiagnosticsGrpc {
    /// Wraps the application.
    pub fn new(app: Diagnostics) -> Self {
        Self { app }
    }
}

struct SendProbe {
    org: OrgId,
    note: String,
}

impl TryFrom<pb::SendProbeRequest> for SendProbe {
    type Error = Status;
    fn try_from(r: pb::SendProbeRequest) -> Result<Self, Status> {
        Ok(Self {
            org: coffer_proto::request::id(&r.org_id, "org_id")?,
            note: r.note,
        })
    }
}

struct GetProbe {
    org: OrgId,
    probe_id: AggregateId,
}

impl TryFrom<pb::GetProbeRequest> for GetProbe {
    type Error = Status;
    fn try_from(r: pb::GetProbeRequest) -> Result<Self, Status> {
        Ok(Self {
            org: coffer_proto::request::id(&r.org_id, "org_id")?,
            probe_id: coffer_proto::request::id(&r.probe_id, "probe_id")?,
        })
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound => Status::not_found("probe not found"),
            Error::Rejected(r) => Status::invalid_argument(r.to_string()),
            Error::Store(coffer_eventstore::Error::Conflict { .. }) => {
                Status::aborted("the probe changed concurrently; retry")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "diagnostics storage failure");
                Status::unavailable("storage is unavailable")
            }
        }
    }
}

impl From<SentProbe> for pb::SendProbeResponse {
    fn from(s: SentProbe) -> Self {
        Self {
            probe_id: s.probe_id.to_string(),
            event_id: s.event_id.to_string(),
            version: s.version,
        }
    }
}

impl From<ProbeView> for pb::GetProbeResponse {
    fn from(v: ProbeView) -> Self {
        Self {
            probe_id: v.probe_id.to_string(),
            note: v.note,
            probes_sent: v.probes_sent,
            sent_at: Some(to_timestamp(v.sent_at)),
            published: v.published,
            observed_at: v.observed_at.map(to_timestamp),
            stream_sequence: v.stream_sequence.unwrap_or(0),
            consumer_trace_id: v.consumer_trace_id.unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl DiagnosticsService for DiagnosticsGrpc {
    async fn send_probe(
        &self,
        request: Request<pb::SendProbeRequest>,
    ) -> Result<Response<pb::SendProbeResponse>, Status> {
        let req: SendProbe = request.get_ref().clone().try_into()?;
        let actor = authorize(&request, req.org)?.actor();
        let sent = self.app.send_probe(req.org, None, req.note, &actor).await?;
        Ok(Response::new(sent.into()))
    }

    async fn get_probe(
        &self,
        request: Request<pb::GetProbeRequest>,
    ) -> Result<Response<pb::GetProbeResponse>, Status> {
        let req: GetProbe = request.get_ref().clone().try_into()?;
        authorize(&request, req.org)?;
        let view = self.app.get_probe(req.org, req.probe_id).await?;
        Ok(Response::new(view.into()))
    }
}
