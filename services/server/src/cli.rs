//! Command-line parsing and the client commands (`coffer diag …`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use coffer_proto::diagnostics::v1::{
    self as pb, diagnostics_service_client::DiagnosticsServiceClient,
};
use coffer_proto::enrollment::v1::{ExchangeRequest, token_service_client::TokenServiceClient};
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
    /// Set up a new deployment once: the access-token signing key and the platform org
    /// with its first owner, whose API key is printed once.
    Init {
        /// The first platform owner.
        #[arg(long)]
        owner_email: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
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
        /// An API key (`coffer_…`) of a member with `diagnostics.probe`; exchanged for an
        /// access token.
        #[arg(long, env = "COFFER_API_KEY", hide_env_values = true)]
        api_key: String,
        /// The org the probe belongs to; the API key's org by default.
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
    api_key: &str,
    org: Option<OrgId>,
    note: String,
    timeout: Duration,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("server URL {server}"))?
        .connect()
        .await
        .with_context(|| format!("connect to {server}"))?;
    let token = TokenServiceClient::new(channel.clone())
        .exchange(ExchangeRequest {
            api_key: api_key.to_owned(),
        })
        .await
        .context("exchange the API key for an access token")?
        .into_inner();
    let org = match org {
        Some(org) => org,
        None => token
            .org_id
            .parse()
            .context("the access token names no valid org")?,
    };
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", token.access_token)
            .parse()
            .context("the access token is not a valid header value")?;
    let mut client =
        DiagnosticsServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
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
