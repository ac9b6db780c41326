//! Command-line parsing and the client commands (`coffer diag …`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use coffer_proto::diagnostics::v1::{
    self as pb, diagnostics_service_client::DiagnosticsServiceClient,
};
use coffer_types::OrgId;

use crate::startup::Target;

/// Coffer: managed, end-to-end encrypted database backups. One binary: the server (`serve`,
/// `migrate`, `admin`) and its client.
#[derive(Debug, Parser)]
#[command(name = "coffer", version)]
pub struct Cli {
    /// TOML configuration file (layered: defaults, this file, COFFER_* variables, flags).
    #[arg(long, global = true, env = "COFFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run services.
    Serve {
        /// Which services to run in this process.
        #[arg(long, value_enum, default_value = "all")]
        target: Vec<Target>,
        /// Override grpc.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Create roles and schemas and apply pending migrations, as the owner role.
    Migrate,
    /// Operator commands.
    Admin {
        /// Which one.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Diagnostics against a running server.
    Diag {
        /// Which one.
        #[command(subcommand)]
        command: DiagCommand,
    },
}

/// `coffer admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Replay a service's event stream into fresh projection tables.
    RebuildProjections {
        /// The service whose projections to rebuild.
        #[arg(long, value_enum)]
        service: Target,
    },
    /// Create a new key file for the local KMS provider (mode 0600; never overwrites).
    CreateLocalKmsKey {
        /// Directory holding key files.
        #[arg(long)]
        key_dir: PathBuf,
        /// Id of the new key.
        #[arg(long)]
        key_id: String,
    },
}

/// `coffer diag …`.
#[derive(Debug, Subcommand)]
pub enum DiagCommand {
    /// Send a probe event and follow it: append → outbox → JetStream → consumer → projection.
    RoundTrip {
        /// The server's gRPC URL.
        #[arg(long, default_value = "http://127.0.0.1:7443")]
        server: String,
        /// The org the probe belongs to; a new random one by default.
        #[arg(long)]
        org: Option<OrgId>,
        /// Text carried by the probe.
        #[arg(long, default_value = "hello from coffer diag")]
        note: String,
        /// Give up after this long.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// `coffer diag round-trip`: prints each stage as the probe reaches it.
pub async fn diag_round_trip(
    server: &str,
    org: Option<OrgId>,
    note: String,
    timeout: Duration,
) -> anyhow::Result<()> {
    let org = org.unwrap_or_default();
    let mut client = DiagnosticsServiceClient::connect(server.to_owned())
        .await
        .with_context(|| format!("connect to {server}"))?;
    let started = Instant::now();
    let sent = client
        .send_probe(pb::SendProbeRequest {
            org_id: org.to_string(),
            note,
        })
        .await
        .context("send probe")?
        .into_inner();
    println!(
        "appended   ProbeSent {} to probe {} (org {org}, version {}) in {:?}",
        sent.event_id,
        sent.probe_id,
        sent.version,
        started.elapsed()
    );
    let mut published_at = None;
    loop {
        let view = client
            .get_probe(pb::GetProbeRequest {
                org_id: org.to_string(),
                probe_id: sent.probe_id.clone(),
            })
            .await
            .context("get probe")?
            .into_inner();
        if view.published && published_at.is_none() {
            published_at = Some(started.elapsed());
            println!(
                "published  to JetStream by the outbox relay after {:?}",
                started.elapsed()
            );
        }
        if view.observed_at.is_some() {
            if published_at.is_none() {
                println!("published  to JetStream by the outbox relay");
            }
            println!(
                "consumed   from JetStream (stream sequence {}) by the diagnostics consumer, trace {}",
                view.stream_sequence, view.consumer_trace_id
            );
            println!(
                "projected  ProbeObserved into the probes table after {:?} in all",
                started.elapsed()
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the probe was not observed within {timeout:?} (published: {})",
            view.published
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
