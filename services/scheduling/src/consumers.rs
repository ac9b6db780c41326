//! Consumers of other services' events.
//!
//! `scheduling-agents` keeps scheduling's own view of enrollment's agents (table `agents`), so
//! registering a database can refuse an agent that is unknown in the org or revoked. Services
//! are coupled only through events: the handler reads the envelope (org id, aggregate id = the
//! agent id, occurred_at, event type) and nothing of enrollment's code or payloads. Both
//! effects are idempotent, and the runner records the processed event in the same tenant
//! transaction, so redelivery is harmless.

use std::sync::Arc;

use coffer_db::TenantTx;
use coffer_eventstore::{BusConfig, ConsumerConfig, Delivery, Handler, HandlerError};

use crate::store;

/// Durable consumer name.
pub const AGENTS: &str = "scheduling-agents";

const ENROLLMENT: &str = "enrollment";
const AGENT_ENROLLED: &str = "AgentEnrolled";
const AGENT_REVOKED: &str = "AgentRevoked";

/// The consumer's subscription: enrollment's agent enrollments and revocations. A lost
/// enrollment would leave an agent unusable and a lost revocation would keep a revoked one in
/// use, so a database outage is waited out (retries every 30 s at most, for days) rather than
/// dead-lettered after the default five deliveries.
pub fn agents_config(bus: &BusConfig) -> ConsumerConfig {
    ConsumerConfig {
        max_deliver: 10_000,
        max_retry_delay: std::time::Duration::from_secs(30),
        ..ConsumerConfig::new(
            AGENTS,
            vec![
                bus.event_filter(ENROLLMENT, AGENT_ENROLLED),
                bus.event_filter(ENROLLMENT, AGENT_REVOKED),
            ],
        )
    }
}

/// Its handler.
pub fn agents_handler() -> Arc<dyn Handler> {
    Arc::new(FollowAgents)
}

struct FollowAgents;

#[async_trait::async_trait]
impl Handler for FollowAgents {
    async fn handle(&self, tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = &delivery.event;
        let agent = *event.aggregate_id.as_uuid();
        let applied = match (event.service.as_str(), event.event_type.as_str()) {
            (ENROLLMENT, AGENT_ENROLLED) => {
                store::agent_enrolled(tx, event.org_id, agent, event.occurred_at).await
            }
            (ENROLLMENT, AGENT_REVOKED) => {
                store::agent_revoked(tx, event.org_id, agent, event.occurred_at).await
            }
            (service, event_type) => {
                return Err(HandlerError::Permanent(format!(
                    "{AGENTS} received {service}.{event_type}"
                )));
            }
        };
        applied.map_err(|e| HandlerError::from(coffer_db::Error::from(e)))?;
        tracing::info!(org_id = %event.org_id, agent_id = %agent, event = %event.event_type, "followed an agent");
        Ok(())
    }
}
