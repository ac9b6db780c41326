//! Encoding of the Schedule aggregate's events.

use chrono::{DateTime, Utc};
use coffer_eventstore::{DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use coffer_proto::time::{from_timestamp, to_timestamp};
use prost::Message;

use super::bad;
use crate::domain::retention::Retention;
use crate::domain::schedule::{ScheduleEvent, ScheduleFields, ScheduleSpec};

fn retention_to_pb(r: Retention) -> pb::Retention {
    pb::Retention {
        keep_last: r.keep_last,
        daily: r.daily,
        weekly: r.weekly,
        monthly: r.monthly,
        yearly: r.yearly,
    }
}

fn spec_to_pb(s: &ScheduleSpec) -> pb::ScheduleSpec {
    pb::ScheduleSpec {
        name: s.name.clone(),
        database_id: s.database_id.to_string(),
        destination_id: s.destination_id.to_string(),
        cron: s.timing.cron().to_owned(),
        timezone: s.timing.zone().name().to_owned(),
        jitter_seconds: s.timing.jitter_secs(),
        missed_runs: s.timing.missed_runs().as_str().to_owned(),
        retention: Some(retention_to_pb(s.retention)),
        max_attempts: s.max_attempts,
    }
}

/// A stored spec, checked like a request's fields.
fn spec_from_pb(t: &str, m: Option<pb::ScheduleSpec>) -> Result<ScheduleSpec, DecodeError> {
    let m = m.ok_or_else(|| bad(t, "spec is required"))?;
    let r = m.retention.unwrap_or_default();
    if m.max_attempts == 0 {
        return Err(bad(t, "max_attempts must be at least 1"));
    }
    ScheduleSpec::check(&ScheduleFields {
        name: m.name,
        database_id: m.database_id,
        destination_id: m.destination_id,
        cron: m.cron,
        timezone: m.timezone,
        jitter_seconds: m.jitter_seconds,
        missed_runs: m.missed_runs,
        retention: Retention {
            keep_last: r.keep_last,
            daily: r.daily,
            weekly: r.weekly,
            monthly: r.monthly,
            yearly: r.yearly,
        },
        max_attempts: m.max_attempts,
    })
    .map_err(|e| bad(t, e))
}

pub(crate) fn time_to_pb(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(to_timestamp)
}

pub(crate) fn time_from_pb(
    t: &str,
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, DecodeError> {
    ts.map(|ts| from_timestamp(&ts).map_err(|e| bad(t, format!("{field} {e}"))))
        .transpose()
}

pub(crate) fn required_time(
    t: &str,
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<DateTime<Utc>, DecodeError> {
    time_from_pb(t, field, ts)?.ok_or_else(|| bad(t, format!("{field} is required")))
}

impl DomainEvent for ScheduleEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ScheduleEvent::ScheduleCreated { .. } => "ScheduleCreated",
            ScheduleEvent::ScheduleChanged { .. } => "ScheduleChanged",
            ScheduleEvent::SchedulePaused => "SchedulePaused",
            ScheduleEvent::ScheduleResumed { .. } => "ScheduleResumed",
            ScheduleEvent::ScheduleRunsSkipped { .. } => "ScheduleRunsSkipped",
            ScheduleEvent::ScheduleDeleted { .. } => "ScheduleDeleted",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            ScheduleEvent::ScheduleCreated { spec, next_due_at } => pb::ScheduleCreated {
                spec: Some(spec_to_pb(spec)),
                next_due_at: time_to_pb(*next_due_at),
            }
            .encode_to_vec(),
            ScheduleEvent::ScheduleChanged {
                version,
                spec,
                next_due_at,
            } => pb::ScheduleChanged {
                version: *version,
                spec: Some(spec_to_pb(spec)),
                next_due_at: time_to_pb(*next_due_at),
            }
            .encode_to_vec(),
            ScheduleEvent::SchedulePaused => pb::SchedulePaused {}.encode_to_vec(),
            ScheduleEvent::ScheduleResumed { next_due_at } => pb::ScheduleResumed {
                next_due_at: time_to_pb(*next_due_at),
            }
            .encode_to_vec(),
            ScheduleEvent::ScheduleRunsSkipped {
                first_due_at,
                last_due_at,
                count,
                next_due_at,
            } => pb::ScheduleRunsSkipped {
                first_due_at: Some(to_timestamp(*first_due_at)),
                last_due_at: Some(to_timestamp(*last_due_at)),
                count: *count,
                next_due_at: time_to_pb(*next_due_at),
            }
            .encode_to_vec(),
            ScheduleEvent::ScheduleDeleted { reason } => pb::ScheduleDeleted {
                reason: reason.clone(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        let known = [
            "ScheduleCreated",
            "ScheduleChanged",
            "SchedulePaused",
            "ScheduleResumed",
            "ScheduleRunsSkipped",
            "ScheduleDeleted",
        ];
        if !known.contains(&t) {
            return Err(DecodeError::UnknownType(t.to_owned()));
        }
        DecodeError::require_v1(t, schema_version)?;
        Ok(match t {
            "ScheduleCreated" => {
                let m = pb::ScheduleCreated::decode(payload).map_err(|e| bad(t, e))?;
                ScheduleEvent::ScheduleCreated {
                    spec: spec_from_pb(t, m.spec)?,
                    next_due_at: time_from_pb(t, "next_due_at", m.next_due_at)?,
                }
            }
            "ScheduleChanged" => {
                let m = pb::ScheduleChanged::decode(payload).map_err(|e| bad(t, e))?;
                if m.version < 2 {
                    return Err(bad(t, "version must be at least 2"));
                }
                ScheduleEvent::ScheduleChanged {
                    version: m.version,
                    spec: spec_from_pb(t, m.spec)?,
                    next_due_at: time_from_pb(t, "next_due_at", m.next_due_at)?,
                }
            }
            "SchedulePaused" => {
                pb::SchedulePaused::decode(payload).map_err(|e| bad(t, e))?;
                ScheduleEvent::SchedulePaused
            }
            "ScheduleResumed" => {
                let m = pb::ScheduleResumed::decode(payload).map_err(|e| bad(t, e))?;
                ScheduleEvent::ScheduleResumed {
                    next_due_at: time_from_pb(t, "next_due_at", m.next_due_at)?,
                }
            }
            "ScheduleRunsSkipped" => {
                let m = pb::ScheduleRunsSkipped::decode(payload).map_err(|e| bad(t, e))?;
                ScheduleEvent::ScheduleRunsSkipped {
                    first_due_at: required_time(t, "first_due_at", m.first_due_at)?,
                    last_due_at: required_time(t, "last_due_at", m.last_due_at)?,
                    count: m.count,
                    next_due_at: time_from_pb(t, "next_due_at", m.next_due_at)?,
                }
            }
            _ => {
                let m = pb::ScheduleDeleted::decode(payload).map_err(|e| bad(t, e))?;
                ScheduleEvent::ScheduleDeleted { reason: m.reason }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn spec() -> ScheduleSpec {
        ScheduleSpec::check(&ScheduleFields {
            name: "nightly".into(),
            database_id: uuid::Uuid::from_u128(1).to_string(),
            destination_id: uuid::Uuid::from_u128(2).to_string(),
            cron: "30 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            jitter_seconds: 300,
            missed_runs: "skip".into(),
            retention: Retention {
                keep_last: 3,
                daily: 7,
                weekly: 4,
                monthly: 12,
                yearly: 5,
            },
            max_attempts: 4,
        })
        .unwrap()
    }

    #[test]
    fn every_event_round_trips_and_bad_payloads_are_refused() {
        let at = |h| Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap();
        for event in [
            ScheduleEvent::ScheduleCreated {
                spec: spec(),
                next_due_at: Some(at(1)),
            },
            ScheduleEvent::ScheduleChanged {
                version: 2,
                spec: spec(),
                next_due_at: None,
            },
            ScheduleEvent::SchedulePaused,
            ScheduleEvent::ScheduleResumed {
                next_due_at: Some(at(2)),
            },
            ScheduleEvent::ScheduleRunsSkipped {
                first_due_at: at(1),
                last_due_at: at(3),
                count: 3,
                next_due_at: Some(at(4)),
            },
            ScheduleEvent::ScheduleDeleted {
                reason: "moved".into(),
            },
        ] {
            let back = ScheduleEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
            assert_eq!(back, event);
        }
        assert!(matches!(
            ScheduleEvent::decode("ScheduleRunsSkipped", 1, &[]),
            Err(DecodeError::Malformed { .. })
        ));
        let mut bad_cron = spec_to_pb(&spec());
        bad_cron.cron = "nope".into();
        let payload = pb::ScheduleCreated {
            spec: Some(bad_cron),
            next_due_at: None,
        }
        .encode_to_vec();
        assert!(matches!(
            ScheduleEvent::decode("ScheduleCreated", 1, &payload),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
