//! Consumers of other services' events.
//!
//! `credentials-org-keys` gives every new org its age key pair as soon as enrollment commits
//! `OrgCreated`. Generation is idempotent (an org with a key is left alone), so redelivery and
//! replays are harmless; a KMS outage is transient and the event is retried until KMS returns.

use std::sync::Arc;
use std::time::Duration;

use coffer_db::TenantTx;
use coffer_eventstore::{BusConfig, ConsumerConfig, Delivery, Handler, HandlerError};
use coffer_types::{Actor, OrgId};

use crate::app::{Credentials, Error};

/// Durable consumer name.
pub const ORG_KEYS: &str = "credentials-org-keys";

/// The service whose events it follows and the event it reacts to. Services are coupled only
/// through events: this consumer reads the envelope's org id and nothing of enrollment's code.
const ENROLLMENT: &str = "enrollment";
const ORG_CREATED: &str = "OrgCreated";

/// The consumer's subscription. An org without its key cannot be backed up, so a KMS outage
/// is waited out rather than dead-lettered after the default five deliveries: retries every
/// 30 s at most, for days.
pub fn org_keys_config(bus: &BusConfig) -> ConsumerConfig {
    ConsumerConfig {
        max_deliver: 10_000,
        max_retry_delay: Duration::from_secs(30),
        ..ConsumerConfig::new(ORG_KEYS, vec![bus.event_filter(ENROLLMENT, ORG_CREATED)])
    }
}

/// Its handler.
pub fn org_keys_handler(app: Credentials) -> Arc<dyn Handler> {
    Arc::new(GenerateOrgKeys { app })
}

struct GenerateOrgKeys {
    app: Credentials,
}

#[async_trait::async_trait]
impl Handler for GenerateOrgKeys {
    async fn handle(&self, tx: &mut TenantTx, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = &delivery.event;
        if event.service != ENROLLMENT || event.event_type != ORG_CREATED {
            return Err(HandlerError::Permanent(format!(
                "{ORG_KEYS} received {}.{}",
                event.service, event.event_type
            )));
        }
        // The platform org administers Coffer and backs nothing up: it gets no key.
        if event.org_id == OrgId::PLATFORM {
            return Ok(());
        }
        match self
            .app
            .ensure_org_key(tx, event.org_id, &Actor::service(ORG_KEYS))
            .await
        {
            Ok(generated) => {
                if generated {
                    tracing::info!(org_id = %event.org_id, "generated the org's age key");
                }
                Ok(())
            }
            Err(Error::Store(e)) => Err(e.into()),
            Err(e @ (Error::Unavailable(_) | Error::Integrity(_))) => {
                Err(HandlerError::Transient(e.to_string().into()))
            }
            Err(e) => Err(HandlerError::Permanent(e.to_string())),
        }
    }
}
