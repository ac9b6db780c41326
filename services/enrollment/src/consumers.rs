//! Consumers of the enrollment service's own events.
//!
//! `enrollment-revocations` makes revocations and suspensions reach the revocation bucket
//! every service watches even if the process that committed them died before publishing
//! them itself (the application publishes right after commit for speed; this is the
//! guarantee, through the outbox).

use std::sync::Arc;

use coffer_auth::revocation::Revocations;
use coffer_db::TenantTx;
use coffer_eventstore::{BusConfig, ConsumerConfig, Delivery, DomainEvent, Handler, HandlerError};
use coffer_types::{ApiKeyId, UserId};

use crate::SERVICE;
use crate::domain::api_key::ApiKeyEvent;
use crate::domain::org::OrgEvent;
use crate::store;

/// Durable consumer name.
pub const REVOCATIONS: &str = "enrollment-revocations";

const EVENTS: &[&str] = &[
    "ApiKeyRevoked",
    "AgentRevoked",
    "MemberSuspended",
    "MemberReactivated",
    "MemberRemoved",
];

/// The consumer's subscription.
pub fn revocations_config(bus: &BusConfig) -> ConsumerConfig {
    ConsumerConfig::new(
        REVOCATIONS,
        EVENTS
            .iter()
            .map(|t| bus.event_filter(SERVICE.0, t))
            .collect(),
    )
}

/// Its handler.
pub fn revocations_handler(revocations: Revocations) -> Arc<dyn Handler> {
    Arc::new(PublishRevocations { revocations })
}

struct PublishRevocations {
    revocations: Revocations,
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string().into())
}

#[async_trait::async_trait]
impl Handler for PublishRevocations {
    async fn handle(&self, tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = &delivery.event;
        let org = event.org_id;
        if event.event_type == "ApiKeyRevoked" {
            event
                .decode::<ApiKeyEvent>()
                .map_err(|e| HandlerError::Permanent(e.to_string()))?;
            let key = ApiKeyId::from(*event.aggregate_id.as_uuid());
            return self
                .revocations
                .revoke_api_key(key)
                .await
                .map_err(transient);
        }
        if event.event_type == "AgentRevoked" {
            // Every certificate the agent was ever issued; expired ones cost nothing to list.
            let serials: Vec<String> =
                sqlx::query_scalar("SELECT serial FROM agent_certificates WHERE agent_id = $1")
                    .bind(event.aggregate_id.as_uuid())
                    .fetch_all(tx.conn())
                    .await
                    .map_err(transient)?;
            for serial in serials {
                let Some(serial) = crate::agents::cert_serial(&serial) else {
                    return Err(HandlerError::Permanent(format!(
                        "stored serial {serial} is not hex"
                    )));
                };
                self.revocations
                    .revoke_cert(org, &serial)
                    .await
                    .map_err(transient)?;
            }
            return Ok(());
        }
        let user: UserId = match event
            .decode::<OrgEvent>()
            .map_err(|e| HandlerError::Permanent(e.to_string()))?
        {
            OrgEvent::MemberSuspended { user, .. }
            | OrgEvent::MemberReactivated { user }
            | OrgEvent::MemberRemoved { user } => user,
            other => {
                return Err(HandlerError::Permanent(format!(
                    "{REVOCATIONS} does not handle {}",
                    other.event_type()
                )));
            }
        };
        // Publish the member's current state rather than the event's, so a redelivered old
        // suspension cannot undo a later reactivation. A removed member stays refused.
        let member = store::get_member(tx, user).await.map_err(transient)?;
        match member {
            Some(m) if !m.suspended => self.revocations.reactivate_user(org, user).await,
            _ => self.revocations.suspend_user(org, user).await,
        }
        .map_err(transient)
    }
}
