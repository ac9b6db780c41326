//! `cargo xtask demo`: Coffer's whole story on the private stack (DESIGN.md §10, issue 7).
//!
//! The stack comes up; `coffer serve --target all` serves TLS with a development certificate;
//! through the `coffer` CLI an org, an admin API key and an enrollment token are made;
//! `coffer-agent` enrolls and runs (as an unprivileged account when xtask is root); a sample
//! PostgreSQL database is seeded with `pgbench -i` and registered with a local destination;
//! a schedule fires a backup; the backup is restored with stock `age`, `zstd` and `pg_restore`
//! and by a restore job, each compared table by table with the source; `coffer audit verify`
//! checks the org's log offline against a checkpoint kept at the start. Then it says what
//! happened, how big and how fast, and where the files are.
//!
//! Secrets (API keys, the enrollment token, the database password, the recovery key) go to
//! 0600 files under `.coffer/demo/secrets/`, never to the terminal, a log or a command line.
//! Everything started stops at the end, on failure and on Ctrl-C too: the agent, the server
//! and the stack are drop guards, dropped in that order.

mod agent;
mod cli;
mod daemon;
mod report;
mod sample;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sha2::{Digest, Sha256};

use self::agent::{AgentHome, UNPRIVILEGED};
use self::cli::{Coffer, Out, number, text};
use self::daemon::Daemon;
use self::report::{Report, mib, secs};
use self::sample::{Cluster, Fingerprint, thousands};
use crate::install::{self, sha256_hex};
use crate::interrupt;
use crate::paths::Repo;
use crate::proc::{self, step};
use crate::stack::Stack;

/// The demo's local KMS master key, created fresh in `.coffer/demo/kms` on every run.
const KMS_KEY_ID: &str = "demo-master";
/// `pgbench -i -s`: 100,000 `pgbench_accounts` rows per unit, about 15 MiB.
const PGBENCH_SCALE: u32 = 10;
/// The customer's login role, and the databases: the source, the one the stock tools restore
/// into, and the one the restore job restores into.
const ROLE: &str = "demo_app";
const SOURCE_DB: &str = "demo_pgbench";
const STOCK_DB: &str = "demo_stock_restore";
const RESTORED_DB: &str = "demo_job_restore";
/// How far ahead of its creation the schedule's (daily) run falls.
const SCHEDULE_LEAD: Duration = Duration::from_secs(15);
const JOB_TIMEOUT: Duration = Duration::from_secs(240);

pub fn run() -> Result<ExitCode> {
    let repo = Repo::locate()?;
    let tools = install::ensure(&repo)?;
    for tool in ["pgbench", "pg_dump", "pg_restore", "psql"] {
        if !tools.pg_bin.join(tool).is_file() {
            bail!(
                "{tool} is missing from {}; on Debian it comes with the postgresql package",
                tools.pg_bin.display()
            );
        }
    }
    let dirs = Dirs::fresh(&repo)?;
    let mut story = Story::new();

    let mut stack = Stack::start(&repo, &tools)?;
    story.lap("start Postgres, nats-server and moto");

    step("building coffer and coffer-agent (cargo build -p coffer-server -p coffer-agent)");
    proc::run_ok(
        proc::cargo()
            .args(["build", "-p", "coffer-server", "-p", "coffer-agent"])
            .current_dir(&repo.root),
    )?;
    let coffer = built_binary(&repo, "coffer")?;
    let agent_binary = built_binary(&repo, "coffer-agent")?;
    story.lap("build coffer and coffer-agent");
    let after_build = Instant::now();

    let home = AgentHome::prepare(&dirs.agent_base, agent_binary, &tools.pg_bin)?;
    let served = serve(&repo, &dirs, &stack, &coffer, &home)?;
    let mut server = served.server;
    let (server_url, server_cert) = (served.url, served.cert);
    story.lap("migrate, admin init, start coffer serve");

    let cli = Coffer::new(
        coffer.clone(),
        server_url.clone(),
        server_cert.clone(),
        dirs.cli.clone(),
        repo.root.clone(),
    );

    let Keys {
        org_id,
        owner: owner_key,
        admin: admin_key,
    } = org_and_keys(&cli, &dirs, &repo, &served.platform_key)?;

    // The agent: a single-use token, enrollment, and `run`.
    let token_file = dirs.secret("enrollment-token.json");
    step(format!(
        "coffer agent token create demo-host (token in {})",
        repo.show(&token_file)
    ));
    let token = cli.call(
        &admin_key,
        &["agent", "token", "create", "demo-host", "--ttl", "15m"],
        Out::Secret(&token_file),
    )?;
    home.trust(&server_cert)?;
    let enroll_log = dirs.root.join("agent-enroll.log");
    step(format!(
        "coffer-agent enroll --server {server_url} (identity in {}, log: {})",
        repo.show(&home.identity),
        repo.show(&enroll_log)
    ));
    let agent_id = home.enroll(
        &server_url,
        text(&token, "/secret", "`coffer agent token create`")?,
        &enroll_log,
    )?;
    drop(token);
    let agent_log = dirs.root.join("agent.log");
    step(format!(
        "coffer-agent run as {} (log: {})",
        home.account
            .as_ref()
            .map_or_else(|| "xtask's user".to_owned(), |u| u.name.clone()),
        repo.show(&agent_log)
    ));
    let mut agent = home.run(&agent_log)?;
    let identity_owner = fs::metadata(&home.identity)
        .with_context(|| format!("inspect {}", home.identity.display()))?;
    story.lap("org, API keys, enrollment token, agent enrolled and running");

    // The customer's database: a role, pgbench's tables, its password in the vault.
    let pg = Cluster::new(stack.var("COFFER_TEST_PG_URL"), &tools.pg_bin)?;
    let password_file = dirs.secret("demo-db-password");
    let password = random_hex(24)?;
    fs::write(new_secret_path(&password_file)?, &password)
        .with_context(|| format!("write {}", password_file.display()))?;
    let pgbench_log = dirs.root.join("pgbench.log");
    step(format!(
        "seeding {SOURCE_DB} with pgbench -i -s {PGBENCH_SCALE} as role {ROLE} (log: {})",
        repo.show(&pgbench_log)
    ));
    pg.create_role(ROLE, &password)?;
    pg.create_database(SOURCE_DB, ROLE)?;
    pg.pgbench_init(SOURCE_DB, ROLE, &password, PGBENCH_SCALE, &pgbench_log)?;
    let source_size = pg.size(SOURCE_DB)?;
    let source = pg.fingerprint(SOURCE_DB)?;
    story.lap("seed the sample database with pgbench");

    step("registering the database (password in the vault) and a local destination");
    let credential = cli.call(
        &admin_key,
        &[
            "credential",
            "create",
            "demo/pgbench-password",
            "--purpose",
            "database",
            "--value-file",
            &password_file.to_string_lossy(),
        ],
        Out::Answer("credential"),
    )?;
    let vault_ref = text(&credential, "/vault_ref", "`coffer credential create`")?.to_owned();
    let register = |name: &str, database: &str| {
        register_database(&cli, &admin_key, &pg, name, database, &vault_ref, &agent_id)
    };
    let source_id = register("demo-pgbench", SOURCE_DB)?;
    let destination = cli.call(
        &admin_key,
        &[
            "destination",
            "register-local",
            "--name",
            "demo-local",
            "--path",
            &home.destination.to_string_lossy(),
        ],
        Out::Answer("destination"),
    )?;
    let destination_id = text(
        &destination,
        "/destination_id",
        "`coffer destination register-local`",
    )?
    .to_owned();

    // A daily schedule whose run falls shortly after it is created: a real firing, no run-now.
    let (cron, due) = daily_cron_after(SCHEDULE_LEAD);
    let schedule = cli.call(
        &admin_key,
        &[
            "schedule",
            "create",
            "demo-daily",
            "--database",
            &source_id,
            "--destination",
            &destination_id,
            "--cron",
            &cron,
            "--keep-last",
            "7",
        ],
        Out::Answer("schedule"),
    )?;
    let schedule_id = text(&schedule, "/schedule_id", "`coffer schedule create`")?.to_owned();
    step(format!(
        "schedule demo-daily created: cron \"{cron}\" (every day at {due} UTC), next run at {}",
        schedule
            .pointer("/next_fire_at")
            .and_then(Value::as_str)
            .unwrap_or("(none)")
    ));
    story.lap("register database, destination and schedule");

    // While it waits: the owner exports the recovery key, and a checkpoint is kept as witness.
    let (recovery_key, recipient) = export_recovery_key(&cli, &dirs, &repo, &owner_key)?;
    let witness = keep_witness(&cli, &dirs, &repo, &admin_key)?;

    step(format!(
        "waiting for schedule demo-daily to fire at {due} UTC"
    ));
    let fire_wait = Instant::now();
    let backup_job = poll(
        "the schedule's first backup job",
        SCHEDULE_LEAD + Duration::from_secs(60),
        || {
            agent.check_alive()?;
            server.check_alive()?;
            let jobs = cli.call(
                &admin_key,
                &["job", "list", "--schedule", &schedule_id],
                Out::Answer("scheduled-jobs"),
            )?;
            Ok(jobs
                .pointer("/jobs/0/job_id")
                .and_then(Value::as_str)
                .map(str::to_owned))
        },
    )?;
    story.lap_since("wait for the schedule to fire", fire_wait);
    step(format!("the schedule fired backup job {backup_job}"));
    let backup = follow_job(
        &cli,
        &admin_key,
        &backup_job,
        "backup",
        &mut agent,
        &mut server,
    )?;
    story.lap_since(
        "backup job (pg_dump | zstd | age → destination)",
        backup.started,
    );
    let object_key = text(&backup.job, "/artifact/object_key", "`coffer job get`")?.to_owned();
    let object_size = number(&backup.job, "/artifact/size_bytes", "`coffer job get`")?;
    let object_sha256 = text(&backup.job, "/artifact/sha256", "`coffer job get`")?.to_owned();
    let object = home.destination.join(&object_key);
    check_object(&object, object_size, &object_sha256)?;
    let encrypted_to = text(&backup.job, "/artifact/recipient", "`coffer job get`")?;
    if encrypted_to != recipient {
        bail!("the backup is encrypted to {encrypted_to}, not to the org's recipient {recipient}");
    }

    // P7: stock tools and the exported recovery key, nothing of Coffer's.
    let stock_started = Instant::now();
    step(format!(
        "restoring with stock tools: age -d -i {} {} | zstd -d | pg_restore --dbname {STOCK_DB}",
        repo.show(&recovery_key),
        repo.show(&object)
    ));
    pg.create_database(STOCK_DB, "postgres")?;
    let dump_size = pg.stock_restore(&recovery_key, &object, STOCK_DB, &dirs.root)?;
    let stock = pg.fingerprint(STOCK_DB)?;
    same_as_source(&source, &stock, STOCK_DB)?;
    story.lap_since("stock age | zstd | pg_restore, compared", stock_started);

    // A restore job: the agent restores the backup into another database.
    pg.create_database(RESTORED_DB, ROLE)?;
    let restored_id = register("demo-pgbench-restored", RESTORED_DB)?;
    let started = cli.call(
        &admin_key,
        &["job", "restore", &backup_job, "--database", &restored_id],
        Out::Answer("restore-job"),
    )?;
    let restore_job = text(&started, "/job_id", "`coffer job restore`")?.to_owned();
    step(format!(
        "coffer job restore {backup_job} --database {restored_id}: restore job {restore_job}"
    ));
    let restore = follow_job(
        &cli,
        &admin_key,
        &restore_job,
        "restore",
        &mut agent,
        &mut server,
    )?;
    let restored = pg.fingerprint(RESTORED_DB)?;
    same_as_source(&source, &restored, RESTORED_DB)?;
    story.lap_since("restore job into a new database, compared", restore.started);

    // The audit log: every step above is in it; export it and verify it offline.
    let audit_started = Instant::now();
    let audited = verify_audit(
        &cli,
        &dirs,
        &repo,
        &admin_key,
        &org_id,
        &witness,
        [&backup_job, &restore_job],
    )?;
    story.lap_since("audit export and offline verification", audit_started);
    let total = after_build.elapsed();

    agent.stop();
    server.stop();
    stack.stop();

    let show = |p: &Path| repo.show(p);
    let report = Report {
        total,
        server_url,
        org_id,
        agent_id,
        run_as: match &home.account {
            Some(user) => format!("{} (uid {})", user.name, user.uid),
            None => "xtask's own user".to_owned(),
        },
        scale: PGBENCH_SCALE,
        source,
        source_size,
        cron,
        due,
        backup_job,
        backup_took: backup.took,
        dump_size,
        object_size,
        object_sha256,
        restore_job,
        restore_took: restore.took,
        audit_size: audited.size,
        audit_root: audited.root,
        witness_size: witness.size,
        backup_seq: audited.backup_seq,
        restore_seq: audited.restore_seq,
        export_seq: audited.export_seq,
        laps: story.laps,
        files: vec![
            ("backup object", show(&object)),
            (
                "agent identity",
                format!(
                    "{} (owned by {}, mode {:o})",
                    show(&home.identity),
                    owner_name(&home, identity_owner.uid()),
                    identity_owner.mode() & 0o777
                ),
            ),
            ("agent config", show(&home.config)),
            (
                "server config",
                format!(
                    "{} (certificate {})",
                    show(&served.config),
                    show(&server_cert)
                ),
            ),
            (
                "audit bundle",
                format!(
                    "{} (witness {})",
                    show(&audited.bundle),
                    show(&witness.note)
                ),
            ),
            (
                "secrets (0600)",
                format!(
                    "{}: API keys, enrollment token, database password, recovery.key",
                    show(&dirs.secrets)
                ),
            ),
            ("CLI answers", show(&dirs.cli)),
            (
                "logs",
                [
                    &served.log,
                    &agent_log,
                    &enroll_log,
                    &pgbench_log,
                    &served.migrate_log,
                ]
                .map(|log| show(log))
                .join(", ")
                    + ", .coffer/{pg,nats,moto}.log",
            ),
            (
                "stock-tool logs",
                show(&dirs.root.join("stock-{age,zstd,pg_restore}.log")),
            ),
        ],
    };
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// The running server and what starting it made.
#[derive(Debug)]
struct Served {
    server: Daemon,
    url: String,
    /// Its development certificate, which clients trust.
    cert: PathBuf,
    config: PathBuf,
    log: PathBuf,
    migrate_log: PathBuf,
    /// The platform owner's API key (also in `secrets/platform-owner.json`).
    platform_key: String,
}

/// A local KMS key, `coffer migrate`, `coffer admin init`, then `coffer serve --target all`
/// over TLS, until it accepts connections.
fn serve(
    repo: &Repo,
    dirs: &Dirs,
    stack: &Stack,
    coffer: &Path,
    home: &AgentHome,
) -> Result<Served> {
    let grpc_port = proc::free_port()?;
    let server_config = dirs.root.join("coffer.toml");
    let server_cert = dirs.tls.join("server.pem");
    write_server_config(&server_config, &server_cert, &dirs.tls, &home.local_root)?;
    let coffer_cmd = |args: &[&str]| {
        let mut cmd = Command::new(coffer);
        cmd.args(args)
            .current_dir(&repo.root)
            .envs(stack.env().iter().cloned())
            .env_remove("COFFER_CONFIG")
            .env("COFFER_DATABASE__URL", stack.var("COFFER_TEST_OWNER_URL"))
            .env("COFFER_NATS__URL", stack.var("COFFER_TEST_NATS_URL"))
            .env("COFFER_GRPC__LISTEN", format!("127.0.0.1:{grpc_port}"))
            .env("COFFER_KMS__PROVIDER", "local")
            .env("COFFER_KMS__KEY_DIR", &dirs.kms)
            .env("COFFER_KMS__KEY_ID", KMS_KEY_ID);
        cmd
    };

    step(format!(
        "creating local KMS master key {KMS_KEY_ID} in {}",
        repo.show(&dirs.kms)
    ));
    proc::run_logged(
        coffer_cmd(&[
            "admin",
            "create-local-kms-key",
            "--key-id",
            KMS_KEY_ID,
            "--key-dir",
        ])
        .arg(&dirs.kms),
        &dirs.root.join("kms.log"),
    )?;
    let migrate_log = dirs.root.join("migrate.log");
    step(format!(
        "running coffer migrate (log: {})",
        repo.show(&migrate_log)
    ));
    proc::run_logged(&mut coffer_cmd(&["migrate"]), &migrate_log)?;

    // The platform owner's key is a secret: it goes to a 0600 file, never to the terminal.
    let init_file = dirs.secret("platform-owner.json");
    step(format!(
        "running coffer admin init (platform owner's API key in {})",
        repo.show(&init_file)
    ));
    proc::run_ok(
        coffer_cmd(&[
            "admin",
            "init",
            "--owner-email",
            "owner@platform.demo",
            "--json",
        ])
        .stdout(new_secret_file(&init_file)?),
    )?;
    let init = read_json(&init_file)?;
    let platform_key = text(&init, "/api_key", "`coffer admin init --json`")?.to_owned();

    let serve_log = dirs.root.join("serve.log");
    let server_url = format!("https://localhost:{grpc_port}");
    step(format!(
        "starting coffer serve --target all on {server_url} (TLS, config {}, log: {})",
        repo.show(&server_config),
        repo.show(&serve_log)
    ));
    let mut serve = coffer_cmd(&["serve", "--target", "all"]);
    serve.arg("--config").arg(&server_config);
    let mut server = Daemon::spawn("coffer serve", serve, &serve_log)?;
    proc::wait_for("coffer serve", Duration::from_secs(60), || {
        server.check_alive()?;
        Ok(proc::tcp_accepts(grpc_port) && server_cert.is_file())
    })?;
    Ok(Served {
        server,
        url: server_url,
        cert: server_cert,
        config: server_config,
        log: serve_log,
        migrate_log,
        platform_key,
    })
}

/// The org's id and the keys that act in it.
#[derive(Debug)]
struct Keys {
    org_id: String,
    /// The owner's: only it may export the recovery key.
    owner: String,
    /// An admin's, for everything else.
    admin: String,
}

/// The org, its owner's key, and an admin key for everything but the recovery key.
fn org_and_keys(cli: &Coffer, dirs: &Dirs, repo: &Repo, platform_key: &str) -> Result<Keys> {
    let org_file = dirs.secret("org-owner.json");
    step(format!(
        "coffer org create \"Demo Org\" (owner's API key in {})",
        repo.show(&org_file)
    ));
    let org = cli.call(
        platform_key,
        &[
            "org",
            "create",
            "Demo Org",
            "--owner-email",
            "owner@demo.example",
        ],
        Out::Secret(&org_file),
    )?;
    let org_id = text(&org, "/org/org_id", "`coffer org create`")?.to_owned();
    let owner_key = text(&org, "/owner_api_key/secret", "`coffer org create`")?.to_owned();
    let admin_file = dirs.secret("admin-api-key.json");
    step(format!(
        "coffer apikey create demo-admin --role admin (key in {})",
        repo.show(&admin_file)
    ));
    let admin = cli.call(
        &owner_key,
        &[
            "apikey",
            "create",
            "demo-admin",
            "--role",
            "admin",
            "--expires-in",
            "1d",
        ],
        Out::Secret(&admin_file),
    )?;
    let admin_key = text(&admin, "/secret", "`coffer apikey create`")?.to_owned();

    Ok(Keys {
        org_id,
        owner: owner_key,
        admin: admin_key,
    })
}

/// The owner exports the org's recovery key into `secrets/recovery.key` (0600), the identity
/// file `age -d -i` takes; returns it and the org's recipient.
fn export_recovery_key(
    cli: &Coffer,
    dirs: &Dirs,
    repo: &Repo,
    owner_key: &str,
) -> Result<(PathBuf, String)> {
    let recovery_key = dirs.secret("recovery.key");
    step(format!(
        "coffer org-key export-recovery-key (owner's key; identity in {})",
        repo.show(&recovery_key)
    ));
    let exported_file = dirs.secret("recovery-export.json");
    let exported = cli.call(
        owner_key,
        &[
            "org-key",
            "export-recovery-key",
            "--reason",
            "cargo xtask demo: restore drill with stock tools",
        ],
        Out::Secret(&exported_file),
    )?;
    let recipient = text(
        &exported,
        "/recipient",
        "`coffer org-key export-recovery-key`",
    )?
    .to_owned();
    fs::write(
        new_secret_path(&recovery_key)?,
        format!(
            "{}\n",
            text(
                &exported,
                "/identity",
                "`coffer org-key export-recovery-key`"
            )?
        ),
    )
    .with_context(|| format!("write {}", recovery_key.display()))?;
    drop(exported);
    fs::remove_file(&exported_file)
        .with_context(|| format!("remove {}", exported_file.display()))?;
    Ok((recovery_key, recipient))
}

/// A checkpoint kept before the backup, to witness the log with later.
#[derive(Debug)]
struct Witness {
    note: PathBuf,
    size: u64,
    /// The key that signed it, pinned for `audit verify --key`.
    verifier_key: String,
}

fn keep_witness(cli: &Coffer, dirs: &Dirs, repo: &Repo, admin_key: &str) -> Result<Witness> {
    let witness = dirs.root.join("audit-witness.note");
    step(format!(
        "coffer audit checkpoint --out {} (kept as the witness)",
        repo.show(&witness)
    ));
    // The first checkpoint is signed a moment after the org's first events reach the log.
    let mut refused = String::from("none yet");
    let witnessed = poll("a first audit checkpoint", Duration::from_secs(30), || {
        let answer = cli.call(
            admin_key,
            &["audit", "checkpoint", "--out", &witness.to_string_lossy()],
            Out::Answer("audit-witness"),
        );
        Ok(answer.map_err(|e| refused = format!("{e:#}")).ok())
    })
    .with_context(|| format!("the last answer: {refused}"))?;
    let witness_size = number(&witnessed, "/size", "`coffer audit checkpoint`")?;
    let verifier_key = text(&witnessed, "/verifier_key", "`coffer audit checkpoint`")?.to_owned();

    Ok(Witness {
        note: witness,
        size: witness_size,
        verifier_key,
    })
}

/// What `coffer audit verify` established.
#[derive(Debug)]
struct Audited {
    bundle: PathBuf,
    size: u64,
    root: String,
    /// The audit entries of the backup's and the restore's JobSucceeded, and of the recovery
    /// key's export.
    backup_seq: u64,
    restore_seq: u64,
    export_seq: u64,
}

/// Waits for both jobs' JobSucceeded in the log and a checkpoint covering them, exports the
/// log, and verifies the bundle offline against the witness and its pinned key.
fn verify_audit(
    cli: &Coffer,
    dirs: &Dirs,
    repo: &Repo,
    admin_key: &str,
    org_id: &str,
    witness: &Witness,
    [backup_job, restore_job]: [&str; 2],
) -> Result<Audited> {
    step("waiting for the restore's JobSucceeded in the audit log and a checkpoint covering it");
    // The first entry a query finds, once the audit service has appended it.
    let seq_of = |what: &str, filter: &[&str]| -> Result<u64> {
        poll(what, Duration::from_secs(60), || {
            let found = cli.call(
                admin_key,
                &[&["audit", "query"], filter].concat(),
                Out::Answer("audit-query"),
            )?;
            Ok(found.pointer("/entries/0/seq").and_then(Value::as_u64))
        })
    };
    let succeeded = |job| ["--aggregate-id", job, "--action", "JobSucceeded"];
    let backup_seq = seq_of(
        "the backup's JobSucceeded audit entry",
        &succeeded(backup_job),
    )?;
    let restore_seq = seq_of(
        "the restore's JobSucceeded audit entry",
        &succeeded(restore_job),
    )?;
    let export_seq = seq_of(
        "the RecoveryKeyExported audit entry",
        &["--action", "RecoveryKeyExported"],
    )?;
    poll(
        "a checkpoint covering the restore",
        Duration::from_secs(60),
        || {
            let latest = cli.call(
                admin_key,
                &["audit", "checkpoint"],
                Out::Answer("audit-latest"),
            )?;
            Ok(
                (number(&latest, "/size", "`coffer audit checkpoint`")? >= restore_seq)
                    .then_some(()),
            )
        },
    )?;
    // The backup's entry, which commits to the object's size and SHA-256, proved included in
    // the signed tree here (the command fails unless the proof verifies).
    step(format!(
        "coffer audit entry {backup_seq}: the backup's JobSucceeded, its inclusion proof checked here"
    ));
    cli.call(
        admin_key,
        &["audit", "entry", &backup_seq.to_string()],
        Out::Answer("audit-entry"),
    )?;
    let bundle = dirs.root.join("audit.bundle");
    cli.call(
        admin_key,
        &["audit", "export", "--out", &bundle.to_string_lossy()],
        Out::Answer("audit-export"),
    )?;
    step(format!(
        "coffer audit verify {} --witness {} --key <the witness's signer> --org {org_id} (no server)",
        repo.show(&bundle),
        repo.show(&witness.note)
    ));
    let verified = cli.offline(
        &[
            "audit",
            "verify",
            &bundle.to_string_lossy(),
            "--witness",
            &witness.note.to_string_lossy(),
            "--key",
            &witness.verifier_key,
            "--org",
            org_id,
        ],
        Out::Answer("audit-verify"),
    )?;
    Ok(Audited {
        bundle,
        size: number(&verified, "/size", "`coffer audit verify`")?,
        root: text(&verified, "/root", "`coffer audit verify`")?.to_owned(),
        backup_seq,
        restore_seq,
        export_seq,
    })
}

/// The demo's directories, fresh on every run.
#[derive(Debug)]
struct Dirs {
    /// `.coffer/demo`.
    root: PathBuf,
    /// Secrets, one 0600 file each (0700).
    secrets: PathBuf,
    /// The local KMS key files (0700).
    kms: PathBuf,
    /// The server's development certificate and key (0700).
    tls: PathBuf,
    /// The CLI's answers that hold no secret.
    cli: PathBuf,
    /// Where the agent's home and the backups live: `root`, unless the agent's unprivileged
    /// account cannot reach it (a clone under /root, say).
    agent_base: PathBuf,
}

impl Dirs {
    fn fresh(repo: &Repo) -> Result<Dirs> {
        let root = repo.coffer_dir()?.join("demo");
        remove_tree(&root)?;
        let dir = |path: &Path, mode: u32| -> Result<()> {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(path)
                .with_context(|| format!("create {}", path.display()))?;
            // The umask may have narrowed the mode.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("set the mode of {}", path.display()))
        };
        dir(&root, 0o755)?;
        let [secrets, kms, tls, cli] = ["secrets", "kms", "tls", "cli"].map(|d| root.join(d));
        for (path, mode) in [
            (&secrets, 0o700),
            (&kms, 0o700),
            (&tls, 0o700),
            (&cli, 0o755),
        ] {
            dir(path, mode)?;
        }
        let agent_base =
            if nix::unistd::geteuid().is_root() && !agent::reachable_by(UNPRIVILEGED, &root) {
                let short = &sha256_hex(root.to_string_lossy().as_bytes())[..10];
                let base = PathBuf::from(format!("/var/tmp/coffer-demo-{short}"));
                remove_tree(&base)?;
                dir(&base, 0o755)?;
                base
            } else {
                root.clone()
            };
        Ok(Dirs {
            root,
            secrets,
            kms,
            tls,
            cli,
            agent_base,
        })
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.secrets.join(name)
    }
}

fn remove_tree(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(())
}

/// The server's configuration beyond what the environment sets: TLS with a development
/// certificate (agents need TLS), the local root destinations may lie under, and checkpoints
/// every 2 s so the audit log is signed soon after the story ends.
fn write_server_config(path: &Path, cert: &Path, tls: &Path, local_root: &Path) -> Result<()> {
    let quoted =
        |p: &Path| serde_json::to_string(&p.to_string_lossy()).expect("a string serializes");
    let text = format!(
        "# Written by cargo xtask demo; the database, NATS, KMS and listen address come from\n\
         # COFFER_* variables.\n\
         [grpc.tls]\ncert_file = {}\nkey_file = {}\ngenerate_dev_certificate = true\n\n\
         [scheduling]\nlocal_roots = [{}]\n\n\
         [audit]\ncheckpoint_interval = \"2s\"\n",
        quoted(cert),
        quoted(&tls.join("server.key")),
        quoted(local_root),
    );
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// `$CARGO_TARGET_DIR/debug/<name>`, or `target/debug/<name>` in the repository.
fn built_binary(repo: &Repo, name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| repo.root.join(dir)) // a relative one is relative to the root cargo ran in
        .unwrap_or_else(|| repo.root.join("target"));
    let binary = target.join("debug").join(name);
    if !binary.is_file() {
        bail!("no {name} binary at {} after the build", binary.display());
    }
    Ok(binary)
}

/// A new file, mode 0600; fails if it exists.
fn new_secret_file(path: &Path) -> Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))
}

/// [`new_secret_file`], closed again, for `fs::write`.
fn new_secret_path(path: &Path) -> Result<&Path> {
    new_secret_file(path)?;
    Ok(path)
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_slice(&fs::read(path).with_context(|| format!("read {}", path.display()))?)
        .with_context(|| format!("parse {}", path.display()))
}

/// `bytes` random bytes, hex-encoded.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A 6-field cron expression (seconds first) for a daily run `lead` from now, in UTC, and that
/// time of day as `HH:MM:SS`.
fn daily_cron_after(lead: Duration) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    let of_day = (now + lead).as_secs() % 86_400;
    let (h, m, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    (
        format!("{s} {m} {h} * * *"),
        format!("{h:02}:{m:02}:{s:02}"),
    )
}

/// Registers `database` of the cluster, served by `agent`. Scheduling learns of agents through
/// events, so a just-enrolled agent may be unknown to it for a moment: that refusal is retried.
fn register_database(
    cli: &Coffer,
    key: &str,
    pg: &Cluster,
    name: &str,
    database: &str,
    vault_ref: &str,
    agent: &str,
) -> Result<String> {
    let port = pg.port.to_string();
    let registered = poll(
        "scheduling to know the agent",
        Duration::from_secs(30),
        || {
            let answer = cli.call(
                key,
                &[
                    "database",
                    "register",
                    name,
                    "--host",
                    &pg.host,
                    "--port",
                    &port,
                    "--database",
                    database,
                    "--user",
                    ROLE,
                    "--password-ref",
                    vault_ref,
                    "--agent",
                    agent,
                ],
                Out::Answer("database"),
            );
            match answer {
                Ok(answer) => Ok(Some(answer)),
                Err(err) if format!("{err:#}").contains("no enrolled agent") => Ok(None),
                Err(err) => Err(err),
            }
        },
    )?;
    Ok(text(&registered, "/database_id", "`coffer database register`")?.to_owned())
}

/// A job followed to its end.
#[derive(Debug)]
struct Followed {
    job: Value,
    /// When it was first seen.
    started: Instant,
    /// From first seen to seen over.
    took: Duration,
}

/// Polls `coffer job get` until the job is over, printing its progress; fails unless it
/// succeeded, quoting the agent's log.
fn follow_job(
    cli: &Coffer,
    key: &str,
    job: &str,
    kind: &str,
    agent: &mut Daemon,
    server: &mut Daemon,
) -> Result<Followed> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let answer = poll(&format!("{kind} job {job} to end"), JOB_TIMEOUT, || {
        agent.check_alive()?;
        server.check_alive()?;
        let answer = cli.call(key, &["job", "get", job], Out::Answer("job"))?;
        let state = text(&answer, "/state", "`coffer job get`")?;
        if matches!(state, "succeeded" | "failed" | "cancelled" | "timed_out") {
            return Ok(Some(answer));
        }
        let progress = |field: &str| {
            answer
                .pointer(&format!("/progress/{field}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        if last_report.elapsed() >= Duration::from_secs(2) && progress("bytes_read") > 0 {
            last_report = Instant::now();
            step(format!(
                "  {kind} {state}: read {}, wrote {}, {}/s",
                mib(progress("bytes_read")),
                mib(progress("bytes_written")),
                mib(progress("bytes_per_second"))
            ));
        }
        Ok(None)
    })?;
    let took = started.elapsed();
    let state = text(&answer, "/state", "`coffer job get`")?;
    if state != "succeeded" {
        bail!(
            "{kind} job {job} {state}: {}\n{}",
            answer
                .pointer("/reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given"),
            agent.tail()
        );
    }
    step(format!("{kind} job {job} succeeded in {}", secs(took)));
    Ok(Followed {
        job: answer,
        started,
        took,
    })
}

/// The object is what the artifact record says: its size and SHA-256.
fn check_object(object: &Path, size: u64, sha256: &str) -> Result<()> {
    let bytes =
        fs::read(object).with_context(|| format!("read the backup object {}", object.display()))?;
    if bytes.len() as u64 != size {
        bail!(
            "the backup object {} has {} bytes; its artifact record says {size}",
            object.display(),
            bytes.len()
        );
    }
    let actual = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    if actual != sha256 {
        bail!(
            "the backup object {} has SHA-256 {actual}; its artifact record says {sha256}",
            object.display()
        );
    }
    if !bytes.starts_with(b"age-encryption.org/v1\n") {
        bail!("the backup object {} is not an age file", object.display());
    }
    Ok(())
}

fn same_as_source(source: &Fingerprint, other: &Fingerprint, db: &str) -> Result<()> {
    if source != other {
        bail!("{db} differs from {SOURCE_DB}:\n  source:\n{source}  {db}:\n{other}");
    }
    step(format!(
        "{db} equals {SOURCE_DB}: {} tables, {} rows, every row count and checksum",
        other.0.len(),
        thousands(other.rows())
    ));
    Ok(())
}

/// Polls `ready` every 250 ms until it yields, fails, the deadline passes or the user
/// interrupts.
fn poll<T>(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        interrupt::check()?;
        if let Some(value) = ready()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("gave up waiting for {what} after {}s", timeout.as_secs());
        }
        sleep(Duration::from_millis(250));
    }
}

/// Timings of the story's parts.
#[derive(Debug)]
struct Story {
    laps: Vec<(String, Duration)>,
    last: Instant,
}

impl Story {
    fn new() -> Story {
        Story {
            laps: Vec::new(),
            last: Instant::now(),
        }
    }

    /// Records the time since the previous lap.
    fn lap(&mut self, what: &str) {
        self.lap_since(what, self.last);
    }

    /// Records the time since `since`.
    fn lap_since(&mut self, what: &str, since: Instant) {
        self.laps.push((what.to_owned(), since.elapsed()));
        self.last = Instant::now();
    }
}

fn owner_name(home: &AgentHome, uid: u32) -> String {
    match &home.account {
        Some(user) if user.uid.as_raw() == uid => user.name.clone(),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_cron_names_the_time_of_day_it_prints() {
        let (cron, due) = daily_cron_after(Duration::from_secs(15));
        let fields: Vec<u64> = cron
            .split(' ')
            .take(3)
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(cron.split(' ').skip(3).collect::<Vec<_>>(), ["*", "*", "*"]);
        assert_eq!(
            due,
            format!("{:02}:{:02}:{:02}", fields[2], fields[1], fields[0])
        );
        assert!(fields[0] < 60 && fields[1] < 60 && fields[2] < 24);
    }
}
