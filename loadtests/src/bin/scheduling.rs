//! `cargo xtask bench scheduling`: how fast the scheduler turns due schedules into jobs in the
//! hands of long-polling agents, and what agents waiting for work cost while nothing is due.
//!
//! One real `coffer` server runs in-process with the production wiring (every target, TLS with
//! a development certificate, default `[scheduler]` settings: a 250 ms tick), on a fresh
//! database and bus, initialised as `coffer admin init` does. Before timing, `--agents` agents
//! are enrolled (each its own key, certificate and mTLS connection), each serves one registered
//! database, and `--schedules` schedules are spread evenly over those databases, all with one
//! 6-field cron expression naming the same second a little after setup (`S M H D Mo *`): at that
//! instant all of them fall due at once, a burst of `--schedules` jobs.
//!
//! Every agent is a task that long-polls `AgentJobService/PollJobs`, completes each job it gets
//! at once with an artifact record, and polls again. For each job the agent notes when its
//! claim arrived; due-to-claim latency is that time minus the job's due time (which includes
//! the wait for the scheduler's next tick and for the jobs fired before it). The dispatch rate
//! is the burst's job count over the time from the due instant to its last claim.
//!
//! Reference, measured in the same run on the same Postgres: a bare SQL job queue (one table,
//! a claim = `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)`, a completion =
//! one `UPDATE`) drained by as many concurrent workers as the server's database pool has
//! connections. The ratio prices what a dispatch adds on top of the queue itself: the schedule
//! firing, events and projections, the outbox, the NATS wake-up, ticket signing, TLS and gRPC.
//!
//! Idle cost: with every schedule paused, the process's CPU time (server and agent clients
//! together, from `/proc/self/stat`) is measured for `--idle` while all agents hold a long-poll
//! open, and then for as long with no agent polling (the reference: the server's own tick,
//! relays and consumers). The difference, per 1,000 agents, is what idle long-polls cost.
//!
//! Output: progress lines, a table, then one line of JSON for CI. Exits non-zero if any job was
//! claimed twice, lost, or not completed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Utc};
use clap::Parser;
use coffer_loadtests::facts::{HostLoad, PostgresFacts, print_host};
use coffer_loadtests::report::{Align, Percentiles, Table, latency_histogram, micros, round2};
use coffer_loadtests::server::{BenchServer, ServerKms, agent_key, authed, exchange};
use coffer_proto::enrollment::v1::{
    CreateEnrollmentTokenRequest, EnrollRequest, agent_service_client::AgentServiceClient,
    enrollment_token_service_client::EnrollmentTokenServiceClient,
};
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::scheduling::v1::agent_job_service_client::AgentJobServiceClient;
use coffer_proto::time::from_timestamp;
use futures::StreamExt as _;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Identity};

/// Scheduling benchmark: jobs dispatched per second and due-to-claim latency for a burst of
/// due schedules, and the CPU cost of idle long-polls.
#[derive(Debug, Parser)]
#[command(name = "scheduling")]
struct Args {
    /// Enrolled agents, each long-polling on its own mTLS connection.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Schedules, spread evenly over one database per agent.
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    /// The longest the burst may take to be claimed in full.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// How long each idle window lasts.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// The wait each long-poll asks for, in seconds (the server caps it at 30; the benchmark's
    /// client gives up on a call after 30 s, so keep it below).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=25))]
    poll_wait: u32,
    /// Concurrent setup calls (enrollments, registrations).
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
}

/// How long a setup step may take before the run fails.
const SETUP_DEADLINE: Duration = Duration::from_secs(600);

/// One claimed job, as its agent saw it.
#[derive(Debug, Clone, Copy)]
struct Claim {
    job: uuid::Uuid,
    due_at: DateTime<Utc>,
    claimed_at: DateTime<Utc>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.agents > 0, "--agents must be at least 1");
    ensure!(
        args.schedules >= args.agents,
        "--schedules must be at least --agents (one database per agent)"
    );
    let _telemetry = coffer_loadtests::init_telemetry()?;
    let postgres = PostgresFacts::read().await?;
    let host = HostLoad::now();
    // Backups "go" to a local destination; the simulated agents write nothing there.
    let root = tempfile::tempdir().context("create the destination root")?;
    let root_path = std::fs::canonicalize(root.path()).context("resolve the destination root")?;
    let local_root = root_path.clone();
    let server = Box::pin(BenchServer::start_with(ServerKms::Local, move |c| {
        c.scheduling.local_roots = vec![local_root];
    }))
    .await
    .context("boot the server")?;
    println!(
        "scheduling bench: one coffer server in-process (production wiring, TLS, database pool of \
         {} connections, default [scheduler] settings), {}",
        server.db_pool,
        postgres.line()
    );
    print_host(&host, &postgres, Some("agents and server"));
    let outcome = Box::pin(run(&args, &server, &root_path)).await;
    let reference = match &outcome {
        Ok(_) => Some(bare_queue(&server, args.schedules).await),
        Err(_) => None,
    };
    server.stop().await;
    let measured = outcome?;
    let reference = reference.expect("ran after a successful run")?;
    report(&args, &measured, reference);
    Ok(())
}

struct Measured {
    /// Per timed burst: (jobs, seconds from due to last claim).
    bursts: Vec<(usize, f64)>,
    latency: Percentiles,
    idle_polling_cpu: f64,
    idle_reference_cpu: f64,
}

async fn run(
    args: &Args,
    server: &BenchServer,
    root: &std::path::Path,
) -> anyhow::Result<Measured> {
    let admin = server.connect(None).await?;
    let (org, owner_key) = server.create_org(&admin).await?;
    let owner = authed(admin.clone(), &exchange(&admin, &owner_key).await?)?;

    let started = Instant::now();
    let agents = enroll(args, server, org, &admin, owner.clone()).await?;
    println!(
        "enrolled {} agents in {:.1} s",
        agents.len(),
        started.elapsed().as_secs_f64()
    );
    wait_until_scheduling_knows(server, agents.len()).await?;

    // The burst's instant: after the schedules are made (a conservative guess of their pace).
    let setup = Duration::from_secs(20 + (args.schedules as u64) / 200);
    let due = DateTime::<Utc>::from_timestamp(
        (Utc::now() + chrono::Duration::from_std(setup).context("a setup estimate")?).timestamp(),
        0,
    )
    .context("a time in range")?;
    let started = Instant::now();
    let destination = pb::destination_service_client::DestinationServiceClient::new(owner.clone())
        .register_destination(pb::RegisterDestinationRequest {
            org_id: org.to_string(),
            fields: Some(pb::DestinationFields {
                name: "bench".into(),
                kind: Some(pb::destination_fields::Kind::Local(pb::LocalDestination {
                    path: root.to_string_lossy().into_owned(),
                })),
            }),
        })
        .await
        .context("register the destination")?
        .into_inner()
        .destination_id;
    let schedule_ids = register(args, org, owner.clone(), &agents, &destination, due).await?;
    ensure!(
        Utc::now() + chrono::Duration::seconds(3) < due,
        "making the schedules took past their due time {due}: raise the setup estimate"
    );
    println!(
        "registered {} databases and {} schedules in {:.1} s",
        agents.len(),
        schedule_ids.len(),
        started.elapsed().as_secs_f64()
    );

    // The agents: poll, complete at once, poll again, until told to stop.
    let claims: Arc<Mutex<Vec<Claim>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut fleet = tokio::task::JoinSet::new();
    for (_, channel) in &agents {
        let mut client = AgentJobServiceClient::new(channel.clone());
        let claims = claims.clone();
        let stop = stop.clone();
        let wait = args.poll_wait;
        fleet.spawn(async move { agent_loop(&mut client, wait, &claims, &stop).await });
    }

    // Wait for the burst to be claimed in full.
    let deadline = Instant::now() + (due - Utc::now()).to_std().unwrap_or_default() + args.deadline;
    loop {
        let done = claims
            .lock()
            .await
            .iter()
            .filter(|c| c.due_at == due)
            .count();
        if done >= schedule_ids.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the burst due at {due} was not claimed within {}: {done} of {}",
                humantime::format_duration(args.deadline),
                schedule_ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Pause every schedule, then the idle windows.
    pause_all(args, org, owner.clone(), &schedule_ids).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_seconds()?;
    tokio::time::sleep(args.idle).await;
    let idle_polling_cpu = cpu_seconds()? - cpu;
    stop.store(true, Ordering::SeqCst);
    // Every agent returns at the end of its current poll.
    while let Some(joined) = fleet.join_next().await {
        joined.context("join an agent")??;
    }
    let cpu = cpu_seconds()?;
    tokio::time::sleep(args.idle).await;
    let idle_reference_cpu = cpu_seconds()? - cpu;

    let claims = claims.lock().await.clone();
    check_exactly_once(&claims)?;
    let mut histogram = latency_histogram();
    let of_burst: Vec<&Claim> = claims.iter().filter(|c| c.due_at == due).collect();
    ensure!(
        of_burst.len() == schedule_ids.len(),
        "the burst due at {due} made {} jobs, not {}",
        of_burst.len(),
        schedule_ids.len()
    );
    let last = of_burst
        .iter()
        .map(|c| c.claimed_at)
        .max()
        .expect("a full burst");
    let bursts = vec![(
        of_burst.len(),
        (last - due).to_std().unwrap_or_default().as_secs_f64(),
    )];
    for c in of_burst {
        let late = (c.claimed_at - c.due_at).to_std().unwrap_or_default();
        histogram
            .record(micros(late).max(1))
            .context("record a latency")?;
    }
    Ok(Measured {
        bursts,
        latency: Percentiles::of(&histogram),
        idle_polling_cpu,
        idle_reference_cpu,
    })
}

/// An agent: long-poll, complete each job at once, again, until `stop` (checked between polls).
async fn agent_loop(
    client: &mut AgentJobServiceClient<Channel>,
    wait: u32,
    claims: &Mutex<Vec<Claim>>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        // A real agent waits out UNAVAILABLE (the server's database pool is busy, e.g. when a
        // burst wakes every agent at once) and a call that outlived the client's timeout, and
        // polls again; anything else ends the run.
        let polled = match client
            .poll_jobs(pb::PollJobsRequest { wait_seconds: wait })
            .await
        {
            Ok(polled) => polled.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(status) => return Err(status).context("poll for jobs"),
        };
        let claimed_at = Utc::now();
        let Some(claimed) = polled.claimed else {
            continue;
        };
        let job = claimed.job.context("a claimed job has its job")?;
        let due_at = from_timestamp(job.due_at.as_ref().context("a job has a due time")?)
            .context("a due time")?;
        let id: uuid::Uuid = job.job_id.parse().context("a job id")?;
        client
            .complete_job(pb::CompleteJobRequest {
                job_id: job.job_id,
                fencing_token: claimed.fencing_token,
                artifact: Some(pb::Artifact {
                    object_key: claimed.object_key,
                    size_bytes: 1,
                    sha256: "0".repeat(64),
                    recipient: "age1bench".into(),
                    age_header_sha256: "1".repeat(64),
                    dump_bytes: 4096,
                }),
            })
            .await
            .context("complete a job")?;
        claims.lock().await.push(Claim {
            job: id,
            due_at,
            claimed_at,
        });
    }
    Ok(())
}

/// Every job once, and every (schedule, due time) once.
fn check_exactly_once(claims: &[Claim]) -> anyhow::Result<()> {
    let mut seen = HashMap::new();
    for c in claims {
        ensure!(
            seen.insert(c.job, c.due_at).is_none(),
            "job {} was claimed twice",
            c.job
        );
    }
    Ok(())
}

/// Enrolls `--agents` agents, each on its own mTLS connection.
async fn enroll(
    args: &Args,
    server: &BenchServer,
    org: coffer_types::OrgId,
    admin: &Channel,
    owner: coffer_loadtests::server::Authed,
) -> anyhow::Result<Vec<(String, Channel)>> {
    let n = args.agents;
    let keys = tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| agent_key())
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("join the key generator")??;
    futures::stream::iter(keys.into_iter().enumerate())
        .map(|(i, (key_pem, csr))| {
            let mut tokens = EnrollmentTokenServiceClient::new(owner.clone());
            let mut agents = AgentServiceClient::new(admin.clone());
            async move {
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
                let agent = agents
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
                Ok::<_, anyhow::Error>((agent.agent_id, channel))
            }
        })
        .buffer_unordered(args.setup_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Waits until scheduling has seen every enrollment (it learns of agents through events).
async fn wait_until_scheduling_knows(server: &BenchServer, agents: usize) -> anyhow::Result<()> {
    let su = server.db.superuser().await;
    let deadline = Instant::now() + SETUP_DEADLINE;
    loop {
        let known: i64 = sqlx::query_scalar("SELECT count(*) FROM coffer_scheduling.agents")
            .fetch_one(&su)
            .await?;
        if usize::try_from(known).unwrap_or(0) >= agents {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "scheduling knows {known} of {agents} agents"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One database per agent and the schedules spread over them; returns the schedule ids.
async fn register(
    args: &Args,
    org: coffer_types::OrgId,
    owner: coffer_loadtests::server::Authed,
    agents: &[(String, Channel)],
    destination: &str,
    due: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let databases: Vec<String> = futures::stream::iter(agents.iter().enumerate())
        .map(|(i, (agent, _))| {
            let mut client = pb::database_service_client::DatabaseServiceClient::new(owner.clone());
            async move {
                Ok::<_, anyhow::Error>(
                    client
                        .register_database(pb::RegisterDatabaseRequest {
                            org_id: org.to_string(),
                            fields: Some(pb::DatabaseFields {
                                name: format!("db-{i}"),
                                engine: "postgresql".into(),
                                host: format!("db{i}.bench.internal"),
                                port: 0,
                                database: "orders".into(),
                                user: "backup".into(),
                                password_vault_ref: format!(
                                    "vault:coffer/{org}/{}",
                                    uuid::Uuid::now_v7()
                                ),
                                agent_id: agent.clone(),
                            }),
                        })
                        .await
                        .context("register a database")?
                        .into_inner()
                        .database_id,
                )
            }
        })
        .buffer_unordered(args.setup_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    use chrono::{Datelike as _, Timelike as _};
    let cron = format!(
        "{} {} {} {} {} *",
        due.second(),
        due.minute(),
        due.hour(),
        due.day(),
        due.month()
    );
    futures::stream::iter(0..args.schedules)
        .map(|i| {
            let mut client = pb::schedule_service_client::ScheduleServiceClient::new(owner.clone());
            let database = databases[i % databases.len()].clone();
            let cron = cron.clone();
            let destination = destination.to_owned();
            async move {
                Ok::<_, anyhow::Error>(
                    client
                        .create_schedule(pb::CreateScheduleRequest {
                            org_id: org.to_string(),
                            fields: Some(pb::ScheduleFields {
                                name: format!("schedule-{i}"),
                                database_id: database,
                                destination_id: destination,
                                cron,
                                timezone: "UTC".into(),
                                max_attempts: 1,
                                ..Default::default()
                            }),
                        })
                        .await
                        .context("create a schedule")?
                        .into_inner()
                        .schedule_id,
                )
            }
        })
        .buffer_unordered(args.setup_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn pause_all(
    args: &Args,
    org: coffer_types::OrgId,
    owner: coffer_loadtests::server::Authed,
    schedules: &[String],
) -> anyhow::Result<()> {
    futures::stream::iter(schedules.iter().cloned())
        .map(|id| {
            let mut client = pb::schedule_service_client::ScheduleServiceClient::new(owner.clone());
            async move {
                client
                    .pause_schedule(pb::PauseScheduleRequest {
                        org_id: org.to_string(),
                        schedule_id: id,
                    })
                    .await
                    .context("pause a schedule")
                    .map(|_| ())
            }
        })
        .buffer_unordered(args.setup_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// This process's user plus system CPU time, in seconds.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    // utime and stime are fields 14 and 15, in clock ticks; the fields after the command
    // name (in parentheses) start at field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("parse /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .context("a /proc/self/stat field")?
            .parse::<f64>()
            .context("a CPU time")
    };
    // USER_HZ, the unit of these fields, is 100 on Linux (x86_64 and aarch64 alike).
    let hz = 100.0;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// The reference: `jobs` rows claimed and completed through a bare SQL queue by as many
/// workers as the server's pool has connections. Returns jobs per second.
async fn bare_queue(server: &BenchServer, jobs: usize) -> anyhow::Result<f64> {
    let pool = server.db.superuser().await;
    sqlx::query(
        "CREATE TABLE bench_queue (id bigserial PRIMARY KEY, agent int NOT NULL, \
         state text NOT NULL, claimed_at timestamptz, done_at timestamptz)",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO bench_queue (agent, state) SELECT g % 1000, 'pending' \
         FROM generate_series(1, $1) g",
    )
    .bind(i64::try_from(jobs).unwrap_or(i64::MAX))
    .execute(&pool)
    .await?;
    let workers = server.db_pool as usize;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let pool = pool.clone();
        set.spawn(async move {
            loop {
                let claimed: Option<i64> = sqlx::query_scalar(
                    "UPDATE bench_queue SET state = 'claimed', claimed_at = now() \
                     WHERE id = (SELECT id FROM bench_queue WHERE state = 'pending' \
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
                )
                .fetch_optional(&pool)
                .await?;
                let Some(id) = claimed else {
                    return Ok::<_, sqlx::Error>(());
                };
                sqlx::query("UPDATE bench_queue SET state = 'done', done_at = now() WHERE id = $1")
                    .bind(id)
                    .execute(&pool)
                    .await?;
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.context("join a queue worker")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_queue WHERE state = 'done'")
        .fetch_one(&pool)
        .await?;
    ensure!(
        usize::try_from(done).unwrap_or(0) == jobs,
        "the bare queue finished {done} of {jobs}"
    );
    Ok(jobs as f64 / elapsed)
}

fn report(args: &Args, m: &Measured, reference_rate: f64) {
    let jobs: usize = m.bursts.iter().map(|(j, _)| j).sum();
    let secs: f64 = m.bursts.iter().map(|(_, s)| s).sum();
    let rate = jobs as f64 / secs.max(f64::EPSILON);
    let per_thousand = 1000.0 / args.agents as f64;
    let idle_cost_ms = (m.idle_polling_cpu - m.idle_reference_cpu).max(0.0) * 1000.0
        / args.idle.as_secs_f64()
        * per_thousand;
    println!();
    let mut table = Table::new(&[
        ("measure", Align::Left),
        ("value", Align::Right),
        ("reference", Align::Right),
        ("ratio", Align::Right),
    ]);
    table.row([
        "jobs dispatched/s (due → claimed, whole bursts)".to_owned(),
        format!("{rate:.0}"),
        format!("{reference_rate:.0} (bare SQL queue)"),
        format!("{:.2}×", rate / reference_rate),
    ]);
    table.row([
        "due-to-claim latency p50".to_owned(),
        format!("{:.0} ms", m.latency.p50_ms),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    table.row([
        "due-to-claim latency p99".to_owned(),
        format!("{:.0} ms", m.latency.p99_ms),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    table.row([
        "CPU per 1,000 idle long-polls".to_owned(),
        format!("{idle_cost_ms:.1} ms/s"),
        format!(
            "{:.1} ms/s (no polls)",
            m.idle_reference_cpu * 1000.0 / args.idle.as_secs_f64()
        ),
        format!(
            "{:.2}×",
            m.idle_polling_cpu / m.idle_reference_cpu.max(f64::EPSILON)
        ),
    ]);
    print!("{table}");
    println!();
    println!(
        "{} schedules over {} agents, all due at the same second: one burst of {} jobs, claimed \
         in full {:.1} s after it fell due; latency includes the scheduler's tick (250 ms) and \
         the wait behind the jobs fired before",
        args.schedules, args.agents, args.schedules, secs
    );
    println!(
        "idle: process CPU (server and agents) over {} with {} long-polls open ({} s waits) vs \
         the same window with none; Postgres and NATS CPU are not counted",
        humantime::format_duration(args.idle),
        args.agents,
        args.poll_wait
    );
    println!(
        "{}",
        json!({
            "bench": "scheduling",
            "agents": args.agents,
            "schedules": args.schedules,
            "jobs_per_second": round2(rate),
            "reference_jobs_per_second": round2(reference_rate),
            "ratio": round2(rate / reference_rate),
            "latency": m.latency.json(),
            "idle_cpu_ms_per_second_per_1000_polls": round2(idle_cost_ms),
            "idle_reference_cpu_ms_per_second": round2(m.idle_reference_cpu * 1000.0 / args.idle.as_secs_f64()),
        })
    );
}
