//! `cargo xtask demo`: the `coffer` server on the private stack, proved with a round trip.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::install;
use crate::paths::Repo;
use crate::proc::{self, step};
use crate::stack::Stack;

/// The demo's local KMS master key, created fresh in `.coffer/demo/kms` on every run.
const KMS_KEY_ID: &str = "demo-master";

pub fn run() -> Result<ExitCode> {
    let repo = Repo::locate()?;
    let tools = install::ensure(&repo)?;

    // Fresh every run: the database is new too, so old keys would be of no use.
    let demo_dir = repo.coffer_dir()?.join("demo");
    if demo_dir.exists() {
        fs::remove_dir_all(&demo_dir).with_context(|| format!("remove {}", demo_dir.display()))?;
    }
    let kms_dir = demo_dir.join("kms");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&kms_dir)
        .with_context(|| format!("create {}", kms_dir.display()))?;

    let mut stack = Stack::start(&repo, &tools)?;

    step("building coffer (cargo build -p coffer-server)");
    proc::run_ok(
        proc::cargo()
            .args(["build", "-p", "coffer-server"])
            .current_dir(&repo.root),
    )?;
    let coffer = coffer_binary(&repo);
    if !coffer.is_file() {
        bail!(
            "no coffer binary at {} after building coffer-server; \
             services/server does not build a `coffer` binary yet",
            coffer.display()
        );
    }

    let grpc_port = proc::free_port()?;
    let coffer_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&coffer);
        cmd.args(args)
            .current_dir(&repo.root)
            .envs(stack.env().iter().cloned())
            .env("COFFER_DATABASE__URL", stack.var("COFFER_TEST_OWNER_URL"))
            .env("COFFER_NATS__URL", stack.var("COFFER_TEST_NATS_URL"))
            .env("COFFER_GRPC__LISTEN", format!("127.0.0.1:{grpc_port}"))
            .env("COFFER_KMS__PROVIDER", "local")
            .env("COFFER_KMS__KEY_DIR", &kms_dir)
            .env("COFFER_KMS__KEY_ID", KMS_KEY_ID);
        cmd
    };

    step(format!(
        "creating local KMS master key {KMS_KEY_ID} in {}",
        repo.show(&kms_dir)
    ));
    proc::run_logged(
        Command::new(&coffer)
            .args([
                "admin",
                "create-local-kms-key",
                "--key-id",
                KMS_KEY_ID,
                "--key-dir",
            ])
            .arg(&kms_dir),
        &demo_dir.join("kms.log"),
    )?;

    let migrate_log = demo_dir.join("migrate.log");
    step(format!(
        "running coffer migrate (log: {})",
        repo.show(&migrate_log)
    ));
    proc::run_logged(&mut coffer_cmd(&["migrate"]), &migrate_log)?;

    // The platform owner's key is a secret: it goes to a 0600 file, never to the terminal.
    let init_file = demo_dir.join("platform-owner.json");
    step(format!(
        "running coffer admin init (platform owner's API key in {})",
        repo.show(&init_file)
    ));
    let out = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&init_file)
        .with_context(|| format!("create {}", init_file.display()))?;
    proc::run_ok(
        coffer_cmd(&[
            "admin",
            "init",
            "--owner-email",
            "owner@platform.demo",
            "--json",
        ])
        .stdout(out),
    )?;
    let init: serde_json::Value = serde_json::from_slice(
        &fs::read(&init_file).with_context(|| format!("read {}", init_file.display()))?,
    )
    .context("parse `coffer admin init --json`")?;
    let platform_key = init["api_key"]
        .as_str()
        .context("`coffer admin init --json` printed no api_key")?
        .to_owned();

    let serve_log = demo_dir.join("serve.log");
    step(format!(
        "starting coffer serve --target all on 127.0.0.1:{grpc_port} (log: {})",
        repo.show(&serve_log)
    ));
    let mut server = Server::spawn(coffer_cmd(&["serve", "--target", "all"]), &serve_log)?;
    proc::wait_for("coffer serve", Duration::from_secs(60), || {
        server.check_alive()?;
        Ok(proc::tcp_accepts(grpc_port))
    })?;

    let server_url = format!("http://127.0.0.1:{grpc_port}");
    step(format!(
        "running coffer diag round-trip --server {server_url}"
    ));
    proc::run_ok(
        coffer_cmd(&["diag", "round-trip", "--server", &server_url])
            .env("COFFER_API_KEY", &platform_key),
    )?;

    server.stop();
    stack.stop();
    let logs = [&serve_log, &migrate_log]
        .into_iter()
        .map(|log| repo.show(log))
        .chain(["pg.log", "nats.log", "moto.log"].map(|log| format!(".coffer/{log}")))
        .collect::<Vec<_>>()
        .join(", ");
    println!();
    println!("Coffer demo finished:");
    println!("  - started a private Postgres, nats-server (JetStream) and moto on loopback ports");
    println!(
        "  - built coffer, created a local KMS master key ({KMS_KEY_ID}), ran `coffer migrate`"
    );
    println!(
        "  - `coffer admin init` created the platform org and its owner's API key ({})",
        repo.show(&init_file)
    );
    println!("  - served every target with `coffer serve --target all` on 127.0.0.1:{grpc_port}");
    println!("  - `coffer diag round-trip` against the running server succeeded");
    println!("  - stopped the server and the stack");
    println!("  logs: {logs}");
    println!("  local KMS keys: {}", repo.show(&kms_dir));
    Ok(ExitCode::SUCCESS)
}

/// `$CARGO_TARGET_DIR/debug/coffer`, or `target/debug/coffer` in the repository.
fn coffer_binary(repo: &Repo) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| repo.root.join(dir)) // a relative one is relative to the root cargo ran in
        .unwrap_or_else(|| repo.root.join("target"));
    target.join("debug/coffer")
}

/// The running `coffer serve`; dropping it stops it.
#[derive(Debug)]
struct Server {
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    fn spawn(mut cmd: Command, log: &Path) -> Result<Server> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("duplicate a log file handle")?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start `{}`", proc::describe(&cmd)))?;
        Ok(Server {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait().context("check on coffer serve")?
        {
            bail!(
                "coffer serve exited ({status}); last lines of {}:\n{}",
                self.log.display(),
                proc::tail(&self.log, 15)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            step(format!("stopping coffer serve (pid {})", child.id()));
            if !proc::stop_child(&mut child, Signal::SIGTERM, Duration::from_secs(10)) {
                eprintln!("xtask: coffer serve did not exit within 10s of SIGTERM; killed it");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
