//! The Schedule aggregate: back up one database to one destination when a cron expression
//! says so, keep what a GFS policy says, retry a failed run a bounded number of times.
//!
//! Everything that depends on the clock is decided from the `now` a command carries and
//! recorded in the event (the next due time above all), so replaying the events gives the same
//! state on every replica and a rebuilt read model equals the original.
//!
//! A run that fires is not an event of the schedule: it is the creation of its job, whose id
//! is derived from (schedule, due time) (see [`super::job::scheduled_job_id`]), so two
//! schedulers firing the same run append version 1 of the same job and one loses, and a
//! schedule's own stream stays as short as its configuration history however long it runs.
//! Only missed runs skipped by the policy are recorded here.

use chrono::{DateTime, Utc};
use coffer_eventstore::Aggregate;
use coffer_types::clean_name;

use super::retention::Retention;
use super::timing::Timing;
use super::{FieldError, MAX_REASON_CHARS};

/// Longest schedule name.
pub const MAX_NAME_CHARS: usize = 128;
/// Most attempts one run may take (the first and the retries).
pub const MAX_ATTEMPTS: u32 = 10;
/// Attempts when the request says 0.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// A schedule's fields as a request gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleFields {
    /// Unique among the org's live schedules.
    pub name: String,
    /// The database to back up.
    pub database_id: String,
    /// Where the backups go.
    pub destination_id: String,
    /// 5 or 6 fields.
    pub cron: String,
    /// IANA name; empty means UTC.
    pub timezone: String,
    /// Upper bound of the random delay added to each run, in seconds.
    pub jitter_seconds: u32,
    /// `run_once` (default) or `skip`.
    pub missed_runs: String,
    /// The GFS policy; all zeros keeps everything.
    pub retention: Retention,
    /// 1..=10; 0 means 3.
    pub max_attempts: u32,
}

/// A schedule's checked fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// Its name.
    pub name: String,
    /// The database.
    pub database_id: uuid::Uuid,
    /// The destination.
    pub destination_id: uuid::Uuid,
    /// When runs are due.
    pub timing: Timing,
    /// What to keep.
    pub retention: Retention,
    /// Attempts per run.
    pub max_attempts: u32,
}

fn check_id(field: &'static str, raw: &str) -> Result<uuid::Uuid, FieldError> {
    raw.trim()
        .parse()
        .map_err(|_| FieldError::new(field, "must be a UUID"))
}

impl ScheduleSpec {
    /// Checks every field; the error names the first that breaks a rule.
    pub fn check(fields: &ScheduleFields) -> Result<Self, FieldError> {
        let name = clean_name("name", &fields.name, MAX_NAME_CHARS)?;
        let database_id = check_id("database_id", &fields.database_id)?;
        let destination_id = check_id("destination_id", &fields.destination_id)?;
        let timing = Timing::check(
            &fields.cron,
            &fields.timezone,
            fields.jitter_seconds,
            &fields.missed_runs,
        )?;
        let retention = fields.retention.check()?;
        let max_attempts = match fields.max_attempts {
            0 => DEFAULT_ATTEMPTS,
            n if n <= MAX_ATTEMPTS => n,
            _ => {
                return Err(FieldError::new(
                    "max_attempts",
                    format!("must be 1..={MAX_ATTEMPTS}, or 0 for {DEFAULT_ATTEMPTS}"),
                ));
            }
        };
        Ok(ScheduleSpec {
            name,
            database_id,
            destination_id,
            timing,
            retention,
            max_attempts,
        })
    }
}

/// State of one schedule.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Its fields, once created.
    pub spec: Option<ScheduleSpec>,
    /// Paused: nothing fires until it is resumed.
    pub paused: bool,
    /// Deleted.
    pub deleted: bool,
    /// 1 on creation, plus one per change.
    pub version: u32,
}

/// Commands. Each carries the time it is decided at.
#[derive(Debug, Clone)]
pub enum ScheduleCommand {
    /// Create it (version 1), waiting for the first due time after `now`.
    CreateSchedule {
        /// Its fields.
        fields: ScheduleFields,
        /// Now.
        now: DateTime<Utc>,
    },
    /// Replace every field; a running schedule waits for the first due time after `now` of
    /// the new timing.
    ChangeSchedule {
        /// Its new fields.
        fields: ScheduleFields,
        /// Now.
        now: DateTime<Utc>,
    },
    /// Stop firing.
    PauseSchedule,
    /// Fire again from the first due time after `now` (runs that fell due while paused are
    /// not owed).
    ResumeSchedule {
        /// Now.
        now: DateTime<Utc>,
    },
    /// Record that the runs due from `first_due_at` to `last_due_at` were missed and skipped,
    /// as the schedule's policy says (see [`Timing::fire`]).
    SkipRuns {
        /// The first missed due time.
        first_due_at: DateTime<Utc>,
        /// The last.
        last_due_at: DateTime<Utc>,
        /// How many.
        count: u32,
        /// The next due time.
        next_due_at: Option<DateTime<Utc>>,
    },
    /// Delete it.
    DeleteSchedule {
        /// Why (may be empty).
        reason: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleEvent {
    /// Created (version 1).
    ScheduleCreated {
        /// Its fields.
        spec: ScheduleSpec,
        /// The first due time.
        next_due_at: Option<DateTime<Utc>>,
    },
    /// Its fields were replaced.
    ScheduleChanged {
        /// The new version.
        version: u32,
        /// The new fields.
        spec: ScheduleSpec,
        /// The due time it now waits for (`None` while paused).
        next_due_at: Option<DateTime<Utc>>,
    },
    /// Paused.
    SchedulePaused,
    /// Resumed.
    ScheduleResumed {
        /// The due time it now waits for.
        next_due_at: Option<DateTime<Utc>>,
    },
    /// Runs missed while no scheduler ran were skipped, as the policy says.
    ScheduleRunsSkipped {
        /// The first missed due time.
        first_due_at: DateTime<Utc>,
        /// The last.
        last_due_at: DateTime<Utc>,
        /// How many.
        count: u32,
        /// The next due time.
        next_due_at: Option<DateTime<Utc>>,
    },
    /// Deleted.
    ScheduleDeleted {
        /// Why.
        reason: String,
    },
}

/// Why a schedule command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such schedule, or deleted (NotFound).
    #[error("schedule not found")]
    NotFound,
    /// The id is taken (AlreadyExists).
    #[error("schedule already exists")]
    AlreadyExists,
    /// Pausing a paused schedule, resuming a running one (FailedPrecondition).
    #[error("schedule is already {0}")]
    Already(&'static str),
    /// Runs skipped on a paused schedule.
    #[error("schedule is paused")]
    Paused,
}

impl Aggregate for Schedule {
    const TYPE: &'static str = "Schedule";
    type Command = ScheduleCommand;
    type Event = ScheduleEvent;
    type Error = ScheduleError;

    fn decide(&self, command: ScheduleCommand) -> Result<Vec<ScheduleEvent>, ScheduleError> {
        match command {
            ScheduleCommand::CreateSchedule { fields, now } => {
                if self.spec.is_some() {
                    return Err(ScheduleError::AlreadyExists);
                }
                let spec = ScheduleSpec::check(&fields)?;
                let next_due_at = spec.timing.next_due(now);
                Ok(vec![ScheduleEvent::ScheduleCreated { spec, next_due_at }])
            }
            ScheduleCommand::ChangeSchedule { fields, now } => {
                self.live()?;
                let spec = ScheduleSpec::check(&fields)?;
                let next_due_at = if self.paused {
                    None
                } else {
                    spec.timing.next_due(now)
                };
                Ok(vec![ScheduleEvent::ScheduleChanged {
                    version: self.version + 1,
                    spec,
                    next_due_at,
                }])
            }
            ScheduleCommand::PauseSchedule => {
                self.live()?;
                if self.paused {
                    return Err(ScheduleError::Already("paused"));
                }
                Ok(vec![ScheduleEvent::SchedulePaused])
            }
            ScheduleCommand::ResumeSchedule { now } => {
                let spec = self.live()?;
                if !self.paused {
                    return Err(ScheduleError::Already("running"));
                }
                Ok(vec![ScheduleEvent::ScheduleResumed {
                    next_due_at: spec.timing.next_due(now),
                }])
            }
            ScheduleCommand::SkipRuns {
                first_due_at,
                last_due_at,
                count,
                next_due_at,
            } => {
                self.live()?;
                if self.paused {
                    return Err(ScheduleError::Paused);
                }
                Ok(vec![ScheduleEvent::ScheduleRunsSkipped {
                    first_due_at,
                    last_due_at,
                    count,
                    next_due_at,
                }])
            }
            ScheduleCommand::DeleteSchedule { reason } => {
                self.live()?;
                let reason = if reason.trim().is_empty() {
                    String::new()
                } else {
                    clean_name("reason", &reason, MAX_REASON_CHARS)?
                };
                Ok(vec![ScheduleEvent::ScheduleDeleted { reason }])
            }
        }
    }

    fn evolve(mut self, event: &ScheduleEvent) -> Self {
        match event {
            ScheduleEvent::ScheduleCreated { spec, .. } => {
                self.spec = Some(spec.clone());
                self.version = 1;
            }
            ScheduleEvent::ScheduleChanged { version, spec, .. } => {
                self.spec = Some(spec.clone());
                self.version = *version;
            }
            ScheduleEvent::SchedulePaused => self.paused = true,
            ScheduleEvent::ScheduleResumed { .. } => self.paused = false,
            ScheduleEvent::ScheduleRunsSkipped { .. } => {}
            ScheduleEvent::ScheduleDeleted { .. } => self.deleted = true,
        }
        self
    }
}

impl Schedule {
    fn live(&self) -> Result<&ScheduleSpec, ScheduleError> {
        match &self.spec {
            Some(spec) if !self.deleted => Ok(spec),
            _ => Err(ScheduleError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use coffer_eventstore::replay;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap()
    }

    fn fields() -> ScheduleFields {
        ScheduleFields {
            name: "nightly".into(),
            database_id: uuid::Uuid::from_u128(1).to_string(),
            destination_id: uuid::Uuid::from_u128(2).to_string(),
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            ..ScheduleFields::default()
        }
    }

    fn created() -> Vec<ScheduleEvent> {
        Schedule::default()
            .decide(ScheduleCommand::CreateSchedule {
                fields: fields(),
                now: at(0, 10),
            })
            .unwrap()
    }

    #[test]
    fn given_nothing_when_created_then_it_waits_for_the_first_due_time() {
        let events = created();
        assert!(matches!(
            &events[0],
            ScheduleEvent::ScheduleCreated { next_due_at, spec } if *next_due_at == Some(at(1, 0)) && spec.max_attempts == DEFAULT_ATTEMPTS
        ));
        assert_eq!(
            replay::<Schedule>(&events).decide(ScheduleCommand::CreateSchedule {
                fields: fields(),
                now: at(0, 10),
            }),
            Err(ScheduleError::AlreadyExists)
        );
    }

    #[test]
    fn given_a_paused_schedule_then_it_resumes_from_now_and_skips_nothing_while_paused() {
        let mut history = created();
        let state = replay::<Schedule>(&history);
        history.extend(state.decide(ScheduleCommand::PauseSchedule).unwrap());
        let paused = replay::<Schedule>(&history);
        assert!(paused.paused);
        assert_eq!(
            paused.decide(ScheduleCommand::PauseSchedule),
            Err(ScheduleError::Already("paused"))
        );
        let skip = ScheduleCommand::SkipRuns {
            first_due_at: at(1, 0),
            last_due_at: at(2, 0),
            count: 2,
            next_due_at: Some(at(3, 0)),
        };
        assert_eq!(paused.decide(skip), Err(ScheduleError::Paused));
        let resumed = paused
            .decide(ScheduleCommand::ResumeSchedule { now: at(5, 30) })
            .unwrap();
        assert_eq!(
            resumed,
            vec![ScheduleEvent::ScheduleResumed {
                next_due_at: Some(at(6, 0))
            }],
            "runs due while paused are not owed"
        );
    }

    #[test]
    fn given_a_change_then_a_running_schedule_waits_for_the_new_timing() {
        let state = replay::<Schedule>(&created());
        let events = state
            .decide(ScheduleCommand::ChangeSchedule {
                fields: ScheduleFields {
                    cron: "30 4 * * *".into(),
                    ..fields()
                },
                now: at(0, 20),
            })
            .unwrap();
        assert!(matches!(
            &events[0],
            ScheduleEvent::ScheduleChanged { version: 2, next_due_at, .. } if *next_due_at == Some(at(4, 30))
        ));
    }

    #[test]
    fn given_a_deleted_schedule_then_every_command_is_not_found() {
        let mut history = created();
        history.extend(
            replay::<Schedule>(&history)
                .decide(ScheduleCommand::DeleteSchedule {
                    reason: "moved".into(),
                })
                .unwrap(),
        );
        let deleted = replay::<Schedule>(&history);
        assert_eq!(
            deleted.decide(ScheduleCommand::PauseSchedule),
            Err(ScheduleError::NotFound)
        );
    }

    #[test]
    fn given_bad_fields_then_the_error_names_the_field() {
        let bad = |f: ScheduleFields| {
            Schedule::default()
                .decide(ScheduleCommand::CreateSchedule {
                    fields: f,
                    now: at(0, 0),
                })
                .unwrap_err()
        };
        let field = |e: ScheduleError| match e {
            ScheduleError::Invalid(f) => f.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(bad(ScheduleFields {
                name: " ".into(),
                ..fields()
            })),
            "name"
        );
        assert_eq!(
            field(bad(ScheduleFields {
                database_id: "x".into(),
                ..fields()
            })),
            "database_id"
        );
        assert_eq!(
            field(bad(ScheduleFields {
                cron: "* * *".into(),
                ..fields()
            })),
            "cron"
        );
        assert_eq!(
            field(bad(ScheduleFields {
                timezone: "Europe/Atlantis".into(),
                ..fields()
            })),
            "timezone"
        );
        assert_eq!(
            field(bad(ScheduleFields {
                max_attempts: 11,
                ..fields()
            })),
            "max_attempts"
        );
    }
}
