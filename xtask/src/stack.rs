//! The private stack: PostgreSQL, nats-server with JetStream, moto (standing in for AWS KMS)
//! and MariaDB (a source for the agent's MariaDB backups), each on a free loopback port, with
//! state and logs under `.coffer/`.
//!
//! [`Stack`] is a guard: dropping it stops everything it started, so cleanup runs on success,
//! failure, panic and interrupt alike. Each service runs in its own process group, so a Ctrl-C
//! at the terminal reaches xtask and not them. Pids go to `.coffer/stack.pids` so that the next
//! run can stop what a crashed (SIGKILLed) one left behind, and `.coffer/stack.lock` keeps a
//! second xtask in the same repo from taking a live stack for a leftover.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::install::Tools;
use crate::mariadb::MariaDb;
use crate::paths::Repo;
use crate::postgres::Postgres;
use crate::proc::{self, step};

#[derive(Debug)]
pub struct Stack {
    /// Held (flock) for as long as the stack runs.
    _lock: File,
    pids: PidFile,
    postgres: Option<Postgres>,
    nats: Option<Service>,
    moto: Option<Service>,
    mariadb: Option<Service>,
    env: Vec<(String, String)>,
}

/// A service xtask spawned directly and owns as a child.
#[derive(Debug)]
struct Service {
    name: &'static str,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Stack {
    pub fn start(repo: &Repo, tools: &Tools) -> Result<Stack> {
        let coffer = repo.coffer_dir()?;
        let lock = lock(&coffer.join("stack.lock"))?;
        let pids_path = coffer.join("stack.pids");
        stop_leftovers(&pids_path)?;
        let mut stack = Stack {
            _lock: lock,
            pids: PidFile {
                path: pids_path,
                lines: Vec::new(),
            },
            postgres: None,
            nats: None,
            moto: None,
            mariadb: None,
            env: Vec::new(),
        };
        // From here on, an early return drops `stack`, which stops whatever already runs.

        let pg = stack
            .postgres
            .insert(Postgres::prepare(repo, &tools.pg_bin, proc::free_port()?)?);
        pg.init(repo)?;
        pg.launch()?;
        let (pg_port, pg_pid) = (pg.port, pg.postmaster_pid());
        let pg_data = pg.data_dir().to_string_lossy().into_owned();
        if let Some(pid) = pg_pid {
            stack.pids.add(pid, "postgres", &pg_data)?;
        }
        stack.postgres.as_ref().expect("set above").create_owner()?;

        let nats_port = proc::free_port()?;
        let store = coffer.join("nats");
        fresh_dir(&store)?;
        let log = coffer.join("nats.log");
        step(format!(
            "starting nats-server on 127.0.0.1:{nats_port} (log: {})",
            repo.show(&log)
        ));
        let mut cmd = Command::new(&tools.nats_server);
        cmd.arg("-c")
            .arg(repo.infra_dev("nats.conf"))
            .args(["-a", "127.0.0.1", "-p", &nats_port.to_string()])
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(&log);
        let nats = stack.spawn("nats-server", cmd, nats_port, log, "nats-server")?;
        stack
            .nats
            .insert(nats)
            .wait_ready(Duration::from_secs(30), proc::tcp_accepts)?;

        let moto_port = proc::free_port()?;
        let log = coffer.join("moto.log");
        step(format!(
            "starting moto on 127.0.0.1:{moto_port} (log: {})",
            repo.show(&log)
        ));
        let mut cmd = Command::new(&tools.moto_server);
        cmd.args(["-H", "127.0.0.1", "-p", &moto_port.to_string()]);
        let moto = stack.spawn("moto_server", cmd, moto_port, log, "moto_server")?;
        stack
            .moto
            .insert(moto)
            .wait_ready(Duration::from_secs(60), proc::http_answers)?;

        let started = std::time::Instant::now();
        let mariadb = MariaDb::prepare(repo, proc::free_port()?)?;
        mariadb.init()?;
        let log = mariadb.log().to_path_buf();
        let marker = mariadb.data_dir().to_string_lossy().into_owned();
        let server = stack.spawn("mariadbd", mariadb.server()?, mariadb.port, log, &marker)?;
        stack
            .mariadb
            .insert(server)
            .wait_ready(Duration::from_secs(60), |_| mariadb.accepts())?;
        mariadb.create_superuser()?;
        step(format!(
            "mariadb is up in {:.1}s",
            started.elapsed().as_secs_f64()
        ));

        let path = std::env::join_paths(std::iter::once(tools.pg_bin.clone()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .context("build PATH")?;
        let pg_url = |user: &str, db: &str| format!("postgres://{user}@127.0.0.1:{pg_port}/{db}");
        stack.env = vec![
            ("COFFER_TEST_PG_URL".into(), pg_url("postgres", "postgres")),
            (
                "COFFER_TEST_OWNER_URL".into(),
                pg_url("coffer_owner", "coffer"),
            ),
            (
                "COFFER_TEST_NATS_URL".into(),
                format!("nats://127.0.0.1:{nats_port}"),
            ),
            (
                "COFFER_TEST_KMS_ENDPOINT".into(),
                format!("http://127.0.0.1:{moto_port}"),
            ),
            ("COFFER_TEST_MARIADB_URL".into(), mariadb.url()),
            (
                "COFFER_NATS_SERVER_BIN".into(),
                tools.nats_server.to_string_lossy().into_owned(),
            ),
            (
                "COFFER_MOTO_SERVER_BIN".into(),
                tools.moto_server.to_string_lossy().into_owned(),
            ),
            (
                "COFFER_STACK_DIR".into(),
                coffer.to_string_lossy().into_owned(),
            ),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("PATH".into(), path.to_string_lossy().into_owned()),
        ];
        step("stack is up");
        Ok(stack)
    }

    /// The variables tests, benches and the demo get.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// One of [`Stack::env`]'s values.
    pub fn var(&self, key: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .expect("the stack sets every variable callers ask for")
    }

    pub fn print_exports(&self) {
        for (key, value) in &self.env {
            println!("export {key}={}", shell_quote(value));
        }
    }

    /// Fails if a service died under us.
    pub fn check_alive(&mut self) -> Result<()> {
        for service in [&mut self.nats, &mut self.moto, &mut self.mariadb]
            .into_iter()
            .flatten()
        {
            service.check_alive()?;
        }
        if let Some(pg) = &self.postgres
            && !pg.postmaster_pid().is_some_and(proc::alive)
        {
            bail!("postgres is no longer running; see {}", pg.log().display());
        }
        Ok(())
    }

    /// Stops every service, newest first. Idempotent; reports problems but never fails.
    pub fn stop(&mut self) {
        for service in [self.mariadb.take(), self.moto.take(), self.nats.take()]
            .into_iter()
            .flatten()
        {
            service.stop();
        }
        if let Some(pg) = self.postgres.take() {
            pg.stop();
        }
        self.pids.clear();
    }

    /// Spawns a service in its own process group, stdout and stderr to a fresh `log`;
    /// `marker` is what its command line contains (see [`PidFile`]).
    fn spawn(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        port: u16,
        log: PathBuf,
        marker: &str,
    ) -> Result<Service> {
        File::create(&log).with_context(|| format!("create {}", log.display()))?;
        // Append mode, so lines the service writes to `log` itself (nats -l) interleave.
        let out = OpenOptions::new()
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("duplicate a log file handle")?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start `{}`", proc::describe(&cmd)))?;
        let service = Service {
            name,
            port,
            child,
            log,
        };
        if let Err(err) = self.pids.add(service.child.id(), name, marker) {
            service.stop();
            return Err(err);
        }
        Ok(service)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Service {
    fn wait_ready(&mut self, timeout: Duration, probe: impl Fn(u16) -> bool) -> Result<()> {
        let what = format!("{} on 127.0.0.1:{}", self.name, self.port);
        proc::wait_for(&what, timeout, || {
            self.check_alive()?;
            Ok(probe(self.port))
        })
        .with_context(|| format!("start {} (log: {})", self.name, self.log.display()))
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("check on a service")? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                proc::tail(&self.log, 15)
            );
        }
        Ok(())
    }

    fn stop(mut self) {
        step(format!("stopping {} (pid {})", self.name, self.child.id()));
        let grace = Duration::from_secs(5);
        if !proc::stop_child(&mut self.child, Signal::SIGTERM, grace) {
            eprintln!(
                "xtask: {} did not exit within {}s of SIGTERM; killed it",
                self.name,
                grace.as_secs()
            );
        }
    }
}

/// `.coffer/stack.pids`: one `<pid> <name> <marker>` line per running service; the marker is
/// a string its command line contains, so a recycled pid is never mistaken for ours.
#[derive(Debug)]
struct PidFile {
    path: PathBuf,
    lines: Vec<String>,
}

impl PidFile {
    fn add(&mut self, pid: impl std::fmt::Display, name: &str, marker: &str) -> Result<()> {
        self.lines.push(format!("{pid} {name} {marker}"));
        let text: String = self.lines.iter().map(|line| format!("{line}\n")).collect();
        fs::write(&self.path, text).with_context(|| format!("write {}", self.path.display()))
    }

    fn clear(&mut self) {
        self.lines.clear();
        let _ = fs::remove_file(&self.path);
    }
}

/// A line of a previous run's pid file.
#[derive(Debug, PartialEq)]
struct Leftover<'a> {
    pid: i32,
    name: &'a str,
    marker: &'a str,
}

impl<'a> Leftover<'a> {
    fn parse(line: &'a str) -> Option<Leftover<'a>> {
        let mut parts = line.splitn(3, ' ');
        let pid = parts.next()?.parse().ok()?;
        let name = parts.next()?;
        let marker = parts.next()?;
        Some(Leftover { pid, name, marker })
    }

    /// Whether the pid still belongs to the process we recorded.
    fn still_running(&self) -> bool {
        fs::read(format!("/proc/{}/cmdline", self.pid)).is_ok_and(|cmdline| {
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(self.marker)
        })
    }
}

fn stop_leftovers(pids_path: &Path) -> Result<()> {
    let Ok(text) = fs::read_to_string(pids_path) else {
        return Ok(());
    };
    for leftover in text.lines().filter_map(Leftover::parse) {
        if !leftover.still_running() {
            continue;
        }
        step(format!(
            "stopping {} (pid {}) left over by an earlier run",
            leftover.name, leftover.pid
        ));
        // SIGINT is Postgres's fast shutdown; SIGTERM would wait for its clients.
        let signal = if leftover.name == "postgres" {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        proc::stop_pid(leftover.pid, signal, Duration::from_secs(10));
    }
    fs::remove_file(pids_path).with_context(|| format!("remove {}", pids_path.display()))
}

fn lock(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            bail!("another `cargo xtask` runs a stack in this repository; stop it first")
        }
        Err(TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("lock {}", path.display()))
        }
    }
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// Quotes `value` for a POSIX shell, leaving plain values readable.
fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_urls_and_paths_alone_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("postgres://postgres@127.0.0.1:5/postgres"),
            "postgres://postgres@127.0.0.1:5/postgres"
        );
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn leftover_lines_keep_markers_with_spaces() {
        assert_eq!(
            Leftover::parse("42 postgres /home/a b/.coffer/pg"),
            Some(Leftover {
                pid: 42,
                name: "postgres",
                marker: "/home/a b/.coffer/pg"
            })
        );
        assert_eq!(Leftover::parse("x nats-server nats-server"), None);
        assert_eq!(Leftover::parse("42 nats-server"), None);
    }

    #[test]
    fn a_leftover_is_recognised_only_by_its_command_line() {
        let me = std::process::id();
        let mine = format!("{me} xtask xtask");
        let other = format!("{me} nats-server nats-server-that-is-not-running-here");
        assert!(Leftover::parse(&mine).unwrap().still_running());
        assert!(!Leftover::parse(&other).unwrap().still_running());
    }
}
