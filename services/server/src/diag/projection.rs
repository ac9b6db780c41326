//! The `probes` read model.

use coffer_eventstore::{Projection, ProjectionError, RecordedEvent};
use sqlx::PgConnection;

use super::domain::ProbeEvent;

/// One row per probe: latest send and latest observation.
pub struct Probes;

#[async_trait::async_trait]
impl Projection for Probes {
    fn name(&self) -> &'static str {
        "probes"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["probes"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match event.decode::<ProbeEvent>()? {
            ProbeEvent::ProbeSent { note } => {
                sqlx::query(
                    "INSERT INTO probes (org_id, probe_id, note, probes_sent, last_sent_event_id, last_sent_at)
                     VALUES ($1, $2, $3, 1, $4, $5)
                     ON CONFLICT (probe_id) DO UPDATE SET note = EXCLUDED.note,
                        probes_sent = probes.probes_sent + 1,
                        last_sent_event_id = EXCLUDED.last_sent_event_id,
                        last_sent_at = EXCLUDED.last_sent_at",
                )
                .bind(event.org_id.as_uuid())
                .bind(event.aggregate_id.as_uuid())
                .bind(note)
                .bind(event.event_id.as_uuid())
                .bind(event.occurred_at)
                .execute(conn)
                .await?;
            }
            ProbeEvent::ProbeObserved {
                probe_event_id,
                stream_sequence,
                consumer_trace_id,
            } => {
                sqlx::query(
                    "UPDATE probes SET observations = observations + 1, last_observed_event_id = $2,
                        last_observed_at = $3, last_stream_sequence = $4, last_consumer_trace_id = $5
                     WHERE probe_id = $1",
                )
                .bind(event.aggregate_id.as_uuid())
                .bind(probe_event_id.as_uuid())
                .bind(event.occurred_at)
                .bind(stream_sequence as i64)
                .bind(consumer_trace_id)
                .execute(conn)
                .await?;
            }
        }
        Ok(())
    }
}
