//! `Meter`: the smallest realistic aggregate — a stream of opaque readings with one business
//! rule — and `Totals`, its projection, so an append does the work a real service's does.

use coffer_eventstore::{
    Aggregate, DecodeError, DomainEvent, Projection, ProjectionError, RecordedEvent,
};
use sqlx::PgConnection;

/// A meter: how many readings it took and how many bytes they held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Meter {
    /// Readings recorded so far.
    pub readings: u64,
    /// Their total size.
    pub bytes: u64,
}

/// What a meter can be told to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Record one reading (opaque bytes).
    RecordReading(Vec<u8>),
}

/// What happened to a meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A reading was recorded.
    ReadingRecorded(Vec<u8>),
}

/// Why a meter refused a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reading must carry data.
    #[error("a reading must not be empty")]
    EmptyReading,
}

impl Aggregate for Meter {
    const TYPE: &'static str = "Meter";
    type Command = Command;
    type Event = Event;
    type Error = Error;

    fn decide(&self, command: Command) -> Result<Vec<Event>, Error> {
        match command {
            Command::RecordReading(r) if r.is_empty() => Err(Error::EmptyReading),
            Command::RecordReading(r) => Ok(vec![Event::ReadingRecorded(r)]),
        }
    }

    fn evolve(self, event: &Event) -> Self {
        match event {
            Event::ReadingRecorded(r) => Meter {
                readings: self.readings + 1,
                bytes: self.bytes + r.len() as u64,
            },
        }
    }
}

/// The one event type's wire name.
pub const READING_RECORDED: &str = "ReadingRecorded";

impl DomainEvent for Event {
    fn event_type(&self) -> &'static str {
        READING_RECORDED
    }

    // The payload is the reading itself: a benchmark needs its size, not a protobuf schema.
    fn encode(&self) -> Vec<u8> {
        match self {
            Event::ReadingRecorded(r) => r.clone(),
        }
    }

    fn decode(event_type: &str, _schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match event_type {
            READING_RECORDED => Ok(Event::ReadingRecorded(payload.to_vec())),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// `meter_totals`: one row per meter, upserted in the append transaction.
#[derive(Debug, Default)]
pub struct Totals;

#[async_trait::async_trait]
impl Projection for Totals {
    fn name(&self) -> &'static str {
        "meter_totals"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["meter_totals"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let Event::ReadingRecorded(reading) = event.decode::<Event>()?;
        sqlx::query(
            "INSERT INTO meter_totals (org_id, meter_id, readings, bytes, last_at) VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (meter_id) DO UPDATE
               SET readings = meter_totals.readings + 1, bytes = meter_totals.bytes + EXCLUDED.bytes,
                   last_at = EXCLUDED.last_at",
        )
        .bind(event.org_id.as_uuid())
        .bind(event.aggregate_id.as_uuid())
        .bind(reading.len() as i64)
        .bind(event.occurred_at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_recorded_and_counted() {
        let events = Meter::default()
            .decide(Command::RecordReading(vec![1, 2, 3]))
            .unwrap();
        assert_eq!(events, vec![Event::ReadingRecorded(vec![1, 2, 3])]);
        let state = coffer_eventstore::replay::<Meter>(&events);
        assert_eq!(
            state,
            Meter {
                readings: 1,
                bytes: 3
            }
        );
    }

    #[test]
    fn an_empty_reading_is_refused() {
        assert!(matches!(
            Meter::default().decide(Command::RecordReading(Vec::new())),
            Err(Error::EmptyReading)
        ));
    }

    #[test]
    fn events_round_trip_through_their_encoding() {
        let e = Event::ReadingRecorded(vec![9; 16]);
        assert_eq!(
            Event::decode(e.event_type(), e.schema_version(), &e.encode()).unwrap(),
            e
        );
        assert!(Event::decode("Nope", 1, &[]).is_err());
    }
}
