//! The JobRelease aggregate: one per (job, attempt). It exists so that the credentials of a
//! job attempt are released once, and each backup's file key unwrapped once per attempt: a
//! second release or unwrap of the same attempt is refused, whatever ticket carries it.

use std::collections::BTreeSet;

use coffer_eventstore::Aggregate;
use coffer_types::AgentId;

/// State of one job attempt's release.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JobRelease {
    /// Whether its credentials were released.
    pub released: bool,
    /// The backups (SHA-256 of their age header, hex) whose file key was unwrapped.
    pub unwrapped: BTreeSet<String>,
}

/// One credential handed over: its reference and the version released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// `vault:coffer/<org>/<credential>`.
    pub vault_ref: String,
    /// The version released.
    pub version: u32,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum JobReleaseCommand {
    /// Record the release, before the values are sent (P3).
    ReleaseCredentials {
        /// The job.
        job_id: uuid::Uuid,
        /// The attempt.
        attempt: u32,
        /// The agent receiving them.
        agent_id: AgentId,
        /// What it receives.
        credentials: Vec<Released>,
    },
    /// Record the unwrap of one backup's file key, before the key is sent (P3).
    UnwrapFileKey {
        /// The job.
        job_id: uuid::Uuid,
        /// The attempt.
        attempt: u32,
        /// The agent receiving it.
        agent_id: AgentId,
        /// SHA-256 of the backup's age header, lowercase hex.
        header_sha256: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobReleaseEvent {
    /// The credentials of a job attempt were released to its agent.
    CredentialsReleased {
        /// The job.
        job_id: uuid::Uuid,
        /// The attempt.
        attempt: u32,
        /// The agent.
        agent_id: AgentId,
        /// What it received.
        credentials: Vec<Released>,
    },
    /// The file key of one backup was unwrapped for a job attempt's agent.
    FileKeyUnwrapped {
        /// The job.
        job_id: uuid::Uuid,
        /// The attempt.
        attempt: u32,
        /// The agent.
        agent_id: AgentId,
        /// SHA-256 of the backup's age header, lowercase hex.
        header_sha256: String,
    },
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobReleaseError {
    /// This attempt's credentials were released already (FailedPrecondition).
    #[error("the credentials of this job attempt were already released")]
    AlreadyReleased,
    /// This backup's file key was already unwrapped in this attempt (FailedPrecondition).
    #[error("the file key of this backup was already unwrapped in this job attempt")]
    AlreadyUnwrapped,
}

impl Aggregate for JobRelease {
    const TYPE: &'static str = "JobRelease";
    type Command = JobReleaseCommand;
    type Event = JobReleaseEvent;
    type Error = JobReleaseError;

    fn decide(&self, command: JobReleaseCommand) -> Result<Vec<JobReleaseEvent>, JobReleaseError> {
        match command {
            JobReleaseCommand::ReleaseCredentials {
                job_id,
                attempt,
                agent_id,
                credentials,
            } => {
                if self.released {
                    return Err(JobReleaseError::AlreadyReleased);
                }
                Ok(vec![JobReleaseEvent::CredentialsReleased {
                    job_id,
                    attempt,
                    agent_id,
                    credentials,
                }])
            }
            JobReleaseCommand::UnwrapFileKey {
                job_id,
                attempt,
                agent_id,
                header_sha256,
            } => {
                if self.unwrapped.contains(&header_sha256) {
                    return Err(JobReleaseError::AlreadyUnwrapped);
                }
                Ok(vec![JobReleaseEvent::FileKeyUnwrapped {
                    job_id,
                    attempt,
                    agent_id,
                    header_sha256,
                }])
            }
        }
    }

    fn evolve(mut self, event: &JobReleaseEvent) -> Self {
        match event {
            JobReleaseEvent::CredentialsReleased { .. } => self.released = true,
            JobReleaseEvent::FileKeyUnwrapped { header_sha256, .. } => {
                self.unwrapped.insert(header_sha256.clone());
            }
        }
        self
    }
}

/// The aggregate id of a job attempt's release: a name-based UUID of (job, attempt), so every
/// release of one attempt lands on one stream.
pub fn release_id(job_id: uuid::Uuid, attempt: u32) -> uuid::Uuid {
    uuid::Uuid::new_v5(&job_id, &attempt.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_released_once_and_each_attempt_has_its_own_stream() {
        let job = uuid::Uuid::now_v7();
        let command = JobReleaseCommand::ReleaseCredentials {
            job_id: job,
            attempt: 1,
            agent_id: AgentId::new(),
            credentials: vec![],
        };
        let events = JobRelease::default().decide(command.clone()).unwrap();
        let state = events
            .iter()
            .fold(JobRelease::default(), JobRelease::evolve);
        assert_eq!(state.decide(command), Err(JobReleaseError::AlreadyReleased));
        assert_eq!(release_id(job, 1), release_id(job, 1));
        assert_ne!(release_id(job, 1), release_id(job, 2));
        assert_ne!(release_id(job, 1), release_id(uuid::Uuid::now_v7(), 1));
    }

    #[test]
    fn each_backup_is_unwrapped_once_per_attempt() {
        let unwrap = |header: &str| JobReleaseCommand::UnwrapFileKey {
            job_id: uuid::Uuid::now_v7(),
            attempt: 1,
            agent_id: AgentId::new(),
            header_sha256: header.into(),
        };
        let events = JobRelease::default().decide(unwrap("aa")).unwrap();
        let state = events
            .iter()
            .fold(JobRelease::default(), JobRelease::evolve);
        assert_eq!(
            state.clone().decide(unwrap("aa")),
            Err(JobReleaseError::AlreadyUnwrapped)
        );
        assert!(state.clone().decide(unwrap("bb")).is_ok());
        assert!(!state.released, "an unwrap is not a release");
    }
}
