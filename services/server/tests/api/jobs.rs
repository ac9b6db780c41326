//! Schedules and jobs: cron firing exactly once per due time (also with two schedulers), the
//! missed-run policy after downtime, long-polling agents woken within a second, leases,
//! heartbeats and fencing tokens, retries with backoff, run-now and cancel, signed job tickets,
//! and bad input refused by field.

use std::time::{Duration, Instant};

use coffer_auth::ticket::TicketVerifier;
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::scheduling::v1::agent_job_service_client::AgentJobServiceClient;
use coffer_proto::scheduling::v1::database_service_client::DatabaseServiceClient;
use coffer_proto::scheduling::v1::job_service_client::JobServiceClient;
use coffer_proto::scheduling::v1::schedule_service_client::ScheduleServiceClient;
use coffer_proto::time::from_timestamp;
use coffer_server::startup::Target;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{Authed, TestApp, TestOrg, spawn_tls_app, spawn_tls_app_with};

pub(crate) type Agent = AgentJobServiceClient<Channel>;

/// An enrolled agent of `org` speaking mTLS, once scheduling knows it.
pub(crate) async fn agent(app: &TestApp, org: &TestOrg) -> (String, Agent) {
    let (id, channel) = agent_channel(app, org).await;
    (id, AgentJobServiceClient::new(channel))
}

/// An enrolled agent of `org` and its mTLS channel, once scheduling knows it.
async fn agent_channel(app: &TestApp, org: &TestOrg) -> (String, Channel) {
    let dir = tempfile::tempdir().unwrap();
    let (csr, key) = crate::agents::csr_and_key(dir.path(), "EC");
    let e = crate::agents::enroll(app, &crate::agents::new_token(app, org).await, &csr)
        .await
        .unwrap();
    crate::scheduling::seen_by_scheduling(app, &e.agent_id, "enrolled_at").await;
    let chain = format!("{}{}", e.certificate_pem, e.intermediate_pem);
    let channel = app.agent_channel(&chain, &key).await;
    (e.agent_id, channel)
}

struct Setup {
    org: TestOrg,
    destination: String,
    agent_id: String,
    agent: Agent,
    database: pb::Database,
    schedules: ScheduleServiceClient<Authed>,
    jobs: JobServiceClient<Authed>,
}

async fn setup(app: &TestApp, name: &str) -> Setup {
    let org = app.new_org(name).await;
    let (agent_id, agent) = agent(app, &org).await;
    let database = DatabaseServiceClient::new(app.authed(&org.owner_key).await)
        .register_database(pb::RegisterDatabaseRequest {
            org_id: org.org.to_string(),
            fields: Some(crate::scheduling::fields(org.org, &agent_id, "orders")),
        })
        .await
        .unwrap()
        .into_inner();
    let (destination, _) = app.local_destination(&org).await;
    Setup {
        destination,
        schedules: ScheduleServiceClient::new(app.authed(&org.owner_key).await),
        jobs: JobServiceClient::new(app.authed(&org.owner_key).await),
        org,
        agent_id,
        agent,
        database,
    }
}

impl Setup {
    fn fields(&self, name: &str, cron: &str) -> pb::ScheduleFields {
        pb::ScheduleFields {
            name: name.into(),
            database_id: self.database.database_id.clone(),
            destination_id: self.destination.clone(),
            cron: cron.into(),
            timezone: "Europe/Berlin".into(),
            ..Default::default()
        }
    }

    async fn create(&mut self, fields: pb::ScheduleFields) -> Result<pb::Schedule, tonic::Status> {
        self.schedules
            .create_schedule(pb::CreateScheduleRequest {
                org_id: self.org.org.to_string(),
                fields: Some(fields),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn poll(&mut self, wait: u32) -> Option<pb::ClaimedJob> {
        self.agent
            .poll_jobs(pb::PollJobsRequest { wait_seconds: wait })
            .await
            .unwrap()
            .into_inner()
            .claimed
    }

    async fn job(&mut self, id: &str) -> pb::Job {
        self.jobs
            .get_job(pb::GetJobRequest {
                org_id: self.org.org.to_string(),
                job_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn jobs_of(&mut self, schedule: &str) -> Vec<pb::Job> {
        self.jobs
            .list_jobs(pb::ListJobsRequest {
                org_id: self.org.org.to_string(),
                schedule_id: schedule.into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .jobs
    }

    async fn pause(&mut self, schedule: &str) {
        self.schedules
            .pause_schedule(pb::PauseScheduleRequest {
                org_id: self.org.org.to_string(),
                schedule_id: schedule.into(),
            })
            .await
            .unwrap();
    }
}

/// An artifact for the backup `claimed`, at the key its claim named.
pub(crate) fn artifact(claimed: &pb::ClaimedJob) -> pb::Artifact {
    pb::Artifact {
        object_key: claimed.object_key.clone(),
        size_bytes: 4096,
        sha256: "a".repeat(64),
        recipient: "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqysz7s4k5".into(),
        age_header_sha256: "b".repeat(64),
        dump_bytes: 4096,
    }
}

/// The job-ticket keys scheduling published, as the credentials service reads them.
async fn ticket_verifier(app: &TestApp) -> TicketVerifier {
    let store = app.js.get_key_value(&app.keys_bucket).await.unwrap();
    let raw = store
        .get(coffer_auth::published::TICKET_KEYS_KEY)
        .await
        .unwrap()
        .expect("scheduling published its ticket keys");
    TicketVerifier::new(&serde_json::from_slice(&raw).unwrap())
}

#[tokio::test]
async fn a_due_run_reaches_a_long_polling_agent_within_a_second_with_a_ticket_for_that_attempt() {
    let app = spawn_tls_app().await;
    let mut acme = setup(&app, "Acme").await;
    // Every 5 seconds; the agent is already waiting when the run falls due.
    let schedule = acme
        .create(acme.fields("often", "*/5 * * * * *"))
        .await
        .unwrap();
    let waiting = Instant::now();
    let claimed = acme.poll(10).await.expect("a job within the poll");
    let received = chrono::Utc::now();
    let job = claimed.job.clone().unwrap();
    let due = from_timestamp(job.due_at.as_ref().unwrap()).unwrap();
    let late = (received - due).to_std().unwrap_or_default();
    assert!(
        late < Duration::from_secs(1),
        "the job reached the agent {late:?} after its due time"
    );
    assert!(waiting.elapsed() <= Duration::from_secs(6));
    assert_eq!(job.schedule_id, schedule.schedule_id);
    assert_eq!(
        (job.kind.as_str(), job.trigger.as_str()),
        ("backup", "schedule")
    );
    assert_eq!((job.state.as_str(), job.attempt), ("claimed", 1));
    assert_eq!(claimed.fencing_token, 1);
    assert_eq!(
        claimed.database.as_ref().unwrap().password_vault_ref,
        acme.database.password_vault_ref
    );
    assert!(
        !format!("{claimed:?}").contains(&claimed.ticket),
        "the ticket never prints"
    );

    // The ticket verifies against the published key and names exactly this attempt.
    let ticket = ticket_verifier(&app)
        .await
        .verify(&claimed.ticket, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(ticket.job_id.to_string(), job.job_id);
    assert_eq!(ticket.attempt, 1);
    assert_eq!(ticket.agent_id.to_string(), acme.agent_id);
    assert_eq!(ticket.org_id, acme.org.org);
    assert_eq!(
        ticket.vault_refs,
        vec![acme.database.password_vault_ref.clone()]
    );
    assert!(
        ticket.file_key_headers.is_empty(),
        "a backup's ticket opens no backup"
    );
    assert!(ticket.exp - ticket.iat <= 300);
}

#[tokio::test]
async fn a_job_runs_claimed_running_succeeded_and_reports_need_the_current_fencing_token() {
    let app = spawn_tls_app().await;
    let mut acme = setup(&app, "Acme").await;
    let schedule = acme
        .create(acme.fields("manual", "0 3 * * *"))
        .await
        .unwrap();
    let job = acme
        .jobs
        .run_now(pb::RunNowRequest {
            org_id: acme.org.org.to_string(),
            schedule_id: schedule.schedule_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (job.state.as_str(), job.trigger.as_str()),
        ("pending", "manual")
    );
    let claimed = acme.poll(5).await.unwrap();
    let id = claimed.job.as_ref().unwrap().job_id.clone();
    assert_eq!(id, job.job_id);
    let token = claimed.fencing_token;

    let beat = acme
        .agent
        .heartbeat(pb::HeartbeatRequest {
            job_id: id.clone(),
            fencing_token: token,
            progress: Some(pb::Progress {
                bytes_read: 1000,
                bytes_written: 400,
                bytes_per_second: 200,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!beat.cancel_requested);
    let running = acme.job(&id).await;
    assert_eq!(running.state, "running");
    assert_eq!(running.progress.unwrap().bytes_written, 400);

    // A completion without its artifact, or with a stale token, changes nothing.
    let missing = acme
        .agent
        .complete_job(pb::CompleteJobRequest {
            job_id: id.clone(),
            fencing_token: token,
            artifact: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().starts_with("artifact "),
        "{}",
        missing.message()
    );
    let stale = acme
        .agent
        .complete_job(pb::CompleteJobRequest {
            job_id: id.clone(),
            fencing_token: token + 1,
            artifact: Some(artifact(&claimed)),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains("fencing_token"),
        "{}",
        stale.message()
    );
    let bad_digest = acme
        .agent
        .complete_job(pb::CompleteJobRequest {
            job_id: id.clone(),
            fencing_token: token,
            artifact: Some(pb::Artifact {
                sha256: "nope".into(),
                ..artifact(&claimed)
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_digest.code(), Code::InvalidArgument);
    assert!(bad_digest.message().starts_with("artifact.sha256"));
    // Only the key the claim named: retention later deletes what completions record.
    let elsewhere = acme
        .agent
        .complete_job(pb::CompleteJobRequest {
            job_id: id.clone(),
            fencing_token: token,
            artifact: Some(pb::Artifact {
                object_key: "other/precious.dump".into(),
                ..artifact(&claimed)
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::InvalidArgument);
    assert!(
        elsewhere
            .message()
            .starts_with("artifact.object_key must be the key the claim named"),
        "{}",
        elsewhere.message()
    );
    assert_eq!(acme.job(&id).await.state, "running");

    let done = acme
        .agent
        .complete_job(pb::CompleteJobRequest {
            job_id: id.clone(),
            fencing_token: token,
            artifact: Some(artifact(&claimed)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, "succeeded");
    assert_eq!(done.artifact.unwrap(), artifact(&claimed));
    assert!(done.finished_at.is_some());
    let again = acme
        .agent
        .heartbeat(pb::HeartbeatRequest {
            job_id: id,
            fencing_token: token,
            progress: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn an_expired_lease_requeues_the_job_as_the_next_attempt_and_fences_out_the_old_claim() {
    let app = spawn_tls_app().await;
    let mut acme = setup(&app, "Acme").await;
    let fields = pb::ScheduleFields {
        max_attempts: 2,
        ..acme.fields("leases", "0 3 * * *")
    };
    let schedule = acme.create(fields).await.unwrap();
    acme.jobs
        .run_now(pb::RunNowRequest {
            org_id: acme.org.org.to_string(),
            schedule_id: schedule.schedule_id.clone(),
        })
        .await
        .unwrap();
    let first = acme.poll(5).await.unwrap();
    // No heartbeat: the 3 s lease runs out, the scheduler requeues it and wakes the agent.
    let second = acme.poll(10).await.expect("the requeued job");
    let job = second.job.clone().unwrap();
    assert_eq!(job.job_id, first.job.as_ref().unwrap().job_id);
    assert_eq!(job.attempt, 2);
    assert!(second.fencing_token > first.fencing_token);
    let stale = acme
        .agent
        .fail_job(pb::FailJobRequest {
            job_id: job.job_id.clone(),
            fencing_token: first.fencing_token,
            reason: "late report".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert_eq!(acme.job(&job.job_id).await.state, "claimed");
    // The second ticket is for attempt 2 only.
    let ticket = ticket_verifier(&app)
        .await
        .verify(&second.ticket, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(ticket.attempt, 2);
    // The last attempt's lease running out times the job out.
    coffer_testkit::eventually("the job times out", Duration::from_secs(10), || {
        let mut jobs = acme.jobs.clone();
        let request = pb::GetJobRequest {
            org_id: acme.org.org.to_string(),
            job_id: job.job_id.clone(),
        };
        async move {
            let job = jobs.get_job(request).await.unwrap().into_inner();
            (job.state == "timed_out").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_failed_attempt_retries_after_its_backoff_until_the_attempts_are_spent() {
    let app = spawn_tls_app().await;
    let mut acme = setup(&app, "Acme").await;
    let fields = pb::ScheduleFields {
        max_attempts: 2,
        ..acme.fields("retries", "0 3 * * *")
    };
    let schedule = acme.create(fields).await.unwrap();
    acme.jobs
        .run_now(pb::RunNowRequest {
            org_id: acme.org.org.to_string(),
            schedule_id: schedule.schedule_id.clone(),
        })
        .await
        .unwrap();
    let first = acme.poll(5).await.unwrap();
    let id = first.job.as_ref().unwrap().job_id.clone();
    let failed = acme
        .agent
        .fail_job(pb::FailJobRequest {
            job_id: id.clone(),
            fencing_token: first.fencing_token,
            reason: "connection refused".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((failed.state.as_str(), failed.attempt), ("pending", 2));
    assert_eq!(failed.reason, "connection refused");
    let retry_at = from_timestamp(failed.not_before.as_ref().unwrap()).unwrap();
    let failed_at = from_timestamp(failed.updated_at.as_ref().unwrap()).unwrap();
    let backoff = (retry_at - failed_at).to_std().unwrap();
    assert!(
        backoff >= Duration::from_millis(900) && backoff <= Duration::from_millis(1100),
        "the first retry waits retry_base (1 s): {backoff:?}"
    );
    let second = acme.poll(10).await.expect("the retry");
    assert_eq!(second.job.as_ref().unwrap().attempt, 2);
    assert!(
        chrono::Utc::now() >= retry_at,
        "not before its backoff ended"
    );
    let done = acme
        .agent
        .fail_job(pb::FailJobRequest {
            job_id: id,
            fencing_token: second.fencing_token,
            reason: "still refused".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.state.as_str(), done.attempt), ("failed", 2));
}

#[tokio::test]
async fn cancel_stops_a_pending_job_at_once_and_a_held_one_through_its_agent() {
    let app = spawn_tls_app().await;
    let mut acme = setup(&app, "Acme").await;
    let schedule = acme
        .create(acme.fields("cancel", "0 3 * * *"))
        .await
        .unwrap();
    let run_now = |acme: &mut Setup| {
        let mut jobs = acme.jobs.clone();
        let request = pb::RunNowRequest {
            org_id: acme.org.org.to_string(),
            schedule_id: schedule.schedule_id.clone(),
        };
        async move { jobs.run_now(request).await.unwrap().into_inner() }
    };
    let cancel = |acme: &mut Setup, id: String| {
        let mut jobs = acme.jobs.clone();
        let request = pb::CancelJobRequest {
            org_id: acme.org.org.to_string(),
            job_id: id,
            reason: "wrong database".into(),
        };
        async move { jobs.cancel_job(request).await }
    };
    let pending = run_now(&mut acme).await;
    let cancelled = cancel(&mut acme, pending.job_id.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, "cancelled");
    assert!(
        acme.poll(1).await.is_none(),
        "a cancelled job is never handed out"
    );
    let again = cancel(&mut acme, pending.job_id.clone()).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let held = run_now(&mut acme).await;
    let claimed = acme.poll(5).await.unwrap();
    let asked = cancel(&mut acme, held.job_id.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (asked.state.as_str(), asked.cancel_requested),
        ("claimed", true)
    );
    let beat = acme
        .agent
        .heartbeat(pb::HeartbeatRequest {
            job_id: held.job_id.clone(),
            fencing_token: claimed.fencing_token,
            progress: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        beat.cancel_requested,
        "the agent learns it at its heartbeat"
    );
    let stopped = acme
        .agent
        .confirm_cancelled(pb::ConfirmCancelledRequest {
            job_id: held.job_id,
            fencing_token: claimed.fencing_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stopped.state.as_str(), stopped.reason.as_str()),
        ("cancelled", "wrong database")
    );
}

#[tokio::test]
async fn two_schedulers_fire_every_due_run_exactly_once() {
    let app = spawn_tls_app().await;
    // A second `coffer serve --target scheduling` on the same database and bus.
    let (_addr, _replica) = app.replica(Target::Scheduling, |_| {}).await;
    let mut acme = setup(&app, "Acme").await;
    let schedule = acme
        .create(acme.fields("every-second", "* * * * * *"))
        .await
        .unwrap();
    let id = schedule.schedule_id.clone();
    coffer_testkit::eventually("eight runs fired", Duration::from_secs(20), || {
        let mut acme_jobs = acme.jobs.clone();
        let request = pb::ListJobsRequest {
            org_id: acme.org.org.to_string(),
            schedule_id: id.clone(),
            page_size: 1000,
            ..Default::default()
        };
        async move {
            let n = acme_jobs
                .list_jobs(request)
                .await
                .unwrap()
                .into_inner()
                .jobs
                .len();
            (n >= 8).then_some(())
        }
    })
    .await;
    acme.pause(&id).await;
    let mut due: Vec<_> = acme
        .jobs_of(&id)
        .await
        .iter()
        .map(|j| from_timestamp(j.due_at.as_ref().unwrap()).unwrap())
        .collect();
    due.sort();
    let fired = due.len();
    due.dedup();
    assert_eq!(due.len(), fired, "no due time fired twice");
    for pair in due.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            1,
            "no due time was skipped: {pair:?}"
        );
    }
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM coffer_scheduling.events e \
         JOIN coffer_scheduling.jobs j ON j.job_id = e.aggregate_id \
         WHERE e.event_type = 'JobCreated' AND j.schedule_id = $1",
    )
    .bind(id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&app.db.superuser().await)
    .await
    .unwrap();
    assert_eq!(events as usize, fired);
}

#[tokio::test]
async fn after_downtime_run_once_fires_one_job_for_the_missed_runs_and_skip_fires_none() {
    // This app's scheduler ticks once at boot and then not for an hour: no scheduler runs.
    let app = spawn_tls_app_with(crate::helpers::Provider::Local, |c| {
        c.scheduler.tick = Duration::from_secs(3600);
    })
    .await;
    let mut acme = setup(&app, "Acme").await;
    // Three due times 2, 3 and 4 seconds from now, then none for a minute: after the downtime
    // all three are missed (more than the 1 s grace late), whatever the second it ends at.
    use chrono::Timelike as _;
    let second = chrono::Utc::now().second();
    let cron = format!(
        "{},{},{} * * * * *",
        (second + 2) % 60,
        (second + 3) % 60,
        (second + 4) % 60
    );
    let fields = |name: &str, missed: &str| pb::ScheduleFields {
        missed_runs: missed.into(),
        timezone: "UTC".into(),
        ..acme.fields(name, &cron)
    };
    let (catch_up, skipping) = (fields("catch-up", "run_once"), fields("skip", "skip"));
    let run_once = acme.create(catch_up).await.unwrap();
    let skip = acme.create(skipping).await.unwrap();
    // The downtime: the three due times pass with no scheduler running.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(acme.jobs_of(&run_once.schedule_id).await.is_empty());
    // A scheduler comes up.
    let booted = chrono::Utc::now();
    let (_addr, _replica) = app
        .replica(Target::Scheduling, |c| {
            c.scheduler.tick = Duration::from_millis(200);
        })
        .await;
    let su = app.db.superuser().await;
    let first_event = |schedule: &str, event_type: &'static str| {
        let su = su.clone();
        let id: uuid::Uuid = schedule.parse().unwrap();
        coffer_testkit::eventually(event_type, Duration::from_secs(10), move || {
            let su = su.clone();
            async move {
                sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT payload FROM coffer_scheduling.events \
                     WHERE aggregate_id = $1 AND event_type = $2 ORDER BY version LIMIT 1",
                )
                .bind(id)
                .bind(event_type)
                .fetch_optional(&su)
                .await
                .unwrap()
            }
        })
    };
    use prost::Message as _;
    let skipped = coffer_proto::events::v1::ScheduleRunsSkipped::decode(
        first_event(&skip.schedule_id, "ScheduleRunsSkipped")
            .await
            .as_slice(),
    )
    .unwrap();
    assert_eq!(skipped.count, 3, "{skipped:?}");
    let created = coffer_testkit::eventually("the catch-up job", Duration::from_secs(10), || {
        let su = su.clone();
        let id: uuid::Uuid = run_once.schedule_id.parse().unwrap();
        async move {
            sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT e.payload FROM coffer_scheduling.events e \
                 JOIN coffer_scheduling.jobs j ON j.job_id = e.aggregate_id \
                 WHERE e.event_type = 'JobCreated' AND j.schedule_id = $1 \
                 ORDER BY j.due_at LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&su)
            .await
            .unwrap()
        }
    })
    .await;
    let fired = coffer_proto::events::v1::JobCreated::decode(created.as_slice())
        .unwrap()
        .fired
        .expect("a scheduled job records its firing");
    assert_eq!(fired.skipped, 2, "{fired:?}");
    let before_boot = |jobs: Vec<pb::Job>| {
        jobs.iter()
            .filter(|j| from_timestamp(j.due_at.as_ref().unwrap()).unwrap() <= booted)
            .count()
    };
    assert_eq!(
        before_boot(acme.jobs_of(&run_once.schedule_id).await),
        1,
        "run_once: the missed runs made one job"
    );
    assert_eq!(
        before_boot(acme.jobs_of(&skip.schedule_id).await),
        0,
        "skip: the missed runs made none"
    );
}

#[tokio::test]
async fn bad_schedule_and_job_requests_are_refused_by_field_and_change_nothing() {
    let app = spawn_tls_app().await;
    let mut acme = setup(&app, "Acme").await;
    let invalid = [
        (acme.fields("x", "61 * * * *"), "cron"),
        (acme.fields("x", "* * *"), "cron"),
        (
            pb::ScheduleFields {
                timezone: "Mars/Olympus_Mons".into(),
                ..acme.fields("x", "0 3 * * *")
            },
            "timezone",
        ),
        (
            pb::ScheduleFields {
                jitter_seconds: 100_000,
                ..acme.fields("x", "0 3 * * *")
            },
            "jitter_seconds",
        ),
        (
            pb::ScheduleFields {
                missed_runs: "sometimes".into(),
                ..acme.fields("x", "0 3 * * *")
            },
            "missed_runs",
        ),
        (
            pb::ScheduleFields {
                retention: Some(pb::Retention {
                    daily: 1_000_000,
                    ..Default::default()
                }),
                ..acme.fields("x", "0 3 * * *")
            },
            "retention.daily",
        ),
        (
            pb::ScheduleFields {
                database_id: "not-a-uuid".into(),
                ..acme.fields("x", "0 3 * * *")
            },
            "database_id",
        ),
    ];
    for (fields, field) in invalid {
        let status = acme.create(fields).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let unknown_db = acme
        .create(pb::ScheduleFields {
            database_id: uuid::Uuid::now_v7().to_string(),
            ..acme.fields("x", "0 3 * * *")
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_db.code(), Code::FailedPrecondition);
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM coffer_scheduling.events WHERE aggregate_type = 'Schedule'",
    )
    .fetch_one(&app.db.superuser().await)
    .await
    .unwrap();
    assert_eq!(rows, 0, "no refused request wrote anything");

    // Another agent of the same org cannot report on this agent's job, nor claim it.
    let schedule = acme.create(acme.fields("ok", "0 3 * * *")).await.unwrap();
    acme.jobs
        .run_now(pb::RunNowRequest {
            org_id: acme.org.org.to_string(),
            schedule_id: schedule.schedule_id.clone(),
        })
        .await
        .unwrap();
    let (_, mut intruder) = agent(&app, &acme.org).await;
    assert!(
        intruder
            .poll_jobs(pb::PollJobsRequest { wait_seconds: 1 })
            .await
            .unwrap()
            .into_inner()
            .claimed
            .is_none()
    );
    let claimed = acme.poll(5).await.unwrap();
    let id = claimed.job.clone().unwrap().job_id;
    let foreign = intruder
        .heartbeat(pb::HeartbeatRequest {
            job_id: id.clone(),
            fencing_token: claimed.fencing_token,
            progress: None,
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    // An agent of another org gets the same answer.
    let mut other = setup(&app, "Other").await;
    let status = other
        .agent
        .complete_job(pb::CompleteJobRequest {
            job_id: id.clone(),
            fencing_token: claimed.fencing_token,
            artifact: Some(artifact(&claimed)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(acme.job(&id).await.state, "claimed");
    // People cannot call the agents' service.
    let mut as_owner = AgentJobServiceClient::new(app.authed(&acme.org.owner_key).await);
    let status = as_owner
        .poll_jobs(pb::PollJobsRequest { wait_seconds: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Viewers read schedules but cannot run or cancel jobs.
    let viewer = app.new_api_key(&acme.org, "viewer").await;
    let mut viewer_jobs = JobServiceClient::new(app.authed(&viewer).await);
    let status = viewer_jobs
        .run_now(pb::RunNowRequest {
            org_id: acme.org.org.to_string(),
            schedule_id: schedule.schedule_id,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn p3_a_claims_ticket_releases_the_databases_password_to_its_agent_once_and_to_no_other() {
    use coffer_proto::credentials::v1::{
        ReleaseCredentialsRequest, release_service_client::ReleaseServiceClient,
    };

    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let password = crate::credentials::create(
        &mut crate::credentials::vault(&app, &acme).await,
        acme.org,
        "prod/orders",
        b"orders password",
    )
    .await;
    let (agent_id, channel) = agent_channel(&app, &acme).await;
    let mut agent = AgentJobServiceClient::new(channel.clone());
    let database = DatabaseServiceClient::new(app.authed(&acme.owner_key).await)
        .register_database(pb::RegisterDatabaseRequest {
            org_id: acme.org.to_string(),
            fields: Some(pb::DatabaseFields {
                password_vault_ref: password.vault_ref.clone(),
                ..crate::scheduling::fields(acme.org, &agent_id, "orders")
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (destination, _) = app.local_destination(&acme).await;
    let schedule = ScheduleServiceClient::new(app.authed(&acme.owner_key).await)
        .create_schedule(pb::CreateScheduleRequest {
            org_id: acme.org.to_string(),
            fields: Some(pb::ScheduleFields {
                name: "nightly".into(),
                database_id: database.database_id,
                destination_id: destination,
                cron: "0 3 * * *".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    JobServiceClient::new(app.authed(&acme.owner_key).await)
        .run_now(pb::RunNowRequest {
            org_id: acme.org.to_string(),
            schedule_id: schedule.schedule_id,
        })
        .await
        .unwrap();
    let claimed = agent
        .poll_jobs(pb::PollJobsRequest { wait_seconds: 5 })
        .await
        .unwrap()
        .into_inner()
        .claimed
        .unwrap();

    // The credentials service takes scheduling's own ticket, as published at boot.
    let mut release = ReleaseServiceClient::new(channel);
    let released = release
        .release_credentials(ReleaseCredentialsRequest {
            ticket: claimed.ticket.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.job_id, claimed.job.as_ref().unwrap().job_id);
    assert_eq!(released.attempt, 1);
    let values: Vec<(&str, &[u8])> = released
        .credentials
        .iter()
        .map(|c| (c.vault_ref.as_str(), c.value.as_slice()))
        .collect();
    assert_eq!(
        values,
        [(password.vault_ref.as_str(), &b"orders password"[..])]
    );
    // Once per attempt.
    let again = release
        .release_credentials(ReleaseCredentialsRequest {
            ticket: claimed.ticket.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    // Useless to another agent of the same org.
    let (_, other) = agent_channel(&app, &acme).await;
    let stolen = ReleaseServiceClient::new(other)
        .release_credentials(ReleaseCredentialsRequest {
            ticket: claimed.ticket,
        })
        .await
        .unwrap_err();
    assert_ne!(stolen.code(), Code::Ok);
    assert!(stolen.message().contains("another agent"), "{stolen:?}");
}
