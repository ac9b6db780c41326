//! The Probe aggregate: pure rules, no I/O.

use coffer_eventstore::{Aggregate, DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use coffer_types::EventId;
use prost::Message;

/// Longest note a probe may carry.
pub const MAX_NOTE_CHARS: usize = 200;

/// A probe: how often it was sent, and how often the consumer saw it come back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Number of `ProbeSent` events.
    pub sent: u64,
    /// Number of `ProbeObserved` events.
    pub observed: u64,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum ProbeCommand {
    /// Send the probe through the pipeline.
    SendProbe {
        /// Caller's text.
        note: String,
    },
    /// Record that the consumer received a `ProbeSent`.
    ObserveProbe {
        /// The received event.
        probe_event_id: EventId,
        /// Its stream sequence.
        stream_sequence: u64,
        /// The consumer's trace id.
        consumer_trace_id: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// See `coffer.events.v1.ProbeSent`.
    ProbeSent {
        /// Caller's text.
        note: String,
    },
    /// See `coffer.events.v1.ProbeObserved`.
    ProbeObserved {
        /// The received event.
        probe_event_id: EventId,
        /// Its stream sequence.
        stream_sequence: u64,
        /// The consumer's trace id.
        consumer_trace_id: String,
    },
}

/// Why a probe command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The note is too long.
    #[error("note must be at most {MAX_NOTE_CHARS} characters, got {0}")]
    NoteTooLong(usize),
    /// The note contains control characters.
    #[error("note must not contain control characters")]
    NoteHasControlCharacters,
    /// An observation for a probe that was never sent.
    #[error("probe was never sent")]
    NeverSent,
}

impl Aggregate for Probe {
    const TYPE: &'static str = "Probe";
    type Command = ProbeCommand;
    type Event = ProbeEvent;
    type Error = ProbeError;

    fn decide(&self, command: ProbeCommand) -> Result<Vec<ProbeEvent>, ProbeError> {
        match command {
            ProbeCommand::SendProbe { note } => {
                let chars = note.chars().count();
                if chars > MAX_NOTE_CHARS {
                    return Err(ProbeError::NoteTooLong(chars));
                }
                if note.chars().any(char::is_control) {
                    return Err(ProbeError::NoteHasControlCharacters);
                }
                Ok(vec![ProbeEvent::ProbeSent { note }])
            }
            // Deliberately not deduplicated here: exactly-once effects are the consumer
            // runner's job (processed_events), and the failure tests count these events to
            // prove it.
            ProbeCommand::ObserveProbe {
                probe_event_id,
                stream_sequence,
                consumer_trace_id,
            } => {
                if self.sent == 0 {
                    return Err(ProbeError::NeverSent);
                }
                Ok(vec![ProbeEvent::ProbeObserved {
                    probe_event_id,
                    stream_sequence,
                    consumer_trace_id,
                }])
            }
        }
    }

    fn evolve(self, event: &ProbeEvent) -> Self {
        match event {
            ProbeEvent::ProbeSent { .. } => Probe {
                sent: self.sent + 1,
                ..self
            },
            ProbeEvent::ProbeObserved { .. } => Probe {
                observed: self.observed + 1,
                ..self
            },
        }
    }
}

/// Wire name of `ProbeSent`.
pub const PROBE_SENT: &str = "ProbeSent";
/// Wire name of `ProbeObserved`.
pub const PROBE_OBSERVED: &str = "ProbeObserved";

impl DomainEvent for ProbeEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ProbeEvent::ProbeSent { .. } => PROBE_SENT,
            ProbeEvent::ProbeObserved { .. } => PROBE_OBSERVED,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            ProbeEvent::ProbeSent { note } => pb::ProbeSent { note: note.clone() }.encode_to_vec(),
            ProbeEvent::ProbeObserved {
                probe_event_id,
                stream_sequence,
                consumer_trace_id,
            } => pb::ProbeObserved {
                probe_event_id: probe_event_id.to_string(),
                stream_sequence: *stream_sequence,
                consumer_trace_id: consumer_trace_id.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        DecodeError::require_v1(event_type, schema_version)?;
        let bad = |e: &dyn std::fmt::Display| DecodeError::malformed(event_type, e);
        match event_type {
            PROBE_SENT => {
                let m = pb::ProbeSent::decode(payload).map_err(|e| bad(&e))?;
                Ok(ProbeEvent::ProbeSent { note: m.note })
            }
            PROBE_OBSERVED => {
                let m = pb::ProbeObserved::decode(payload).map_err(|e| bad(&e))?;
                Ok(ProbeEvent::ProbeObserved {
                    probe_event_id: m.probe_event_id.parse().map_err(|e| bad(&e))?,
                    stream_sequence: m.stream_sequence,
                    consumer_trace_id: m.consumer_trace_id,
                })
            }
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_eventstore::replay;

    fn observe() -> ProbeCommand {
        ProbeCommand::ObserveProbe {
            probe_event_id: EventId::new(),
            stream_sequence: 1,
            consumer_trace_id: "t".into(),
        }
    }

    #[test]
    fn given_nothing_when_sent_then_probe_sent() {
        let events = Probe::default()
            .decide(ProbeCommand::SendProbe {
                note: "hello".into(),
            })
            .unwrap();
        assert_eq!(
            events,
            vec![ProbeEvent::ProbeSent {
                note: "hello".into()
            }]
        );
    }

    #[test]
    fn given_nothing_when_observed_then_refused() {
        assert_eq!(
            Probe::default().decide(observe()),
            Err(ProbeError::NeverSent)
        );
    }

    #[test]
    fn given_sent_when_observed_twice_then_both_recorded() {
        let sent = ProbeEvent::ProbeSent {
            note: String::new(),
        };
        let state: Probe = replay([&sent]);
        let first = state.clone().decide(observe()).unwrap();
        let state = first.iter().fold(state, Probe::evolve);
        assert_eq!(
            state,
            Probe {
                sent: 1,
                observed: 1
            }
        );
        assert_eq!(state.decide(observe()).unwrap().len(), 1);
    }

    #[test]
    fn long_or_control_notes_are_refused() {
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        assert_eq!(
            Probe::default().decide(ProbeCommand::SendProbe { note: long }),
            Err(ProbeError::NoteTooLong(201))
        );
        assert_eq!(
            Probe::default().decide(ProbeCommand::SendProbe {
                note: "a\nb".into()
            }),
            Err(ProbeError::NoteHasControlCharacters)
        );
    }

    #[test]
    fn events_round_trip_through_protobuf() {
        for e in [
            ProbeEvent::ProbeSent { note: "n".into() },
            ProbeEvent::ProbeObserved {
                probe_event_id: EventId::new(),
                stream_sequence: 9,
                consumer_trace_id: "abc".into(),
            },
        ] {
            assert_eq!(
                ProbeEvent::decode(e.event_type(), 1, &e.encode()).unwrap(),
                e
            );
        }
        assert!(matches!(
            ProbeEvent::decode("Nope", 1, &[]),
            Err(DecodeError::UnknownType(_))
        ));
    }
}
