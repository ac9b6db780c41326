//! The consumer runner: durable pull consumer, explicit ack, bounded redelivery, dead letters,
//! and idempotent effects.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use coffer_db::{Database, TenantTx};
use futures::StreamExt;
use tracing::Instrument;

use crate::Error;
use crate::bus::{BusConfig, headers};
use crate::event::RecordedEvent;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Durable consumer name; also the key in `processed_events` and the dead-letter subject.
    pub name: String,
    /// Subjects to receive (see [`BusConfig::event_filter`]).
    pub filter_subjects: Vec<String>,
    /// Deliveries before a failing message is dead-lettered.
    pub max_deliver: i64,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// First redelivery delay after a transient failure; doubles per attempt.
    pub retry_delay: Duration,
    /// The longest redelivery delay: doubling stops here.
    pub max_retry_delay: Duration,
    /// Messages handled concurrently. Events of one aggregate (or one org, see
    /// [`ConsumerConfig::lanes_by`]) always share a lane, so they are handled in stream order;
    /// the others proceed in parallel.
    pub lanes: usize,
    /// What keeps messages in one lane.
    pub lanes_by: LaneKey,
}

/// What decides a message's lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneKey {
    /// Its aggregate: one aggregate's events in order, aggregates in parallel.
    Aggregate,
    /// Its org: one org's events in stream order, orgs in parallel. For handlers that
    /// serialise per org anyway (the audit log), so lanes do not queue behind one another.
    Org,
}

impl ConsumerConfig {
    /// Defaults: 5 deliveries, 30 s ack wait, 1 s first retry delay, at most 60 s between
    /// retries.
    pub fn new(name: impl Into<String>, filter_subjects: Vec<String>) -> Self {
        Self {
            name: name.into(),
            filter_subjects,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(60),
            lanes: 8,
            lanes_by: LaneKey::Aggregate,
        }
    }
}

/// One event as a handler receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event.
    pub event: RecordedEvent,
    /// Its sequence in the event stream.
    pub stream_sequence: u64,
    /// How many times it has been delivered, this one included.
    pub delivered: i64,
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Retrying cannot help (unknown event type, payload that does not decode, a rule the
    /// event breaks): dead-letter it now.
    #[error("{0}")]
    Permanent(String),
    /// Might succeed later (database busy, a dependency down): redeliver with backoff, then
    /// dead-letter after the last delivery.
    #[error(transparent)]
    Transient(Box<dyn std::error::Error + Send + Sync>),
    /// An aggregate the handler appended to changed concurrently: the runner retries at
    /// once in a fresh transaction (a few times) before it counts as a failed delivery, so
    /// contention alone never dead-letters an event.
    #[error(transparent)]
    Conflict(Error),
}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        match e {
            Error::Decode { .. } | Error::WrongAggregateType { .. } => {
                HandlerError::Permanent(e.to_string())
            }
            Error::Conflict { .. } => HandlerError::Conflict(e),
            other => HandlerError::Transient(Box::new(other)),
        }
    }
}

/// Immediate retries of a handler that hit a version conflict.
const CONFLICT_RETRIES: usize = 5;

impl From<coffer_db::Error> for HandlerError {
    fn from(e: coffer_db::Error) -> Self {
        HandlerError::Transient(Box::new(e))
    }
}

/// Applies events. The runner opens a transaction scoped to the event's org, records the
/// event in `processed_events`, calls the handler, and commits both together: an effect is
/// applied exactly once however often the event is delivered.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies `delivery` inside `tx`. Do not commit `tx`; return `Ok` to have it committed.
    async fn handle(&self, tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError>;
}

/// A running consumer of the event stream.
pub struct Consumer {
    db: Database,
    js: jetstream::Context,
    bus: BusConfig,
    config: ConsumerConfig,
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish()
    }
}

enum Outcome {
    Done,
    AlreadyProcessed,
    Retry(String),
    DeadLetter(String),
}

impl Consumer {
    /// A consumer writing its effects through `db`.
    pub fn new(
        db: Database,
        js: jetstream::Context,
        bus: BusConfig,
        config: ConsumerConfig,
        handler: Arc<dyn Handler>,
    ) -> Self {
        Self {
            db,
            js,
            bus,
            config,
            handler,
        }
    }

    /// Creates the durable consumer if missing and processes messages until `shutdown`.
    /// Connection problems are retried; this returns early only if the consumer cannot be
    /// created.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            let result = tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = this.consume() => r,
            };
            if let Err(e) = result {
                tracing::warn!(consumer = %this.config.name, error = %e, "consumer interrupted; retrying");
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn consume(self: &Arc<Self>) -> Result<(), Error> {
        let stream = self
            .js
            .get_stream(&self.bus.stream)
            .await
            .map_err(Error::nats)?;
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &self.config.name,
                pull::Config {
                    durable_name: Some(self.config.name.clone()),
                    filter_subjects: self.config.filter_subjects.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    // The runner dead-letters at this count itself; the server's limit is a
                    // backstop one higher so the last delivery is always seen by the runner.
                    max_deliver: self.config.max_deliver + 1,
                    ..Default::default()
                },
            )
            .await
            .map_err(Error::nats)?;
        let mut messages = consumer.messages().await.map_err(Error::nats)?;

        // Lanes: one task each, fed in stream order; a message's lane is chosen by its
        // aggregate so one aggregate's events are never handled concurrently or reordered.
        let lanes = self.config.lanes.max(1);
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..lanes {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<jetstream::Message>(32);
            senders.push(tx);
            let this = Arc::clone(self);
            workers.spawn(async move {
                while let Some(msg) = rx.recv().await {
                    this.process(&msg).await?;
                }
                Ok::<(), Error>(())
            });
        }
        loop {
            tokio::select! {
                next = messages.next() => {
                    let Some(msg) = next else { return Ok(()) };
                    let msg = msg.map_err(Error::nats)?;
                    let lane = lane_of(&msg, self.config.lanes_by, lanes);
                    if senders[lane].send(msg).await.is_err() {
                        break;
                    }
                }
                Some(done) = workers.join_next() => {
                    // A lane stops only on a message it could not settle.
                    return done.map_err(Error::nats)?;
                }
            }
        }
        match workers.join_next().await {
            Some(done) => done.map_err(Error::nats)?,
            None => Ok(()),
        }
    }

    /// Handles one message and settles it: ack, delayed nak, or dead letter then ack.
    /// Returns an error only when the message could not be settled (it will be redelivered).
    async fn process(&self, msg: &jetstream::Message) -> Result<(), Error> {
        let info = msg.info().map_err(Error::nats)?;
        let (stream_sequence, delivered) = (info.stream_sequence, info.delivered);
        let span = tracing::info_span!(
            "consumer.handle",
            consumer = %self.config.name,
            subject = %msg.subject,
            stream_sequence,
            delivered,
            event_type = tracing::field::Empty,
            org_id = tracing::field::Empty,
        );
        if let Some(h) = &msg.headers {
            let carried = ["traceparent", "tracestate"]
                .into_iter()
                .filter_map(|k| h.get(k).map(|v| (k.to_owned(), v.as_str().to_owned())))
                .collect();
            coffer_telemetry::set_parent_from_headers(&span, &carried);
        }
        let outcome = self
            .apply(msg, stream_sequence, delivered)
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        match outcome {
            Outcome::Done | Outcome::AlreadyProcessed => msg.ack().await.map_err(Error::nats),
            Outcome::Retry(reason) if delivered < self.config.max_deliver => {
                let delay = (self.config.retry_delay
                    * 2u32.saturating_pow((delivered - 1).clamp(0, 10) as u32))
                .min(self.config.max_retry_delay);
                tracing::warn!(%reason, ?delay, "handler failed; will redeliver");
                msg.ack_with(AckKind::Nak(Some(delay)))
                    .await
                    .map_err(Error::nats)
            }
            Outcome::Retry(reason) | Outcome::DeadLetter(reason) => {
                tracing::error!(%reason, "dead-lettering event");
                self.dead_letter(msg, &reason, stream_sequence, delivered)
                    .await?;
                msg.ack().await.map_err(Error::nats)
            }
        }
    }

    async fn apply(
        &self,
        msg: &jetstream::Message,
        stream_sequence: u64,
        delivered: i64,
    ) -> Outcome {
        let event = match RecordedEvent::decode_envelope(&msg.payload) {
            Ok(e) => e,
            Err(e) => return Outcome::DeadLetter(e.to_string()),
        };
        let span = tracing::Span::current();
        span.record("event_type", event.event_type.as_str());
        let delivery = Delivery {
            event,
            stream_sequence,
            delivered,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            return match self.apply_once(&delivery).await {
                Ok(true) => Outcome::Done,
                Ok(false) => Outcome::AlreadyProcessed,
                Err(HandlerError::Conflict(_)) if attempt < CONFLICT_RETRIES => continue,
                Err(HandlerError::Permanent(reason)) => Outcome::DeadLetter(reason),
                Err(e @ (HandlerError::Transient(_) | HandlerError::Conflict(_))) => {
                    Outcome::Retry(e.to_string())
                }
            };
        }
    }

    /// Records the event as processed and applies it, atomically. `Ok(false)` when an
    /// earlier delivery already did.
    async fn apply_once(&self, delivery: &Delivery) -> Result<bool, HandlerError> {
        let event = &delivery.event;
        let mut tx = self.db.begin_tenant(event.org_id).await?;
        let fresh = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, org_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.config.name)
        .bind(event.event_id.as_uuid())
        .bind(event.org_id.as_uuid())
        .execute(tx.conn())
        .await
        .map_err(coffer_db::Error::from)?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        self.handler.handle(&mut tx, delivery).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Publishes the original message, unchanged, to the dead-letter subject with the reason,
    /// and waits for JetStream to store it: only then may the original be acked.
    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        reason: &str,
        stream_sequence: u64,
        delivered: i64,
    ) -> Result<(), Error> {
        let mut h = HeaderMap::new();
        h.insert(headers::DLQ_REASON, header_value(reason, 1024).as_str());
        h.insert(headers::DLQ_CONSUMER, self.config.name.as_str());
        h.insert(headers::DLQ_SUBJECT, msg.subject.as_str());
        h.insert(headers::DLQ_SEQUENCE, stream_sequence.to_string().as_str());
        h.insert(headers::DLQ_DELIVERED, delivered.to_string().as_str());
        h.insert(
            "Nats-Msg-Id",
            format!("dlq:{}:{stream_sequence}", self.config.name).as_str(),
        );
        if let Some(orig) = &msg.headers {
            for key in [
                "traceparent",
                "tracestate",
                headers::EVENT_TYPE,
                headers::ORG_ID,
            ] {
                if let Some(v) = orig.get(key) {
                    h.insert(key, v.as_str());
                }
            }
        }
        self.js
            .publish_with_headers(
                self.bus.dlq_subject(&self.config.name),
                h,
                msg.payload.clone(),
            )
            .await
            .map_err(Error::nats)?
            .await
            .map_err(Error::nats)?;
        Ok(())
    }
}

/// The lane for a message: a hash of its aggregate or org id (headers set by the relay), so
/// one aggregate's (or org's) events always share a lane.
fn lane_of(msg: &jetstream::Message, by: LaneKey, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let header = match by {
        LaneKey::Aggregate => headers::AGGREGATE_ID,
        LaneKey::Org => headers::ORG_ID,
    };
    let Some(key) = msg.headers.as_ref().and_then(|h| h.get(header)) else {
        return 0;
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.as_str().hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// A header value: one line, at most `max` bytes.
fn header_value(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace(['\r', '\n'], " ")
}
