//! Releasing a credential's value to another Coffer service in the same process (scheduling
//! probes a storage destination, or deletes for retention, with the destination's access key).
//! The release is committed as a `CredentialReleasedToService` event before the value leaves
//! this layer (P3); the caller holds it in memory only for the call that needs it.

use coffer_eventstore::ExecuteError;
use coffer_types::{Actor, AggregateId, OrgId, VaultRef};

use super::{Credentials, Error, Value, current_value};
use crate::domain::credential::Purpose;
use crate::domain::service_release::{
    ServiceRelease, ServiceReleaseCommand, ServiceReleaseError, ServiceReleaseRecord,
};

impl From<ExecuteError<ServiceReleaseError>> for Error {
    fn from(e: ExecuteError<ServiceReleaseError>) -> Self {
        match e {
            ExecuteError::Rejected(ServiceReleaseError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(e @ ServiceReleaseError::AlreadyReleased) => {
                Error::Conflict(e.to_string())
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

/// What a service asks for: which credential, of which purpose, to whom and why.
#[derive(Debug, Clone)]
pub struct ServiceReleaseRequest<'a> {
    /// The org asking (the credential must be one of its own).
    pub org: OrgId,
    /// The credential.
    pub vault_ref: VaultRef,
    /// The purpose the credential must have.
    pub required: Purpose,
    /// The service receiving it (`scheduling`); also the event's actor.
    pub service: &'a str,
    /// Why (`destination_probe`, `retention`).
    pub purpose: &'a str,
    /// The destination it is used on.
    pub destination_id: uuid::Uuid,
}

impl Credentials {
    /// Releases the current value of a credential of `request.org` to a service. Refuses a
    /// reference to another org's credential or to none (NotFound), and a credential of another
    /// purpose (FailedPrecondition). Decrypts, commits `CredentialReleasedToService` (actor: the
    /// service), and only then returns the value: no commit, no release.
    #[tracing::instrument(skip_all, fields(org_id = %request.org, service = request.service, purpose = request.purpose))]
    pub async fn release_to_service(
        &self,
        request: ServiceReleaseRequest<'_>,
    ) -> Result<Value, Error> {
        let org = request.org;
        if request.vault_ref.org != org {
            return Err(Error::NotFound("credential"));
        }
        let (view, stored) = {
            let mut tx = self.begin(org).await?;
            current_value(&mut tx, request.vault_ref.credential)
                .await?
                .ok_or(Error::NotFound("credential"))?
        };
        if view.purpose != request.required {
            return Err(Error::FailedPrecondition(format!(
                "names a {} credential; it must be a {} credential",
                view.purpose.as_str(),
                request.required.as_str()
            )));
        }
        let value = self.open(org, &view, &stored).await?;

        let mut tx = self.begin(org).await?;
        let command = ServiceReleaseCommand::ReleaseToService(ServiceReleaseRecord {
            vault_ref: request.vault_ref,
            version: view.version,
            service: request.service.to_owned(),
            purpose: request.purpose.to_owned(),
            destination_id: request.destination_id,
        });
        self.store
            .execute_in::<ServiceRelease>(
                &mut tx,
                AggregateId::from(uuid::Uuid::now_v7()),
                &Actor::service(request.service),
                command,
            )
            .await?;
        tx.commit().await?;
        tracing::info!(vault_ref = %request.vault_ref, version = view.version, "credential released to a service");
        Ok(value)
    }
}
