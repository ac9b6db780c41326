//! Protobuf encoding of the scheduling events (`coffer.events.v1`), with the validation a
//! stored or received payload needs on the way back in.

mod destination;

use coffer_eventstore::{DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use prost::Message;

use crate::domain::database::{DatabaseEvent, DatabaseSpec, Engine};

mod job;
mod schedule;

fn bad(event_type: &str, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::malformed(event_type, what)
}

fn spec_to_pb(s: &DatabaseSpec) -> pb::DatabaseSpec {
    pb::DatabaseSpec {
        name: s.name.clone(),
        engine: s.engine.as_str().to_owned(),
        host: s.host.clone(),
        port: u32::from(s.port),
        database: s.database.clone(),
        user: s.user.clone(),
        password_vault_ref: s.password_vault_ref.to_string(),
        agent_id: s.agent_id.to_string(),
    }
}

/// A stored spec, checked like a request's fields (except that the vault reference's org is
/// not compared: the envelope's org is not at hand here, and it was compared on the way in).
fn spec_from_pb(t: &str, m: Option<pb::DatabaseSpec>) -> Result<DatabaseSpec, DecodeError> {
    let m = m.ok_or_else(|| bad(t, "spec is required"))?;
    let port = u16::try_from(m.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(t, "port must be 1..=65535"))?;
    if m.name.is_empty() || m.host.is_empty() || m.database.is_empty() || m.user.is_empty() {
        return Err(bad(t, "name, host, database and user are required"));
    }
    Ok(DatabaseSpec {
        name: m.name,
        engine: Engine::parse(&m.engine).map_err(|e| bad(t, e))?,
        host: m.host,
        port,
        database: m.database,
        user: m.user,
        password_vault_ref: m.password_vault_ref.parse().map_err(|e| bad(t, e))?,
        agent_id: m.agent_id.parse().map_err(|e| bad(t, e))?,
    })
}

impl DomainEvent for DatabaseEvent {
    fn event_type(&self) -> &'static str {
        match self {
            DatabaseEvent::DatabaseRegistered(_) => "DatabaseRegistered",
            DatabaseEvent::DatabaseChanged { .. } => "DatabaseChanged",
            DatabaseEvent::DatabaseRemoved { .. } => "DatabaseRemoved",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            DatabaseEvent::DatabaseRegistered(spec) => pb::DatabaseRegistered {
                spec: Some(spec_to_pb(spec)),
            }
            .encode_to_vec(),
            DatabaseEvent::DatabaseChanged { version, spec } => pb::DatabaseChanged {
                version: *version,
                spec: Some(spec_to_pb(spec)),
            }
            .encode_to_vec(),
            DatabaseEvent::DatabaseRemoved { reason } => pb::DatabaseRemoved {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match t {
            "DatabaseRegistered" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::DatabaseRegistered::decode(payload).map_err(|e| bad(t, e))?;
                Ok(DatabaseEvent::DatabaseRegistered(spec_from_pb(t, m.spec)?))
            }
            "DatabaseChanged" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::DatabaseChanged::decode(payload).map_err(|e| bad(t, e))?;
                if m.version < 2 {
                    return Err(bad(t, "version must be at least 2"));
                }
                Ok(DatabaseEvent::DatabaseChanged {
                    version: m.version,
                    spec: spec_from_pb(t, m.spec)?,
                })
            }
            "DatabaseRemoved" => {
                DecodeError::require_v1(t, schema_version)?;
                let m = pb::DatabaseRemoved::decode(payload).map_err(|e| bad(t, e))?;
                Ok(DatabaseEvent::DatabaseRemoved { reason: m.reason })
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_types::{AgentId, OrgId, VaultRef};

    use super::*;

    fn spec() -> DatabaseSpec {
        DatabaseSpec {
            name: "orders".into(),
            engine: Engine::Mariadb,
            host: "db.example".into(),
            port: 3306,
            database: "orders".into(),
            user: "backup".into(),
            password_vault_ref: VaultRef {
                org: OrgId::new(),
                credential: uuid::Uuid::now_v7(),
            },
            agent_id: AgentId::new(),
        }
    }

    fn round_trip(event: DatabaseEvent) {
        let back = DatabaseEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn every_event_round_trips() {
        round_trip(DatabaseEvent::DatabaseRegistered(spec()));
        round_trip(DatabaseEvent::DatabaseChanged {
            version: 2,
            spec: spec(),
        });
        round_trip(DatabaseEvent::DatabaseRemoved {
            reason: "gone".into(),
        });
    }

    #[test]
    fn unknown_types_versions_and_bad_fields_are_decode_errors() {
        assert!(matches!(
            DatabaseEvent::decode("DatabaseStolen", 1, &[]),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            DatabaseEvent::decode("DatabaseRegistered", 2, &[]),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            DatabaseEvent::decode("DatabaseRegistered", 1, &[]),
            Err(DecodeError::Malformed { .. })
        ));
        let mut bad_engine = spec_to_pb(&spec());
        bad_engine.engine = "oracle".into();
        let payload = pb::DatabaseRegistered {
            spec: Some(bad_engine),
        }
        .encode_to_vec();
        assert!(matches!(
            DatabaseEvent::decode("DatabaseRegistered", 1, &payload),
            Err(DecodeError::Malformed { .. })
        ));
        let mut bad_ref = spec_to_pb(&spec());
        bad_ref.password_vault_ref = "plaintext".into();
        let payload = pb::DatabaseChanged {
            version: 2,
            spec: Some(bad_ref),
        }
        .encode_to_vec();
        assert!(matches!(
            DatabaseEvent::decode("DatabaseChanged", 1, &payload),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
