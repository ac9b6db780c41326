//! The `coffer-agent` binary against a served `coffer`: enrollment, mutual TLS, liveness and
//! readiness files, no listening socket, an unprivileged account, and halting on revocation.

use std::os::unix::fs::PermissionsExt as _;

use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use coffer_proto::enrollment::v1::{RevokeAgentRequest, agent_service_client::AgentServiceClient};

use crate::helpers::{TestApp, TestOrg, spawn_tls_app};

/// The `coffer-agent` binary, built beside this test binary (`cargo nextest run --workspace`
/// builds every binary of the workspace).
pub(crate) fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().unwrap().parent().unwrap();
    let agent = debug.join("coffer-agent");
    assert!(
        agent.is_file(),
        "no coffer-agent at {}: build it with `cargo build -p coffer-agent`",
        agent.display()
    );
    agent
}

/// The account the agent switches to when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Hands `path` to the unprivileged account (when running as root) so the agent can use it.
pub(crate) fn give_to_agent(path: &Path) {
    if running_as_root() {
        let user = nix::unistd::User::from_name(UNPRIVILEGED)
            .unwrap()
            .expect("the nobody account exists");
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    }
}

/// A home for one agent: its configuration, identity and status directories.
pub(crate) struct AgentHome {
    _base: tempfile::TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
    pub identity: PathBuf,
    pub status: PathBuf,
    pub server_ca: PathBuf,
}

impl AgentHome {
    /// A fresh home; `extra` is appended to the TOML configuration.
    pub(crate) fn new(app: &TestApp, extra: &str) -> Self {
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = base.path().join("agent");
        std::fs::create_dir(&root).unwrap();
        give_to_agent(&root);
        let identity = root.join("identity");
        let status = root.join("status");
        let server_ca = base.path().join("server-ca.pem");
        std::fs::write(&server_ca, app.tls_ca.as_ref().expect("a TLS app")).unwrap();
        let user = if running_as_root() {
            format!("user = \"{UNPRIVILEGED}\"\n")
        } else {
            String::new()
        };
        let config = base.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "identity_dir = \"{}\"\nstatus_dir = \"{}\"\ncrl_interval = \"1s\"\n{user}\
                 [jobs]\npoll_wait = \"2s\"\nheartbeat = \"500ms\"\n{extra}",
                identity.display(),
                status.display(),
            ),
        )
        .unwrap();
        Self {
            _base: base,
            root,
            config,
            identity,
            status,
            server_ca,
        }
    }

    pub(crate) fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(agent_binary());
        cmd.arg("--config")
            .arg(&self.config)
            .env_remove("COFFER_AGENT_TOKEN")
            .env("COFFER_AGENT_LOG", "info")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `coffer-agent enroll` with a new token of `org`; returns the agent id.
    pub(crate) async fn enroll(&self, app: &TestApp, org: &TestOrg) -> String {
        let token = crate::agents::new_token(app, org).await;
        self.enroll_with(app, &token).await
    }

    /// `coffer-agent enroll` with `token`; returns the agent id.
    pub(crate) async fn enroll_with(&self, app: &TestApp, token: &str) -> String {
        let out = self
            .command()
            .args(["enroll", "--server", &app.url(), "--server-ca"])
            .arg(&self.server_ca)
            .env("COFFER_AGENT_TOKEN", token)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(!stdout.contains(token) && !stderr.contains(token));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.identity.join("identity.json")).unwrap())
                .unwrap();
        record["agent_id"].as_str().unwrap().to_owned()
    }

    /// `coffer-agent run`, its output going to `run.log` in the home.
    pub(crate) fn run(&self) -> tokio::process::Child {
        let log = std::fs::File::create(self.log()).unwrap();
        self.command()
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.root.parent().unwrap().join("run.log")
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// The socket inodes a process holds.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect()
}

/// The states (hex, as in /proc/net) of `pid`'s TCP and UDP sockets.
fn socket_states(pid: u32) -> Vec<(String, String)> {
    let inodes = socket_inodes(pid);
    let mut states = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.iter().any(|i| i == fields[9]) {
                states.push((table.to_owned(), fields[3].to_owned()));
            }
        }
    }
    states
}

fn uid_of(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn p6_the_agent_enrolls_runs_over_mtls_unprivileged_with_no_listening_socket_and_halts_when_revoked()
 {
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let home = AgentHome::new(&app, "");

    let agent_id = home.enroll(&app, &acme).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home.identity), 0o700);
    assert_eq!(mode(&home.identity.join("key.pem")), 0o600);
    // The token works once: a second agent home cannot reuse the directory.
    let again = home
        .command()
        .args([
            "enroll",
            "--server",
            &app.url(),
            "--token",
            "coffer_et_unused",
        ])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds an agent identity"),
        "{again:?}"
    );

    let mut agent = home.run();
    let pid = agent.id().unwrap();
    coffer_testkit::eventually("the agent is ready", Duration::from_secs(20), || {
        let ready = home.status.join("ready");
        let live = home.status.join("live");
        async move { (ready.exists() && live.exists()).then_some(()) }
    })
    .await;
    // Outbound only: connected to the server, listening nowhere.
    let states = socket_states(pid);
    assert!(
        states.iter().any(|(table, _)| table.starts_with("tcp")),
        "it holds its connection to the server: {states:?}"
    );
    assert!(
        states
            .iter()
            .all(|(table, state)| table.starts_with("tcp") && state != "0A"),
        "no listening TCP socket and no UDP socket: {states:?}"
    );
    let uids = uid_of(pid);
    assert!(
        uids.iter().all(|&u| u != 0),
        "runs unprivileged (real, effective, saved, fs uids): {uids:?}"
    );

    // Revoked: its next call is refused, the CRL confirms it, and it halts for good.
    AgentServiceClient::new(app.authed(&acme.owner_key).await)
        .revoke_agent(RevokeAgentRequest {
            org_id: acme.org.to_string(),
            agent_id,
            reason: "host retired".into(),
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), agent.wait())
        .await
        .expect("the revoked agent halts")
        .unwrap();
    let log = home.log_text();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("is on its org's CRL"), "{log}");
    assert!(home.status.join("halted").exists());
    assert!(!home.status.join("ready").exists());
}

#[tokio::test]
async fn the_agent_refuses_plain_http_unless_allowed_and_a_server_whose_certificate_does_not_chain()
{
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let home = AgentHome::new(&app, "");
    let token = crate::agents::new_token(&app, &acme).await;

    let plain = home
        .command()
        .args(["enroll", "--server", &format!("http://{}", app.addr)])
        .env("COFFER_AGENT_TOKEN", &token)
        .output()
        .await
        .unwrap();
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("plain http://"), "{stderr}");

    // Without --server-ca the server's development certificate chains to nothing trusted.
    let untrusted = home
        .command()
        .args(["enroll", "--server", &app.url()])
        .env("COFFER_AGENT_TOKEN", &token)
        .env("SSL_CERT_FILE", "/nonexistent")
        .output()
        .await
        .unwrap();
    assert!(!untrusted.status.success(), "{untrusted:?}");
    assert!(
        !home.identity.join("identity.json").exists(),
        "nothing stored"
    );

    // The token was not spent: enrolling properly still works.
    home.enroll_with(&app, &token).await;
}

/// A PostgreSQL database on the test server, with a login role for the agent.
pub(crate) struct SourceDb {
    pub name: String,
    pub user: String,
    pub password: String,
}

async fn superuser() -> sqlx::PgPool {
    sqlx::PgPool::connect(&coffer_testkit::superuser_url())
        .await
        .unwrap()
}

fn superuser_options() -> sqlx::postgres::PgConnectOptions {
    coffer_testkit::superuser_url().parse().unwrap()
}

/// The server's host and port.
pub(crate) fn pg_address() -> (String, u16) {
    let options = superuser_options();
    (options.get_host().to_owned(), options.get_port())
}

impl SourceDb {
    /// An empty database and a role that owns it.
    pub(crate) async fn empty(prefix: &str) -> Self {
        let name = coffer_testkit::unique(prefix)
            .to_lowercase()
            .replace('-', "_");
        let user = format!("{name}_agent");
        let password = format!("pw-{}", uuid::Uuid::new_v4());
        let su = superuser().await;
        sqlx::query(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"))
            .execute(&su)
            .await
            .unwrap();
        // The stack's PostgreSQL checks the passwords of this group's members (xtask).
        sqlx::query(&format!("GRANT coffer_password_login TO {user}"))
            .execute(&su)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name} OWNER {user}"))
            .execute(&su)
            .await
            .unwrap();
        Self {
            name,
            user,
            password,
        }
    }

    /// A database seeded with a few tables of rows (text, numbers, bytes, NULLs, JSON).
    pub(crate) async fn seeded(prefix: &str, rows: i64) -> Self {
        let db = Self::empty(prefix).await;
        let pool = db.pool().await;
        // As the agent's role, which then owns what it dumps.
        let script = format!(
            "SET ROLE {user};
             CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text);
             CREATE TABLE orders (id bigint PRIMARY KEY, customer bigint REFERENCES customers,
                 total numeric(12,2), placed timestamptz, notes jsonb, blob bytea);
             INSERT INTO customers SELECT g, 'customer ' || g,
                 CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || g || '@example.test' END
                 FROM generate_series(1, {rows}) g;
             INSERT INTO orders SELECT g, 1 + g % {rows}, g * 1.25,
                 timestamptz '2026-01-01' + g * interval '1 minute',
                 jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 3)),
                 decode(md5(g::text), 'hex') FROM generate_series(1, {rows} * 3) g;",
            user = db.user,
        );
        sqlx::raw_sql(&script).execute(&pool).await.unwrap();
        db
    }

    pub(crate) async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect_with(superuser_options().database(&self.name))
            .await
            .unwrap()
    }

    /// Per-table row counts and content checksums, by table name.
    pub(crate) async fn fingerprint(&self) -> Vec<(String, i64, String)> {
        let pool = self.pool().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut out = Vec::new();
        for table in tables {
            let (count, sum): (i64, Option<String>) = sqlx::query_as(&format!(
                "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
            ))
            .fetch_one(&pool)
            .await
            .unwrap();
            out.push((table, count, sum.unwrap_or_default()));
        }
        out
    }

    /// Registers the database in `org`, served by `agent`, its password in the vault.
    pub(crate) async fn register(&self, app: &TestApp, org: &TestOrg, agent: &str) -> String {
        let (host, port) = pg_address();
        self.register_at(app, org, agent, (&host, port), &self.password)
            .await
    }

    /// Registers the database as reached at `address` with `password` (which may be wrong).
    pub(crate) async fn register_at(
        &self,
        app: &TestApp,
        org: &TestOrg,
        agent: &str,
        (host, port): (&str, u16),
        password: &str,
    ) -> String {
        use coffer_proto::scheduling::v1 as pb;
        let mut vault = crate::credentials::vault(app, org).await;
        let credential = crate::credentials::create(
            &mut vault,
            org.org,
            &coffer_testkit::unique(&format!("{}/password-", self.name)),
            password.as_bytes(),
        )
        .await;
        pb::database_service_client::DatabaseServiceClient::new(app.authed(&org.owner_key).await)
            .register_database(pb::RegisterDatabaseRequest {
                org_id: org.org.to_string(),
                fields: Some(pb::DatabaseFields {
                    name: coffer_testkit::unique(&format!("{}-", self.name)),
                    engine: "postgresql".into(),
                    host: host.into(),
                    port: u32::from(port),
                    database: self.name.clone(),
                    user: self.user.clone(),
                    password_vault_ref: credential.vault_ref,
                    agent_id: agent.into(),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .database_id
    }
}

/// Waits for `job` of `org` to end; returns it.
pub(crate) async fn finished(
    app: &TestApp,
    org: &TestOrg,
    job: &str,
    within: Duration,
) -> coffer_proto::scheduling::v1::Job {
    use coffer_proto::scheduling::v1 as pb;
    let jobs = pb::job_service_client::JobServiceClient::new(app.authed(&org.owner_key).await);
    coffer_testkit::eventually("the job ends", within, || {
        let mut jobs = jobs.clone();
        let request = pb::GetJobRequest {
            org_id: org.org.to_string(),
            job_id: job.to_owned(),
        };
        async move {
            let job = jobs.get_job(request).await.unwrap().into_inner();
            matches!(
                job.state.as_str(),
                "succeeded" | "failed" | "cancelled" | "timed_out"
            )
            .then_some(job)
        }
    })
    .await
}

/// Asserts that `artifact` commits to `object` (size, SHA-256, age header) and the org's
/// `recipient`, and that `object` is age ciphertext in which `plaintext`, a value of the
/// source, does not appear (P1).
pub(crate) fn assert_artifact_of(
    artifact: &coffer_proto::scheduling::v1::Artifact,
    object: &[u8],
    recipient: &str,
    plaintext: &[u8],
) {
    assert_eq!(artifact.size_bytes, object.len() as u64);
    assert_eq!(artifact.sha256, hex::encode(sha2::Sha256::digest(object)));
    assert_eq!(artifact.recipient, recipient);
    assert!(artifact.dump_bytes > 0, "{artifact:?}");
    let (header, _) = crate::credentials::split_age(object);
    assert_eq!(
        artifact.age_header_sha256,
        hex::encode(sha2::Sha256::digest(header))
    );
    assert!(object.starts_with(b"age-encryption.org/v1\n"));
    assert!(!object.windows(plaintext.len()).any(|w| w == plaintext));
}

/// `org`'s recovery key (its age identity), exported by its owner.
pub(crate) async fn recovery_key(app: &TestApp, org: &TestOrg, reason: &str) -> String {
    crate::credentials::org_keys(app, &org.owner_key)
        .await
        .export_recovery_key(coffer_proto::credentials::v1::ExportRecoveryKeyRequest {
            org_id: org.org.to_string(),
            reason: reason.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .identity
        .clone()
}

/// Runs a stock tool to success.
pub(crate) fn stock_tool(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens a backup with stock `age -d -i <recovery key>` and `zstd -d`, through files in `dir`
/// (the pipes of a test helper would fill and stall on a real backup); returns the dump's path.
pub(crate) fn stock_decrypt(dir: &Path, object: &[u8], recovery_key: &str) -> PathBuf {
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(file("recovery.key"), format!("{recovery_key}\n")).unwrap();
    std::fs::write(file("backup.age"), object).unwrap();
    stock_tool(
        "age",
        &[
            "-d",
            "-i",
            &file("recovery.key"),
            "-o",
            &file("backup.zst"),
            &file("backup.age"),
        ],
    );
    stock_tool(
        "zstd",
        &["-q", "-d", &file("backup.zst"), "-o", &file("backup.dump")],
    );
    dir.join("backup.dump")
}

#[tokio::test]
async fn p1_p7_the_agent_backs_up_to_a_local_destination_stock_tools_restore_it_and_a_restore_job_recreates_the_source()
 {
    use coffer_proto::scheduling::v1 as pb;

    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let source = SourceDb::seeded("src", 2000).await;
    let expected = source.fingerprint().await;
    // The agent's account reaches the local root and owns the destination directory.
    std::fs::set_permissions(app.local_root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = AgentHome::new(
        &app,
        &format!(
            "[storage]\nlocal_roots = [\"{}\"]\n",
            app.local_root().display()
        ),
    );
    let agent_id = home.enroll(&app, &acme).await;
    crate::scheduling::seen_by_scheduling(&app, &agent_id, "enrolled_at").await;
    let _agent = home.run();
    let database = source.register(&app, &acme, &agent_id).await;
    let (destination, dir) = app.local_destination(&acme).await;
    give_to_agent(&dir);
    let recipient = crate::credentials::recipient(&app, &acme).await.recipient;

    let owner = app.authed(&acme.owner_key).await;
    let schedule = pb::schedule_service_client::ScheduleServiceClient::new(owner.clone())
        .create_schedule(pb::CreateScheduleRequest {
            org_id: acme.org.to_string(),
            fields: Some(pb::ScheduleFields {
                name: "nightly".into(),
                database_id: database.clone(),
                destination_id: destination,
                cron: "0 3 * * *".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut jobs = pb::job_service_client::JobServiceClient::new(owner.clone());
    let job = jobs
        .run_now(pb::RunNowRequest {
            org_id: acme.org.to_string(),
            schedule_id: schedule.schedule_id,
        })
        .await
        .unwrap()
        .into_inner();
    let done = finished(&app, &acme, &job.job_id, Duration::from_secs(60)).await;
    assert_eq!(done.state, "succeeded", "{done:?}\n{}", home.log_text());

    // The artifact commits to the object the agent wrote: its size and SHA-256, and the
    // org's recipient.
    let artifact = done.artifact.unwrap();
    let object = std::fs::read(dir.join(&artifact.object_key)).unwrap();
    assert_artifact_of(&artifact, &object, &recipient, b"customer 1234");

    // P7: stock age with the exported recovery key, stock zstd, stock pg_restore.
    let keys = tempfile::tempdir().unwrap();
    let identity = recovery_key(&app, &acme, "restore drill").await;
    let dump = stock_decrypt(keys.path(), &object, &identity);
    let stock = SourceDb::empty("stock").await;
    let (host, port) = pg_address();
    let port = port.to_string();
    let user = superuser_options().get_username().to_owned();
    stock_tool(
        "pg_restore",
        &[
            "--no-owner",
            "--exit-on-error",
            "--host",
            &host,
            "--port",
            &port,
            "--username",
            &user,
            "--dbname",
            &stock.name,
            dump.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stock.fingerprint().await,
        expected,
        "stock tools restore the source"
    );

    // A restore job recreates the source in an empty database through the agent.
    let target = SourceDb::empty("target").await;
    let target_id = target.register(&app, &acme, &agent_id).await;
    let restore = jobs
        .start_restore(pb::StartRestoreRequest {
            org_id: acme.org.to_string(),
            backup_job_id: job.job_id.clone(),
            database_id: target_id,
        })
        .await
        .unwrap()
        .into_inner();
    let restored = finished(&app, &acme, &restore.job_id, Duration::from_secs(60)).await;
    assert_eq!(
        restored.state,
        "succeeded",
        "{restored:?}\n{}",
        home.log_text()
    );
    assert_eq!(
        target.fingerprint().await,
        expected,
        "the restore job recreates the source"
    );
}

/// The demangled function symbols linked into `binary`.
fn symbols(binary: &Path) -> Vec<String> {
    let out = std::process::Command::new("nm")
        .args(["--demangle", "--defined-only"])
        .arg(binary)
        .output()
        .expect("run nm (binutils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.splitn(3, ' ').nth(2).map(str::to_owned))
        .collect()
}

#[test]
fn p6_the_agent_binary_has_no_delete_call_compiled_in() {
    // What deleting or replacing a backup object would link: S3 DeleteObject(s) and
    // PutObject (a put replaces), and coffer-storage's own delete and put.
    let forbidden = |s: &str| {
        s.contains("delete_object")
            || s.contains("put_object")
            || s.starts_with("coffer_storage::Store::delete")
            || s.starts_with("coffer_storage::Store::put")
            || s.contains("LocalStore::delete")
            || s.contains("S3Store::delete")
    };
    let agent = symbols(&agent_binary());
    let found: Vec<&String> = agent.iter().filter(|s| forbidden(s)).collect();
    assert!(
        found.is_empty(),
        "delete paths linked into the agent: {found:?}"
    );
    // The scan sees what it looks for: the agent links its uploads, and the server, built
    // with coffer-storage's `delete` feature for retention, links the deletes.
    assert!(agent.iter().any(|s| s.contains("upload_part")));
    let server = symbols(Path::new(env!("CARGO_BIN_EXE_coffer")));
    assert!(server.iter().any(|s| s.contains("delete_object")));
    assert!(
        server
            .iter()
            .any(|s| s.starts_with("coffer_storage::Store::delete"))
    );
}
