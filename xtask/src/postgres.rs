//! The stack's PostgreSQL: a fresh cluster on every run, run by the `postgres` OS user.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, chown, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::User;

use crate::install::sha256_hex;
use crate::paths::Repo;
use crate::proc::{self, step};

/// The group role whose members must give their password over TCP (see `pg_hba.conf`); tests
/// grant it to the roles an agent logs in with, so a wrong password is refused.
const PASSWORD_ROLE: &str = "coffer_password_login";

#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    /// Where the cluster and its log really live: `.coffer/`, or a `/var/tmp` directory
    /// when the postgres OS user cannot reach `.coffer/`.
    home: PathBuf,
    data: PathBuf,
    log: PathBuf,
    coffer: PathBuf,
    /// The OS user to run initdb and pg_ctl as: initdb refuses to run as root.
    os_user: Option<User>,
}

impl Postgres {
    /// Lays out a fresh, empty data directory; starts nothing.
    pub fn prepare(repo: &Repo, bin: &Path, port: u16) -> Result<Postgres> {
        let coffer = repo.coffer_dir()?;
        let os_user = if nix::unistd::geteuid().is_root() {
            let user = User::from_name("postgres")
                .context("look up the postgres OS user")?
                .context("there is no postgres OS user; is the postgresql package installed?")?;
            Some(user)
        } else {
            None
        };
        let home = match os_user {
            Some(_) if !postgres_can_reach(&coffer) => {
                // The postgres OS user cannot traverse the path to .coffer (a clone under
                // /root, say), so the cluster lives under /var/tmp and .coffer/pg and
                // .coffer/pg.log are symlinks to it.
                let short = &sha256_hex(coffer.as_os_str().as_bytes())[..10];
                let home = PathBuf::from(format!("/var/tmp/coffer-{short}"));
                fs::create_dir_all(&home).with_context(|| format!("create {}", home.display()))?;
                fs::set_permissions(&home, fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("open up {}", home.display()))?;
                home
            }
            _ => coffer.clone(),
        };
        let data = home.join("pg");
        let log = home.join("pg.log");

        for path in [
            coffer.join("pg"),
            coffer.join("pg.log"),
            data.clone(),
            log.clone(),
        ] {
            remove(&path)?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&data)
            .with_context(|| format!("create {}", data.display()))?;
        File::create(&log).with_context(|| format!("create {}", log.display()))?;
        if let Some(user) = &os_user {
            for path in [&data, &log] {
                chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .with_context(|| format!("give {} to the postgres OS user", path.display()))?;
            }
        }
        if home != coffer {
            symlink(&data, coffer.join("pg")).context("link .coffer/pg")?;
            symlink(&log, coffer.join("pg.log")).context("link .coffer/pg.log")?;
        }
        Ok(Postgres {
            port,
            bin: bin.to_path_buf(),
            home,
            data,
            log,
            coffer,
            os_user,
        })
    }

    /// Creates the cluster, with `infra/dev/postgresql.conf` included.
    pub fn init(&self, repo: &Repo) -> Result<()> {
        step(format!("initdb {}", self.data.display()));
        proc::run_logged(
            self.command("initdb").arg("-D").arg(&self.data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
            &self.coffer.join("initdb.log"),
        )?;
        self.require_passwords()?;
        self.include_dev_config(repo)
    }

    /// Members of [`PASSWORD_ROLE`] log in over TCP with their password (SCRAM), as the
    /// databases an agent backs up do; everyone else keeps trust.
    fn require_passwords(&self) -> Result<()> {
        let hba = self.data.join("pg_hba.conf");
        let trusted =
            fs::read_to_string(&hba).with_context(|| format!("read {}", hba.display()))?;
        let rules = format!(
            "host all +{PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n\
             host all +{PASSWORD_ROLE} ::1/128 scram-sha-256\n{trusted}"
        );
        // The file exists, so writing keeps its owner.
        fs::write(&hba, rules).with_context(|| format!("write {}", hba.display()))
    }

    /// Starts the server and waits until it accepts connections.
    pub fn launch(&self) -> Result<()> {
        step(format!("starting postgres on 127.0.0.1:{}", self.port));
        // Its own process group, so a Ctrl-C at the terminal reaches xtask only.
        proc::run_logged(
            self.command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-o", &format!("-p {}", self.port)])
                .process_group(0),
            &self.coffer.join("pg_ctl.log"),
        )
        .with_context(|| format!("start postgres (server log: {})", self.log.display()))
    }

    /// As the superuser: the `coffer_owner` role and the `coffer` database it owns.
    pub fn create_owner(&self) -> Result<()> {
        step("creating role coffer_owner and database coffer");
        proc::run_logged(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-p", &self.port.to_string(), "-d", "postgres"])
                .args(["-c", "CREATE ROLE coffer_owner LOGIN CREATEROLE BYPASSRLS"])
                .args(["-c", "CREATE DATABASE coffer OWNER coffer_owner"])
                .args(["-c", &format!("CREATE ROLE {PASSWORD_ROLE} NOLOGIN")])
                .env("PGCONNECT_TIMEOUT", "10"),
            &self.coffer.join("psql.log"),
        )
    }

    /// Copies `infra/dev/postgresql.conf` into the cluster and includes it.
    fn include_dev_config(&self, repo: &Repo) -> Result<()> {
        let source = repo.infra_dev("postgresql.conf");
        let copy = self.data.join("coffer-dev.conf");
        fs::copy(&source, &copy).with_context(|| format!("copy {}", source.display()))?;
        if let Some(user) = &self.os_user {
            chown(&copy, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .with_context(|| format!("give {} to the postgres OS user", copy.display()))?;
        }
        let main = self.data.join("postgresql.conf");
        let mut conf =
            fs::read_to_string(&main).with_context(|| format!("read {}", main.display()))?;
        conf.push_str("\n# Added by cargo xtask: settings from infra/dev/postgresql.conf.\ninclude 'coffer-dev.conf'\n");
        fs::write(&main, conf).with_context(|| format!("write {}", main.display()))
    }

    /// The postmaster's pid while the cluster runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// What `.coffer/stack.pids` records to recognise the postmaster: its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fast shutdown; immediate shutdown and then SIGKILL if that does not work.
    pub fn stop(&self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        if !proc::alive(pid) {
            return;
        }
        step(format!("stopping postgres (pid {pid})"));
        let stopped = proc::run_logged_to_end(
            self.command("pg_ctl")
                .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
                .arg(&self.data),
            &self.coffer.join("pg_ctl_stop.log"),
        );
        if let Err(err) = stopped {
            eprintln!("xtask: {err:#}");
            proc::stop_pid(pid, Signal::SIGQUIT, Duration::from_secs(5));
        }
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = match &self.os_user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", &user.name, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // A directory the postgres OS user can enter, whatever xtask's cwd is.
        cmd.current_dir(&self.home);
        cmd
    }
}

/// Whether the postgres OS user can traverse every directory down to `dir`.
fn postgres_can_reach(dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(dir)
        .current_dir("/")
        .status()
        .is_ok_and(|status| status.success())
}

/// Removes a file, symlink or directory tree, if there is one.
fn remove(path: &Path) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .with_context(|| format!("remove {}", path.display()))
}
