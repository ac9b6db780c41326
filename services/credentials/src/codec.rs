//! Protobuf encoding of the credentials events (`coffer.events.v1`), with the validation a
//! stored or received payload needs on the way back in.

mod service_release;

use coffer_eventstore::{DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use prost::Message;

use crate::domain::credential::{CredentialEvent, Purpose, ValueVersion};
use crate::domain::org_key::OrgKeyEvent;
use crate::domain::release::{JobReleaseEvent, Released};
use crate::domain::rotation::RotationEvent;

fn bad(event_type: &str, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::malformed(event_type, what)
}

impl DomainEvent for CredentialEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CredentialEvent::CredentialCreated { .. } => "CredentialCreated",
            CredentialEvent::CredentialValueSet(_) => "CredentialValueSet",
            CredentialEvent::CredentialDeleted { .. } => "CredentialDeleted",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            CredentialEvent::CredentialCreated { name, purpose } => pb::CredentialCreated {
                name: name.clone(),
                purpose: purpose.as_str().to_owned(),
            }
            .encode_to_vec(),
            CredentialEvent::CredentialValueSet(v) => pb::CredentialValueSet {
                version: v.version,
                value_bytes: v.value_bytes,
                kms_key_id: v.kms_key_id.clone(),
            }
            .encode_to_vec(),
            CredentialEvent::CredentialDeleted { reason } => pb::CredentialDeleted {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match t {
            "CredentialCreated" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::CredentialCreated::decode(payload).map_err(|e| bad(t, e))?;
                Ok(CredentialEvent::CredentialCreated {
                    name: m.name,
                    purpose: Purpose::parse(&m.purpose).map_err(|e| bad(t, e))?,
                })
            }
            "CredentialValueSet" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::CredentialValueSet::decode(payload).map_err(|e| bad(t, e))?;
                if m.version == 0 || m.kms_key_id.is_empty() {
                    return Err(bad(t, "version and kms_key_id are required"));
                }
                Ok(CredentialEvent::CredentialValueSet(ValueVersion {
                    version: m.version,
                    value_bytes: m.value_bytes,
                    kms_key_id: m.kms_key_id,
                }))
            }
            "CredentialDeleted" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::CredentialDeleted::decode(payload).map_err(|e| bad(t, e))?;
                Ok(CredentialEvent::CredentialDeleted { reason: m.reason })
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

impl DomainEvent for OrgKeyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrgKeyEvent::OrgKeyGenerated { .. } => "OrgKeyGenerated",
            OrgKeyEvent::RecoveryKeyExported { .. } => "RecoveryKeyExported",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            OrgKeyEvent::OrgKeyGenerated {
                recipient,
                kms_key_id,
            } => pb::OrgKeyGenerated {
                recipient: recipient.clone(),
                kms_key_id: kms_key_id.clone(),
            }
            .encode_to_vec(),
            OrgKeyEvent::RecoveryKeyExported { reason } => pb::RecoveryKeyExported {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match t {
            "OrgKeyGenerated" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::OrgKeyGenerated::decode(payload).map_err(|e| bad(t, e))?;
                if !m.recipient.starts_with("age1") || m.kms_key_id.is_empty() {
                    return Err(bad(t, "recipient must be age1… and kms_key_id is required"));
                }
                Ok(OrgKeyEvent::OrgKeyGenerated {
                    recipient: m.recipient,
                    kms_key_id: m.kms_key_id,
                })
            }
            "RecoveryKeyExported" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::RecoveryKeyExported::decode(payload).map_err(|e| bad(t, e))?;
                Ok(OrgKeyEvent::RecoveryKeyExported { reason: m.reason })
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

impl DomainEvent for JobReleaseEvent {
    fn event_type(&self) -> &'static str {
        match self {
            JobReleaseEvent::CredentialsReleased { .. } => "CredentialsReleased",
            JobReleaseEvent::FileKeyUnwrapped { .. } => "FileKeyUnwrapped",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            JobReleaseEvent::CredentialsReleased {
                job_id,
                attempt,
                agent_id,
                credentials,
            } => pb::CredentialsReleased {
                job_id: job_id.to_string(),
                attempt: *attempt,
                agent_id: agent_id.to_string(),
                vault_refs: credentials.iter().map(|c| c.vault_ref.clone()).collect(),
                versions: credentials.iter().map(|c| c.version).collect(),
            }
            .encode_to_vec(),
            JobReleaseEvent::FileKeyUnwrapped {
                job_id,
                attempt,
                agent_id,
                header_sha256,
            } => pb::FileKeyUnwrapped {
                job_id: job_id.to_string(),
                attempt: *attempt,
                agent_id: agent_id.to_string(),
                header_sha256: header_sha256.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match t {
            "CredentialsReleased" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::CredentialsReleased::decode(payload).map_err(|e| bad(t, e))?;
                if m.vault_refs.len() != m.versions.len() {
                    return Err(bad(t, "vault_refs and versions differ in length"));
                }
                Ok(JobReleaseEvent::CredentialsReleased {
                    job_id: m.job_id.parse().map_err(|e| bad(t, e))?,
                    attempt: m.attempt,
                    agent_id: m.agent_id.parse().map_err(|e| bad(t, e))?,
                    credentials: m
                        .vault_refs
                        .into_iter()
                        .zip(m.versions)
                        .map(|(vault_ref, version)| Released { vault_ref, version })
                        .collect(),
                })
            }
            "FileKeyUnwrapped" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::FileKeyUnwrapped::decode(payload).map_err(|e| bad(t, e))?;
                Ok(JobReleaseEvent::FileKeyUnwrapped {
                    job_id: m.job_id.parse().map_err(|e| bad(t, e))?,
                    attempt: m.attempt,
                    agent_id: m.agent_id.parse().map_err(|e| bad(t, e))?,
                    header_sha256: m.header_sha256,
                })
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

impl DomainEvent for RotationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            RotationEvent::MasterKeyRotationStarted { .. } => "MasterKeyRotationStarted",
            RotationEvent::MasterKeyRotationProgressed { .. } => "MasterKeyRotationProgressed",
            RotationEvent::MasterKeyRotationCompleted { .. } => "MasterKeyRotationCompleted",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            RotationEvent::MasterKeyRotationStarted {
                number,
                to_key_id,
                reason,
                pending,
            } => pb::MasterKeyRotationStarted {
                number: *number,
                to_key_id: to_key_id.clone(),
                reason: reason.clone(),
                pending: *pending,
            }
            .encode_to_vec(),
            RotationEvent::MasterKeyRotationProgressed {
                number,
                rewrapped,
                remaining,
            } => pb::MasterKeyRotationProgressed {
                number: *number,
                rewrapped: *rewrapped,
                remaining: *remaining,
            }
            .encode_to_vec(),
            RotationEvent::MasterKeyRotationCompleted { number, rewrapped } => {
                pb::MasterKeyRotationCompleted {
                    number: *number,
                    rewrapped: *rewrapped,
                }
                .encode_to_vec()
            }
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(t, schema_version)?;
        match t {
            "MasterKeyRotationStarted" => {
                let m = pb::MasterKeyRotationStarted::decode(payload).map_err(|e| bad(t, e))?;
                if m.to_key_id.is_empty() {
                    return Err(bad(t, "to_key_id is empty"));
                }
                Ok(RotationEvent::MasterKeyRotationStarted {
                    number: m.number,
                    to_key_id: m.to_key_id,
                    reason: m.reason,
                    pending: m.pending,
                })
            }
            "MasterKeyRotationProgressed" => {
                let m = pb::MasterKeyRotationProgressed::decode(payload).map_err(|e| bad(t, e))?;
                Ok(RotationEvent::MasterKeyRotationProgressed {
                    number: m.number,
                    rewrapped: m.rewrapped,
                    remaining: m.remaining,
                })
            }
            "MasterKeyRotationCompleted" => {
                let m = pb::MasterKeyRotationCompleted::decode(payload).map_err(|e| bad(t, e))?;
                Ok(RotationEvent::MasterKeyRotationCompleted {
                    number: m.number,
                    rewrapped: m.rewrapped,
                })
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<E: DomainEvent + PartialEq + std::fmt::Debug>(event: E) {
        let back = E::decode(event.event_type(), 1, &event.encode()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn every_event_round_trips() {
        round_trip(CredentialEvent::CredentialCreated {
            name: "prod/db".into(),
            purpose: Purpose::Database,
        });
        round_trip(CredentialEvent::CredentialValueSet(ValueVersion {
            version: 3,
            value_bytes: 40,
            kms_key_id: "master-1".into(),
        }));
        round_trip(CredentialEvent::CredentialDeleted {
            reason: "unused".into(),
        });
        round_trip(OrgKeyEvent::OrgKeyGenerated {
            recipient: "age1qqq".into(),
            kms_key_id: "master-1".into(),
        });
        round_trip(OrgKeyEvent::RecoveryKeyExported {
            reason: "drill".into(),
        });
        round_trip(JobReleaseEvent::CredentialsReleased {
            job_id: uuid::Uuid::now_v7(),
            attempt: 2,
            agent_id: coffer_types::AgentId::new(),
            credentials: vec![Released {
                vault_ref: "vault:coffer/x/y".into(),
                version: 3,
            }],
        });
        round_trip(JobReleaseEvent::FileKeyUnwrapped {
            job_id: uuid::Uuid::now_v7(),
            attempt: 1,
            agent_id: coffer_types::AgentId::new(),
            header_sha256: "ab".repeat(32),
        });
        round_trip(RotationEvent::MasterKeyRotationStarted {
            number: 1,
            to_key_id: "master-2".into(),
            reason: "yearly".into(),
            pending: 12,
        });
        round_trip(RotationEvent::MasterKeyRotationProgressed {
            number: 1,
            rewrapped: 10,
            remaining: 2,
        });
        round_trip(RotationEvent::MasterKeyRotationCompleted {
            number: 1,
            rewrapped: 12,
        });
    }

    #[test]
    fn unknown_types_versions_and_bad_fields_are_decode_errors() {
        assert!(matches!(
            CredentialEvent::decode("CredentialStolen", 1, &[]),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            CredentialEvent::decode("CredentialCreated", 2, &[]),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let bad_purpose = pb::CredentialCreated {
            name: "x".into(),
            purpose: "kms".into(),
        }
        .encode_to_vec();
        assert!(matches!(
            CredentialEvent::decode("CredentialCreated", 1, &bad_purpose),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            OrgKeyEvent::decode("OrgKeyGenerated", 1, &[]),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
