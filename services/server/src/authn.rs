//! The one place requests are authenticated: a tower layer in front of every gRPC service.
//!
//! For each request it looks the method up in `coffer_auth`'s RPC table, refuses unknown
//! methods (fail closed), lets public ones through, and authenticates the rest: a bearer
//! access token, or else the agent client certificate of the TLS connection (verified again
//! on every request, so expiry and revocation bite on long-lived connections). It attaches a
//! [`Caller`] (principal + the RPC's permission) for the handler, which then only names the
//! org it is about; for agents also the verified certificate identity.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use coffer_auth::agent;
use coffer_auth::bearer::{self, token_from_authorization};
use coffer_auth::published::PublishedKeys;
use coffer_auth::{Caller, Principal, is_public_rpc};
use coffer_pki::AgentIdentity;

use crate::tls::PeerInfo;
use tower::{Layer, Service};

/// Authenticates every non-public request.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<PublishedKeys>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// A layer verifying tokens with `authenticator`.
    pub fn new(authenticator: Arc<PublishedKeys>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<PublishedKeys>,
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

/// Why a request was refused before reaching its handler.
/// The one method a revoked agent may call.
const GET_CRL: &str = "/coffer.enrollment.v1.AgentService/GetCrl";

fn refuse<B: Default>(status: tonic::Status) -> http::Response<B> {
    status.into_http()
}

/// Who is calling: the caller and, for agents, the certificate they authenticated with.
type Authenticated = (Caller, Option<AgentIdentity>);

impl<S> AuthService<S> {
    fn check<B>(&self, request: &http::Request<B>) -> Result<Option<Authenticated>, tonic::Status> {
        let path = request.uri().path();
        if is_public_rpc(path) {
            return Ok(None);
        }
        let bearer = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (principal, agent) = match bearer {
            Some(value) => (self.bearer(path, value)?, None),
            None => {
                let leaf = request
                    .extensions()
                    .get::<PeerInfo>()
                    .and_then(|peer| peer.client_certificate.clone())
                    .ok_or_else(|| {
                        tonic::Status::unauthenticated(
                            "authorization: Bearer <access token> or an agent client certificate is required",
                        )
                    })?;
                let refused = |e: agent::Error| {
                    tracing::info!(method = path, error = %e, "request refused: agent certificate");
                    tonic::Status::unauthenticated(format!("client certificate refused: {e}"))
                };
                let identity = match self.authenticator.authenticate_agent(&leaf) {
                    Ok(identity) => identity,
                    // A revoked agent may still read its org's CRL (and nothing else): the
                    // signed list is how it learns it is revoked, and it halts on it (P6).
                    Err(agent::Error::Revoked(_)) if path == GET_CRL => self
                        .authenticator
                        .verify_agent_chain(&leaf)
                        .map_err(refused)?,
                    Err(e) => return Err(refused(e)),
                };
                (agent::principal(&identity), Some(identity))
            }
        };
        let caller = Caller::for_rpc(principal, path).ok_or_else(|| {
            // Not in the permission table: refused whatever the caller holds.
            tonic::Status::permission_denied(format!("{path} is not open to callers"))
        })?;
        Ok(Some((caller, agent)))
    }

    fn bearer(&self, path: &str, value: &str) -> Result<Principal, tonic::Status> {
        let token = token_from_authorization(value).ok_or_else(|| {
            tonic::Status::unauthenticated("authorization must be `Bearer <access token>`")
        })?;
        self.authenticator
            .authenticate(token)
            .map_err(|reason| match reason {
                bearer::Error::NotReady => {
                    tonic::Status::unavailable(format!("{reason}; retry shortly"))
                }
                reason => {
                    tracing::info!(method = path, %reason, "request refused: bad credentials");
                    tonic::Status::unauthenticated(format!("access token refused: {reason}"))
                }
            })
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match self.check(&request) {
            Ok(authenticated) => {
                if let Some((caller, agent)) = authenticated {
                    if let Some(org) = caller.principal().org() {
                        coffer_telemetry::record_org_id(org);
                    }
                    request.extensions_mut().insert(caller);
                    if let Some(identity) = agent {
                        request.extensions_mut().insert(identity);
                    }
                }
                // The ready service handles this request; a fresh clone takes its place.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(request))
            }
            Err(status) => Box::pin(async move { Ok(refuse(status)) }),
        }
    }
}
