//! Scheduling's [`StorageKeys`] over the in-process credentials service: a destination's access
//! key is released (and the release committed as an event) by `Credentials::release_to_service`,
//! parsed as an S3 key, and dropped when the probe or retention run that asked for it ends.
//!
//! Only when the scheduling and credentials targets share a process; otherwise scheduling has no
//! key source and S3 destinations answer UNAVAILABLE (see ARCHITECTURE.md, Departures).

use coffer_credentials::Credentials;
use coffer_credentials::app::ServiceReleaseRequest;
use coffer_credentials::domain::credential::Purpose;
use coffer_scheduling::app::{KeyError, KeyPurpose, StorageKeys};
use coffer_storage::S3Key;
use coffer_types::{OrgId, VaultRef};
use secrecy::ExposeSecret;

/// Storage keys from the credentials service in the same process.
#[derive(Debug, Clone)]
pub struct InProcessKeys {
    credentials: Credentials,
}

impl InProcessKeys {
    /// Keys released by `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }
}

const FIELD: &str = "access_key_vault_ref";

#[async_trait::async_trait]
impl StorageKeys for InProcessKeys {
    async fn storage_key(
        &self,
        org: OrgId,
        vault_ref: VaultRef,
        purpose: KeyPurpose,
        destination: uuid::Uuid,
    ) -> Result<S3Key, KeyError> {
        let value = self
            .credentials
            .release_to_service(ServiceReleaseRequest {
                org,
                vault_ref,
                required: Purpose::Storage,
                service: "scheduling",
                purpose: purpose.as_str(),
                destination_id: destination,
            })
            .await
            .map_err(|e| match e {
                coffer_credentials::Error::NotFound(_) => {
                    KeyError::Precondition(format!("{FIELD} names no credential of this org"))
                }
                coffer_credentials::Error::FailedPrecondition(m) => {
                    KeyError::Precondition(format!("{FIELD} {m}"))
                }
                other => {
                    tracing::error!(error = %other, org_id = %org, "storage key release failed");
                    KeyError::Unavailable(
                        "the destination's access key cannot be released now; nothing was saved",
                    )
                }
            })?;
        S3Key::from_json(value.expose_secret())
            .map_err(|e| KeyError::Precondition(format!("{FIELD} names a credential that {e}")))
    }
}
