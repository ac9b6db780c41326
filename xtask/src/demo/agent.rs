//! The demo's `coffer-agent`: its home (configuration, identity and status directories), the
//! local destination it writes backups to, enrollment and `run`.
//!
//! Run by root, xtask hands the agent's directories to an unprivileged account, which the agent
//! switches to before it reads or writes anything (`user` in its configuration), as a
//! production install would run it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::unistd::User;

use super::daemon::Daemon;
use crate::proc;

/// The account the agent runs as when xtask runs as root.
pub const UNPRIVILEGED: &str = "nobody";

#[derive(Debug)]
pub struct AgentHome {
    binary: PathBuf,
    pub config: PathBuf,
    pub identity: PathBuf,
    pub status: PathBuf,
    pub server_ca: PathBuf,
    /// The local root both the server and the agent accept destinations under.
    pub local_root: PathBuf,
    /// The destination directory, owned by the agent's account.
    pub destination: PathBuf,
    /// Who the agent runs as: `None` when xtask is not root (it then runs as xtask's user).
    pub account: Option<User>,
}

impl AgentHome {
    /// Lays out `base`: the agent's home, its configuration and the destination directory.
    /// `base` must be reachable by the unprivileged account.
    pub fn prepare(base: &Path, binary: PathBuf, pg_bin: &Path) -> Result<AgentHome> {
        let account = if nix::unistd::geteuid().is_root() {
            Some(
                User::from_name(UNPRIVILEGED)
                    .with_context(|| format!("look up the {UNPRIVILEGED} account"))?
                    .with_context(|| {
                        format!("there is no {UNPRIVILEGED} account for the agent to run as")
                    })?,
            )
        } else {
            None
        };
        // Owned by the agent's account: holds `identity/` and `status/`.
        let home = base.join("agent");
        let local_root = base.join("backups");
        let destination = local_root.join("demo-org");
        for (dir, mode) in [(&home, 0o700), (&local_root, 0o755), (&destination, 0o700)] {
            fs::DirBuilder::new()
                .mode(mode)
                .create(dir)
                .with_context(|| format!("create {}", dir.display()))?;
        }
        if let Some(user) = &account {
            for dir in [&home, &destination] {
                chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw())).with_context(
                    || format!("give {} to the {} account", dir.display(), user.name),
                )?;
            }
        }
        let identity = home.join("identity");
        let status = home.join("status");
        let server_ca = base.join("server-ca.pem");
        let config = base.join("agent.toml");
        let user = match &account {
            Some(user) => format!("user = {}\n", toml_string(&user.name)),
            None => String::new(),
        };
        let text = format!(
            "# Written by cargo xtask demo.\n\
             identity_dir = {identity}\n\
             status_dir = {status}\n\
             {user}\
             \n[jobs]\npoll_wait = \"5s\"\n\
             \n[backup]\npg_dump = {pg_dump}\n\
             \n[restore]\npg_restore = {pg_restore}\n\
             \n[storage]\nlocal_roots = [{local_root}]\n",
            identity = toml_path(&identity),
            status = toml_path(&status),
            pg_dump = toml_path(&pg_bin.join("pg_dump")),
            pg_restore = toml_path(&pg_bin.join("pg_restore")),
            local_root = toml_path(&local_root),
        );
        fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        Ok(AgentHome {
            binary,
            config,
            identity,
            status,
            server_ca,
            local_root,
            destination,
            account,
        })
    }

    /// Gives the agent the server's certificate to trust (public, readable by its account).
    pub fn trust(&self, server_cert: &Path) -> Result<()> {
        fs::copy(server_cert, &self.server_ca).with_context(|| {
            format!(
                "copy {} to {}",
                server_cert.display(),
                self.server_ca.display()
            )
        })?;
        fs::set_permissions(&self.server_ca, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("open up {}", self.server_ca.display()))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&self.config)
            .env_remove("COFFER_AGENT_TOKEN")
            .env("COFFER_AGENT_LOG", "info")
            // Its log is a file: no terminal colours in it.
            .env("NO_COLOR", "1")
            .current_dir("/");
        cmd
    }

    /// `coffer-agent enroll`, the token in COFFER_AGENT_TOKEN (out of the process list);
    /// returns the agent id it recorded.
    pub fn enroll(&self, server: &str, token: &str, log: &Path) -> Result<String> {
        proc::run_logged(
            self.command()
                .args(["enroll", "--server", server, "--server-ca"])
                .arg(&self.server_ca)
                .env("COFFER_AGENT_TOKEN", token),
            log,
        )?;
        let record_path = self.identity.join("identity.json");
        let record: serde_json::Value = serde_json::from_slice(
            &fs::read(&record_path).with_context(|| format!("read {}", record_path.display()))?,
        )
        .with_context(|| format!("parse {}", record_path.display()))?;
        record["agent_id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} records no agent_id", record_path.display()))
    }

    /// `coffer-agent run`, until it is ready to take jobs.
    pub fn run(&self, log: &Path) -> Result<Daemon> {
        let mut cmd = self.command();
        cmd.arg("run");
        let mut agent = Daemon::spawn("coffer-agent", cmd, log)?;
        let ready = self.status.join("ready");
        proc::wait_for("coffer-agent", Duration::from_secs(30), || {
            agent.check_alive()?;
            Ok(ready.exists())
        })?;
        Ok(agent)
    }
}

/// Whether `account` can traverse every directory down to `dir`.
pub fn reachable_by(account: &str, dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", account, "--", "test", "-x"])
        .arg(dir)
        .current_dir("/")
        .status()
        .is_ok_and(|status| status.success())
}

/// A TOML basic string (JSON's string escapes are a subset of TOML's).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn toml_path(path: &Path) -> String {
    toml_string(&path.to_string_lossy())
}
