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

#[tokio::test]
async fn the_cli_round_trip_and_rebuild_projections_work_against_a_served_binary() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let bus = BusConfig::with_prefix(&coffer_testkit::unique("b"));
    let kms_dir = tempfile::tempdir().unwrap();
    let key_dir = kms_dir.path().to_str().unwrap().to_owned();
    let with_kms = |mut cmd: Command| {
        cmd.env("COFFER_KMS__PROVIDER", "local")
            .env("COFFER_KMS__KEY_DIR", &key_dir)
            .env("COFFER_KMS__KEY_ID", "cli-test");
        cmd
    };
    let out = run(
        coffer(&db.config.url, &coffer_testkit::nats_url(), &bus).args([
            "admin",
            "create-local-kms-key",
            "--key-dir",
            &key_dir,
            "--key-id",
            "cli-test",
        ]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        with_kms(coffer(&db.config.url, &coffer_testkit::nats_url(), &bus)).args([
            "admin",
            "init",
            "--owner-email",
            "root@platform.test",
            "--json",
        ]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api_key = init["api_key"].as_str().unwrap().to_owned();
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

    let port = coffer_testkit::free_port();
    let server = Server(
        with_kms(coffer(&db.config.url, &coffer_testkit::nats_url(), &bus))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    coffer_testkit::eventually("server listening", Duration::from_secs(30), || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await;

    for _ in 0..3 {
        let out = run(
            coffer(&db.config.url, &coffer_testkit::nats_url(), &bus).args([
                "diag",
                "round-trip",
                "--server",
                &format!("http://127.0.0.1:{port}"),
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
