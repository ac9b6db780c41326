//! `cargo xtask bench audit`: what the audit log costs: how fast events append to it, how fast an
//! exported bundle verifies, and how long inclusion and consistency proofs take on a large log.
//!
//! Everything runs against the stack's Postgres, in one fresh database migrated with
//! `coffer_audit::SCHEMA`, through the service's own code and its service role.
//!
//! 1. **Append rate**, for one org and for `--orgs` orgs: `--workers` tasks (the consumer's
//!    lanes) each append one event per transaction, exactly as the `audit-log` consumer does:
//!    `begin_tenant`, the `processed_events` row, `coffer_audit::log::append` (advisory lock,
//!    head, frontier, entry, tree nodes), commit. With one org every worker appends to the same
//!    log, so they queue on its advisory lock; with many, worker `i` owns orgs `i`,
//!    `i + workers`, … and cycles through them, as the consumer's org lanes do, so no two
//!    workers share a log. Events are realistic: one of a few real event types, a user, API key,
//!    agent or service actor, a W3C trace context and a 100–300 byte payload.
//!    Reference: the same transaction with the log's own work taken out. The same row (its
//!    columns, and the leaf and leaf hash computed the same way) goes into
//!    `bench_plain_entries`, a copy of `audit_entries` made by the superuser for the run (its
//!    columns, keys, indexes and tenant policy, no triggers), with no lock, no head or frontier
//!    read and no tree nodes: sequence numbers come from a counter in the benchmark. Same
//!    workers, same orgs, same `processed_events` row. Each path runs `--duration` per case, in
//!    `--rounds` rounds taking turns (the order swapping every round), so load that comes and
//!    goes on the host reaches both alike.
//! 2. **Bundle verification rate**: a log of `--bundle-entries` entries is checkpointed
//!    (`Checkpointer::issue`, Ed25519 key wrapped by a local KMS), exported through
//!    `Audit::export` into memory with `bundle::Writer`, and verified with `bundle::verify`
//!    `--verify-runs` times (the median is reported). Reference: SHA-256 of the same leaves
//!    (`coffer_tlog::leaf_hash`) and nothing else, the least any verifier must do.
//! 3. **Proof latency** on a log of `--log-entries` entries: `Audit::entry` (the entry and its
//!    inclusion proof against the latest checkpoint) of a random entry, and `Audit::consistency`
//!    from a random size to the log's size, `--proofs` calls each, one at a time. Reference: a
//!    primary-key SELECT of one random entry in a tenant transaction, taking turns with each
//!    call.
//!
//! The logs of 2 and 3 are **bulk-loaded**: the benchmark computes leaves, leaf hashes, the hash
//! chain and the tree nodes (`Frontier::push`) itself and inserts them as the superuser, many
//! rows per statement; part 1 measures the append path. The last [`TAIL`] entries of each go
//! through `log::append` on top of the loaded rows, and every check below passes only if the
//! loaded rows are what appends would have written.
//!
//! Output: progress lines, a table, then one line of JSON for CI. Exits non-zero if a check
//! fails: a log with a hole or a missing tree node, a row count that disagrees with the appends
//! made, a bundle that does not verify, or a proof that does not verify against its checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, SubsecRound as _, Utc};
use clap::Parser;
use coffer_audit::app::{ExportPart, ExportRequest};
use coffer_audit::consumers::AUDIT_LOG;
use coffer_audit::{Audit, Checkpointer, Settings, bundle};
use coffer_db::{Database, TenantTx};
use coffer_eventstore::RecordedEvent;
use coffer_kms::{KeyId, LocalKms};
use coffer_loadtests::facts::{HostLoad, PostgresFacts, print_host};
use coffer_loadtests::load::{self, Budget};
use coffer_loadtests::report::{Align, Percentiles, Table, human_ms, per_second, round2};
use coffer_testkit::TestDb;
use coffer_tlog::{Frontier, Hash};
use coffer_types::{Actor, ActorKind, AggregateId, EventId, OrgId};
use rand::Rng as _;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Audit log benchmark: append rate against a plain INSERT, bundle verification rate against
/// bare SHA-256, and proof latency on a large log against a primary-key SELECT.
#[derive(Debug, Parser)]
#[command(name = "audit")]
struct Args {
    /// Which parts to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    /// Append: concurrent workers, each appending one event per transaction.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Append: orgs in the many-orgs case.
    #[arg(long, default_value_t = 100)]
    orgs: usize,
    /// Append: timed time per case and path, split into --rounds rounds.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Append: rounds per case, the two paths taking turns in each.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Append: untimed time per case and path before the rounds.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Verification: entries in the exported log.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(11..))]
    bundle_entries: u64,
    /// Verification: times the bundle is verified (and its leaves hashed); the median counts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    verify_runs: u64,
    /// Proofs: entries in the log.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(11..))]
    log_entries: u64,
    /// Proofs: calls of each kind, each paired with a reference SELECT.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    proofs: u64,
    /// Proofs: concurrent callers (one: the figures are latency, not queueing).
    #[arg(long, default_value_t = 1)]
    proof_clients: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    All,
    Append,
    Verify,
    Proofs,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if self.workers == 0 || self.orgs == 0 || self.proof_clients == 0 {
            bail!("--workers, --orgs and --proof-clients must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        Ok(())
    }

    fn runs(&self, part: Part) -> bool {
        self.only == Part::All || self.only == part
    }

    /// How long one path runs in one round.
    fn round(&self) -> Duration {
        self.duration.div_f64(self.rounds as f64)
    }
}

/// Entries of each bulk-loaded log appended through `log::append` after the load.
const TAIL: u64 = 10;
/// Rows per bulk-load statement.
const LOAD_BATCH: usize = 5000;
/// Random entries whose proofs are checked before the proof latencies are timed.
const PROOF_CHECKS: u64 = 50;
/// Event payload sizes, bytes.
const PAYLOAD: std::ops::RangeInclusive<usize> = 100..=300;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let _telemetry = coffer_loadtests::init_telemetry()?;

    let postgres = PostgresFacts::read().await?;
    let host = HostLoad::now();
    let bench = Bench::start(&args).await?;
    println!(
        "audit bench: {}, database {} (pool of {} connections), payload {}–{} B",
        postgres.line(),
        bench.t.name,
        bench.pool_size,
        PAYLOAD.start(),
        PAYLOAD.end()
    );
    print_host(&host, &postgres, Some("the benchmark and postgres"));
    let outcome = run(&args, &bench).await;
    bench.stop().await;
    let results = outcome?;
    let host_end = HostLoad::now();

    println!();
    print!("{}", results.table());
    println!();
    results.notes(&args);
    println!("host load average {} at the end", host_end.load_average);
    let ok = results.checks.iter().all(|c| c.ok);
    for check in &results.checks {
        println!(
            "checks: {}: {}",
            check.what,
            if check.ok { "ok" } else { "FAILED" }
        );
    }

    let mut summary = json!({
        "bench": "audit",
        "postgres": postgres.json(),
        "host": host.json(),
        "host_end": host_end.json(),
        "payload_bytes": [PAYLOAD.start(), PAYLOAD.end()],
    });
    results.json(&args, &mut summary);
    summary["ok"] = json!(ok);
    println!("{summary}");
    if !ok {
        bail!("a check failed (see the checks lines)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The database, the service and what the run found.

/// The run's database, the audit service on it, and a superuser pool for setup and checks.
struct Bench {
    t: TestDb,
    db: Database,
    pool_size: u32,
    /// Two connections: the bulk loader writes entries and nodes on one each.
    su: sqlx::PgPool,
    audit: Audit,
    _kms_dir: tempfile::TempDir,
}

impl Bench {
    async fn start(args: &Args) -> anyhow::Result<Self> {
        let t = TestDb::migrated(&[coffer_audit::SCHEMA]).await;
        let mut config = t.config.clone();
        // Every worker or caller holds one connection; the rest is slack for the checkpointer.
        let pool_size =
            u32::try_from(args.workers.max(args.proof_clients * 2) + 4).context("pool size")?;
        config.max_connections = pool_size;
        let db = Database::connect(&config, coffer_audit::SERVICE)
            .await
            .context("connect as the audit service")?;
        let su = t.superuser().await;
        let kms_dir = tempfile::tempdir().context("create the KMS key directory")?;
        let key_id = KeyId::new("bench-audit");
        LocalKms::create_key(kms_dir.path(), &key_id).context("create the local master key")?;
        let kms = LocalKms::open(kms_dir.path(), &key_id).context("open the local KMS")?;
        let checkpointer = Checkpointer::new(db.clone(), Arc::new(kms), Settings::default());
        let audit = Audit::new(db.clone(), checkpointer);
        Ok(Self {
            t,
            db,
            pool_size,
            su,
            audit,
            _kms_dir: kms_dir,
        })
    }

    async fn stop(self) {
        self.db.pool().close().await;
        self.su.close().await;
        coffer_loadtests::drop_database(&self.t).await;
    }
}

/// Everything the parts measured and checked.
#[derive(Default)]
struct Results {
    append: Vec<AppendCase>,
    verify: Option<Verification>,
    proofs: Option<Proofs>,
    checks: Vec<Check>,
}

/// A check the run made: what, and whether it held.
struct Check {
    what: String,
    ok: bool,
}

impl Check {
    fn new(what: impl Into<String>, ok: bool) -> Self {
        Self {
            what: what.into(),
            ok,
        }
    }
}

async fn run(args: &Args, bench: &Bench) -> anyhow::Result<Results> {
    let mut results = Results::default();
    if args.runs(Part::Append) {
        append_part(args, bench, &mut results).await?;
    }
    if args.runs(Part::Verify) {
        verify_part(args, bench, &mut results).await?;
    }
    if args.runs(Part::Proofs) {
        proofs_part(args, bench, &mut results).await?;
    }
    Ok(results)
}

fn ratio(x: f64, reference: f64) -> f64 {
    if reference > 0.0 { x / reference } else { 0.0 }
}

/// `1234567.8` as `1,234,568`.
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

impl Results {
    fn table(&self) -> Table {
        let mut table = Table::new(&[
            ("figure", Align::Left),
            ("value", Align::Right),
            ("reference", Align::Left),
            ("ref value", Align::Right),
            ("ratio", Align::Right),
            ("per round", Align::Right),
        ]);
        for case in &self.append {
            let rounds = case.round_ratios();
            let lowest = rounds.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = rounds.iter().copied().fold(0.0, f64::max);
            table.row([
                format!("append, {} ({} workers)", case.name(), case.workers),
                format!("{} entries/s", grouped(case.audit_rate())),
                "plain INSERT of the same rows".to_owned(),
                format!("{} rows/s", grouped(case.plain_rate())),
                format!("{:.2}×", case.ratio()),
                format!("{lowest:.2}–{highest:.2}×"),
            ]);
        }
        if let Some(v) = &self.verify {
            table.row([
                format!(
                    "bundle verification ({} entries)",
                    grouped(v.entries as f64)
                ),
                format!("{} entries/s", grouped(v.verify_rate())),
                "SHA-256 of the same leaves".to_owned(),
                format!("{} leaves/s", grouped(v.hash_rate())),
                format!("{:.2}×", v.ratio()),
                String::new(),
            ]);
        }
        if let Some(p) = &self.proofs {
            let n = grouped(p.size as f64);
            for (name, measured) in [
                ("inclusion proof", &p.inclusion),
                ("consistency proof", &p.consistency),
            ] {
                let (m, r) = (measured.measured, measured.reference);
                table.row([
                    format!("{name} p50 ({n} entries)"),
                    human_ms(m.p50_ms),
                    "PK SELECT of one entry p50".to_owned(),
                    human_ms(r.p50_ms),
                    format!("{:.2}×", ratio(m.p50_ms, r.p50_ms)),
                    String::new(),
                ]);
                table.row([
                    format!("{name} p99 ({n} entries)"),
                    human_ms(m.p99_ms),
                    "PK SELECT of one entry p99".to_owned(),
                    human_ms(r.p99_ms),
                    format!("{:.2}×", ratio(m.p99_ms, r.p99_ms)),
                    String::new(),
                ]);
            }
        }
        table
    }

    fn notes(&self, args: &Args) {
        if !self.append.is_empty() {
            println!(
                "append: one event per transaction as the audit-log consumer writes it \
                 (processed_events row, advisory lock, head, frontier, entry, tree nodes, \
                 commit); reference: the same transaction inserting the same row into an \
                 identical table (columns, keys, indexes, tenant policy) with no lock, no head or \
                 frontier read and no nodes; {} per path and case in {} rounds taking turns; \
                 \"per round\" is the lowest and highest ratio of the rounds",
                humantime::format_duration(args.duration),
                args.rounds
            );
            println!(
                "  1 org: all workers append to one log and queue on its advisory lock (the \
                 consumer, whose lanes go by org, would append them from one lane); {} orgs: \
                 each worker owns its own orgs, as the consumer's lanes do",
                args.orgs
            );
        }
        if self.verify.is_some() {
            println!(
                "verification: bundle::verify over an in-memory bundle (signature, every leaf \
                 decoded and checked, hash chain, Merkle root); reference: one SHA-256 per leaf \
                 of the same bundle and nothing else; median of {} runs, one core",
                args.verify_runs
            );
        }
        if self.proofs.is_some() {
            println!(
                "proofs: Audit::entry (head, checkpoint, key, entry, proof nodes in one tenant \
                 transaction) of a random entry against the latest checkpoint, and \
                 Audit::consistency from a random size to the log's size; {} calls each from \
                 {} caller(s), each call taking turns with the reference: a primary-key SELECT \
                 of one random entry in a tenant transaction",
                grouped(args.proofs as f64),
                args.proof_clients
            );
            println!(
                "  the large logs are bulk-loaded by the benchmark (leaves, hashes, chain and \
                 tree nodes computed as log::append does, inserted {LOAD_BATCH} rows per \
                 statement); the last {TAIL} entries of each are appended through log::append, \
                 and the append path itself is what the append rows measure"
            );
        }
    }

    fn json(&self, args: &Args, summary: &mut serde_json::Value) {
        if !self.append.is_empty() {
            summary["append"] = json!({
                "workers": args.workers,
                "rounds": args.rounds,
                "seconds_per_path": args.duration.as_secs_f64(),
                "cases": self.append.iter().map(AppendCase::json).collect::<Vec<_>>(),
            });
        }
        if let Some(v) = &self.verify {
            summary["verify"] = v.json();
        }
        if let Some(p) = &self.proofs {
            summary["proofs"] = p.json();
        }
        summary["checks"] = self
            .checks
            .iter()
            .map(|c| json!({"what": c.what, "ok": c.ok}))
            .collect();
    }
}

// ---------------------------------------------------------------------------------------------
// Events.

/// Event shapes from the real services: (service, aggregate type, event type).
const SHAPES: [(&str, &str, &str); 6] = [
    ("credentials", "Credential", "CredentialCreated"),
    ("credentials", "Credential", "CredentialRotated"),
    ("credentials", "Credential", "CredentialsReleased"),
    ("enrollment", "Agent", "AgentEnrolled"),
    ("enrollment", "Agent", "AgentCertificateRenewed"),
    ("enrollment", "EnrollmentToken", "EnrollmentTokenCreated"),
];

/// A realistic event of `org`: a real event type, a user, API key, agent or service actor, a
/// W3C trace context and an opaque payload of 100–300 bytes.
fn event(org: OrgId) -> RecordedEvent {
    let mut rng = rand::thread_rng();
    let (service, aggregate_type, event_type) = SHAPES[rng.gen_range(0..SHAPES.len())];
    let actor = match rng.gen_range(0..4) {
        0 => Actor {
            kind: ActorKind::User,
            id: uuid::Uuid::now_v7().to_string(),
        },
        1 => Actor {
            kind: ActorKind::ApiKey,
            id: uuid::Uuid::now_v7().to_string(),
        },
        2 => Actor {
            kind: ActorKind::Agent,
            id: uuid::Uuid::now_v7().to_string(),
        },
        _ => Actor::service("scheduling"),
    };
    let traceparent = format!(
        "00-{:032x}-{:016x}-01",
        rng.r#gen::<u128>(),
        rng.r#gen::<u64>()
    );
    let mut payload = vec![0u8; rng.gen_range(PAYLOAD)];
    rng.fill(payload.as_mut_slice());
    RecordedEvent {
        event_id: EventId::new(),
        org_id: org,
        service: service.to_owned(),
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: AggregateId::new(),
        version: rng.gen_range(1..50),
        event_type: event_type.to_owned(),
        schema_version: 1,
        // As the event store's database clock gives it: microseconds.
        occurred_at: Utc::now().trunc_subsecs(6),
        actor,
        trace_context: BTreeMap::from([("traceparent".to_owned(), traceparent)]),
        payload,
    }
}

/// The consumer's idempotency row, written in the same transaction as its effect.
async fn record_processed(tx: &mut TenantTx, event: &RecordedEvent) -> anyhow::Result<()> {
    let fresh = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, org_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(AUDIT_LOG)
    .bind(event.event_id.as_uuid())
    .bind(event.org_id.as_uuid())
    .execute(tx.conn())
    .await
    .context("record the event as processed")?
    .rows_affected()
        == 1;
    ensure!(fresh, "a fresh event id was already processed");
    Ok(())
}

/// What the audit-log consumer does with one event.
async fn append_one(db: &Database, event: &RecordedEvent) -> anyhow::Result<()> {
    let mut tx = db.begin_tenant(event.org_id).await?;
    record_processed(&mut tx, event).await?;
    coffer_audit::log::append(&mut tx, event)
        .await
        .context("append to the audit log")?;
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 1: append rate.

/// An org of the append cases.
struct LogOrg {
    id: OrgId,
    genesis: Hash,
    /// The reference's last sequence number in `bench_plain_entries`.
    plain_seq: AtomicU64,
}

/// The reference table: `audit_entries`' columns, defaults, checks, keys and indexes, and its
/// tenant policy; no append-only triggers (they fire only on UPDATE, DELETE and TRUNCATE).
const PLAIN_TABLE: &str = "
    CREATE TABLE coffer_audit.bench_plain_entries
        (LIKE coffer_audit.audit_entries INCLUDING ALL);
    ALTER TABLE coffer_audit.bench_plain_entries ENABLE ROW LEVEL SECURITY;
    ALTER TABLE coffer_audit.bench_plain_entries FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON coffer_audit.bench_plain_entries
        USING (org_id = nullif(current_setting('coffer.org_id', true), '')::uuid)
        WITH CHECK (org_id = nullif(current_setting('coffer.org_id', true), '')::uuid);
    GRANT INSERT ON coffer_audit.bench_plain_entries TO coffer_audit;
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Audit,
    Plain,
}

struct AppendCase {
    orgs: usize,
    workers: usize,
    audit: load::Run,
    plain: load::Run,
    audit_rounds: Vec<f64>,
    plain_rounds: Vec<f64>,
}

impl AppendCase {
    fn name(&self) -> String {
        match self.orgs {
            1 => "1 org".to_owned(),
            n => format!("{n} orgs"),
        }
    }

    fn audit_rate(&self) -> f64 {
        per_second(self.audit.ops, self.audit.elapsed)
    }

    fn plain_rate(&self) -> f64 {
        per_second(self.plain.ops, self.plain.elapsed)
    }

    fn ratio(&self) -> f64 {
        ratio(self.audit_rate(), self.plain_rate())
    }

    fn round_ratios(&self) -> Vec<f64> {
        self.audit_rounds
            .iter()
            .zip(&self.plain_rounds)
            .map(|(a, p)| ratio(*a, *p))
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        let (audit, plain) = (
            Percentiles::of(&self.audit.latency),
            Percentiles::of(&self.plain.latency),
        );
        json!({
            "orgs": self.orgs,
            "workers": self.workers,
            "entries": self.audit.ops,
            "seconds": round2(self.audit.elapsed.as_secs_f64()),
            "entries_per_s": self.audit_rate().round(),
            "latency": audit.json(),
            "plain_rows": self.plain.ops,
            "plain_seconds": round2(self.plain.elapsed.as_secs_f64()),
            "plain_rows_per_s": self.plain_rate().round(),
            "plain_latency": plain.json(),
            "ratio": round2(self.ratio()),
            "ratio_per_round": self.round_ratios().into_iter().map(round2).collect::<Vec<_>>(),
        })
    }
}

/// The orgs worker `w` of `workers` appends to, in turn: `w`, `w + workers`, …, as the
/// consumer's org lanes split them; a worker left without one shares `w % orgs`.
fn owned(orgs: usize, w: usize, workers: usize) -> Vec<usize> {
    let mine: Vec<usize> = (w..orgs).step_by(workers).collect();
    if mine.is_empty() {
        vec![w % orgs]
    } else {
        mine
    }
}

/// `workers` tasks appending through `path` to `orgs` until `budget` is spent.
async fn append_run(
    path: Path,
    db: &Database,
    orgs: &Arc<Vec<LogOrg>>,
    workers: usize,
    budget: Budget,
) -> anyhow::Result<load::Run> {
    load::closed_loop(workers, budget, |w| {
        let (db, orgs) = (db.clone(), orgs.clone());
        let mine = owned(orgs.len(), w, workers);
        let mut turn = 0usize;
        move || {
            let k = mine[turn % mine.len()];
            turn += 1;
            let (db, orgs) = (db.clone(), orgs.clone());
            async move {
                let org = &orgs[k];
                let event = event(org.id);
                match path {
                    Path::Audit => append_one(&db, &event).await,
                    Path::Plain => {
                        let seq = org.plain_seq.fetch_add(1, Ordering::Relaxed) + 1;
                        plain_insert(&db, org, &event, seq).await
                    }
                }
            }
        }
    })
    .await
}

/// The reference: the consumer's transaction with a plain INSERT of the row `log::append`
/// would write, and nothing else.
async fn plain_insert(
    db: &Database,
    org: &LogOrg,
    event: &RecordedEvent,
    seq: u64,
) -> anyhow::Result<()> {
    let leaf = coffer_audit::log::leaf(event, seq);
    let leaf_hash = coffer_tlog::leaf_hash(&leaf);
    // The real link needs the previous one, which is the head read the reference leaves out;
    // this one costs the same SHA-256.
    let chain_hash = coffer_tlog::chain_next(&org.genesis, &leaf_hash);
    let mut tx = db.begin_tenant(event.org_id).await?;
    record_processed(&mut tx, event).await?;
    sqlx::query(
        "INSERT INTO bench_plain_entries (org_id, seq, event_id, occurred_at, actor_kind, actor_id,
                                          action, service, aggregate_type, aggregate_id,
                                          leaf, leaf_hash, chain_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(event.org_id.as_uuid())
    .bind(i64::try_from(seq).context("sequence number")?)
    .bind(event.event_id.as_uuid())
    .bind(event.occurred_at)
    .bind(event.actor.kind.as_str())
    .bind(&event.actor.id)
    .bind(&event.event_type)
    .bind(&event.service)
    .bind(&event.aggregate_type)
    .bind(event.aggregate_id.as_uuid())
    .bind(&leaf)
    .bind(leaf_hash.as_slice())
    .bind(chain_hash.as_slice())
    .execute(tx.conn())
    .await
    .context("insert a plain row")?;
    tx.commit().await?;
    Ok(())
}

async fn append_part(args: &Args, bench: &Bench, results: &mut Results) -> anyhow::Result<()> {
    sqlx::raw_sql(PLAIN_TABLE)
        .execute(&bench.su)
        .await
        .context("create the reference table")?;
    println!();
    println!(
        "append: {} workers, one event per transaction; {} untimed then {} per path in {} \
         rounds, per case",
        args.workers,
        humantime::format_duration(args.warmup),
        humantime::format_duration(args.duration),
        args.rounds
    );
    let mut all_orgs = Vec::new();
    let (mut audit_total, mut plain_total) = (0u64, 0u64);
    for orgs in [1, args.orgs] {
        let orgs: Arc<Vec<LogOrg>> = Arc::new(
            (0..orgs)
                .map(|_| {
                    let id = OrgId::new();
                    LogOrg {
                        id,
                        genesis: coffer_tlog::chain_genesis(&id.to_string()),
                        plain_seq: AtomicU64::new(0),
                    }
                })
                .collect(),
        );
        let name = if orgs.len() == 1 {
            "1 org".to_owned()
        } else {
            format!("{} orgs", orgs.len())
        };
        for path in [Path::Audit, Path::Plain] {
            let warm = append_run(
                path,
                &bench.db,
                &orgs,
                args.workers,
                Budget::new(u64::MAX, args.warmup),
            )
            .await
            .with_context(|| format!("warm up {path:?} appends, {name}"))?;
            match path {
                Path::Audit => audit_total += warm.ops,
                Path::Plain => plain_total += warm.ops,
            }
        }
        let mut case = AppendCase {
            orgs: orgs.len(),
            workers: args.workers,
            audit: load::Run::empty(),
            plain: load::Run::empty(),
            audit_rounds: Vec::new(),
            plain_rounds: Vec::new(),
        };
        for r in 0..args.rounds {
            let order = if r % 2 == 0 {
                [Path::Audit, Path::Plain]
            } else {
                [Path::Plain, Path::Audit]
            };
            for path in order {
                let run = append_run(
                    path,
                    &bench.db,
                    &orgs,
                    args.workers,
                    Budget::new(u64::MAX, args.round()),
                )
                .await
                .with_context(|| format!("{path:?} appends, {name}"))?;
                let rate = per_second(run.ops, run.elapsed);
                match path {
                    Path::Audit => {
                        audit_total += run.ops;
                        case.audit_rounds.push(rate);
                        case.audit.absorb(run);
                    }
                    Path::Plain => {
                        plain_total += run.ops;
                        case.plain_rounds.push(rate);
                        case.plain.absorb(run);
                    }
                }
            }
            let (a, p) = (
                case.audit_rounds.last().copied().unwrap_or(0.0),
                case.plain_rounds.last().copied().unwrap_or(0.0),
            );
            println!(
                "round {}/{}: {name}: audit {a:.0}/s, plain {p:.0}/s, ratio {:.2}",
                r + 1,
                args.rounds,
                ratio(a, p)
            );
        }
        println!(
            "  {name}: append latency {}",
            Percentiles::of(&case.audit.latency).line()
        );
        println!(
            "  {name}: plain  latency {}",
            Percentiles::of(&case.plain.latency).line()
        );
        all_orgs.extend(orgs.iter().map(|o| o.id));
        results.append.push(case);
    }

    // Every append is in its log, with no hole, and every tree node it completed is stored.
    let logs: Vec<(uuid::Uuid, i64, i64, i64)> = sqlx::query_as(
        "SELECT e.org_id, e.n, e.top, coalesce(t.nodes, 0)
           FROM (SELECT org_id, count(*) AS n, max(seq) AS top
                   FROM coffer_audit.audit_entries GROUP BY org_id) e
           LEFT JOIN (SELECT org_id, count(*) AS nodes
                        FROM coffer_audit.audit_nodes GROUP BY org_id) t USING (org_id)",
    )
    .fetch_all(&bench.su)
    .await
    .context("count entries and nodes per log")?;
    let entries: i64 = logs.iter().map(|l| l.1).sum();
    let whole = logs.iter().all(|&(_, n, top, nodes)| {
        let n = n as u64;
        // A log of n leaves stores every perfect subtree: 2n - popcount(n) nodes.
        n == top as u64 && nodes as u64 == 2 * n - u64::from(n.count_ones())
    });
    let (plain_rows, processed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM coffer_audit.bench_plain_entries),
                (SELECT count(*) FROM coffer_audit.processed_events)",
    )
    .fetch_one(&bench.su)
    .await
    .context("count plain rows and processed events")?;
    results.checks.push(Check::new(
        format!(
            "append: {audit_total} appends made, {entries} entries in {} logs, each without a \
             hole and with every tree node; {plain_total} plain inserts made, {plain_rows} rows; \
             {processed} processed_events rows",
            logs.len()
        ),
        whole
            && logs.len() == all_orgs.len()
            && entries as u64 == audit_total
            && plain_rows as u64 == plain_total
            && processed as u64 == audit_total + plain_total,
    ));

    // The single-org log, written by every worker at once, verifies as a bundle.
    let single = all_orgs[0];
    bench.audit.checkpointer().issue(single).await?;
    let exported = export(&bench.audit, single).await?;
    let verified = bundle::verify(
        exported.bytes.as_slice(),
        &bundle::Options {
            org: Some(single),
            ..bundle::Options::default()
        },
    );
    results.checks.push(Check::new(
        format!(
            "append: the 1-org log ({} entries, appended by {} workers at once) exports and \
             verifies: {}",
            exported.entries,
            args.workers,
            match &verified {
                Ok(r) => format!("root {}", hex_prefix(&r.root)),
                Err(e) => e.to_string(),
            }
        ),
        verified.is_ok_and(|r| r.entries == exported.entries),
    ));
    Ok(())
}

fn hex_prefix(h: &Hash) -> String {
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Bulk loading.

/// One statement's worth of rows, as columns.
#[derive(Default)]
struct Batch {
    seq: Vec<i64>,
    event_id: Vec<uuid::Uuid>,
    occurred_at: Vec<DateTime<Utc>>,
    actor_kind: Vec<String>,
    actor_id: Vec<String>,
    action: Vec<String>,
    service: Vec<String>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<uuid::Uuid>,
    leaf: Vec<Vec<u8>>,
    leaf_hash: Vec<Vec<u8>>,
    chain_hash: Vec<Vec<u8>>,
    node_level: Vec<i16>,
    node_idx: Vec<i64>,
    node_hash: Vec<Vec<u8>>,
}

/// Makes the first `entries` entries of `org`'s log as `log::append` would, in batches: the
/// leaf of a fresh event at each position, its leaf hash, the chain link and every tree node
/// the leaf completes. Runs on a blocking thread, ahead of the inserts.
fn generate(org: OrgId, entries: u64, out: mpsc::Sender<Batch>) -> anyhow::Result<()> {
    let mut chain = coffer_tlog::chain_genesis(&org.to_string());
    let mut tree = Frontier::new();
    let mut batch = Batch::default();
    for seq in 1..=entries {
        let event = event(org);
        let leaf = coffer_audit::log::leaf(&event, seq);
        let leaf_hash = coffer_tlog::leaf_hash(&leaf);
        chain = coffer_tlog::chain_next(&chain, &leaf_hash);
        for (id, hash) in tree.push(leaf_hash) {
            batch.node_level.push(i16::from(id.level));
            batch
                .node_idx
                .push(i64::try_from(id.index).context("node index")?);
            batch.node_hash.push(hash.to_vec());
        }
        batch
            .seq
            .push(i64::try_from(seq).context("sequence number")?);
        batch.event_id.push(*event.event_id.as_uuid());
        batch.occurred_at.push(event.occurred_at);
        batch.actor_kind.push(event.actor.kind.as_str().to_owned());
        batch.actor_id.push(event.actor.id);
        batch.action.push(event.event_type);
        batch.service.push(event.service);
        batch.aggregate_type.push(event.aggregate_type);
        batch.aggregate_id.push(*event.aggregate_id.as_uuid());
        batch.leaf.push(leaf);
        batch.leaf_hash.push(leaf_hash.to_vec());
        batch.chain_hash.push(chain.to_vec());
        let full = batch.seq.len() == LOAD_BATCH || seq == entries;
        if full && out.blocking_send(std::mem::take(&mut batch)).is_err() {
            bail!("the bulk loader stopped taking batches");
        }
    }
    Ok(())
}

async fn insert_entries(su: &sqlx::PgPool, org: OrgId, b: &Batch) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO coffer_audit.audit_entries
                (org_id, seq, event_id, occurred_at, actor_kind, actor_id, action, service,
                 aggregate_type, aggregate_id, leaf, leaf_hash, chain_hash)
         SELECT $1, * FROM unnest($2::bigint[], $3::uuid[], $4::timestamptz[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::text[], $10::uuid[],
                                  $11::bytea[], $12::bytea[], $13::bytea[])",
    )
    .bind(org.as_uuid())
    .bind(&b.seq)
    .bind(&b.event_id)
    .bind(&b.occurred_at)
    .bind(&b.actor_kind)
    .bind(&b.actor_id)
    .bind(&b.action)
    .bind(&b.service)
    .bind(&b.aggregate_type)
    .bind(&b.aggregate_id)
    .bind(&b.leaf)
    .bind(&b.leaf_hash)
    .bind(&b.chain_hash)
    .execute(su)
    .await
    .context("bulk-insert audit entries")?;
    Ok(())
}

async fn insert_nodes(su: &sqlx::PgPool, org: OrgId, b: &Batch) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO coffer_audit.audit_nodes (org_id, level, idx, hash)
         SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])",
    )
    .bind(org.as_uuid())
    .bind(&b.node_level)
    .bind(&b.node_idx)
    .bind(&b.node_hash)
    .execute(su)
    .await
    .context("bulk-insert audit nodes")?;
    Ok(())
}

/// Bulk-loads a log of `entries` entries for a new org: `entries - TAIL` loaded, then `TAIL`
/// appended through `log::append`, then a checkpoint issued. Returns the org and how long the
/// load took.
async fn build_log(bench: &Bench, entries: u64, what: &str) -> anyhow::Result<(OrgId, Duration)> {
    let org = OrgId::new();
    let loaded = entries - TAIL;
    let start = Instant::now();
    sqlx::query("INSERT INTO coffer_audit.audit_logs (org_id, genesis) VALUES ($1, $2)")
        .bind(org.as_uuid())
        .bind(coffer_tlog::chain_genesis(&org.to_string()).as_slice())
        .execute(&bench.su)
        .await
        .context("start the log")?;
    let (tx, mut rx) = mpsc::channel(2);
    let producer = tokio::task::spawn_blocking(move || generate(org, loaded, tx));
    while let Some(batch) = rx.recv().await {
        tokio::try_join!(
            insert_entries(&bench.su, org, &batch),
            insert_nodes(&bench.su, org, &batch)
        )?;
    }
    producer.await.context("join the entry generator")??;
    let load = start.elapsed();
    let mut tail = Vec::new();
    for _ in 0..TAIL {
        let t = Instant::now();
        append_one(&bench.db, &event(org)).await?;
        tail.push(t.elapsed());
    }
    let vacuum = Instant::now();
    // Done now rather than by autovacuum in the middle of the measurements.
    sqlx::query("VACUUM (ANALYZE) coffer_audit.audit_entries, coffer_audit.audit_nodes")
        .execute(&bench.su)
        .await
        .context("vacuum the loaded tables")?;
    let vacuum = vacuum.elapsed();
    let signed = bench.audit.checkpointer().issue(org).await?;
    ensure!(
        signed == Some(entries),
        "the checkpoint of the {what} log signs {signed:?}, not its {entries} entries"
    );
    println!(
        "{what}: bulk-loaded {} entries in {:.1} s ({} entries/s), appended {TAIL} more through \
         log::append (median {} each), vacuumed in {:.1} s, checkpoint issued at size {}",
        grouped(loaded as f64),
        load.as_secs_f64(),
        grouped(per_second(loaded, load)),
        human_ms(median(tail).as_secs_f64() * 1e3),
        vacuum.as_secs_f64(),
        grouped(entries as f64)
    );
    Ok((org, load))
}

// ---------------------------------------------------------------------------------------------
// Part 2: bundle verification.

/// A bundle exported into memory, and its leaves.
struct Exported {
    bytes: Vec<u8>,
    leaves: Vec<Vec<u8>>,
    entries: u64,
}

/// Exports `org`'s whole log up to its latest checkpoint through `Audit::export`, written as
/// the CLI writes a bundle file.
async fn export(audit: &Audit, org: OrgId) -> anyhow::Result<Exported> {
    let (sink, mut parts) = mpsc::channel(1024);
    let exporter = {
        let audit = audit.clone();
        tokio::spawn(async move { audit.export(org, ExportRequest::default(), sink).await })
    };
    let mut writer = bundle::Writer::new(Vec::new()).context("start a bundle")?;
    let mut leaves = Vec::new();
    let mut entries = 0;
    while let Some(part) = parts.recv().await {
        let part = part.context("export the log")?;
        if let ExportPart::Entry(e) = &part {
            entries += 1;
            leaves.push(e.leaf.clone());
        }
        writer
            .write(&bundle::record(org, part))
            .context("write a bundle record")?;
    }
    exporter.await.context("join the exporter")?;
    Ok(Exported {
        bytes: writer.finish().context("finish the bundle")?,
        leaves,
        entries,
    })
}

struct Verification {
    entries: u64,
    bundle_bytes: usize,
    load: Duration,
    export: Duration,
    verify: Duration,
    hash: Duration,
}

impl Verification {
    fn verify_rate(&self) -> f64 {
        per_second(self.entries, self.verify)
    }

    fn hash_rate(&self) -> f64 {
        per_second(self.entries, self.hash)
    }

    fn ratio(&self) -> f64 {
        ratio(self.verify_rate(), self.hash_rate())
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "entries": self.entries,
            "bundle_bytes": self.bundle_bytes,
            "bulk_load_seconds": round2(self.load.as_secs_f64()),
            "export_seconds": round2(self.export.as_secs_f64()),
            "export_entries_per_s": per_second(self.entries, self.export).round(),
            "verify_seconds": round2(self.verify.as_secs_f64()),
            "verify_entries_per_s": self.verify_rate().round(),
            "sha256_seconds": round2(self.hash.as_secs_f64()),
            "sha256_leaves_per_s": self.hash_rate().round(),
            "ratio": round2(self.ratio()),
        })
    }
}

async fn verify_part(args: &Args, bench: &Bench, results: &mut Results) -> anyhow::Result<()> {
    println!();
    let (org, load) = build_log(bench, args.bundle_entries, "verification").await?;
    let start = Instant::now();
    let exported = export(&bench.audit, org).await?;
    let export_time = start.elapsed();
    println!(
        "verification: exported {} entries ({:.1} MB) through Audit::export in {:.1} s ({} \
         entries/s)",
        grouped(exported.entries as f64),
        exported.bytes.len() as f64 / 1e6,
        export_time.as_secs_f64(),
        grouped(per_second(exported.entries, export_time))
    );
    let options = bundle::Options {
        org: Some(org),
        ..bundle::Options::default()
    };
    let (mut verify_times, mut hash_times) = (Vec::new(), Vec::new());
    let mut verified = true;
    for r in 0..args.verify_runs {
        // Taking turns, the order swapping every run.
        for verify_first in [r % 2 == 0, r % 2 == 1] {
            let t = Instant::now();
            if verify_first {
                let report = bundle::verify(exported.bytes.as_slice(), &options);
                verify_times.push(t.elapsed());
                verified &= report.is_ok_and(|r| {
                    r.entries == args.bundle_entries && r.size == args.bundle_entries
                });
            } else {
                let mut acc = 0u8;
                for leaf in &exported.leaves {
                    acc ^= coffer_tlog::leaf_hash(leaf)[0];
                }
                std::hint::black_box(acc);
                hash_times.push(t.elapsed());
            }
        }
        println!(
            "verify run {}/{}: bundle::verify {:.2} s, SHA-256 of the leaves {:.2} s",
            r + 1,
            args.verify_runs,
            verify_times.last().map_or(0.0, Duration::as_secs_f64),
            hash_times.last().map_or(0.0, Duration::as_secs_f64)
        );
    }
    results.checks.push(Check::new(
        format!(
            "verification: the bundle of {} entries (bulk-loaded, the last {TAIL} appended) \
             verifies every run",
            exported.entries
        ),
        verified && exported.entries == args.bundle_entries,
    ));
    results.verify = Some(Verification {
        entries: exported.entries,
        bundle_bytes: exported.bytes.len(),
        load,
        export: export_time,
        verify: median(verify_times),
        hash: median(hash_times),
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 3: proof latency.

/// A measured operation's latencies and its reference's, taken turn about.
struct Paired {
    measured: Percentiles,
    reference: Percentiles,
}

impl Paired {
    fn json(&self) -> serde_json::Value {
        json!({
            "latency": self.measured.json(),
            "reference_latency": self.reference.json(),
            "p50_ratio": round2(ratio(self.measured.p50_ms, self.reference.p50_ms)),
            "p99_ratio": round2(ratio(self.measured.p99_ms, self.reference.p99_ms)),
        })
    }
}

struct Proofs {
    size: u64,
    load: Duration,
    inclusion: Paired,
    consistency: Paired,
}

impl Proofs {
    fn json(&self) -> serde_json::Value {
        json!({
            "log_entries": self.size,
            "bulk_load_seconds": round2(self.load.as_secs_f64()),
            "inclusion": self.inclusion.json(),
            "consistency": self.consistency.json(),
        })
    }
}

/// The reference: one entry by primary key, in a tenant transaction as every read of the
/// service opens.
async fn entry_by_key(db: &Database, org: OrgId, seq: u64) -> anyhow::Result<()> {
    let mut tx = db.begin_tenant(org).await?;
    let row = sqlx::query(
        "SELECT seq, leaf, leaf_hash, chain_hash, appended_at FROM audit_entries
          WHERE org_id = $1 AND seq = $2",
    )
    .bind(org.as_uuid())
    .bind(i64::try_from(seq).context("sequence number")?)
    .fetch_optional(tx.conn())
    .await
    .context("select an entry")?;
    ensure!(row.is_some(), "entry {seq} is missing");
    Ok(())
}

/// Checks `samples` random inclusion and consistency proofs against the latest checkpoint.
async fn check_proofs(audit: &Audit, org: OrgId, size: u64, samples: u64) -> anyhow::Result<()> {
    let checkpoint = audit.checkpoint(org, None).await?;
    ensure!(
        checkpoint.size == size,
        "the latest checkpoint is not at the log's size"
    );
    for _ in 0..samples {
        let (seq, from) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(1..=size), rng.gen_range(1..=size))
        };
        let proof = audit.entry(org, seq, None).await?;
        ensure!(proof.checkpoint.size == size && proof.entry.seq == seq);
        coffer_tlog::verify_inclusion(
            &coffer_tlog::leaf_hash(&proof.entry.leaf),
            seq - 1,
            size,
            &proof.inclusion_proof,
            &checkpoint.root,
        )
        .with_context(|| format!("the inclusion proof of entry {seq}"))?;
        let c = audit.consistency(org, from, size).await?;
        ensure!(
            c.to_root == checkpoint.root,
            "the consistency proof's new root is not the checkpoint's"
        );
        coffer_tlog::verify_consistency(from, size, &c.proof, &c.from_root, &c.to_root)
            .with_context(|| format!("the consistency proof from size {from}"))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Proof {
    Inclusion,
    Consistency,
}

/// `calls` calls of `kind` from `clients` callers, each taking turns with the reference.
async fn proof_latency(
    bench: &Bench,
    clients: usize,
    calls: u64,
    org: OrgId,
    size: u64,
    kind: Proof,
) -> anyhow::Result<Paired> {
    let run = load::alternating(clients, calls, |_| {
        let (audit, db) = (bench.audit.clone(), bench.db.clone());
        let measured = move || {
            let audit = audit.clone();
            let pick = rand::thread_rng().gen_range(1..=size);
            async move {
                match kind {
                    Proof::Inclusion => {
                        audit.entry(org, pick, None).await?;
                    }
                    Proof::Consistency => {
                        audit.consistency(org, pick, size).await?;
                    }
                }
                Ok(())
            }
        };
        let reference = move || {
            let db = db.clone();
            let seq = rand::thread_rng().gen_range(1..=size);
            async move { entry_by_key(&db, org, seq).await }
        };
        (measured, reference)
    })
    .await?;
    Ok(Paired {
        measured: Percentiles::of(&run.measured),
        reference: Percentiles::of(&run.reference),
    })
}

async fn proofs_part(args: &Args, bench: &Bench, results: &mut Results) -> anyhow::Result<()> {
    println!();
    let size = args.log_entries;
    let (org, load) = build_log(bench, size, "proofs").await?;
    let checked = check_proofs(&bench.audit, org, size, PROOF_CHECKS).await;
    results.checks.push(Check::new(
        format!(
            "proofs: {PROOF_CHECKS} random inclusion and consistency proofs verify against the \
             checkpoint of size {size}{}",
            match &checked {
                Ok(()) => String::new(),
                Err(e) => format!(": {e:#}"),
            }
        ),
        checked.is_ok(),
    ));
    // Warm the pool and the caches on the path; not measured.
    let clients = args.proof_clients;
    proof_latency(bench, clients, 100, org, size, Proof::Inclusion).await?;
    let inclusion = proof_latency(bench, clients, args.proofs, org, size, Proof::Inclusion).await?;
    println!(
        "inclusion:   {}; reference {}",
        inclusion.measured.line(),
        inclusion.reference.line()
    );
    let consistency =
        proof_latency(bench, clients, args.proofs, org, size, Proof::Consistency).await?;
    println!(
        "consistency: {}; reference {}",
        consistency.measured.line(),
        consistency.reference.line()
    );
    results.proofs = Some(Proofs {
        size,
        load,
        inclusion,
        consistency,
    });
    Ok(())
}
