//! The stack's MariaDB, for the agent's MariaDB backups: a fresh server on every run, on a
//! free loopback port, with its data, socket, pid file and log under `.coffer/`.
//!
//! It runs as whoever runs xtask. As root that takes `--user=root`, mariadbd's explicit
//! opt-in: unlike initdb it does not refuse root outright, and running it as the `mysql`
//! account would need the ownership and `/var/tmp` relocation dance Postgres needs
//! (`postgres.rs`) for no gain on a throwaway server that listens on 127.0.0.1 only and whose
//! file reads and writes (`LOAD DATA`, `SELECT … INTO OUTFILE`) are confined to one directory
//! of `.coffer/` by `--secure-file-priv`.
//!
//! Setup goes through the unix socket, where `mariadb-install-db` lets the invoking OS account
//! in as a MariaDB superuser without a password (unix_socket authentication). It creates the
//! account tests use, `coffer@127.0.0.1`, with a random password made on each run.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::unistd::{User, geteuid};

use crate::install::sha256_hex;
use crate::paths::Repo;
use crate::proc::{self, step};

/// The MariaDB account tests connect as (all privileges, with grant option).
pub const SUPERUSER: &str = "coffer";

/// Longest unix socket path the kernel takes (`sun_path` is 108 bytes with its NUL), less
/// a margin.
const MAX_SOCKET_PATH: usize = 100;

#[derive(Debug)]
pub struct MariaDb {
    pub port: u16,
    data: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    files: PathBuf,
    log: PathBuf,
    coffer: PathBuf,
    /// The OS account xtask runs as; unix_socket authentication lets it in as MariaDB's
    /// superuser of the same name.
    os_user: String,
    /// The password of [`SUPERUSER`], random per run.
    password: String,
}

impl MariaDb {
    /// Lays out a fresh, empty data directory; starts nothing.
    pub fn prepare(repo: &Repo, port: u16) -> Result<MariaDb> {
        let coffer = repo.coffer_dir()?;
        let data = coffer.join("mariadb");
        let files = coffer.join("mariadb-files");
        let log = coffer.join("mariadb.log");
        let pid_file = coffer.join("mariadb.pid");
        let mut socket = coffer.join("mariadb.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            // A deep checkout: the socket goes to /tmp under a name that is still ours alone.
            let short = &sha256_hex(coffer.as_os_str().as_bytes())[..10];
            socket = std::env::temp_dir().join(format!("coffer-{short}-mariadb.sock"));
        }
        for dir in [&data, &files] {
            if dir.exists() {
                fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
            }
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        for file in [&log, &pid_file, &socket] {
            if fs::symlink_metadata(file).is_ok() {
                fs::remove_file(file).with_context(|| format!("remove {}", file.display()))?;
            }
        }
        let os_user = User::from_uid(geteuid())
            .context("look up the account xtask runs as")?
            .context("the account xtask runs as has no name")?
            .name;
        Ok(MariaDb {
            port,
            data,
            socket,
            pid_file,
            files,
            log,
            coffer,
            os_user,
            password: random_password()?,
        })
    }

    /// `mariadb-install-db`: the system tables, and the invoking account as a socket-only
    /// superuser.
    pub fn init(&self) -> Result<()> {
        step(format!("mariadb-install-db {}", self.data.display()));
        let mut cmd = Command::new(program("mariadb-install-db")?);
        // `--no-defaults` first: the host's /etc/mysql and ~/.my.cnf stay out of it.
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data.display()))
            .args(self.run_as())
            .args([
                "--skip-test-db",
                // No host-name accounts, and no resolveip of this machine's name.
                "--cross-bootstrap",
                "--auth-root-authentication-method=socket",
            ])
            .arg(format!("--auth-root-socket-user={}", self.os_user))
            .args(SERVER_SETTINGS)
            .current_dir(&self.coffer);
        proc::run_logged(&mut cmd, &self.coffer.join("mariadb-install-db.log"))
    }

    /// The `mariadbd` command; the caller spawns and owns it.
    pub fn server(&self) -> Result<Command> {
        step(format!(
            "starting mariadbd on 127.0.0.1:{} (log: {})",
            self.port,
            self.log.display()
        ));
        let mut cmd = Command::new(program("mariadbd")?);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data.display()))
            .args(self.run_as())
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--pid-file={}", self.pid_file.display()))
            .arg(format!("--secure-file-priv={}", self.files.display()))
            .args(SERVER_SETTINGS)
            .current_dir(&self.coffer);
        Ok(cmd)
    }

    /// Where the server's stdout and stderr go (it logs to stderr without `--log-error`).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether the server takes connections on its socket and its port.
    pub fn accepts(&self) -> bool {
        self.socket.exists() && proc::tcp_accepts(self.port)
    }

    /// Creates [`SUPERUSER`] with its password, as the invoking account over the socket.
    pub fn create_superuser(&self) -> Result<()> {
        step(format!("creating MariaDB account {SUPERUSER}@127.0.0.1"));
        let sql = format!(
            "CREATE USER '{SUPERUSER}'@'127.0.0.1' IDENTIFIED BY '{}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{SUPERUSER}'@'127.0.0.1' WITH GRANT OPTION;\n",
            self.password
        );
        let log_path = self.coffer.join("mariadb-setup.log");
        let log =
            File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        let mut cmd = Command::new(program("mariadb")?);
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--user={}", self.os_user))
            .args(["--connect-timeout=30", "--batch"])
            // The statements (and so the password) go through stdin, not the command line.
            .stdin(Stdio::piped())
            .stdout(log.try_clone().context("duplicate a log file handle")?)
            .stderr(log);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start `{}`", proc::describe(&cmd)))?;
        let written = child
            .stdin
            .take()
            .expect("stdin is piped just above")
            .write_all(sql.as_bytes());
        let status = proc::wait(&mut child)?;
        written.context("send the account statements to mariadb")?;
        if !status.success() {
            bail!(
                "creating the MariaDB account failed ({status}); last lines of {}:\n{}",
                log_path.display(),
                proc::tail(&log_path, 15)
            );
        }
        Ok(())
    }

    /// `mysql://coffer:<password>@127.0.0.1:<port>`, for `COFFER_TEST_MARIADB_URL`.
    pub fn url(&self) -> String {
        format!(
            "mysql://{SUPERUSER}:{}@127.0.0.1:{}",
            self.password, self.port
        )
    }

    /// What `.coffer/stack.pids` records to recognise the server: its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// `--user=root` when xtask is root: mariadbd's explicit opt-in to running as root.
    fn run_as(&self) -> Option<&'static str> {
        geteuid().is_root().then_some("--user=root")
    }
}

/// Settings for both the bootstrap and the server (the redo log size must agree).
const SERVER_SETTINGS: &[&str] = &[
    // Small and quick to create: tests move megabytes.
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    // What a modern MariaDB defaults to (11.6+), and what dumps of real databases carry.
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// 32 hex digits from the kernel's random source.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A MariaDB program: `/usr/sbin` holds the server, which is not on every user's PATH.
fn program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("find {name} (packages mariadb-server-core and mariadb-client provide it)")
        })
}
