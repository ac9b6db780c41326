//! `JobService` (users) and `AgentJobService` (agents over mTLS).

use std::time::Duration;

use coffer_auth::grpc::{agent_of, authorize};
use coffer_proto::request::{id, text};
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::time::to_timestamp;
use coffer_types::OrgId;
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::SchedulingGrpc;
use crate::app::ClaimedJob;
use crate::domain::job::{Artifact, JobState};
use crate::store::{JobFilter, JobView, Progress};

/// Most jobs one page lists.
const MAX_PAGE: u32 = 1000;
/// Jobs a page lists when the request does not say.
const DEFAULT_PAGE: u32 = 100;

fn artifact_to_pb(a: Artifact) -> pb::Artifact {
    pb::Artifact {
        object_key: a.object_key,
        size_bytes: a.size_bytes,
        sha256: a.sha256,
        recipient: a.recipient,
        age_header_sha256: a.age_header_sha256,
        dump_bytes: a.dump_bytes,
    }
}

fn progress_to_pb(p: Progress) -> pb::Progress {
    pb::Progress {
        bytes_read: p.bytes_read,
        bytes_written: p.bytes_written,
        bytes_per_second: p.bytes_per_second,
    }
}

fn optional(id: Option<uuid::Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

fn job_to_pb(j: JobView, progress: Option<Progress>) -> pb::Job {
    pb::Job {
        org_id: j.org_id.to_string(),
        job_id: j.job_id.to_string(),
        kind: j.spec.kind.as_str().to_owned(),
        trigger: j.spec.trigger.as_str().to_owned(),
        schedule_id: optional(j.spec.schedule_id),
        database_id: j.spec.database_id.to_string(),
        destination_id: j.spec.destination_id.to_string(),
        agent_id: j.spec.agent_id.to_string(),
        restore_of: optional(j.spec.restore_of),
        due_at: Some(to_timestamp(j.spec.due_at)),
        state: j.state.as_str().to_owned(),
        attempt: j.attempt,
        max_attempts: j.spec.max_attempts,
        not_before: Some(to_timestamp(j.not_before)),
        cancel_requested: j.cancel_requested,
        reason: j.reason,
        artifact: j.artifact.map(artifact_to_pb),
        progress: progress.map(progress_to_pb),
        created_at: Some(to_timestamp(j.created_at)),
        updated_at: Some(to_timestamp(j.updated_at)),
        finished_at: j.finished_at.map(to_timestamp),
        backup_deleted: j.backup_deleted,
    }
}

impl From<ClaimedJob> for pb::ClaimedJob {
    fn from(c: ClaimedJob) -> Self {
        let d = c.database;
        pb::ClaimedJob {
            fencing_token: c.lease.fencing_token,
            lease_expires_at: Some(to_timestamp(c.lease.expires_at)),
            database: Some(pb::JobDatabase {
                database_id: c.job.spec.database_id.to_string(),
                engine: d.engine.as_str().to_owned(),
                host: d.host,
                port: u32::from(d.port),
                database: d.database,
                user: d.user,
                password_vault_ref: d.password_vault_ref.to_string(),
            }),
            restore_artifact: c.restore_artifact.map(artifact_to_pb),
            destination: Some(c.destination.into()),
            ticket: c.ticket.expose_secret().to_owned(),
            object_key: c.object_key.unwrap_or_default(),
            job: Some(job_to_pb(c.job, None)),
        }
    }
}

fn artifact_from_pb(a: Option<pb::Artifact>) -> Result<Option<Artifact>, Status> {
    a.map(|a| {
        Ok(Artifact {
            object_key: text(&a.object_key, "artifact.object_key")?.to_owned(),
            size_bytes: a.size_bytes,
            sha256: text(&a.sha256, "artifact.sha256")?.to_owned(),
            recipient: text(&a.recipient, "artifact.recipient")?.to_owned(),
            age_header_sha256: text(&a.age_header_sha256, "artifact.age_header_sha256")?.to_owned(),
            dump_bytes: a.dump_bytes,
        })
    })
    .transpose()
}

/// The org and job a request names, once the caller may act in the org.
fn target<T>(
    request: &Request<T>,
    org_id: &str,
    job_id: &str,
) -> Result<(OrgId, uuid::Uuid, coffer_types::Actor), Status> {
    let org: OrgId = id(org_id, "org_id")?;
    let job = id(job_id, "job_id")?;
    let actor = authorize(request, org)?.actor();
    Ok((org, job, actor))
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for SchedulingGrpc {
    async fn run_now(
        &self,
        request: Request<pb::RunNowRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let schedule = id(&r.schedule_id, "schedule_id")?;
        let actor = authorize(&request, org)?.actor();
        let job = self.app.run_now(&actor, org, schedule).await?;
        Ok(Response::new(job_to_pb(job, None)))
    }

    async fn start_restore(
        &self,
        request: Request<pb::StartRestoreRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let backup = id(&r.backup_job_id, "backup_job_id")?;
        let database = if r.database_id.is_empty() {
            None
        } else {
            Some(id(&r.database_id, "database_id")?)
        };
        let actor = authorize(&request, org)?.actor();
        let job = self
            .app
            .start_restore(&actor, org, backup, database)
            .await?;
        Ok(Response::new(job_to_pb(job, None)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.get_ref();
        let (org, job, actor) = target(&request, &r.org_id, &r.job_id)?;
        let reason = text(&r.reason, "reason")?;
        let job = self.app.cancel_job(&actor, org, job, reason).await?;
        Ok(Response::new(job_to_pb(job, None)))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.get_ref();
        let (org, job, _) = target(&request, &r.org_id, &r.job_id)?;
        let (job, progress) = self.app.get_job(org, job).await?;
        Ok(Response::new(job_to_pb(job, progress)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let limit = match r.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "page_size must be at most {MAX_PAGE}"
                )));
            }
        };
        let filter = JobFilter {
            schedule_id: (!r.schedule_id.is_empty())
                .then(|| id(&r.schedule_id, "schedule_id"))
                .transpose()?,
            state: (!r.state.is_empty())
                .then(|| JobState::parse(&r.state))
                .transpose()
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            before: (!r.page_token.is_empty())
                .then(|| id(&r.page_token, "page_token"))
                .transpose()?,
            limit,
        };
        authorize(&request, org)?;
        let jobs = self.app.list_jobs(org, filter).await?;
        let next_page_token = if jobs.len() == limit as usize {
            jobs.last()
                .map(|j| j.job_id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(|j| job_to_pb(j, None)).collect(),
            next_page_token,
        }))
    }
}

#[tonic::async_trait]
impl pb::agent_job_service_server::AgentJobService for SchedulingGrpc {
    async fn poll_jobs(
        &self,
        request: Request<pb::PollJobsRequest>,
    ) -> Result<Response<pb::PollJobsResponse>, Status> {
        let (agent, org) = agent_of(&request)?;
        let wait = Duration::from_secs(u64::from(request.get_ref().wait_seconds));
        let claimed = self.app.poll_jobs(agent, org, wait).await?;
        Ok(Response::new(pb::PollJobsResponse {
            claimed: claimed.map(Into::into),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (agent, org) = agent_of(&request)?;
        let r = request.get_ref();
        let job = id(&r.job_id, "job_id")?;
        let p = r.progress.unwrap_or_default();
        let progress = Progress {
            bytes_read: p.bytes_read,
            bytes_written: p.bytes_written,
            bytes_per_second: p.bytes_per_second,
        };
        let reply = self
            .app
            .heartbeat(agent, org, job, r.fencing_token, progress)
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            lease_expires_at: Some(to_timestamp(reply.lease_expires_at)),
            cancel_requested: reply.cancel_requested,
        }))
    }

    async fn complete_job(
        &self,
        mut request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let artifact = request.get_mut().artifact.take();
        let (agent, org) = agent_of(&request)?;
        let r = request.get_ref();
        let job = id(&r.job_id, "job_id")?;
        let artifact = artifact_from_pb(artifact)?;
        let job = self
            .app
            .complete_job(agent, org, job, r.fencing_token, artifact)
            .await?;
        Ok(Response::new(job_to_pb(job, None)))
    }

    async fn fail_job(
        &self,
        request: Request<pb::FailJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let (agent, org) = agent_of(&request)?;
        let r = request.get_ref();
        let job = id(&r.job_id, "job_id")?;
        let reason = text(&r.reason, "reason")?;
        let job = self
            .app
            .fail_job(agent, org, job, r.fencing_token, reason)
            .await?;
        Ok(Response::new(job_to_pb(job, None)))
    }

    async fn confirm_cancelled(
        &self,
        request: Request<pb::ConfirmCancelledRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let (agent, org) = agent_of(&request)?;
        let r = request.get_ref();
        let job = id(&r.job_id, "job_id")?;
        let job = self
            .app
            .confirm_cancelled(agent, org, job, r.fencing_token)
            .await?;
        Ok(Response::new(job_to_pb(job, None)))
    }
}
