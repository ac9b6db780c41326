//! The Job aggregate: one backup or restore, from the moment it is due to its outcome.
//!
//! ```text
//! Pending ──claim──▶ Claimed ──first heartbeat──▶ Running ──▶ Succeeded (artifact)
//!    ▲                  │                            │     ├─▶ Failed (reason, attempts spent)
//!    └── retry (backoff) or requeue (lease expired) ─┘     ├─▶ Cancelled
//!                                                          └─▶ TimedOut (lease expired, attempts spent)
//! ```
//!
//! Each claim hands out a fencing token one higher than the last; every report must carry
//! the current one, so an agent whose lease expired (and whose job another attempt now owns)
//! cannot complete, fail or heartbeat it. Times are decided from the `now` a command carries and
//! recorded in the events.

use chrono::{DateTime, Duration, Utc};
use coffer_eventstore::Aggregate;
use coffer_types::{AgentId, clean_name};

use super::{FieldError, MAX_REASON_CHARS};

/// Backup or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Dump the database, compress, encrypt, upload.
    Backup,
    /// Download a backup, decrypt, decompress, restore into the database.
    Restore,
}

impl JobKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "backup" => Ok(JobKind::Backup),
            "restore" => Ok(JobKind::Restore),
            _ => Err(FieldError::new("kind", "must be backup or restore")),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JobState {
    /// Waiting for its agent (from `not_before`).
    #[default]
    Pending,
    /// Handed to its agent, which holds the lease.
    Claimed,
    /// The agent reported it is working.
    Running,
    /// Done; a backup has its artifact.
    Succeeded,
    /// Failed with every attempt spent.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Its lease expired with every attempt spent.
    TimedOut,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Claimed,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Claimed => "claimed",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(
                    "state",
                    "must be one of pending, claimed, running, succeeded, failed, cancelled, timed_out",
                )
            })
    }

    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    /// Whether an agent holds it.
    pub fn is_held(self) -> bool {
        matches!(self, JobState::Claimed | JobState::Running)
    }
}

/// Why a job exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Its schedule fell due.
    Schedule,
    /// Someone asked for a run now.
    Manual,
}

impl Trigger {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "schedule" => Ok(Trigger::Schedule),
            "manual" => Ok(Trigger::Manual),
            _ => Err(FieldError::new("trigger", "must be schedule or manual")),
        }
    }
}

/// What a finished backup left in the destination. The audit log commits to every backup
/// object through this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The object's key in the destination.
    pub object_key: String,
    /// Its size in bytes (the ciphertext).
    pub size_bytes: u64,
    /// SHA-256 of the ciphertext, lowercase hex.
    pub sha256: String,
    /// The age recipient it is encrypted to.
    pub recipient: String,
    /// SHA-256 of its age header, lowercase hex: names the backup to credentials' file-key
    /// unwrap for a restore.
    pub age_header_sha256: String,
    /// Bytes the dump program wrote, which the object decompresses to: a restore refuses
    /// more. 0 when the agent did not record it.
    pub dump_bytes: u64,
}

/// Longest object key (S3's limit).
pub const MAX_OBJECT_KEY_BYTES: usize = 1024;

fn check_hex_digest(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let digest = raw.trim().to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FieldError::new(
            field,
            "must be a SHA-256 digest: 64 hexadecimal characters",
        ));
    }
    Ok(digest)
}

impl Artifact {
    /// Checks an artifact record as an agent reports it.
    pub fn check(self) -> Result<Self, FieldError> {
        let object_key = self.object_key.trim().to_owned();
        if object_key.is_empty() || object_key.len() > MAX_OBJECT_KEY_BYTES {
            return Err(FieldError::new(
                "artifact.object_key",
                format!("must be 1..={MAX_OBJECT_KEY_BYTES} bytes"),
            ));
        }
        if object_key.chars().any(char::is_control) {
            return Err(FieldError::new(
                "artifact.object_key",
                "must not contain control characters",
            ));
        }
        if self.size_bytes == 0 {
            return Err(FieldError::new(
                "artifact.size_bytes",
                "must be greater than 0",
            ));
        }
        let recipient = self.recipient.trim().to_owned();
        if !recipient.starts_with("age1") || recipient.len() > 100 {
            return Err(FieldError::new(
                "artifact.recipient",
                "must be an age X25519 recipient (age1…)",
            ));
        }
        Ok(Artifact {
            object_key,
            size_bytes: self.size_bytes,
            sha256: check_hex_digest("artifact.sha256", &self.sha256)?,
            recipient,
            age_header_sha256: check_hex_digest(
                "artifact.age_header_sha256",
                &self.age_header_sha256,
            )?,
            dump_bytes: self.dump_bytes,
        })
    }
}

/// What a job is for; fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Backup or restore.
    pub kind: JobKind,
    /// Why it exists.
    pub trigger: Trigger,
    /// The schedule it belongs to (every backup has one; a restore has none).
    pub schedule_id: Option<uuid::Uuid>,
    /// The database it dumps or restores into.
    pub database_id: uuid::Uuid,
    /// The destination it writes to or reads from.
    pub destination_id: uuid::Uuid,
    /// The agent that runs it.
    pub agent_id: AgentId,
    /// For a restore: the backup job whose artifact it restores.
    pub restore_of: Option<uuid::Uuid>,
    /// The due time it is for (a manual run: when it was asked for).
    pub due_at: DateTime<Utc>,
    /// Attempts it may take.
    pub max_attempts: u32,
}

/// What a job made by its schedule firing records for the schedule: the due times it stands
/// for, and the schedule's next due time after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// Earlier due times, missed while no scheduler ran, folded into this run.
    pub skipped: u32,
    /// The schedule's next due time.
    pub next_due_at: Option<DateTime<Utc>>,
}

/// The id of the job a schedule's run due at `due_at` becomes: a UUIDv7 whose timestamp is the
/// due time and whose other bits come from SHA-256(schedule, due time). Every scheduler derives
/// the same id for the same run, so however many fire it, the event store keeps one creation
/// (the second append of version 1 conflicts).
pub fn scheduled_job_id(schedule: uuid::Uuid, due_at: DateTime<Utc>) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"coffer-scheduled-job")
        .chain_update(schedule.as_bytes())
        .chain_update(due_at.timestamp_micros().to_be_bytes())
        .finalize();
    let random: [u8; 10] = digest[..10].try_into().expect("10 of 32 bytes");
    let millis = u64::try_from(due_at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// How long a failed attempt waits before the next: `base · 2^(attempt-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after attempt `attempt` (from 1) failed.
    pub fn after(self, attempt: u32) -> Duration {
        let factor = 1_i32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(i32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |wait| wait.min(self.max))
    }
}

/// The key a backup attempt writes its object at, relative to the destination's prefix:
/// `<database>/<due time, UTC>_<job>_a<attempt>.dump.zst.age`. Scheduling names it (the claim
/// carries it) and refuses a completion naming any other, so an agent cannot point retention,
/// which deletes what completions recorded, at an object the job did not write. The attempt is
/// part of it so that an attempt whose lease expired while it was still uploading cannot
/// overwrite the next attempt's object.
pub fn backup_object_key(job_id: uuid::Uuid, spec: &JobSpec, attempt: u32) -> String {
    format!(
        "{}/{}_{job_id}_a{attempt}.dump.zst.age",
        spec.database_id,
        spec.due_at.format("%Y-%m-%dT%H%M%SZ"),
    )
}

/// State of one job.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Job {
    /// What it is for, once created.
    pub spec: Option<JobSpec>,
    /// Where it is.
    pub state: JobState,
    /// The current (or last) attempt, from 1.
    pub attempt: u32,
    /// The token of the current claim; 0 before the first.
    pub fencing_token: u64,
    /// Not claimable before this.
    pub not_before: Option<DateTime<Utc>>,
    /// Cancellation was asked for while an agent held it.
    pub cancel_requested: bool,
    /// The backup's artifact, once it succeeded.
    pub artifact: Option<Artifact>,
    /// Why it failed, timed out or was cancelled.
    pub reason: String,
    /// Retention expired its backup (the deletion may still be pending).
    pub expired: bool,
    /// Its backup object was deleted from the destination.
    pub deleted: bool,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum JobCommand {
    /// Create it, claimable from `not_before`.
    CreateJob {
        /// What it is for.
        spec: JobSpec,
        /// Claimable from.
        not_before: DateTime<Utc>,
        /// For a run its schedule fired: what the firing records.
        fired: Option<Fired>,
    },
    /// Hand it to `agent` for `lease`.
    ClaimJob {
        /// The claiming agent.
        agent: AgentId,
        /// Now.
        now: DateTime<Utc>,
        /// How long the claim holds without a heartbeat.
        lease: Duration,
    },
    /// The agent's first heartbeat: it is working.
    StartJob {
        /// The claim's token.
        fencing_token: u64,
    },
    /// The agent finished.
    CompleteJob {
        /// The job (a backup's artifact must lie at the key it names).
        job_id: uuid::Uuid,
        /// The claim's token.
        fencing_token: u64,
        /// What it left (required for a backup).
        artifact: Option<Artifact>,
    },
    /// The agent failed.
    FailJob {
        /// The claim's token.
        fencing_token: u64,
        /// Why.
        reason: String,
        /// Now.
        now: DateTime<Utc>,
        /// The retry policy.
        backoff: Backoff,
    },
    /// The claim's lease ran out without a heartbeat.
    ExpireLease {
        /// The claim whose lease ran out.
        fencing_token: u64,
        /// Now.
        now: DateTime<Utc>,
    },
    /// Cancel it: at once if no agent holds it, else ask the agent.
    CancelJob {
        /// Why (may be empty).
        reason: String,
    },
    /// The agent stopped after a cancellation request.
    ConfirmCancelled {
        /// The claim's token.
        fencing_token: u64,
    },
    /// Retention expired this succeeded backup: recorded before the object is deleted.
    ExpireBackup,
    /// The outcome of deleting the expired backup's object.
    RecordDeletion {
        /// `None`: deleted (or already gone); `Some(why)`: the destination refused or failed.
        error: Option<String>,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// Created (attempt 1).
    JobCreated {
        /// What it is for.
        spec: JobSpec,
        /// Claimable from.
        not_before: DateTime<Utc>,
        /// For a run its schedule fired: the runs it stands for and the schedule's next due
        /// time.
        fired: Option<Fired>,
    },
    /// Handed to its agent.
    JobClaimed {
        /// The attempt.
        attempt: u32,
        /// The claim's token.
        fencing_token: u64,
        /// The agent.
        agent_id: AgentId,
        /// The lease's first expiry.
        lease_expires_at: DateTime<Utc>,
    },
    /// The agent is working on it.
    JobStarted {
        /// The attempt.
        attempt: u32,
    },
    /// Done.
    JobSucceeded {
        /// The attempt that did it.
        attempt: u32,
        /// The backup's artifact.
        artifact: Option<Artifact>,
    },
    /// An attempt failed; `retry_at` is when the next may start, or `None` when every
    /// attempt is spent (the job failed).
    JobAttemptFailed {
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: String,
        /// The next attempt's earliest start.
        retry_at: Option<DateTime<Utc>>,
    },
    /// The claim's lease ran out; `requeued` says whether another attempt follows (else the
    /// job timed out).
    JobLeaseExpired {
        /// The attempt.
        attempt: u32,
        /// Whether the job is pending again.
        requeued: bool,
    },
    /// Cancellation was asked for while an agent held it.
    JobCancelRequested {
        /// Why.
        reason: String,
    },
    /// Cancelled.
    JobCancelled {
        /// Why.
        reason: String,
    },
    /// Retention expired the backup; scheduling deletes its object next.
    BackupExpired {
        /// The object to delete.
        object_key: String,
    },
    /// Scheduling tried to delete the expired backup's object: the storage outcome.
    BackupDeleted {
        /// The object.
        object_key: String,
        /// `None`: deleted; `Some(why)`: it failed and is retried at the next pass.
        error: Option<String>,
    },
}

/// Why a job command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such job, or not this agent's (NotFound).
    #[error("job not found")]
    NotFound,
    /// The id is taken (AlreadyExists).
    #[error("job already exists")]
    AlreadyExists,
    /// The report's fencing token is not the current claim's (FailedPrecondition).
    #[error("fencing_token {given} is stale: the current claim's token is {current}")]
    StaleFencingToken {
        /// What the report carried.
        given: u64,
        /// The current claim's.
        current: u64,
    },
    /// The job is not in a state that allows the command (FailedPrecondition).
    #[error("job is {0}")]
    WrongState(&'static str),
    /// Retention asked about a job that has no live backup (FailedPrecondition).
    #[error("job has no backup to {0}")]
    NoBackup(&'static str),
}

impl Aggregate for Job {
    const TYPE: &'static str = "Job";
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;

    fn decide(&self, command: JobCommand) -> Result<Vec<JobEvent>, JobError> {
        match command {
            JobCommand::CreateJob {
                spec,
                not_before,
                fired,
            } => {
                if self.spec.is_some() {
                    return Err(JobError::AlreadyExists);
                }
                if spec.max_attempts == 0 {
                    return Err(FieldError::new("max_attempts", "must be at least 1").into());
                }
                Ok(vec![JobEvent::JobCreated {
                    spec,
                    not_before,
                    fired,
                }])
            }
            JobCommand::ClaimJob { agent, now, lease } => {
                let spec = self.spec.as_ref().ok_or(JobError::NotFound)?;
                if spec.agent_id != agent {
                    return Err(JobError::NotFound);
                }
                if self.state != JobState::Pending {
                    return Err(JobError::WrongState(self.state.as_str()));
                }
                if self.not_before.is_some_and(|t| t > now) {
                    return Err(JobError::WrongState("not due yet"));
                }
                Ok(vec![JobEvent::JobClaimed {
                    attempt: self.attempt,
                    fencing_token: self.fencing_token + 1,
                    agent_id: agent,
                    lease_expires_at: now + lease,
                }])
            }
            JobCommand::StartJob { fencing_token } => {
                self.held(fencing_token)?;
                if self.state == JobState::Running {
                    return Ok(Vec::new());
                }
                Ok(vec![JobEvent::JobStarted {
                    attempt: self.attempt,
                }])
            }
            JobCommand::CompleteJob {
                job_id,
                fencing_token,
                artifact,
            } => {
                let spec = self.held(fencing_token)?;
                let artifact = match (spec.kind, artifact) {
                    (JobKind::Backup, None) => {
                        return Err(FieldError::new(
                            "artifact",
                            "is required to complete a backup: object key, size, SHA-256, recipient and age header digest",
                        )
                        .into());
                    }
                    (JobKind::Backup, Some(a)) => {
                        let a = a.check()?;
                        let expected = backup_object_key(job_id, spec, self.attempt);
                        if a.object_key != expected {
                            return Err(FieldError::new(
                                "artifact.object_key",
                                format!("must be the key the claim named: {expected}"),
                            )
                            .into());
                        }
                        Some(a)
                    }
                    (JobKind::Restore, Some(_)) => {
                        return Err(FieldError::new(
                            "artifact",
                            "must be empty for a restore, which leaves no object",
                        )
                        .into());
                    }
                    (JobKind::Restore, None) => None,
                };
                Ok(vec![JobEvent::JobSucceeded {
                    attempt: self.attempt,
                    artifact,
                }])
            }
            JobCommand::FailJob {
                fencing_token,
                reason,
                now,
                backoff,
            } => {
                let spec = self.held(fencing_token)?;
                let reason = clean_name("reason", &reason, MAX_REASON_CHARS)?;
                if self.cancel_requested {
                    return Ok(vec![JobEvent::JobCancelled { reason }]);
                }
                let retry_at =
                    (self.attempt < spec.max_attempts).then(|| now + backoff.after(self.attempt));
                Ok(vec![JobEvent::JobAttemptFailed {
                    attempt: self.attempt,
                    reason,
                    retry_at,
                }])
            }
            JobCommand::ExpireLease { fencing_token, .. } => {
                let spec = self.held(fencing_token)?;
                if self.cancel_requested {
                    return Ok(vec![JobEvent::JobCancelled {
                        reason: "the agent stopped answering after cancellation was requested"
                            .into(),
                    }]);
                }
                Ok(vec![JobEvent::JobLeaseExpired {
                    attempt: self.attempt,
                    requeued: self.attempt < spec.max_attempts,
                }])
            }
            JobCommand::CancelJob { reason } => {
                self.spec.as_ref().ok_or(JobError::NotFound)?;
                let reason = if reason.trim().is_empty() {
                    String::new()
                } else {
                    clean_name("reason", &reason, MAX_REASON_CHARS)?
                };
                match self.state {
                    JobState::Pending => Ok(vec![JobEvent::JobCancelled { reason }]),
                    JobState::Claimed | JobState::Running if !self.cancel_requested => {
                        Ok(vec![JobEvent::JobCancelRequested { reason }])
                    }
                    JobState::Claimed | JobState::Running => Ok(Vec::new()),
                    done => Err(JobError::WrongState(done.as_str())),
                }
            }
            JobCommand::ExpireBackup => {
                let artifact = self.live_backup("expire")?;
                if self.expired {
                    return Ok(Vec::new());
                }
                Ok(vec![JobEvent::BackupExpired {
                    object_key: artifact.object_key.clone(),
                }])
            }
            JobCommand::RecordDeletion { error } => {
                let artifact = self.live_backup("delete")?;
                if !self.expired {
                    return Err(JobError::NoBackup("delete before it expired"));
                }
                let error = error
                    .map(|e| clean_name("error", &e, MAX_REASON_CHARS))
                    .transpose()?;
                Ok(vec![JobEvent::BackupDeleted {
                    object_key: artifact.object_key.clone(),
                    error,
                }])
            }
            JobCommand::ConfirmCancelled { fencing_token } => {
                self.held(fencing_token)?;
                if !self.cancel_requested {
                    return Err(JobError::WrongState("not being cancelled"));
                }
                Ok(vec![JobEvent::JobCancelled {
                    reason: self.reason.clone(),
                }])
            }
        }
    }

    fn evolve(mut self, event: &JobEvent) -> Self {
        match event {
            JobEvent::JobCreated {
                spec, not_before, ..
            } => {
                self.spec = Some(spec.clone());
                self.state = JobState::Pending;
                self.attempt = 1;
                self.not_before = Some(*not_before);
            }
            JobEvent::JobClaimed { fencing_token, .. } => {
                self.state = JobState::Claimed;
                self.fencing_token = *fencing_token;
            }
            JobEvent::JobStarted { .. } => self.state = JobState::Running,
            JobEvent::JobSucceeded { artifact, .. } => {
                self.state = JobState::Succeeded;
                self.artifact = artifact.clone();
            }
            JobEvent::JobAttemptFailed {
                reason, retry_at, ..
            } => {
                self.reason = reason.clone();
                match retry_at {
                    Some(at) => {
                        self.state = JobState::Pending;
                        self.attempt += 1;
                        self.not_before = Some(*at);
                    }
                    None => self.state = JobState::Failed,
                }
            }
            JobEvent::JobLeaseExpired { requeued, .. } => {
                if *requeued {
                    self.state = JobState::Pending;
                    self.attempt += 1;
                } else {
                    self.state = JobState::TimedOut;
                    self.reason = "the lease expired on the last attempt".into();
                }
            }
            JobEvent::JobCancelRequested { reason } => {
                self.cancel_requested = true;
                self.reason = reason.clone();
            }
            JobEvent::JobCancelled { reason } => {
                self.state = JobState::Cancelled;
                self.reason = reason.clone();
            }
            JobEvent::BackupExpired { .. } => self.expired = true,
            JobEvent::BackupDeleted { error, .. } => self.deleted = error.is_none(),
        }
        self
    }
}

impl Job {
    /// The artifact of a succeeded backup whose object was not deleted yet.
    fn live_backup(&self, what: &'static str) -> Result<&Artifact, JobError> {
        match (&self.state, &self.artifact) {
            (JobState::Succeeded, Some(artifact)) if !self.deleted => Ok(artifact),
            _ => Err(JobError::NoBackup(what)),
        }
    }

    /// The spec, if an agent holds the job under `fencing_token`.
    fn held(&self, fencing_token: u64) -> Result<&JobSpec, JobError> {
        let spec = self.spec.as_ref().ok_or(JobError::NotFound)?;
        if !self.state.is_held() {
            return Err(JobError::WrongState(self.state.as_str()));
        }
        if fencing_token != self.fencing_token {
            return Err(JobError::StaleFencingToken {
                given: fencing_token,
                current: self.fencing_token,
            });
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use coffer_eventstore::replay;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap() + Duration::seconds(s)
    }

    fn agent() -> AgentId {
        AgentId::from(uuid::Uuid::from_u128(7))
    }

    const BACKOFF: Backoff = Backoff {
        base: Duration::seconds(10),
        max: Duration::seconds(25),
    };

    fn spec(kind: JobKind, max_attempts: u32) -> JobSpec {
        JobSpec {
            kind,
            trigger: Trigger::Schedule,
            schedule_id: Some(uuid::Uuid::from_u128(1)),
            database_id: uuid::Uuid::from_u128(2),
            destination_id: uuid::Uuid::from_u128(3),
            agent_id: agent(),
            restore_of: None,
            due_at: t(0),
            max_attempts,
        }
    }

    const JOB: uuid::Uuid = uuid::Uuid::from_u128(9);

    /// The artifact of attempt 1 of a backup of [`spec`].
    fn artifact() -> Artifact {
        Artifact {
            object_key: backup_object_key(JOB, &spec(JobKind::Backup, 3), 1),
            size_bytes: 1234,
            sha256: "ab".repeat(32),
            recipient: "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqysz7s4k5".into(),
            age_header_sha256: "CD".repeat(32),
            dump_bytes: 4096,
        }
    }

    struct Given(Vec<JobEvent>);

    impl Given {
        fn new(kind: JobKind, max_attempts: u32) -> Self {
            Given(vec![JobEvent::JobCreated {
                spec: spec(kind, max_attempts),
                not_before: t(0),
                fired: None,
            }])
        }
        fn state(&self) -> Job {
            replay::<Job>(&self.0)
        }
        fn when(&mut self, command: JobCommand) -> Result<Vec<JobEvent>, JobError> {
            let events = self.state().decide(command)?;
            self.0.extend(events.clone());
            Ok(events)
        }
        fn claim(&mut self, now: i64) -> u64 {
            match self
                .when(JobCommand::ClaimJob {
                    agent: agent(),
                    now: t(now),
                    lease: Duration::seconds(30),
                })
                .unwrap()[0]
            {
                JobEvent::JobClaimed { fencing_token, .. } => fencing_token,
                ref other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_backup_goes_pending_claimed_running_succeeded_with_its_artifact() {
        let mut job = Given::new(JobKind::Backup, 3);
        let token = job.claim(1);
        assert_eq!(job.state().state, JobState::Claimed);
        job.when(JobCommand::StartJob {
            fencing_token: token,
        })
        .unwrap();
        assert_eq!(job.state().state, JobState::Running);
        let missing = job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: token,
            artifact: None,
        });
        assert!(matches!(missing, Err(JobError::Invalid(f)) if f.field == "artifact"));
        job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: token,
            artifact: Some(artifact()),
        })
        .unwrap();
        let done = job.state();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(
            done.artifact.unwrap().age_header_sha256,
            "cd".repeat(32),
            "digests are kept lowercase"
        );
    }

    #[test]
    fn only_its_agent_claims_it_and_not_before_its_time() {
        let mut job = Given::new(JobKind::Backup, 1);
        let other = job.when(JobCommand::ClaimJob {
            agent: AgentId::from(uuid::Uuid::from_u128(8)),
            now: t(1),
            lease: Duration::seconds(30),
        });
        assert_eq!(other, Err(JobError::NotFound));
        let early = job.when(JobCommand::ClaimJob {
            agent: agent(),
            now: t(-1),
            lease: Duration::seconds(30),
        });
        assert_eq!(early, Err(JobError::WrongState("not due yet")));
    }

    #[test]
    fn failures_retry_with_exponential_backoff_until_attempts_are_spent() {
        let mut job = Given::new(JobKind::Backup, 3);
        let mut now = 0;
        for (attempt, wait) in [(1, 10), (2, 20)] {
            let token = job.claim(now);
            let events = job
                .when(JobCommand::FailJob {
                    fencing_token: token,
                    reason: "connection refused".into(),
                    now: t(now),
                    backoff: BACKOFF,
                })
                .unwrap();
            assert_eq!(
                events,
                vec![JobEvent::JobAttemptFailed {
                    attempt,
                    reason: "connection refused".into(),
                    retry_at: Some(t(now + wait)),
                }]
            );
            assert_eq!(job.state().state, JobState::Pending);
            now += wait;
        }
        let token = job.claim(now);
        job.when(JobCommand::FailJob {
            fencing_token: token,
            reason: "still refused".into(),
            now: t(now),
            backoff: BACKOFF,
        })
        .unwrap();
        let failed = job.state();
        assert_eq!((failed.state, failed.attempt), (JobState::Failed, 3));
        assert_eq!(BACKOFF.after(5), Duration::seconds(25), "capped");
        assert_eq!(BACKOFF.after(200), Duration::seconds(25), "no overflow");
    }

    #[test]
    fn an_expired_lease_requeues_with_the_next_attempt_and_fences_the_old_claim_out() {
        let mut job = Given::new(JobKind::Backup, 2);
        let first = job.claim(0);
        job.when(JobCommand::ExpireLease {
            fencing_token: first,
            now: t(40),
        })
        .unwrap();
        let requeued = job.state();
        assert_eq!((requeued.state, requeued.attempt), (JobState::Pending, 2));
        let second = job.claim(41);
        assert!(second > first);
        let stale = job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: first,
            artifact: Some(artifact()),
        });
        assert_eq!(
            stale,
            Err(JobError::StaleFencingToken {
                given: first,
                current: second
            })
        );
        job.when(JobCommand::ExpireLease {
            fencing_token: second,
            now: t(80),
        })
        .unwrap();
        assert_eq!(job.state().state, JobState::TimedOut);
    }

    #[test]
    fn cancelling_is_immediate_when_pending_and_asks_the_agent_when_held() {
        let mut pending = Given::new(JobKind::Backup, 1);
        pending
            .when(JobCommand::CancelJob {
                reason: "not needed".into(),
            })
            .unwrap();
        assert_eq!(pending.state().state, JobState::Cancelled);
        assert_eq!(
            pending.when(JobCommand::CancelJob {
                reason: String::new()
            }),
            Err(JobError::WrongState("cancelled"))
        );

        let mut held = Given::new(JobKind::Backup, 1);
        let token = held.claim(0);
        held.when(JobCommand::CancelJob {
            reason: "wrong database".into(),
        })
        .unwrap();
        let asked = held.state();
        assert!(asked.cancel_requested && asked.state == JobState::Claimed);
        held.when(JobCommand::ConfirmCancelled {
            fencing_token: token,
        })
        .unwrap();
        let cancelled = held.state();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert_eq!(cancelled.reason, "wrong database");
    }

    #[test]
    fn a_restore_completes_without_an_artifact_and_refuses_one() {
        let mut job = Given::new(JobKind::Restore, 1);
        let token = job.claim(0);
        let with = job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: token,
            artifact: Some(artifact()),
        });
        assert!(matches!(with, Err(JobError::Invalid(f)) if f.field == "artifact"));
        job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: token,
            artifact: None,
        })
        .unwrap();
        assert_eq!(job.state().state, JobState::Succeeded);
    }

    #[test]
    fn retention_expires_a_succeeded_backup_before_deleting_it_and_a_failed_deletion_is_retried() {
        let mut job = Given::new(JobKind::Backup, 1);
        assert_eq!(
            job.when(JobCommand::ExpireBackup),
            Err(JobError::NoBackup("expire"))
        );
        let token = job.claim(0);
        job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: token,
            artifact: Some(artifact()),
        })
        .unwrap();
        assert_eq!(
            job.when(JobCommand::RecordDeletion { error: None }),
            Err(JobError::NoBackup("delete before it expired"))
        );
        job.when(JobCommand::ExpireBackup).unwrap();
        assert_eq!(job.when(JobCommand::ExpireBackup), Ok(Vec::new()), "once");
        job.when(JobCommand::RecordDeletion {
            error: Some("access denied".into()),
        })
        .unwrap();
        assert!(
            !job.state().deleted,
            "a failed deletion leaves the backup to retry"
        );
        let deleted = job
            .when(JobCommand::RecordDeletion { error: None })
            .unwrap();
        assert_eq!(
            deleted,
            vec![JobEvent::BackupDeleted {
                object_key: artifact().object_key,
                error: None
            }]
        );
        assert!(job.state().deleted);
        assert_eq!(
            job.when(JobCommand::ExpireBackup),
            Err(JobError::NoBackup("expire"))
        );
    }

    #[test]
    fn a_scheduled_runs_id_is_the_same_on_every_scheduler_and_differs_by_run() {
        let schedule = uuid::Uuid::from_u128(1);
        let id = scheduled_job_id(schedule, t(0));
        assert_eq!(id, scheduled_job_id(schedule, t(0)));
        assert_eq!(id.get_version_num(), 7);
        assert_ne!(id, scheduled_job_id(schedule, t(1)));
        assert_ne!(id, scheduled_job_id(uuid::Uuid::from_u128(2), t(0)));
        assert!(
            scheduled_job_id(schedule, t(60)) > id,
            "ordered by due time"
        );
    }

    #[test]
    fn a_backup_completes_only_at_the_key_its_claim_named() {
        let key = backup_object_key(JOB, &spec(JobKind::Backup, 3), 2);
        assert_eq!(
            key,
            "00000000-0000-0000-0000-000000000002/2026-05-01T000000Z_\
             00000000-0000-0000-0000-000000000009_a2.dump.zst.age"
        );
        let mut job = Given::new(JobKind::Backup, 3);
        let token = job.claim(1);
        let elsewhere = job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: token,
            artifact: Some(Artifact {
                object_key: "other-database/precious.dump".into(),
                ..artifact()
            }),
        });
        assert!(
            matches!(&elsewhere, Err(JobError::Invalid(f)) if f.field == "artifact.object_key"
                && f.rule.contains(&artifact().object_key)),
            "{elsewhere:?}"
        );
        let next_attempts_key = job.when(JobCommand::CompleteJob {
            job_id: JOB,
            fencing_token: token,
            artifact: Some(Artifact {
                object_key: key,
                ..artifact()
            }),
        });
        assert!(
            next_attempts_key.is_err(),
            "attempt 1 may not write attempt 2's key"
        );
        assert_eq!(job.state().state, JobState::Claimed, "nothing recorded");
    }

    #[test]
    fn bad_artifacts_name_the_field() {
        let field = |a: Artifact| a.check().unwrap_err().field;
        assert_eq!(
            field(Artifact {
                object_key: String::new(),
                ..artifact()
            }),
            "artifact.object_key"
        );
        assert_eq!(
            field(Artifact {
                sha256: "xyz".into(),
                ..artifact()
            }),
            "artifact.sha256"
        );
        assert_eq!(
            field(Artifact {
                size_bytes: 0,
                ..artifact()
            }),
            "artifact.size_bytes"
        );
        assert_eq!(
            field(Artifact {
                recipient: "ssh-ed25519 AAAA".into(),
                ..artifact()
            }),
            "artifact.recipient"
        );
    }
}
