//! Test support: real PostgreSQL and NATS from the private stack that `cargo xtask test`
//! starts, with a fresh database and a fresh stream/subject prefix per test so tests never
//! see each other. Never mocks of either.
//!
//! Tests run through `cargo xtask test`, which exports where the stack is. Run directly, they
//! fail at once with a message saying so, rather than passing without the thing they test.

pub mod idp;
pub mod relay;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_db::{Database, DbConfig, Schema, ServiceName};
use coffer_eventstore::BusConfig;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

fn stack_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite through `cargo xtask test`, which starts the private stack")
    })
}

/// The private stack's superuser URL (database `postgres`).
pub fn superuser_url() -> String {
    stack_var("COFFER_TEST_PG_URL")
}

/// The private MariaDB server's superuser, as `mysql://user:password@127.0.0.1:port`.
pub fn mariadb_url() -> String {
    stack_var("COFFER_TEST_MARIADB_URL")
}

/// The private NATS server's URL.
pub fn nats_url() -> String {
    stack_var("COFFER_TEST_NATS_URL")
}

/// The KMS API emulator's endpoint (moto's server).
pub fn kms_endpoint() -> String {
    stack_var("COFFER_TEST_KMS_ENDPOINT")
}

/// The pinned nats-server binary, for tests that run their own server.
pub fn nats_server_bin() -> PathBuf {
    stack_var("COFFER_NATS_SERVER_BIN").into()
}

/// The pinned moto server binary, for tests that run their own (e.g. one enforcing auth).
pub fn moto_server_bin() -> PathBuf {
    stack_var("COFFER_MOTO_SERVER_BIN").into()
}

/// `.coffer/` of the repository: scratch space for tests.
pub fn stack_dir() -> PathBuf {
    stack_var("COFFER_STACK_DIR").into()
}

/// A short unique token for names (databases, streams, subjects).
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// A database created for one test, owned by `coffer_owner`.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Config pointing at it with the owner role, as the server would use.
    pub config: DbConfig,
    superuser_url: String,
}

impl TestDb {
    /// Creates an empty database owned by `coffer_owner`.
    pub async fn create() -> Self {
        let superuser = superuser_url();
        let name = unique("t_");
        let mut conn = PgConnection::connect(&superuser)
            .await
            .expect("connect as superuser");
        sqlx::raw_sql(&format!("CREATE DATABASE {name} OWNER coffer_owner"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = superuser
            .rsplit_once('/')
            .expect("url has a database")
            .0
            .to_owned();
        let owner_url = base.replacen("postgres@", "coffer_owner@", 1);
        Self {
            config: DbConfig::new(format!("{owner_url}/{name}")),
            superuser_url: format!("{base}/{name}"),
            name,
        }
    }

    /// Creates a database and applies `schemas`' migrations as the owner.
    pub async fn migrated(schemas: &[Schema]) -> Self {
        let db = Self::create().await;
        coffer_db::migrate(&db.config, schemas)
            .await
            .expect("migrate test database");
        db
    }

    /// A service pool, logged in as the service role.
    pub async fn service(&self, service: ServiceName) -> Database {
        Database::connect(&self.config, service)
            .await
            .expect("connect as service role")
    }

    /// A pool logged in as the superuser, for assertions and tamper tests.
    pub async fn superuser(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.superuser_url)
            .await
            .expect("connect as superuser")
    }

    /// A connection logged in as the owner role.
    pub async fn owner(&self) -> PgConnection {
        PgConnection::connect_with(&self.config.owner_options().expect("owner url"))
            .await
            .expect("connect as owner")
    }
}

/// A NATS connection and a bus config with names unique to this test; streams created.
pub async fn bus() -> (
    async_nats::Client,
    async_nats::jetstream::Context,
    BusConfig,
) {
    bus_at(&nats_url()).await
}

/// Like [`bus`], against a specific server.
pub async fn bus_at(
    url: &str,
) -> (
    async_nats::Client,
    async_nats::jetstream::Context,
    BusConfig,
) {
    let client = async_nats::connect(url).await.expect("connect to nats");
    let js = async_nats::jetstream::new(client.clone());
    let bus = BusConfig::with_prefix(&unique("t"));
    bus.ensure_streams(&js).await.expect("create test streams");
    (client, js, bus)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A nats-server with JetStream that a test owns: it can stop and restart it, keeping the
/// port and the store.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with its own store directory.
    pub fn start() -> Self {
        let store = stack_dir().join("test-nats").join(unique("n"));
        std::fs::create_dir_all(&store).expect("create nats store dir");
        let mut s = Self {
            port: free_port(),
            store,
            child: None,
        };
        s.restart();
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: the harshest stop), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store, and waits until it accepts.
    pub fn restart(&mut self) {
        self.stop();
        let conf = self.store.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                self.port,
                self.store.display()
            ),
        )
        .expect("write nats config");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A moto server (S3 and KMS API emulator) a test owns, separate from the stack's.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    child: Child,
}

impl MotoServer {
    /// Starts a moto server that enforces request signatures: only access keys it issued
    /// itself (through its IAM API) are accepted (`INITIAL_NO_AUTH_ACTION_COUNT=0`). Waits
    /// until it answers.
    pub fn start_enforcing_auth() -> Self {
        let port = free_port();
        let child = Command::new(moto_server_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let server = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs test telemetry (idempotent), so spans carry real trace ids.
pub fn telemetry() {
    coffer_telemetry::init_for_tests();
}

/// Every message currently in `stream`, in sequence order.
pub async fn stream_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let s = js.get_stream(stream).await.expect("stream exists");
    let info = s.get_info().await.expect("stream info");
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}

/// Waits until `stream` holds at least `n` messages, then returns them all.
pub async fn wait_for_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    eventually(&format!("{n} messages in {stream}"), timeout, || async {
        let s = js.get_stream(stream).await.ok()?;
        let info = s.get_info().await.ok()?;
        (info.state.messages as usize >= n).then_some(())
    })
    .await;
    stream_messages(js, stream).await
}
