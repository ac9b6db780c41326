//! [`Client`] and [`ClientOptions`]: the connection, the access token, and the loop every call
//! goes through (authenticate, send, refresh once on `UNAUTHENTICATED`, retry per policy).

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_proto::enrollment::v1 as pb;
use coffer_proto::enrollment::v1::token_service_client::TokenServiceClient;
use coffer_types::OrgId;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::api::{
    Agents, ApiKeys, Audit, Credentials, Databases, Destinations, Diagnostics, EnrollmentTokens,
    Jobs, MasterKeys, Members, OrgKeys, Orgs, Schedules, Tokens,
};
use crate::retry::{Kind, RetryPolicy};
use crate::token::{self, Exchange};
use crate::{AccessToken, Error};

/// How a [`Client`] connects, times out, retries and refreshes its token.
///
/// ```no_run
/// # async fn example() -> Result<(), coffer_sdk::Error> {
/// use std::time::Duration;
/// use coffer_sdk::{ClientOptions, RetryPolicy};
///
/// let client = ClientOptions::new()
///     .request_timeout(Duration::from_secs(10))
///     .retry(RetryPolicy::default().max_attempts(8))
///     .connect("https://coffer.example.com", std::env::var("COFFER_API_KEY").unwrap_or_default())
///     .await?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    connect_timeout: Duration,
    request_timeout: Duration,
    retry: RetryPolicy,
    refresh_margin: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            refresh_margin: None,
        }
    }
}

impl ClientOptions {
    /// The defaults: 5 s to connect, 30 s per request, [`RetryPolicy::default`], and a token
    /// refresh when less than the smaller of 60 s and a fifth of its lifetime is left.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long opening a connection may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one attempt of one call may take; then it fails with [`Error::Timeout`]
    /// (and is not retried: it may have been applied).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How calls failing with `UNAVAILABLE` or a connection error are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Exchange the API key for a new token once less than `margin` is left of the current
    /// one's lifetime. A margin at least as long as the lifetime refreshes before every call.
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = Some(margin);
        self
    }

    /// Connects to `endpoint` (`http://host:port` or `https://host`) and exchanges `api_key`
    /// for a first access token.
    ///
    /// The connection is opened by that exchange, under the retry policy, so a server that
    /// is still starting is waited for. A refused key is [`Error::Unauthenticated`].
    pub async fn connect(
        self,
        endpoint: &str,
        api_key: impl Into<SecretString>,
    ) -> Result<Client, Error> {
        let channel = channel(endpoint, &self)?.connect_lazy();
        let exchange = Arc::new(KeyExchange {
            channel: channel.clone(),
            api_key: api_key.into(),
            retry: self.retry.clone(),
        });
        let tokens =
            token::Tokens::new(Box::new(Arc::clone(&exchange)), self.refresh_margin).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint: endpoint.to_owned(),
                channel,
                retry: self.retry,
                exchange,
                tokens,
            }),
        })
    }
}

fn channel(url: &str, options: &ClientOptions) -> Result<Endpoint, Error> {
    let invalid = |message: &str| Error::InvalidEndpoint {
        message: message.to_owned(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| invalid("must be an http:// or https:// URL"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("must be an http:// or https:// URL")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    let mut endpoint = Endpoint::from(uri)
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .tcp_nodelay(true)
        // Notice a dead connection between calls instead of on the next call's timeout.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .user_agent(concat!("coffer-sdk/", env!("CARGO_PKG_VERSION")))
        .map_err(|_| invalid("user agent"))?;
    if tls {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|e| invalid(&format!("TLS: {e}")))?;
    }
    Ok(endpoint)
}

/// A connection to Coffer acting as one API key.
///
/// Cheap to clone: clones share the connection and the access token. Every call carries a
/// valid token: the client exchanges the key again shortly before the token expires (one
/// exchange however many calls are waiting for it), and once more if the server refuses the
/// token anyway. Calls failing with `UNAVAILABLE` or a connection error are retried as the
/// [`RetryPolicy`] allows (see [`RetryPolicy`] for which calls are safe to repeat).
///
/// `Debug` shows the endpoint, org and role; never the key or a token.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    channel: Channel,
    retry: RetryPolicy,
    /// Also behind `tokens`; kept here for [`Tokens::exchange`].
    exchange: Arc<KeyExchange>,
    tokens: token::Tokens,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.inner.tokens.current();
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .field("org", &token.org)
            .field("role", &token.role)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with the default [`ClientOptions`]; see [`ClientOptions::connect`].
    pub async fn connect(endpoint: &str, api_key: impl Into<SecretString>) -> Result<Self, Error> {
        ClientOptions::new().connect(endpoint, api_key).await
    }

    /// The endpoint this client was connected to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The org the API key belongs to (from its latest access token).
    pub fn org(&self) -> OrgId {
        self.inner.tokens.current().org
    }

    /// The role the API key carries (from its latest access token).
    pub fn role(&self) -> Role {
        self.inner.tokens.current().role
    }

    /// When the access token in use expires. It is replaced before then.
    pub fn token_expires_at(&self) -> DateTime<Utc> {
        self.inner.tokens.current().expires_at
    }

    /// Organisations.
    pub fn orgs(&self) -> Orgs<'_> {
        Orgs::new(self)
    }

    /// Members of an org and their roles.
    pub fn members(&self) -> Members<'_> {
        Members::new(self)
    }

    /// API keys.
    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys::new(self)
    }

    /// Access tokens and the keys that sign them.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens::new(self)
    }

    /// Single-use tokens agents enroll with.
    pub fn enrollment_tokens(&self) -> EnrollmentTokens<'_> {
        EnrollmentTokens::new(self)
    }

    /// Enrolled agents, their certificates, revocation and the org's CRL.
    pub fn agents(&self) -> Agents<'_> {
        Agents::new(self)
    }

    /// The credential vault: values in, metadata out.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials::new(self)
    }

    /// The org's age key pair: its public recipient and the owners' recovery export.
    pub fn org_keys(&self) -> OrgKeys<'_> {
        OrgKeys::new(self)
    }

    /// The platform's KMS master key: rotating every wrapped key onto it, and coverage.
    /// Platform owners and admins only.
    pub fn master_keys(&self) -> MasterKeys<'_> {
        MasterKeys::new(self)
    }

    /// The org's tamper-evident audit log: entries, signed checkpoints, proofs and the export
    /// bundle. Owners, admins and auditors.
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }

    /// The database registry: the org's backup targets and the agents that reach them.
    pub fn databases(&self) -> Databases<'_> {
        Databases::new(self)
    }

    /// Storage destinations: the S3 buckets and local directories backups are written to,
    /// each probed before it is saved.
    pub fn destinations(&self) -> Destinations<'_> {
        Destinations::new(self)
    }

    /// Backup schedules: cron timing in a time zone, pause and resume, retention.
    pub fn schedules(&self) -> Schedules<'_> {
        Schedules::new(self)
    }

    /// Backup and restore jobs: run a schedule now, restore, cancel, follow.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs::new(self)
    }

    /// End-to-end checks of a running deployment.
    pub fn diagnostics(&self) -> Diagnostics<'_> {
        Diagnostics::new(self)
    }

    /// A fresh access token for this client's key, separate from the one the client uses.
    pub(crate) async fn exchange(&self) -> Result<AccessToken, Error> {
        self.inner.exchange.exchange_once().await
    }

    /// Sends `message` with a bearer token through `send`, under the client's retry policy.
    pub(crate) async fn call<M, R, F, Fut>(&self, rpc: Rpc, message: M, send: F) -> Result<R, Error>
    where
        M: Clone,
        F: Fn(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let inner = &*self.inner;
        run(&inner.retry, rpc, Some(&inner.tokens), |bearer| {
            let mut request = tonic::Request::new(message.clone());
            if let Some(bearer) = bearer {
                request.metadata_mut().insert("authorization", bearer);
            }
            send(inner.channel.clone(), request)
        })
        .await
    }

    /// Sends `message` without credentials (public RPCs), under the client's retry policy.
    pub(crate) async fn call_public<M, R, F, Fut>(
        &self,
        rpc: Rpc,
        message: M,
        send: F,
    ) -> Result<R, Error>
    where
        M: Clone,
        F: Fn(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let inner = &*self.inner;
        run(&inner.retry, rpc, None, |_| {
            send(inner.channel.clone(), tonic::Request::new(message.clone()))
        })
        .await
    }
}

/// An RPC's name (for logs) and whether repeating it is harmless.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rpc {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

impl Rpc {
    /// A call that changes nothing.
    pub(crate) const fn read(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Read,
        }
    }

    /// A call that changes state.
    pub(crate) const fn write(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Write,
        }
    }
}

/// Exchanges the API key at `TokenService.Exchange`.
struct KeyExchange {
    channel: Channel,
    api_key: SecretString,
    retry: RetryPolicy,
}

impl KeyExchange {
    async fn exchange_once(&self) -> Result<AccessToken, Error> {
        let token = run(&self.retry, Rpc::read("Exchange"), None, |_| {
            let request = tonic::Request::new(pb::ExchangeRequest {
                api_key: self.api_key.expose_secret().to_owned(),
            });
            let mut client = TokenServiceClient::new(self.channel.clone());
            async move { client.exchange(request).await }
        })
        .await?;
        token.try_into()
    }
}

impl Exchange for Arc<KeyExchange> {
    fn exchange(&self) -> Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send + '_>> {
        Box::pin(self.exchange_once())
    }
}

/// One call: get a token (if `tokens`), send, and on failure either refresh the token once
/// (`UNAUTHENTICATED`), retry (as `policy` allows for `rpc`), or return the error.
///
/// `send` builds and sends one attempt, given the `authorization` value to put on it.
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    rpc: Rpc,
    tokens: Option<&token::Tokens>,
    mut send: F,
) -> Result<T, Error>
where
    F: FnMut(Option<MetadataValue<Ascii>>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut reauthenticated = false;
    loop {
        let token = match tokens {
            Some(tokens) => Some(tokens.get().await?),
            None => None,
        };
        attempts += 1;
        let status = match send(token.as_ref().map(|t| t.header())).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => status,
        };
        if let (Some(tokens), Some(token)) = (tokens, &token) {
            // The server refused the token (expired by its clock, signed by a retired key, or
            // its key revoked). Authentication runs before any handler, so nothing was applied
            // and the call may be repeated once with a fresh token. If the key itself is now
            // refused, the exchange fails and the server's first answer is the one reported.
            let refused = status.code() == Code::Unauthenticated && status.source().is_none();
            if refused && !reauthenticated {
                reauthenticated = true;
                match tokens.refresh(token.generation()).await {
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(rpc = rpc.name, error = %e, "re-exchanging the API key failed");
                        return Err(Error::from_status(&status, attempts));
                    }
                }
            }
        }
        // The attempt repeated with a fresh token does not count against the retry budget.
        let counted = attempts - u32::from(reauthenticated);
        match policy.retry_after(rpc.kind, &status, counted, started.elapsed()) {
            Some(delay) => {
                tracing::debug!(
                    rpc = rpc.name,
                    attempt = attempts,
                    code = ?status.code(),
                    message = status.message(),
                    ?delay,
                    "retrying"
                );
                tokio::time::sleep(delay).await;
            }
            None => return Err(Error::from_status(&status, attempts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::token::tests::FakeExchange;

    fn ok() -> Result<tonic::Response<()>, Status> {
        Ok(tonic::Response::new(()))
    }

    /// Runs `rpc` against a server scripted by `answers` (one per attempt), recording the
    /// bearer each attempt carried.
    async fn scripted(
        rpc: Rpc,
        policy: &RetryPolicy,
        tokens: Option<&token::Tokens>,
        answers: Vec<Result<tonic::Response<()>, Status>>,
    ) -> (Result<(), Error>, Vec<String>) {
        let answers = Mutex::new(answers.into_iter());
        let seen = Mutex::new(Vec::new());
        let result = run(policy, rpc, tokens, |bearer| {
            seen.lock().unwrap().push(
                bearer
                    .map(|b| b.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
            );
            let answer = answers
                .lock()
                .unwrap()
                .next()
                .expect("no more attempts scripted");
            async move { answer }
        })
        .await;
        (result, seen.into_inner().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_refreshed_once_and_the_call_repeated() {
        let exchange = FakeExchange::new(300, 300);
        let exchanges = exchange.count.clone();
        let tokens = token::Tokens::new(Box::new(exchange), None).await.unwrap();
        let (result, seen) = scripted(
            Rpc::write("AddMember"),
            &RetryPolicy::never(),
            Some(&tokens),
            vec![
                Err(Status::unauthenticated(
                    "access token refused: access token has expired",
                )),
                ok(),
            ],
        )
        .await;
        result.unwrap();
        assert_eq!(seen, ["Bearer token-0", "Bearer token-1"]);
        assert_eq!(exchanges.load(Ordering::SeqCst), 2);

        // Refused again with the fresh token: reported, not looped on.
        let (result, seen) = scripted(
            Rpc::read("ListMembers"),
            &RetryPolicy::default(),
            Some(&tokens),
            vec![
                Err(Status::unauthenticated(
                    "access token refused: api key has been revoked",
                )),
                Err(Status::unauthenticated(
                    "access token refused: api key has been revoked",
                )),
            ],
        )
        .await;
        assert_eq!(
            result.unwrap_err(),
            Error::Unauthenticated {
                message: "access token refused: api key has been revoked".into()
            }
        );
        assert_eq!(seen, ["Bearer token-1", "Bearer token-2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_key_itself_is_refused_the_first_answer_is_reported() {
        let mut exchange = FakeExchange::new(300, 300);
        exchange.fail_after = 1;
        let tokens = token::Tokens::new(Box::new(exchange), None).await.unwrap();
        let (result, seen) = scripted(
            Rpc::read("GetOrg"),
            &RetryPolicy::default(),
            Some(&tokens),
            vec![Err(Status::unauthenticated(
                "access token refused: api key has been revoked",
            ))],
        )
        .await;
        assert_eq!(
            result.unwrap_err(),
            Error::Unauthenticated {
                message: "access token refused: api key has been revoked".into()
            }
        );
        assert_eq!(seen.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_is_retried_with_backoff_up_to_the_attempt_limit() {
        let policy = RetryPolicy::default()
            .max_attempts(3)
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_secs(1))
            .deadline(None);
        let started = Instant::now();
        let (result, seen) = scripted(
            Rpc::write("CreateOrg"),
            &policy,
            None,
            vec![
                Err(Status::unavailable("storage is unavailable")),
                Err(Status::unavailable("storage is unavailable")),
                ok(),
            ],
        )
        .await;
        result.unwrap();
        assert_eq!(seen.len(), 3);
        // Waits of 50..=100 ms then 100..=200 ms, on the paused clock.
        let waited = started.elapsed();
        assert!(
            Duration::from_millis(150) <= waited && waited <= Duration::from_millis(300),
            "{waited:?}"
        );

        let (result, seen) = scripted(
            Rpc::read("GetOrg"),
            &policy,
            None,
            vec![
                Err(Status::unavailable("storage is unavailable")),
                Err(Status::unavailable("storage is unavailable")),
                Err(Status::unavailable("storage is unavailable")),
            ],
        )
        .await;
        assert_eq!(
            result.unwrap_err(),
            Error::Unavailable {
                message: "storage is unavailable".into(),
                attempts: 3
            }
        );
        assert_eq!(seen.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn other_codes_are_returned_at_once() {
        let (result, seen) = scripted(
            Rpc::read("GetOrg"),
            &RetryPolicy::default(),
            None,
            vec![Err(Status::not_found("org not found"))],
        )
        .await;
        assert_eq!(
            result.unwrap_err(),
            Error::NotFound {
                message: "org not found".into()
            }
        );
        assert_eq!(seen.len(), 1);
    }
}
