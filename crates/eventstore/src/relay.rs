//! The outbox relay: moves committed outbox rows to JetStream, in order, exactly one active
//! relay per service.

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use coffer_db::{DbConfig, ServiceName};
use coffer_types::OrgId;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};
use tokio::time::sleep;

use crate::Error;
use crate::bus::{BusConfig, headers};

/// Relay tuning.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Rows published per transaction.
    pub batch_size: i64,
    /// Fallback poll when no `NOTIFY` arrives (a lost notification costs at most this).
    #[serde(with = "humantime_serde")]
    pub idle_poll: Duration,
    /// How often a standby relay retries the lock.
    #[serde(with = "humantime_serde")]
    pub standby_poll: Duration,
    /// Pause after a failure (database or NATS down) before trying again.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            idle_poll: Duration::from_secs(1),
            standby_poll: Duration::from_millis(250),
            retry_backoff: Duration::from_millis(500),
        }
    }
}

/// Publishes a service's outbox to JetStream.
///
/// Only the holder of the service's advisory lock publishes; other relays wait on it and take
/// over when the holder's connection ends (the process died or lost the database). Rows are
/// read in id order with `FOR UPDATE SKIP LOCKED` and deleted once JetStream acknowledged
/// them; rows are never located by "position greater than the last one seen", so a row that
/// commits late is published late rather than skipped. A republish after a crash carries the
/// same `Nats-Msg-Id` (the event id) and is dropped by JetStream's duplicate window; consumers
/// are idempotent beyond it.
#[derive(Debug)]
pub struct Relay {
    db: DbConfig,
    service: ServiceName,
    js: jetstream::Context,
    bus: BusConfig,
    config: RelayConfig,
}

/// What one pass over the outbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pass {
    published: usize,
    failed: bool,
}

impl Relay {
    /// A relay for `service`'s outbox. It logs in as `coffer_<service>_relay`.
    pub fn new(
        db: DbConfig,
        service: ServiceName,
        js: jetstream::Context,
        bus: BusConfig,
        config: RelayConfig,
    ) -> Self {
        Self {
            db,
            service,
            js,
            bus,
            config,
        }
    }

    /// Runs until `shutdown` resolves: waits for the lock, then publishes. Failures are
    /// logged and retried; this only returns on shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                result = self.hold_and_publish() => {
                    if let Err(e) = result {
                        tracing::warn!(service = self.service.0, error = %e, "outbox relay interrupted; retrying");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = sleep(self.config.retry_backoff) => {}
            }
        }
    }

    async fn connect(&self) -> Result<PgConnection, Error> {
        let opts = self
            .db
            .role_options(&self.service.relay_role(), &self.service.schema())?;
        PgConnection::connect_with(&opts).await.map_err(|cause| {
            Error::Db(coffer_db::Error::Connect {
                target: self.db.target(),
                role: self.service.relay_role(),
                cause,
            })
        })
    }

    /// Acquires the lock (waiting as a standby while another relay holds it), then publishes
    /// until an error. The lock lives as long as `conn`.
    async fn hold_and_publish(&self) -> Result<(), Error> {
        let mut conn = self.connect().await?;
        let key = format!("coffer.relay.{}", self.service.schema());
        let mut announced = false;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1)::bigint)")
                .bind(&key)
                .fetch_one(&mut conn)
                .await
                .map_err(db)?;
            if got {
                break;
            }
            if !announced {
                tracing::info!(
                    service = self.service.0,
                    "another relay is active; standing by"
                );
                announced = true;
            }
            sleep(self.config.standby_poll).await;
        }
        tracing::info!(service = self.service.0, "outbox relay active");

        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(
                self.db
                    .role_options(&self.service.relay_role(), &self.service.schema())?,
            )
            .await
            .map_err(db)?;
        let mut listener = PgListener::connect_with(&listener_pool).await.map_err(db)?;
        listener
            .listen(&self.service.outbox_channel())
            .await
            .map_err(db)?;

        loop {
            let pass = self.publish_batch(&mut conn).await?;
            if pass.failed {
                return Err(Error::Nats(
                    "publishing stopped before every row was acknowledged".into(),
                ));
            }
            if pass.published as i64 == self.config.batch_size {
                continue;
            }
            tokio::select! {
                n = listener.recv() => {
                    n.map_err(db)?;
                    // One pass serves every commit that notified so far.
                    while listener.next_buffered().is_some() {}
                }
                () = sleep(self.config.idle_poll) => {}
            }
        }
    }

    /// Publishes up to one batch and deletes the acknowledged prefix, in one transaction.
    async fn publish_batch(&self, conn: &mut PgConnection) -> Result<Pass, Error> {
        let mut tx = conn.begin().await.map_err(db)?;
        let rows = sqlx::query(
            "SELECT id, org_id, event_id, aggregate_id, event_type, envelope, trace_context FROM outbox
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            tx.commit().await.map_err(db)?;
            return Ok(Pass::default());
        }

        // Waves: each aggregate has at most one unacknowledged message in flight. Within a
        // wave everything is pipelined; an aggregate's next event is sent only after
        // JetStream stored the previous one. Pipelining one aggregate's events instead would
        // let a connection loss drop an earlier event in flight while a later one, still in
        // the client's buffer, is stored on reconnect: the republished earlier event would
        // then land after it.
        let mut queues: Vec<(
            uuid::Uuid,
            std::collections::VecDeque<&sqlx::postgres::PgRow>,
        )> = Vec::new();
        let mut index: std::collections::HashMap<uuid::Uuid, usize> =
            std::collections::HashMap::new();
        for row in &rows {
            let aggregate: uuid::Uuid = row.try_get("aggregate_id").map_err(db)?;
            let slot = *index.entry(aggregate).or_insert_with(|| {
                queues.push((aggregate, std::collections::VecDeque::new()));
                queues.len() - 1
            });
            queues[slot].1.push_back(row);
        }
        let mut acked: Vec<i64> = Vec::with_capacity(rows.len());
        let mut failed = false;
        while !failed {
            let mut pending: Vec<(i64, PublishAckFuture)> = Vec::new();
            for (_, queue) in &mut queues {
                let Some(row) = queue.pop_front() else {
                    continue;
                };
                let id: i64 = row.try_get("id").map_err(db)?;
                match self
                    .js
                    .send_publish(self.subject(row)?, self.message(row)?)
                    .await
                {
                    Ok(ack) => pending.push((id, ack)),
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed");
                        failed = true;
                        break;
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            // Awaited together: an ack's timeout runs while it is awaited, so awaiting lost
            // acks one after another would wait one timeout per message.
            let (ids, acks): (Vec<i64>, Vec<PublishAckFuture>) = pending.into_iter().unzip();
            let results = futures::future::join_all(
                acks.into_iter().map(std::future::IntoFuture::into_future),
            )
            .await;
            // An unacknowledged row stays and is republished (same Nats-Msg-Id) on the next
            // pass; its aggregate's later events were not sent.
            let mut lost = 0usize;
            let mut first_error = None;
            for (id, result) in ids.into_iter().zip(results) {
                match result {
                    Ok(_) => acked.push(id),
                    Err(e) => {
                        lost += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                tracing::warn!(error = %e, lost, "publishes not acknowledged; will republish");
                failed = true;
            }
        }
        if !acked.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&acked)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Pass {
            published: acked.len(),
            failed,
        })
    }

    fn subject(&self, row: &sqlx::postgres::PgRow) -> Result<String, Error> {
        let org: uuid::Uuid = row.try_get("org_id").map_err(db)?;
        let event_type: String = row.try_get("event_type").map_err(db)?;
        Ok(self
            .bus
            .subject(OrgId::from_uuid(org), self.service.0, &event_type))
    }

    fn message(&self, row: &sqlx::postgres::PgRow) -> Result<PublishMessage, Error> {
        let event_id: uuid::Uuid = row.try_get("event_id").map_err(db)?;
        let org_id: uuid::Uuid = row.try_get("org_id").map_err(db)?;
        let aggregate_id: uuid::Uuid = row.try_get("aggregate_id").map_err(db)?;
        let event_type: String = row.try_get("event_type").map_err(db)?;
        let envelope: Vec<u8> = row.try_get("envelope").map_err(db)?;
        let trace: sqlx::types::Json<std::collections::BTreeMap<String, String>> =
            row.try_get("trace_context").map_err(db)?;
        let mut h = HeaderMap::new();
        h.insert(headers::EVENT_TYPE, event_type.as_str());
        h.insert(headers::ORG_ID, org_id.to_string().as_str());
        h.insert(headers::AGGREGATE_ID, aggregate_id.to_string().as_str());
        // The producer's trace context, so consumers continue the producer's trace.
        for (k, v) in &trace.0 {
            h.insert(k.as_str(), v.as_str());
        }
        Ok(PublishMessage::build()
            .payload(envelope.into())
            .headers(h)
            .message_id(event_id.to_string()))
    }
}

fn db(e: sqlx::Error) -> Error {
    Error::Db(e.into())
}
