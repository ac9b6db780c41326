//! `cargo xtask bench credentials`: what releasing credentials to agents costs with each KMS
//! provider, against the same release with the KMS work taken out.
//!
//! Three real `coffer` servers run in-process, each with the production wiring (every target),
//! TLS with a development certificate, its own fresh database, bus and key buckets, initialised
//! as `coffer admin init` does. They differ only in the KMS the whole server wraps keys with:
//!
//! - **local**: `KmsConfig::Local`, a key file and AES-256-GCM, booted by `Application::build`;
//! - **aws**: `KmsConfig::Aws`, aws-sdk-kms against the stack's KMS API emulator (moto) under a
//!   master key made for the run, booted by `Application::build`. The emulator is a Python
//!   process on this host, so the figure prices the SDK and its HTTP round trips, not AWS
//!   KMS's own latency;
//! - **reference**: [`PassThroughKms`], which "wraps" a data key as the key itself, booted by
//!   `Application::build_with_kms`. The release path is otherwise identical: the ticket check,
//!   the read transaction, opening each value (XChaCha20-Poly1305 of a few dozen bytes, well
//!   under a microsecond), the `CredentialsReleased` append, TLS and gRPC.
//!
//! On each server an org holds two credentials (a 32-byte database password and a 64-byte
//! storage key) and `--agents` enrolled agents each hold their own mTLS connection. Every call
//! is `coffer.credentials.v1.ReleaseService/ReleaseCredentials` with a fresh job ticket (a new
//! job, attempt 1) naming both credentials, signed with an Ed25519 "scheduling" key published
//! the way scheduling publishes its own. Tickets, keys, enrollments and connections are all
//! made before timing; every response is checked to carry exactly the stored values.
//!
//! `--duration` of releases per server is timed in `--rounds` rounds, turn about between the
//! servers (the order rotating every round), so load that comes and goes on the host reaches
//! all three alike; before each round every server's outbox has been relayed, so no round pays
//! for the one before. The ratios to the reference are therefore taken in the same run and stay
//! comparable between machines.
//!
//! Output: progress lines, a table, then one line of JSON for CI. Exits non-zero if a release
//! failed or a server's database does not hold one `CredentialsReleased` event per release.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use coffer_auth::ticket::{self, JobTicket};
use coffer_auth::token::{Jwks, Signer};
use coffer_kms::{DATA_KEY_LEN, DataKey, EncryptionContext, KeyId, Kms, WrappedKey};
use coffer_loadtests::facts::{HostLoad, PostgresFacts, print_host};
use coffer_loadtests::load::{self, Budget};
use coffer_loadtests::report::{Align, Percentiles, Table, human_ms, per_second, round2};
use coffer_loadtests::server::{BenchServer, ServerKms, agent_key, authed, exchange};
use coffer_proto::credentials::v1::{
    CreateCredentialRequest, ReleaseCredentialsRequest,
    credential_service_client::CredentialServiceClient,
    release_service_client::ReleaseServiceClient,
};
use coffer_proto::enrollment::v1::{
    CreateEnrollmentTokenRequest, EnrollRequest, agent_service_client::AgentServiceClient,
    enrollment_token_service_client::EnrollmentTokenServiceClient,
};
use coffer_types::{AgentId, OrgId};
use rand::RngCore as _;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret as _, SecretBox, SecretSlice};
use serde_json::json;
use tokio::time::Instant;
use tonic::transport::{Channel, Identity};

/// Credential release benchmark: releases/s, p50 and p99 with the local and the aws KMS
/// provider, each against the same path with a pass-through KMS.
#[derive(Debug, Parser)]
#[command(name = "credentials")]
struct Args {
    /// Concurrent agents per server, each enrolled and on its own mTLS connection.
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// Timed releases per server, split into --rounds rounds.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Rounds per server, turn about with the other servers.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Untimed releases per agent on each server before timing (connections, caches, pools).
    #[arg(long, default_value_t = 4)]
    warmup: u64,
    /// Most timed releases per server: tickets for this many are signed before timing, an
    /// equal share per agent and round. An agent that used up its share stops for that round.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_releases: u64,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if self.agents == 0 {
            bail!("--agents must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        // A round's tickets are signed just before it and must outlive it.
        if self.round() + Duration::from_secs(30) > ticket::MAX_LIFETIME {
            bail!(
                "--duration / --rounds must be at most {}: job tickets expire",
                humantime::format_duration(ticket::MAX_LIFETIME - Duration::from_secs(30))
            );
        }
        Ok(())
    }

    /// How long one round of one server lasts.
    fn round(&self) -> Duration {
        self.duration.div_f64(self.rounds as f64)
    }

    /// Tickets signed per agent for one round.
    fn tickets_per_agent(&self) -> u64 {
        self.max_releases
            .div_ceil(self.rounds)
            .div_ceil(self.agents as u64)
    }
}

/// The credentials every ticket names: (name, purpose, value size). A database password and a
/// storage access key, at realistic sizes.
const CREDENTIALS: [(&str, &str, usize); 2] = [
    ("bench/orders-db", "database", 32),
    ("bench/backup-bucket", "storage", 64),
];

/// How long a setup step or an outbox drain may take before the run fails.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let _telemetry = coffer_loadtests::init_telemetry()?;

    let postgres = PostgresFacts::read().await?;
    let host = HostLoad::now();
    let aws_key = create_aws_master_key().await?;
    let mut servers = Vec::with_capacity(Provider::ALL.len());
    for provider in Provider::ALL {
        match Box::pin(BenchServer::start(provider.kms(&aws_key))).await {
            Ok(server) => servers.push((provider, server)),
            Err(e) => {
                for (_, server) in servers {
                    server.stop().await;
                }
                return Err(e.context(format!("boot the {} server", provider.name())));
            }
        }
    }
    let db_pool = servers[0].1.db_pool;
    println!(
        "credentials bench: {} coffer servers in-process (production wiring, TLS, database pool \
         of {db_pool} connections each), {}",
        servers.len(),
        postgres.line()
    );
    print_host(&host, &postgres, Some("clients and servers"));
    let outcome = Box::pin(run(&args, &servers)).await;
    for (_, server) in servers {
        server.stop().await;
    }
    let cases = outcome?;
    let host_end = HostLoad::now();

    let reference = cases
        .iter()
        .find(|c| c.provider == Provider::PassThrough)
        .context("the reference ran")?;
    println!();
    let mut table = Table::new(&[
        ("kms", Align::Left),
        ("agents", Align::Right),
        ("releases", Align::Right),
        ("releases/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("rate vs ref", Align::Right),
        ("per round", Align::Right),
        ("p50 vs ref", Align::Right),
    ]);
    for case in &cases {
        table.row(case.cells(args.agents, reference));
    }
    print!("{table}");
    println!();
    println!(
        "reference: the same release path on a server whose KMS \"wraps\" a data key as the key \
         itself (benchmark-only, never shipped); the ratios price the KMS work alone: rate vs \
         ref below 1 and p50 vs ref above 1 are its cost; \"per round\" is the lowest and \
         highest rate ratio of the rounds, in each of which the servers took turns: a range \
         that straddles 1.00× means the difference is within the host's noise"
    );
    println!(
        "aws (emulator) prices aws-sdk-kms and its HTTP round trips to moto, a Python process \
         on this host: not AWS KMS's own latency"
    );
    println!(
        "each release: a fresh ticket (new job, attempt 1) naming {} credentials ({} bytes), \
         {} timed in {} rounds per server, turn about; host load average {} at the end",
        CREDENTIALS.len(),
        CREDENTIALS
            .iter()
            .map(|(_, _, len)| len.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        humantime::format_duration(args.duration),
        args.rounds,
        host_end.load_average
    );
    for case in &cases {
        if case.used_up > 0 {
            println!(
                "note: {}: {} times an agent used every ticket of its round before the round \
                 ended; its figures cover a shorter run (raise --max-releases)",
                case.provider.name(),
                case.used_up
            );
        }
    }
    let ok = cases.iter().all(|c| c.check.ok());
    for case in &cases {
        println!(
            "checks: {}: {} releases succeeded, {} CredentialsReleased events in its database: \
             {}",
            case.provider.name(),
            case.check.released,
            case.check.events,
            if case.check.ok() { "agree" } else { "DISAGREE" }
        );
    }

    let mut summary = json!({
        "bench": "credentials",
        "postgres": postgres.json(),
        "host": host.json(),
        "host_end": host_end.json(),
        "server": {"in_process": true, "tls": true, "db_pool": db_pool},
        "agents": args.agents,
        "credentials_per_ticket": CREDENTIALS.len(),
        "value_bytes": CREDENTIALS.iter().map(|(_, _, len)| len).collect::<Vec<_>>(),
        "rounds": args.rounds,
        "warmup_per_agent": args.warmup,
    });
    for case in &cases {
        summary[case.provider.key()] = case.json(reference);
    }
    summary["ok"] = json!(ok);
    println!("{summary}");
    if !ok {
        bail!("a server's database does not hold one CredentialsReleased event per release");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The KMS providers.

/// Which KMS a server wraps keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    /// [`PassThroughKms`]: the reference.
    PassThrough,
    /// `KmsConfig::Local`.
    Local,
    /// `KmsConfig::Aws` against the KMS API emulator.
    Aws,
}

impl Provider {
    /// In the order the table lists them: the reference first.
    const ALL: [Provider; 3] = [Provider::PassThrough, Provider::Local, Provider::Aws];

    fn name(self) -> &'static str {
        match self {
            Provider::PassThrough => "none (reference)",
            Provider::Local => "local",
            Provider::Aws => "aws (emulator)",
        }
    }

    /// Its key in the JSON summary.
    fn key(self) -> &'static str {
        match self {
            Provider::PassThrough => "reference",
            Provider::Local => "local",
            Provider::Aws => "aws",
        }
    }

    /// The KMS a server with this provider boots with; `aws_key` is the emulator's master key.
    fn kms(self, aws_key: &str) -> ServerKms {
        match self {
            Provider::PassThrough => ServerKms::Given(Arc::new(PassThroughKms::new())),
            Provider::Local => ServerKms::Local,
            Provider::Aws => ServerKms::Aws {
                key_id: aws_key.to_owned(),
            },
        }
    }
}

/// A KMS that protects nothing: a wrapped key is the key itself, and the encryption context is
/// ignored. It exists only in this benchmark binary, as the reference that takes the KMS work
/// (a local AES-GCM unwrap, or a round trip to AWS KMS) out of an otherwise identical server;
/// no configuration can name it and nothing that ships contains it.
#[derive(Debug)]
struct PassThroughKms {
    key_id: KeyId,
}

impl PassThroughKms {
    fn new() -> Self {
        Self {
            key_id: KeyId::new("bench-pass-through"),
        }
    }

    fn wrapped(&self, bytes: &[u8]) -> WrappedKey {
        WrappedKey {
            key_id: self.key_id.clone(),
            ciphertext: bytes.to_vec(),
        }
    }
}

#[async_trait::async_trait]
impl Kms for PassThroughKms {
    fn current_key_id(&self) -> &KeyId {
        &self.key_id
    }

    async fn generate_data_key(
        &self,
        _ctx: &EncryptionContext,
    ) -> Result<DataKey, coffer_kms::Error> {
        let plaintext =
            SecretBox::init_with_mut(|key: &mut [u8; DATA_KEY_LEN]| OsRng.fill_bytes(key));
        let wrapped = self.wrapped(plaintext.expose_secret());
        Ok(DataKey { plaintext, wrapped })
    }

    async fn encrypt(
        &self,
        plaintext: &[u8],
        _ctx: &EncryptionContext,
    ) -> Result<WrappedKey, coffer_kms::Error> {
        Ok(self.wrapped(plaintext))
    }

    async fn decrypt_bytes(
        &self,
        wrapped: &WrappedKey,
        _ctx: &EncryptionContext,
    ) -> Result<SecretSlice<u8>, coffer_kms::Error> {
        if wrapped.key_id != self.key_id {
            return Err(coffer_kms::Error::KeyNotFound(wrapped.key_id.clone()));
        }
        Ok(SecretSlice::from(wrapped.ciphertext.clone()))
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        _ctx: &EncryptionContext,
        destination: &KeyId,
    ) -> Result<WrappedKey, coffer_kms::Error> {
        Ok(WrappedKey {
            key_id: destination.clone(),
            ciphertext: wrapped.ciphertext.clone(),
        })
    }
}

/// Creates a symmetric master key in the KMS API emulator with a plain SDK client (setup; the
/// servers go through `coffer_kms`). Returns its key id.
async fn create_aws_master_key() -> anyhow::Result<String> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(coffer_testkit::kms_endpoint())
        .load()
        .await;
    let created = aws_sdk_kms::Client::new(&sdk)
        .create_key()
        .description("coffer credentials bench master key")
        .send()
        .await
        .context("create a master key in the KMS API emulator")?;
    Ok(created
        .key_metadata()
        .context("CreateKey returns metadata")?
        .key_id()
        .to_owned())
}

// ---------------------------------------------------------------------------------------------
// The servers under test.

/// Waits until the relays have published every event `server` has written, so the next round
/// starts on an idle server.
async fn drained(server: &BenchServer) -> anyhow::Result<()> {
    let su = server.db.superuser().await;
    let deadline = Instant::now() + SETUP_DEADLINE;
    let result = loop {
        let pending = sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT count(*) FROM coffer_credentials.outbox)
                  + (SELECT count(*) FROM coffer_enrollment.outbox)",
        )
        .fetch_one(&su)
        .await
        .context("count unpublished events");
        match pending {
            Ok(0) => break Ok(()),
            Ok(n) if Instant::now() >= deadline => {
                break Err(anyhow::anyhow!(
                    "{n} events still unpublished after {}",
                    humantime::format_duration(SETUP_DEADLINE)
                ));
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => break Err(e),
        }
    };
    su.close().await;
    result
}

/// Counts the `CredentialsReleased` events in `server`'s database.
async fn releases_recorded(server: &BenchServer) -> anyhow::Result<i64> {
    let su = server.db.superuser().await;
    let count = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM coffer_credentials.events WHERE event_type = 'CredentialsReleased'",
    )
    .fetch_one(&su)
    .await
    .context("count CredentialsReleased events");
    su.close().await;
    count
}

// ---------------------------------------------------------------------------------------------
// The run.

/// A server set up for releases: its org, credentials and enrolled agents.
struct Fleet<'s> {
    provider: Provider,
    server: &'s BenchServer,
    org: OrgId,
    /// Each credential's vault reference and value, in the order tickets name them.
    vault: Arc<Vec<(String, Vec<u8>)>>,
    /// Each agent's id and its own mTLS connection.
    agents: Vec<(AgentId, Channel)>,
    /// Releases that succeeded outside timing: the ticket-key probe and the warm-up.
    untimed: u64,
    measured: load::Run,
    /// Releases/s of each round, in round order.
    round_rates: Vec<f64>,
    /// How many times an agent used up its tickets before its round ended.
    used_up: usize,
}

/// An org with the two credentials and `agents` enrolled agents, each on its own connection.
async fn set_up<'s>(
    provider: Provider,
    server: &'s BenchServer,
    agents: usize,
) -> anyhow::Result<Fleet<'s>> {
    let admin = server.connect(None).await?;
    let (org, owner_key) = server.create_org(&admin).await?;
    let owner = authed(admin.clone(), &exchange(&admin, &owner_key).await?)?;

    let mut credentials = CredentialServiceClient::new(owner.clone());
    let mut vault = Vec::with_capacity(CREDENTIALS.len());
    for (name, purpose, len) in CREDENTIALS {
        let mut value = vec![0u8; len];
        OsRng.fill_bytes(&mut value);
        let stored = credentials
            .create_credential(CreateCredentialRequest {
                org_id: org.to_string(),
                name: name.to_owned(),
                purpose: purpose.to_owned(),
                value: value.clone(),
            })
            .await
            .context("create a credential")?
            .into_inner();
        vault.push((stored.vault_ref.clone(), value));
    }

    let keys = tokio::task::spawn_blocking(move || {
        (0..agents)
            .map(|_| agent_key())
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("join the key generator")??;
    let mut tokens = EnrollmentTokenServiceClient::new(owner);
    let mut enrolled = Vec::with_capacity(agents);
    for (i, (key_pem, csr)) in keys.into_iter().enumerate() {
        let token = tokens
            .create_enrollment_token(CreateEnrollmentTokenRequest {
                org_id: org.to_string(),
                name: format!("bench agent {i}"),
                ttl_seconds: 0,
            })
            .await
            .context("create an enrollment token")?
            .into_inner()
            .secret;
        let agent = AgentServiceClient::new(admin.clone())
            .enroll(EnrollRequest {
                enrollment_token: token,
                csr,
            })
            .await
            .context("enroll an agent")?
            .into_inner();
        let chain = format!("{}{}", agent.certificate_pem, agent.intermediate_pem);
        let channel = server
            .connect(Some(Identity::from_pem(chain, key_pem)))
            .await
            .context("connect over mTLS as an agent")?;
        let id: AgentId = agent.agent_id.parse().context("parse an agent id")?;
        enrolled.push((id, channel));
    }
    Ok(Fleet {
        provider,
        server,
        org,
        vault: Arc::new(vault),
        agents: enrolled,
        untimed: 0,
        measured: load::Run::empty(),
        round_rates: Vec::new(),
        used_up: 0,
    })
}

/// Signs `per_agent` tickets for each of the fleet's first `agents` agents: each a new job,
/// attempt 1, naming every credential of the vault. Runs off the async workers.
async fn sign_tickets(
    signer: &Arc<Signer>,
    fleet: &Fleet<'_>,
    agents: usize,
    per_agent: u64,
) -> anyhow::Result<Vec<Vec<String>>> {
    let signer = signer.clone();
    let org = fleet.org;
    let agents: Vec<AgentId> = fleet
        .agents
        .iter()
        .take(agents)
        .map(|(id, _)| *id)
        .collect();
    let refs: Vec<String> = fleet.vault.iter().map(|(r, _)| r.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        agents
            .iter()
            .map(|agent| {
                (0..per_agent)
                    .map(|_| {
                        let claims = JobTicket::new(
                            uuid::Uuid::now_v7(),
                            1,
                            *agent,
                            org,
                            refs.clone(),
                            now,
                            ticket::MAX_LIFETIME,
                        );
                        signer.issue_ticket(&claims).context("sign a job ticket")
                    })
                    .collect()
            })
            .collect()
    })
    .await
    .context("join the ticket signer")?
}

/// One release: the response must carry exactly the vault's values, in the ticket's order.
async fn release(
    client: &mut ReleaseServiceClient<Channel>,
    ticket: String,
    vault: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let released = client
        .release_credentials(ReleaseCredentialsRequest { ticket })
        .await
        .context("release credentials")?
        .into_inner();
    let matches = released.credentials.len() == vault.len()
        && released
            .credentials
            .iter()
            .zip(vault)
            .all(|(got, (vault_ref, value))| got.vault_ref == *vault_ref && got.value == *value);
    ensure!(
        matches,
        "a release did not return exactly the ticket's stored values"
    );
    Ok(())
}

/// Publishes `signer` as the job-ticket key the way scheduling publishes its own, then releases
/// with fresh tickets until the server follows it. Returns the releases that succeeded (one).
async fn publish_ticket_key(signer: &Arc<Signer>, fleet: &Fleet<'_>) -> anyhow::Result<u64> {
    let server = fleet.server;
    let bucket = coffer_auth::published::bucket(&server.js, &server.auth.keys_bucket)
        .await
        .context("open the published-keys bucket")?;
    coffer_auth::published::Publisher::new(bucket)
        .ticket_keys(&Jwks::new([signer.jwk()]))
        .await
        .context("publish the job-ticket key")?;
    let (_, channel) = fleet.agents.first().context("an agent")?;
    let mut client = ReleaseServiceClient::new(channel.clone());
    let deadline = Instant::now() + SETUP_DEADLINE;
    loop {
        let ticket = sign_tickets(signer, fleet, 1, 1)
            .await?
            .concat()
            .pop()
            .context("one ticket was signed")?;
        match release(&mut client, ticket, &fleet.vault).await {
            Ok(()) => return Ok(1),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context("the server does not accept tickets of the published key"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every agent releasing back to back with its own tickets, within `budget`. Returns the run and
/// how many agents used up their tickets.
async fn releases(
    fleet: &Fleet<'_>,
    tickets: Vec<Vec<String>>,
    budget: Duration,
) -> anyhow::Result<(load::Run, usize)> {
    let per_agent = tickets.iter().map(Vec::len).min().unwrap_or(0) as u64;
    let budget = Budget::new(u64::MAX, budget).per_writer(per_agent);
    let used_up = Arc::new(AtomicUsize::new(0));
    let mut tickets: Vec<Option<Vec<String>>> = tickets.into_iter().map(Some).collect();
    let run = load::closed_loop(fleet.agents.len(), budget, |w| {
        let client = ReleaseServiceClient::new(fleet.agents[w].1.clone());
        let mut tickets = tickets[w].take().unwrap_or_default().into_iter();
        let (vault, used_up) = (fleet.vault.clone(), used_up.clone());
        move || {
            let ticket = tickets.next();
            if ticket.is_some() && tickets.as_slice().is_empty() {
                used_up.fetch_add(1, Ordering::Relaxed);
            }
            let (mut client, vault) = (client.clone(), vault.clone());
            async move {
                let ticket = ticket.context("a signed ticket per release")?;
                release(&mut client, ticket, &vault).await
            }
        }
    })
    .await?;
    Ok((run, used_up.load(Ordering::Relaxed)))
}

/// One line of the table.
struct Case {
    provider: Provider,
    ops: u64,
    elapsed: Duration,
    latency: Percentiles,
    round_rates: Vec<f64>,
    used_up: usize,
    check: Check,
}

/// What the client saw against what the database recorded.
struct Check {
    released: u64,
    events: i64,
}

impl Check {
    fn ok(&self) -> bool {
        u64::try_from(self.events).ok() == Some(self.released)
    }
}

fn ratio(x: f64, reference: f64) -> f64 {
    if reference > 0.0 { x / reference } else { 0.0 }
}

impl Case {
    fn rate(&self) -> f64 {
        per_second(self.ops, self.elapsed)
    }

    /// Releases/s, p50 and p99 against the reference's.
    fn ratios(&self, reference: &Case) -> (f64, f64, f64) {
        (
            ratio(self.rate(), reference.rate()),
            ratio(self.latency.p50_ms, reference.latency.p50_ms),
            ratio(self.latency.p99_ms, reference.latency.p99_ms),
        )
    }

    /// Releases/s of each round against the reference's in the same round: the servers take
    /// turns within a round, so these pairs share the host's load of the moment.
    fn round_ratios(&self, reference: &Case) -> Vec<f64> {
        self.round_rates
            .iter()
            .zip(&reference.round_rates)
            .map(|(rate, reference)| ratio(*rate, *reference))
            .collect()
    }

    fn cells(&self, agents: usize, reference: &Case) -> Vec<String> {
        let (rate, p50, _) = self.ratios(reference);
        let rounds = self.round_ratios(reference);
        let lowest = rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = rounds.iter().copied().fold(0.0, f64::max);
        let (rate, spread, p50) = if self.provider == reference.provider {
            ("ref".to_owned(), "ref".to_owned(), "ref".to_owned())
        } else {
            (
                format!("{rate:.2}×"),
                format!("{lowest:.2}–{highest:.2}×"),
                format!("{p50:.2}×"),
            )
        };
        vec![
            self.provider.name().to_owned(),
            agents.to_string(),
            self.ops.to_string(),
            format!("{:.0}", self.rate()),
            human_ms(self.latency.p50_ms),
            human_ms(self.latency.p99_ms),
            rate,
            spread,
            p50,
        ]
    }

    fn json(&self, reference: &Case) -> serde_json::Value {
        let (rate, p50, p99) = self.ratios(reference);
        json!({
            "ops": self.ops,
            "seconds": round2(self.elapsed.as_secs_f64()),
            "per_s": self.rate().round(),
            "latency": self.latency.json(),
            "rate_ratio": round2(rate),
            "p50_ratio": round2(p50),
            "p99_ratio": round2(p99),
            "rate_ratio_per_round": self
                .round_ratios(reference)
                .into_iter()
                .map(round2)
                .collect::<Vec<_>>(),
            "agents_out_of_tickets": self.used_up,
            "released": self.check.released,
            "credentials_released_events": self.check.events,
        })
    }
}

async fn run(args: &Args, servers: &[(Provider, BenchServer)]) -> anyhow::Result<Vec<Case>> {
    // Scheduling's stand-in: one Ed25519 key, published on every server.
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let signer = Arc::new(Signer::from_seed(&seed).context("make the ticket key")?);

    let mut fleets = Vec::with_capacity(servers.len());
    for (provider, server) in servers {
        let mut fleet = Box::pin(set_up(*provider, server, args.agents)).await?;
        fleet.untimed += publish_ticket_key(&signer, &fleet).await?;
        let warm_up = sign_tickets(&signer, &fleet, args.agents, args.warmup).await?;
        let (warm, _) = releases(&fleet, warm_up, SETUP_DEADLINE).await?;
        fleet.untimed += warm.ops;
        drained(server).await?;
        println!(
            "setup: {}: org {}, {} credentials, {} agents enrolled on their own mTLS \
             connections, ticket key followed, {} warm-up releases",
            provider.name(),
            fleet.org,
            fleet.vault.len(),
            fleet.agents.len(),
            warm.ops
        );
        fleets.push(fleet);
    }

    let per_agent = args.tickets_per_agent();
    let round = args.round();
    for r in 0..args.rounds {
        let mut line = Vec::with_capacity(fleets.len());
        for k in 0..fleets.len() {
            let fleet = &mut fleets[(r as usize + k) % servers.len()];
            let tickets = sign_tickets(&signer, fleet, args.agents, per_agent).await?;
            let (run, used_up) = releases(fleet, tickets, round)
                .await
                .with_context(|| format!("release with the {} KMS", fleet.provider.name()))?;
            let rate = per_second(run.ops, run.elapsed);
            line.push(format!("{} {rate:.0}/s", fleet.provider.key()));
            fleet.round_rates.push(rate);
            fleet.measured.absorb(run);
            fleet.used_up += used_up;
            drained(fleet.server).await?;
        }
        println!("round {}/{}: {}", r + 1, args.rounds, line.join(", "));
    }

    let mut cases = Vec::with_capacity(fleets.len());
    for fleet in fleets {
        let check = Check {
            released: fleet.untimed + fleet.measured.ops,
            events: releases_recorded(fleet.server).await?,
        };
        cases.push(Case {
            provider: fleet.provider,
            ops: fleet.measured.ops,
            elapsed: fleet.measured.elapsed,
            latency: Percentiles::of(&fleet.measured.latency),
            round_rates: fleet.round_rates,
            used_up: fleet.used_up,
            check,
        });
    }
    Ok(cases)
}
