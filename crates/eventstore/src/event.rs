//! Events as stored and as they travel: the record type and its protobuf envelope.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use coffer_proto::time::{from_timestamp, to_timestamp};
use coffer_proto::{common::v1 as common_pb, events::v1 as pb};
use coffer_types::{Actor, AggregateId, EventId, OrgId};
use prost::Message;

use crate::aggregate::DomainEvent;

/// One event as it sits in the `events` table and travels on JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Globally unique; the JetStream message id.
    pub event_id: EventId,
    /// The tenant ([`OrgId::PLATFORM`] for platform events).
    pub org_id: OrgId,
    /// The service that owns the aggregate.
    pub service: String,
    /// The aggregate's type name.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: AggregateId,
    /// 1-based position within the aggregate's stream.
    pub version: u64,
    /// Past-tense event name.
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: u32,
    /// When the command was decided (database clock at append).
    pub occurred_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: Actor,
    /// W3C trace context of the producing request.
    pub trace_context: BTreeMap<String, String>,
    /// Protobuf payload.
    pub payload: Vec<u8>,
}

impl RecordedEvent {
    /// Decodes the payload as `E`.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, crate::DecodeError> {
        E::decode(&self.event_type, self.schema_version, &self.payload)
    }

    /// The wire envelope.
    pub fn to_envelope(&self) -> pb::EventEnvelope {
        pb::EventEnvelope {
            event_id: self.event_id.to_string(),
            org_id: self.org_id.to_string(),
            service: self.service.clone(),
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.to_string(),
            version: self.version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            occurred_at: Some(to_timestamp(self.occurred_at)),
            actor: Some(common_pb::Actor {
                kind: self.actor.kind.as_str().to_owned(),
                id: self.actor.id.clone(),
            }),
            trace_context: self.trace_context.clone().into_iter().collect(),
            payload: self.payload.clone(),
        }
    }

    /// Encoded envelope bytes, as published.
    pub fn encode_envelope(&self) -> Vec<u8> {
        self.to_envelope().encode_to_vec()
    }

    /// Decodes and validates an envelope received from the wire. Every field is checked; the
    /// error names the first field that is wrong.
    pub fn decode_envelope(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env = pb::EventEnvelope::decode(bytes).map_err(|e| {
            EnvelopeError::new("envelope", format!("is not a protobuf EventEnvelope: {e}"))
        })?;
        Self::try_from(env)
    }
}

/// An envelope on the wire is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {field} {rule}")]
pub struct EnvelopeError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub rule: String,
}

impl EnvelopeError {
    fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }
}

impl TryFrom<pb::EventEnvelope> for RecordedEvent {
    type Error = EnvelopeError;

    fn try_from(env: pb::EventEnvelope) -> Result<Self, Self::Error> {
        let uuid = |field: &'static str, s: &str| {
            uuid::Uuid::parse_str(s).map_err(|_| EnvelopeError::new(field, "must be a UUID"))
        };
        let non_empty = |field: &'static str, s: String| {
            if s.is_empty() {
                Err(EnvelopeError::new(field, "must not be empty"))
            } else {
                Ok(s)
            }
        };
        let ts = env
            .occurred_at
            .ok_or_else(|| EnvelopeError::new("occurred_at", "is required"))?;
        let occurred_at =
            from_timestamp(&ts).map_err(|e| EnvelopeError::new("occurred_at", e.to_string()))?;
        let actor = env
            .actor
            .ok_or_else(|| EnvelopeError::new("actor", "is required"))?;
        let actor = Actor {
            kind: actor.kind.parse().map_err(|_| {
                EnvelopeError::new("actor.kind", "must be user, api_key, agent or service")
            })?,
            id: non_empty("actor.id", actor.id)?,
        };
        if env.version == 0 {
            return Err(EnvelopeError::new("version", "must be at least 1"));
        }
        if env.schema_version == 0 {
            return Err(EnvelopeError::new("schema_version", "must be at least 1"));
        }
        Ok(RecordedEvent {
            event_id: EventId::from_uuid(uuid("event_id", &env.event_id)?),
            org_id: OrgId::from_uuid(uuid("org_id", &env.org_id)?),
            service: non_empty("service", env.service)?,
            aggregate_type: non_empty("aggregate_type", env.aggregate_type)?,
            aggregate_id: AggregateId::from_uuid(uuid("aggregate_id", &env.aggregate_id)?),
            version: env.version,
            event_type: non_empty("event_type", env.event_type)?,
            schema_version: env.schema_version,
            occurred_at,
            actor,
            trace_context: env.trace_context.into_iter().collect(),
            payload: env.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordedEvent {
        RecordedEvent {
            event_id: EventId::new(),
            org_id: OrgId::new(),
            service: "diag".into(),
            aggregate_type: "Probe".into(),
            aggregate_id: AggregateId::new(),
            version: 3,
            event_type: "ProbeSent".into(),
            schema_version: 1,
            occurred_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
            actor: Actor::service("test"),
            trace_context: [("traceparent".to_owned(), "00-abc-def-01".to_owned())].into(),
            payload: vec![1, 2, 3],
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let e = sample();
        assert_eq!(
            RecordedEvent::decode_envelope(&e.encode_envelope()).unwrap(),
            e
        );
    }

    #[test]
    fn garbage_is_refused_naming_the_envelope() {
        let err = RecordedEvent::decode_envelope(b"\xff\xff\xff garbage").unwrap_err();
        assert_eq!(err.field, "envelope");
    }

    #[test]
    fn a_bad_field_is_named() {
        let mut env = sample().to_envelope();
        env.org_id = "nope".into();
        let err = RecordedEvent::try_from(env).unwrap_err();
        assert_eq!(err.to_string(), "event org_id must be a UUID");

        let mut env = sample().to_envelope();
        env.version = 0;
        assert_eq!(RecordedEvent::try_from(env).unwrap_err().field, "version");

        let mut env = sample().to_envelope();
        env.occurred_at.as_mut().unwrap().nanos = -1;
        assert_eq!(
            RecordedEvent::try_from(env).unwrap_err().field,
            "occurred_at"
        );
    }
}
