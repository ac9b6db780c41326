//! The `coffer` binary itself: boot checks, migrate, admin, and the CLI round trip.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coffer_eventstore::BusConfig;
use coffer_testkit::TestDb;

fn coffer(db_url: &str, nats_url: &str, bus: &BusConfig) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    cmd.env("COFFER_DATABASE__URL", db_url)
        .env("COFFER_NATS__URL", nats_url)
        .env("COFFER_NATS__STREAM", &bus.stream)
        .env("COFFER_NATS__SUBJECT_PREFIX", &bus.subject_prefix)
        .env("COFFER_NATS__DLQ_STREAM", &bus.dlq_stream)
        .env("COFFER_NATS__DLQ_PREFIX", &bus.dlq_prefix)
        .env("COFFER_NATS__CONNECT_TIMEOUT", "2s")
        .env("COFFER_GRPC__LISTEN", "127.0.0.1:0")
        .env(
            "COFFER_AUTH__REVOCATION_BUCKET",
            format!("{}_REVOKED", bus.stream),
        )
        .env("COFFER_AUTH__KEYS_BUCKET", format!("{}_KEYS", bus.stream))
        .env("COFFER_AUTH__KEYS_WAIT", "20s")
        .env("RUST_LOG", "warn");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run coffer")
}

/// The last stderr line: boot failures print exactly one line starting `coffer: `.
fn failure_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got {:?}",
        out.status
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("coffer: "))
        .collect();
    assert_eq!(lines.len(), 1, "one clear line, got: {stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn serve_refuses_to_start_on_a_database_with_missing_migrations() {
    let db = TestDb::create().await;
    let bus = BusConfig::with_prefix(&coffer_testkit::unique("b"));
    // Roles exist (other tests migrated), but this database has no coffer_diag schema.
    let line = failure_line(&run(coffer(
        &db.config.url,
        &coffer_testkit::nats_url(),
        &bus,
    )
    .args(["serve", "--target", "diag"])));
    assert_eq!(
        line,
        format!(
            "coffer: postgres at 127.0.0.1:{}/{} is missing migrations: coffer_diag 0001_event store, \
             coffer_diag 0100_probes; run `coffer migrate`",
            db.config
                .url
                .rsplit_once(':')
                .unwrap()
                .1
                .split('/')
                .next()
                .unwrap(),
            db.name
        )
    );
    // After `coffer migrate` the same command gets past the check (it would serve).
    let out = run(coffer(&db.config.url, &coffer_testkit::nats_url(), &bus).arg("migrate"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(coffer(&db.config.url, &coffer_testkit::nats_url(), &bus).arg("migrate"));
    assert!(out.status.success(), "migrate is idempotent");
}

#[tokio::test]
async fn serve_names_an_unreachable_postgres_or_nats_in_one_line() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let bus = BusConfig::with_prefix(&coffer_testkit::unique("b"));
    let dead = coffer_testkit::free_port();

    let nats = format!("nats://127.0.0.1:{dead}");
    let line = failure_line(&run(
        coffer(&db.config.url, &nats, &bus).args(["serve", "--target", "diag"])
    ));
    assert!(
        line.starts_with(&format!("coffer: cannot connect to NATS at {nats}")),
        "{line}"
    );

    let pg = format!("postgres://coffer_owner@127.0.0.1:{dead}/{}", db.name);
    let line = failure_line(&run(
        coffer(&pg, &coffer_testkit::nats_url(), &bus).args(["serve", "--target", "diag"])
    ));
    assert!(
        line.starts_with(&format!(
            "coffer: cannot connect to postgres at 127.0.0.1:{dead}/{} as coffer_diag",
            db.name
        )),
        "{line}"
    );

    let line = failure_line(&run(coffer(
        "mysql://nope",
        &coffer_testkit::nats_url(),
        &bus,
    )
    .arg("serve")));
    assert_eq!(
        line,
        "coffer: configuration: database.url must be a postgres:// URL"
    );
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` and expects success; its output.
fn succeed(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cmd` with the local KMS provider: key files in `key_dir`, current key `key_id`.
fn with_local_kms(mut cmd: Command, key_dir: &str, key_id: &str) -> Command {
    cmd.env("COFFER_KMS__PROVIDER", "local")
        .env("COFFER_KMS__KEY_DIR", key_dir)
        .env("COFFER_KMS__KEY_ID", key_id);
    cmd
}

/// `coffer admin create-local-kms-key`.
fn create_local_key(db: &TestDb, bus: &BusConfig, key_dir: &str, key_id: &str) {
    succeed(
        coffer(&db.config.url, &coffer_testkit::nats_url(), bus).args([
            "admin",
            "create-local-kms-key",
            "--key-dir",
            key_dir,
            "--key-id",
            key_id,
        ]),
    );
}

/// `coffer admin init` under the local KMS key; the platform owner's API key.
fn init_platform(db: &TestDb, bus: &BusConfig, key_dir: &str, key_id: &str) -> String {
    let out = succeed(
        with_local_kms(
            coffer(&db.config.url, &coffer_testkit::nats_url(), bus),
            key_dir,
            key_id,
        )
        .args([
            "admin",
            "init",
            "--owner-email",
            "root@platform.test",
            "--json",
        ]),
    );
    let init: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    init["api_key"].as_str().unwrap().to_owned()
}

/// Starts `coffer serve` from `cmd` on a free port; returns it once it listens, with its URL.
async fn serve(mut cmd: Command) -> (Server, String) {
    let port = coffer_testkit::free_port();
    let server = Server(
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    coffer_testkit::eventually("server listening", Duration::from_secs(30), || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await;
    (server, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn the_cli_round_trip_and_rebuild_projections_work_against_a_served_binary() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let bus = BusConfig::with_prefix(&coffer_testkit::unique("b"));
    let kms_dir = tempfile::tempdir().unwrap();
    let key_dir = kms_dir.path().to_str().unwrap().to_owned();
    let with_kms = |cmd: Command| with_local_kms(cmd, &key_dir, "cli-test");
    create_local_key(&db, &bus, &key_dir, "cli-test");
    let api_key = init_platform(&db, &bus, &key_dir, "cli-test");
    assert!(api_key.starts_with("coffer_"));
    // A second init is refused and changes nothing.
    let out = run(
        with_kms(coffer(&db.config.url, &coffer_testkit::nats_url(), &bus)).args([
            "admin",
            "init",
            "--owner-email",
            "other@platform.test",
        ]),
    );
    assert_eq!(
        failure_line(&out),
        "coffer: coffer is already initialised (the platform org exists)"
    );

    let (server, url) = serve(with_kms(coffer(
        &db.config.url,
        &coffer_testkit::nats_url(),
        &bus,
    )))
    .await;

    for _ in 0..3 {
        let out = run(
            coffer(&db.config.url, &coffer_testkit::nats_url(), &bus).args([
                "diag",
                "round-trip",
                "--server",
                &url,
                "--api-key",
                &api_key,
            ]),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for stage in ["appended", "published", "consumed", "projected"] {
            assert!(stdout.contains(stage), "{stage} missing from: {stdout}");
        }
    }
    drop(server);

    let su = db.superuser().await;
    let dump = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT to_jsonb(p)::text FROM coffer_diag.probes p ORDER BY probe_id",
        )
        .fetch_all(&su)
        .await
        .unwrap()
    };
    let before = dump().await;
    assert_eq!(before.len(), 3);
    sqlx::query("DELETE FROM coffer_diag.probes")
        .execute(&su)
        .await
        .unwrap();
    let out = run(
        coffer(&db.config.url, &coffer_testkit::nats_url(), &bus).args([
            "admin",
            "rebuild-projections",
            "--service",
            "diag",
        ]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from 6 events"));
    assert_eq!(dump().await, before, "rebuilt tables are identical");
}

/// `coffer serve` with the local KMS provider under `key_id`, rotating in batches of one key
/// with `pause` between batches.
async fn serve_credentials(
    db: &TestDb,
    bus: &BusConfig,
    key_dir: &str,
    key_id: &str,
    pause: &str,
) -> (Server, String) {
    let mut cmd = with_local_kms(
        coffer(&db.config.url, &coffer_testkit::nats_url(), bus),
        key_dir,
        key_id,
    );
    cmd.env("COFFER_CREDENTIALS__ROTATION__BATCH_SIZE", "1")
        .env("COFFER_CREDENTIALS__ROTATION__BATCH_PAUSE", pause);
    serve(cmd).await
}

/// Polls the rotation until `done` holds of it.
async fn rotation_when(
    client: &coffer_proto::credentials::v1::master_key_service_client::MasterKeyServiceClient<
        crate::helpers::Authed,
    >,
    what: &str,
    done: impl Fn(&coffer_proto::credentials::v1::MasterKeyRotation) -> bool,
) -> coffer_proto::credentials::v1::MasterKeyRotation {
    coffer_testkit::eventually(what, Duration::from_secs(30), || {
        let mut client = client.clone();
        let done = &done;
        async move {
            let r = client
                .get_master_key_rotation(
                    coffer_proto::credentials::v1::GetMasterKeyRotationRequest {},
                )
                .await
                .unwrap()
                .into_inner();
            done(&r).then_some(r)
        }
    })
    .await
}

#[tokio::test]
async fn p6_a_master_key_rotation_killed_mid_way_resumes_when_the_service_restarts_and_finishes() {
    use coffer_proto::credentials::v1 as cred;
    use coffer_proto::enrollment::v1 as pb;

    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let bus = BusConfig::with_prefix(&coffer_testkit::unique("b"));
    let kms_dir = tempfile::tempdir().unwrap();
    let key_dir = kms_dir.path().to_str().unwrap().to_owned();
    for key in ["master-2025", "master-2026"] {
        create_local_key(&db, &bus, &key_dir, key);
    }
    let platform_key = init_platform(&db, &bus, &key_dir, "master-2025");

    // Under the 2025 key: an org (its age key) and six credentials.
    let (server, url) = serve_credentials(&db, &bus, &key_dir, "master-2025", "0s").await;
    let org = pb::org_service_client::OrgServiceClient::new(
        crate::helpers::authed_at(&url, &platform_key).await,
    )
    .create_org(pb::CreateOrgRequest {
        name: "Acme".into(),
        owner_email: "owner@acme.test".into(),
    })
    .await
    .unwrap()
    .into_inner();
    let org_id = org.org.unwrap().org_id;
    let mut vault = cred::credential_service_client::CredentialServiceClient::new(
        crate::helpers::authed_at(&url, &org.owner_api_key.unwrap().secret).await,
    );
    for n in 0..6 {
        vault
            .create_credential(cred::CreateCredentialRequest {
                org_id: org_id.clone(),
                name: format!("db-{n}"),
                purpose: "database".into(),
                value: format!("password {n}").into_bytes(),
            })
            .await
            .unwrap();
    }
    let su = db.superuser().await;
    let under = |key: &'static str| {
        let su = su.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT count(*) FROM coffer_credentials.credential_secrets WHERE kms_key_id = $1)
                      + (SELECT count(*) FROM coffer_credentials.org_key_secrets WHERE kms_key_id = $1)",
            )
            .bind(key)
            .fetch_one(&su)
            .await
            .unwrap()
        }
    };
    coffer_testkit::eventually("the org key is generated", Duration::from_secs(20), || {
        let under = under("master-2025");
        async move { (under.await == 7).then_some(()) }
    })
    .await;
    let ciphertexts = || {
        let su = su.clone();
        async move {
            sqlx::query_as::<_, (uuid::Uuid, Vec<u8>, Vec<u8>)>(
                "SELECT credential_id, nonce, ciphertext FROM coffer_credentials.credential_secrets
                 ORDER BY credential_id",
            )
            .fetch_all(&su)
            .await
            .unwrap()
        }
    };
    let before = ciphertexts().await;
    drop(server);

    // The operator configures the 2026 key, restarts, and starts the rotation. It moves one
    // key a second; the service is killed (SIGKILL) part way.
    let (server, url) = serve_credentials(&db, &bus, &key_dir, "master-2026", "1s").await;
    let mut master_keys = cred::master_key_service_client::MasterKeyServiceClient::new(
        crate::helpers::authed_at(&url, &platform_key).await,
    );
    let started = master_keys
        .rotate_master_key(cred::RotateMasterKeyRequest {
            new_key_id: "master-2026".into(),
            reason: "yearly rotation".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            started.state.as_str(),
            started.number,
            started.pending_at_start
        ),
        ("running", 1, 7)
    );
    let partial = rotation_when(&master_keys, "two batches are recorded", |r| {
        r.rewrapped >= 2
    })
    .await;
    drop(server);
    assert_eq!(partial.state, "running");
    let (moved, left) = (under("master-2026").await, under("master-2025").await);
    assert!(
        moved >= 2 && left >= 1,
        "killed part way: {moved} moved, {left} left"
    );
    assert_eq!(moved + left, 7);

    // Restarted, the service resumes the rotation on its own and finishes it.
    let (_server, url) = serve_credentials(&db, &bus, &key_dir, "master-2026", "0s").await;
    let mut master_keys = cred::master_key_service_client::MasterKeyServiceClient::new(
        crate::helpers::authed_at(&url, &platform_key).await,
    );
    let done = rotation_when(&master_keys, "the rotation completes", |r| {
        r.state == "completed"
    })
    .await;
    // Keys moved by a batch the kill cut short are moved but not counted (the batch's progress
    // was never recorded); the coverage below is what proves every key moved.
    assert_eq!(done.remaining, 0);
    assert!(
        (partial.rewrapped..=7).contains(&done.rewrapped),
        "{done:?}"
    );
    let coverage = master_keys
        .get_key_coverage(cred::GetKeyCoverageRequest {})
        .await
        .unwrap()
        .into_inner();
    let entries: Vec<(&str, &str, u64)> = coverage
        .entries
        .iter()
        .map(|e| (e.purpose.as_str(), e.kms_key_id.as_str(), e.wrapped_keys))
        .collect();
    assert_eq!(
        entries,
        [
            ("credential_dek", "master-2026", 6),
            ("org_age_key", "master-2026", 1)
        ],
        "0 wrapped keys left under master-2025"
    );
    assert_eq!(
        ciphertexts().await,
        before,
        "ciphertexts are byte for byte unchanged"
    );
}
