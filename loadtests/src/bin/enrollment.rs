//! `cargo xtask bench enrollment`: what agent enrollment, certificate renewal and access tokens
//! cost.
//!
//! A real `coffer` server runs in-process: the production wiring (`Application::build` with
//! every target), TLS with a development certificate, a fresh database, bus, revocation and
//! key buckets and local KMS key, initialised as `coffer admin init` does. The benchmark then
//! creates one org through the API. Each figure comes with a reference measured in the same
//! run, on the same connections, so the ratio stays comparable between machines:
//!
//! 1. **Enrollments/s** from `--clients` agents at once, each on its own TLS connection:
//!    `AgentService.Enroll` with a fresh single-use token and a P-256 CSR. Reference:
//!    `AgentService.GetCrl` with an org owner's bearer token on the same connections, the
//!    cheapest authenticated RPC that, like Enroll, opens a tenant transaction, reads the
//!    database and makes one CA signature (the CRL), but writes nothing. The ratio prices
//!    what Enroll adds: finding and consuming the token, checking the CSR, appending the
//!    agent and its certificate.
//! 2. **Renewals/s**: `AgentService.Renew` by distinct enrolled agents (one renewal each, as
//!    in production), each over its own mTLS connection with a certificate 80 % into its
//!    lifetime (when agents renew; minted with the org CA, as if time had passed) and a new
//!    key's CSR. Reference: `GetCrl` by the same agents over the same connections, so
//!    authentication by certificate is in both and the ratio prices the renewal itself.
//! 3. **Token exchange latency**: `TokenService.Exchange` of an API key from `--exchange-clients`
//!    (default one, so the figure is latency, not queueing), alternating on the same connection
//!    with `grpc.health.v1.Health/Check`: one round trip through TLS, HTTP/2 and the server's
//!    tracing and auth layers with no work behind it.
//! 4. **Token verification latency**: `Verifier::verify` of a token the server issued, checked
//!    against the key set the server publishes, in-process, alternating with a bare
//!    `ed25519-dalek` `verify_strict` of the same token's signature: the primitive the verifier
//!    wraps, so the ratio is what parsing, key lookup and the claim checks add.
//!
//! Keys, CSRs, enrollment tokens, aged certificates and connections are all made before timing,
//! so the figures measure the server. Renewals hold one open mTLS connection per renewing
//! agent (two file descriptors each, client and server being one process).
//!
//! Output: progress lines, a table, then one line of JSON for CI. Exits non-zero if an
//! operation failed or the database does not hold exactly the events the run caused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use coffer_auth::token::{Jwks, Verifier};
use coffer_kms::KeyId;
use coffer_loadtests::facts::{HostLoad, PostgresFacts, print_host};
use coffer_loadtests::load::{self, Budget};
use coffer_loadtests::report::{
    Align, Percentiles, Table, human_ms, nanos, nanos_histogram, per_second, round2,
};
use coffer_loadtests::server::{BenchServer, ServerKms, authed, exchange};
use coffer_pki::{AgentCsr, CaRole, CertificateAuthority, SpiffeId};
use coffer_proto::enrollment::v1::{
    CreateEnrollmentTokenRequest, EnrollRequest, EnrollResponse, ExchangeRequest, GetCrlRequest,
    GetJwksRequest, RenewRequest, agent_service_client::AgentServiceClient,
    enrollment_token_service_client::EnrollmentTokenServiceClient,
    token_service_client::TokenServiceClient,
};
use coffer_types::OrgId;
use futures::{StreamExt as _, TryStreamExt as _};
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::{Channel, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Enrollment benchmark: enrollments/s and renewals/s, token exchange and verification latency,
/// each against a reference from the same run.
#[derive(Debug, Parser)]
#[command(name = "enrollment")]
struct Args {
    /// Concurrent agents for enrollments and renewals, each on its own connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Timed enrollments (and as many reference GetCrl calls).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    enrollments: u64,
    /// Timed renewals (and as many reference GetCrl calls), by distinct enrolled agents: at
    /// most --enrollments.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    renewals: u64,
    /// Timed token exchanges (and as many reference health checks, alternating).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    exchanges: u64,
    /// Concurrent clients for the exchanges.
    #[arg(long, default_value_t = 1)]
    exchange_clients: usize,
    /// Timed token verifications (and as many reference signature checks, alternating);
    /// a tenth as many again warm up first.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    verifications: u64,
    /// Untimed operations of each kind before its timed run (connections, caches, the CA).
    #[arg(long, default_value_t = 32)]
    warmup: u64,
    /// Enrollments and renewals run in this many rounds, each a round of the reference then
    /// one of the operation, so load that comes and goes on the host reaches both alike.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Longest time one round of enrollments, renewals or their references may take; it ends
    /// at this or at its count, whichever comes first.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    max_duration: Duration,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if self.clients == 0 || self.exchange_clients == 0 {
            bail!("--clients and --exchange-clients must be at least 1");
        }
        if self.renewals > self.enrollments {
            bail!("--renewals must be at most --enrollments: each renewal is a distinct agent");
        }
        if self.max_duration.is_zero() {
            bail!("--max-duration must be longer than zero");
        }
        Ok(())
    }
}

/// When agents renew: at 80 % of their certificate's lifetime (DESIGN.md §8).
const RENEW_AT: f64 = 0.8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let _telemetry = coffer_loadtests::init_telemetry()?;

    let postgres = PostgresFacts::read().await?;
    let host = HostLoad::now();
    let server = Box::pin(BenchServer::start(ServerKms::Local)).await?;
    println!(
        "enrollment bench: coffer server in-process (production wiring, TLS, database pool of {} \
         connections), {}",
        server.db_pool,
        postgres.line()
    );
    print_host(&host, &postgres, Some("client and server"));
    let server_json = json!({
        "in_process": true,
        "tls": true,
        "db_pool": server.db_pool,
        "agent_ttl_s": server.pki.agent_ttl.as_secs(),
    });
    let outcome = Box::pin(run(&args, &server)).await;
    server.stop().await;
    let (cases, checks) = outcome?;

    println!();
    let mut table = Table::new(&[
        ("case", Align::Left),
        ("clients", Align::Right),
        ("ops", Align::Right),
        ("rate/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("reference", Align::Left),
        ("ref rate/s", Align::Right),
        ("ref p50", Align::Right),
        ("ref p99", Align::Right),
        ("ratio", Align::Left),
    ]);
    for case in &cases {
        table.row(case.cells());
    }
    print!("{table}");
    println!();
    println!("references (same run, same clients and connections):");
    for case in &cases {
        println!("  {:<9} {}", case.name, case.why);
    }
    for case in &cases {
        let r = &case.reference.latency;
        if case.kind != Kind::Throughput && r.p99_ms > 10.0 * r.p50_ms {
            println!(
                "note: {}'s reference has a p99 over ten times its p50 ({} against {}): \
                 stalls in the reference, not work, decide its p99 ratio",
                case.name,
                human_ms(r.p99_ms),
                human_ms(r.p50_ms)
            );
        }
    }
    println!(
        "checks: {} agents enrolled, {} certificates renewed, as the database's events agree: {}",
        checks.enrolled,
        checks.renewed,
        if checks.ok { "yes" } else { "NO" }
    );

    let mut summary = json!({
        "bench": "enrollment",
        "postgres": postgres.json(),
        "host": host.json(),
        "server": server_json,
        "csr_key": "ECDSA P-256",
        "renew_at": RENEW_AT,
        "warmup": args.warmup,
        "checks": checks.json(),
    });
    for case in &cases {
        summary[case.name] = case.json();
    }
    summary["ok"] = json!(checks.ok);
    println!("{summary}");
    if !checks.ok {
        bail!("the database does not hold the events the run caused");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run.

/// One line of the table: an operation and its reference.
struct Case {
    name: &'static str,
    clients: usize,
    kind: Kind,
    measured: Measured,
    reference_name: &'static str,
    reference: Measured,
    /// Why this reference, for the notes under the table.
    why: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A closed-loop rate; compared by rate.
    Throughput,
    /// Alternating with its reference; compared by latency.
    Latency,
    /// The same, for in-process operations reported in microseconds.
    InProcess,
}

struct Measured {
    ops: u64,
    /// Wall-clock time of a closed-loop run.
    elapsed: Option<Duration>,
    latency: Percentiles,
}

impl Measured {
    fn of_run(run: &load::Run) -> Self {
        Self {
            ops: run.ops,
            elapsed: Some(run.elapsed),
            latency: Percentiles::of(&run.latency),
        }
    }

    fn rate(&self) -> Option<f64> {
        self.elapsed.map(|e| per_second(self.ops, e))
    }

    fn json(&self, micros: bool) -> serde_json::Value {
        let mut v = json!({
            "ops": self.ops,
            "latency": if micros { self.latency.json_micros() } else { self.latency.json() },
        });
        if let (Some(rate), Some(elapsed)) = (self.rate(), self.elapsed) {
            v["per_s"] = json!(rate.round());
            v["seconds"] = json!(round2(elapsed.as_secs_f64()));
        }
        v
    }
}

fn ratio(x: f64, reference: f64) -> f64 {
    if reference > 0.0 { x / reference } else { 0.0 }
}

impl Case {
    fn rate_ratio(&self) -> f64 {
        ratio(
            self.measured.rate().unwrap_or(0.0),
            self.reference.rate().unwrap_or(0.0),
        )
    }

    fn latency_ratios(&self) -> (f64, f64) {
        let (m, r) = (&self.measured.latency, &self.reference.latency);
        (ratio(m.p50_ms, r.p50_ms), ratio(m.p99_ms, r.p99_ms))
    }

    fn cells(&self) -> Vec<String> {
        let rate = |m: &Measured| m.rate().map_or("-".to_owned(), |r| format!("{r:.0}"));
        let ratio = match self.kind {
            Kind::Throughput => format!("{:.2}× ref rate", self.rate_ratio()),
            Kind::Latency | Kind::InProcess => {
                let (p50, p99) = self.latency_ratios();
                format!("{p50:.2}× p50, {p99:.2}× p99")
            }
        };
        vec![
            self.name.to_owned(),
            self.clients.to_string(),
            self.measured.ops.to_string(),
            rate(&self.measured),
            human_ms(self.measured.latency.p50_ms),
            human_ms(self.measured.latency.p99_ms),
            self.reference_name.to_owned(),
            rate(&self.reference),
            human_ms(self.reference.latency.p50_ms),
            human_ms(self.reference.latency.p99_ms),
            ratio,
        ]
    }

    fn json(&self) -> serde_json::Value {
        let micros = self.kind == Kind::InProcess;
        let mut v = self.measured.json(micros);
        v["clients"] = json!(self.clients);
        let mut reference = self.reference.json(micros);
        reference["name"] = json!(self.reference_name);
        v["reference"] = reference;
        match self.kind {
            Kind::Throughput => v["ratio"] = json!(round2(self.rate_ratio())),
            Kind::Latency | Kind::InProcess => {
                let (p50, p99) = self.latency_ratios();
                v["p50_ratio"] = json!(round2(p50));
                v["p99_ratio"] = json!(round2(p99));
            }
        }
        v
    }
}

/// What the database says the run did.
struct Checks {
    enrolled: u64,
    renewed: u64,
    events_enrolled: i64,
    events_renewed: i64,
    ok: bool,
}

impl Checks {
    fn json(&self) -> serde_json::Value {
        json!({
            "enrolled": self.enrolled,
            "renewed": self.renewed,
            "agent_enrolled_events": self.events_enrolled,
            "certificate_renewed_events": self.events_renewed,
        })
    }
}

/// An agent-to-be: its key, its enrollment CSR, and the CSR of the key it renews to.
struct AgentKeys {
    key_pem: String,
    csr: Vec<u8>,
    renew_csr: Vec<u8>,
}

impl AgentKeys {
    fn generate() -> anyhow::Result<Self> {
        let csr = |key: &rcgen::KeyPair| -> anyhow::Result<Vec<u8>> {
            Ok(rcgen::CertificateParams::default()
                .serialize_request(key)
                .context("make a CSR")?
                .der()
                .to_vec())
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generate an agent key")?;
        let next = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generate an agent key")?;
        Ok(Self {
            key_pem: key.serialize_pem(),
            csr: csr(&key)?,
            renew_csr: csr(&next)?,
        })
    }
}

async fn run(args: &Args, server: &BenchServer) -> anyhow::Result<(Vec<Case>, Checks)> {
    let admin = server.connect(None).await?;
    let (org, owner_key) = server.create_org(&admin).await?;

    // Everything agents need, made before any timing.
    let agents = args.warmup + args.enrollments;
    println!(
        "setup: org {org}; making {agents} P-256 agent keys with their CSRs, and as many \
         enrollment tokens from {} clients",
        args.clients
    );
    let keys = tokio::task::spawn_blocking(move || {
        (0..agents)
            .map(|_| AgentKeys::generate())
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("join the key generator")??;
    let owner_token = exchange(&admin, &owner_key).await?;
    let tokens_client = EnrollmentTokenServiceClient::new(authed(admin.clone(), &owner_token)?);
    let tokens: Vec<String> = futures::stream::iter(0..agents)
        .map(|i| {
            let mut client = tokens_client.clone();
            async move {
                let created = client
                    .create_enrollment_token(CreateEnrollmentTokenRequest {
                        org_id: org.to_string(),
                        name: format!("bench agent {i}"),
                        ttl_seconds: 0,
                    })
                    .await
                    .context("create an enrollment token")?;
                anyhow::Ok(created.into_inner().secret)
            }
        })
        .buffered(args.clients)
        .try_collect()
        .await?;

    let mut channels = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        channels.push(server.connect(None).await?);
    }
    let (enroll, enrolled) = Box::pin(enrollments(
        args, &channels, org, &owner_key, &admin, tokens, &keys,
    ))
    .await?;
    drop(channels);
    let (renew, renewed) = Box::pin(renewals(args, server, org, &enrolled, &keys)).await?;
    let exchange_case = Box::pin(exchanges(args, server, &owner_key)).await?;
    let verify = Box::pin(verifications(args, server, &admin, &owner_key)).await?;

    let checks = check(server, enrolled.len() as u64, renewed).await?;
    Ok((vec![enroll, renew, exchange_case, verify], checks))
}

/// Part 1: enrollments against authenticated GetCrl calls. Returns the case and every enrolled
/// agent (warm-up included) with the index of its keys.
async fn enrollments(
    args: &Args,
    channels: &[Channel],
    org: OrgId,
    owner_key: &str,
    admin: &Channel,
    tokens: Vec<String>,
    keys: &[AgentKeys],
) -> anyhow::Result<(Case, Vec<(usize, EnrollResponse)>)> {
    let items: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        tokens
            .into_iter()
            .zip(keys.iter().map(|k| k.csr.clone()))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let enrolled = Arc::new(Mutex::new(Vec::with_capacity(items.len())));
    let enroll = |budget: Budget| {
        load::closed_loop(args.clients, budget, |w| {
            let client = AgentServiceClient::new(channels[w].clone());
            let (items, next, enrolled) = (items.clone(), next.clone(), enrolled.clone());
            move || {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (mut client, items, enrolled) =
                    (client.clone(), items.clone(), enrolled.clone());
                async move {
                    let (token, csr) = items.get(i).context("an enrollment token per agent")?;
                    let response = client
                        .enroll(EnrollRequest {
                            enrollment_token: token.clone(),
                            csr: csr.clone(),
                        })
                        .await
                        .context("enroll an agent")?
                        .into_inner();
                    enrolled
                        .lock()
                        .expect("no code panics while holding the list")
                        .push((i, response));
                    Ok(())
                }
            }
        })
    };
    // A fresh token: the exchanges made during setup are minutes old by the end of a long run.
    let owner_token = exchange(admin, owner_key).await?;
    let mut get_crl_clients = Vec::with_capacity(channels.len());
    for channel in channels {
        get_crl_clients.push(AgentServiceClient::new(authed(
            channel.clone(),
            &owner_token,
        )?));
    }
    let get_crl = |budget: Budget| {
        load::closed_loop(args.clients, budget, |w| {
            let client = get_crl_clients[w].clone();
            move || {
                let mut client = client.clone();
                async move {
                    client
                        .get_crl(GetCrlRequest {
                            org_id: org.to_string(),
                        })
                        .await
                        .context("get the org CRL with a bearer token")?;
                    Ok(())
                }
            }
        })
    };

    let budget = |ops: u64| Budget::new(ops, args.max_duration);
    enroll(budget(args.warmup)).await?;
    get_crl(budget(args.warmup)).await?;
    let (mut reference, mut measured) = (load::Run::empty(), load::Run::empty());
    for ops in load::rounds(args.enrollments, args.rounds) {
        reference.absorb(get_crl(budget(ops)).await?);
        measured.absorb(enroll(budget(ops)).await?);
    }
    let case = Case {
        name: "enroll",
        clients: args.clients,
        kind: Kind::Throughput,
        measured: Measured::of_run(&measured),
        reference_name: "GetCrl (bearer)",
        reference: Measured::of_run(&reference),
        why: "GetCrl with an org owner's bearer token: the cheapest authenticated RPC that, \
              like Enroll, opens a tenant transaction, reads the database and makes one CA \
              signature, but writes nothing; the ratio prices finding and consuming the token, \
              checking the CSR and appending the agent",
    };
    println!(
        "enroll    {} clients: {:.0} enrollments/s, {:.0} GetCrl/s",
        args.clients,
        case.measured.rate().unwrap_or(0.0),
        case.reference.rate().unwrap_or(0.0)
    );
    let enrolled = std::mem::take(
        &mut *enrolled
            .lock()
            .expect("no code panics while holding the list"),
    );
    Ok((case, enrolled))
}

/// An enrolled agent ready to renew: its mTLS connection and the CSR of its next key.
struct Renewing {
    channel: Channel,
    csr: Vec<u8>,
}

/// Part 2: renewals against GetCrl by the same agents over the same mTLS connections. Returns
/// the case and how many certificates were renewed, warm-up included.
async fn renewals(
    args: &Args,
    server: &BenchServer,
    org: OrgId,
    enrolled: &[(usize, EnrollResponse)],
    keys: &[AgentKeys],
) -> anyhow::Result<(Case, u64)> {
    let wanted = usize::try_from(args.warmup + args.renewals).context("renewal count")?;
    let renewals = if enrolled.len() < wanted {
        let left = enrolled.len().saturating_sub(args.warmup as usize) as u64;
        println!(
            "note: only {} agents enrolled within --max-duration; renewing {left}",
            enrolled.len()
        );
        ensure!(left > 0, "no enrolled agent is left to renew");
        left
    } else {
        args.renewals
    };

    // Each agent gets a certificate 80 % into its lifetime from the org CA, as if time had
    // passed, and its own mTLS connection presenting it.
    let ca = org_ca(server, org).await?;
    let ttl = server.pki.agent_ttl;
    let issued_at = chrono::Utc::now()
        - chrono::Duration::from_std(ttl.mul_f64(RENEW_AT)).context("agent ttl")?;
    let mut identities = Vec::with_capacity(wanted);
    for (i, response) in enrolled.iter().take(wanted) {
        let agent_id = response.agent_id.parse().context("parse an agent id")?;
        let spiffe = SpiffeId::new(server.pki.trust_domain.clone(), org, agent_id);
        let csr = AgentCsr::parse(&keys[*i].csr, &spiffe).context("parse an agent's CSR")?;
        let aged = ca
            .issue_agent_certificate(&csr, issued_at, ttl)
            .context("mint an aged agent certificate")?;
        let chain = format!("{}{}", aged.pem(), response.intermediate_pem);
        identities.push((
            Identity::from_pem(chain, &keys[*i].key_pem),
            keys[*i].renew_csr.clone(),
        ));
    }
    println!(
        "setup: {} agents with certificates {:.0} % into their {} lifetime, opening one mTLS \
         connection each",
        identities.len(),
        RENEW_AT * 100.0,
        humantime::format_duration(ttl)
    );
    let agents: Vec<Renewing> = futures::stream::iter(identities)
        .map(|(identity, csr)| async move {
            let channel = server
                .endpoint(Some(identity))?
                .connect()
                .await
                .context("connect over mTLS as an agent")?;
            anyhow::Ok(Renewing { channel, csr })
        })
        .buffered(args.clients)
        .try_collect()
        .await?;
    let agents = Arc::new(agents);

    let next = Arc::new(AtomicUsize::new(0));
    let renew = |budget: Budget| {
        load::closed_loop(args.clients, budget, |_| {
            let (agents, next) = (agents.clone(), next.clone());
            move || {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let agents = agents.clone();
                async move {
                    let agent = agents.get(i).context("a distinct agent per renewal")?;
                    AgentServiceClient::new(agent.channel.clone())
                        .renew(RenewRequest {
                            csr: agent.csr.clone(),
                        })
                        .await
                        .context("renew an agent certificate")?;
                    Ok(())
                }
            }
        })
    };
    // The reference visits the agents round robin, so it spreads over the same connections.
    let visit = Arc::new(AtomicUsize::new(0));
    let get_crl = |budget: Budget| {
        load::closed_loop(args.clients, budget, |_| {
            let (agents, visit) = (agents.clone(), visit.clone());
            move || {
                let i = visit.fetch_add(1, Ordering::Relaxed) % agents.len();
                let channel = agents[i].channel.clone();
                async move {
                    AgentServiceClient::new(channel)
                        .get_crl(GetCrlRequest {
                            org_id: org.to_string(),
                        })
                        .await
                        .context("get the org CRL as an agent")?;
                    Ok(())
                }
            }
        })
    };

    let budget = |ops: u64| Budget::new(ops, args.max_duration);
    let warm = renew(budget(args.warmup)).await?;
    get_crl(budget(args.warmup)).await?;
    let (mut reference, mut measured) = (load::Run::empty(), load::Run::empty());
    for ops in load::rounds(renewals, args.rounds) {
        reference.absorb(get_crl(budget(ops)).await?);
        measured.absorb(renew(budget(ops)).await?);
    }
    let case = Case {
        name: "renew",
        clients: args.clients,
        kind: Kind::Throughput,
        measured: Measured::of_run(&measured),
        reference_name: "GetCrl (mTLS)",
        reference: Measured::of_run(&reference),
        why: "GetCrl by the same agents over the same mTLS connections: authentication by \
              certificate, a tenant transaction, a read and one CA signature are in both, so \
              the ratio prices what renewal adds (checking the CSR, loading the agent, \
              appending its new certificate)",
    };
    println!(
        "renew     {} clients: {:.0} renewals/s, {:.0} GetCrl/s",
        args.clients,
        case.measured.rate().unwrap_or(0.0),
        case.reference.rate().unwrap_or(0.0)
    );
    Ok((case, warm.ops + measured.ops))
}

/// The org's intermediate CA, loaded as the server stores it and unwrapped with its KMS key.
async fn org_ca(server: &BenchServer, org: OrgId) -> anyhow::Result<CertificateAuthority> {
    let su = server.db.superuser().await;
    let (der, wrapped, kms_key_id): (Vec<u8>, Vec<u8>, String) = sqlx::query_as(
        "SELECT certificate_der, wrapped_private_key, kms_key_id
         FROM coffer_enrollment.certificate_authorities WHERE org_id = $1",
    )
    .bind(org.as_uuid())
    .fetch_one(&su)
    .await
    .context("read the org CA")?;
    su.close().await;
    CertificateAuthority::from_wrapped_key(
        server.kms.as_ref(),
        CaRole::Org(org),
        &server.pki.trust_domain,
        &der,
        &coffer_kms::WrappedKey {
            key_id: KeyId::new(kms_key_id),
            ciphertext: wrapped,
        },
    )
    .await
    .context("unwrap the org CA key")
}

/// Part 3: token exchange latency against a health check, alternating on each connection.
async fn exchanges(args: &Args, server: &BenchServer, owner_key: &str) -> anyhow::Result<Case> {
    let mut channels = Vec::with_capacity(args.exchange_clients);
    for _ in 0..args.exchange_clients {
        channels.push(server.connect(None).await?);
    }
    let owner_key = Arc::new(owner_key.to_owned());
    let pairs = |pairs: u64| {
        load::alternating(args.exchange_clients, pairs, |c| {
            let tokens = TokenServiceClient::new(channels[c].clone());
            let health = HealthClient::new(channels[c].clone());
            let key = owner_key.clone();
            let exchange = move || {
                let (mut tokens, key) = (tokens.clone(), key.clone());
                async move {
                    tokens
                        .exchange(ExchangeRequest {
                            api_key: key.to_string(),
                        })
                        .await
                        .context("exchange an API key")?;
                    Ok(())
                }
            };
            let check = move || {
                let mut health = health.clone();
                async move {
                    health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .context("check the server's health")?;
                    Ok(())
                }
            };
            (exchange, check)
        })
    };
    pairs(args.warmup).await?;
    let run = pairs(args.exchanges).await?;
    let case = Case {
        name: "exchange",
        clients: args.exchange_clients,
        kind: Kind::Latency,
        measured: Measured {
            ops: run.pairs,
            elapsed: None,
            latency: Percentiles::of(&run.measured),
        },
        reference_name: "Health/Check",
        reference: Measured {
            ops: run.pairs,
            elapsed: None,
            latency: Percentiles::of(&run.reference),
        },
        why: "grpc.health.v1.Health/Check on the same connection, alternating: a round trip \
              through TLS, HTTP/2 and the server's tracing and auth layers with nothing behind \
              it; the ratio is the exchange's own work (key lookup, last-used update, signing) \
              in round trips",
    };
    println!(
        "exchange  {} client(s): p50 {} p99 {}",
        args.exchange_clients,
        human_ms(case.measured.latency.p50_ms),
        human_ms(case.measured.latency.p99_ms)
    );
    Ok(case)
}

/// Part 4: in-process verification of a token the server issued, against a bare signature
/// check of the same token.
async fn verifications(
    args: &Args,
    server: &BenchServer,
    admin: &Channel,
    owner_key: &str,
) -> anyhow::Result<Case> {
    let token = exchange(admin, owner_key).await?;
    let published = TokenServiceClient::new(admin.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .context("read the published key set")?
        .into_inner()
        .json;
    let jwks: Jwks = serde_json::from_str(&published).context("parse the published key set")?;
    let verifier = Verifier::new(&jwks, &server.auth.issuer, &server.auth.audience);
    let (signing_input, signature) = token
        .rsplit_once('.')
        .context("an access token has three segments")?;
    let header = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .context("an access token has a JSON header")?;
    let kid = header["kid"]
        .as_str()
        .context("an access token names its key")?;
    let key = jwks
        .keys
        .iter()
        .find(|k| k.kid() == kid)
        .context("the token's key is published")?
        .public_key();
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
        .context("an access token carries an Ed25519 signature")?;
    let signing_input = signing_input.to_owned();

    let iterations = args.verifications;
    let (measured, reference) = tokio::task::spawn_blocking(move || {
        let verify = || {
            let t = std::time::Instant::now();
            let ok = verifier.verify(&token, SystemTime::now()).is_ok();
            (ok, t.elapsed())
        };
        let check = || {
            let t = std::time::Instant::now();
            let ok = key
                .verify_strict(signing_input.as_bytes(), &signature)
                .is_ok();
            (ok, t.elapsed())
        };
        let (mut measured, mut reference) = (nanos_histogram(), nanos_histogram());
        let warmup = iterations / 10;
        for n in 0..warmup + iterations {
            // Turn about, so neither always runs on the other's warm caches.
            let ((verified, v_took), (checked, c_took)) = if n % 2 == 0 {
                let c = check();
                (verify(), c)
            } else {
                let v = verify();
                (v, check())
            };
            ensure!(
                verified && checked,
                "the server's token failed verification"
            );
            if n >= warmup {
                measured.saturating_record(nanos(v_took));
                reference.saturating_record(nanos(c_took));
            }
        }
        anyhow::Ok((measured, reference))
    })
    .await
    .context("join the verification loop")??;
    let case = Case {
        name: "verify",
        clients: 1,
        kind: Kind::InProcess,
        measured: in_process(&measured),
        reference_name: "ed25519 verify_strict",
        reference: in_process(&reference),
        why: "ed25519-dalek verify_strict of the same token's signature, alternating: the \
              primitive Verifier wraps; the ratio is what parsing, key lookup and the claim \
              checks add",
    };
    println!(
        "verify    in-process: p50 {} p99 {}",
        human_ms(case.measured.latency.p50_ms),
        human_ms(case.measured.latency.p99_ms)
    );
    Ok(case)
}

fn in_process(h: &Histogram<u64>) -> Measured {
    Measured {
        ops: h.len(),
        elapsed: None,
        latency: Percentiles::of_nanos(h),
    }
}

/// Counts the events the run caused: every enrollment and renewal the clients saw succeed,
/// and no more.
async fn check(server: &BenchServer, enrolled: u64, renewed: u64) -> anyhow::Result<Checks> {
    let su = server.db.superuser().await;
    let count = |event_type: &'static str| {
        let su = su.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM coffer_enrollment.events WHERE event_type = $1",
            )
            .bind(event_type)
            .fetch_one(&su)
            .await
            .with_context(|| format!("count {event_type} events"))
        }
    };
    let events_enrolled = count("AgentEnrolled").await?;
    let events_renewed = count("CertificateRenewed").await?;
    su.close().await;
    let ok = u64::try_from(events_enrolled).ok() == Some(enrolled)
        && u64::try_from(events_renewed).ok() == Some(renewed);
    Ok(Checks {
        enrolled,
        renewed,
        events_enrolled,
        events_renewed,
        ok,
    })
}
