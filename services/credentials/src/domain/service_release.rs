//! The ServiceRelease aggregate: one release of a credential's current value to another Coffer
//! service (scheduling, to probe a storage destination or delete for retention). Each release
//! is its own stream of one event, committed before the value leaves the credentials service
//! (P3), so the audit log holds every time a service saw a secret.

use coffer_eventstore::Aggregate;
use coffer_types::VaultRef;

use super::FieldError;

/// Longest service or purpose name.
const MAX_LABEL_CHARS: usize = 64;

/// What was released, to whom, for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReleaseRecord {
    /// The credential.
    pub vault_ref: VaultRef,
    /// The version released.
    pub version: u32,
    /// The service it went to (`scheduling`).
    pub service: String,
    /// Why (`destination_probe`, `retention`).
    pub purpose: String,
    /// The destination it is used on.
    pub destination_id: uuid::Uuid,
}

/// State: whether this release happened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceRelease {
    /// Set once released.
    pub released: Option<ServiceReleaseRecord>,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum ServiceReleaseCommand {
    /// Record the release, before the value is handed over.
    ReleaseToService(ServiceReleaseRecord),
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceReleaseEvent {
    /// A credential's value was released to a service.
    CredentialReleasedToService(ServiceReleaseRecord),
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceReleaseError {
    /// A label broke a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// This release id was used already.
    #[error("this release was already recorded")]
    AlreadyReleased,
}

fn label(field: &'static str, value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_LABEL_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be 1 to 64 lowercase letters, digits and _",
        ))
    }
}

impl Aggregate for ServiceRelease {
    const TYPE: &'static str = "ServiceRelease";
    type Command = ServiceReleaseCommand;
    type Event = ServiceReleaseEvent;
    type Error = ServiceReleaseError;

    fn decide(
        &self,
        command: ServiceReleaseCommand,
    ) -> Result<Vec<ServiceReleaseEvent>, ServiceReleaseError> {
        match command {
            ServiceReleaseCommand::ReleaseToService(record) => {
                if self.released.is_some() {
                    return Err(ServiceReleaseError::AlreadyReleased);
                }
                label("service", &record.service)?;
                label("purpose", &record.purpose)?;
                Ok(vec![ServiceReleaseEvent::CredentialReleasedToService(
                    record,
                )])
            }
        }
    }

    fn evolve(mut self, event: &ServiceReleaseEvent) -> Self {
        match event {
            ServiceReleaseEvent::CredentialReleasedToService(record) => {
                self.released = Some(record.clone());
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use coffer_types::OrgId;

    use super::*;

    fn record() -> ServiceReleaseRecord {
        ServiceReleaseRecord {
            vault_ref: VaultRef {
                org: OrgId::new(),
                credential: uuid::Uuid::now_v7(),
            },
            version: 3,
            service: "scheduling".into(),
            purpose: "destination_probe".into(),
            destination_id: uuid::Uuid::now_v7(),
        }
    }

    #[test]
    fn a_release_is_recorded_once_with_checked_labels() {
        let released = record();
        let command = ServiceReleaseCommand::ReleaseToService(released.clone());
        let events = ServiceRelease::default().decide(command.clone()).unwrap();
        assert_eq!(
            events,
            vec![ServiceReleaseEvent::CredentialReleasedToService(released)]
        );
        let state = ServiceRelease::default().evolve(&events[0]);
        assert_eq!(
            state.decide(command),
            Err(ServiceReleaseError::AlreadyReleased)
        );
        let bad = ServiceReleaseRecord {
            purpose: "Probe!".into(),
            ..record()
        };
        assert!(matches!(
            ServiceRelease::default().decide(ServiceReleaseCommand::ReleaseToService(bad)),
            Err(ServiceReleaseError::Invalid(_))
        ));
    }
}
