//! `cargo xtask`: Coffer's developer and CI tasks (DESIGN.md §10).
//!
//! Everything is synchronous. A task installs what is missing ([`install`]), starts a private
//! stack of Postgres, nats-server, moto and MariaDB on free loopback ports under `.coffer/`
//! ([`stack`]), runs one foreground command at a time with the stack's env vars, and stops the
//! stack whatever happens: a drop guard covers success, failure and panics, and Ctrl-C (or
//! SIGTERM) only raises a flag ([`interrupt`]) that the foreground wait loops turn into an early
//! return, so the guard runs on that path too.

mod demo;
mod install;
mod interrupt;
mod mariadb;
mod paths;
mod postgres;
mod proc;
mod stack;
mod tasks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Coffer developer and CI tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the private stack, print its env vars as `export` lines and wait for Ctrl-C.
    Stack,
    /// Install what is missing, start the stack and run the whole workspace test suite.
    Test {
        /// Passed on to `cargo nextest run` (or `cargo test`), e.g. `-- -p coffer-db`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `cargo fmt --check`, then clippy on every target with warnings denied.
    Lint,
    /// Start the stack and run a load-test binary of `coffer-loadtests` in release mode.
    Bench {
        /// The binary in `loadtests/` to run.
        name: String,
        /// Passed on to the binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole story: server, org, agent, a pgbench database backed up by a schedule,
    /// restored with stock tools and by a restore job, the audit log verified; then a report.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = interrupt::install() {
        eprintln!("xtask: error: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Stack => tasks::stack(),
        Command::Test { args } => tasks::test(&args),
        Command::Lint => tasks::lint(),
        Command::Bench { name, args } => tasks::bench(&name, &args),
        Command::Demo => demo::run(),
    };
    // By now every guard has been dropped, so the stack is down whichever way we got here.
    if interrupt::requested() {
        eprintln!("xtask: interrupted; everything xtask started has been stopped");
        return ExitCode::from(130);
    }
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
