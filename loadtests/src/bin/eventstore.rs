//! `cargo xtask bench eventstore`: what an event-store append costs, and how long an event
//! takes from its append to a consumer.
//!
//! 1. **Append throughput** with 1 and with 8 writers. Each append is one
//!    `EventStore::execute` (load, decide, append, projection, outbox, NOTIFY, commit) on the
//!    writer's own aggregates, compared with a plain one-row INSERT of the same columns and
//!    payload in its own (autocommit) transaction, same writer count, measured in the same run.
//! 2. **Outbox → consumer lag** at a steady rate: writers paced to the target, a `Relay` and a
//!    `Consumer` in-process as a service runs them, the handler recording
//!    `now - occurred_at`. Every appended event must reach the consumer.
//!
//! Each part gets a fresh database (through `coffer-testkit`, which reads the stack's
//! environment) and, for the lag, its own JetStream streams. Output: human-readable lines, then
//! one line of JSON for CI. Exits non-zero if an event was lost or the run failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::Parser;
use coffer_db::{Database, TenantTx};
use coffer_eventstore::{
    Consumer, ConsumerConfig, Delivery, EventStore, Handler, HandlerError, Relay, RelayConfig,
};
use coffer_loadtests::facts::{HostLoad, PostgresFacts, print_host};
use coffer_loadtests::load::{self, Budget, Pacing, Phase};
use coffer_loadtests::meter::{self, Meter};
use coffer_loadtests::report::{Percentiles, latency_histogram, per_second, round2};
use coffer_loadtests::{SCHEMAS, SERVICE};
use coffer_testkit::TestDb;
use coffer_types::{Actor, AggregateId, OrgId};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

/// Event-store benchmark: append throughput against a plain INSERT, and outbox → consumer lag.
#[derive(Debug, Parser)]
#[command(name = "eventstore")]
struct Args {
    /// Which parts to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    /// Append cases: longest time per case (ends at this or --events, whichever comes first).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Append cases: most events per case.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Append cases: writer counts, one case each.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8])]
    writers: Vec<usize>,
    /// Appends per aggregate before a writer moves to a fresh one (1: every append creates a
    /// new aggregate, so loads stay empty).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    events_per_aggregate: u64,
    /// Size of each event payload and of each plain row's payload.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    payload_bytes: u64,
    /// Lag: target appends per second.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Lag: paced writer tasks sharing the target rate.
    #[arg(long, default_value_t = 16)]
    lag_writers: usize,
    /// Lag: paced but not measured, first.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Lag: paced and measured.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// Lag: how long the consumer may take to catch up after the last append.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    All,
    Append,
    Lag,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if self.writers.is_empty() || self.writers.contains(&0) {
            bail!("--writers must list writer counts of at least 1");
        }
        if self.lag_writers == 0 {
            bail!("--lag-writers must be at least 1");
        }
        if self.duration.is_zero() || self.measure.is_zero() {
            bail!("--duration and --measure must be longer than zero");
        }
        Ok(())
    }
}

/// The first payload byte says which window a paced append was scheduled in, so the consumer
/// measures exactly the events the writers measured.
const WARMUP: u8 = 0;
const MEASURED: u8 = 1;

fn actor() -> Actor {
    Actor::service("bench")
}

/// Opaque, incompressible-looking bytes.
fn payload(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let _telemetry = coffer_loadtests::init_telemetry()?;

    let server = PostgresFacts::read().await?;
    println!(
        "eventstore bench: {}, payload {} B, {} event(s) per aggregate",
        server.line(),
        args.payload_bytes,
        args.events_per_aggregate
    );
    let host = HostLoad::now();
    print_host(&host, &server, None);

    let mut summary = json!({
        "bench": "eventstore",
        "postgres": server.json(),
        "host": host.json(),
        "payload_bytes": args.payload_bytes,
        "events_per_aggregate": args.events_per_aggregate,
    });
    let mut ok = true;
    if args.only != Part::Lag {
        summary["append"] = append_part(&args).await?;
    }
    if args.only != Part::Append {
        let (lag, lag_ok) = lag_part(&args).await?;
        summary["lag"] = lag;
        ok &= lag_ok;
    }
    summary["ok"] = json!(ok);
    println!("{summary}");
    if !ok {
        bail!("the consumer did not process every appended event");
    }
    Ok(())
}

/// A fresh migrated database and the benchmark service's store on a pool of `connections`.
async fn fresh_store(connections: usize) -> anyhow::Result<(TestDb, EventStore)> {
    let t = TestDb::migrated(SCHEMAS).await;
    let mut config = t.config.clone();
    config.max_connections = u32::try_from(connections).context("pool size")?;
    let db = Database::connect(&config, SERVICE)
        .await
        .context("connect as the bench service")?;
    Ok((t, EventStore::new(db, vec![Arc::new(meter::Totals)])))
}

/// Drops a benchmark database once its pool is closed.
async fn drop_database(t: &TestDb, store: EventStore) {
    store.db().pool().close().await;
    coffer_loadtests::drop_database(t).await;
}

// ---------------------------------------------------------------------------------------------
// Part 1: append throughput.

async fn append_part(args: &Args) -> anyhow::Result<serde_json::Value> {
    let most = args.writers.iter().copied().max().unwrap_or(1);
    let (t, store) = fresh_store(most + 2).await?;
    println!();
    println!(
        "append: each case runs {} events or {}, whichever comes first (database {})",
        args.events,
        humantime::format_duration(args.duration),
        t.name
    );
    let data = Arc::new(payload(args.payload_bytes));
    let mut cases = Vec::new();
    for &writers in &args.writers {
        // Warm the pool's connections, caches and indexes; not measured.
        let warm = Budget::new(200 * writers as u64, Duration::from_secs(2));
        appends(&store, writers, warm, args.events_per_aggregate, &data).await?;
        let warm = Budget::new(200 * writers as u64, Duration::from_secs(2));
        plain_inserts(&store, writers, warm, &data).await?;

        let plain = plain_inserts(
            &store,
            writers,
            Budget::new(args.events, args.duration),
            &data,
        )
        .await?;
        let append = appends(
            &store,
            writers,
            Budget::new(args.events, args.duration),
            args.events_per_aggregate,
            &data,
        )
        .await?;
        let (append_rate, plain_rate) = (
            per_second(append.ops, append.elapsed),
            per_second(plain.ops, plain.elapsed),
        );
        let ratio = if plain_rate > 0.0 {
            append_rate / plain_rate
        } else {
            0.0
        };
        let (append_latency, plain_latency) = (
            Percentiles::of(&append.latency),
            Percentiles::of(&plain.latency),
        );
        println!(
            "append  writers={writers:<2} events/s={append_rate:>8.0}  plain_insert/s={plain_rate:>8.0}  ratio={ratio:.2}"
        );
        println!("        append latency {}", append_latency.line());
        println!("        plain  latency {}", plain_latency.line());
        cases.push(json!({
            "writers": writers,
            "events": append.ops,
            "seconds": round2(append.elapsed.as_secs_f64()),
            "events_per_s": append_rate.round(),
            "plain_inserts": plain.ops,
            "plain_seconds": round2(plain.elapsed.as_secs_f64()),
            "plain_insert_per_s": plain_rate.round(),
            "ratio": round2(ratio),
            "append_latency": append_latency.json(),
            "plain_latency": plain_latency.json(),
        }));
    }
    drop_database(&t, store).await;
    Ok(json!(cases))
}

/// Closed-loop appends: each writer its own org and aggregates, one `execute` per event.
async fn appends(
    store: &EventStore,
    writers: usize,
    budget: Budget,
    per_aggregate: u64,
    data: &Arc<Vec<u8>>,
) -> anyhow::Result<load::Run> {
    load::closed_loop(writers, budget, |_| {
        let (store, data) = (store.clone(), data.clone());
        let org = OrgId::new();
        let mut id = AggregateId::new();
        let mut done = 0u64;
        move || {
            if done > 0 && done.is_multiple_of(per_aggregate) {
                id = AggregateId::new();
            }
            done += 1;
            let (store, data) = (store.clone(), data.clone());
            async move {
                store
                    .execute::<Meter>(
                        org,
                        id,
                        &actor(),
                        meter::Command::RecordReading(data.to_vec()),
                    )
                    .instrument(tracing::info_span!("bench.append"))
                    .await
                    .context("append a reading")?;
                Ok(())
            }
        }
    })
    .await
}

/// The baseline: one autocommit INSERT of an event-shaped row per operation.
async fn plain_inserts(
    store: &EventStore,
    writers: usize,
    budget: Budget,
    data: &Arc<Vec<u8>>,
) -> anyhow::Result<load::Run> {
    // The size of the trace context an append stores.
    let trace = json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
    load::closed_loop(writers, budget, |_| {
        let (pool, data, trace) = (store.db().pool().clone(), data.clone(), trace.clone());
        let org = OrgId::new();
        move || {
            let (pool, data, trace) = (pool.clone(), data.clone(), trace.clone());
            async move {
                sqlx::query(
                    "INSERT INTO plain_rows (org_id, aggregate_type, aggregate_id, version, event_id, event_type,
                                             schema_version, occurred_at, actor_kind, actor_id, trace_context, payload)
                     VALUES ($1, $2, $3, 1, $4, $5, 1, $6, 'service', 'bench', $7, $8)",
                )
                .bind(org.as_uuid())
                .bind("Meter")
                .bind(uuid::Uuid::now_v7())
                .bind(uuid::Uuid::now_v7())
                .bind(meter::READING_RECORDED)
                .bind(Utc::now())
                .bind(sqlx::types::Json(trace))
                .bind(data.as_slice())
                .execute(&pool)
                .await
                .context("insert a plain row")?;
                Ok(())
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Part 2: outbox → consumer lag.

/// The consumer's handler: records how long after its append each measured event arrived.
struct LagSink {
    /// `now - occurred_at` of measured events, microseconds.
    lag: Mutex<Histogram<u64>>,
    /// Events handled, warm-up included.
    seen: AtomicU64,
    /// When the first and the latest event were handled: while the consumer is behind, the
    /// rate between them is its ceiling.
    handled_between: Mutex<Option<(Instant, Instant)>>,
}

impl LagSink {
    /// Events per second the consumer handled, from its first event to its last.
    fn handled_rate(&self) -> f64 {
        let between = *self
            .handled_between
            .lock()
            .expect("no code panics while holding the times");
        between.map_or(0.0, |(first, last)| {
            per_second(
                self.seen.load(Ordering::Relaxed).saturating_sub(1),
                last - first,
            )
        })
    }
}

#[async_trait::async_trait]
impl Handler for LagSink {
    async fn handle(&self, _tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError> {
        let lag = Utc::now().signed_duration_since(delivery.event.occurred_at);
        let meter::Event::ReadingRecorded(reading) = delivery
            .event
            .decode::<meter::Event>()
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        if reading.first() == Some(&MEASURED) {
            let us = lag.num_microseconds().unwrap_or(i64::MAX).max(0) as u64;
            self.lag
                .lock()
                .expect("no code panics while holding the histogram")
                .saturating_record(us);
        }
        let now = Instant::now();
        let mut between = self
            .handled_between
            .lock()
            .expect("no code panics while holding the times");
        *between = Some(between.map_or((now, now), |(first, _)| (first, now)));
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn lag_part(args: &Args) -> anyhow::Result<(serde_json::Value, bool)> {
    // Writers, plus the consumer's connection and slack for reconnects.
    let (t, store) = fresh_store(args.lag_writers + 4).await?;
    let (_client, js, bus) = coffer_testkit::bus().await;
    println!();
    println!(
        "lag: {} appends/s from {} paced writers, {} warm-up then {} measured (database {}, stream {})",
        args.rate,
        args.lag_writers,
        humantime::format_duration(args.warmup),
        humantime::format_duration(args.measure),
        t.name,
        bus.stream
    );

    let (stop_relay, relay_stopped) = oneshot::channel::<()>();
    let relay = Relay::new(
        t.config.clone(),
        SERVICE,
        js.clone(),
        bus.clone(),
        RelayConfig::default(),
    );
    let relay_task = tokio::spawn(relay.run(async move {
        let _ = relay_stopped.await;
    }));
    let sink = Arc::new(LagSink {
        lag: Mutex::new(latency_histogram()),
        seen: AtomicU64::new(0),
        handled_between: Mutex::new(None),
    });
    const CONSUMER: &str = "bench_lag";
    let consumer = Consumer::new(
        store.db().clone(),
        js.clone(),
        bus.clone(),
        ConsumerConfig::new(CONSUMER, vec![bus.service_filter(SERVICE.0)]),
        sink.clone(),
    );
    let (stop_consumer, consumer_stopped) = oneshot::channel::<()>();
    let consumer_task = tokio::spawn(consumer.run(async move {
        let _ = consumer_stopped.await;
    }));

    let (stop_sampler, sampler_stopped) = oneshot::channel::<()>();
    let sampler = tokio::spawn(sample_backlog(
        t.superuser().await,
        js.get_stream(&bus.stream)
            .await
            .context("open the event stream")?,
        sink.clone(),
        sampler_stopped,
    ));

    let pacing = Pacing {
        rate: f64::from(args.rate),
        writers: args.lag_writers,
        warmup: args.warmup,
        measure: args.measure,
        give_up_after: Duration::from_secs(2),
    };
    let data = payload(args.payload_bytes);
    let per_aggregate = args.events_per_aggregate;
    let run = load::paced(pacing, |_| {
        let (store, data) = (store.clone(), data.clone());
        let org = OrgId::new();
        let mut id = AggregateId::new();
        let mut done = 0u64;
        move |phase| {
            if done > 0 && done.is_multiple_of(per_aggregate) {
                id = AggregateId::new();
            }
            done += 1;
            let mut reading = data.clone();
            reading[0] = match phase {
                Phase::Warmup => WARMUP,
                Phase::Measured => MEASURED,
            };
            let store = store.clone();
            async move {
                store
                    .execute::<Meter>(org, id, &actor(), meter::Command::RecordReading(reading))
                    .instrument(tracing::info_span!("bench.append"))
                    .await
                    .context("append a reading")?;
                Ok(())
            }
        }
    })
    .await?;
    let appended = run.warmup_ops + run.measured_ops;

    // Let the consumer catch up: poll with a deadline.
    let writers_done = Instant::now();
    let deadline = writers_done + args.drain_timeout;
    while sink.seen.load(Ordering::Relaxed) < appended && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = writers_done.elapsed();
    let seen = sink.seen.load(Ordering::Relaxed);

    let _ = stop_sampler.send(());
    let backlog = sampler.await.context("join the backlog sampler")?;
    let _ = stop_consumer.send(());
    let _ = stop_relay.send(());
    match tokio::time::timeout(Duration::from_secs(5), consumer_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "consumer ended with an error"),
        Err(_) => tracing::warn!("consumer did not stop within 5 s"),
        _ => {}
    }
    if tokio::time::timeout(Duration::from_secs(5), relay_task)
        .await
        .is_err()
    {
        tracing::warn!("relay did not stop within 5 s");
    }

    // What the database and the bus hold, independently of the handler's own count.
    let su = t.superuser().await;
    let schema = SERVICE.schema();
    let (events, outbox, processed): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT count(*) FROM {schema}.events), (SELECT count(*) FROM {schema}.outbox),
                (SELECT count(*) FROM {schema}.processed_events WHERE consumer = $1)"
    ))
    .bind(CONSUMER)
    .fetch_one(&su)
    .await
    .context("count events, outbox rows and processed events")?;
    su.close().await;
    let published = js
        .get_stream(&bus.stream)
        .await
        .context("open the event stream")?
        .get_info()
        .await
        .context("read the event stream")?
        .state
        .messages;
    let dead_letters = js
        .get_stream(&bus.dlq_stream)
        .await
        .context("open the dead-letter stream")?
        .get_info()
        .await
        .context("read the dead-letter stream")?
        .state
        .messages;
    for stream in [&bus.stream, &bus.dlq_stream] {
        if let Err(e) = js.delete_stream(stream).await {
            tracing::warn!(%stream, error = %e, "could not delete a benchmark stream");
        }
    }
    drop_database(&t, store).await;

    let appended_i = i64::try_from(appended).context("event count")?;
    let all_processed = events == appended_i
        && processed == appended_i
        && seen == appended
        && published == appended
        && outbox == 0
        && dead_letters == 0;
    let lag = Percentiles::of(
        &sink
            .lag
            .lock()
            .expect("no code panics while holding the histogram"),
    );
    let slip = Percentiles::of(&run.slip);
    let append_latency = Percentiles::of(&run.latency);
    let achieved = run.achieved_rate();
    let sustained = run.sustained(f64::from(args.rate));
    let consumer_rate = sink.handled_rate();

    println!(
        "lag     target={}/s  achieved={achieved:.0}/s  sustained={}  {}",
        args.rate,
        if sustained { "yes" } else { "NO" },
        lag.line()
    );
    println!(
        "        measured events={} of {} scheduled{}; writer schedule slip {}; append latency {}",
        run.measured_ops,
        run.scheduled,
        if run.gave_up {
            " (writers fell over 2 s behind and stopped early)"
        } else {
            ""
        },
        slip.line(),
        append_latency.line()
    );
    println!(
        "        consumer {}: handled {seen} of {appended} appended events (warm-up {} + measured {}); \
         in database: {events} events, {processed} processed, {outbox} outbox rows left; \
         stream {published} messages, {dead_letters} dead letters; caught up {:.2} s after the last append \
         (handled {consumer_rate:.0} events/s from its first to its last)",
        if all_processed {
            "processed every event"
        } else {
            "MISSED EVENTS"
        },
        run.warmup_ops,
        run.measured_ops,
        drain.as_secs_f64(),
    );
    println!(
        "        backlog (largest of {} samples): {} outbox rows waiting for the relay, {} published \
         messages waiting for the consumer",
        backlog.samples, backlog.outbox_max, backlog.consumer_max
    );
    if lag.count != run.measured_ops {
        println!(
            "        note: {} measured events reached the handler, {} were appended",
            lag.count, run.measured_ops
        );
    }
    let summary = json!({
        "target_per_s": args.rate,
        "achieved_per_s": achieved.round(),
        "sustained": sustained,
        "writers": args.lag_writers,
        "warmup_s": args.warmup.as_secs_f64(),
        "measure_s": args.measure.as_secs_f64(),
        "scheduled": run.scheduled,
        "writers_gave_up": run.gave_up,
        "measured_events": run.measured_ops,
        "lag": lag.json(),
        "writer_slip": slip.json(),
        "append_latency": append_latency.json(),
        "appended": appended,
        "handled": seen,
        "processed_rows": processed,
        "published": published,
        "outbox_left": outbox,
        "dead_letters": dead_letters,
        "all_processed": all_processed,
        "drain_s": round2(drain.as_secs_f64()),
        "consumer_handled_per_s": consumer_rate.round(),
        "backlog": {
            "samples": backlog.samples,
            "outbox_max": backlog.outbox_max,
            "consumer_max": backlog.consumer_max,
        },
    });
    Ok((summary, all_processed))
}

/// Where undelivered events waited during the lag part: rows still in the outbox mean the
/// relay is behind; messages in the stream not yet handled mean the consumer is.
#[derive(Debug, Default, Clone, Copy)]
struct Backlog {
    samples: u64,
    outbox_max: i64,
    consumer_max: u64,
}

/// Samples the backlog every half second until `stop`. A failed sample is skipped: this is a
/// diagnostic, not a measurement.
async fn sample_backlog(
    su: sqlx::PgPool,
    mut stream: async_nats::jetstream::stream::Stream,
    sink: Arc<LagSink>,
    mut stop: oneshot::Receiver<()>,
) -> Backlog {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    let mut backlog = Backlog::default();
    let count_outbox = format!("SELECT count(*) FROM {}.outbox", SERVICE.schema());
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {}
        }
        let outbox: Result<i64, _> = sqlx::query_scalar(&count_outbox).fetch_one(&su).await;
        let published = stream.info().await.map(|i| i.state.last_sequence);
        let handled = sink.seen.load(Ordering::Relaxed);
        if let (Ok(outbox), Ok(published)) = (outbox, published) {
            backlog.samples += 1;
            backlog.outbox_max = backlog.outbox_max.max(outbox);
            backlog.consumer_max = backlog.consumer_max.max(published.saturating_sub(handled));
        }
    }
    su.close().await;
    backlog
}
