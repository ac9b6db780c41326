//! `stack`, `test`, `lint` and `bench`: thin wrappers around cargo and the stack.

use std::process::{Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::Result;

use crate::install;
use crate::interrupt;
use crate::paths::Repo;
use crate::proc::{self, step};
use crate::stack::Stack;

/// `cargo xtask stack`: runs until Ctrl-C, which surfaces as `Interrupted` and drops the stack.
pub fn stack() -> Result<ExitCode> {
    let repo = Repo::locate()?;
    let tools = install::ensure(&repo)?;
    let mut stack = Stack::start(&repo, &tools)?;
    stack.print_exports();
    step("press Ctrl-C to stop the stack");
    loop {
        interrupt::check()?;
        stack.check_alive()?;
        sleep(Duration::from_millis(250));
    }
}

/// `cargo xtask test`: the whole workspace suite against a fresh stack.
pub fn test(args: &[String]) -> Result<ExitCode> {
    let repo = Repo::locate()?;
    let tools = install::ensure(&repo)?;
    let stack = Stack::start(&repo, &tools)?;
    let mut cmd = proc::cargo();
    if nextest_available() {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    cmd.args(args)
        .current_dir(&repo.root)
        .envs(stack.env().iter().cloned());
    step(format!("running {}", proc::describe(&cmd)));
    let status = proc::run(&mut cmd)?;
    drop(stack);
    step(format!("test suite finished: {status}"));
    Ok(proc::exit_code(status))
}

fn nextest_available() -> bool {
    proc::cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `cargo xtask lint`: formatting, then clippy with warnings denied; stops at the first failure.
pub fn lint() -> Result<ExitCode> {
    let repo = Repo::locate()?;
    let checks: [&[&str]; 2] = [
        &["fmt", "--all", "--", "--check"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ];
    for args in checks {
        let mut cmd = proc::cargo();
        cmd.args(args).current_dir(&repo.root);
        step(format!("running {}", proc::describe(&cmd)));
        let status = proc::run(&mut cmd)?;
        if !status.success() {
            return Ok(proc::exit_code(status));
        }
    }
    step("lint clean");
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask bench <name>`: a `coffer-loadtests` binary in release mode against the stack.
pub fn bench(name: &str, args: &[String]) -> Result<ExitCode> {
    let repo = Repo::locate()?;
    let tools = install::ensure(&repo)?;
    // A benchmark that drives one of the workspace's binaries finds it beside its own, built
    // in release mode like itself (the bench's `cargo run` builds only its own package).
    if let Some(package) = bench_drives(name) {
        let mut cmd = proc::cargo();
        cmd.args(["build", "--release", "-p", package])
            .current_dir(&repo.root);
        step(format!("building {}", proc::describe(&cmd)));
        proc::run_ok(&mut cmd)?;
    }
    let stack = Stack::start(&repo, &tools)?;
    let mut cmd: Command = proc::cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "coffer-loadtests",
        "--bin",
        name,
        "--",
    ])
    .args(args)
    .current_dir(&repo.root)
    .envs(stack.env().iter().cloned());
    step(format!("running {}", proc::describe(&cmd)));
    let status = proc::run(&mut cmd)?;
    drop(stack);
    step(format!("bench {name} finished: {status}"));
    Ok(proc::exit_code(status))
}

/// The workspace binary a benchmark drives as a separate process, if any.
fn bench_drives(name: &str) -> Option<&'static str> {
    match name {
        "agent" => Some("coffer-agent"),
        _ => None,
    }
}
