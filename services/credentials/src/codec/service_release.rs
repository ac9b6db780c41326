//! Protobuf encoding of the ServiceRelease event (`coffer.events.v1.CredentialReleasedToService`).

use coffer_eventstore::{DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use prost::Message;

use crate::domain::service_release::{ServiceReleaseEvent, ServiceReleaseRecord};

impl DomainEvent for ServiceReleaseEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ServiceReleaseEvent::CredentialReleasedToService(_) => "CredentialReleasedToService",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            ServiceReleaseEvent::CredentialReleasedToService(r) => {
                pb::CredentialReleasedToService {
                    vault_ref: r.vault_ref.to_string(),
                    version: r.version,
                    service: r.service.clone(),
                    purpose: r.purpose.clone(),
                    destination_id: r.destination_id.to_string(),
                }
                .encode_to_vec()
            }
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        let bad = |what: &dyn std::fmt::Display| DecodeError::malformed(t, what);
        match t {
            "CredentialReleasedToService" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::CredentialReleasedToService::decode(payload).map_err(|e| bad(&e))?;
                if m.version == 0 || m.service.is_empty() || m.purpose.is_empty() {
                    return Err(bad(&"version, service and purpose are required"));
                }
                Ok(ServiceReleaseEvent::CredentialReleasedToService(
                    ServiceReleaseRecord {
                        vault_ref: m.vault_ref.parse().map_err(|e| bad(&e))?,
                        version: m.version,
                        service: m.service,
                        purpose: m.purpose,
                        destination_id: m.destination_id.parse().map_err(|e| bad(&e))?,
                    },
                ))
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_types::{OrgId, VaultRef};

    use super::*;

    #[test]
    fn the_event_round_trips_and_bad_payloads_are_refused() {
        let event = ServiceReleaseEvent::CredentialReleasedToService(ServiceReleaseRecord {
            vault_ref: VaultRef {
                org: OrgId::new(),
                credential: uuid::Uuid::now_v7(),
            },
            version: 2,
            service: "scheduling".into(),
            purpose: "retention".into(),
            destination_id: uuid::Uuid::now_v7(),
        });
        let back = ServiceReleaseEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
        assert_eq!(back, event);
        assert!(matches!(
            ServiceReleaseEvent::decode("CredentialReleasedToService", 1, &[]),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            ServiceReleaseEvent::decode("CredentialReleasedToService", 2, &[]),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
    }
}
