//! `audit-log`: appends every event on the stream, of every service and org, to its org's log.
//!
//! The runner records each event in `processed_events` in the same transaction as the append,
//! so a redelivered event appends once. Lanes are chosen by org: one org's events are appended
//! by one lane in stream order (the advisory lock would serialise them anyway), and orgs
//! proceed in parallel. An event that cannot be appended now is retried, for days; losing it
//! would leave a hole nobody could prove was there.

use std::sync::Arc;
use std::time::Duration;

use coffer_db::TenantTx;
use coffer_eventstore::{BusConfig, ConsumerConfig, Delivery, Handler, HandlerError, LaneKey};

/// Durable consumer name.
pub const AUDIT_LOG: &str = "audit-log";

/// The consumer's subscription: everything.
pub fn audit_log_config(bus: &BusConfig) -> ConsumerConfig {
    ConsumerConfig {
        max_deliver: 10_000,
        max_retry_delay: Duration::from_secs(30),
        lanes_by: LaneKey::Org,
        ..ConsumerConfig::new(AUDIT_LOG, vec![bus.all_filter()])
    }
}

/// Its handler.
pub fn audit_log_handler() -> Arc<dyn Handler> {
    Arc::new(AppendToLog)
}

struct AppendToLog;

#[async_trait::async_trait]
impl Handler for AppendToLog {
    async fn handle(&self, tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError> {
        match crate::log::append(tx, &delivery.event).await {
            Ok(appended) => {
                tracing::debug!(seq = appended.seq, "appended to the audit log");
                Ok(())
            }
            // Never dead-lettered: a log that skipped an event could not be trusted, so even
            // inconsistent stored data is retried (and logged) until an operator repairs it.
            Err(e) => Err(HandlerError::Transient(Box::new(e))),
        }
    }
}
