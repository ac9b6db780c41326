//! Typed clients, one per Coffer service, one method per RPC. Get them from a
//! [`Client`]: [`Client::orgs`], [`Client::members`], [`Client::api_keys`],
//! [`Client::tokens`], [`Client::enrollment_tokens`], [`Client::agents`],
//! [`Client::credentials`], [`Client::org_keys`], [`Client::master_keys`], [`Client::audit`],
//! [`Client::databases`], [`Client::destinations`], [`Client::schedules`], [`Client::jobs`],
//! [`Client::diagnostics`].

use std::time::Duration;

use coffer_auth::Role;
use coffer_proto::audit::v1 as audit_pb;
use coffer_proto::audit::v1::BundleRecord;
use coffer_proto::audit::v1::audit_service_client::AuditServiceClient;
use coffer_proto::credentials::v1 as cred_pb;
use coffer_proto::credentials::v1::{
    credential_service_client::CredentialServiceClient,
    master_key_service_client::MasterKeyServiceClient, org_key_service_client::OrgKeyServiceClient,
};
use coffer_proto::diagnostics::v1 as diag_pb;
use coffer_proto::diagnostics::v1::diagnostics_service_client::DiagnosticsServiceClient;
use coffer_proto::enrollment::v1 as pb;
use coffer_proto::enrollment::v1::{
    agent_service_client::AgentServiceClient, api_key_service_client::ApiKeyServiceClient,
    enrollment_token_service_client::EnrollmentTokenServiceClient,
    member_service_client::MemberServiceClient, org_service_client::OrgServiceClient,
    token_service_client::TokenServiceClient,
};
use coffer_types::{
    AgentId, AggregateId, ApiKeyId, CredentialId, EnrollmentTokenId, OrgId, UserId,
};
use prost::Message;
use secrecy::{ExposeSecret, SecretSlice};

use crate::client::Rpc;
use crate::model::{next_page, page_request};

mod scheduling;

use crate::{
    AccessToken, Agent, ApiKey, AuditEntry, AuditQuery, Checkpoint, Client, ConsistencyProof,
    CreatedApiKey, CreatedEnrollmentToken, CreatedOrg, Credential, Crl, EnrollmentToken,
    EntryProof, Error, ExportOptions, ExportedBundle, Jwks, KeyCoverage, MasterKeyRotation, Member,
    NewApiKey, Org, OrgRecipient, Page, Probe, Purpose, RecoveryKey, SentProbe,
};
pub use scheduling::{Databases, Destinations, Jobs, Schedules};

/// Organisations (`coffer.enrollment.v1.OrgService`).
#[derive(Debug, Clone, Copy)]
pub struct Orgs<'a> {
    client: &'a Client,
}

impl<'a> Orgs<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Creates an org with `owner_email` as its first owner, and an owner API key for it
    /// (its secret is in the answer, and nowhere else, ever). Needs an admin or owner key
    /// of the platform org; any other caller is told [`Error::NotFound`].
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): a
    /// [`Error::Transport`] answer may mean the org was created.
    pub async fn create(&self, name: &str, owner_email: &str) -> Result<CreatedOrg, Error> {
        let request = pb::CreateOrgRequest {
            name: name.to_owned(),
            owner_email: owner_email.to_owned(),
        };
        self.client
            .call(
                Rpc::write("CreateOrg"),
                request,
                |channel, request| async move {
                    OrgServiceClient::new(channel).create_org(request).await
                },
            )
            .await?
            .try_into()
    }

    /// Reads one org.
    pub async fn get(&self, org: OrgId) -> Result<Org, Error> {
        let request = pb::GetOrgRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(Rpc::read("GetOrg"), request, |channel, request| async move {
                OrgServiceClient::new(channel).get_org(request).await
            })
            .await?
            .try_into()
    }
}

/// Members of an org and their roles (`coffer.enrollment.v1.MemberService`).
#[derive(Debug, Clone, Copy)]
pub struct Members<'a> {
    client: &'a Client,
}

impl<'a> Members<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Adds `email` to `org` with `role`. [`Error::AlreadyExists`] if they are a member.
    pub async fn add(&self, org: OrgId, email: &str, role: Role) -> Result<Member, Error> {
        let request = pb::AddMemberRequest {
            org_id: org.to_string(),
            email: email.to_owned(),
            role: role.as_str().to_owned(),
        };
        self.client
            .call(
                Rpc::write("AddMember"),
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel).add_member(request).await
                },
            )
            .await?
            .try_into()
    }

    /// Every member of `org`.
    pub async fn list(&self, org: OrgId) -> Result<Vec<Member>, Error> {
        let request = pb::ListMembersRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListMembers"),
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel)
                        .list_members(request)
                        .await
                },
            )
            .await?
            .members
            .into_iter()
            .map(Member::try_from)
            .collect()
    }

    /// Gives `user` the role `role` in `org`. An org keeps at least one active owner
    /// ([`Error::FailedPrecondition`] otherwise).
    pub async fn change_role(&self, org: OrgId, user: UserId, role: Role) -> Result<Member, Error> {
        let request = pb::ChangeMemberRoleRequest {
            org_id: org.to_string(),
            user_id: user.to_string(),
            role: role.as_str().to_owned(),
        };
        self.client
            .call(
                Rpc::write("ChangeMemberRole"),
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel)
                        .change_member_role(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Suspends `user` in `org`, saying why (for the audit log). They keep their role but are
    /// refused everywhere, already-issued tokens included, until reactivated.
    pub async fn suspend(&self, org: OrgId, user: UserId, reason: &str) -> Result<Member, Error> {
        let request = pb::SuspendMemberRequest {
            org_id: org.to_string(),
            user_id: user.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("SuspendMember"),
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel)
                        .suspend_member(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Lifts a suspension.
    pub async fn reactivate(&self, org: OrgId, user: UserId) -> Result<Member, Error> {
        let request = pb::ReactivateMemberRequest {
            org_id: org.to_string(),
            user_id: user.to_string(),
        };
        self.client
            .call(
                Rpc::write("ReactivateMember"),
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel)
                        .reactivate_member(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Removes `user` from `org`.
    pub async fn remove(&self, org: OrgId, user: UserId) -> Result<(), Error> {
        let request = pb::RemoveMemberRequest {
            org_id: org.to_string(),
            user_id: user.to_string(),
        };
        self.client
            .call(
                Rpc::write("RemoveMember"),
                request,
                |channel, request| async move {
                    MemberServiceClient::new(channel)
                        .remove_member(request)
                        .await
                },
            )
            .await?;
        Ok(())
    }
}

/// API keys (`coffer.enrollment.v1.ApiKeyService`).
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys<'a> {
    client: &'a Client,
}

impl<'a> ApiKeys<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Creates a key in `org`. The answer holds its secret, which the server never shows
    /// again. A key cannot carry a role above the caller's.
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): a
    /// [`Error::Transport`] answer may mean a key was created whose secret is lost; list the
    /// keys and revoke it.
    pub async fn create(&self, org: OrgId, key: NewApiKey) -> Result<CreatedApiKey, Error> {
        let request = key.into_request(org);
        self.client
            .call(
                Rpc::write("CreateApiKey"),
                request,
                |channel, request| async move {
                    ApiKeyServiceClient::new(channel)
                        .create_api_key(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Every key of `org`, revoked ones included; metadata only.
    pub async fn list(&self, org: OrgId) -> Result<Vec<ApiKey>, Error> {
        let request = pb::ListApiKeysRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListApiKeys"),
                request,
                |channel, request| async move {
                    ApiKeyServiceClient::new(channel)
                        .list_api_keys(request)
                        .await
                },
            )
            .await?
            .keys
            .into_iter()
            .map(ApiKey::try_from)
            .collect()
    }

    /// Revokes `key`, saying why. Its already-issued tokens stop working within a second.
    pub async fn revoke(&self, org: OrgId, key: ApiKeyId, reason: &str) -> Result<ApiKey, Error> {
        let request = pb::RevokeApiKeyRequest {
            org_id: org.to_string(),
            key_id: key.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("RevokeApiKey"),
                request,
                |channel, request| async move {
                    ApiKeyServiceClient::new(channel)
                        .revoke_api_key(request)
                        .await
                },
            )
            .await?
            .try_into()
    }
}

/// Access tokens (`coffer.enrollment.v1.TokenService`).
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    client: &'a Client,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Exchanges the client's API key for a new access token, for use outside this SDK.
    /// The client keeps using (and refreshing) its own.
    pub async fn exchange(&self) -> Result<AccessToken, Error> {
        self.client.exchange().await
    }

    /// The public keys access tokens are signed with, to verify them offline.
    pub async fn jwks(&self) -> Result<Jwks, Error> {
        self.client
            .call_public(
                Rpc::read("GetJwks"),
                pb::GetJwksRequest {},
                |channel, request| async move {
                    TokenServiceClient::new(channel).get_jwks(request).await
                },
            )
            .await?
            .try_into()
    }
}

/// Single-use tokens agents enroll with (`coffer.enrollment.v1.EnrollmentTokenService`).
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentTokens<'a> {
    client: &'a Client,
}

impl<'a> EnrollmentTokens<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Creates a token for one agent of `org` to enroll with, once, within `ttl` (`None`: the
    /// server's default of one hour; at most 24 hours, whole seconds). The answer holds its
    /// secret, which the server never shows again.
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): a
    /// [`Error::Transport`] answer may mean a token was created whose secret is lost; list the
    /// tokens and revoke it.
    pub async fn create(
        &self,
        org: OrgId,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<CreatedEnrollmentToken, Error> {
        let ttl_seconds = match ttl {
            None => 0,
            // Zero means "the default" on the wire, so a zero TTL is sent as one second, which
            // the server accepts as asked; anything longer than `u32` seconds is far beyond the
            // 24-hour limit and is refused by the server with the field named.
            Some(ttl) => u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX),
        };
        let request = pb::CreateEnrollmentTokenRequest {
            org_id: org.to_string(),
            name: name.to_owned(),
            ttl_seconds,
        };
        self.client
            .call(
                Rpc::write("CreateEnrollmentToken"),
                request,
                |channel, request| async move {
                    EnrollmentTokenServiceClient::new(channel)
                        .create_enrollment_token(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Every enrollment token of `org`, used, revoked and expired ones included; metadata only.
    pub async fn list(&self, org: OrgId) -> Result<Vec<EnrollmentToken>, Error> {
        let request = pb::ListEnrollmentTokensRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListEnrollmentTokens"),
                request,
                |channel, request| async move {
                    EnrollmentTokenServiceClient::new(channel)
                        .list_enrollment_tokens(request)
                        .await
                },
            )
            .await?
            .tokens
            .into_iter()
            .map(EnrollmentToken::try_from)
            .collect()
    }

    /// Revokes an unused token, saying why; no agent can enroll with it afterwards.
    pub async fn revoke(
        &self,
        org: OrgId,
        token: EnrollmentTokenId,
        reason: &str,
    ) -> Result<EnrollmentToken, Error> {
        let request = pb::RevokeEnrollmentTokenRequest {
            org_id: org.to_string(),
            token_id: token.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("RevokeEnrollmentToken"),
                request,
                |channel, request| async move {
                    EnrollmentTokenServiceClient::new(channel)
                        .revoke_enrollment_token(request)
                        .await
                },
            )
            .await?
            .try_into()
    }
}

/// Enrolled agents, their certificates and the org's CRL
/// (`coffer.enrollment.v1.AgentService`).
///
/// `Enroll` and `Renew` are not here: an agent calls them itself, with an enrollment token
/// or over mTLS with its certificate, never with an API key (see `coffer-agent`).
#[derive(Debug, Clone, Copy)]
pub struct Agents<'a> {
    client: &'a Client,
}

impl<'a> Agents<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Reads one agent.
    pub async fn get(&self, org: OrgId, agent: AgentId) -> Result<Agent, Error> {
        let request = pb::GetAgentRequest {
            org_id: org.to_string(),
            agent_id: agent.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetAgent"),
                request,
                |channel, request| async move {
                    AgentServiceClient::new(channel).get_agent(request).await
                },
            )
            .await?
            .try_into()
    }

    /// Every agent of `org`, revoked ones included.
    pub async fn list(&self, org: OrgId) -> Result<Vec<Agent>, Error> {
        let request = pb::ListAgentsRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListAgents"),
                request,
                |channel, request| async move {
                    AgentServiceClient::new(channel).list_agents(request).await
                },
            )
            .await?
            .agents
            .into_iter()
            .map(Agent::try_from)
            .collect()
    }

    /// Revokes `agent`, saying why: every certificate it held goes on the org's CRL and is
    /// refused everywhere within a second; the agent halts when it sees itself revoked.
    pub async fn revoke(&self, org: OrgId, agent: AgentId, reason: &str) -> Result<Agent, Error> {
        let request = pb::RevokeAgentRequest {
            org_id: org.to_string(),
            agent_id: agent.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("RevokeAgent"),
                request,
                |channel, request| async move {
                    AgentServiceClient::new(channel).revoke_agent(request).await
                },
            )
            .await?
            .try_into()
    }

    /// The org's current CRL, signed by its intermediate CA.
    pub async fn crl(&self, org: OrgId) -> Result<Crl, Error> {
        let request = pb::GetCrlRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetCrl"),
                request,
                |channel, request| async move {
                    AgentServiceClient::new(channel).get_crl(request).await
                },
            )
            .await?
            .try_into()
    }
}

/// The credential vault (`coffer.credentials.v1.CredentialService`): values go in and never
/// come back; every answer is metadata.
///
/// Values are taken as [`SecretSlice`]s. Each attempt copies the value into its request, which
/// the gRPC encoder frees without zeroing once sent; no plain copy waits between retries.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    client: &'a Client,
}

impl<'a> Credentials<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Stores a new credential of `org` (version 1), its value encrypted under a fresh data
    /// key. `name`: 1 to 128 characters of `a-z 0-9 . _ - /`, unique among the org's live
    /// credentials; `value`: 1 byte to 64 KiB.
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): after an
    /// [`Error::Transport`] or [`Error::Timeout`] answer the credential may exist, and creating
    /// it again is refused with [`Error::AlreadyExists`]; list the credentials to check.
    pub async fn create(
        &self,
        org: OrgId,
        name: &str,
        purpose: Purpose,
        value: &SecretSlice<u8>,
    ) -> Result<Credential, Error> {
        let request = cred_pb::CreateCredentialRequest {
            org_id: org.to_string(),
            name: name.to_owned(),
            purpose: purpose.as_str().to_owned(),
            value: Vec::new(),
        };
        self.client
            .call(
                Rpc::write("CreateCredential"),
                request,
                |channel, request| async move {
                    let request = request.map(|mut r| {
                        r.value = value.expose_secret().to_vec();
                        r
                    });
                    CredentialServiceClient::new(channel)
                        .create_credential(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Replaces `credential`'s value (1 byte to 64 KiB): a new version under a new data key.
    /// Older versions stay stored until the credential is deleted.
    pub async fn replace_value(
        &self,
        org: OrgId,
        credential: CredentialId,
        value: &SecretSlice<u8>,
    ) -> Result<Credential, Error> {
        let request = cred_pb::ReplaceCredentialValueRequest {
            org_id: org.to_string(),
            credential_id: credential.to_string(),
            value: Vec::new(),
        };
        self.client
            .call(
                Rpc::write("ReplaceCredentialValue"),
                request,
                |channel, request| async move {
                    let request = request.map(|mut r| {
                        r.value = value.expose_secret().to_vec();
                        r
                    });
                    CredentialServiceClient::new(channel)
                        .replace_credential_value(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Deletes `credential`, saying why, and destroys every stored version of its value. Its
    /// name is free again afterwards.
    pub async fn delete(
        &self,
        org: OrgId,
        credential: CredentialId,
        reason: &str,
    ) -> Result<(), Error> {
        let request = cred_pb::DeleteCredentialRequest {
            org_id: org.to_string(),
            credential_id: credential.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("DeleteCredential"),
                request,
                |channel, request| async move {
                    CredentialServiceClient::new(channel)
                        .delete_credential(request)
                        .await
                },
            )
            .await?;
        Ok(())
    }

    /// Reads one credential's metadata.
    pub async fn get(&self, org: OrgId, credential: CredentialId) -> Result<Credential, Error> {
        let request = cred_pb::GetCredentialRequest {
            org_id: org.to_string(),
            credential_id: credential.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetCredential"),
                request,
                |channel, request| async move {
                    CredentialServiceClient::new(channel)
                        .get_credential(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Every live credential of `org`, metadata only.
    pub async fn list(&self, org: OrgId) -> Result<Vec<Credential>, Error> {
        let request = cred_pb::ListCredentialsRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListCredentials"),
                request,
                |channel, request| async move {
                    CredentialServiceClient::new(channel)
                        .list_credentials(request)
                        .await
                },
            )
            .await?
            .credentials
            .into_iter()
            .map(Credential::try_from)
            .collect()
    }
}

/// The org's age key pair (`coffer.credentials.v1.OrgKeyService`): agents encrypt every
/// backup to its public recipient; owners can export the private key to decrypt backups
/// without Coffer.
#[derive(Debug, Clone, Copy)]
pub struct OrgKeys<'a> {
    client: &'a Client,
}

impl<'a> OrgKeys<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// The org's public recipient (`age1…`). The key pair is generated shortly after the org
    /// is created; until then this is [`Error::NotFound`].
    pub async fn recipient(&self, org: OrgId) -> Result<OrgRecipient, Error> {
        let request = cred_pb::GetOrgRecipientRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetOrgRecipient"),
                request,
                |channel, request| async move {
                    OrgKeyServiceClient::new(channel)
                        .get_org_recipient(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Exports the org's private key (`AGE-SECRET-KEY-1…`), saying why (1 to 500
    /// characters), so backups decrypt with stock `age -d -i`. Owners only; the export is
    /// recorded in the audit log before the key is returned.
    pub async fn export_recovery_key(
        &self,
        org: OrgId,
        reason: &str,
    ) -> Result<RecoveryKey, Error> {
        let request = cred_pb::ExportRecoveryKeyRequest {
            org_id: org.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("ExportRecoveryKey"),
                request,
                |channel, request| async move {
                    OrgKeyServiceClient::new(channel)
                        .export_recovery_key(request)
                        .await
                },
            )
            .await?
            .try_into()
    }
}

/// The platform's KMS master key (`coffer.credentials.v1.MasterKeyService`): rotating every
/// wrapped key onto it, and how many sit under each master key.
///
/// Platform operations: the caller must be an owner or admin of the platform org (the key
/// `coffer admin init` printed, or one made from it). Anyone else is answered
/// [`Error::NotFound`], as for any org they are not a member of.
#[derive(Debug, Clone, Copy)]
pub struct MasterKeys<'a> {
    client: &'a Client,
}

impl<'a> MasterKeys<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Starts a rotation onto `new_key_id`, saying why (1 to 500 characters), and returns its
    /// status. A background worker then re-wraps every credential data key and org age
    /// key still under another master key, in batches; follow it with
    /// [`MasterKeys::rotation`].
    ///
    /// `new_key_id` must be the master key the server is configured with (set `kms.key_id`
    /// and restart first): any other is [`Error::FailedPrecondition`] naming the configured
    /// key, and so is a new target while a rotation onto another key is still running.
    ///
    /// Retried like a read, even after a request cut off halfway: asking again for the same
    /// target resumes the running rotation without recording anything new. Only if the first
    /// attempt was applied and its rotation already finished does a repeat record another
    /// one, which finds nothing left to move and completes at once.
    pub async fn rotate(&self, new_key_id: &str, reason: &str) -> Result<MasterKeyRotation, Error> {
        let request = cred_pb::RotateMasterKeyRequest {
            new_key_id: new_key_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                // Not a read, but as safe to repeat as one: see above.
                Rpc::read("RotateMasterKey"),
                request,
                |channel, request| async move {
                    MasterKeyServiceClient::new(channel)
                        .rotate_master_key(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// The platform's latest rotation and its progress ([`crate::RotationState::None`] if
    /// there has been none).
    pub async fn rotation(&self) -> Result<MasterKeyRotation, Error> {
        self.client
            .call(
                Rpc::read("GetMasterKeyRotation"),
                cred_pb::GetMasterKeyRotationRequest {},
                |channel, request| async move {
                    MasterKeyServiceClient::new(channel)
                        .get_master_key_rotation(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// How many wrapped keys sit under each master key, across every org, and which master
    /// key the server wraps new keys under. [`KeyCoverage::not_under`] the current key is
    /// what a rotation has left to move.
    pub async fn coverage(&self) -> Result<KeyCoverage, Error> {
        self.client
            .call(
                Rpc::read("GetKeyCoverage"),
                cred_pb::GetKeyCoverageRequest {},
                |channel, request| async move {
                    MasterKeyServiceClient::new(channel)
                        .get_key_coverage(request)
                        .await
                },
            )
            .await?
            .try_into()
    }
}

/// End-to-end checks of a deployment (`coffer.diagnostics.v1.DiagnosticsService`).
#[derive(Debug, Clone, Copy)]
pub struct Diagnostics<'a> {
    client: &'a Client,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Appends a probe event carrying `note` (up to 200 characters) to a new probe of `org`.
    pub async fn send_probe(&self, org: OrgId, note: &str) -> Result<SentProbe, Error> {
        let request = diag_pb::SendProbeRequest {
            org_id: org.to_string(),
            note: note.to_owned(),
        };
        self.client
            .call(
                Rpc::write("SendProbe"),
                request,
                |channel, request| async move {
                    DiagnosticsServiceClient::new(channel)
                        .send_probe(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// How far `probe`'s latest event has travelled: appended, published, consumed.
    pub async fn get_probe(&self, org: OrgId, probe: AggregateId) -> Result<Probe, Error> {
        let request = diag_pb::GetProbeRequest {
            org_id: org.to_string(),
            probe_id: probe.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetProbe"),
                request,
                |channel, request| async move {
                    DiagnosticsServiceClient::new(channel)
                        .get_probe(request)
                        .await
                },
            )
            .await?
            .try_into()
    }
}

/// An org's tamper-evident audit log (`coffer.audit.v1.AuditService`): entries, signed
/// checkpoints, inclusion and consistency proofs, and the export bundle. Readable by the org's
/// owners, admins and auditors; nothing here changes the log.
///
/// The SDK returns what the server sent without checking the proofs: check them with
/// `coffer-tlog` (or run `coffer audit entry|consistency|verify`, which do).
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    client: &'a Client,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// One page of `org`'s entries matching `query`, oldest first.
    pub async fn query(&self, org: OrgId, query: &AuditQuery) -> Result<Page<AuditEntry>, Error> {
        let response = self
            .client
            .call(
                Rpc::read("QueryEntries"),
                query.to_request(org),
                |channel, request| async move {
                    AuditServiceClient::new(channel)
                        .query_entries(request)
                        .await
                },
            )
            .await?;
        Ok(Page {
            items: response
                .entries
                .into_iter()
                .map(AuditEntry::try_from)
                .collect::<Result<_, _>>()?,
            next_page_token: next_page(response.page),
        })
    }

    /// Every entry of `org` matching `query`, from the page it names on, following the pages.
    pub async fn query_all(&self, org: OrgId, query: AuditQuery) -> Result<Vec<AuditEntry>, Error> {
        let mut query = query;
        let mut all = Vec::new();
        loop {
            let page = self.query(org, &query).await?;
            all.extend(page.items);
            match page.next_page_token {
                Some(token) => query = query.page_token(token),
                None => return Ok(all),
            }
        }
    }

    /// Entry `seq` of `org`'s log (from 1), its leaf, and its inclusion proof against the
    /// checkpoint of `tree_size` (`None`: the latest). [`Error::NotFound`] beyond the log;
    /// `OUT_OF_RANGE` ([`Error::Server`]) if the checkpoint does not cover it yet.
    pub async fn entry(
        &self,
        org: OrgId,
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<EntryProof, Error> {
        let request = audit_pb::GetEntryRequest {
            org_id: org.to_string(),
            seq,
            tree_size: tree_size.unwrap_or(0),
        };
        self.client
            .call(
                Rpc::read("GetEntry"),
                request,
                |channel, request| async move {
                    AuditServiceClient::new(channel).get_entry(request).await
                },
            )
            .await?
            .try_into()
    }

    /// The checkpoint of `size` (`None`: the latest). [`Error::NotFound`] if no checkpoint
    /// was issued at that size; [`Error::FailedPrecondition`] if none was issued yet at all.
    pub async fn checkpoint(&self, org: OrgId, size: Option<u64>) -> Result<Checkpoint, Error> {
        let request = audit_pb::GetCheckpointRequest {
            org_id: org.to_string(),
            size: size.unwrap_or(0),
        };
        self.client
            .call(
                Rpc::read("GetCheckpoint"),
                request,
                |channel, request| async move {
                    AuditServiceClient::new(channel)
                        .get_checkpoint(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// One page of the checkpoints issued for `org`, newest first: at most `page_size` (the
    /// server's default when `None`), from `page_token` (a [`Page::next_page_token`]) on.
    pub async fn checkpoints(
        &self,
        org: OrgId,
        page_size: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<Page<Checkpoint>, Error> {
        let request = audit_pb::ListCheckpointsRequest {
            org_id: org.to_string(),
            page: page_request(page_size, page_token),
        };
        let response = self
            .client
            .call(
                Rpc::read("ListCheckpoints"),
                request,
                |channel, request| async move {
                    AuditServiceClient::new(channel)
                        .list_checkpoints(request)
                        .await
                },
            )
            .await?;
        Ok(Page {
            items: response
                .checkpoints
                .into_iter()
                .map(Checkpoint::try_from)
                .collect::<Result<_, _>>()?,
            next_page_token: next_page(response.page),
        })
    }

    /// The RFC 9162 consistency proof from size `from` to size `to` of `org`'s log
    /// (`1 <= from <= to <= ` the log's size).
    pub async fn consistency(
        &self,
        org: OrgId,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, Error> {
        let request = audit_pb::GetConsistencyProofRequest {
            org_id: org.to_string(),
            from_size: from,
            to_size: to,
        };
        self.client
            .call(
                Rpc::read("GetConsistencyProof"),
                request,
                |channel, request| async move {
                    AuditServiceClient::new(channel)
                        .get_consistency_proof(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Starts exporting `org`'s log as a bundle: a header, the entries in order, a trailer,
    /// read one record at a time from the returned stream, or written to a file with
    /// [`BundleStream::write_to`]. A refused request (a size beyond the log, no checkpoint
    /// yet) fails here, before any record.
    pub async fn export(&self, org: OrgId, options: ExportOptions) -> Result<BundleStream, Error> {
        let request = audit_pb::ExportBundleRequest {
            org_id: org.to_string(),
            from_seq: options.from_seq,
            tree_size: options.tree_size,
            consistency_from: options.consistency_from,
        };
        let records = self
            .client
            .call(
                Rpc::read("ExportBundle"),
                request,
                |channel, request| async move {
                    AuditServiceClient::new(channel)
                        .export_bundle(request)
                        .await
                },
            )
            .await?;
        Ok(BundleStream { records })
    }
}

/// The records of an export bundle as the server streams them (see [`Audit::export`]).
///
/// They are the protobuf messages themselves ([`BundleRecord`]): the bundle file is made of
/// exactly these, so whatever writes one needs them as sent.
#[derive(Debug)]
pub struct BundleStream {
    records: tonic::Streaming<BundleRecord>,
}

impl BundleStream {
    /// The next record; `None` after the last. A failure mid-stream (the server lost its
    /// database, the connection broke) is an error here; the export is then incomplete.
    pub async fn next(&mut self) -> Result<Option<BundleRecord>, Error> {
        self.records
            .message()
            .await
            .map_err(|status| Error::from_status(&status, 1))
    }

    /// Writes the whole bundle to `out` in its file format: the line `coffer-audit-bundle-v1`,
    /// then each record as a protobuf varint length and the encoded message. The result is
    /// what `coffer audit verify` checks, with no server. Fails with [`Error::Protocol`] if
    /// the stream ends before its trailer, and with [`Error::Io`] if `out` refuses a write.
    pub async fn write_to(mut self, mut out: impl std::io::Write) -> Result<ExportedBundle, Error> {
        use coffer_proto::audit::v1::bundle_record::Record;
        let io = |e: std::io::Error| Error::Io {
            message: format!("write the bundle: {e}"),
        };
        out.write_all(BUNDLE_FORMAT_LINE).map_err(io)?;
        let mut from_seq = None;
        while let Some(record) = self.next().await? {
            out.write_all(&record.encode_length_delimited_to_vec())
                .map_err(io)?;
            match record.record {
                Some(Record::Header(h)) => from_seq = Some(h.from_seq),
                Some(Record::Trailer(t)) => {
                    let from_seq = from_seq
                        .ok_or_else(|| Error::protocol("the export has no BundleHeader"))?;
                    out.flush().map_err(io)?;
                    return Ok(ExportedBundle {
                        from_seq,
                        entries: t.entries,
                        size: (from_seq + t.entries).saturating_sub(1),
                    });
                }
                _ => {}
            }
        }
        Err(Error::protocol("the export ended before its BundleTrailer"))
    }
}

/// The first line of a bundle file.
const BUNDLE_FORMAT_LINE: &[u8] = b"coffer-audit-bundle-v1\n";
