//! Failure tests: real `coffer serve --target diag` processes killed with SIGKILL, their NATS
//! server stopped and restarted (also while publishes await their acks), two of them
//! competing for the relay lock. Each test then proves the pipeline's promise (DESIGN §3)
//! from the outside: every event reaches JetStream once (`Nats-Msg-Id` = event id,
//! duplicates dropped), in per-aggregate order, the outbox drains, and every `ProbeSent` has
//! exactly one `ProbeObserved` effect.
//!
//! Run through `cargo xtask test` (or `source /tmp/devstack/env.sh`): the tests need the
//! private Postgres and NATS, and `COFFER_NATS_SERVER_BIN` for a NATS server they can stop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use coffer_eventstore::{
    Aggregate, BusConfig, Error as StoreError, EventStore, NewEvent, RecordedEvent,
};
use coffer_server::diag::domain::{PROBE_OBSERVED, PROBE_SENT, Probe, ProbeEvent};
use coffer_server::diag::{self, Diagnostics};
use coffer_testkit::{NatsServer, TestDb, bus, bus_at, nats_url};
use coffer_types::{Actor, AggregateId, EventId, OrgId};
use sqlx::{PgPool, Row};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

/// Generous bound for the whole pipeline to settle on a loaded 2-core machine. Settling
/// includes JetStream's 30 s ack wait: messages a killed consumer had pulled but not acked
/// come back only then.
const SETTLE: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------------------------------------
// 1. kill -9 of the relay mid-stream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_relay_mid_stream_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let t = Pipeline::new(nats_url(), None).await;
    let first = t.serve("first");
    t.wait_for_relay(&first).await;

    // 10,000 ProbeSent: 2 orgs × 500 probes × 10 events, committed 500 at a time: each
    // commit leaves the relay (256 rows per pass) a backlog of more than one pass. Many
    // short probe streams rather than few long ones: the consumer reloads the probe for
    // every event it observes.
    let plan = Plan::new(2, 500, 5, 100, 2);
    assert_eq!(plan.total(), 10_000);
    let writer = Writer::spawn(t.store.clone(), plan.clone(), Duration::ZERO);

    // Kill the relay once it has published part of the stream and has more than one pass
    // of rows to go (so they cannot all be published between this poll and the kill).
    let at_kill = t
        .wait_until("the relay to be partway through the stream", SETTLE, |p| {
            first.assert_alive();
            if p.published_sent() >= 1_000 && p.outbox_all > 256 {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        })
        .await;
    first.kill();
    let killed_at = started.elapsed();

    // Proof that it really was mid-stream: rows that were waiting when we decided to kill are
    // still unpublished now that the relay is dead, and some had already been published.
    let left_behind = t.outbox_rows_up_to(at_kill.outbox_max_id).await;
    let after_kill = t.progress().await;
    // Rows the dead relay published but had not yet deleted: the next relay republishes
    // them and JetStream must drop the copies. (How many depends on where the kill landed.)
    let republished = t.outbox_rows_in_stream().await;
    let unacked = t.consumer_ack_pending().await;
    eprintln!(
        "kill -9 at {killed_at:?}: {} ProbeSent published, {left_behind} outbox rows (≤ id {}) left behind, \
         {republished} of them already in the stream, {unacked} deliveries unacknowledged, writer at {}",
        after_kill.published_sent(),
        at_kill.outbox_max_id,
        writer.appended()
    );
    assert!(
        left_behind > 0,
        "the relay was killed with a backlog it had not published"
    );
    assert!(
        (1_000..10_000).contains(&after_kill.published_sent()),
        "the relay was killed partway: {after_kill:?}"
    );

    // A new process picks up where the dead one stopped, while the writer may still run.
    let second = t.serve("second");
    t.wait_for_relay(&second).await;
    let sent = writer.finish().await;
    assert_eq!(sent, 10_000);
    let settled = t.wait_until_settled(10_000, &[&second]).await;
    eprintln!("settled at {:?}", started.elapsed());

    t.assert_exactly_once(10_000, settled).await;
    eprintln!("kill -9 test done in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 2. NATS stopped and restarted mid-stream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_stopped_and_restarted_mid_stream_the_relay_resumes_and_loses_nothing() {
    let started = Instant::now();
    let nats = Arc::new(Mutex::new(NatsServer::start()));
    let url = nats.lock().unwrap().url();
    let t = Pipeline::new(url, Some(nats.clone())).await;
    let serve = t.serve("serve");
    t.wait_for_relay(&serve).await;

    // 4,000 ProbeSent in a steady trickle of bursts: 1 org × 200 probes × 20 events,
    // 100 events per transaction, a pause between transactions.
    let plan = Plan::new(1, 200, 5, 20, 4);
    assert_eq!(plan.total(), 4_000);
    let writer = Writer::spawn(t.store.clone(), plan.clone(), Duration::from_millis(200));

    // Stop NATS once part of the stream is published, while the relay has rows to publish.
    t.wait_until("the relay to publish part of the stream", SETTLE, |p| {
        serve.assert_alive();
        if p.published_sent() >= 500 && p.outbox_all > 0 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    assert!(
        writer.appended() < 3_000,
        "the writer is still going when NATS stops"
    );
    nats.lock().unwrap().stop();
    let stopped = Instant::now();
    let at_stop = t.progress().await;
    let appended_at_stop = writer.appended();

    // Keep appending while NATS is down, for longer than the relay's publish-ack timeout
    // (5 s), so that the relay's pass fails and it retries against a dead server.
    let during = t
        .wait_until(
            "1,000 more events appended while NATS is down",
            SETTLE,
            |p| {
                let n = writer.appended();
                if n >= appended_at_stop + 1_000 && stopped.elapsed() >= Duration::from_secs(6) {
                    Ok(p)
                } else {
                    Err(format!("{n} appended, {p:?}"))
                }
            },
        )
        .await;
    serve.assert_alive();
    let appended_during = during.events_sent - at_stop.events_sent;
    eprintln!(
        "NATS down at {:?} with {} of {appended_at_stop} ProbeSent published and {} outbox rows; \
         {appended_during} appended in the {:?} it was down; relay passes interrupted: {}",
        started.elapsed() - stopped.elapsed(),
        at_stop.published_sent(),
        at_stop.outbox_all,
        stopped.elapsed(),
        serve.log_lines_containing("outbox relay interrupted"),
    );
    assert!(
        during.outbox_sent >= appended_during,
        "nothing can be published while NATS is down: {during:?}, {appended_during} appended"
    );
    nats.lock().unwrap().restart();
    eprintln!("NATS back at {:?}", started.elapsed());

    let sent = writer.finish().await;
    assert_eq!(sent, 4_000);
    let settled = t.wait_until_settled(4_000, &[&serve]).await;
    eprintln!("settled at {:?}", started.elapsed());
    serve.assert_alive();

    t.assert_exactly_once(4_000, settled).await;
    eprintln!("NATS restart test done in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. a standby relay takes over
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_relay_process_takes_over_when_the_first_is_killed() {
    let started = Instant::now();
    let t = Pipeline::new(nats_url(), None).await;
    let a = t.serve("a");
    let b = t.serve("b");
    t.wait_for_relay(&a).await;
    // Both are up: each has a relay connection (the holder also has a LISTEN connection).
    coffer_testkit::eventually("both processes' relays to connect", SETTLE, || async {
        a.assert_alive();
        b.assert_alive();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'coffer_diag_relay' AND datname = $1",
        )
        .bind(&t.db.name)
        .fetch_one(&t.su)
        .await
        .unwrap();
        (n >= 3).then_some(())
    })
    .await;
    let first_holders = t.relay_holders().await;

    // Warm up: both processes serve traffic and everything is settled before the kill.
    let plan = Plan::new(1, 10, 1, 10, 1);
    assert_eq!(
        Writer::spawn(t.store.clone(), plan, Duration::ZERO)
            .finish()
            .await,
        10
    );
    t.wait_until_settled(10, &[&a, &b]).await;

    // Exactly one process holds the lock, and it stays that way while the other stands by.
    let holders = t.relay_holders().await;
    assert_eq!(
        holders.len(),
        1,
        "exactly one relay holds the lock: {holders:?}"
    );
    assert_eq!(
        holders, first_holders,
        "the holder keeps the lock while the other process retries it"
    );
    let (holder_backend, holder_port) = holders[0];
    let (holder, standby) = match (a.owns_port(holder_port), b.owns_port(holder_port)) {
        (true, false) => (&a, &b),
        (false, true) => (&b, &a),
        other => {
            panic!("the lock holder's port {holder_port} belongs to exactly one child: {other:?}")
        }
    };
    eprintln!(
        "{} holds the relay lock; {} stands by",
        holder.name, standby.name
    );

    holder.kill();
    let killed = Instant::now();
    let plan = Plan::new(2, 10, 5, 10, 1);
    let writer = Writer::spawn(t.store.clone(), plan, Duration::ZERO);
    let new_holder = coffer_testkit::eventually(
        "the standby to take the lock",
        Duration::from_secs(10),
        || async {
            let h = t.relay_holders().await;
            (h.len() == 1 && h[0].0 != holder_backend).then(|| h[0])
        },
    )
    .await;
    let took_lock = killed.elapsed();
    assert!(
        standby.owns_port(new_holder.1),
        "the new lock holder is the surviving process"
    );
    assert_eq!(writer.finish().await, 100);
    t.wait_until(
        "the survivor to publish the new events",
        Duration::from_secs(10),
        |p| {
            standby.assert_alive();
            if p.outbox_sent == 0 && p.events_sent == 110 {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
    )
    .await;
    let published = killed.elapsed();
    eprintln!(
        "standby took the lock {took_lock:?} after the kill; new events published after {published:?}"
    );

    let settled = t.wait_until_settled(110, &[standby]).await;
    t.assert_exactly_once(110, settled).await;
    eprintln!("takeover test done in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 4. publishes lost with the NATS connection
// ---------------------------------------------------------------------------------------------

/// NATS dies while the relay waits for the acks of a pass: those publishes are gone with the
/// connection, so each of their acks can only time out. The relay must give up on the pass
/// after one ack timeout and republish, not wait out every lost ack in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_killed_while_acks_are_outstanding_the_relay_resumes_within_one_ack_timeout() {
    let started = Instant::now();
    let nats = Arc::new(Mutex::new(NatsServer::start()));
    let url = nats.lock().unwrap().url();
    let port: u16 = url.rsplit_once(':').unwrap().1.parse().unwrap();
    let t = Pipeline::new(url, Some(nats.clone())).await;
    let serve = t.serve("serve");
    t.wait_for_relay(&serve).await;
    let warm_up = Plan::new(1, 10, 1, 10, 1);
    Writer::spawn(t.store.clone(), warm_up, Duration::ZERO)
        .finish()
        .await;
    t.wait_until_settled(10, &[&serve]).await;

    // Freeze NATS (SIGSTOP): the relay's next pass is sent but never acknowledged.
    let nats_pid = nix::unistd::Pid::from_raw(pid_listening_on(port) as i32);
    nix::sys::signal::kill(nats_pid, nix::sys::signal::Signal::SIGSTOP)
        .expect("SIGSTOP nats-server");
    // One event on each of 100 probes: a single wave of 100 publishes in flight.
    let plan = Plan::new(1, 100, 1, 100, 1);
    Writer::spawn(t.store.clone(), plan, Duration::ZERO)
        .finish()
        .await;
    let envelope_bytes: i64 =
        sqlx::query_scalar("SELECT sum(length(envelope))::bigint FROM coffer_diag.outbox")
            .fetch_one(&t.su)
            .await
            .unwrap();
    let unread = coffer_testkit::eventually(
        "the relay's pass to sit unread in the frozen server's socket",
        Duration::from_secs(10),
        || async {
            let n = unread_bytes_on(port);
            (n >= envelope_bytes as u64).then_some(n)
        },
    )
    .await;
    // Kill it with the pass unread (the kernel drops it), and bring NATS straight back.
    nats.lock().unwrap().stop();
    nats.lock().unwrap().restart();
    let back = Instant::now();
    eprintln!(
        "NATS killed with {unread} bytes unread ({envelope_bytes} bytes of envelopes in the pass), back at {:?}",
        started.elapsed()
    );

    // One ack timeout (5 s), the retry backoff and a reconnect: well within 30 s.
    t.wait_until(
        "the relay to republish the lost pass after NATS came back",
        Duration::from_secs(30),
        |p| {
            serve.assert_alive();
            if p.outbox_sent == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{p:?}; the relay logged {} 'publishes not acknowledged' warnings and {} \
                     interrupted passes",
                    serve.log_lines_containing("publishes not acknowledged"),
                    serve.log_lines_containing("outbox relay interrupted"),
                ))
            }
        },
    )
    .await;
    eprintln!(
        "lost pass republished {:?} after NATS came back",
        back.elapsed()
    );

    let settled = t.wait_until_settled(110, &[&serve]).await;
    t.assert_exactly_once(110, settled).await;
    eprintln!("lost-acks test done in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------------

/// A fresh database and bus, and the diagnostics event store the test appends through.
struct Pipeline {
    db: TestDb,
    su: PgPool,
    nats_url: String,
    js: jetstream::Context,
    bus: BusConfig,
    store: EventStore,
    logs: tempfile::TempDir,
    auth_prefix: String,
    // Keeps a private NATS server alive as long as the pipeline.
    _nats: Option<Arc<Mutex<NatsServer>>>,
}

impl Pipeline {
    async fn new(nats_url: String, nats: Option<Arc<Mutex<NatsServer>>>) -> Self {
        let db = TestDb::migrated(coffer_server::SCHEMAS).await;
        let su = db.superuser().await;
        let (_client, js, bus) = if nats.is_some() {
            bus_at(&nats_url).await
        } else {
            bus().await
        };
        let store = Diagnostics::new(db.service(diag::SERVICE).await)
            .store()
            .clone();
        // A diagnostics-only process verifies tokens with the key set enrollment publishes;
        // these tests make no API calls, but the process still waits for one at boot.
        let auth_prefix = coffer_testkit::unique("AUTH");
        let keys = coffer_auth::published::bucket(&js, &format!("{auth_prefix}_KEYS"))
            .await
            .expect("key-set bucket");
        let signer = coffer_auth::token::Signer::from_seed(&[7; 32]).expect("a 32-byte seed");
        coffer_auth::published::Publisher::new(keys)
            .jwks(&coffer_auth::token::Jwks::new([signer.jwk()]))
            .await
            .expect("publish a key set");
        Self {
            db,
            su,
            nats_url,
            js,
            bus,
            store,
            logs: tempfile::tempdir().expect("a temp dir for child logs"),
            auth_prefix,
            _nats: nats,
        }
    }

    /// Starts `coffer serve --target diag` against this pipeline's database and bus.
    fn serve(&self, name: &str) -> Serve {
        let log = self.logs.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("create child log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.args(["serve", "--target", "diag", "--listen", "127.0.0.1:0"]);
        // Only what this test sets configures the child.
        for (k, _) in std::env::vars() {
            if k.starts_with("COFFER_") && k.contains("__") {
                cmd.env_remove(k);
            }
        }
        cmd.env("COFFER_DATABASE__URL", &self.db.config.url)
            .env("COFFER_NATS__URL", &self.nats_url)
            .env("COFFER_NATS__STREAM", &self.bus.stream)
            .env("COFFER_NATS__SUBJECT_PREFIX", &self.bus.subject_prefix)
            .env("COFFER_NATS__DLQ_STREAM", &self.bus.dlq_stream)
            .env("COFFER_NATS__DLQ_PREFIX", &self.bus.dlq_prefix)
            .env("COFFER_GRPC__LISTEN", "127.0.0.1:0")
            .env(
                "COFFER_AUTH__KEYS_BUCKET",
                format!("{}_KEYS", self.auth_prefix),
            )
            .env(
                "COFFER_AUTH__REVOCATION_BUCKET",
                format!("{}_REVOKED", self.auth_prefix),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out);
        let child = cmd.spawn().expect("spawn coffer serve");
        Serve {
            name: name.to_owned(),
            child: Mutex::new(Some(child)),
            log,
        }
    }

    /// Waits until `serve` is up and some relay holds this database's lock.
    async fn wait_for_relay(&self, serve: &Serve) {
        coffer_testkit::eventually(
            &format!("{} to hold or wait for the relay lock", serve.name),
            SETTLE,
            || async {
                serve.assert_alive();
                (self.relay_holders().await.len() == 1).then_some(())
            },
        )
        .await;
    }

    /// (backend pid, client port) of each session holding a relay advisory lock in this
    /// database.
    async fn relay_holders(&self) -> Vec<(i32, u16)> {
        sqlx::query(
            "SELECT a.pid, a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE l.locktype = 'advisory' AND l.granted AND a.usename = 'coffer_diag_relay'
               AND a.datname = $1",
        )
        .bind(&self.db.name)
        .fetch_all(&self.su)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i32, _>(0), r.get::<i32, _>(1) as u16))
        .collect()
    }

    async fn progress(&self) -> Progress {
        let r = sqlx::query(
            "SELECT (SELECT count(*) FROM coffer_diag.events WHERE event_type = $1),
                    (SELECT count(*) FROM coffer_diag.events WHERE event_type = $2),
                    (SELECT count(*) FROM coffer_diag.outbox WHERE event_type = $1),
                    (SELECT count(*) FROM coffer_diag.outbox),
                    (SELECT coalesce(max(id), 0) FROM coffer_diag.outbox),
                    (SELECT count(*) FROM coffer_diag.processed_events WHERE consumer = $3)",
        )
        .bind(PROBE_SENT)
        .bind(PROBE_OBSERVED)
        .bind(diag::CONSUMER)
        .fetch_one(&self.su)
        .await
        .unwrap();
        Progress {
            events_sent: r.get(0),
            events_observed: r.get(1),
            outbox_sent: r.get(2),
            outbox_all: r.get(3),
            outbox_max_id: r.get(4),
            processed: r.get(5),
        }
    }

    async fn outbox_rows_up_to(&self, id: i64) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM coffer_diag.outbox WHERE id <= $1")
            .bind(id)
            .fetch_one(&self.su)
            .await
            .unwrap()
    }

    /// Outbox rows whose event is already in the stream.
    async fn outbox_rows_in_stream(&self) -> usize {
        let outbox: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM coffer_diag.outbox")
            .fetch_all(&self.su)
            .await
            .unwrap();
        let in_stream: HashSet<EventId> = self
            .stream_messages(&self.bus.stream)
            .await
            .into_iter()
            .map(|(_, e)| e.event_id)
            .collect();
        outbox
            .into_iter()
            .filter(|id| in_stream.contains(&EventId::from_uuid(*id)))
            .count()
    }

    /// Messages the durable consumer delivered that nobody acknowledged yet.
    async fn consumer_ack_pending(&self) -> usize {
        let stream = self
            .js
            .get_stream(&self.bus.stream)
            .await
            .expect("event stream exists");
        stream
            .consumer_info(diag::CONSUMER)
            .await
            .map_or(0, |c| c.num_ack_pending)
    }

    /// Polls [`Progress`] until `check` accepts it; the panic after `timeout` shows the last
    /// progress `check` reported.
    async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(Progress) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check(self.progress().await) {
                Ok(v) => return v,
                Err(last) => last,
            };
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until all `sent` ProbeSent events are observed, the outbox is empty, the stream
    /// holds twice as many messages, and the durable consumer has nothing pending or
    /// unacknowledged (so no redelivery can still add an effect).
    async fn wait_until_settled(&self, sent: i64, alive: &[&Serve]) -> Settled {
        let deadline = Instant::now() + SETTLE;
        let stream = self
            .js
            .get_stream(&self.bus.stream)
            .await
            .expect("event stream exists");
        let (started, mut reported) = (Instant::now(), Instant::now());
        loop {
            for s in alive {
                s.assert_alive();
            }
            let p = self.progress().await;
            let messages = stream.get_info().await.map(|i| i.state.messages).ok();
            let consumer = stream.consumer_info(diag::CONSUMER).await.ok();
            let (pending, ack_pending) = consumer.as_ref().map_or((u64::MAX, usize::MAX), |c| {
                (c.num_pending, c.num_ack_pending)
            });
            let done = p.events_sent == sent
                && p.processed >= sent
                && p.events_observed >= sent
                && p.outbox_all == 0
                && messages.is_some_and(|m| m >= 2 * sent as u64)
                && pending == 0
                && ack_pending == 0;
            if reported.elapsed() >= Duration::from_secs(10) {
                reported = Instant::now();
                eprintln!(
                    "settling for {:?}: {p:?}, stream messages {messages:?}, consumer pending {pending}, ack pending {ack_pending}",
                    started.elapsed()
                );
            }
            if done {
                return Settled {
                    deliveries: consumer.map_or(0, |c| c.delivered.consumer_sequence),
                };
            }
            assert!(
                Instant::now() < deadline,
                "pipeline did not settle within {SETTLE:?}: {p:?}, stream messages {messages:?}, \
                 consumer pending {pending}, ack pending {ack_pending}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end-to-end promise, checked from the stream, the events table and the ledger.
    async fn assert_exactly_once(&self, sent: usize, settled: Settled) {
        // The events table: every ProbeSent observed exactly once, nothing observed that
        // was never sent.
        let events = self.events().await;
        let sent_ids: HashSet<EventId> = events
            .iter()
            .filter(|e| e.event_type == PROBE_SENT)
            .map(|e| e.event_id)
            .collect();
        let mut observations: HashMap<EventId, usize> = HashMap::new();
        for e in events.iter().filter(|e| e.event_type == PROBE_OBSERVED) {
            match e.decode::<ProbeEvent>().expect("stored events decode") {
                ProbeEvent::ProbeObserved { probe_event_id, .. } => {
                    *observations.entry(probe_event_id).or_default() += 1
                }
                other => panic!("a {PROBE_OBSERVED} row decodes as {other:?}"),
            }
        }
        assert_eq!(sent_ids.len(), sent, "ProbeSent events appended");
        let lost: Vec<_> = sent_ids
            .iter()
            .filter(|id| !observations.contains_key(id))
            .collect();
        let duplicated: Vec<_> = observations.iter().filter(|(_, n)| **n > 1).collect();
        let unknown: Vec<_> = observations
            .keys()
            .filter(|id| !sent_ids.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} ProbeSent never observed, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(
            duplicated.is_empty(),
            "{} ProbeSent observed more than once, e.g. {:?}",
            duplicated.len(),
            &duplicated[..duplicated.len().min(5)]
        );
        assert!(
            unknown.is_empty(),
            "observations of events never sent: {unknown:?}"
        );

        // The idempotency ledger holds exactly the ProbeSent events.
        let processed: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT event_id FROM coffer_diag.processed_events WHERE consumer = $1",
        )
        .bind(diag::CONSUMER)
        .fetch_all(&self.su)
        .await
        .unwrap();
        assert_eq!(
            processed.len(),
            sent,
            "processed_events rows for {}",
            diag::CONSUMER
        );
        let processed: HashSet<EventId> = processed.into_iter().map(EventId::from_uuid).collect();
        assert_eq!(
            processed, sent_ids,
            "processed_events is exactly the ProbeSent events"
        );

        // The outbox is empty.
        assert_eq!(self.progress().await.outbox_all, 0, "outbox drained");

        // The stream: every event exactly once (Nats-Msg-Id = event id; JetStream drops
        // republished duplicates), and each aggregate's events in version order.
        let messages = self.stream_messages(&self.bus.stream).await;
        let all_ids: HashSet<EventId> = events.iter().map(|e| e.event_id).collect();
        let mut in_stream: HashSet<EventId> = HashSet::new();
        let mut duplicates = 0usize;
        let mut last_version: HashMap<AggregateId, u64> = HashMap::new();
        let mut out_of_order = Vec::new();
        for (msg_id, event) in &messages {
            assert_eq!(
                msg_id,
                &event.event_id.to_string(),
                "Nats-Msg-Id is the event id"
            );
            if !in_stream.insert(event.event_id) {
                duplicates += 1;
                continue;
            }
            let last = last_version.entry(event.aggregate_id).or_default();
            if event.version <= *last {
                out_of_order.push((event.aggregate_id, *last, event.version));
            }
            *last = (*last).max(event.version);
        }
        let missing = all_ids.difference(&in_stream).count();
        let foreign = in_stream.difference(&all_ids).count();
        eprintln!(
            "stream: {} messages, {} unique, {duplicates} duplicates; consumer: {} deliveries for {sent} events",
            messages.len(),
            in_stream.len(),
            settled.deliveries
        );
        assert_eq!(missing, 0, "events missing from the stream");
        assert_eq!(
            foreign, 0,
            "stream messages that are not events of this database"
        );
        assert_eq!(
            in_stream.len(),
            2 * sent,
            "ProbeSent and ProbeObserved events in the stream"
        );
        assert_eq!(
            duplicates, 0,
            "JetStream dropped every republished duplicate"
        );
        assert!(
            out_of_order.is_empty(),
            "{} events reached the stream before an earlier version of their aggregate, e.g. \
             (aggregate, version already seen, version) {:?}",
            out_of_order.len(),
            &out_of_order[..out_of_order.len().min(5)]
        );

        // Nothing was dead-lettered.
        let dlq = self
            .js
            .get_stream(&self.bus.dlq_stream)
            .await
            .expect("dead-letter stream exists")
            .get_info()
            .await
            .unwrap()
            .state
            .messages;
        assert_eq!(dlq, 0, "dead letters");
    }

    async fn events(&self) -> Vec<RecordedEvent> {
        let rows = sqlx::query(
            "SELECT event_id, org_id, aggregate_id, version, event_type, schema_version, payload
             FROM coffer_diag.events ORDER BY position",
        )
        .fetch_all(&self.su)
        .await
        .unwrap();
        rows.iter()
            .map(|r| RecordedEvent {
                event_id: EventId::from_uuid(r.get("event_id")),
                org_id: OrgId::from_uuid(r.get("org_id")),
                service: diag::SERVICE.0.to_owned(),
                aggregate_type: Probe::TYPE.to_owned(),
                aggregate_id: AggregateId::from_uuid(r.get("aggregate_id")),
                version: r.get::<i64, _>("version") as u64,
                event_type: r.get("event_type"),
                schema_version: r.get::<i32, _>("schema_version") as u32,
                occurred_at: chrono::DateTime::UNIX_EPOCH,
                actor: Actor::service("unused"),
                trace_context: BTreeMap::new(),
                payload: r.get("payload"),
            })
            .collect()
    }

    /// Every message in `stream`, in stream order: its `Nats-Msg-Id` and decoded envelope.
    async fn stream_messages(&self, stream: &str) -> Vec<(String, RecordedEvent)> {
        let stream = self.js.get_stream(stream).await.expect("stream exists");
        let n = stream.get_info().await.unwrap().state.messages as usize;
        let consumer = stream
            .create_consumer(pull::OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut messages = consumer
            .messages()
            .await
            .expect("ordered consumer messages");
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .expect("stream messages keep coming")
                .expect("the ordered consumer does not end")
                .expect("a stream message");
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .expect("every event message has a Nats-Msg-Id");
            out.push((
                id,
                RecordedEvent::decode_envelope(&m.payload).expect("a valid envelope"),
            ));
        }
        out
    }
}

/// Counts from the diagnostics schema, all in one snapshot.
#[derive(Debug, Clone, Copy)]
struct Progress {
    events_sent: i64,
    events_observed: i64,
    outbox_sent: i64,
    outbox_all: i64,
    outbox_max_id: i64,
    processed: i64,
}

impl Progress {
    /// ProbeSent events committed and no longer in the outbox: JetStream acknowledged them.
    fn published_sent(&self) -> i64 {
        self.events_sent - self.outbox_sent
    }
}

/// The durable consumer's state once the pipeline settled.
#[derive(Debug, Clone, Copy)]
struct Settled {
    /// Deliveries the consumer made, redeliveries included.
    deliveries: u64,
}

/// A `coffer serve` child process, SIGKILLed when dropped. On a failing test its log is
/// printed.
struct Serve {
    name: String,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl Serve {
    /// SIGKILL, and reap.
    fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Panics with the child's log if it has exited (or was killed).
    fn assert_alive(&self) {
        let mut guard = self.child.lock().unwrap();
        let status = match guard.as_mut() {
            None => Some("killed by the test".to_owned()),
            Some(c) => c.try_wait().unwrap().map(|s| s.to_string()),
        };
        drop(guard);
        if let Some(status) = status {
            panic!(
                "coffer serve `{}` is not running ({status}); log:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Whether one of the child's TCP sockets has local port `port`.
    fn owns_port(&self, port: u16) -> bool {
        let pid = match self.child.lock().unwrap().as_ref() {
            Some(c) => c.id(),
            None => return false,
        };
        let inodes = socket_inodes(pid);
        tcp_sockets()
            .iter()
            .any(|s| s.local_port == port && inodes.contains(&s.inode))
    }

    fn log_lines_containing(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let running = self.child.lock().map(|c| c.is_some()).unwrap_or(false);
        if std::thread::panicking() {
            eprintln!(
                "--- coffer serve `{}` log (tail) ---\n{}",
                self.name,
                self.log_tail()
            );
        }
        if running {
            self.kill();
        }
    }
}

/// Which ProbeSent events to append: `rounds` times, for each org, groups of `per_tx` probes
/// get `per_append` events each in one transaction.
#[derive(Debug, Clone)]
struct Plan {
    orgs: Vec<(OrgId, Vec<AggregateId>)>,
    per_append: usize,
    per_tx: usize,
    rounds: usize,
}

impl Plan {
    fn new(
        orgs: usize,
        probes_per_org: usize,
        per_append: usize,
        per_tx: usize,
        rounds: usize,
    ) -> Self {
        Self {
            orgs: (0..orgs)
                .map(|_| {
                    (
                        OrgId::new(),
                        (0..probes_per_org).map(|_| AggregateId::new()).collect(),
                    )
                })
                .collect(),
            per_append,
            per_tx,
            rounds,
        }
    }

    fn total(&self) -> usize {
        self.orgs.iter().map(|(_, p)| p.len()).sum::<usize>() * self.per_append * self.rounds
    }
}

/// Appends a [`Plan`] from the test process, alongside the child's consumer (which appends
/// ProbeObserved to the same probes: a version conflict is retried from a fresh load).
struct Writer {
    appended: Arc<AtomicUsize>,
    handle: JoinHandle<usize>,
}

impl Writer {
    fn spawn(store: EventStore, plan: Plan, pause: Duration) -> Self {
        let appended = Arc::new(AtomicUsize::new(0));
        let counter = appended.clone();
        let handle = tokio::spawn(async move {
            let actor = Actor::service("failures-test");
            for round in 0..plan.rounds {
                for (org, probes) in &plan.orgs {
                    for group in probes.chunks(plan.per_tx) {
                        append_group(&store, *org, group, plan.per_append, round, &actor).await;
                        counter.fetch_add(group.len() * plan.per_append, Ordering::SeqCst);
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            }
            counter.load(Ordering::SeqCst)
        });
        Self { appended, handle }
    }

    fn appended(&self) -> usize {
        self.appended.load(Ordering::SeqCst)
    }

    async fn finish(self) -> usize {
        self.handle.await.expect("the writer does not panic")
    }
}

async fn append_group(
    store: &EventStore,
    org: OrgId,
    probes: &[AggregateId],
    n: usize,
    round: usize,
    actor: &Actor,
) {
    let events: Vec<NewEvent> = (0..n)
        .map(|i| {
            NewEvent::from_domain(&ProbeEvent::ProbeSent {
                note: format!("round {round} #{i}"),
            })
        })
        .collect();
    for attempt in 1.. {
        let mut tx = store.db().begin_tenant(org).await.expect("begin");
        let mut conflict = false;
        for probe in probes {
            let (_, version) = store
                .load::<Probe>(&mut tx, *probe)
                .await
                .expect("load probe");
            match store
                .append(&mut tx, Probe::TYPE, *probe, version, actor, &events)
                .await
            {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => {
                    conflict = true;
                    break;
                }
                Err(e) => panic!("append ProbeSent: {e}"),
            }
        }
        if !conflict {
            tx.commit().await.expect("commit");
            return;
        }
        drop(tx);
        assert!(
            attempt < 50,
            "probe appends kept conflicting with the consumer"
        );
    }
}

/// One row of the kernel's TCP socket tables.
struct TcpSocket {
    local_port: u16,
    /// `01` established, `0A` listening.
    state: u8,
    /// Bytes received and not yet read by the socket's owner.
    rx_queue: u64,
    inode: String,
}

fn tcp_sockets() -> Vec<TcpSocket> {
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|table| {
            std::fs::read_to_string(format!("/proc/self/net/{table}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    let (_, port) = cols.get(1)?.rsplit_once(':')?;
                    let (_, rx) = cols.get(4)?.split_once(':')?;
                    Some(TcpSocket {
                        local_port: u16::from_str_radix(port, 16).ok()?,
                        state: u8::from_str_radix(cols.get(3)?, 16).ok()?,
                        rx_queue: u64::from_str_radix(rx, 16).ok()?,
                        inode: (*cols.get(9)?).to_owned(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Inodes of the sockets process `pid` has open.
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The process listening on 127.0.0.1:`port`.
fn pid_listening_on(port: u16) -> u32 {
    let listening: HashSet<String> = tcp_sockets()
        .into_iter()
        .filter(|s| s.local_port == port && s.state == 0x0A)
        .map(|s| s.inode)
        .collect();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| !socket_inodes(*pid).is_disjoint(&listening))
        .unwrap_or_else(|| panic!("no process listens on port {port}"))
}

/// Bytes that clients sent to the server on `port` and it has not read yet.
fn unread_bytes_on(port: u16) -> u64 {
    tcp_sockets()
        .iter()
        .filter(|s| s.local_port == port && s.state == 0x01)
        .map(|s| s.rx_queue)
        .sum()
}
