//! The one place requests are authenticated: a tower layer in front of every gRPC service.
//!
//! For each request it looks the method up in `coffer_auth`'s RPC table, refuses unknown
//! methods (fail closed), lets public ones through, verifies the bearer token of the rest
//! and attaches a [`Caller`] (principal + the RPC's permission) for the handler, which then
//! only names the org it is about.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use coffer_auth::bearer::{self, token_from_authorization};
use coffer_auth::{Caller, Principal, is_public_rpc};
use tower::{Layer, Service};

/// Turns a bearer token into a principal, or says (without echoing the token) why not.
pub trait Authenticate: Send + Sync + 'static {
    /// Verifies `token` now.
    fn authenticate(&self, token: &str) -> Result<Principal, bearer::Error>;
}

/// Authenticates every non-public request.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<dyn Authenticate>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// A layer verifying tokens with `authenticator`.
    pub fn new(authenticator: Arc<dyn Authenticate>) -> Self {
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
    authenticator: Arc<dyn Authenticate>,
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

/// Why a request was refused before reaching its handler.
fn refuse<B: Default>(status: tonic::Status) -> http::Response<B> {
    status.into_http()
}

impl<S> AuthService<S> {
    fn check<B>(&self, request: &http::Request<B>) -> Result<Option<Caller>, tonic::Status> {
        let path = request.uri().path();
        if is_public_rpc(path) {
            return Ok(None);
        }
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(token_from_authorization)
            .ok_or_else(|| {
                tonic::Status::unauthenticated("authorization: Bearer <access token> is required")
            })?;
        let principal = self
            .authenticator
            .authenticate(token)
            .map_err(|reason| match reason {
                bearer::Error::NotReady => {
                    tonic::Status::unavailable(format!("{reason}; retry shortly"))
                }
                reason => {
                    tracing::info!(method = path, %reason, "request refused: bad credentials");
                    tonic::Status::unauthenticated(format!("access token refused: {reason}"))
                }
            })?;
        let caller = Caller::for_rpc(principal, path).ok_or_else(|| {
            // Not in the permission table: refused whatever the caller holds.
            tonic::Status::permission_denied(format!("{path} is not open to callers"))
        })?;
        Ok(Some(caller))
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
            Ok(caller) => {
                if let Some(caller) = caller {
                    if let Some(org) = caller.principal().org() {
                        coffer_telemetry::record_org_id(org);
                    }
                    request.extensions_mut().insert(caller);
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
