//! Jobs: what users ask for (run now, restore, cancel, read), what agents do (poll, heartbeat,
//! complete, fail, confirm a cancellation), and what the scheduler does (fire due schedules,
//! expire leases, wake agents whose retries fell due).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use coffer_auth::ticket::JobTicket;
use coffer_db::TenantTx;
use coffer_eventstore::ExecuteError;
use coffer_types::{Actor, ActorKind, AgentId, AggregateId, OrgId};
use futures::StreamExt as _;
use secrecy::SecretString;

use super::{Error, Scheduling};
use crate::domain::database::DatabaseSpec;
use crate::domain::destination::Kind;
use crate::domain::job::{
    Artifact, Backoff, Fired, Job, JobCommand, JobError, JobKind, JobSpec, JobState, Trigger,
    backup_object_key, scheduled_job_id,
};
use crate::domain::schedule::{Schedule, ScheduleCommand};
use crate::domain::timing::Firing;
use crate::store::destinations::DestinationView;
use crate::store::{self, JobFilter, JobView, Lease, Progress};
use crate::tickets::Tickets;
use crate::wakeups::Wakeups;

/// Schedules one scheduler fires at once, each in its own transaction.
const FIRE_CONCURRENCY: usize = 8;

/// `[scheduler]`: timing of the scheduler, leases, retries and polls.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How often the scheduler looks for due schedules, expired leases and due retries.
    #[serde(with = "humantime_serde")]
    pub tick: StdDuration,
    /// How late past its fire time a run may start and still count as on time; later, it is
    /// missed and the schedule's missed-run policy applies.
    #[serde(with = "humantime_serde")]
    pub grace: StdDuration,
    /// How long a claim holds without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub lease: StdDuration,
    /// The first retry's wait; each later one doubles.
    #[serde(with = "humantime_serde")]
    pub retry_base: StdDuration,
    /// The longest retry wait.
    #[serde(with = "humantime_serde")]
    pub retry_max: StdDuration,
    /// The longest a `PollJobs` waits for a job.
    #[serde(with = "humantime_serde")]
    pub poll_max_wait: StdDuration,
    /// How long a job ticket lives (at most 5 minutes).
    #[serde(with = "humantime_serde")]
    pub ticket_lifetime: StdDuration,
    /// How often every schedule's retention is applied, besides after each successful
    /// backup (and once when the scheduler starts).
    #[serde(with = "humantime_serde")]
    pub retention_interval: StdDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tick: StdDuration::from_millis(250),
            grace: StdDuration::from_secs(300),
            lease: StdDuration::from_secs(60),
            retry_base: StdDuration::from_secs(30),
            retry_max: StdDuration::from_secs(3600),
            poll_max_wait: StdDuration::from_secs(30),
            ticket_lifetime: StdDuration::from_secs(300),
            retention_interval: StdDuration::from_secs(24 * 60 * 60),
        }
    }
}

impl Settings {
    /// Refuses settings that cannot work; names the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("tick", self.tick),
            ("lease", self.lease),
            ("retry_base", self.retry_base),
            ("poll_max_wait", self.poll_max_wait),
            ("ticket_lifetime", self.ticket_lifetime),
            ("retention_interval", self.retention_interval),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("scheduler.{key} must be greater than 0"));
        }
        if self.retry_max < self.retry_base {
            return Err("scheduler.retry_max must be at least scheduler.retry_base".into());
        }
        if self.ticket_lifetime > coffer_auth::ticket::MAX_LIFETIME {
            return Err("scheduler.ticket_lifetime must be at most 5m".into());
        }
        if self.lease < StdDuration::from_secs(2) {
            return Err("scheduler.lease must be at least 2s".into());
        }
        Ok(())
    }

    fn chrono(d: StdDuration) -> Duration {
        Duration::from_std(d).unwrap_or(Duration::MAX)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base: Self::chrono(self.retry_base),
            max: Self::chrono(self.retry_max),
        }
    }
}

/// What the job side of the service needs beyond the database.
#[derive(Debug)]
pub struct JobRuntime {
    /// Timing.
    pub settings: Settings,
    /// Wake-ups of long-polling agents.
    pub wakeups: Wakeups,
    /// The job-ticket signer.
    pub tickets: Tickets,
}

/// A job handed to its agent: everything it needs to run one attempt.
#[derive(Debug)]
pub struct ClaimedJob {
    /// The job as claimed.
    pub job: JobView,
    /// The claim's lease.
    pub lease: Lease,
    /// The database to dump or restore into.
    pub database: DatabaseSpec,
    /// For a restore: the backup's artifact.
    pub restore_artifact: Option<Artifact>,
    /// Where the backup goes (or comes from).
    pub destination: DestinationView,
    /// For a backup: the key its object must be written at (the completion must name it).
    pub object_key: Option<String>,
    /// The signed ticket for the credentials service (a bearer credential: never logged).
    pub ticket: SecretString,
}

/// What a heartbeat tells the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The lease now runs until.
    pub lease_expires_at: DateTime<Utc>,
    /// Stop: the job was cancelled.
    pub cancel_requested: bool,
}

impl From<ExecuteError<JobError>> for Error {
    fn from(e: ExecuteError<JobError>) -> Self {
        match e {
            ExecuteError::Rejected(JobError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(JobError::NotFound) => Error::NotFound("job"),
            ExecuteError::Rejected(e @ JobError::AlreadyExists) => {
                Error::AlreadyExists(e.to_string())
            }
            ExecuteError::Rejected(e @ JobError::StaleFencingToken { .. }) => {
                Error::FailedPrecondition(e.to_string())
            }
            ExecuteError::Rejected(e @ JobError::NoBackup(_)) => {
                Error::FailedPrecondition(e.to_string())
            }
            ExecuteError::Rejected(e @ JobError::WrongState(_)) => {
                Error::FailedPrecondition(e.to_string())
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

fn scheduler_actor() -> Actor {
    Actor {
        kind: ActorKind::Service,
        id: "scheduling".into(),
    }
}

fn agent_actor(agent: AgentId) -> Actor {
    Actor {
        kind: ActorKind::Agent,
        id: agent.to_string(),
    }
}

impl Scheduling {
    fn runtime(&self) -> Result<&Arc<JobRuntime>, Error> {
        self.jobs
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the job runtime is not configured".into()))
    }

    /// Creates a job asked for now (run now, restore) in `tx`, commits, and wakes its agent.
    async fn create_now(
        &self,
        mut tx: TenantTx,
        actor: &Actor,
        spec: JobSpec,
    ) -> Result<JobView, Error> {
        let runtime = self.runtime()?;
        let org = tx.org();
        let id = uuid::Uuid::now_v7();
        let agent = spec.agent_id;
        let command = JobCommand::CreateJob {
            not_before: spec.due_at,
            spec,
            fired: None,
        };
        self.store
            .execute_in::<Job>(&mut tx, AggregateId::from(id), actor, command)
            .await?;
        let job = store::job(&mut tx, id)
            .await?
            .expect("written in this transaction");
        tx.commit().await?;
        runtime.wakeups.wake(org, agent).await;
        Ok(job)
    }

    /// A backup of a schedule of `org`, now, outside its cron.
    pub async fn run_now(
        &self,
        actor: &Actor,
        org: OrgId,
        schedule: uuid::Uuid,
    ) -> Result<JobView, Error> {
        let mut tx = self.begin(org).await?;
        let view = store::schedule(&mut tx, schedule)
            .await?
            .ok_or(Error::NotFound("schedule"))?;
        let database = store::database(&mut tx, view.spec.database_id)
            .await?
            .ok_or(Error::Precondition(
                "the schedule's database no longer exists",
            ))?;
        let spec = JobSpec {
            kind: JobKind::Backup,
            trigger: Trigger::Manual,
            schedule_id: Some(schedule),
            database_id: view.spec.database_id,
            destination_id: view.spec.destination_id,
            agent_id: database.spec.agent_id,
            restore_of: None,
            due_at: Utc::now(),
            max_attempts: view.spec.max_attempts,
        };
        self.create_now(tx, actor, spec).await
    }

    /// A restore of backup job `backup` of `org` into database `database` (the backup's own
    /// database when `None`).
    pub async fn start_restore(
        &self,
        actor: &Actor,
        org: OrgId,
        backup: uuid::Uuid,
        database: Option<uuid::Uuid>,
    ) -> Result<JobView, Error> {
        let mut tx = self.begin(org).await?;
        let source = store::job(&mut tx, backup)
            .await?
            .ok_or(Error::NotFound("backup job"))?;
        if source.spec.kind != JobKind::Backup || source.artifact.is_none() {
            return Err(Error::Precondition(
                "backup_job_id must name a succeeded backup job",
            ));
        }
        if source.backup_deleted {
            return Err(Error::Precondition(
                "backup_job_id names a backup that retention deleted",
            ));
        }
        let target_id = database.unwrap_or(source.spec.database_id);
        let target = store::database(&mut tx, target_id)
            .await?
            .ok_or(Error::Precondition(
                "database_id names no database of this org",
            ))?;
        let spec = JobSpec {
            kind: JobKind::Restore,
            trigger: Trigger::Manual,
            schedule_id: None,
            database_id: target_id,
            destination_id: source.spec.destination_id,
            agent_id: target.spec.agent_id,
            restore_of: Some(backup),
            due_at: Utc::now(),
            max_attempts: 1,
        };
        self.create_now(tx, actor, spec).await
    }

    /// Cancels a job of `org`: at once if no agent holds it, else the agent is told at its next
    /// heartbeat.
    pub async fn cancel_job(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        reason: &str,
    ) -> Result<JobView, Error> {
        let mut tx = self.begin(org).await?;
        if store::job(&mut tx, id).await?.is_none() {
            return Err(Error::NotFound("job"));
        }
        let command = JobCommand::CancelJob {
            reason: reason.to_owned(),
        };
        let committed = self
            .store
            .execute_in::<Job>(&mut tx, AggregateId::from(id), actor, command)
            .await?;
        if committed.state.state == JobState::Cancelled {
            store::end_lease(&mut tx, id).await?;
        }
        let job = store::job(&mut tx, id).await?.expect("it exists");
        tx.commit().await?;
        Ok(job)
    }

    /// One job of `org`, with its last reported progress while held.
    pub async fn get_job(
        &self,
        org: OrgId,
        id: uuid::Uuid,
    ) -> Result<(JobView, Option<Progress>), Error> {
        let mut tx = self.begin(org).await?;
        let job = store::job(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("job"))?;
        let progress = store::progress(&mut tx, id).await?.map(|(p, _)| p);
        Ok((job, progress))
    }

    /// Jobs of `org`, newest first.
    pub async fn list_jobs(&self, org: OrgId, filter: JobFilter) -> Result<Vec<JobView>, Error> {
        let mut tx = self.begin(org).await?;
        Ok(store::jobs(&mut tx, &filter).await?)
    }

    /// Claims the oldest claimable job of `agent`, or waits up to `wait` (capped by the
    /// settings) for one to become claimable.
    pub async fn poll_jobs(
        &self,
        agent: AgentId,
        org: OrgId,
        wait: StdDuration,
    ) -> Result<Option<ClaimedJob>, Error> {
        let runtime = self.runtime()?.clone();
        let deadline = tokio::time::Instant::now() + wait.min(runtime.settings.poll_max_wait);
        let listener = runtime.wakeups.listen(agent);
        loop {
            // Registered before looking, so a wake-up between the look and the wait is kept.
            let notified = listener.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(claimed) = self.claim_next(&runtime, agent, org).await? {
                return Ok(Some(claimed));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn claim_next(
        &self,
        runtime: &JobRuntime,
        agent: AgentId,
        org: OrgId,
    ) -> Result<Option<ClaimedJob>, Error> {
        let mut tx = self.begin(org).await?;
        let now = Utc::now();
        let Some(id) = store::next_claimable(&mut tx, agent, now).await? else {
            return Ok(None);
        };
        let lease = Settings::chrono(runtime.settings.lease);
        let command = JobCommand::ClaimJob { agent, now, lease };
        let committed = self
            .store
            .execute_in::<Job>(&mut tx, AggregateId::from(id), &agent_actor(agent), command)
            .await?;
        let lease = Lease {
            fencing_token: committed.state.fencing_token,
            expires_at: now + lease,
        };
        store::start_lease(&mut tx, org, id, agent, lease).await?;
        let job = store::job(&mut tx, id)
            .await?
            .expect("claimed in this transaction");
        let Some(database) = store::database(&mut tx, job.spec.database_id).await? else {
            // Removed since the job was created: the attempt cannot run.
            tx.rollback().await?;
            self.fail_unrunnable(
                agent,
                org,
                id,
                "the job's database was removed from the registry",
            )
            .await?;
            return Ok(None);
        };
        let Some(destination) =
            store::destinations::destination(&mut tx, job.spec.destination_id).await?
        else {
            tx.rollback().await?;
            self.fail_unrunnable(agent, org, id, "the job's destination was removed")
                .await?;
            return Ok(None);
        };
        let restore_artifact = match job.spec.restore_of {
            None => None,
            Some(backup) => store::job(&mut tx, backup).await?.and_then(|b| b.artifact),
        };
        // The credentials the attempt needs: the database password, and the bucket's key.
        let mut vault_refs = vec![database.spec.password_vault_ref.to_string()];
        if let Kind::S3(s3) = &destination.spec.kind {
            vault_refs.push(s3.access_key_vault_ref.to_string());
        }
        let ticket = JobTicket::new(
            id,
            job.attempt,
            agent,
            org,
            vault_refs,
            std::time::SystemTime::now(),
            runtime.tickets.lifetime(),
        );
        let ticket = match &restore_artifact {
            Some(a) => ticket.with_file_key_headers(vec![a.age_header_sha256.clone()]),
            None => ticket,
        };
        let ticket = runtime
            .tickets
            .issue(ticket)
            .map_err(|e| Error::Unavailable(leak_reason(e).into()))?;
        tx.commit().await?;
        tracing::info!(%org, job_id = %id, %agent, attempt = job.attempt, "job claimed");
        let object_key = (job.spec.kind == JobKind::Backup)
            .then(|| backup_object_key(id, &job.spec, job.attempt));
        Ok(Some(ClaimedJob {
            object_key,
            job,
            lease,
            database: database.spec,
            restore_artifact,
            destination,
            ticket: SecretString::from(ticket),
        }))
    }

    /// Claims and fails at once a job that cannot run, so it does not block its agent.
    async fn fail_unrunnable(
        &self,
        agent: AgentId,
        org: OrgId,
        id: uuid::Uuid,
        reason: &str,
    ) -> Result<(), Error> {
        let runtime = self.runtime()?;
        let mut tx = self.begin(org).await?;
        let now = Utc::now();
        let actor = scheduler_actor();
        let claim = JobCommand::ClaimJob {
            agent,
            now,
            lease: Settings::chrono(runtime.settings.lease),
        };
        let claimed = self
            .store
            .execute_in::<Job>(&mut tx, AggregateId::from(id), &actor, claim)
            .await?;
        let fail = JobCommand::FailJob {
            fencing_token: claimed.state.fencing_token,
            reason: reason.to_owned(),
            now,
            // No retry helps: the database is gone.
            backoff: runtime.settings.backoff(),
        };
        let mut state = self
            .store
            .execute_in::<Job>(&mut tx, AggregateId::from(id), &actor, fail)
            .await?
            .state;
        while state.state == JobState::Pending {
            let claim = JobCommand::ClaimJob {
                agent,
                now: state.not_before.unwrap_or(now),
                lease: Settings::chrono(runtime.settings.lease),
            };
            let claimed = self
                .store
                .execute_in::<Job>(&mut tx, AggregateId::from(id), &actor, claim)
                .await?;
            let fail = JobCommand::FailJob {
                fencing_token: claimed.state.fencing_token,
                reason: reason.to_owned(),
                now,
                backoff: runtime.settings.backoff(),
            };
            state = self
                .store
                .execute_in::<Job>(&mut tx, AggregateId::from(id), &actor, fail)
                .await?
                .state;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Loads a job `agent` reports on; another agent's job (or another org's) is not found.
    async fn agents_job(
        tx: &mut TenantTx,
        agent: AgentId,
        id: uuid::Uuid,
    ) -> Result<JobView, Error> {
        match store::job(tx, id).await? {
            Some(job) if job.spec.agent_id == agent => Ok(job),
            _ => Err(Error::NotFound("job")),
        }
    }

    /// A heartbeat of claim `fencing_token`: the job is running, the lease extends, progress is
    /// recorded; the reply says whether to stop.
    pub async fn heartbeat(
        &self,
        agent: AgentId,
        org: OrgId,
        id: uuid::Uuid,
        fencing_token: u64,
        progress: Progress,
    ) -> Result<HeartbeatReply, Error> {
        let runtime = self.runtime()?;
        let mut tx = self.begin(org).await?;
        Self::agents_job(&mut tx, agent, id).await?;
        let committed = self
            .store
            .execute_in::<Job>(
                &mut tx,
                AggregateId::from(id),
                &agent_actor(agent),
                JobCommand::StartJob { fencing_token },
            )
            .await?;
        let now = Utc::now();
        let until = now + Settings::chrono(runtime.settings.lease);
        if !store::extend_lease(&mut tx, id, fencing_token, until, progress, now).await? {
            return Err(Error::FailedPrecondition(format!(
                "the lease of fencing_token {fencing_token} has ended"
            )));
        }
        tx.commit().await?;
        Ok(HeartbeatReply {
            lease_expires_at: until,
            cancel_requested: committed.state.cancel_requested,
        })
    }

    /// Runs an agent's report on its job and ends the claim's lease.
    async fn report(
        &self,
        agent: AgentId,
        org: OrgId,
        id: uuid::Uuid,
        command: JobCommand,
    ) -> Result<JobView, Error> {
        let mut tx = self.begin(org).await?;
        Self::agents_job(&mut tx, agent, id).await?;
        let committed = self
            .store
            .execute_in::<Job>(&mut tx, AggregateId::from(id), &agent_actor(agent), command)
            .await?;
        store::end_lease(&mut tx, id).await?;
        let job = store::job(&mut tx, id).await?.expect("it exists");
        tx.commit().await?;
        // A new backup may push older ones out: apply the schedule's retention now, off the
        // agent's request (its outcome is logged and recorded as events, and the daily sweep
        // retries what fails).
        if let (JobState::Succeeded, JobKind::Backup, Some(schedule)) =
            (job.state, job.spec.kind, job.spec.schedule_id)
        {
            let app = self.clone();
            tokio::spawn(async move {
                if let Err(e) = app.apply_retention(org, schedule, Utc::now()).await {
                    tracing::warn!(error = %e, %org, schedule_id = %schedule, "retention after a backup failed");
                }
            });
        }
        if committed.state.state == JobState::Pending {
            // A retry: the scheduler wakes the agent when its backoff ends.
            tracing::info!(%org, job_id = %id, attempt = committed.state.attempt, "job attempt failed; retry scheduled");
        }
        Ok(job)
    }

    /// The agent finished the job; a backup's completion carries its artifact.
    pub async fn complete_job(
        &self,
        agent: AgentId,
        org: OrgId,
        id: uuid::Uuid,
        fencing_token: u64,
        artifact: Option<Artifact>,
    ) -> Result<JobView, Error> {
        let command = JobCommand::CompleteJob {
            job_id: id,
            fencing_token,
            artifact,
        };
        self.report(agent, org, id, command).await
    }

    /// The agent's attempt failed; the job retries after a backoff or fails.
    pub async fn fail_job(
        &self,
        agent: AgentId,
        org: OrgId,
        id: uuid::Uuid,
        fencing_token: u64,
        reason: &str,
    ) -> Result<JobView, Error> {
        let runtime = self.runtime()?;
        let command = JobCommand::FailJob {
            fencing_token,
            reason: reason.to_owned(),
            now: Utc::now(),
            backoff: runtime.settings.backoff(),
        };
        self.report(agent, org, id, command).await
    }

    /// The agent stopped after a cancellation request.
    pub async fn confirm_cancelled(
        &self,
        agent: AgentId,
        org: OrgId,
        id: uuid::Uuid,
        fencing_token: u64,
    ) -> Result<JobView, Error> {
        let command = JobCommand::ConfirmCancelled { fencing_token };
        self.report(agent, org, id, command).await
    }

    /// Fires every schedule due at `now` (each in its org's transaction, a few at a time,
    /// skipping schedules another scheduler is firing) and returns how many jobs it created.
    /// Due schedules are listed `limit` at a time until none is left (at most 100 pages per
    /// call, so a schedule that keeps failing cannot hold the tick).
    pub async fn fire_due(&self, now: DateTime<Utc>, limit: i32) -> Result<usize, Error> {
        let runtime = self.runtime()?.clone();
        let grace = Settings::chrono(runtime.settings.grace);
        let mut created = 0;
        for _ in 0..100 {
            let due = store::due(self.store.db().pool(), now, limit).await?;
            let listed = due.len();
            let fired: Vec<_> = futures::stream::iter(due)
                .map(|(org, schedule, due_at)| async move {
                    let fired = self.fire_one(org, schedule, due_at, now, grace).await;
                    (org, schedule, fired)
                })
                .buffer_unordered(FIRE_CONCURRENCY)
                .collect()
                .await;
            for (org, schedule, fired) in fired {
                match fired {
                    Ok(Some(agent)) => {
                        created += 1;
                        runtime.wakeups.wake(org, agent).await;
                    }
                    Ok(None) => {}
                    // Another scheduler created the same job first: exactly one wins.
                    Err(Error::Store(coffer_eventstore::Error::Conflict { .. }))
                    | Err(Error::AlreadyExists(_)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, %org, schedule_id = %schedule, "cannot fire a schedule");
                    }
                }
            }
            if listed < usize::try_from(limit).unwrap_or(0) {
                break;
            }
        }
        Ok(created)
    }

    /// Fires one due schedule: its run becomes a job whose id is derived from (schedule, due
    /// time), or, after downtime under the skip policy, the missed runs are recorded as skipped.
    /// Returns the agent to wake.
    async fn fire_one(
        &self,
        org: OrgId,
        schedule: uuid::Uuid,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
        grace: Duration,
    ) -> Result<Option<AgentId>, Error> {
        let mut tx = self.begin(org).await?;
        // Another scheduler firing it holds the row: leave it to that one.
        if !store::lock_due(&mut tx, schedule, now).await? {
            return Ok(None);
        }
        let Some(view) = store::schedule(&mut tx, schedule).await? else {
            return Ok(None);
        };
        // Fired meanwhile (the listing was read before that commit): nothing is due now.
        if view.next_due_at != Some(due_at) || view.paused {
            return Ok(None);
        }
        let actor = scheduler_actor();
        let agent = match view.spec.timing.fire(schedule, due_at, now, grace) {
            Firing::Run {
                due_at,
                skipped,
                next_due_at,
            } => {
                let Some(database) = store::database(&mut tx, view.spec.database_id).await? else {
                    tracing::warn!(%org, schedule_id = %schedule, "the schedule's database was removed: its runs cannot start");
                    return Ok(None);
                };
                let agent = database.spec.agent_id;
                let job_id = scheduled_job_id(schedule, due_at);
                let spec = JobSpec {
                    kind: JobKind::Backup,
                    trigger: Trigger::Schedule,
                    schedule_id: Some(schedule),
                    database_id: view.spec.database_id,
                    destination_id: view.spec.destination_id,
                    agent_id: agent,
                    restore_of: None,
                    due_at,
                    max_attempts: view.spec.max_attempts,
                };
                let command = JobCommand::CreateJob {
                    spec,
                    not_before: now,
                    fired: Some(Fired {
                        skipped,
                        next_due_at,
                    }),
                };
                self.store
                    .execute_in::<Job>(&mut tx, AggregateId::from(job_id), &actor, command)
                    .await?;
                tracing::info!(%org, schedule_id = %schedule, %job_id, %due_at, skipped, "schedule fired");
                Some(agent)
            }
            Firing::Skip {
                first,
                last,
                count,
                next_due_at,
            } => {
                let command = ScheduleCommand::SkipRuns {
                    first_due_at: first,
                    last_due_at: last,
                    count,
                    next_due_at,
                };
                self.store
                    .execute_in::<Schedule>(&mut tx, AggregateId::from(schedule), &actor, command)
                    .await?;
                tracing::info!(%org, schedule_id = %schedule, count, "missed runs skipped as the schedule's policy says");
                None
            }
        };
        tx.commit().await?;
        Ok(agent)
    }

    /// Requeues (or times out) every job whose lease ran out by `now`.
    pub async fn expire_leases(&self, now: DateTime<Utc>, limit: i32) -> Result<usize, Error> {
        let runtime = self.runtime()?.clone();
        let mut expired = 0;
        for (org, job, fencing_token) in
            store::expired_leases(self.store.db().pool(), now, limit).await?
        {
            let result: Result<Option<AgentId>, Error> = async {
                let mut tx = self.begin(org).await?;
                let command = JobCommand::ExpireLease { fencing_token, now };
                let committed = self
                    .store
                    .execute_in::<Job>(&mut tx, AggregateId::from(job), &scheduler_actor(), command)
                    .await;
                let agent = match committed {
                    Ok(c) => (c.state.state == JobState::Pending)
                        .then(|| c.state.spec.map(|s| s.agent_id))
                        .flatten(),
                    // The claim ended meanwhile (reported, or a newer claim): just drop the row
                    // if it is still this claim's.
                    Err(ExecuteError::Rejected(_)) => None,
                    Err(e) => return Err(e.into()),
                };
                sqlx::query("DELETE FROM job_leases WHERE job_id = $1 AND fencing_token = $2")
                    .bind(job)
                    .bind(i64::try_from(fencing_token).unwrap_or(i64::MAX))
                    .execute(tx.conn())
                    .await?;
                tx.commit().await?;
                Ok(agent)
            }
            .await;
            match result {
                Ok(agent) => {
                    expired += 1;
                    tracing::info!(%org, job_id = %job, "job lease expired");
                    if let Some(agent) = agent {
                        runtime.wakeups.wake(org, agent).await;
                    }
                }
                Err(Error::Store(coffer_eventstore::Error::Conflict { .. })) => {}
                Err(e) => tracing::warn!(error = %e, %org, job_id = %job, "cannot expire a lease"),
            }
        }
        Ok(expired)
    }

    /// Wakes the agents of jobs that became claimable in `(after, upto]` (retries whose backoff
    /// ended).
    pub async fn wake_ready(&self, after: DateTime<Utc>, upto: DateTime<Utc>) -> Result<(), Error> {
        let runtime = self.runtime()?;
        for (org, agent) in store::ready_agents(self.store.db().pool(), after, upto, 10_000).await?
        {
            runtime.wakeups.wake(org, agent).await;
        }
        Ok(())
    }

    /// The scheduler: every tick, fires due schedules, expires leases and wakes agents whose
    /// retries fell due, until dropped. Every replica runs it; the per-schedule row lock and the
    /// aggregate's version make each run fire once.
    pub async fn run_scheduler(self) {
        let Ok(runtime) = self.runtime().cloned() else {
            return;
        };
        let mut ticker = tokio::time::interval(runtime.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut woke_upto = Utc::now() - Duration::minutes(1);
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            ticker.tick().await;
            let now = Utc::now();
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + runtime.settings.retention_interval;
                let app = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = app.sweep_retention(Utc::now()).await {
                        tracing::warn!(error = %e, "scheduler: retention sweep failed");
                    }
                });
            }
            if let Err(e) = self.fire_due(now, 1000).await {
                tracing::warn!(error = %e, "scheduler: cannot list due schedules");
            }
            if let Err(e) = self.expire_leases(now, 1000).await {
                tracing::warn!(error = %e, "scheduler: cannot list expired leases");
            }
            match self.wake_ready(woke_upto, now).await {
                Ok(()) => woke_upto = now,
                Err(e) => tracing::warn!(error = %e, "scheduler: cannot list ready jobs"),
            }
        }
    }
}

/// A ticket-signing failure, without detail that could matter to an attacker.
fn leak_reason(e: crate::tickets::Error) -> &'static str {
    tracing::error!(error = %e, "cannot sign a job ticket");
    "job tickets cannot be signed right now"
}
