//! Verifying ID tokens from an external OpenID Connect provider (DESIGN.md §5).
//!
//! Dashboard sign-in is OIDC authorization code + PKCE, run by the dashboard. Enrollment's
//! `TokenService` then exchanges the IdP's ID token for a Coffer access token; this module is
//! the verifying half: is the ID token genuine, fresh and meant for us, and which Coffer
//! [`Role`] do the user's IdP groups grant?
//!
//! This module does I/O: a [`Verifier`] fetches the provider's discovery document and JWKS over
//! HTTPS (reqwest with rustls) and refetches the JWKS when a token names a key it does not
//! know (key rotation at the IdP), at most once per [`UNKNOWN_KID_REFETCH_INTERVAL`], and when
//! its copy is older than [`Config::jwks_refresh`].
//!
//! Accepted signature algorithms are RS256, ES256 and EdDSA, each only with a key of the
//! matching type; `none`, HMAC and anything else are refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use coffer_types::OrgId;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::Role;
use crate::jws::{self, PublicKey, RawJwk, Reject};
use crate::token::unix_seconds;

/// A token naming an unknown key triggers a JWKS refetch at most this often, so garbage
/// tokens cannot make us hammer the IdP.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// ID tokens longer than this are refused before they are decoded (IdPs with many groups make
/// large tokens, hence more than an access token's cap).
pub const MAX_ID_TOKEN_BYTES: usize = 64 * 1024;

/// Discovery documents and JWKS larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// The shortest [`Config::jwks_refresh`] that [`Config::validate`] accepts.
const MIN_JWKS_REFRESH: Duration = Duration::from_secs(60);

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_email_claim() -> String {
    "email".to_owned()
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(60 * 60)
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// How to trust one OIDC provider, and how its groups map to Coffer roles in one org.
///
/// Deserializes from the server's config (figment), e.g. in TOML:
///
/// ```toml
/// issuer = "https://login.example.com/realms/acme"
/// audience = "coffer-dashboard"
/// org = "0190c3a4-5b6c-7d8e-9f00-112233445566"
/// jwks_refresh = "30m"
/// [group_roles]
/// coffer-admins = "admin"
/// sre = "operator"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The issuer identifier; discovery is fetched from
    /// `<issuer>/.well-known/openid-configuration`. Must be `https`, except on a loopback
    /// address (tests, local development).
    pub issuer: Url,
    /// Coffer's client id at the provider: the `aud` an ID token must carry.
    pub audience: String,
    /// The claim listing the user's groups (an array of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim holding the user's email address.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// IdP group → Coffer role. A user gets the most powerful role among their groups.
    pub group_roles: BTreeMap<String, Role>,
    /// The Coffer org this provider signs users in to.
    pub org: OrgId,
    /// How old the cached JWKS may get before it is refetched.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Timeout of each request to the provider.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
}

/// Why a [`Config`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The issuer is not `https` (or `http` on a loopback address).
    #[error("oidc issuer must be an https URL (http only on a loopback address)")]
    InsecureIssuer,
    /// The issuer has a query or fragment, which OpenID Connect forbids.
    #[error("oidc issuer must not have a query or fragment")]
    IssuerQuery,
    /// The audience (client id) is empty.
    #[error("oidc audience (client id) must not be empty")]
    EmptyAudience,
    /// A claim name is empty.
    #[error("oidc groups_claim and email_claim must not be empty")]
    EmptyClaim,
    /// No group maps to a role, so nobody could sign in.
    #[error("oidc group_roles must map at least one group to a role")]
    NoGroupRoles,
    /// A duration is out of range.
    #[error("oidc jwks_refresh must be at least 1m and http_timeout between 1s and 1m")]
    Duration,
}

impl Config {
    /// A config with the default claims, refresh and timeout.
    pub fn new(
        issuer: Url,
        audience: impl Into<String>,
        org: OrgId,
        group_roles: BTreeMap<String, Role>,
    ) -> Self {
        Config {
            issuer,
            audience: audience.into(),
            groups_claim: default_groups_claim(),
            email_claim: default_email_claim(),
            group_roles,
            org,
            jwks_refresh: default_jwks_refresh(),
            http_timeout: default_http_timeout(),
        }
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url(&self.issuer)?;
        if self.issuer.query().is_some() || self.issuer.fragment().is_some() {
            return Err(ConfigError::IssuerQuery);
        }
        if self.audience.is_empty() {
            return Err(ConfigError::EmptyAudience);
        }
        if self.groups_claim.is_empty() || self.email_claim.is_empty() {
            return Err(ConfigError::EmptyClaim);
        }
        if self.group_roles.is_empty() {
            return Err(ConfigError::NoGroupRoles);
        }
        let timeout_ok =
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.http_timeout);
        if self.jwks_refresh < MIN_JWKS_REFRESH || !timeout_ok {
            return Err(ConfigError::Duration);
        }
        Ok(())
    }

    /// The most powerful role granted by any of `groups`, if any.
    ///
    /// "Most powerful" follows [`Role::ALL`]: owner, admin, operator, auditor, viewer.
    pub fn role_for(&self, groups: &[String]) -> Option<Role> {
        groups
            .iter()
            .filter_map(|g| self.group_roles.get(g))
            .min_by_key(|role| Role::ALL.iter().position(|r| r == *role))
            .copied()
    }
}

/// `https`, or `http` to a loopback host.
fn check_url(url: &Url) -> Result<(), ConfigError> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(ConfigError::InsecureIssuer),
    }
}

/// Why sign-in was refused or the provider could not be used. Messages never contain the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("build oidc http client")]
    Client(#[source] reqwest::Error),
    /// The discovery document or JWKS could not be fetched.
    #[error("fetch {url}")]
    Fetch {
        /// What was fetched.
        url: Url,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with something that is not the expected document.
    #[error("{url} is not a valid {what}")]
    Document {
        /// What was fetched.
        url: Url,
        /// `"discovery document"` or `"JWKS"`.
        what: &'static str,
    },
    /// Discovery names another issuer than the configured one (OpenID Connect Discovery §4.3).
    #[error("oidc discovery names issuer {found:?}, expected {expected}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: Url,
        /// The issuer the document names.
        found: String,
    },
    /// The `jwks_uri` is not `https` (or `http` on loopback).
    #[error("oidc jwks_uri must be https")]
    InsecureJwksUri,
    /// The JWKS has no key we can verify with.
    #[error("oidc JWKS at {url} has no RS256, ES256 or EdDSA signature key")]
    NoUsableKeys {
        /// The JWKS location.
        url: Url,
    },
    /// The ID token is larger than [`MAX_ID_TOKEN_BYTES`].
    #[error("id token is too large")]
    TooLarge,
    /// The ID token is not a well-formed JWT with the required claims.
    #[error("id token is malformed")]
    Malformed,
    /// The ID token uses an algorithm we do not accept, or one its key does not have.
    #[error("id token must be signed with RS256, ES256 or EdDSA")]
    Algorithm,
    /// The ID token names a key the provider does not publish.
    #[error("id token is signed by a key the provider does not publish")]
    UnknownKey,
    /// The signature does not verify.
    #[error("id token signature is invalid")]
    Signature,
    /// The ID token was issued by another issuer.
    #[error("id token has the wrong issuer")]
    Issuer,
    /// The ID token is not meant for Coffer's client id.
    #[error("id token has the wrong audience")]
    Audience,
    /// The ID token has expired.
    #[error("id token has expired")]
    Expired,
    /// The ID token is not valid yet (`nbf` or `iat` in the future).
    #[error("id token is not valid yet")]
    NotYetValid,
    /// None of the user's groups maps to a Coffer role.
    #[error("no group maps to a Coffer role")]
    NoRole,
}

impl From<Reject> for Error {
    fn from(reject: Reject) -> Self {
        match reject {
            Reject::TooLarge => Error::TooLarge,
            Reject::Malformed => Error::Malformed,
            Reject::Algorithm => Error::Algorithm,
            Reject::Signature => Error::Signature,
        }
    }
}

/// A user the provider vouched for, with the Coffer role their groups grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's stable subject identifier (`sub`).
    pub subject: String,
    /// The email address, unless absent or marked unverified (`email_verified: false`).
    pub email: Option<String>,
    /// The display name (`name`), if given.
    pub name: Option<String>,
    /// The most powerful role among the user's mapped groups.
    pub role: Role,
    /// The org the provider signs users in to.
    pub org: OrgId,
    /// All the user's groups, as the provider listed them.
    pub groups: Vec<String>,
}

/// The members of a discovery document we use.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: Url,
}

/// A JWKS as providers publish it: keys we cannot use are skipped, not fatal.
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The provider's keys and when they were fetched.
#[derive(Debug)]
struct KeyCache {
    /// Keys with a `kid`.
    by_kid: HashMap<String, PublicKey>,
    /// Keys without one (only usable when a token has no `kid` either).
    anonymous: Vec<PublicKey>,
    /// The last successful fetch.
    fetched_at: Instant,
    /// The last attempt, successful or not.
    attempted_at: Instant,
    /// The last refetch caused by an unknown `kid`.
    unknown_kid_fetch: Option<Instant>,
}

impl KeyCache {
    fn find(&self, kid: Option<&str>, alg: jws::Alg) -> Option<PublicKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => {
                let mut matching = self.anonymous.iter().filter(|k| k.alg() == alg);
                match (matching.next(), matching.next()) {
                    (Some(key), None) => Some(key.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Whether the periodic refresh is due (not retried more often than the unknown-kid
    /// interval when the provider is failing).
    fn stale(&self, now: Instant, refresh: Duration) -> bool {
        now.saturating_duration_since(self.fetched_at) >= refresh
            && now.saturating_duration_since(self.attempted_at) >= UNKNOWN_KID_REFETCH_INTERVAL
    }

    /// Whether an unknown `kid` may trigger a refetch now.
    fn may_refetch_for_unknown_kid(&self, now: Instant) -> bool {
        self.unknown_kid_fetch
            .is_none_or(|at| now.saturating_duration_since(at) >= UNKNOWN_KID_REFETCH_INTERVAL)
    }
}

/// Verifies a provider's ID tokens. Cheap to clone; clones share the key cache.
#[derive(Debug, Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    http: reqwest::Client,
    /// The issuer exactly as the discovery document spells it: tokens' `iss` must equal it.
    issuer: String,
    jwks_uri: Url,
    /// The current keys; replaced whole after each successful fetch. Never held across an
    /// `.await`.
    keys: RwLock<KeyCache>,
    /// Serializes JWKS fetches, so concurrent requests with a new `kid` fetch once.
    fetching: tokio::sync::Mutex<()>,
}

/// The `iss` an ID token claims, read without verifying anything, only to choose which
/// configured provider's [`Verifier`] to verify it with (which then checks `iss` for real).
pub fn claimed_issuer(id_token: &str) -> Option<String> {
    let parsed = crate::jws::parse(id_token, MAX_ID_TOKEN_BYTES).ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&parsed.payload)
        .ok()
        .map(|c| c.iss)
}

impl Verifier {
    /// The issuer exactly as the provider's discovery document spells it.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Validates `config`, fetches the provider's discovery document, checks that it names the
    /// configured issuer, and fetches its JWKS. Fails if any step does, so a misconfigured
    /// provider stops the service at boot.
    pub async fn discover(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;

        let mut discovery_url = config.issuer.clone();
        let path = format!(
            "{}/.well-known/openid-configuration",
            config.issuer.path().trim_end_matches('/')
        );
        discovery_url.set_path(&path);
        let body = fetch(&http, &discovery_url).await?;
        let discovery: Discovery = serde_json::from_slice(&body).map_err(|_| Error::Document {
            url: discovery_url.clone(),
            what: "discovery document",
        })?;
        if Url::parse(&discovery.issuer).ok().as_ref() != Some(&config.issuer) {
            return Err(Error::IssuerMismatch {
                expected: config.issuer.clone(),
                found: discovery.issuer,
            });
        }
        check_url(&discovery.jwks_uri).map_err(|_| Error::InsecureJwksUri)?;

        let now = Instant::now();
        let (by_kid, anonymous) = fetch_keys(&http, &discovery.jwks_uri).await?;
        tracing::info!(
            issuer = %discovery.issuer,
            keys = by_kid.len() + anonymous.len(),
            "oidc provider discovered"
        );
        Ok(Verifier {
            inner: Arc::new(Inner {
                config,
                http,
                issuer: discovery.issuer,
                jwks_uri: discovery.jwks_uri,
                keys: RwLock::new(KeyCache {
                    by_kid,
                    anonymous,
                    fetched_at: now,
                    attempted_at: now,
                    unknown_kid_fetch: None,
                }),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The provider's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Verifies `id_token` at time `now` and maps the user's groups to a role.
    ///
    /// Checks: size and structure; `alg` is RS256, ES256 or EdDSA and matches the key's type;
    /// the key is published by the provider (refetching the JWKS for an unknown `kid`, rate
    /// limited); the signature; `iss` equals the discovered issuer; `aud` is, or contains, the
    /// client id (and `azp`, if present, is the client id); `exp`, `nbf`, `iat` with
    /// [`LEEWAY`]; a non-empty `sub`; then a group that maps to a role.
    ///
    /// The `nonce` binds the token to the dashboard's authorization request and is checked by
    /// the dashboard, which knows it.
    pub async fn verify(&self, id_token: &str, now: SystemTime) -> Result<Identity, Error> {
        let parsed = jws::parse(id_token, MAX_ID_TOKEN_BYTES)?;
        let kid = parsed.header.kid.as_deref();
        self.refresh_if_stale().await;
        let key = match self.cached_key(kid, parsed.alg) {
            Some(key) => key,
            None => self
                .refetch_for_unknown_kid(kid, parsed.alg)
                .await
                .ok_or(Error::UnknownKey)?,
        };
        key.verify(&parsed)?;
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&parsed.payload).map_err(|_| Error::Malformed)?;
        self.check_claims(&claims, now)?;
        self.identity(&claims)
    }

    fn cached_key(&self, kid: Option<&str>, alg: jws::Alg) -> Option<PublicKey> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .find(kid, alg)
    }

    /// Refreshes the JWKS if the cached copy is older than `jwks_refresh`. A failure keeps the
    /// old keys: the provider being briefly unreachable should not stop sign-in.
    async fn refresh_if_stale(&self) {
        let now = Instant::now();
        let stale = self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stale(now, self.inner.config.jwks_refresh);
        if !stale {
            return;
        }
        // Someone else is already fetching: use the keys we have.
        let Ok(_guard) = self.inner.fetching.try_lock() else {
            return;
        };
        if let Err(error) = self.fetch_into_cache(false).await {
            tracing::warn!(error = %error, "refresh oidc jwks; keeping the cached keys");
        }
    }

    /// Refetches the JWKS because a token names a key we do not have, unless that happened
    /// less than [`UNKNOWN_KID_REFETCH_INTERVAL`] ago. Returns the key if it is now known.
    async fn refetch_for_unknown_kid(&self, kid: Option<&str>, alg: jws::Alg) -> Option<PublicKey> {
        let _guard = self.inner.fetching.lock().await;
        // A concurrent request may have fetched while we waited for the lock.
        if let Some(key) = self.cached_key(kid, alg) {
            return Some(key);
        }
        let allowed = self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .may_refetch_for_unknown_kid(Instant::now());
        if !allowed {
            return None;
        }
        if let Err(error) = self.fetch_into_cache(true).await {
            tracing::warn!(error = %error, "refetch oidc jwks for an unknown key");
            return None;
        }
        self.cached_key(kid, alg)
    }

    /// Fetches the JWKS and replaces the cache. Call with `fetching` held.
    async fn fetch_into_cache(&self, for_unknown_kid: bool) -> Result<(), Error> {
        let started = Instant::now();
        {
            let mut cache = self
                .inner
                .keys
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            cache.attempted_at = started;
            if for_unknown_kid {
                cache.unknown_kid_fetch = Some(started);
            }
        }
        let (by_kid, anonymous) = fetch_keys(&self.inner.http, &self.inner.jwks_uri).await?;
        tracing::info!(keys = by_kid.len() + anonymous.len(), "oidc jwks refreshed");
        let mut cache = self
            .inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        cache.by_kid = by_kid;
        cache.anonymous = anonymous;
        cache.fetched_at = started;
        Ok(())
    }

    fn check_claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        now: SystemTime,
    ) -> Result<(), Error> {
        if claims.get("iss").and_then(|v| v.as_str()) != Some(self.inner.issuer.as_str()) {
            return Err(Error::Issuer);
        }
        let client_id = self.inner.config.audience.as_str();
        let audience_ok = match claims.get("aud") {
            Some(serde_json::Value::String(aud)) => aud == client_id,
            Some(serde_json::Value::Array(auds)) => {
                auds.iter().any(|a| a.as_str() == Some(client_id))
            }
            _ => false,
        };
        if !audience_ok {
            return Err(Error::Audience);
        }
        if let Some(azp) = claims.get("azp")
            && azp.as_str() != Some(client_id)
        {
            return Err(Error::Audience);
        }
        let time = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or(Error::Malformed),
        };
        let now = unix_seconds(now);
        let leeway = i64::try_from(LEEWAY.as_secs()).expect("leeway fits in i64");
        let exp = time("exp")?.ok_or(Error::Malformed)?;
        let iat = time("iat")?.ok_or(Error::Malformed)?;
        if now >= exp.saturating_add(leeway) {
            return Err(Error::Expired);
        }
        let not_before = time("nbf")?.unwrap_or(iat).max(iat);
        if not_before > now.saturating_add(leeway) {
            return Err(Error::NotYetValid);
        }
        Ok(())
    }

    fn identity(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Identity, Error> {
        let config = &self.inner.config;
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(Error::Malformed)?
            .to_owned();
        let groups: Vec<String> = match claims.get(&config.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let role = config.role_for(&groups).ok_or(Error::NoRole)?;
        let unverified = matches!(
            claims.get("email_verified"),
            Some(serde_json::Value::Bool(false))
        ) || claims.get("email_verified").and_then(|v| v.as_str())
            == Some("false");
        let email = claims
            .get(&config.email_claim)
            .and_then(|v| v.as_str())
            .filter(|_| !unverified)
            .map(str::to_owned);
        let name = claims
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(Identity {
            subject,
            email,
            name,
            role,
            org: config.org,
            groups,
        })
    }
}

/// GETs `url`, requiring a 2xx answer of at most [`MAX_DOCUMENT_BYTES`].
async fn fetch(http: &reqwest::Client, url: &Url) -> Result<Vec<u8>, Error> {
    let fetch_error = |source| Error::Fetch {
        url: url.clone(),
        source,
    };
    let too_large = || Error::Document {
        url: url.clone(),
        what: "document of at most 256 KiB",
    };
    let mut response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fetch_error)?;
    if response
        .content_length()
        .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches and parses a JWKS, skipping keys we cannot verify with (encryption keys, other
/// algorithms). Fails if none is left.
async fn fetch_keys(
    http: &reqwest::Client,
    url: &Url,
) -> Result<(HashMap<String, PublicKey>, Vec<PublicKey>), Error> {
    let body = fetch(http, url).await?;
    let raw: RawJwks = serde_json::from_slice(&body).map_err(|_| Error::Document {
        url: url.clone(),
        what: "JWKS",
    })?;
    let mut by_kid = HashMap::new();
    let mut anonymous = Vec::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            continue;
        };
        let Ok(key) = jwk.to_public_key() else {
            tracing::debug!(kid = ?jwk.kid, kty = %jwk.kty, "skipping unusable oidc jwk");
            continue;
        };
        match jwk.kid {
            Some(kid) => {
                by_kid.insert(kid, key);
            }
            None => anonymous.push(key),
        }
    }
    if by_kid.is_empty() && anonymous.is_empty() {
        return Err(Error::NoUsableKeys { url: url.clone() });
    }
    Ok((by_kid, anonymous))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            Url::parse("https://login.example.com/realms/acme").unwrap(),
            "coffer-dashboard",
            OrgId::new(),
            BTreeMap::from([
                ("viewers".to_owned(), Role::Viewer),
                ("auditors".to_owned(), Role::Auditor),
                ("sre".to_owned(), Role::Operator),
                ("admins".to_owned(), Role::Admin),
            ]),
        )
    }

    #[test]
    fn config_deserializes_with_defaults_and_humantime_durations() {
        let org = OrgId::new();
        let text = format!(
            r#"
            issuer = "https://login.example.com/realms/acme"
            audience = "coffer-dashboard"
            org = "{org}"
            jwks_refresh = "30m"
            [group_roles]
            coffer-admins = "admin"
            sre = "operator"
            "#
        );
        let config: Config = toml::from_str(&text).unwrap();
        assert_eq!(config.groups_claim, "groups");
        assert_eq!(config.email_claim, "email");
        assert_eq!(config.jwks_refresh, Duration::from_secs(1800));
        assert_eq!(config.http_timeout, Duration::from_secs(10));
        assert_eq!(config.group_roles["sre"], Role::Operator);
        assert_eq!(config.org, org);
        config.validate().unwrap();

        let typo = text.replace("audience", "audiance");
        assert!(toml::from_str::<Config>(&typo).is_err());
        let bad_role = text.replace("\"operator\"", "\"root\"");
        assert!(toml::from_str::<Config>(&bad_role).is_err());
    }

    #[test]
    fn validate_refuses_insecure_or_useless_configs() {
        let cases = [
            ("http://login.example.com", ConfigError::InsecureIssuer),
            ("http://10.0.0.1:8080", ConfigError::InsecureIssuer),
            ("ftp://login.example.com", ConfigError::InsecureIssuer),
            (
                "https://login.example.com/?tenant=x",
                ConfigError::IssuerQuery,
            ),
        ];
        for (issuer, expected) in cases {
            let mut c = config();
            c.issuer = Url::parse(issuer).unwrap();
            assert_eq!(c.validate(), Err(expected), "{issuer}");
        }
        for issuer in [
            "http://127.0.0.1:5556/dex",
            "http://[::1]:8080",
            "http://localhost:1",
        ] {
            let mut c = config();
            c.issuer = Url::parse(issuer).unwrap();
            assert_eq!(c.validate(), Ok(()), "{issuer}");
        }
        let mut c = config();
        c.audience.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyAudience));
        let mut c = config();
        c.groups_claim.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyClaim));
        let mut c = config();
        c.group_roles.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoGroupRoles));
        let mut c = config();
        c.jwks_refresh = Duration::from_secs(5);
        assert_eq!(c.validate(), Err(ConfigError::Duration));
        let mut c = config();
        c.http_timeout = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::Duration));
    }

    #[test]
    fn the_most_powerful_mapped_group_wins() {
        let c = config();
        let groups = |gs: &[&str]| gs.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        assert_eq!(
            c.role_for(&groups(&["viewers", "admins"])),
            Some(Role::Admin)
        );
        assert_eq!(
            c.role_for(&groups(&["auditors", "sre"])),
            Some(Role::Operator)
        );
        assert_eq!(
            c.role_for(&groups(&["viewers", "other"])),
            Some(Role::Viewer)
        );
        assert_eq!(c.role_for(&groups(&["Admins", "other"])), None);
        assert_eq!(c.role_for(&[]), None);
    }

    fn cache(at: Instant) -> KeyCache {
        KeyCache {
            by_kid: HashMap::new(),
            anonymous: Vec::new(),
            fetched_at: at,
            attempted_at: at,
            unknown_kid_fetch: None,
        }
    }

    #[test]
    fn the_jwks_goes_stale_after_the_refresh_period_and_failures_back_off() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut c = cache(t0);
        assert!(!c.stale(t0 + Duration::from_secs(3599), hour));
        assert!(c.stale(t0 + hour, hour));
        // A failed attempt just now: wait the interval before trying again.
        c.attempted_at = t0 + hour;
        assert!(!c.stale(t0 + hour + Duration::from_secs(9), hour));
        assert!(c.stale(t0 + hour + Duration::from_secs(10), hour));
    }

    #[test]
    fn unknown_kids_refetch_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut c = cache(t0);
        assert!(c.may_refetch_for_unknown_kid(t0));
        c.unknown_kid_fetch = Some(t0);
        assert!(!c.may_refetch_for_unknown_kid(t0 + Duration::from_secs(9)));
        assert!(c.may_refetch_for_unknown_kid(t0 + UNKNOWN_KID_REFETCH_INTERVAL));
    }
}
