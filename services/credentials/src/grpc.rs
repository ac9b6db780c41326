//! gRPC adapters: protobuf in, one application call, protobuf out.
//!
//! Every handler asks the `Caller` the server's auth layer attached to authorise the org the
//! request names; the permission comes from the RPC table in `coffer_auth`. Values arrive in
//! request messages whose `Debug` is redacted (`coffer_proto`), and are moved into
//! zero-on-drop buffers before anything else happens to them.

use coffer_auth::grpc::{agent_of, authorize};
use coffer_proto::credentials::v1 as pb;
use coffer_proto::request::{id, text};
use coffer_proto::time::to_timestamp;
use coffer_types::OrgId;
use secrecy::{ExposeSecret, SecretSlice};
use tonic::{Request, Response, Status};

use crate::app::{Credentials, Error, RecoveryKey, ReleasedValue};
use crate::domain::credential::Purpose;
use crate::file_key;
use crate::rotation::RotationStatus;
use crate::store::{CredentialView, OrgKeyView};
use crate::vault_ref::VaultRef;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(f) => Status::invalid_argument(f.to_string()),
            Error::NotFound(_) => Status::not_found(e.to_string()),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Conflict(m) => Status::aborted(m),
            Error::TicketRefused(m) => Status::permission_denied(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Integrity(detail) => {
                tracing::error!(error = %detail, "credentials key material cannot be used");
                Status::internal("stored key material cannot be used; the operator has been told")
            }
            Error::Store(coffer_eventstore::Error::Conflict { .. }) => {
                Status::aborted("the resource changed concurrently; retry")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "credentials storage failure");
                Status::unavailable("storage is unavailable")
            }
        }
    }
}

fn credential(c: CredentialView) -> pb::Credential {
    pb::Credential {
        vault_ref: VaultRef {
            org: c.org_id,
            credential: c.credential_id,
        }
        .to_string(),
        org_id: c.org_id.to_string(),
        credential_id: c.credential_id.to_string(),
        name: c.name,
        purpose: c.purpose.as_str().to_owned(),
        version: c.version,
        value_bytes: c.value_bytes,
        kms_key_id: c.kms_key_id,
        created_at: Some(to_timestamp(c.created_at)),
        updated_at: Some(to_timestamp(c.updated_at)),
    }
}

impl From<OrgKeyView> for pb::OrgRecipient {
    fn from(k: OrgKeyView) -> Self {
        Self {
            org_id: k.org_id.to_string(),
            recipient: k.recipient,
            created_at: Some(to_timestamp(k.created_at)),
        }
    }
}

impl From<RecoveryKey> for pb::RecoveryKey {
    fn from(k: RecoveryKey) -> Self {
        Self {
            org_id: k.org_id.to_string(),
            identity: k.identity.expose_secret().to_owned(),
            recipient: k.recipient,
        }
    }
}

fn released(r: ReleasedValue) -> pb::ReleasedCredential {
    pb::ReleasedCredential {
        vault_ref: r.vault_ref.to_string(),
        version: r.version,
        purpose: r.purpose.as_str().to_owned(),
        value: r.value.expose_secret().to_vec(),
    }
}

/// `CredentialService`, `OrgKeyService` and `ReleaseService`.
#[derive(Debug, Clone)]
pub struct CredentialsGrpc {
    app: Credentials,
}

impl CredentialsGrpc {
    /// Wraps the application.
    pub fn new(app: Credentials) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl pb::credential_service_server::CredentialService for CredentialsGrpc {
    async fn create_credential(
        &self,
        mut request: Request<pb::CreateCredentialRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let value = SecretSlice::from(std::mem::take(&mut request.get_mut().value));
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let actor = authorize(&request, org)?.actor();
        let name = text(&r.name, "name")?;
        let purpose = Purpose::parse(text(&r.purpose, "purpose")?).map_err(Error::from)?;
        let created = self
            .app
            .create_credential(&actor, org, name, purpose, value)
            .await?;
        Ok(Response::new(credential(created)))
    }

    async fn replace_credential_value(
        &self,
        mut request: Request<pb::ReplaceCredentialValueRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let value = SecretSlice::from(std::mem::take(&mut request.get_mut().value));
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let credential_id = id(&r.credential_id, "credential_id")?;
        let actor = authorize(&request, org)?.actor();
        let replaced = self
            .app
            .replace_value(&actor, org, credential_id, value)
            .await?;
        Ok(Response::new(credential(replaced)))
    }

    async fn delete_credential(
        &self,
        request: Request<pb::DeleteCredentialRequest>,
    ) -> Result<Response<pb::DeleteCredentialResponse>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let credential_id = id(&r.credential_id, "credential_id")?;
        let actor = authorize(&request, org)?.actor();
        let reason = text(&r.reason, "reason")?;
        self.app
            .delete_credential(&actor, org, credential_id, reason)
            .await?;
        Ok(Response::new(pb::DeleteCredentialResponse {}))
    }

    async fn get_credential(
        &self,
        request: Request<pb::GetCredentialRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let credential_id = id(&r.credential_id, "credential_id")?;
        authorize(&request, org)?;
        let found = self.app.get_credential(org, credential_id).await?;
        Ok(Response::new(credential(found)))
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let credentials = self.app.list_credentials(org).await?;
        Ok(Response::new(pb::ListCredentialsResponse {
            credentials: credentials.into_iter().map(credential).collect(),
        }))
    }
}

#[tonic::async_trait]
impl pb::org_key_service_server::OrgKeyService for CredentialsGrpc {
    async fn get_org_recipient(
        &self,
        request: Request<pb::GetOrgRecipientRequest>,
    ) -> Result<Response<pb::OrgRecipient>, Status> {
        let org: OrgId = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        Ok(Response::new(self.app.org_recipient(org).await?.into()))
    }

    async fn export_recovery_key(
        &self,
        request: Request<pb::ExportRecoveryKeyRequest>,
    ) -> Result<Response<pb::RecoveryKey>, Status> {
        let r = request.get_ref();
        let org: OrgId = id(&r.org_id, "org_id")?;
        let actor = authorize(&request, org)?.actor();
        let reason = text(&r.reason, "reason")?;
        let key = self.app.export_recovery_key(&actor, org, reason).await?;
        Ok(Response::new(key.into()))
    }
}

#[tonic::async_trait]
impl pb::release_service_server::ReleaseService for CredentialsGrpc {
    async fn release_credentials(
        &self,
        request: Request<pb::ReleaseCredentialsRequest>,
    ) -> Result<Response<pb::ReleaseCredentialsResponse>, Status> {
        let (agent, org) = agent_of(&request)?;
        let ticket = &request.get_ref().ticket;
        check_ticket_len(ticket)?;
        let (ticket, values) = self.app.release(agent, org, ticket).await?;
        Ok(Response::new(pb::ReleaseCredentialsResponse {
            job_id: ticket.job_id.to_string(),
            attempt: ticket.attempt,
            credentials: values.into_iter().map(released).collect(),
        }))
    }

    async fn unwrap_file_key(
        &self,
        request: Request<pb::UnwrapFileKeyRequest>,
    ) -> Result<Response<pb::UnwrapFileKeyResponse>, Status> {
        let (agent, org) = agent_of(&request)?;
        let r = request.get_ref();
        check_ticket_len(&r.ticket)?;
        if r.header.len() > file_key::MAX_HEADER_BYTES {
            return Err(Status::invalid_argument(format!(
                "header must be at most {} bytes",
                file_key::MAX_HEADER_BYTES
            )));
        }
        let unwrapped = self
            .app
            .unwrap_file_key(agent, org, &r.ticket, &r.header)
            .await?;
        Ok(Response::new(pb::UnwrapFileKeyResponse {
            job_id: unwrapped.ticket.job_id.to_string(),
            attempt: unwrapped.ticket.attempt,
            header_sha256: unwrapped.header_sha256.clone(),
            file_key: unwrapped.file_key.expose_secret().to_vec(),
        }))
    }
}

#[tonic::async_trait]
impl pb::master_key_service_server::MasterKeyService for CredentialsGrpc {
    async fn rotate_master_key(
        &self,
        request: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::MasterKeyRotation>, Status> {
        let actor = authorize(&request, OrgId::PLATFORM)?.actor();
        let r = request.get_ref();
        let new_key_id = text(&r.new_key_id, "new_key_id")?;
        let reason = text(&r.reason, "reason")?;
        let status = self.app.start_rotation(&actor, new_key_id, reason).await?;
        Ok(Response::new(rotation(status)))
    }

    async fn get_master_key_rotation(
        &self,
        request: Request<pb::GetMasterKeyRotationRequest>,
    ) -> Result<Response<pb::MasterKeyRotation>, Status> {
        authorize(&request, OrgId::PLATFORM)?;
        Ok(Response::new(rotation(self.app.rotation_status().await?)))
    }

    async fn get_key_coverage(
        &self,
        request: Request<pb::GetKeyCoverageRequest>,
    ) -> Result<Response<pb::KeyCoverage>, Status> {
        authorize(&request, OrgId::PLATFORM)?;
        let coverage = self.app.key_coverage().await?;
        Ok(Response::new(pb::KeyCoverage {
            current_key_id: coverage.current_key_id,
            entries: coverage
                .entries
                .into_iter()
                .map(|(purpose, kms_key_id, wrapped_keys)| pb::KeyCoverageEntry {
                    purpose,
                    kms_key_id,
                    wrapped_keys,
                })
                .collect(),
        }))
    }
}

fn rotation(status: RotationStatus) -> pb::MasterKeyRotation {
    let current_key_id = status.current_key_id;
    match status.latest {
        None => pb::MasterKeyRotation {
            state: "none".into(),
            current_key_id,
            ..Default::default()
        },
        Some(r) => pb::MasterKeyRotation {
            state: if r.completed { "completed" } else { "running" }.into(),
            number: r.number,
            to_key_id: r.to_key_id,
            reason: r.reason,
            pending_at_start: r.pending_at_start,
            rewrapped: r.rewrapped,
            remaining: r.remaining,
            current_key_id,
        },
    }
}

/// The agent calling, and its org, authorised for the RPC. Only an agent's certificate gets
/// here (the permissions are agents' alone); its identity, extracted once by the auth layer,
/// decides the agent and the org.
fn check_ticket_len(ticket: &str) -> Result<(), Status> {
    if ticket.len() > coffer_auth::ticket::MAX_TICKET_BYTES {
        return Err(Status::invalid_argument(format!(
            "ticket must be at most {} bytes",
            coffer_auth::ticket::MAX_TICKET_BYTES
        )));
    }
    Ok(())
}
