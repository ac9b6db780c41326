//! Protobuf encoding of the enrollment events (`coffer.events.v1`), with the validation a
//! stored or received payload needs on the way back in.

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_eventstore::{DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use coffer_proto::time::{from_timestamp, to_timestamp};
use coffer_types::UserId;
use prost::Message;

use crate::domain::agent::{AgentEvent, IssuedCertificate};
use crate::domain::api_key::ApiKeyEvent;
use crate::domain::ca::{CaEvent, CaKind};
use crate::domain::enrollment_token::EnrollmentTokenEvent;
use crate::domain::org::OrgEvent;
use crate::domain::signing_key::SigningKeyEvent;

fn bad(event_type: &str, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::malformed(event_type, what)
}

fn user(event_type: &str, s: &str) -> Result<UserId, DecodeError> {
    s.parse().map_err(|e| bad(event_type, e))
}

fn role(event_type: &str, s: &str) -> Result<Role, DecodeError> {
    s.parse().map_err(|e| bad(event_type, e))
}

impl DomainEvent for OrgEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrgEvent::OrgCreated { .. } => "OrgCreated",
            OrgEvent::MemberAdded { .. } => "MemberAdded",
            OrgEvent::MemberRoleChanged { .. } => "MemberRoleChanged",
            OrgEvent::MemberRemoved { .. } => "MemberRemoved",
            OrgEvent::MemberSuspended { .. } => "MemberSuspended",
            OrgEvent::MemberReactivated { .. } => "MemberReactivated",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            OrgEvent::OrgCreated {
                name,
                owner,
                owner_email,
            } => pb::OrgCreated {
                name: name.clone(),
                owner_user_id: owner.to_string(),
                owner_email: owner_email.clone(),
            }
            .encode_to_vec(),
            OrgEvent::MemberAdded { user, email, role } => pb::MemberAdded {
                user_id: user.to_string(),
                email: email.clone(),
                role: role.as_str().to_owned(),
            }
            .encode_to_vec(),
            OrgEvent::MemberRoleChanged { user, from, to } => pb::MemberRoleChanged {
                user_id: user.to_string(),
                from_role: from.as_str().to_owned(),
                to_role: to.as_str().to_owned(),
            }
            .encode_to_vec(),
            OrgEvent::MemberRemoved { user } => pb::MemberRemoved {
                user_id: user.to_string(),
            }
            .encode_to_vec(),
            OrgEvent::MemberSuspended { user, reason } => pb::MemberSuspended {
                user_id: user.to_string(),
                reason: reason.clone(),
            }
            .encode_to_vec(),
            OrgEvent::MemberReactivated { user } => pb::MemberReactivated {
                user_id: user.to_string(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(t, schema_version)?;
        Ok(match t {
            "OrgCreated" => {
                let m = pb::OrgCreated::decode(payload).map_err(|e| bad(t, e))?;
                OrgEvent::OrgCreated {
                    name: m.name,
                    owner: user(t, &m.owner_user_id)?,
                    owner_email: m.owner_email,
                }
            }
            "MemberAdded" => {
                let m = pb::MemberAdded::decode(payload).map_err(|e| bad(t, e))?;
                OrgEvent::MemberAdded {
                    user: user(t, &m.user_id)?,
                    email: m.email,
                    role: role(t, &m.role)?,
                }
            }
            "MemberRoleChanged" => {
                let m = pb::MemberRoleChanged::decode(payload).map_err(|e| bad(t, e))?;
                OrgEvent::MemberRoleChanged {
                    user: user(t, &m.user_id)?,
                    from: role(t, &m.from_role)?,
                    to: role(t, &m.to_role)?,
                }
            }
            "MemberRemoved" => {
                let m = pb::MemberRemoved::decode(payload).map_err(|e| bad(t, e))?;
                OrgEvent::MemberRemoved {
                    user: user(t, &m.user_id)?,
                }
            }
            "MemberSuspended" => {
                let m = pb::MemberSuspended::decode(payload).map_err(|e| bad(t, e))?;
                OrgEvent::MemberSuspended {
                    user: user(t, &m.user_id)?,
                    reason: m.reason,
                }
            }
            "MemberReactivated" => {
                let m = pb::MemberReactivated::decode(payload).map_err(|e| bad(t, e))?;
                OrgEvent::MemberReactivated {
                    user: user(t, &m.user_id)?,
                }
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

fn expiry(event_type: &str, ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, DecodeError> {
    from_timestamp(ts).map_err(|e| bad(event_type, format!("expires_at {e}")))
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ApiKeyEvent::ApiKeyCreated { .. } => "ApiKeyCreated",
            ApiKeyEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            ApiKeyEvent::ApiKeyCreated {
                name,
                role,
                scopes,
                display_prefix,
                secret_sha256,
                expires_at,
            } => pb::ApiKeyCreated {
                name: name.clone(),
                role: role.as_str().to_owned(),
                scopes: scopes.clone(),
                display_prefix: display_prefix.clone(),
                secret_sha256: secret_sha256.to_vec(),
                expires_at: expires_at.map(to_timestamp),
            }
            .encode_to_vec(),
            ApiKeyEvent::ApiKeyRevoked { reason } => pb::ApiKeyRevoked {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(t, schema_version)?;
        Ok(match t {
            "ApiKeyCreated" => {
                let m = pb::ApiKeyCreated::decode(payload).map_err(|e| bad(t, e))?;
                ApiKeyEvent::ApiKeyCreated {
                    name: m.name,
                    role: role(t, &m.role)?,
                    scopes: m.scopes,
                    display_prefix: m.display_prefix,
                    secret_sha256: m
                        .secret_sha256
                        .try_into()
                        .map_err(|_| bad(t, "secret_sha256 must be 32 bytes"))?,
                    expires_at: m.expires_at.map(|ts| expiry(t, &ts)).transpose()?,
                }
            }
            "ApiKeyRevoked" => {
                let m = pb::ApiKeyRevoked::decode(payload).map_err(|e| bad(t, e))?;
                ApiKeyEvent::ApiKeyRevoked { reason: m.reason }
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

impl DomainEvent for SigningKeyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SigningKeyEvent::SigningKeyCreated { .. } => "SigningKeyCreated",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            SigningKeyEvent::SigningKeyCreated {
                kid,
                public_key,
                wrapped_private_key,
                kms_key_id,
            } => pb::SigningKeyCreated {
                kid: kid.clone(),
                public_key: public_key.to_vec(),
                wrapped_private_key: wrapped_private_key.clone(),
                kms_key_id: kms_key_id.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(t, schema_version)?;
        Ok(match t {
            "SigningKeyCreated" => {
                let m = pb::SigningKeyCreated::decode(payload).map_err(|e| bad(t, e))?;
                SigningKeyEvent::SigningKeyCreated {
                    kid: m.kid,
                    public_key: m
                        .public_key
                        .try_into()
                        .map_err(|_| bad(t, "public_key must be 32 bytes"))?,
                    wrapped_private_key: m.wrapped_private_key,
                    kms_key_id: m.kms_key_id,
                }
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

fn time(
    event_type: &str,
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<DateTime<Utc>, DecodeError> {
    let ts = ts.ok_or_else(|| bad(event_type, format!("{field} is missing")))?;
    from_timestamp(&ts).map_err(|e| bad(event_type, format!("{field} {e}")))
}

fn sha256(event_type: &str, field: &str, bytes: Vec<u8>) -> Result<[u8; 32], DecodeError> {
    bytes
        .try_into()
        .map_err(|_| bad(event_type, format!("{field} must be 32 bytes")))
}

fn uuid(event_type: &str, field: &str, s: &str) -> Result<uuid::Uuid, DecodeError> {
    s.parse()
        .map_err(|_| bad(event_type, format!("{field} must be a UUID")))
}

impl DomainEvent for CaEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CaEvent::CaCreated { .. } => "CaCreated",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            CaEvent::CaCreated {
                kind,
                certificate_der,
                wrapped_private_key,
                kms_key_id,
            } => pb::CaCreated {
                role: kind.as_str().to_owned(),
                certificate_der: certificate_der.clone(),
                wrapped_private_key: wrapped_private_key.clone(),
                kms_key_id: kms_key_id.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(t, schema_version)?;
        Ok(match t {
            "CaCreated" => {
                let m = pb::CaCreated::decode(payload).map_err(|e| bad(t, e))?;
                let kind = match m.role.as_str() {
                    "root" => CaKind::Root,
                    "org" => CaKind::Org,
                    other => return Err(bad(t, format!("role {other:?} is not root or org"))),
                };
                CaEvent::CaCreated {
                    kind,
                    certificate_der: m.certificate_der,
                    wrapped_private_key: m.wrapped_private_key,
                    kms_key_id: m.kms_key_id,
                }
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

impl DomainEvent for EnrollmentTokenEvent {
    fn event_type(&self) -> &'static str {
        match self {
            EnrollmentTokenEvent::EnrollmentTokenCreated { .. } => "EnrollmentTokenCreated",
            EnrollmentTokenEvent::EnrollmentTokenConsumed { .. } => "EnrollmentTokenConsumed",
            EnrollmentTokenEvent::EnrollmentTokenRevoked { .. } => "EnrollmentTokenRevoked",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            EnrollmentTokenEvent::EnrollmentTokenCreated {
                name,
                display_prefix,
                secret_sha256,
                expires_at,
            } => pb::EnrollmentTokenCreated {
                name: name.clone(),
                display_prefix: display_prefix.clone(),
                secret_sha256: secret_sha256.to_vec(),
                expires_at: Some(to_timestamp(*expires_at)),
            }
            .encode_to_vec(),
            EnrollmentTokenEvent::EnrollmentTokenConsumed { agent } => {
                pb::EnrollmentTokenConsumed {
                    agent_id: agent.to_string(),
                }
                .encode_to_vec()
            }
            EnrollmentTokenEvent::EnrollmentTokenRevoked { reason } => pb::EnrollmentTokenRevoked {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(t, schema_version)?;
        Ok(match t {
            "EnrollmentTokenCreated" => {
                let m = pb::EnrollmentTokenCreated::decode(payload).map_err(|e| bad(t, e))?;
                EnrollmentTokenEvent::EnrollmentTokenCreated {
                    name: m.name,
                    display_prefix: m.display_prefix,
                    secret_sha256: sha256(t, "secret_sha256", m.secret_sha256)?,
                    expires_at: time(t, "expires_at", m.expires_at)?,
                }
            }
            "EnrollmentTokenConsumed" => {
                let m = pb::EnrollmentTokenConsumed::decode(payload).map_err(|e| bad(t, e))?;
                EnrollmentTokenEvent::EnrollmentTokenConsumed {
                    agent: uuid(t, "agent_id", &m.agent_id)?,
                }
            }
            "EnrollmentTokenRevoked" => {
                let m = pb::EnrollmentTokenRevoked::decode(payload).map_err(|e| bad(t, e))?;
                EnrollmentTokenEvent::EnrollmentTokenRevoked { reason: m.reason }
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

impl DomainEvent for AgentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AgentEvent::AgentEnrolled { .. } => "AgentEnrolled",
            AgentEvent::CertificateRenewed { .. } => "CertificateRenewed",
            AgentEvent::AgentRevoked { .. } => "AgentRevoked",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            AgentEvent::AgentEnrolled {
                enrollment_token,
                certificate: c,
            } => pb::AgentEnrolled {
                enrollment_token_id: enrollment_token.to_string(),
                serial: c.serial.clone(),
                not_before: Some(to_timestamp(c.not_before)),
                not_after: Some(to_timestamp(c.not_after)),
                key_algorithm: c.key_algorithm.clone(),
                public_key_sha256: c.public_key_sha256.to_vec(),
            }
            .encode_to_vec(),
            AgentEvent::CertificateRenewed { certificate: c } => pb::CertificateRenewed {
                serial: c.serial.clone(),
                not_before: Some(to_timestamp(c.not_before)),
                not_after: Some(to_timestamp(c.not_after)),
                key_algorithm: c.key_algorithm.clone(),
                public_key_sha256: c.public_key_sha256.to_vec(),
            }
            .encode_to_vec(),
            AgentEvent::AgentRevoked { reason } => pb::AgentRevoked {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(t, schema_version)?;
        Ok(match t {
            "AgentEnrolled" => {
                let m = pb::AgentEnrolled::decode(payload).map_err(|e| bad(t, e))?;
                AgentEvent::AgentEnrolled {
                    enrollment_token: uuid(t, "enrollment_token_id", &m.enrollment_token_id)?,
                    certificate: IssuedCertificate {
                        serial: m.serial,
                        not_before: time(t, "not_before", m.not_before)?,
                        not_after: time(t, "not_after", m.not_after)?,
                        key_algorithm: m.key_algorithm,
                        public_key_sha256: sha256(t, "public_key_sha256", m.public_key_sha256)?,
                    },
                }
            }
            "CertificateRenewed" => {
                let m = pb::CertificateRenewed::decode(payload).map_err(|e| bad(t, e))?;
                AgentEvent::CertificateRenewed {
                    certificate: IssuedCertificate {
                        serial: m.serial,
                        not_before: time(t, "not_before", m.not_before)?,
                        not_after: time(t, "not_after", m.not_after)?,
                        key_algorithm: m.key_algorithm,
                        public_key_sha256: sha256(t, "public_key_sha256", m.public_key_sha256)?,
                    },
                }
            }
            "AgentRevoked" => {
                let m = pb::AgentRevoked::decode(payload).map_err(|e| bad(t, e))?;
                AgentEvent::AgentRevoked { reason: m.reason }
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::SubsecRound;

    use super::*;

    #[test]
    fn every_org_event_round_trips() {
        let u = UserId::new();
        for e in [
            OrgEvent::OrgCreated {
                name: "Acme".into(),
                owner: u,
                owner_email: "a@b.test".into(),
            },
            OrgEvent::MemberAdded {
                user: u,
                email: "c@d.test".into(),
                role: Role::Auditor,
            },
            OrgEvent::MemberRoleChanged {
                user: u,
                from: Role::Viewer,
                to: Role::Admin,
            },
            OrgEvent::MemberRemoved { user: u },
            OrgEvent::MemberSuspended {
                user: u,
                reason: "r".into(),
            },
            OrgEvent::MemberReactivated { user: u },
        ] {
            assert_eq!(OrgEvent::decode(e.event_type(), 1, &e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn every_api_key_event_round_trips() {
        for e in [
            ApiKeyEvent::ApiKeyCreated {
                name: "ci".into(),
                role: Role::Operator,
                scopes: vec!["jobs:run".into()],
                display_prefix: "coffer_abcde".into(),
                secret_sha256: [9; 32],
                expires_at: Some(Utc::now().trunc_subsecs(6)),
            },
            ApiKeyEvent::ApiKeyRevoked {
                reason: "leak".into(),
            },
        ] {
            assert_eq!(
                ApiKeyEvent::decode(e.event_type(), 1, &e.encode()).unwrap(),
                e
            );
        }
    }

    #[test]
    fn unknown_types_versions_and_bad_fields_are_decode_errors() {
        assert!(matches!(
            OrgEvent::decode("Nope", 1, &[]),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            OrgEvent::decode("MemberRemoved", 2, &[]),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        let bad_user = pb::MemberRemoved {
            user_id: "x".into(),
        }
        .encode_to_vec();
        assert!(matches!(
            OrgEvent::decode("MemberRemoved", 1, &bad_user),
            Err(DecodeError::Malformed { .. })
        ));
        let short_hash = pb::ApiKeyCreated {
            role: "viewer".into(),
            secret_sha256: vec![1, 2],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(
            ApiKeyEvent::decode("ApiKeyCreated", 1, &short_hash),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn signing_key_events_round_trip() {
        let event = SigningKeyEvent::SigningKeyCreated {
            kid: "abc".into(),
            public_key: [9; 32],
            wrapped_private_key: vec![1, 2, 3, 4],
            kms_key_id: "master-1".into(),
        };
        let decoded = SigningKeyEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
        assert_eq!(decoded, event);
        let short = pb::SigningKeyCreated {
            public_key: vec![1; 31],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(SigningKeyEvent::decode("SigningKeyCreated", 1, &short).is_err());
    }

    #[test]
    fn agent_token_and_ca_events_round_trip() {
        let now = Utc::now().trunc_subsecs(6);
        let cert = IssuedCertificate {
            serial: "1f".into(),
            not_before: now,
            not_after: now + chrono::Duration::hours(24),
            key_algorithm: "ecdsa_p256".into(),
            public_key_sha256: [5; 32],
        };
        let agent = uuid::Uuid::now_v7();
        for e in [
            AgentEvent::AgentEnrolled {
                enrollment_token: uuid::Uuid::now_v7(),
                certificate: cert.clone(),
            },
            AgentEvent::CertificateRenewed { certificate: cert },
            AgentEvent::AgentRevoked {
                reason: "gone".into(),
            },
        ] {
            assert_eq!(
                AgentEvent::decode(e.event_type(), 1, &e.encode()).unwrap(),
                e
            );
        }
        for e in [
            EnrollmentTokenEvent::EnrollmentTokenCreated {
                name: "h".into(),
                display_prefix: "coffer_enrol".into(),
                secret_sha256: [1; 32],
                expires_at: now,
            },
            EnrollmentTokenEvent::EnrollmentTokenConsumed { agent },
            EnrollmentTokenEvent::EnrollmentTokenRevoked { reason: "r".into() },
        ] {
            assert_eq!(
                EnrollmentTokenEvent::decode(e.event_type(), 1, &e.encode()).unwrap(),
                e
            );
        }
        let ca = CaEvent::CaCreated {
            kind: CaKind::Org,
            certificate_der: vec![1, 2],
            wrapped_private_key: vec![3],
            kms_key_id: "k".into(),
        };
        assert_eq!(CaEvent::decode("CaCreated", 1, &ca.encode()).unwrap(), ca);
    }
}
