//! gRPC adapters: protobuf in, one application call, protobuf out.
//!
//! Every handler takes the `Caller` the server's auth layer attached to the request and
//! asks it to authorise the org the request targets; the permission comes from the RPC
//! table in `coffer_auth`, never from the handler.

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_auth::grpc::authorize;
use coffer_proto::enrollment::v1 as pb;
use coffer_proto::request::{id, text};
use coffer_proto::time::{from_timestamp, to_timestamp};
use coffer_types::{ApiKeyId, OrgId, UserId};
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use crate::app::{CreatedApiKey, Enrollment, Error, NewApiKey};
use crate::store::{AgentView, ApiKeyView, EnrollmentTokenView, MemberView, OrgView};
use crate::tokens::IssuedToken;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(f) => Status::invalid_argument(f.to_string()),
            Error::NotFound(_) => Status::not_found(e.to_string()),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Forbidden(m) => Status::permission_denied(m),
            Error::Unauthenticated => Status::unauthenticated(e.to_string()),
            Error::TokenRefused(m) => Status::unauthenticated(m),
            Error::BadInput(m) => Status::invalid_argument(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Store(coffer_eventstore::Error::Conflict { .. }) => {
                Status::aborted("the resource changed concurrently; retry")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "enrollment storage failure");
                Status::unavailable("storage is unavailable")
            }
        }
    }
}

fn role(s: &str) -> Result<Role, Status> {
    s.parse().map_err(|_| {
        Status::invalid_argument("role must be one of owner, admin, operator, auditor, viewer")
    })
}

fn time(ts: Option<prost_types::Timestamp>, field: &str) -> Result<Option<DateTime<Utc>>, Status> {
    ts.map(|ts| from_timestamp(&ts).map_err(|e| Status::invalid_argument(format!("{field} {e}"))))
        .transpose()
}

impl From<OrgView> for pb::Org {
    fn from(o: OrgView) -> Self {
        Self {
            org_id: o.org_id.to_string(),
            name: o.name,
            created_at: Some(to_timestamp(o.created_at)),
        }
    }
}

impl From<MemberView> for pb::Member {
    fn from(m: MemberView) -> Self {
        Self {
            org_id: m.org_id.to_string(),
            user_id: m.user_id.to_string(),
            email: m.email,
            role: m.role.as_str().to_owned(),
            suspended: m.suspended,
            joined_at: Some(to_timestamp(m.joined_at)),
        }
    }
}

impl From<ApiKeyView> for pb::ApiKey {
    fn from(k: ApiKeyView) -> Self {
        Self {
            org_id: k.org_id.to_string(),
            key_id: k.key_id.to_string(),
            name: k.name,
            role: k.role.as_str().to_owned(),
            scopes: k.scopes,
            display_prefix: k.display_prefix,
            created_at: Some(to_timestamp(k.created_at)),
            expires_at: k.expires_at.map(to_timestamp),
            last_used_at: k.last_used_at.map(to_timestamp),
            revoked: k.revoked_at.is_some(),
        }
    }
}

impl From<CreatedApiKey> for pb::CreateApiKeyResponse {
    fn from(c: CreatedApiKey) -> Self {
        Self {
            secret: c.secret.expose().to_owned(),
            key: Some(c.key.into()),
        }
    }
}

impl From<IssuedToken> for pb::AccessToken {
    fn from(t: IssuedToken) -> Self {
        Self {
            access_token: t.token.expose_secret().to_owned(),
            expires_at: Some(to_timestamp(t.expires_at)),
            org_id: t.org.to_string(),
            role: t.role.as_str().to_owned(),
        }
    }
}

/// `OrgService`, `MemberService`, `ApiKeyService` and `TokenService`.
#[derive(Debug, Clone)]
pub struct EnrollmentGrpc {
    app: Enrollment,
}

impl EnrollmentGrpc {
    /// Wraps the application.
    pub fn new(app: Enrollment) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl pb::org_service_server::OrgService for EnrollmentGrpc {
    async fn create_org(
        &self,
        request: Request<pb::CreateOrgRequest>,
    ) -> Result<Response<pb::CreateOrgResponse>, Status> {
        // Creating orgs is a platform permission.
        let caller = authorize(&request, OrgId::PLATFORM)?.clone();
        let r = request.into_inner();
        let created = self
            .app
            .create_org(
                text(&r.name, "name")?,
                text(&r.owner_email, "owner_email")?,
                &caller.actor(),
            )
            .await?;
        Ok(Response::new(pb::CreateOrgResponse {
            org: Some(created.org.into()),
            owner: Some(created.owner.into()),
            owner_api_key: Some(created.owner_api_key.into()),
        }))
    }

    async fn get_org(
        &self,
        request: Request<pb::GetOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let org = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        Ok(Response::new(self.app.get_org(org).await?.into()))
    }
}

#[tonic::async_trait]
impl pb::member_service_server::MemberService for EnrollmentGrpc {
    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let (email, role) = (text(&r.email, "email")?, role(&r.role)?);
        let caller = authorize(&request, org)?;
        let member = self.app.add_member(caller, org, email, role).await?;
        Ok(Response::new(member.into()))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let org = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let members = self.app.list_members(org).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(Into::into).collect(),
        }))
    }

    async fn change_member_role(
        &self,
        request: Request<pb::ChangeMemberRoleRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let user: UserId = id(&r.user_id, "user_id")?;
        let role = role(&r.role)?;
        let caller = authorize(&request, org)?;
        let member = self.app.change_member_role(caller, org, user, role).await?;
        Ok(Response::new(member.into()))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let user: UserId = id(&r.user_id, "user_id")?;
        let caller = authorize(&request, org)?;
        self.app.remove_member(caller, org, user).await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn suspend_member(
        &self,
        request: Request<pb::SuspendMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let user: UserId = id(&r.user_id, "user_id")?;
        let reason = text(&r.reason, "reason")?;
        let caller = authorize(&request, org)?;
        let member = self.app.suspend_member(caller, org, user, reason).await?;
        Ok(Response::new(member.into()))
    }

    async fn reactivate_member(
        &self,
        request: Request<pb::ReactivateMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let user: UserId = id(&r.user_id, "user_id")?;
        let caller = authorize(&request, org)?;
        let member = self.app.reactivate_member(caller, org, user).await?;
        Ok(Response::new(member.into()))
    }
}

#[tonic::async_trait]
impl pb::api_key_service_server::ApiKeyService for EnrollmentGrpc {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let new = NewApiKey {
            name: text(&r.name, "name")?.to_owned(),
            role: role(&r.role)?,
            scopes: r.scopes.clone(),
            expires_at: time(r.expires_at, "expires_at")?,
        };
        let caller = authorize(&request, org)?;
        let created = self.app.create_api_key(caller, org, new).await?;
        Ok(Response::new(created.into()))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let org = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let keys = self.app.list_api_keys(org).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let key: ApiKeyId = id(&r.key_id, "key_id")?;
        let reason = text(&r.reason, "reason")?;
        let caller = authorize(&request, org)?;
        let view = self.app.revoke_api_key(caller, org, key, reason).await?;
        Ok(Response::new(view.into()))
    }
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for EnrollmentGrpc {
    async fn exchange(
        &self,
        request: Request<pb::ExchangeRequest>,
    ) -> Result<Response<pb::AccessToken>, Status> {
        let r = request.into_inner();
        let token = self.app.exchange(text(&r.api_key, "api_key")?).await?;
        Ok(Response::new(token.into()))
    }

    async fn exchange_oidc(
        &self,
        request: Request<pb::ExchangeOidcRequest>,
    ) -> Result<Response<pb::AccessToken>, Status> {
        let r = request.into_inner();
        if r.id_token.len() > coffer_auth::oidc::MAX_ID_TOKEN_BYTES {
            return Err(Status::invalid_argument(format!(
                "id_token must be at most {} bytes",
                coffer_auth::oidc::MAX_ID_TOKEN_BYTES
            )));
        }
        let token = self.app.exchange_oidc(&r.id_token).await?;
        Ok(Response::new(token.into()))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::Jwks>, Status> {
        Ok(Response::new(pb::Jwks {
            json: self.app.tokens().jwks_json(),
        }))
    }
}

impl From<EnrollmentTokenView> for pb::EnrollmentToken {
    fn from(t: EnrollmentTokenView) -> Self {
        Self {
            org_id: t.org_id.to_string(),
            token_id: t.token_id.to_string(),
            name: t.name,
            display_prefix: t.display_prefix,
            created_at: Some(to_timestamp(t.created_at)),
            expires_at: Some(to_timestamp(t.expires_at)),
            used_by_agent_id: t
                .used_by_agent_id
                .map(|a| a.to_string())
                .unwrap_or_default(),
            revoked: t.revoked_at.is_some(),
        }
    }
}

fn enrolled(e: crate::agents::Enrolled) -> pb::EnrollResponse {
    pb::EnrollResponse {
        org_id: e.org_id.to_string(),
        agent_id: e.agent_id.to_string(),
        spiffe_id: e.spiffe_id,
        certificate_pem: e.certificate_pem,
        intermediate_pem: e.intermediate_pem,
        root_pem: e.root_pem,
        not_after: Some(to_timestamp(e.not_after)),
        serial: e.serial,
    }
}

fn agent_view(a: AgentView, trust_domain: &coffer_pki::TrustDomain) -> pb::Agent {
    pb::Agent {
        org_id: a.org_id.to_string(),
        agent_id: a.agent_id.to_string(),
        spiffe_id: coffer_pki::SpiffeId::new(trust_domain.clone(), a.org_id, a.agent_id).to_uri(),
        serial: a.current_serial,
        not_after: Some(to_timestamp(a.not_after)),
        enrolled_at: Some(to_timestamp(a.enrolled_at)),
        revoked: a.revoked_at.is_some(),
    }
}

#[tonic::async_trait]
impl pb::enrollment_token_service_server::EnrollmentTokenService for EnrollmentGrpc {
    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::CreateEnrollmentTokenResponse>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let name = text(&r.name, "name")?;
        let ttl = (r.ttl_seconds != 0).then(|| chrono::Duration::seconds(i64::from(r.ttl_seconds)));
        let caller = authorize(&request, org)?;
        let created = self
            .app
            .create_enrollment_token(caller, org, name, ttl)
            .await?;
        Ok(Response::new(pb::CreateEnrollmentTokenResponse {
            secret: created.secret.expose().to_owned(),
            token: Some(created.token.into()),
        }))
    }

    async fn list_enrollment_tokens(
        &self,
        request: Request<pb::ListEnrollmentTokensRequest>,
    ) -> Result<Response<pb::ListEnrollmentTokensResponse>, Status> {
        let org = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let tokens = self.app.list_enrollment_tokens(org).await?;
        Ok(Response::new(pb::ListEnrollmentTokensResponse {
            tokens: tokens.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_enrollment_token(
        &self,
        request: Request<pb::RevokeEnrollmentTokenRequest>,
    ) -> Result<Response<pb::EnrollmentToken>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let token: uuid::Uuid = id(&r.token_id, "token_id")?;
        let reason = text(&r.reason, "reason")?;
        let caller = authorize(&request, org)?;
        let view = self
            .app
            .revoke_enrollment_token(caller, org, token, reason)
            .await?;
        Ok(Response::new(view.into()))
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for EnrollmentGrpc {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = request.into_inner();
        let token = text(&r.enrollment_token, "enrollment_token")?;
        if r.csr.len() > coffer_pki::csr::MAX_CSR_LEN {
            return Err(Status::invalid_argument(format!(
                "csr must be at most {} bytes",
                coffer_pki::csr::MAX_CSR_LEN
            )));
        }
        let e = self.app.enroll(token, &r.csr).await?;
        Ok(Response::new(enrolled(e)))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        // The agent's own org; the permission table allows this to agents only.
        let presented = request
            .extensions()
            .get::<coffer_pki::AgentIdentity>()
            .cloned()
            .ok_or_else(|| {
                Status::unauthenticated("renewal needs the agent's client certificate (mTLS)")
            })?;
        authorize(&request, presented.org_id)?;
        let csr = &request.get_ref().csr;
        if csr.len() > coffer_pki::csr::MAX_CSR_LEN {
            return Err(Status::invalid_argument(format!(
                "csr must be at most {} bytes",
                coffer_pki::csr::MAX_CSR_LEN
            )));
        }
        let e = self.app.renew(&presented, csr, chrono::Utc::now()).await?;
        Ok(Response::new(enrolled(e)))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let agent: uuid::Uuid = id(&r.agent_id, "agent_id")?;
        authorize(&request, org)?;
        let view = self.app.get_agent(org, agent).await?;
        Ok(Response::new(agent_view(
            view,
            &self.app.pki().settings().trust_domain,
        )))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let org = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let td = &self.app.pki().settings().trust_domain;
        let agents = self.app.list_agents(org).await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.into_iter().map(|a| agent_view(a, td)).collect(),
        }))
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let r = request.get_ref();
        let org = id(&r.org_id, "org_id")?;
        let agent: uuid::Uuid = id(&r.agent_id, "agent_id")?;
        let reason = text(&r.reason, "reason")?;
        let caller = authorize(&request, org)?;
        let view = self.app.revoke_agent(caller, org, agent, reason).await?;
        Ok(Response::new(agent_view(
            view,
            &self.app.pki().settings().trust_domain,
        )))
    }

    async fn get_crl(
        &self,
        request: Request<pb::GetCrlRequest>,
    ) -> Result<Response<pb::Crl>, Status> {
        let org = id(&request.get_ref().org_id, "org_id")?;
        authorize(&request, org)?;
        let crl = self.app.get_crl(org).await?;
        Ok(Response::new(pb::Crl {
            der: crl.der().to_vec(),
            pem: crl.pem(),
            number: crl.number(),
            this_update: Some(to_timestamp(crl.this_update())),
            next_update: Some(to_timestamp(crl.next_update())),
        }))
    }
}
