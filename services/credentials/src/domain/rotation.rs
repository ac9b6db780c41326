//! The MasterKeyRotation aggregate: moving every wrapped key of the service (credential data
//! keys, org age keys) onto the current KMS master key. One stream for the whole platform (in
//! the platform org), holding every rotation in turn; at most one runs at a time.
//!
//! The re-wrapping itself happens in the secret tables, row by row, each row moved by a
//! compare-and-set on its master key id; the stream records the rotation's start, its
//! progress after every batch, and its end, so progress is queryable and a restarted service
//! knows to resume.

use coffer_eventstore::Aggregate;

use super::{FieldError, clean_reason};

/// The rotation stream's state: the latest rotation, if any.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MasterKeyRotation {
    /// The latest rotation.
    pub latest: Option<Rotation>,
}

/// One rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// 1 for the first rotation of the platform, then 2, …
    pub number: u32,
    /// The master key everything moves onto.
    pub to_key_id: String,
    /// Why, for the audit log.
    pub reason: String,
    /// Wrapped keys not under the target when it started.
    pub pending_at_start: u64,
    /// Wrapped keys this rotation's recorded batches moved. Keys a batch moved before a crash
    /// cut it short are moved but not counted; the coverage report is the proof.
    pub rewrapped: u64,
    /// Wrapped keys still under another master key at the last progress report.
    pub remaining: u64,
    /// Whether it finished: nothing remained under another key.
    pub completed: bool,
}

impl MasterKeyRotation {
    /// The rotation in progress, if one is.
    pub fn running(&self) -> Option<&Rotation> {
        self.latest.as_ref().filter(|r| !r.completed)
    }
}

/// Commands.
#[derive(Debug, Clone)]
pub enum RotationCommand {
    /// Start a rotation onto `to_key_id`, or resume the running one if it has that target.
    Start {
        /// The target master key.
        to_key_id: String,
        /// Why.
        reason: String,
        /// Wrapped keys currently under another master key.
        pending: u64,
    },
    /// Record a finished batch.
    Progress {
        /// Keys this batch moved.
        rewrapped: u64,
        /// Keys still under another master key.
        remaining: u64,
    },
    /// Record the end: nothing remains under another master key.
    Complete,
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationEvent {
    /// A rotation began.
    MasterKeyRotationStarted {
        /// Its number.
        number: u32,
        /// The target master key.
        to_key_id: String,
        /// Why.
        reason: String,
        /// Wrapped keys under another master key at the start.
        pending: u64,
    },
    /// A batch of wrapped keys moved onto the target.
    MasterKeyRotationProgressed {
        /// The rotation.
        number: u32,
        /// Keys this batch moved.
        rewrapped: u64,
        /// Keys still under another master key.
        remaining: u64,
    },
    /// Every wrapped key is under the target.
    MasterKeyRotationCompleted {
        /// The rotation.
        number: u32,
        /// Keys it moved in all.
        rewrapped: u64,
    },
}

/// Why a rotation command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Another rotation, onto another key, is running (FailedPrecondition).
    #[error("a rotation onto {0} is still running; let it finish first")]
    OtherRunning(String),
    /// No rotation is running (FailedPrecondition).
    #[error("no master-key rotation is running")]
    NotRunning,
}

impl Aggregate for MasterKeyRotation {
    const TYPE: &'static str = "MasterKeyRotation";
    type Command = RotationCommand;
    type Event = RotationEvent;
    type Error = RotationError;

    fn decide(&self, command: RotationCommand) -> Result<Vec<RotationEvent>, RotationError> {
        match command {
            RotationCommand::Start {
                to_key_id,
                reason,
                pending,
            } => {
                if to_key_id.trim().is_empty() {
                    return Err(FieldError::new("new_key_id", "must not be empty").into());
                }
                let reason = clean_reason(&reason)?;
                match self.running() {
                    Some(running) if running.to_key_id == to_key_id => Ok(vec![]),
                    Some(running) => Err(RotationError::OtherRunning(running.to_key_id.clone())),
                    None => Ok(vec![RotationEvent::MasterKeyRotationStarted {
                        number: self.latest.as_ref().map_or(1, |r| r.number + 1),
                        to_key_id,
                        reason,
                        pending,
                    }]),
                }
            }
            RotationCommand::Progress {
                rewrapped,
                remaining,
            } => {
                let running = self.running().ok_or(RotationError::NotRunning)?;
                Ok(vec![RotationEvent::MasterKeyRotationProgressed {
                    number: running.number,
                    rewrapped,
                    remaining,
                }])
            }
            RotationCommand::Complete => {
                let running = self.running().ok_or(RotationError::NotRunning)?;
                Ok(vec![RotationEvent::MasterKeyRotationCompleted {
                    number: running.number,
                    rewrapped: running.rewrapped,
                }])
            }
        }
    }

    fn evolve(mut self, event: &RotationEvent) -> Self {
        match event {
            RotationEvent::MasterKeyRotationStarted {
                number,
                to_key_id,
                reason,
                pending,
            } => {
                self.latest = Some(Rotation {
                    number: *number,
                    to_key_id: to_key_id.clone(),
                    reason: reason.clone(),
                    pending_at_start: *pending,
                    rewrapped: 0,
                    remaining: *pending,
                    completed: false,
                });
            }
            RotationEvent::MasterKeyRotationProgressed {
                rewrapped,
                remaining,
                ..
            } => {
                if let Some(r) = self.latest.as_mut() {
                    r.rewrapped += rewrapped;
                    r.remaining = *remaining;
                }
            }
            RotationEvent::MasterKeyRotationCompleted { .. } => {
                if let Some(r) = self.latest.as_mut() {
                    r.remaining = 0;
                    r.completed = true;
                }
            }
        }
        self
    }
}

/// The rotation stream's aggregate id: one fixed name-based UUID for the platform.
pub fn rotation_stream_id() -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"coffer:credentials:master-key-rotation",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(state: MasterKeyRotation, command: RotationCommand) -> MasterKeyRotation {
        state
            .decide(command)
            .unwrap()
            .iter()
            .fold(state, MasterKeyRotation::evolve)
    }

    fn start(to: &str) -> RotationCommand {
        RotationCommand::Start {
            to_key_id: to.into(),
            reason: "yearly".into(),
            pending: 5,
        }
    }

    #[test]
    fn a_rotation_runs_to_completion_and_the_next_one_is_numbered_after_it() {
        let state = apply(MasterKeyRotation::default(), start("k2"));
        // Starting again onto the same key resumes it: no new event.
        assert_eq!(state.decide(start("k2")), Ok(vec![]));
        assert_eq!(
            state.decide(start("k3")),
            Err(RotationError::OtherRunning("k2".into()))
        );
        let state = apply(
            state,
            RotationCommand::Progress {
                rewrapped: 3,
                remaining: 2,
            },
        );
        let state = apply(
            state,
            RotationCommand::Progress {
                rewrapped: 2,
                remaining: 0,
            },
        );
        let state = apply(state, RotationCommand::Complete);
        let done = state.latest.clone().unwrap();
        assert_eq!(
            (done.rewrapped, done.remaining, done.completed),
            (5, 0, true)
        );
        assert_eq!(
            state.decide(RotationCommand::Complete),
            Err(RotationError::NotRunning)
        );
        let next = apply(state, start("k3"));
        assert_eq!(next.running().unwrap().number, 2);
    }

    #[test]
    fn a_rotation_needs_a_target_and_a_reason() {
        let no_key = RotationCommand::Start {
            to_key_id: " ".into(),
            reason: "x".into(),
            pending: 0,
        };
        assert!(matches!(
            MasterKeyRotation::default().decide(no_key),
            Err(RotationError::Invalid(e)) if e.field == "new_key_id"
        ));
        let no_reason = RotationCommand::Start {
            to_key_id: "k2".into(),
            reason: "".into(),
            pending: 0,
        };
        assert!(matches!(
            MasterKeyRotation::default().decide(no_reason),
            Err(RotationError::Invalid(e)) if e.field == "reason"
        ));
    }
}
