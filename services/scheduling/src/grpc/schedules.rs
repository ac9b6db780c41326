//! `ScheduleService`.

use coffer_auth::grpc::authorize;
use coffer_proto::request::{id, text};
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::time::to_timestamp;
use coffer_types::OrgId;
use tonic::{Request, Response, Status};

use super::SchedulingGrpc;
use crate::domain::retention::Retention;
use crate::domain::schedule::ScheduleFields;
use crate::store::ScheduleView;

impl TryFrom<Option<pb::ScheduleFields>> for ScheduleFields {
    type Error = Status;

    fn try_from(fields: Option<pb::ScheduleFields>) -> Result<Self, Status> {
        let f = fields.ok_or_else(|| Status::invalid_argument("fields is required"))?;
        let r = f.retention.unwrap_or_default();
        Ok(ScheduleFields {
            name: text(&f.name, "name")?.to_owned(),
            database_id: text(&f.database_id, "database_id")?.to_owned(),
            destination_id: text(&f.destination_id, "destination_id")?.to_owned(),
            cron: text(&f.cron, "cron")?.to_owned(),
            timezone: text(&f.timezone, "timezone")?.to_owned(),
            jitter_seconds: f.jitter_seconds,
            missed_runs: text(&f.missed_runs, "missed_runs")?.to_owned(),
            retention: Retention {
                keep_last: r.keep_last,
                daily: r.daily,
                weekly: r.weekly,
                monthly: r.monthly,
                yearly: r.yearly,
            },
            max_attempts: f.max_attempts,
        })
    }
}

impl From<ScheduleView> for pb::Schedule {
    fn from(s: ScheduleView) -> Self {
        let r = s.spec.retention;
        Self {
            org_id: s.org_id.to_string(),
            schedule_id: s.schedule_id.to_string(),
            fields: Some(pb::ScheduleFields {
                name: s.spec.name,
                database_id: s.spec.database_id.to_string(),
                destination_id: s.spec.destination_id.to_string(),
                cron: s.spec.timing.cron().to_owned(),
                timezone: s.spec.timing.zone().name().to_owned(),
                jitter_seconds: s.spec.timing.jitter_secs(),
                missed_runs: s.spec.timing.missed_runs().as_str().to_owned(),
                retention: Some(pb::Retention {
                    keep_last: r.keep_last,
                    daily: r.daily,
                    weekly: r.weekly,
                    monthly: r.monthly,
                    yearly: r.yearly,
                }),
                max_attempts: s.spec.max_attempts,
            }),
            paused: s.paused,
            next_due_at: s.next_due_at.map(to_timestamp),
            next_fire_at: s.next_fire_at.map(to_timestamp),
            last_due_at: s.last_due_at.map(to_timestamp),
            version: s.version,
            created_at: Some(to_timestamp(s.created_at)),
            updated_at: Some(to_timestamp(s.updated_at)),
        }
    }
}

/// The org and schedule a request names, once the caller may act in the org.
fn target<T>(
    request: &Request<T>,
    org_id: &str,
    schedule_id: &str,
) -> Result<(OrgId, uuid::Uuid, coffer_types::Actor), Status> {
    let org: OrgId = id(org_id, "org_id")?;
    let schedule = id(schedule_id, "schedule_id")?;
    let actor = authorize(request, org)?.actor();
    Ok((org, schedule, actor))
}

#[tonic::async_trait]
impl pb::schedule_service_server::ScheduleService for SchedulingGrpc {
    async fn create_schedule(
        &self,
        mut request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let fields = request.get_mut().fields.take();
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        let actor = authorize(&request, org)?.actor();
        let fields = ScheduleFields::try_from(fields)?;
        let created = self.app.create_schedule(&actor, org, fields).await?;
        Ok(Response::new(created.into()))
    }

    async fn change_schedule(
        &self,
        mut request: Request<pb::ChangeScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let fields = request.get_mut().fields.take();
        let r = request.get_ref();
        let (org, schedule, actor) = target(&request, &r.org_id, &r.schedule_id)?;
        let fields = ScheduleFields::try_from(fields)?;
        let changed = self
            .app
            .change_schedule(&actor, org, schedule, fields)
            .await?;
        Ok(Response::new(changed.into()))
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = request.get_ref();
        let (org, schedule, _) = target(&request, &r.org_id, &r.schedule_id)?;
        Ok(Response::new(
            self.app.get_schedule(org, schedule).await?.into(),
        ))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let schedules = self.app.list_schedules(org).await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.into_iter().map(Into::into).collect(),
        }))
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = request.get_ref();
        let (org, schedule, actor) = target(&request, &r.org_id, &r.schedule_id)?;
        let paused = self.app.pause_schedule(&actor, org, schedule).await?;
        Ok(Response::new(paused.into()))
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = request.get_ref();
        let (org, schedule, actor) = target(&request, &r.org_id, &r.schedule_id)?;
        let resumed = self.app.resume_schedule(&actor, org, schedule).await?;
        Ok(Response::new(resumed.into()))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let r = request.get_ref();
        let (org, schedule, actor) = target(&request, &r.org_id, &r.schedule_id)?;
        let reason = text(&r.reason, "reason")?;
        self.app
            .delete_schedule(&actor, org, schedule, reason)
            .await?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }
}
