//! The `AuditService` adapter: protobuf in, one application call, protobuf out.
//!
//! Every handler authorises the org the request names (`audit.read`, or `audit.export` for the
//! bundle); another org's log answers NOT_FOUND like one that does not exist.

use std::pin::Pin;

use coffer_auth::grpc::authorize;
use coffer_proto::audit::v1 as pb;
use coffer_proto::common::v1 as common_pb;
use coffer_proto::request::{id, text};
use coffer_proto::time::{from_timestamp, to_timestamp};
use coffer_types::OrgId;
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::app::{
    Audit, CheckpointView, Consistency, EntryView, Error, ExportRequest, Page, Query,
};
use crate::bundle::record;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(f) => Status::invalid_argument(f.to_string()),
            Error::NotFound(_) => Status::not_found(e.to_string()),
            Error::OutOfRange(m) => Status::out_of_range(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::KmsUnavailable => Status::unavailable("kms is unavailable"),
            Error::Corrupt(detail) => {
                tracing::error!(error = %detail, "audit log data is inconsistent");
                Status::internal(
                    "the audit log cannot be read consistently; the operator has been told",
                )
            }
            Error::Db(e) => {
                tracing::error!(error = %e, "audit storage failure");
                Status::unavailable("storage is unavailable")
            }
        }
    }
}

fn entry(e: EntryView) -> Result<pb::Entry, Status> {
    // The leaf is an AuditEntry we encoded; if it no longer decodes, the row was tampered with.
    let decoded = pb::AuditEntry::decode(e.leaf.as_slice()).map_err(|_| {
        Status::from(Error::Corrupt(format!(
            "the leaf of entry {} does not decode",
            e.seq
        )))
    })?;
    Ok(pb::Entry {
        seq: e.seq,
        event: decoded.event,
        leaf_hash: e.leaf_hash.to_vec(),
        chain_hash: e.chain_hash.to_vec(),
        appended_at: Some(to_timestamp(e.appended_at)),
    })
}

fn checkpoint(org: OrgId, c: CheckpointView) -> pb::Checkpoint {
    pb::Checkpoint {
        org_id: org.to_string(),
        size: c.size,
        root_hash: c.root.to_vec(),
        signed_note: c.signed_note,
        issued_at: Some(to_timestamp(c.issued_at)),
        verifier_key: c.verifier_key,
    }
}

fn consistency(c: Consistency) -> pb::ConsistencyProof {
    pb::ConsistencyProof {
        from_size: c.from_size,
        to_size: c.to_size,
        from_root: c.from_root.to_vec(),
        to_root: c.to_root.to_vec(),
        proof: c.proof.iter().map(|h| h.to_vec()).collect(),
    }
}

fn page(p: Option<common_pb::PageRequest>) -> Result<Page, Status> {
    let p = p.unwrap_or_default();
    Ok(Page {
        size: p.page_size,
        token: text(&p.page_token, "page.page_token")?.to_owned(),
    })
}

fn filter(s: &str, field: &str) -> Result<Option<String>, Status> {
    let s = text(s, field)?;
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

fn time(
    ts: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    ts.map(|t| from_timestamp(t).map_err(|e| Status::invalid_argument(format!("{field} {e}"))))
        .transpose()
}

fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

/// `AuditService`.
#[derive(Debug, Clone)]
pub struct AuditGrpc {
    app: Audit,
}

impl AuditGrpc {
    /// Wraps the application.
    pub fn new(app: Audit) -> Self {
        Self { app }
    }
}

type BundleStream = Pin<Box<dyn Stream<Item = Result<pb::BundleRecord, Status>> + Send>>;

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditGrpc {
    async fn query_entries(
        &self,
        request: Request<pb::QueryEntriesRequest>,
    ) -> Result<Response<pb::QueryEntriesResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        authorize(&request, org)?;
        let aggregate_id = match r.aggregate_id.as_str() {
            "" => None,
            s => Some(id::<uuid::Uuid>(s, "aggregate_id")?),
        };
        let query = Query {
            from: time(r.from.as_ref(), "from")?,
            to: time(r.to.as_ref(), "to")?,
            actor_kind: filter(&r.actor_kind, "actor_kind")?,
            actor_id: filter(&r.actor_id, "actor_id")?,
            action: filter(&r.action, "action")?,
            aggregate_type: filter(&r.aggregate_type, "aggregate_type")?,
            aggregate_id,
        };
        let (entries, next) = self.app.query(org, query, page(r.page.clone())?).await?;
        Ok(Response::new(pb::QueryEntriesResponse {
            entries: entries.into_iter().map(entry).collect::<Result<_, _>>()?,
            page: Some(common_pb::PageResponse {
                next_page_token: next.unwrap_or_default(),
            }),
        }))
    }

    async fn get_entry(
        &self,
        request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::GetEntryResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        authorize(&request, org)?;
        let proof = self.app.entry(org, r.seq, nonzero(r.tree_size)).await?;
        let leaf = proof.entry.leaf.clone();
        Ok(Response::new(pb::GetEntryResponse {
            entry: Some(entry(proof.entry)?),
            leaf,
            inclusion_proof: proof.inclusion_proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint: Some(checkpoint(org, proof.checkpoint)),
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        authorize(&request, org)?;
        let c = self.app.checkpoint(org, nonzero(r.size)).await?;
        Ok(Response::new(checkpoint(org, c)))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        authorize(&request, org)?;
        let (list, next) = self.app.checkpoints(org, page(r.page.clone())?).await?;
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints: list.into_iter().map(|c| checkpoint(org, c)).collect(),
            page: Some(common_pb::PageResponse {
                next_page_token: next.unwrap_or_default(),
            }),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        authorize(&request, org)?;
        let c = self.app.consistency(org, r.from_size, r.to_size).await?;
        Ok(Response::new(consistency(c)))
    }

    type ExportBundleStream = BundleStream;

    async fn export_bundle(
        &self,
        request: Request<pb::ExportBundleRequest>,
    ) -> Result<Response<Self::ExportBundleStream>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        authorize(&request, org)?;
        let export = ExportRequest {
            from_seq: r.from_seq,
            tree_size: nonzero(r.tree_size),
            consistency_from: nonzero(r.consistency_from),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let app = self.app.clone();
        tokio::spawn(async move { app.export(org, export, tx).await });
        // The first part decides the status: a request refused (bad size, no checkpoint)
        // fails the call itself rather than a stream that is already open.
        let first = match rx.recv().await {
            Some(Ok(part)) => record(org, part),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Status::unavailable("the export stopped before it began")),
        };
        let rest = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |part| match part {
            Ok(part) => Ok(record(org, part)),
            Err(e) => Err(Status::from(e)),
        });
        let stream = futures::stream::once(async move { Ok(first) }).chain(rest);
        Ok(Response::new(Box::pin(stream)))
    }
}
