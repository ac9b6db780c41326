//! Load generators: closed-loop writers (as fast as they can, within a budget), paced
//! writers (a fixed total rate, open loop), and alternating clients (an operation and its
//! reference, turn about, for latencies measured under the same conditions).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::report::{latency_histogram, micros};

/// How much a closed-loop run may do: it stops at whichever limit comes first.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    limit: u64,
    claimed: AtomicU64,
    /// Most operations any one writer may do.
    per_writer: u64,
}

impl Budget {
    /// At most `ops` operations, started within `duration` from now.
    pub fn new(ops: u64, duration: Duration) -> Self {
        Self {
            deadline: Instant::now() + duration,
            limit: ops,
            claimed: AtomicU64::new(0),
            per_writer: u64::MAX,
        }
    }

    /// The same budget, each writer stopping after `ops` operations of its own: for operations
    /// that use up something made for one writer beforehand (a job ticket names one agent).
    pub fn per_writer(mut self, ops: u64) -> Self {
        self.per_writer = ops;
        self
    }

    /// Takes one operation from the budget; `false` once it is spent or time is up.
    fn claim(&self) -> bool {
        Instant::now() < self.deadline && self.claimed.fetch_add(1, Ordering::Relaxed) < self.limit
    }
}

/// What a closed-loop run did.
#[derive(Debug)]
pub struct Run {
    /// Operations completed, all writers together.
    pub ops: u64,
    /// From the start until the last writer finished.
    pub elapsed: Duration,
    /// Latency of each operation, microseconds.
    pub latency: Histogram<u64>,
}

impl Run {
    /// Nothing yet, to [`absorb`](Self::absorb) rounds into.
    pub fn empty() -> Self {
        Self {
            ops: 0,
            elapsed: Duration::ZERO,
            latency: latency_histogram(),
        }
    }

    /// Adds `other`'s operations, time and latencies: for a case measured in several rounds.
    pub fn absorb(&mut self, other: Run) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latency
            .add(other.latency)
            .expect("every histogram has the same bounds");
    }
}

/// Splits `ops` into `rounds` near-equal, non-empty parts (fewer when `ops < rounds`).
pub fn rounds(ops: u64, rounds: u64) -> impl Iterator<Item = u64> {
    let rounds = rounds.clamp(1, ops.max(1));
    (0..rounds).map(move |r| ops / rounds + u64::from(r < ops % rounds))
}

/// Runs `writers` tasks, each calling its own operation back to back until `budget` is spent.
///
/// `make_writer(i)` builds writer `i`'s operation: a closure that owns the writer's state and
/// returns a future owning what it needs. The first failing operation fails the run.
pub async fn closed_loop<M, F, Fut>(
    writers: usize,
    budget: Budget,
    mut make_writer: M,
) -> anyhow::Result<Run>
where
    M: FnMut(usize) -> F,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let budget = Arc::new(budget);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..writers {
        let mut op = make_writer(i);
        let budget = budget.clone();
        tasks.spawn(async move {
            let mut latency = latency_histogram();
            let mut ops = 0u64;
            while ops < budget.per_writer && budget.claim() {
                let t = Instant::now();
                op().await?;
                latency.saturating_record(micros(t.elapsed()));
                ops += 1;
            }
            anyhow::Ok((ops, latency))
        });
    }
    let mut run = Run::empty();
    while let Some(joined) = tasks.join_next().await {
        let (ops, latency) = joined.context("join a writer task")??;
        run.ops += ops;
        run.latency
            .add(latency)
            .expect("every histogram has the same bounds");
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

/// Latencies of an operation and of its reference, measured turn about.
#[derive(Debug)]
pub struct Alternated {
    /// Pairs completed, all clients together.
    pub pairs: u64,
    /// Latency of each measured operation, microseconds.
    pub measured: Histogram<u64>,
    /// Latency of each reference operation, microseconds.
    pub reference: Histogram<u64>,
}

/// Runs `clients` tasks, each doing `pairs / clients` (rounded up) pairs of its measured
/// operation and its reference operation back to back, the order swapped every pair so neither
/// always runs on the other's warm caches. Whatever disturbs one half of a pair (other work on
/// the host, a checkpoint, a GC in the database) disturbs the other as much, so the ratio of
/// the two is steadier than either figure.
///
/// `make_client(i)` builds client `i`'s two operations, as for [`closed_loop`]. The first
/// failing operation fails the run.
pub async fn alternating<M, A, FutA, B, FutB>(
    clients: usize,
    pairs: u64,
    mut make_client: M,
) -> anyhow::Result<Alternated>
where
    M: FnMut(usize) -> (A, B),
    A: FnMut() -> FutA + Send + 'static,
    FutA: Future<Output = anyhow::Result<()>> + Send + 'static,
    B: FnMut() -> FutB + Send + 'static,
    FutB: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(clients > 0, "alternating needs clients");
    let per_client = pairs.div_ceil(clients as u64);
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let (mut measured_op, mut reference_op) = make_client(i);
        tasks.spawn(async move {
            let (mut measured, mut reference) = (latency_histogram(), latency_histogram());
            for n in 0..per_client {
                let swap = n % 2 == 1;
                for turn in [swap, !swap] {
                    let t = Instant::now();
                    if turn {
                        measured_op().await?;
                        measured.saturating_record(micros(t.elapsed()));
                    } else {
                        reference_op().await?;
                        reference.saturating_record(micros(t.elapsed()));
                    }
                }
            }
            anyhow::Ok((per_client, measured, reference))
        });
    }
    let mut run = Alternated {
        pairs: 0,
        measured: latency_histogram(),
        reference: latency_histogram(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (pairs, measured, reference) = joined.context("join an alternating client")??;
        run.pairs += pairs;
        run.measured
            .add(measured)
            .expect("every histogram has the same bounds");
        run.reference
            .add(reference)
            .expect("every histogram has the same bounds");
    }
    Ok(run)
}

/// A paced run: `rate` operations per second in total, spread evenly over `writers` tasks,
/// for `warmup` and then `measure`.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Target operations per second, all writers together.
    pub rate: f64,
    /// Writer tasks; several, so one slow operation does not hold up the schedule.
    pub writers: usize,
    /// Paced but not measured.
    pub warmup: Duration,
    /// Paced and measured.
    pub measure: Duration,
    /// How far behind schedule writers may fall before they give up (the run then did not
    /// sustain the rate, and stopping keeps the run bounded).
    pub give_up_after: Duration,
}

/// Which window an operation was scheduled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the measurement window.
    Warmup,
    /// Inside it.
    Measured,
}

/// What a paced run did.
#[derive(Debug)]
pub struct PacedRun {
    /// Operations scheduled in the measurement window.
    pub scheduled: u64,
    /// Operations completed that were scheduled in the warm-up.
    pub warmup_ops: u64,
    /// Operations completed that were scheduled in the measurement window.
    pub measured_ops: u64,
    /// From the start of the measurement window until its last operation completed.
    pub measured_elapsed: Duration,
    /// How late each measured operation started against its schedule, microseconds.
    pub slip: Histogram<u64>,
    /// Latency of each measured operation, microseconds.
    pub latency: Histogram<u64>,
    /// Some writer fell more than [`Pacing::give_up_after`] behind and stopped.
    pub gave_up: bool,
}

impl PacedRun {
    fn empty() -> Self {
        Self {
            scheduled: 0,
            warmup_ops: 0,
            measured_ops: 0,
            measured_elapsed: Duration::ZERO,
            slip: latency_histogram(),
            latency: latency_histogram(),
            gave_up: false,
        }
    }

    /// Measured operations per second.
    pub fn achieved_rate(&self) -> f64 {
        crate::report::per_second(self.measured_ops, self.measured_elapsed)
    }

    /// Every scheduled operation ran, no writer gave up, and the achieved rate is within 2 %
    /// of `target`.
    pub fn sustained(&self, target: f64) -> bool {
        !self.gave_up
            && self.measured_ops == self.scheduled
            && self.achieved_rate() >= 0.98 * target
    }
}

/// Runs `pacing.writers` tasks on a shared schedule of `pacing.rate` operations per second.
/// A writer that falls behind catches up in a burst (open loop: the schedule does not wait for
/// the system), which is what a steady stream of requests does to a service.
pub async fn paced<M, F, Fut>(pacing: Pacing, mut make_writer: M) -> anyhow::Result<PacedRun>
where
    M: FnMut(usize) -> F,
    F: FnMut(Phase) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(
        pacing.rate > 0.0 && pacing.writers > 0,
        "pacing needs a rate and writers"
    );
    let start = Instant::now() + Duration::from_millis(10);
    let measure_start = start + pacing.warmup;
    let end = measure_start + pacing.measure;
    let tick = Duration::from_secs_f64(1.0 / pacing.rate);
    let mut tasks = JoinSet::new();
    for i in 0..pacing.writers {
        let mut op = make_writer(i);
        let first = start + tick * i as u32;
        let period = tick * pacing.writers as u32;
        tasks.spawn(async move {
            let mut run = PacedRun::empty();
            let mut interval = tokio::time::interval_at(first, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                let due = interval.tick().await;
                if due >= end {
                    break;
                }
                let now = Instant::now();
                if now.duration_since(due) > pacing.give_up_after {
                    run.gave_up = true;
                    // Count what this writer will not do, so `scheduled` stays the schedule.
                    let from = due.max(measure_start);
                    let left = end.duration_since(from).as_secs_f64() / period.as_secs_f64();
                    run.scheduled += left.ceil() as u64;
                    break;
                }
                let phase = if due >= measure_start {
                    run.scheduled += 1;
                    Phase::Measured
                } else {
                    Phase::Warmup
                };
                op(phase).await?;
                match phase {
                    Phase::Warmup => run.warmup_ops += 1,
                    Phase::Measured => {
                        let done = Instant::now();
                        run.slip.saturating_record(micros(now.duration_since(due)));
                        run.latency
                            .saturating_record(micros(done.duration_since(now)));
                        run.measured_ops += 1;
                        run.measured_elapsed =
                            run.measured_elapsed.max(done.duration_since(measure_start));
                    }
                }
            }
            anyhow::Ok(run)
        });
    }
    let mut total = PacedRun::empty();
    while let Some(joined) = tasks.join_next().await {
        let run = joined.context("join a paced writer task")??;
        total.scheduled += run.scheduled;
        total.warmup_ops += run.warmup_ops;
        total.measured_ops += run.measured_ops;
        total.measured_elapsed = total.measured_elapsed.max(run.measured_elapsed);
        total
            .slip
            .add(run.slip)
            .expect("every histogram has the same bounds");
        total
            .latency
            .add(run.latency)
            .expect("every histogram has the same bounds");
        total.gave_up |= run.gave_up;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_stops_at_its_own_limit_and_the_others_go_on() {
        let budget = Budget::new(100, Duration::from_secs(60)).per_writer(3);
        let run = closed_loop(4, budget, |_| || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(run.ops, 12);
        let budget = Budget::new(5, Duration::from_secs(60)).per_writer(3);
        let run = closed_loop(4, budget, |_| || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(run.ops, 5);
    }

    #[test]
    fn rounds_split_every_operation_once() {
        assert_eq!(rounds(10, 4).collect::<Vec<_>>(), [3, 3, 2, 2]);
        assert_eq!(rounds(2, 4).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(rounds(5, 0).collect::<Vec<_>>(), [5]);
    }
}
