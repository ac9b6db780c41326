//! How each database engine is dumped and restored: the program, its arguments and the
//! environment that carries the password (never an argument, which other users could read
//! in the process list).

use std::ffi::OsString;

use coffer_proto::scheduling::v1 as pb;
use secrecy::SecretString;

use crate::config::Config;
use crate::pipeline::{BackupSpec, RestoreSpec};

/// The engines the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    PostgreSql,
    MariaDb,
}

fn engine(database: &pb::JobDatabase) -> Result<Engine, String> {
    match database.engine.as_str() {
        "postgresql" => Ok(Engine::PostgreSql),
        "mariadb" | "mysql" => Ok(Engine::MariaDb),
        other => Err(format!("this agent cannot back up {other} databases")),
    }
}

fn args<const N: usize>(fixed: [&str; N]) -> Vec<OsString> {
    fixed.into_iter().map(OsString::from).collect()
}

/// Where the database is, as the engine's client flags say it.
fn connection(engine: Engine, database: &pb::JobDatabase) -> Vec<OsString> {
    let port = database.port.to_string();
    match engine {
        Engine::PostgreSql => args([
            "--host",
            &database.host,
            "--port",
            &port,
            "--username",
            &database.user,
            "--no-password",
        ]),
        Engine::MariaDb => args([
            "--host",
            &database.host,
            "--port",
            &port,
            "--user",
            &database.user,
            "--protocol=tcp",
        ]),
    }
}

fn password_env(engine: Engine, password: SecretString) -> Vec<(OsString, SecretString)> {
    let mut env = vec![(
        OsString::from(match engine {
            Engine::PostgreSql => "PGPASSWORD",
            Engine::MariaDb => "MYSQL_PWD",
        }),
        password,
    )];
    if engine == Engine::PostgreSql {
        env.push(("PGCONNECT_TIMEOUT".into(), SecretString::from("10")));
        env.push(("PGAPPNAME".into(), SecretString::from("coffer-agent")));
    }
    env
}

/// The dump of `database`, encrypted to `recipient`.
pub fn backup_spec(
    config: &Config,
    database: &pb::JobDatabase,
    password: SecretString,
    recipient: &str,
) -> Result<BackupSpec, String> {
    let engine = engine(database)?;
    let recipient: age::x25519::Recipient = recipient
        .parse()
        .map_err(|_| "the org's age recipient does not parse".to_owned())?;
    let program = match engine {
        Engine::PostgreSql => config.backup.pg_dump.clone(),
        Engine::MariaDb => config.backup.mariadb_dump.clone(),
    };
    let mut spec = BackupSpec::new(program, recipient);
    spec.args = connection(engine, database);
    match engine {
        // Custom format, uncompressed: zstd does the compressing, and pg_restore reads it back.
        Engine::PostgreSql => spec.args.extend(args([
            "--format=custom",
            "--compress=0",
            "--dbname",
            &database.database,
        ])),
        // One consistent snapshot without locking InnoDB tables. The name alone (not
        // `--databases`) leaves out CREATE DATABASE and USE, so a restore may target another
        // database.
        Engine::MariaDb => spec.args.extend(args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            &database.database,
        ])),
    }
    spec.env = password_env(engine, password);
    spec.zstd_level = config.backup.zstd_level;
    spec.zstd_threads = config.zstd_workers();
    Ok(spec)
}

/// The restore of a backup into `database`, in one transaction where the engine allows it.
pub fn restore_spec(
    config: &Config,
    database: &pb::JobDatabase,
    password: SecretString,
) -> Result<RestoreSpec, String> {
    let engine = engine(database)?;
    let program = match engine {
        Engine::PostgreSql => config.restore.pg_restore.clone(),
        Engine::MariaDb => config.restore.mariadb.clone(),
    };
    let mut spec = RestoreSpec::new(program, config.restore.max_output_bytes);
    spec.max_window_log = config.restore.max_window_log;
    spec.args = connection(engine, database);
    match engine {
        // All or nothing: a failure (or a kill on a bad backup) leaves the target untouched.
        Engine::PostgreSql => spec.args.extend(args([
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            "--dbname",
            &database.database,
        ])),
        Engine::MariaDb => spec.args.extend(args(["--database", &database.database])),
    }
    spec.env = password_env(engine, password);
    Ok(spec)
}
