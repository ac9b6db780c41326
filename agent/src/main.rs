//! `coffer-agent`: parse arguments, load the configuration, init logging, run one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coffer_agent::config::Config;
use coffer_agent::enroll::{Enrollment, enroll};
use coffer_agent::run::{Stopped, run};
use secrecy::SecretString;
use serde::Serialize;

/// Exit status of an agent that found itself revoked: a supervisor should not restart it
/// (systemd: `RestartPreventExitStatus=3`).
const EXIT_REVOKED: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = "coffer-agent", version, about = "Coffer's backup agent")]
struct Cli {
    /// A TOML configuration file.
    #[arg(long, global = true, env = "COFFER_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The identity directory (default /var/lib/coffer-agent).
    #[arg(long, global = true)]
    identity_dir: Option<PathBuf>,
    /// Permit an http:// server (development only).
    #[arg(long, global = true)]
    allow_insecure: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a key, exchange a CSR and a one-time enrollment token for a certificate, and store
    /// them in the identity directory.
    Enroll {
        /// The Coffer server, https://host:port.
        #[arg(long)]
        server: String,
        /// The enrollment token (or COFFER_AGENT_TOKEN, which stays out of the process list).
        #[arg(long, env = "COFFER_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// The CA certificate (PEM) the server's TLS certificate chains to, when the system
        /// does not trust it already.
        #[arg(long)]
        server_ca: Option<PathBuf>,
    },
    /// Connect over mutual TLS and run the jobs the control plane assigns.
    Run {
        /// The directory of the liveness and readiness files (default /run/coffer-agent).
        #[arg(long)]
        status_dir: Option<PathBuf>,
    },
}

/// Flags that override the configuration (only those given).
#[derive(Debug, Serialize)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    allow_insecure: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COFFER_AGENT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let status_dir = match &cli.command {
        Command::Run { status_dir } => status_dir.clone(),
        Command::Enroll { .. } => None,
    };
    let config = Config::load(
        cli.config.as_deref(),
        Overrides {
            identity_dir: cli.identity_dir.clone(),
            status_dir,
            allow_insecure: cli.allow_insecure,
        },
    )
    .map_err(anyhow::Error::from)
    // Before any thread exists, so every thread runs as the unprivileged account.
    .and_then(|config| {
        coffer_agent::privileges::drop_root(config.user.as_deref())?;
        Ok(config)
    });
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("coffer-agent: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime =
        tokio::runtime::Runtime::new().expect("a tokio runtime starts on any supported OS");
    match runtime.block_on(command(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coffer-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn command(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Enroll {
            server,
            token,
            server_ca,
        } => {
            let server_ca_pem =
                match &server_ca {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!("reading --server-ca {}: {e}", path.display())
                    })?),
                    None => None,
                };
            let identity = enroll(Enrollment {
                server: &server,
                token: SecretString::from(token),
                server_ca_pem: server_ca_pem.as_deref(),
                allow_insecure: config.allow_insecure,
                identity_dir: &config.identity_dir,
            })
            .await?;
            println!(
                "enrolled agent {} of org {} (certificate {} valid until {}); identity in {}",
                identity.record.agent_id,
                identity.record.org_id,
                identity.record.serial,
                identity.record.not_after,
                config.identity_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { .. } => match run(config, shutdown_signal()).await? {
            Stopped::Shutdown => Ok(ExitCode::SUCCESS),
            Stopped::Revoked { serial } => {
                eprintln!(
                    "coffer-agent: halted: this agent's certificate {serial} is on its org's \
                     CRL (revoked); it will not run again with this identity. Enroll again \
                     with a new token."
                );
                Ok(ExitCode::from(EXIT_REVOKED))
            }
        },
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
