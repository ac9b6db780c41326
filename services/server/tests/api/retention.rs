//! Retention: a simulated year of daily backups, with injected times, leaves exactly the set a
//! GFS policy keeps; scheduling deletes the rest from the destination and records each deletion
//! as events; and a backup that completes through the API triggers retention by itself.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use coffer_eventstore::EventStore;
use coffer_proto::scheduling::v1 as pb;
use coffer_scheduling::domain::job::{
    Artifact, Job, JobCommand, JobKind, JobSpec, Trigger, backup_object_key,
};
use coffer_types::{Actor, ActorKind, AgentId, AggregateId};

use crate::helpers::{TestApp, TestOrg, spawn_app, spawn_tls_app};

/// A database served by `agent`, a local destination directory and a schedule of `org` with
/// `retention`.
async fn scheduled(
    app: &TestApp,
    org: &TestOrg,
    agent: &str,
    retention: pb::Retention,
) -> (pb::Schedule, std::path::PathBuf) {
    let database =
        pb::database_service_client::DatabaseServiceClient::new(app.authed(&org.owner_key).await)
            .register_database(pb::RegisterDatabaseRequest {
                org_id: org.org.to_string(),
                fields: Some(crate::scheduling::fields(org.org, agent, "orders")),
            })
            .await
            .unwrap()
            .into_inner();
    let (destination, dir) = app.local_destination(org).await;
    let schedule =
        pb::schedule_service_client::ScheduleServiceClient::new(app.authed(&org.owner_key).await)
            .create_schedule(pb::CreateScheduleRequest {
                org_id: org.org.to_string(),
                fields: Some(pb::ScheduleFields {
                    name: "nightly".into(),
                    database_id: database.database_id,
                    destination_id: destination,
                    // Never due while the test runs: every backup here is injected or run now.
                    cron: "0 3 29 2 *".into(),
                    timezone: "UTC".into(),
                    retention: Some(retention),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
    (schedule, dir)
}

#[tokio::test]
async fn a_simulated_year_of_daily_backups_leaves_exactly_the_gfs_set_and_every_deletion_is_an_event()
 {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let policy = pb::Retention {
        keep_last: 3,
        daily: 7,
        weekly: 4,
        monthly: 12,
        yearly: 2,
    };
    let agent = crate::scheduling::enrolled_agent(&app, &acme).await;
    let (schedule, dir) = scheduled(&app, &acme, &agent, policy).await;
    let schedule_id: uuid::Uuid = schedule.schedule_id.parse().unwrap();
    let agent: AgentId = agent.parse().unwrap();

    // The scheduling service as the server wires it, on the same database, deleting through
    // the same SSRF guard (the app's local root) — driven here with injected times.
    let db = app.db.service(coffer_scheduling::SERVICE).await;
    let policy = coffer_storage::Policy::new([], vec![app.local_root()]).unwrap();
    let scheduling = coffer_scheduling::Scheduling::new(db.clone()).with_storage(
        coffer_scheduling::app::StorageAccess::new(coffer_storage::Guard::new(policy), None),
    );
    let events = EventStore::new(db, coffer_scheduling::app::projections());
    let actor = Actor {
        kind: ActorKind::Service,
        id: "test".into(),
    };

    let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let days: Vec<NaiveDate> = first.iter_days().take(365).collect();
    for day in &days {
        let taken: DateTime<Utc> = Utc.from_utc_datetime(&day.and_hms_opt(3, 0, 0).unwrap());
        let job_id = uuid::Uuid::now_v7();
        let job = AggregateId::from(job_id);
        let spec = JobSpec {
            kind: JobKind::Backup,
            trigger: Trigger::Schedule,
            schedule_id: Some(schedule_id),
            database_id: schedule
                .fields
                .as_ref()
                .unwrap()
                .database_id
                .parse()
                .unwrap(),
            destination_id: schedule
                .fields
                .as_ref()
                .unwrap()
                .destination_id
                .parse()
                .unwrap(),
            agent_id: agent,
            restore_of: None,
            due_at: taken,
            max_attempts: 1,
        };
        let key = backup_object_key(job_id, &spec, 1);
        for command in [
            JobCommand::CreateJob {
                spec,
                not_before: taken,
                fired: None,
            },
            JobCommand::ClaimJob {
                agent,
                now: taken,
                lease: chrono::Duration::minutes(5),
            },
            JobCommand::CompleteJob {
                job_id,
                fencing_token: 1,
                artifact: Some(Artifact {
                    object_key: key.clone(),
                    size_bytes: 3,
                    sha256: "0".repeat(64),
                    recipient: "age1test".into(),
                    age_header_sha256: "1".repeat(64),
                    dump_bytes: 4096,
                }),
            },
        ] {
            events
                .execute::<Job>(acme.org, job, &actor, command)
                .await
                .unwrap();
        }
        // The agent's upload.
        let path = dir.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"age").unwrap();
        // Retention after each success, an hour later.
        scheduling
            .apply_retention(acme.org, schedule_id, taken + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert!(path.exists(), "the newest backup ({day}) is never deleted");
    }

    // What the policy keeps at the end, worked out by hand for 2025 (2025-12-31 is a
    // Wednesday in ISO week 1 of 2026):
    let date = |m, d| NaiveDate::from_ymd_opt(2025, m, d).unwrap();
    let mut expected: BTreeSet<NaiveDate> = BTreeSet::new();
    // keep_last 3 and daily 7: 25 to 31 December.
    expected.extend((25..=31).map(|d| date(12, d)));
    // weekly 4: the newest of ISO weeks 2026-W01 (31 Dec), 2025-W52 (28 Dec), W51 (21 Dec),
    // W50 (14 Dec).
    expected.extend([date(12, 14), date(12, 21), date(12, 28)]);
    // monthly 12: the last day of every month; yearly 2: 31 December, the only year.
    for month in 1..=12 {
        let next = if month == 12 {
            NaiveDate::from_ymd_opt(2026, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(2025, month + 1, 1)
        }
        .unwrap();
        expected.insert(next.pred_opt().unwrap());
    }
    assert_eq!(expected.len(), 20);

    // Objects are named `<database>/<due time>_<job>_a<attempt>.dump.zst.age`.
    let database = &schedule.fields.as_ref().unwrap().database_id;
    let remaining: BTreeSet<NaiveDate> = std::fs::read_dir(dir.join(database))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name[..10].parse().unwrap()
        })
        .collect();
    assert_eq!(
        remaining, expected,
        "exactly the GFS set is left in the destination"
    );

    // Every deletion is an expiry then a deletion event of the backup's job, by scheduling.
    let su = app.db.superuser().await;
    let count = |event_type: &'static str| {
        let su = su.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM coffer_scheduling.events \
                 WHERE event_type = $1 AND actor_kind = 'service' AND actor_id = 'scheduling'",
            )
            .bind(event_type)
            .fetch_one(&su)
            .await
            .unwrap()
        }
    };
    assert_eq!(count("BackupExpired").await, 365 - 20);
    assert_eq!(count("BackupDeleted").await, 365 - 20);
    let kept: Vec<(DateTime<Utc>,)> = sqlx::query_as(
        "SELECT due_at FROM coffer_scheduling.jobs WHERE schedule_id = $1 \
         AND deleted_at IS NULL ORDER BY due_at",
    )
    .bind(schedule_id)
    .fetch_all(&su)
    .await
    .unwrap();
    assert_eq!(
        kept.iter()
            .map(|(t,)| t.date_naive())
            .collect::<BTreeSet<_>>(),
        expected,
        "the jobs table agrees with the destination"
    );
    assert!(kept.iter().all(|(t,)| t.year() == 2025));
}

/// Runs the schedule now and has `agent` complete it, its object written first at the key the
/// claim names; returns the job and the object's path.
async fn backup(
    app: &TestApp,
    org: &TestOrg,
    agent: &mut crate::jobs::Agent,
    schedule: &str,
    dir: &std::path::Path,
) -> (String, std::path::PathBuf) {
    let mut jobs = pb::job_service_client::JobServiceClient::new(app.authed(&org.owner_key).await);
    jobs.run_now(pb::RunNowRequest {
        org_id: org.org.to_string(),
        schedule_id: schedule.into(),
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
    let path = dir.join(&claimed.object_key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"age").unwrap();
    let artifact = crate::jobs::artifact(&claimed);
    let job = claimed.job.unwrap().job_id;
    agent
        .complete_job(pb::CompleteJobRequest {
            job_id: job.clone(),
            fencing_token: claimed.fencing_token,
            artifact: Some(artifact),
        })
        .await
        .unwrap();
    (job, path)
}

/// The deletion events of `job`: (event type, error).
async fn deletion_events(app: &TestApp, job: &str) -> Vec<(String, String)> {
    use prost::Message as _;
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT event_type, payload FROM coffer_scheduling.events WHERE aggregate_id = $1 \
         AND event_type IN ('BackupExpired', 'BackupDeleted') ORDER BY version",
    )
    .bind(job.parse::<uuid::Uuid>().unwrap())
    .fetch_all(&app.db.superuser().await)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, payload)| {
            let error = if t == "BackupDeleted" {
                coffer_proto::events::v1::BackupDeleted::decode(payload.as_slice())
                    .unwrap()
                    .error
            } else {
                String::new()
            };
            (t, error)
        })
        .collect()
}

#[tokio::test]
async fn a_backup_completed_by_its_agent_applies_retention_and_a_failed_deletion_is_recorded_and_retried()
 {
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let (agent_id, mut agent) = crate::jobs::agent(&app, &acme).await;
    let keep_one = pb::Retention {
        keep_last: 1,
        ..Default::default()
    };
    let (schedule, dir) = scheduled(&app, &acme, &agent_id, keep_one).await;
    let id = schedule.schedule_id;

    // The first backup's object is then swapped for a directory holding a file, which a
    // deletion cannot remove.
    let (first, first_path) = backup(&app, &acme, &mut agent, &id, &dir).await;
    std::fs::remove_file(&first_path).unwrap();
    std::fs::create_dir(&first_path).unwrap();
    std::fs::write(first_path.join("pinned"), b"x").unwrap();
    assert!(
        deletion_events(&app, &first).await.is_empty(),
        "the newest is kept"
    );

    // The second backup pushes the first out; its deletion fails and is recorded so.
    let (_, second_path) = backup(&app, &acme, &mut agent, &id, &dir).await;
    let failed = coffer_testkit::eventually("a failed deletion", Duration::from_secs(10), || {
        let app = &app;
        let first = first.clone();
        async move {
            let events = deletion_events(app, &first).await;
            (events.len() == 2).then_some(events)
        }
    })
    .await;
    assert_eq!(failed[0], ("BackupExpired".to_owned(), String::new()));
    assert_eq!(failed[1].0, "BackupDeleted");
    assert!(!failed[1].1.is_empty(), "the storage outcome says why");
    assert!(first_path.exists());

    // Once the object can go, the next pass (after the next backup) deletes it.
    std::fs::remove_dir_all(&first_path).unwrap();
    std::fs::write(&first_path, b"age").unwrap();
    let (third, third_path) = backup(&app, &acme, &mut agent, &id, &dir).await;
    coffer_testkit::eventually("the retried deletion", Duration::from_secs(10), || {
        let (first, second) = (first_path.clone(), second_path.clone());
        async move { (!first.exists() && !second.exists()).then_some(()) }
    })
    .await;
    let events = deletion_events(&app, &first).await;
    assert_eq!(
        events.last().unwrap(),
        &("BackupDeleted".to_owned(), String::new())
    );
    assert!(third_path.exists());
    assert!(deletion_events(&app, &third).await.is_empty());
    // The job says so, and a deleted backup cannot be restored.
    let mut jobs = pb::job_service_client::JobServiceClient::new(app.authed(&acme.owner_key).await);
    let got = jobs
        .get_job(pb::GetJobRequest {
            org_id: acme.org.to_string(),
            job_id: first.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.backup_deleted && got.state == "succeeded");
    let refused = jobs
        .start_restore(pb::StartRestoreRequest {
            org_id: acme.org.to_string(),
            backup_job_id: first,
            database_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("deleted"),
        "{}",
        refused.message()
    );
}
