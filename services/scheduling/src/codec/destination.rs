//! Protobuf encoding of the Destination events (`coffer.events.v1`, `destinations.proto`),
//! with the validation a stored or received payload needs on the way back in.

use coffer_eventstore::{DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use prost::Message;

use crate::domain::destination::{
    DestinationEvent, DestinationSpec, Kind, S3Spec, check_bucket, check_endpoint, check_path,
    check_prefix, check_region,
};

fn bad(event_type: &str, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::malformed(event_type, what)
}

fn spec_to_pb(s: &DestinationSpec) -> pb::DestinationSpec {
    let kind = match &s.kind {
        Kind::S3(s3) => pb::destination_spec::Kind::S3(pb::S3DestinationSpec {
            endpoint: s3.endpoint.to_string(),
            region: s3.region.clone(),
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            path_style: s3.path_style,
            access_key_vault_ref: s3.access_key_vault_ref.to_string(),
        }),
        Kind::Local { path } => pb::destination_spec::Kind::Local(pb::LocalDestinationSpec {
            path: path.to_string_lossy().into_owned(),
        }),
    };
    pb::DestinationSpec {
        name: s.name.clone(),
        kind: Some(kind),
    }
}

/// A stored spec, checked like a request's fields (except that the vault reference's org is
/// not compared: the envelope's org is not at hand here, and it was compared on the way in).
fn spec_from_pb(t: &str, m: Option<pb::DestinationSpec>) -> Result<DestinationSpec, DecodeError> {
    let m = m.ok_or_else(|| bad(t, "spec is required"))?;
    if m.name.is_empty() {
        return Err(bad(t, "name is required"));
    }
    let kind = match m.kind.ok_or_else(|| bad(t, "kind is required"))? {
        pb::destination_spec::Kind::S3(s3) => {
            let prefix = check_prefix(&s3.prefix).map_err(|e| bad(t, e))?;
            if prefix != s3.prefix {
                return Err(bad(t, "prefix is not normalised"));
            }
            Kind::S3(S3Spec {
                endpoint: check_endpoint(&s3.endpoint).map_err(|e| bad(t, e))?,
                region: check_region(&s3.region).map_err(|e| bad(t, e))?,
                bucket: check_bucket(&s3.bucket).map_err(|e| bad(t, e))?,
                prefix,
                path_style: s3.path_style,
                access_key_vault_ref: s3.access_key_vault_ref.parse().map_err(|e| bad(t, e))?,
            })
        }
        pb::destination_spec::Kind::Local(local) => Kind::Local {
            path: check_path(&local.path).map_err(|e| bad(t, e))?,
        },
    };
    Ok(DestinationSpec { name: m.name, kind })
}

impl DomainEvent for DestinationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            DestinationEvent::DestinationRegistered(_) => "DestinationRegistered",
            DestinationEvent::DestinationChanged { .. } => "DestinationChanged",
            DestinationEvent::DestinationRemoved { .. } => "DestinationRemoved",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            DestinationEvent::DestinationRegistered(spec) => pb::DestinationRegistered {
                spec: Some(spec_to_pb(spec)),
            }
            .encode_to_vec(),
            DestinationEvent::DestinationChanged { version, spec } => pb::DestinationChanged {
                version: *version,
                spec: Some(spec_to_pb(spec)),
            }
            .encode_to_vec(),
            DestinationEvent::DestinationRemoved { reason } => pb::DestinationRemoved {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match t {
            "DestinationRegistered" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::DestinationRegistered::decode(payload).map_err(|e| bad(t, e))?;
                Ok(DestinationEvent::DestinationRegistered(spec_from_pb(
                    t, m.spec,
                )?))
            }
            "DestinationChanged" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::DestinationChanged::decode(payload).map_err(|e| bad(t, e))?;
                if m.version < 2 {
                    return Err(bad(t, "version must be at least 2"));
                }
                Ok(DestinationEvent::DestinationChanged {
                    version: m.version,
                    spec: spec_from_pb(t, m.spec)?,
                })
            }
            "DestinationRemoved" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::DestinationRemoved::decode(payload).map_err(|e| bad(t, e))?;
                Ok(DestinationEvent::DestinationRemoved { reason: m.reason })
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_types::{OrgId, VaultRef};

    use super::*;

    fn s3() -> DestinationSpec {
        DestinationSpec {
            name: "offsite".into(),
            kind: Kind::S3(S3Spec {
                endpoint: "https://s3.example.com:9000".parse().unwrap(),
                region: "eu-west-1".into(),
                bucket: "acme-backups".into(),
                prefix: "prod/".into(),
                path_style: true,
                access_key_vault_ref: VaultRef {
                    org: OrgId::new(),
                    credential: uuid::Uuid::now_v7(),
                },
            }),
        }
    }

    fn local() -> DestinationSpec {
        DestinationSpec {
            name: "nas".into(),
            kind: Kind::Local {
                path: "/mnt/nas".into(),
            },
        }
    }

    fn round_trip(event: DestinationEvent) {
        let back = DestinationEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn every_event_round_trips() {
        round_trip(DestinationEvent::DestinationRegistered(s3()));
        round_trip(DestinationEvent::DestinationRegistered(local()));
        round_trip(DestinationEvent::DestinationChanged {
            version: 2,
            spec: local(),
        });
        round_trip(DestinationEvent::DestinationRemoved {
            reason: "gone".into(),
        });
    }

    #[test]
    fn unknown_types_versions_and_bad_fields_are_decode_errors() {
        assert!(matches!(
            DestinationEvent::decode("DestinationStolen", 1, &[]),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            DestinationEvent::decode("DestinationRegistered", 2, &[]),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            DestinationEvent::decode("DestinationRegistered", 1, &[]),
            Err(DecodeError::Malformed { .. })
        ));
        let mut spec = spec_to_pb(&local());
        spec.kind = Some(pb::destination_spec::Kind::Local(
            pb::LocalDestinationSpec {
                path: "relative".into(),
            },
        ));
        let payload = pb::DestinationRegistered { spec: Some(spec) }.encode_to_vec();
        assert!(matches!(
            DestinationEvent::decode("DestinationRegistered", 1, &payload),
            Err(DecodeError::Malformed { .. })
        ));
        let payload = pb::DestinationChanged {
            version: 1,
            spec: Some(spec_to_pb(&s3())),
        }
        .encode_to_vec();
        assert!(matches!(
            DestinationEvent::decode("DestinationChanged", 1, &payload),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
