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
        other => Err(format!(
            "engine {other:?} is not one this agent serves (postgresql, mariadb, mysql)"
        )),
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
        // `--no-defaults` first, as the client requires: no option file on the host
        // (/etc/mysql, ~/.my.cnf) can change what is dumped or restored, nor override the
        // password, which an option file's `password=` would do over MYSQL_PWD.
        Engine::MariaDb => args([
            "--no-defaults",
            "--host",
            &database.host,
            "--port",
            &port,
            "--user",
            &database.user,
            "--protocol=tcp",
            // Four-byte UTF-8 survives whatever the tool's built-in default is.
            "--default-character-set=utf8mb4",
            // Rows up to the protocol's limit: the server's max_allowed_packet is the
            // real bound, not the tools' own defaults (16 MiB for mariadb, 24 MiB for
            // mariadb-dump), which would refuse rows the server holds.
            "--max-allowed-packet=1G",
        ]),
    }
}

/// The password goes in the program's environment (PGPASSWORD, MYSQL_PWD), which only its
/// own account and root can read (`/proc/<pid>/environ`), like the agent's memory: never an
/// argument, which every user sees, and never a file on disk. (For MariaDB, an option file
/// fed through a pipe would be the other way; it needs the password quoted in option-file
/// syntax and exposes it no less.)
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
        // One consistent snapshot without locking InnoDB tables (it turns `--lock-tables`
        // off). Tables, views and their data, triggers, stored procedures and functions, and
        // events: what lives in the database. Accounts and grants live outside it and are not
        // dumped. Binary columns as hex, so the dump is plain text. No tablespace statements
        // (MySQL 8 would want the PROCESS privilege for them). The name alone, not
        // `--databases`, leaves out CREATE DATABASE and USE, so a restore may target another
        // database.
        Engine::MariaDb => spec.args.extend(args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-tablespaces",
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
        // Statements apply as they arrive (DDL commits implicitly: no single transaction),
        // so restore into an empty database; the client stops at the first error. The
        // dump's statements are data to this client: `--binary-mode` turns off every client
        // command but `\C` and DELIMITER (which triggers and routines need) and `--sandbox`
        // refuses any that touches files or runs a shell. The dump names no database (see
        // backup_spec), so everything lands in the one named here. (Not `--one-database`: it
        // filters only the client's own `use` command, which binary mode hands to the server
        // unseen, and with `--database` rather than a positional name it silently skips
        // everything.)
        Engine::MariaDb => spec.args.extend(args([
            "--connect-timeout=10",
            "--binary-mode",
            "--sandbox",
            "--database",
            &database.database,
        ])),
    }
    spec.env = password_env(engine, password);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    const PASSWORD: &str = "hunter2-canary";

    fn mariadb() -> pb::JobDatabase {
        pb::JobDatabase {
            database_id: "db".into(),
            engine: "mariadb".into(),
            host: "db.internal".into(),
            port: 3306,
            database: "shop_restore".into(),
            user: "backup".into(),
            password_vault_ref: "vault:coffer/org/id".into(),
        }
    }

    fn text(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn env_names(env: &[(OsString, SecretString)]) -> Vec<String> {
        env.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn mariadb_dumps_one_database_in_one_transaction_with_the_password_only_in_the_environment() {
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let spec = backup_spec(
            &Config::default(),
            &mariadb(),
            SecretString::from(PASSWORD),
            &recipient,
        )
        .unwrap();
        assert_eq!(spec.program, std::path::Path::new("mariadb-dump"));
        let args = text(&spec.args);
        assert_eq!(args[0], "--no-defaults", "must come first: {args:?}");
        for wanted in [
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--protocol=tcp",
        ] {
            assert!(args.iter().any(|a| a == wanted), "{wanted} in {args:?}");
        }
        assert_eq!(args.last().unwrap(), "shop_restore");
        assert!(
            !args.iter().any(|a| a == "--databases" || a == "-B"),
            "no CREATE DATABASE or USE in the dump: {args:?}"
        );
        assert!(!args.iter().any(|a| a.contains(PASSWORD)), "{args:?}");
        assert_eq!(env_names(&spec.env), ["MYSQL_PWD"]);
        assert_eq!(spec.env[0].1.expose_secret(), PASSWORD);
    }

    #[test]
    fn mariadb_restores_into_the_named_database_with_client_commands_fenced_off() {
        for engine in ["mariadb", "mysql"] {
            let database = pb::JobDatabase {
                engine: engine.into(),
                ..mariadb()
            };
            let spec =
                restore_spec(&Config::default(), &database, SecretString::from(PASSWORD)).unwrap();
            assert_eq!(spec.program, std::path::Path::new("mariadb"));
            let args = text(&spec.args);
            assert_eq!(args[0], "--no-defaults");
            for wanted in ["--binary-mode", "--sandbox"] {
                assert!(args.iter().any(|a| a == wanted), "{wanted} in {args:?}");
            }
            assert!(
                !args.iter().any(|a| a == "--force"),
                "stops at the first error"
            );
            assert!(
                args.windows(2)
                    .any(|pair| pair[0] == "--database" && pair[1] == "shop_restore"),
                "{args:?}"
            );
            assert!(!args.iter().any(|a| a.contains(PASSWORD)), "{args:?}");
            assert_eq!(env_names(&spec.env), ["MYSQL_PWD"]);
        }
    }

    #[test]
    fn unknown_engines_are_refused_by_name() {
        let database = pb::JobDatabase {
            engine: "oracle".into(),
            ..mariadb()
        };
        let error =
            restore_spec(&Config::default(), &database, SecretString::from(PASSWORD)).unwrap_err();
        assert_eq!(
            error,
            "engine \"oracle\" is not one this agent serves (postgresql, mariadb, mysql)"
        );
    }
}
