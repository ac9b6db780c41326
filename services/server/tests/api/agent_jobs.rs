//! The `coffer-agent` binary's jobs beyond the happy path: S3 destinations on the stack's moto,
//! cancellation mid-upload, bad input of every kind with the agent serving on, the keys it
//! holds, and certificate renewal.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coffer_proto::scheduling::v1 as pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::agent::{
    AgentHome, SourceDb, assert_artifact_of, finished, give_to_agent, pg_address, recovery_key,
};
use crate::helpers::{Authed, TestApp, TestOrg, spawn_tls_app, spawn_tls_app_with};

/// An agent home whose local destinations may lie under the app's local root.
fn home_for(app: &TestApp) -> AgentHome {
    std::fs::set_permissions(app.local_root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    AgentHome::new(
        app,
        &format!(
            "[storage]\nlocal_roots = [\"{}\"]\n",
            app.local_root().display()
        ),
    )
}

/// An enrolled, running agent of `org`.
struct RunningAgent {
    home: AgentHome,
    id: String,
    process: tokio::process::Child,
}

impl RunningAgent {
    async fn start(app: &TestApp, org: &TestOrg) -> Self {
        let home = home_for(app);
        let id = home.enroll(app, org).await;
        crate::scheduling::seen_by_scheduling(app, &id, "enrolled_at").await;
        let process = home.run();
        Self { home, id, process }
    }

    /// Asserts the agent process is still running.
    fn assert_serving(&mut self) {
        assert!(
            self.process.try_wait().unwrap().is_none(),
            "the agent exited:\n{}",
            self.home.log_text()
        );
    }
}

fn jobs(owner: &Authed) -> pb::job_service_client::JobServiceClient<Authed> {
    pb::job_service_client::JobServiceClient::new(owner.clone())
}

/// A schedule of `database` into `destination` that runs each job once (no retries), and a
/// manual run of it; returns the job id.
async fn back_up(app: &TestApp, org: &TestOrg, database: &str, destination: &str) -> String {
    let owner = app.authed(&org.owner_key).await;
    let schedule = pb::schedule_service_client::ScheduleServiceClient::new(owner.clone())
        .create_schedule(pb::CreateScheduleRequest {
            org_id: org.org.to_string(),
            fields: Some(pb::ScheduleFields {
                name: coffer_testkit::unique("nightly-"),
                database_id: database.into(),
                destination_id: destination.into(),
                cron: "0 3 * * *".into(),
                max_attempts: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    jobs(&owner)
        .run_now(pb::RunNowRequest {
            org_id: org.org.to_string(),
            schedule_id: schedule.schedule_id,
        })
        .await
        .unwrap()
        .into_inner()
        .job_id
}

async fn restore_into(app: &TestApp, org: &TestOrg, backup: &str, database: &str) -> String {
    jobs(&app.authed(&org.owner_key).await)
        .start_restore(pb::StartRestoreRequest {
            org_id: org.org.to_string(),
            backup_job_id: backup.into(),
            database_id: database.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id
}

/// Waits for `job` to end and asserts it `state`; returns it.
async fn ended(
    app: &TestApp,
    org: &TestOrg,
    agent: &RunningAgent,
    job: &str,
    state: &str,
) -> pb::Job {
    let done = finished(app, org, job, Duration::from_secs(90)).await;
    assert_eq!(done.state, state, "{done:?}\n{}", agent.home.log_text());
    done
}

/// The regular files under `dir`, at any depth (directories may stay; a file may not).
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The number of tables in `db`'s public schema.
async fn table_count(db: &SourceDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&db.pool().await)
        .await
        .unwrap()
}

/// An S3 destination of `org` in a new bucket of the stack's moto; its id and the bucket.
async fn s3_destination(app: &TestApp, org: &TestOrg) -> (String, String) {
    let bucket = crate::destinations::create_bucket().await;
    let key = crate::destinations::storage_key(app, org).await;
    let id = crate::destinations::destinations(app, &org.owner_key)
        .await
        .register_destination(pb::RegisterDestinationRequest {
            org_id: org.org.to_string(),
            fields: Some(crate::destinations::s3_fields(
                &coffer_testkit::unique("s3-"),
                &bucket,
                &key,
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .destination_id;
    (id, bucket)
}

async fn moto() -> aws_sdk_s3::Client {
    crate::destinations::s3_client(&coffer_testkit::kms_endpoint()).await
}

/// The keys of `bucket`'s objects, and of its multipart uploads in progress.
async fn bucket_contents(bucket: &str) -> (Vec<String>, Vec<String>) {
    let s3 = moto().await;
    let objects = crate::destinations::objects(bucket).await;
    let uploads = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect();
    (objects, uploads)
}

#[tokio::test]
async fn p6_p7_the_agent_backs_up_to_s3_restores_from_it_and_holds_no_key_that_decrypts_it() {
    use coffer_proto::credentials::v1 as cpb;

    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let mut agent = RunningAgent::start(&app, &acme).await;
    let source = SourceDb::seeded("s3src", 3000).await;
    let expected = source.fingerprint().await;
    let database = source.register(&app, &acme, &agent.id).await;
    let (destination, bucket) = s3_destination(&app, &acme).await;

    let job = back_up(&app, &acme, &database, &destination).await;
    let done = ended(&app, &acme, &agent, &job, "succeeded").await;
    let artifact = done.artifact.unwrap();

    // The object in the bucket is the one the artifact commits to, and nothing else is there.
    let (objects, uploads) = bucket_contents(&bucket).await;
    let key = format!("acme/backups/{}", artifact.object_key);
    assert_eq!(objects, vec![key.clone()]);
    assert!(uploads.is_empty(), "{uploads:?}");
    let object = moto()
        .await
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let recipient = crate::credentials::recipient(&app, &acme).await.recipient;
    assert_artifact_of(&artifact, &object, &recipient, b"customer 1234");

    // A restore job reads it back from S3 into an empty database.
    let target = SourceDb::empty("s3dst").await;
    let target_id = target.register(&app, &acme, &agent.id).await;
    let restore = restore_into(&app, &acme, &job, &target_id).await;
    ended(&app, &acme, &agent, &restore, "succeeded").await;
    assert_eq!(target.fingerprint().await, expected);

    // P6: after a backup and a restore, nothing the agent keeps decrypts the backup: no file
    // in its home is an age identity that opens it, and its certificate cannot export the
    // org's key.
    let recovery = recovery_key(&app, &acme, "test that the agent cannot").await;
    let keep = tempfile::tempdir().unwrap();
    let backup_file = keep.path().join("backup.age");
    std::fs::write(&backup_file, &object).unwrap();
    let opens = |identity_file: &std::path::Path| {
        std::process::Command::new("age")
            .args(["-d", "-o", "/dev/null", "-i"])
            .arg(identity_file)
            .arg(&backup_file)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let control = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(control.path(), format!("{recovery}\n")).unwrap();
    assert!(opens(control.path()), "the org's recovery key opens it");
    for file in files_under(&agent.home.root) {
        let text = std::fs::read(&file).unwrap();
        assert!(
            !text
                .windows(b"AGE-SECRET-KEY-".len())
                .any(|w| w == b"AGE-SECRET-KEY-"),
            "{} holds an age secret key",
            file.display()
        );
        assert!(!opens(&file), "{} decrypts the backup", file.display());
    }
    let chain = std::fs::read_to_string(agent.home.identity.join("cert.pem")).unwrap()
        + &std::fs::read_to_string(agent.home.identity.join("intermediate.pem")).unwrap();
    let key_pem = std::fs::read_to_string(agent.home.identity.join("key.pem")).unwrap();
    let refused = cpb::org_key_service_client::OrgKeyServiceClient::new(
        app.agent_channel(&chain, &key_pem).await,
    )
    .export_recovery_key(cpb::ExportRecoveryKeyRequest {
        org_id: acme.org.to_string(),
        reason: "an agent tries".into(),
    })
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::PermissionDenied,
        "{}",
        refused.message()
    );
    agent.assert_serving();
}

/// A TCP relay to PostgreSQL that passes each connection's first `budget` bytes from the
/// server and then stops reading from it, as a hung network would: a dump stalls mid-stream.
/// Counts the connections whose client has gone away.
struct StallingRelay {
    port: u16,
    relayed: Arc<AtomicU64>,
    clients_gone: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingRelay {
    async fn start(budget: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relayed = Arc::new(AtomicU64::new(0));
        let clients_gone = Arc::new(AtomicUsize::new(0));
        let (host, pg_port) = pg_address();
        let task = tokio::spawn({
            let relayed = relayed.clone();
            let clients_gone = clients_gone.clone();
            async move {
                loop {
                    let (client, _) = listener.accept().await.unwrap();
                    let server = tokio::net::TcpStream::connect((host.as_str(), pg_port))
                        .await
                        .unwrap();
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let clients_gone = clients_gone.clone();
                    // Client to server in full; its end is the client going away.
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        clients_gone.fetch_add(1, Ordering::SeqCst);
                    });
                    let relayed = relayed.clone();
                    tokio::spawn(async move {
                        let mut left = budget;
                        let mut buf = vec![0u8; 64 * 1024];
                        while left > 0 {
                            let want = buf.len().min(usize::try_from(left).unwrap());
                            let Ok(n) = server_read.read(&mut buf[..want]).await else {
                                return;
                            };
                            if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            left -= n as u64;
                            relayed.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        // Stalled: hold both halves open without reading.
                        std::future::pending::<()>().await;
                        drop((server_read, client_write));
                    });
                }
            }
        });
        Self {
            port,
            relayed,
            clients_gone,
            task,
        }
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn p3_a_cancelled_backup_stops_within_5_s_and_leaves_no_object_nor_multipart_upload() {
    const BUDGET: u64 = 80 * 1024 * 1024;
    const PART_SIZE: u64 = coffer_storage::PART_SIZE as u64;
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let mut agent = RunningAgent::start(&app, &acme).await;

    // About 150 MB of dump that zstd halves: more than the relay passes, and what the relay
    // passes fills several 8 MiB upload parts.
    let source = SourceDb::empty("cancel").await;
    sqlx::raw_sql(&format!(
        "SET ROLE {user};
         CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) || md5((g * 31)::text)
             FROM generate_series(1, 2000000) g;",
        user = source.user
    ))
    .execute(&source.pool().await)
    .await
    .unwrap();
    let relay = StallingRelay::start(BUDGET).await;
    let database = source
        .register_at(
            &app,
            &acme,
            &agent.id,
            ("127.0.0.1", relay.port),
            &source.password,
        )
        .await;
    let (destination, bucket) = s3_destination(&app, &acme).await;
    let job = back_up(&app, &acme, &database, &destination).await;

    // The dump stalls once the relay's budget is spent, with parts already uploaded: the
    // agent has handed the upload more than two parts (one may be in flight) and the bucket
    // lists the multipart upload.
    coffer_testkit::eventually("the dump stalls", Duration::from_secs(60), || {
        let relayed = relay.relayed.load(Ordering::SeqCst);
        async move { (relayed >= BUDGET).then_some(()) }
    })
    .await;
    let owner = app.authed(&acme.owner_key).await;
    let get = |job: String| {
        let mut jobs = jobs(&owner);
        let org = acme.org.to_string();
        async move {
            jobs.get_job(pb::GetJobRequest {
                org_id: org,
                job_id: job,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let progress = coffer_testkit::eventually(
        "the agent reports two parts written",
        Duration::from_secs(30),
        || {
            let job = get(job.clone());
            async move {
                let job = job.await;
                assert_eq!(job.state, "running", "{job:?}");
                job.progress.filter(|p| p.bytes_written > 2 * PART_SIZE)
            }
        },
    )
    .await;
    assert!(progress.bytes_read > progress.bytes_written, "{progress:?}");
    let (objects, uploads) = bucket_contents(&bucket).await;
    assert!(objects.is_empty(), "{objects:?}");
    assert_eq!(uploads.len(), 1, "{uploads:?}");

    let cancelled_at = Instant::now();
    jobs(&app.authed(&acme.owner_key).await)
        .cancel_job(pb::CancelJobRequest {
            org_id: acme.org.to_string(),
            job_id: job.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Within 5 s: the job is cancelled, pg_dump is gone (its connection closed), and the
    // bucket holds neither an object nor the multipart upload.
    coffer_testkit::eventually("the cancellation completes", Duration::from_secs(5), || {
        let job = get(job.clone());
        let bucket = bucket.clone();
        let gone = relay.clients_gone.load(Ordering::SeqCst);
        async move {
            let state = job.await.state;
            let (objects, uploads) = bucket_contents(&bucket).await;
            (state == "cancelled" && gone >= 1 && objects.is_empty() && uploads.is_empty())
                .then_some(())
        }
    })
    .await;
    eprintln!("cancellation completed in {:?}", cancelled_at.elapsed());
    agent.assert_serving();
}

#[tokio::test]
async fn p10_bad_input_fails_each_job_with_its_reason_leaves_nothing_partial_and_the_agent_serves_on()
 {
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let mut agent = RunningAgent::start(&app, &acme).await;
    let source = SourceDb::seeded("bad", 1500).await;
    let expected = source.fingerprint().await;
    let (destination, dir) = app.local_destination(&acme).await;
    give_to_agent(&dir);

    // A database nobody listens for.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unreachable = source
        .register_at(
            &app,
            &acme,
            &agent.id,
            ("127.0.0.1", closed_port),
            &source.password,
        )
        .await;
    let job = back_up(&app, &acme, &unreachable, &destination).await;
    let failed = ended(&app, &acme, &agent, &job, "failed").await;
    assert!(failed.reason.contains("pg_dump"), "{}", failed.reason);
    assert!(
        failed.reason.contains("Connection refused"),
        "{}",
        failed.reason
    );

    // The wrong password: PostgreSQL's reason, never the password.
    let (host, port) = pg_address();
    let wrong = "wrong-password-canary-41d7";
    let misconfigured = source
        .register_at(&app, &acme, &agent.id, (&host, port), wrong)
        .await;
    let job = back_up(&app, &acme, &misconfigured, &destination).await;
    let failed = ended(&app, &acme, &agent, &job, "failed").await;
    assert!(
        failed.reason.contains("password authentication failed"),
        "{}",
        failed.reason
    );
    assert!(!failed.reason.contains(wrong), "{}", failed.reason);
    assert!(!agent.home.log_text().contains(wrong));

    // A local destination the agent may not write to.
    let database = source.register(&app, &acme, &agent.id).await;
    let (read_only, read_only_dir) = app.local_destination(&acme).await;
    std::fs::set_permissions(&read_only_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let job = back_up(&app, &acme, &database, &read_only).await;
    let failed = ended(&app, &acme, &agent, &job, "failed").await;
    assert!(
        failed.reason.contains("ermission denied"),
        "{}",
        failed.reason
    );
    assert!(files_under(&read_only_dir).is_empty());

    // An S3 bucket that is gone: the upload is refused and nothing is left in its place.
    let (gone, bucket) = s3_destination(&app, &acme).await;
    moto()
        .await
        .delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let job = back_up(&app, &acme, &database, &gone).await;
    let failed = ended(&app, &acme, &agent, &job, "failed").await;
    assert!(failed.reason.contains("NoSuchBucket"), "{}", failed.reason);

    // None of the failed backups left a file in the good destination; a good backup works.
    assert!(files_under(&dir).is_empty(), "{:?}", files_under(&dir));
    let backup = back_up(&app, &acme, &database, &destination).await;
    let done = ended(&app, &acme, &agent, &backup, "succeeded").await;
    let object = dir.join(done.artifact.unwrap().object_key);
    let intact = std::fs::read(&object).unwrap();

    // A corrupt object, then a truncated one: the restore fails and the target stays empty.
    let target = SourceDb::empty("badtarget").await;
    let target_id = target.register(&app, &acme, &agent.id).await;
    let mut corrupt = intact.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x40;
    for (damaged, reason) in [
        (corrupt, "fails authentication"),
        (intact[..intact.len() * 3 / 4].to_vec(), "truncated"),
    ] {
        std::fs::write(&object, &damaged).unwrap();
        let restore = restore_into(&app, &acme, &backup, &target_id).await;
        let failed = ended(&app, &acme, &agent, &restore, "failed").await;
        assert!(failed.reason.contains(reason), "{}", failed.reason);
        assert_eq!(table_count(&target).await, 0, "{}", failed.reason);
    }

    // The agent served every job and still does: the intact object restores.
    std::fs::write(&object, &intact).unwrap();
    let restore = restore_into(&app, &acme, &backup, &target_id).await;
    ended(&app, &acme, &agent, &restore, "succeeded").await;
    assert_eq!(target.fingerprint().await, expected);
    agent.assert_serving();
}

#[tokio::test]
async fn p6_the_agent_renews_its_certificate_at_four_fifths_of_its_lifetime_and_keeps_working() {
    use coffer_proto::enrollment::v1 as epb;

    // The shortest lifetime the server issues: renewal falls about 3.8 minutes in.
    let app = spawn_tls_app_with(crate::helpers::Provider::Local, |config| {
        config.pki.agent_ttl = coffer_pki::MIN_AGENT_TTL;
    })
    .await;
    let acme = app.new_org("Acme").await;
    let mut agent = RunningAgent::start(&app, &acme).await;
    let record = |home: &AgentHome| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(home.identity.join("identity.json")).unwrap())
            .unwrap()
    };
    let first = record(&agent.home);
    let first_key = std::fs::read(agent.home.identity.join("key.pem")).unwrap();
    let not_before: chrono::DateTime<chrono::Utc> =
        first["not_before"].as_str().unwrap().parse().unwrap();
    let not_after: chrono::DateTime<chrono::Utc> =
        first["not_after"].as_str().unwrap().parse().unwrap();
    let due = not_before + (not_after - not_before) * 4 / 5;

    let renewed = coffer_testkit::eventually(
        "the agent renews its certificate",
        Duration::from_secs(6 * 60),
        || {
            let serial = record(&agent.home)["serial"].clone();
            let first = first["serial"].clone();
            async move { (serial != first).then_some(serial) }
        },
    )
    .await;
    let renewed_at = chrono::Utc::now();
    assert!(
        renewed_at >= due,
        "renewed at {renewed_at}, before 80 % of the lifetime ({due})"
    );
    assert!(
        renewed_at < not_after,
        "renewed at {renewed_at}, after expiry"
    );
    assert_ne!(
        std::fs::read(agent.home.identity.join("key.pem")).unwrap(),
        first_key,
        "a new key"
    );
    assert!(agent.home.log_text().contains("certificate renewed"));

    // The server records the new certificate, and the agent works on with it.
    let server_view =
        epb::agent_service_client::AgentServiceClient::new(app.authed(&acme.owner_key).await)
            .get_agent(epb::GetAgentRequest {
                org_id: acme.org.to_string(),
                agent_id: agent.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(serde_json::Value::from(server_view.serial), renewed);
    let source = SourceDb::seeded("renewed", 100).await;
    let database = source.register(&app, &acme, &agent.id).await;
    let (destination, dir) = app.local_destination(&acme).await;
    give_to_agent(&dir);
    let job = back_up(&app, &acme, &database, &destination).await;
    ended(&app, &acme, &agent, &job, "succeeded").await;
    agent.assert_serving();
}
