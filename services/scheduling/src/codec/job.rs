//! Encoding of the Job aggregate's events.

use coffer_eventstore::{DecodeError, DomainEvent};
use coffer_proto::events::v1 as pb;
use coffer_proto::time::to_timestamp;
use prost::Message;

use super::bad;
use super::schedule::{required_time, time_from_pb, time_to_pb};
use crate::domain::job::{Artifact, Fired, JobEvent, JobKind, JobSpec, Trigger};

fn optional_id(id: Option<uuid::Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

fn parse_optional_id(t: &str, field: &str, raw: &str) -> Result<Option<uuid::Uuid>, DecodeError> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|e| bad(t, format!("{field}: {e}")))
}

fn spec_to_pb(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        kind: s.kind.as_str().to_owned(),
        trigger: s.trigger.as_str().to_owned(),
        schedule_id: optional_id(s.schedule_id),
        database_id: s.database_id.to_string(),
        destination_id: s.destination_id.to_string(),
        agent_id: s.agent_id.to_string(),
        restore_of: optional_id(s.restore_of),
        due_at: Some(to_timestamp(s.due_at)),
        max_attempts: s.max_attempts,
    }
}

fn spec_from_pb(t: &str, m: Option<pb::JobSpec>) -> Result<JobSpec, DecodeError> {
    let m = m.ok_or_else(|| bad(t, "spec is required"))?;
    if m.max_attempts == 0 {
        return Err(bad(t, "max_attempts must be at least 1"));
    }
    Ok(JobSpec {
        kind: JobKind::parse(&m.kind).map_err(|e| bad(t, e))?,
        trigger: Trigger::parse(&m.trigger).map_err(|e| bad(t, e))?,
        schedule_id: parse_optional_id(t, "schedule_id", &m.schedule_id)?,
        database_id: m.database_id.parse().map_err(|e| bad(t, e))?,
        destination_id: m.destination_id.parse().map_err(|e| bad(t, e))?,
        agent_id: m.agent_id.parse().map_err(|e| bad(t, e))?,
        restore_of: parse_optional_id(t, "restore_of", &m.restore_of)?,
        due_at: required_time(t, "due_at", m.due_at)?,
        max_attempts: m.max_attempts,
    })
}

fn artifact_to_pb(a: &Artifact) -> pb::Artifact {
    pb::Artifact {
        object_key: a.object_key.clone(),
        size_bytes: a.size_bytes,
        sha256: a.sha256.clone(),
        recipient: a.recipient.clone(),
        age_header_sha256: a.age_header_sha256.clone(),
        dump_bytes: a.dump_bytes,
    }
}

fn artifact_from_pb(t: &str, a: pb::Artifact) -> Result<Artifact, DecodeError> {
    Artifact {
        object_key: a.object_key,
        size_bytes: a.size_bytes,
        sha256: a.sha256,
        recipient: a.recipient,
        age_header_sha256: a.age_header_sha256,
        dump_bytes: a.dump_bytes,
    }
    .check()
    .map_err(|e| bad(t, e))
}

const TYPES: [&str; 10] = [
    "JobCreated",
    "JobClaimed",
    "JobStarted",
    "JobSucceeded",
    "JobAttemptFailed",
    "JobLeaseExpired",
    "JobCancelRequested",
    "JobCancelled",
    "BackupExpired",
    "BackupDeleted",
];

impl DomainEvent for JobEvent {
    fn event_type(&self) -> &'static str {
        match self {
            JobEvent::JobCreated { .. } => TYPES[0],
            JobEvent::JobClaimed { .. } => TYPES[1],
            JobEvent::JobStarted { .. } => TYPES[2],
            JobEvent::JobSucceeded { .. } => TYPES[3],
            JobEvent::JobAttemptFailed { .. } => TYPES[4],
            JobEvent::JobLeaseExpired { .. } => TYPES[5],
            JobEvent::JobCancelRequested { .. } => TYPES[6],
            JobEvent::JobCancelled { .. } => TYPES[7],
            JobEvent::BackupExpired { .. } => TYPES[8],
            JobEvent::BackupDeleted { .. } => TYPES[9],
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            JobEvent::JobCreated {
                spec,
                not_before,
                fired,
            } => pb::JobCreated {
                spec: Some(spec_to_pb(spec)),
                not_before: Some(to_timestamp(*not_before)),
                fired: fired.map(|f| pb::Fired {
                    skipped: f.skipped,
                    next_due_at: time_to_pb(f.next_due_at),
                }),
            }
            .encode_to_vec(),
            JobEvent::JobClaimed {
                attempt,
                fencing_token,
                agent_id,
                lease_expires_at,
            } => pb::JobClaimed {
                attempt: *attempt,
                fencing_token: *fencing_token,
                agent_id: agent_id.to_string(),
                lease_expires_at: Some(to_timestamp(*lease_expires_at)),
            }
            .encode_to_vec(),
            JobEvent::JobStarted { attempt } => {
                pb::JobStarted { attempt: *attempt }.encode_to_vec()
            }
            JobEvent::JobSucceeded { attempt, artifact } => pb::JobSucceeded {
                attempt: *attempt,
                artifact: artifact.as_ref().map(artifact_to_pb),
            }
            .encode_to_vec(),
            JobEvent::JobAttemptFailed {
                attempt,
                reason,
                retry_at,
            } => pb::JobAttemptFailed {
                attempt: *attempt,
                reason: reason.clone(),
                retry_at: time_to_pb(*retry_at),
            }
            .encode_to_vec(),
            JobEvent::JobLeaseExpired { attempt, requeued } => pb::JobLeaseExpired {
                attempt: *attempt,
                requeued: *requeued,
            }
            .encode_to_vec(),
            JobEvent::JobCancelRequested { reason } => pb::JobCancelRequested {
                reason: reason.clone(),
            }
            .encode_to_vec(),
            JobEvent::JobCancelled { reason } => pb::JobCancelled {
                reason: reason.clone(),
            }
            .encode_to_vec(),
            JobEvent::BackupExpired { object_key } => pb::BackupExpired {
                object_key: object_key.clone(),
            }
            .encode_to_vec(),
            JobEvent::BackupDeleted { object_key, error } => pb::BackupDeleted {
                object_key: object_key.clone(),
                error: error.clone().unwrap_or_default(),
            }
            .encode_to_vec(),
        }
    }

    fn decode(t: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        if !TYPES.contains(&t) {
            return Err(DecodeError::UnknownType(t.to_owned()));
        }
        DecodeError::require_v1(t, schema_version)?;
        let attempt = |a: u32| {
            if a == 0 {
                Err(bad(t, "attempt must be at least 1"))
            } else {
                Ok(a)
            }
        };
        Ok(match t {
            "JobCreated" => {
                let m = pb::JobCreated::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::JobCreated {
                    spec: spec_from_pb(t, m.spec)?,
                    not_before: required_time(t, "not_before", m.not_before)?,
                    fired: m
                        .fired
                        .map(|f| {
                            Ok::<_, DecodeError>(Fired {
                                skipped: f.skipped,
                                next_due_at: time_from_pb(t, "fired.next_due_at", f.next_due_at)?,
                            })
                        })
                        .transpose()?,
                }
            }
            "JobClaimed" => {
                let m = pb::JobClaimed::decode(payload).map_err(|e| bad(t, e))?;
                if m.fencing_token == 0 {
                    return Err(bad(t, "fencing_token must be at least 1"));
                }
                JobEvent::JobClaimed {
                    attempt: attempt(m.attempt)?,
                    fencing_token: m.fencing_token,
                    agent_id: m.agent_id.parse().map_err(|e| bad(t, e))?,
                    lease_expires_at: required_time(t, "lease_expires_at", m.lease_expires_at)?,
                }
            }
            "JobStarted" => {
                let m = pb::JobStarted::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::JobStarted {
                    attempt: attempt(m.attempt)?,
                }
            }
            "JobSucceeded" => {
                let m = pb::JobSucceeded::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::JobSucceeded {
                    attempt: attempt(m.attempt)?,
                    artifact: m.artifact.map(|a| artifact_from_pb(t, a)).transpose()?,
                }
            }
            "JobAttemptFailed" => {
                let m = pb::JobAttemptFailed::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::JobAttemptFailed {
                    attempt: attempt(m.attempt)?,
                    reason: m.reason,
                    retry_at: time_from_pb(t, "retry_at", m.retry_at)?,
                }
            }
            "JobLeaseExpired" => {
                let m = pb::JobLeaseExpired::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::JobLeaseExpired {
                    attempt: attempt(m.attempt)?,
                    requeued: m.requeued,
                }
            }
            "JobCancelRequested" => {
                let m = pb::JobCancelRequested::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::JobCancelRequested { reason: m.reason }
            }
            "JobCancelled" => {
                let m = pb::JobCancelled::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::JobCancelled { reason: m.reason }
            }
            "BackupExpired" => {
                let m = pb::BackupExpired::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::BackupExpired {
                    object_key: m.object_key,
                }
            }
            _ => {
                let m = pb::BackupDeleted::decode(payload).map_err(|e| bad(t, e))?;
                JobEvent::BackupDeleted {
                    object_key: m.object_key,
                    error: (!m.error.is_empty()).then_some(m.error),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use coffer_types::AgentId;

    use super::*;

    #[test]
    fn every_event_round_trips_and_bad_payloads_are_refused() {
        let at = |s| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, s).unwrap();
        let spec = JobSpec {
            kind: JobKind::Restore,
            trigger: Trigger::Manual,
            schedule_id: None,
            database_id: uuid::Uuid::from_u128(1),
            destination_id: uuid::Uuid::from_u128(2),
            agent_id: AgentId::from(uuid::Uuid::from_u128(3)),
            restore_of: Some(uuid::Uuid::from_u128(4)),
            due_at: at(0),
            max_attempts: 2,
        };
        let artifact = Artifact {
            object_key: "a/b.age".into(),
            size_bytes: 5,
            sha256: "0".repeat(64),
            recipient: "age1xyz".into(),
            age_header_sha256: "f".repeat(64),
            dump_bytes: 4096,
        };
        for event in [
            JobEvent::JobCreated {
                spec: spec.clone(),
                not_before: at(1),
                fired: None,
            },
            JobEvent::JobCreated {
                spec,
                not_before: at(1),
                fired: Some(Fired {
                    skipped: 3,
                    next_due_at: Some(at(50)),
                }),
            },
            JobEvent::JobClaimed {
                attempt: 1,
                fencing_token: 1,
                agent_id: AgentId::from(uuid::Uuid::from_u128(3)),
                lease_expires_at: at(30),
            },
            JobEvent::JobStarted { attempt: 1 },
            JobEvent::JobSucceeded {
                attempt: 1,
                artifact: Some(artifact),
            },
            JobEvent::JobAttemptFailed {
                attempt: 2,
                reason: "refused".into(),
                retry_at: Some(at(40)),
            },
            JobEvent::JobLeaseExpired {
                attempt: 2,
                requeued: false,
            },
            JobEvent::JobCancelRequested {
                reason: "stop".into(),
            },
            JobEvent::JobCancelled {
                reason: "stop".into(),
            },
            JobEvent::BackupExpired {
                object_key: "a/b.age".into(),
            },
            JobEvent::BackupDeleted {
                object_key: "a/b.age".into(),
                error: Some("denied".into()),
            },
            JobEvent::BackupDeleted {
                object_key: "a/b.age".into(),
                error: None,
            },
        ] {
            let back = JobEvent::decode(event.event_type(), 1, &event.encode()).unwrap();
            assert_eq!(back, event);
        }
        assert!(matches!(
            JobEvent::decode("JobVanished", 1, &[]),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            JobEvent::decode("JobStarted", 1, &[]),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
