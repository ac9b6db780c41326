//! The pure half of event sourcing: aggregates decide and evolve, with no I/O.

/// A consistency boundary whose state is the fold of its events.
///
/// Implementations are pure and synchronous: `decide` holds every business rule and returns
/// the events a command produces (or why it is refused); `evolve` applies one event and
/// never fails, because an event is a fact that already happened.
pub trait Aggregate: Default + Send + Sync + Sized {
    /// Stable name of the aggregate type, stored with every event (e.g. `"Org"`).
    const TYPE: &'static str;
    /// Commands this aggregate accepts.
    type Command: Send;
    /// Events this aggregate records.
    type Event: DomainEvent;
    /// Why a command was refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides what happens when `command` meets the current state.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one recorded event to the state.
    fn evolve(self, event: &Self::Event) -> Self;
}

/// An event payload: knows its wire name and schema version, and encodes to protobuf bytes.
pub trait DomainEvent: Sized + Send + Sync {
    /// Past-tense name, e.g. `"AgentEnrolled"`. Also the last token of the NATS subject.
    fn event_type(&self) -> &'static str;

    /// Version of the payload schema this value encodes as.
    fn schema_version(&self) -> u32 {
        1
    }

    /// Protobuf encoding of the payload.
    fn encode(&self) -> Vec<u8>;

    /// Decodes a stored payload, upcasting older schema versions.
    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError>;
}

/// A stored or received payload could not be turned into a domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The event type is not one this code knows.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// A known type with a schema version this code cannot read.
    #[error("event type `{event_type}` has unsupported schema version {schema_version}")]
    UnsupportedVersion {
        /// The event type.
        event_type: String,
        /// The version found.
        schema_version: u32,
    },
    /// The payload bytes do not decode as the type's message.
    #[error("payload of `{event_type}` does not decode: {reason}")]
    Malformed {
        /// The event type.
        event_type: String,
        /// The decoder's message.
        reason: String,
    },
}

impl DecodeError {
    /// Refuses every schema version but 1, for types that have never been upcast.
    pub fn require_v1(event_type: &str, schema_version: u32) -> Result<(), Self> {
        if schema_version == 1 {
            Ok(())
        } else {
            Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                schema_version,
            })
        }
    }

    /// Wraps a prost decode error for `event_type`.
    pub fn malformed(event_type: &str, err: impl std::fmt::Display) -> Self {
        DecodeError::Malformed {
            event_type: event_type.to_owned(),
            reason: err.to_string(),
        }
    }
}

/// Folds events into a fresh state.
pub fn replay<'a, A: Aggregate + 'a>(events: impl IntoIterator<Item = &'a A::Event>) -> A
where
    A::Event: 'a,
{
    events.into_iter().fold(A::default(), A::evolve)
}
