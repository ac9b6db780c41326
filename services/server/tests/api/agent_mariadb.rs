//! The `coffer-agent` binary backing up and restoring a MariaDB database (issue 7, point 8):
//! `mariadb-dump --single-transaction | zstd | age` into a destination, proven with stock
//! `age`, `zstd` and the `mariadb` client, and restored by a restore job through the agent.
//!
//! The MariaDB server is the private stack's (`COFFER_TEST_MARIADB_URL`), never the machine's.
//! Each test makes its own account and databases on it.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use coffer_proto::scheduling::v1 as pb;
use tokio::io::AsyncWriteExt as _;

use crate::agent::{
    AgentHome, assert_artifact_of, finished, give_to_agent, recovery_key, stock_decrypt,
};
use crate::agent_jobs::files_under;
use crate::helpers::{TestApp, TestOrg, spawn_tls_app};

/// Where the stack's MariaDB is, and its superuser, from `mysql://user:password@host:port`.
struct Server {
    host: String,
    port: u16,
    user: String,
    password: String,
}

fn server() -> Server {
    let url = coffer_testkit::mariadb_url();
    let rest = url
        .strip_prefix("mysql://")
        .expect("COFFER_TEST_MARIADB_URL is mysql://user:password@host:port");
    let (credentials, address) = rest
        .rsplit_once('@')
        .expect("the URL has user and password");
    let (user, password) = credentials.split_once(':').expect("the URL has a password");
    let (host, port) = address.rsplit_once(':').expect("the URL has a port");
    Server {
        host: host.to_owned(),
        port: port.parse().expect("the port is a number"),
        user: user.to_owned(),
        password: password.to_owned(),
    }
}

/// The stock `mariadb` client as `user`, connected to `database` (none if empty), printing
/// bare tab-separated rows. The password travels in the environment, as the agent passes it.
fn mariadb(user: &str, password: &str, database: &str) -> tokio::process::Command {
    let server = server();
    let mut cmd = tokio::process::Command::new("mariadb");
    cmd.args(["--no-defaults", "--protocol=tcp", "--host", &server.host])
        .args(["--port", &server.port.to_string(), "--user", user])
        .args([
            "--default-character-set=utf8mb4",
            "--batch",
            "--skip-column-names",
        ])
        .args((!database.is_empty()).then(|| format!("--database={database}")))
        .env("MYSQL_PWD", password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits for a `mariadb` client; its stdout, or a failed test quoting its stderr.
async fn output(child: tokio::process::Child, what: &str) -> String {
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "mariadb: {}\n{what}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `statements` as `user`; their tab-separated output.
async fn sql(user: &str, password: &str, database: &str, statements: &str) -> String {
    let mut child = mariadb(user, password, database)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(statements.as_bytes()).await.unwrap();
    drop(stdin);
    output(child, statements).await
}

/// As the stack's superuser.
async fn admin(statements: &str) -> String {
    let server = server();
    sql(&server.user, &server.password, "", statements).await
}

/// A MariaDB account for the agent, with its own password, that owns the databases it is
/// given. One account serves source and target alike, as on a real server: the views,
/// triggers, routines and events it dumps name it as their DEFINER, and restoring them
/// as another account would take the SET USER privilege.
struct Account {
    user: String,
    password: String,
}

impl Account {
    async fn new() -> Self {
        let user = coffer_testkit::unique("agent_");
        let password = format!("pw-{}", uuid::Uuid::new_v4());
        admin(&format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';"
        ))
        .await;
        Self { user, password }
    }

    /// An empty database this account has every privilege on.
    async fn database(&self, prefix: &str) -> MariaDb {
        let name = coffer_testkit::unique(prefix)
            .to_lowercase()
            .replace('-', "_");
        admin(&format!(
            "CREATE DATABASE `{name}`; GRANT ALL PRIVILEGES ON `{name}`.* TO '{}'@'%';",
            self.user
        ))
        .await;
        MariaDb {
            name,
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }
}

/// A database on the stack's MariaDB, reached as its account.
struct MariaDb {
    name: String,
    user: String,
    password: String,
}

impl MariaDb {
    async fn run(&self, statements: &str) -> String {
        sql(&self.user, &self.password, &self.name, statements).await
    }

    /// Fills the database, as its account: tables of varied types (integers, decimals,
    /// doubles, dates with microseconds, timestamps, ENUM, SET, four-byte UTF-8, escapes,
    /// binary, JSON, NULLs), a foreign key, an AUTO_INCREMENT counter, a trigger, a view, a
    /// function, a procedure and a (disabled) event; `rows` customers and three orders each.
    async fn seed(&self, rows: u32) {
        let orders = rows * 3;
        self.run(&format!(
            "CREATE TABLE customers (
                 id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200),
                 balance DECIMAL(12,2), score DOUBLE, created DATETIME(6), seen TIMESTAMP NULL,
                 flags SET('a','b','c'), kind ENUM('x','y'), note TEXT, avatar BLOB, doc JSON
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
             CREATE TABLE orders (
                 id BIGINT AUTO_INCREMENT PRIMARY KEY, customer BIGINT NOT NULL, total DECIMAL(12,2),
                 placed DATE, FOREIGN KEY (customer) REFERENCES customers (id)
             ) ENGINE=InnoDB;
             CREATE TABLE order_log (id INT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT, at DATETIME);
             CREATE TRIGGER orders_logged AFTER INSERT ON orders FOR EACH ROW
                 INSERT INTO order_log (order_id, at) VALUES (NEW.id, '2026-01-01 00:00:00');
             CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 1000;
             CREATE FUNCTION doubled(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
             CREATE PROCEDURE order_count(OUT n INT) SELECT COUNT(*) INTO n FROM orders;
             CREATE EVENT nightly_prune ON SCHEDULE EVERY 1 DAY DISABLE
                 DO DELETE FROM order_log WHERE id < 0;
             INSERT INTO customers SELECT seq, CONCAT('customer ', seq, ' ☕ 𝄞'),
                 IF(seq % 7 = 0, NULL, CONCAT('c', seq, '@example.test')), seq * 1.25, seq / 3,
                 TIMESTAMP('2026-01-01') + INTERVAL seq SECOND + INTERVAL 123456 MICROSECOND,
                 FROM_UNIXTIME(1700000000 + seq), IF(seq % 2 = 0, 'a,c', 'b'),
                 IF(seq % 3 = 0, 'x', 'y'), CONCAT('line1\\nline2\\t''q'' \"dq\" \\\\ ', seq),
                 UNHEX(MD5(seq)), JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', seq % 3))
                 FROM seq_1_to_{rows};
             INSERT INTO orders (customer, total, placed) SELECT 1 + seq % {rows}, seq * 0.75,
                 DATE('2026-01-01') + INTERVAL (seq % 365) DAY FROM seq_1_to_{orders};"
        ))
        .await;
    }

    /// Per-table row counts and `CHECKSUM TABLE … EXTENDED` (a checksum of every row's
    /// content), then the views, triggers, routines and events, by name.
    async fn fingerprint(&self) -> Vec<String> {
        let tables = self
            .run(
                "SELECT table_name FROM information_schema.tables
                 WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1",
            )
            .await;
        let mut out = Vec::new();
        for table in tables.lines() {
            let count = self.run(&format!("SELECT COUNT(*) FROM `{table}`")).await;
            let checksum = self
                .run(&format!("CHECKSUM TABLE `{table}` EXTENDED"))
                .await;
            // `<database>.<table>\t<checksum>`: the database's name differs between copies.
            let checksum = checksum.trim().rsplit('\t').next().unwrap().to_owned();
            out.push(format!(
                "table {table}: {} rows, checksum {checksum}",
                count.trim()
            ));
        }
        let objects = self
            .run(
                "SELECT CONCAT('view ', table_name) FROM information_schema.views
                     WHERE table_schema = DATABASE()
                 UNION ALL SELECT CONCAT('trigger ', trigger_name, ' on ', event_object_table)
                     FROM information_schema.triggers WHERE trigger_schema = DATABASE()
                 UNION ALL SELECT CONCAT(LOWER(routine_type), ' ', routine_name)
                     FROM information_schema.routines WHERE routine_schema = DATABASE()
                 UNION ALL SELECT CONCAT('event ', event_name, ' ', status)
                     FROM information_schema.events WHERE event_schema = DATABASE()
                 ORDER BY 1",
            )
            .await;
        out.extend(objects.lines().map(str::to_owned));
        let view = self.run("SELECT COUNT(*) FROM big_orders").await;
        out.push(format!("view big_orders: {} rows", view.trim()));
        out
    }

    /// Registers the database in `org` with the mariadb engine, served by `agent`, with
    /// `password` in the vault as its credential.
    async fn register(&self, app: &TestApp, org: &TestOrg, agent: &str, password: &str) -> String {
        let mut vault = crate::credentials::vault(app, org).await;
        let credential = crate::credentials::create(
            &mut vault,
            org.org,
            &format!("{}/password", self.name),
            password.as_bytes(),
        )
        .await;
        let server = server();
        pb::database_service_client::DatabaseServiceClient::new(app.authed(&org.owner_key).await)
            .register_database(pb::RegisterDatabaseRequest {
                org_id: org.org.to_string(),
                fields: Some(pb::DatabaseFields {
                    name: self.name.clone(),
                    engine: "mariadb".into(),
                    host: server.host,
                    port: u32::from(server.port),
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

/// An enrolled, running agent of `org` that may write under the app's local root.
async fn running_agent(app: &TestApp, org: &TestOrg) -> (AgentHome, String, tokio::process::Child) {
    // The agent's account reaches the local root and owns the destination directory.
    std::fs::set_permissions(app.local_root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = AgentHome::new(
        app,
        &format!(
            "[storage]\nlocal_roots = [\"{}\"]\n",
            app.local_root().display()
        ),
    );
    let agent_id = home.enroll(app, org).await;
    crate::scheduling::seen_by_scheduling(app, &agent_id, "enrolled_at").await;
    let agent = home.run();
    (home, agent_id, agent)
}

/// Runs a backup of `database` to `destination` now; the finished job.
async fn back_up(
    app: &TestApp,
    org: &TestOrg,
    database: &str,
    destination: &str,
    max_attempts: u32,
) -> pb::Job {
    let owner = app.authed(&org.owner_key).await;
    let schedule = pb::schedule_service_client::ScheduleServiceClient::new(owner.clone())
        .create_schedule(pb::CreateScheduleRequest {
            org_id: org.org.to_string(),
            fields: Some(pb::ScheduleFields {
                name: coffer_testkit::unique("nightly-"),
                database_id: database.to_owned(),
                destination_id: destination.to_owned(),
                cron: "0 3 * * *".into(),
                max_attempts,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let job = pb::job_service_client::JobServiceClient::new(owner)
        .run_now(pb::RunNowRequest {
            org_id: org.org.to_string(),
            schedule_id: schedule.schedule_id,
        })
        .await
        .unwrap()
        .into_inner();
    finished(app, org, &job.job_id, Duration::from_secs(60)).await
}

#[tokio::test]
async fn p1_p7_the_agent_backs_up_mariadb_with_mariadb_dump_stock_tools_restore_it_and_a_restore_job_recreates_it_in_another_database()
 {
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let account = Account::new().await;
    let source = account.database("src_").await;
    source.seed(2000).await;
    let expected = source.fingerprint().await;
    assert!(
        expected
            .iter()
            .any(|line| line.starts_with("table customers: 2000 rows")),
        "{expected:?}"
    );
    assert!(
        expected
            .iter()
            .any(|line| line.starts_with("table order_log: 6000 rows")),
        "the trigger logged every order: {expected:?}"
    );

    let (home, agent_id, _agent) = running_agent(&app, &acme).await;
    let database = source
        .register(&app, &acme, &agent_id, &source.password)
        .await;
    let (destination, dir) = app.local_destination(&acme).await;
    give_to_agent(&dir);
    let recipient = crate::credentials::recipient(&app, &acme).await.recipient;

    let done = back_up(&app, &acme, &database, &destination, 0).await;
    assert_eq!(done.state, "succeeded", "{done:?}\n{}", home.log_text());

    // The artifact commits to the object the agent wrote.
    let artifact = done.artifact.clone().unwrap();
    let object = std::fs::read(dir.join(&artifact.object_key)).unwrap();
    assert_artifact_of(&artifact, &object, &recipient, b"customer 1234");

    // P7: stock age with the exported recovery key, stock zstd, the stock mariadb client.
    let keys = tempfile::tempdir().unwrap();
    let identity = recovery_key(&app, &acme, "restore drill").await;
    let sql = stock_decrypt(keys.path(), &object, &identity);
    let dump = std::fs::read_to_string(&sql).unwrap();
    assert!(dump.contains("-- MariaDB dump"), "a mariadb-dump SQL dump");
    assert!(dump.contains("CREATE TABLE `customers`"));
    // It names no database: a restore goes wherever the client points it.
    assert!(
        !dump
            .lines()
            .any(|line| line.starts_with("USE ") || line.contains("CREATE DATABASE")),
        "the dump selects or creates no database"
    );

    let stock = account.database("stock_").await;
    let restore = mariadb(&stock.user, &stock.password, &stock.name)
        .stdin(std::fs::File::open(&sql).unwrap())
        .spawn()
        .unwrap();
    output(restore, "restore backup.sql").await;
    assert_eq!(
        stock.fingerprint().await,
        expected,
        "stock tools restore the source"
    );

    // A restore job recreates the source through the agent, in the database the job names.
    let target = account.database("target_").await;
    let target_id = target
        .register(&app, &acme, &agent_id, &target.password)
        .await;
    let restore = pb::job_service_client::JobServiceClient::new(app.authed(&acme.owner_key).await)
        .start_restore(pb::StartRestoreRequest {
            org_id: acme.org.to_string(),
            backup_job_id: done.job_id.clone(),
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
    assert_eq!(
        source.fingerprint().await,
        expected,
        "and leaves the source as it was"
    );
    let log = home.log_text();
    assert!(
        !log.contains(&source.password),
        "no password in the agent's log"
    );
}

#[tokio::test]
async fn a_mariadb_backup_with_a_wrong_password_fails_with_a_clear_reason_that_does_not_carry_it() {
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let account = Account::new().await;
    let source = account.database("src_").await;
    source.seed(10).await;

    let (home, agent_id, _agent) = running_agent(&app, &acme).await;
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4());
    let database = source.register(&app, &acme, &agent_id, &wrong).await;
    let (destination, dir) = app.local_destination(&acme).await;
    give_to_agent(&dir);

    let done = back_up(&app, &acme, &database, &destination, 1).await;
    assert_eq!(done.state, "failed", "{done:?}\n{}", home.log_text());
    assert!(
        done.reason.contains("mariadb-dump") && done.reason.contains("Access denied"),
        "the reason names the tool and the refusal: {}",
        done.reason
    );
    assert!(
        done.reason.contains(&source.user),
        "and the account: {}",
        done.reason
    );
    let log = home.log_text();
    for secret in [&wrong, &source.password] {
        assert!(!done.reason.contains(secret.as_str()), "{}", done.reason);
        assert!(
            !log.contains(secret.as_str()),
            "no password in the agent's log"
        );
    }
    assert!(done.artifact.is_none());
    let left = files_under(&dir);
    assert!(left.is_empty(), "nothing partial is left behind: {left:?}");
}
