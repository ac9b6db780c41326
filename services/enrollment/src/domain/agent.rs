//! The Agent aggregate: an enrolled agent and the certificates it has been issued.

use chrono::{DateTime, Utc};
use coffer_eventstore::Aggregate;

use super::{FieldError, clean_name};

/// Longest revocation reason.
pub const MAX_REASON_CHARS: usize = 500;

/// One certificate the agent holds or held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Lowercase hex serial.
    pub serial: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// `ecdsa_p256` or `ed25519`.
    pub key_algorithm: String,
    /// SHA-256 of its SubjectPublicKeyInfo.
    pub public_key_sha256: [u8; 32],
}

/// State of one agent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Whether it enrolled.
    pub enrolled: bool,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Every certificate issued to it, oldest first.
    pub certificates: Vec<IssuedCertificate>,
}

impl Agent {
    /// The newest certificate.
    pub fn current(&self) -> Option<&IssuedCertificate> {
        self.certificates.last()
    }
}

/// Commands.
#[derive(Debug, Clone)]
pub enum AgentCommand {
    /// Record the first certificate of a new agent.
    EnrollAgent {
        /// The token it enrolled with.
        enrollment_token: uuid::Uuid,
        /// Its certificate.
        certificate: IssuedCertificate,
    },
    /// Record a renewed certificate.
    RenewCertificate {
        /// The new certificate.
        certificate: IssuedCertificate,
    },
    /// Revoke the agent and all its certificates.
    RevokeAgent {
        /// Why.
        reason: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The agent enrolled.
    AgentEnrolled {
        /// The token it used.
        enrollment_token: uuid::Uuid,
        /// Its first certificate.
        certificate: IssuedCertificate,
    },
    /// It got a new certificate.
    CertificateRenewed {
        /// The new certificate.
        certificate: IssuedCertificate,
    },
    /// It was revoked.
    AgentRevoked {
        /// Why.
        reason: String,
    },
}

/// Why an agent command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// A field broke a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such agent.
    #[error("agent not found")]
    NotFound,
    /// The id is taken.
    #[error("agent already exists")]
    AlreadyExists,
    /// The agent was revoked.
    #[error("agent has been revoked")]
    Revoked,
}

impl Aggregate for Agent {
    const TYPE: &'static str = "Agent";
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = AgentError;

    fn decide(&self, command: AgentCommand) -> Result<Vec<AgentEvent>, AgentError> {
        match command {
            AgentCommand::EnrollAgent {
                enrollment_token,
                certificate,
            } => {
                if self.enrolled {
                    return Err(AgentError::AlreadyExists);
                }
                Ok(vec![AgentEvent::AgentEnrolled {
                    enrollment_token,
                    certificate,
                }])
            }
            AgentCommand::RenewCertificate { certificate } => {
                if !self.enrolled {
                    return Err(AgentError::NotFound);
                }
                if self.revoked {
                    return Err(AgentError::Revoked);
                }
                Ok(vec![AgentEvent::CertificateRenewed { certificate }])
            }
            AgentCommand::RevokeAgent { reason } => {
                if !self.enrolled {
                    return Err(AgentError::NotFound);
                }
                let reason = clean_name("reason", &reason, MAX_REASON_CHARS)?;
                if self.revoked {
                    return Ok(vec![]);
                }
                Ok(vec![AgentEvent::AgentRevoked { reason }])
            }
        }
    }

    fn evolve(mut self, event: &AgentEvent) -> Self {
        match event {
            AgentEvent::AgentEnrolled { certificate, .. } => {
                self.enrolled = true;
                self.certificates.push(certificate.clone());
            }
            AgentEvent::CertificateRenewed { certificate } => {
                self.certificates.push(certificate.clone())
            }
            AgentEvent::AgentRevoked { .. } => self.revoked = true,
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str) -> IssuedCertificate {
        let now = Utc::now();
        IssuedCertificate {
            serial: serial.into(),
            not_before: now,
            not_after: now + chrono::Duration::hours(24),
            key_algorithm: "ed25519".into(),
            public_key_sha256: [3; 32],
        }
    }

    #[test]
    fn given_an_enrolled_agent_when_revoked_then_it_cannot_renew_and_a_repeat_records_nothing() {
        let agent = Agent::default()
            .decide(AgentCommand::EnrollAgent {
                enrollment_token: uuid::Uuid::now_v7(),
                certificate: cert("aa"),
            })
            .unwrap()
            .iter()
            .fold(Agent::default(), Agent::evolve);
        assert_eq!(agent.current().unwrap().serial, "aa");
        let revoked = agent
            .decide(AgentCommand::RevokeAgent {
                reason: "host decommissioned".into(),
            })
            .unwrap()
            .iter()
            .fold(agent, Agent::evolve);
        assert_eq!(
            revoked.decide(AgentCommand::RenewCertificate {
                certificate: cert("bb")
            }),
            Err(AgentError::Revoked)
        );
        assert_eq!(
            revoked.decide(AgentCommand::RevokeAgent {
                reason: "again".into()
            }),
            Ok(vec![])
        );
    }

    #[test]
    fn an_unknown_agent_is_not_found() {
        assert_eq!(
            Agent::default().decide(AgentCommand::RevokeAgent { reason: "x".into() }),
            Err(AgentError::NotFound)
        );
    }
}
