//! The client's access token: obtained by exchanging the API key, refreshed before it expires
//! and when the server refuses it, one exchange at a time however many callers need it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_types::OrgId;
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};

use crate::{AccessToken, Error};

/// The refresh margin when none is configured: the smaller of this and a fifth of the
/// token's lifetime.
const DEFAULT_MARGIN_CAP: Duration = Duration::from_secs(60);

/// Exchanges the API key for a fresh access token.
pub(crate) trait Exchange: Send + Sync + 'static {
    /// One exchange (with whatever retries the implementation applies).
    fn exchange(&self) -> Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send + '_>>;
}

/// One access token as requests send it.
pub(crate) struct Token {
    /// `Bearer <token>`, marked sensitive (not indexed by HPACK, hidden from header dumps).
    header: MetadataValue<Ascii>,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) org: OrgId,
    pub(crate) role: Role,
    /// When to exchange the key again rather than keep using this token.
    refresh_at: Instant,
    /// Counts exchanges, so a caller can tell whether the token it found stale is still the
    /// current one.
    generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .field("org", &self.org)
            .field("role", &self.role)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Token {
    fn new(access: AccessToken, generation: u64, margin: Option<Duration>) -> Result<Self, Error> {
        let mut header: MetadataValue<Ascii> = format!("Bearer {}", access.token.expose_secret())
            .parse()
            .map_err(|_| Error::protocol("AccessToken.access_token is not a valid header value"))?;
        header.set_sensitive(true);
        // Measured against the local clock once, then followed on the monotonic clock.
        let lifetime = (access.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let margin = margin.unwrap_or_else(|| DEFAULT_MARGIN_CAP.min(lifetime / 5));
        Ok(Self {
            header,
            expires_at: access.expires_at,
            org: access.org_id,
            role: access.role,
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
            generation,
        })
    }

    /// The `authorization` metadata value.
    pub(crate) fn header(&self) -> MetadataValue<Ascii> {
        self.header.clone()
    }

    /// Which exchange produced this token.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

/// The current token and the means to replace it.
pub(crate) struct Tokens {
    exchange: Box<dyn Exchange>,
    margin: Option<Duration>,
    /// The token requests are sent with. Replaced, never mutated, by a refresh; the lock is
    /// only held to clone or swap the `Arc`.
    current: RwLock<Arc<Token>>,
    /// Refresh attempts finished, successful or not. Read before waiting for `refreshing`, so
    /// a caller can tell that an attempt ran while it waited.
    attempts: AtomicU64,
    /// Held for the whole of an exchange, so callers that find the token stale at the same
    /// time wait for one refresh instead of each exchanging the key. Holds the error of the
    /// last attempt if it failed, which the callers that waited for it get too.
    refreshing: tokio::sync::Mutex<Option<Error>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Exchanges the key once. `margin`: refresh when less than this is left of a token's
    /// lifetime; `None`: the smaller of 60 s and a fifth of the lifetime.
    pub(crate) async fn new(
        exchange: Box<dyn Exchange>,
        margin: Option<Duration>,
    ) -> Result<Self, Error> {
        let first = Token::new(exchange.exchange().await?, 0, margin)?;
        Ok(Self {
            exchange,
            margin,
            current: RwLock::new(Arc::new(first)),
            attempts: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(None),
        })
    }

    /// The token in use, whether or not it is due for refresh.
    pub(crate) fn current(&self) -> Arc<Token> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A token to send: the current one, refreshed first if it is due. If the refresh fails
    /// while the current token has not yet expired, the current one is used.
    pub(crate) async fn get(&self) -> Result<Arc<Token>, Error> {
        let token = self.current();
        if Instant::now() < token.refresh_at {
            return Ok(token);
        }
        match self.refresh(token.generation).await {
            Ok(fresh) => Ok(fresh),
            Err(e) if Utc::now() < token.expires_at => {
                tracing::debug!(error = %e, "access token refresh failed; the current one is still valid");
                Ok(token)
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the token of generation `stale` with a fresh one. If another caller replaced
    /// it meanwhile, returns theirs; if another caller's attempt failed while this one waited,
    /// returns that error. Either way without another exchange.
    pub(crate) async fn refresh(&self, stale: u64) -> Result<Arc<Token>, Error> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut last_error = self.refreshing.lock().await;
        let token = self.current();
        if token.generation != stale {
            return Ok(token);
        }
        if self.attempts.load(Ordering::SeqCst) != seen
            && let Some(e) = last_error.as_ref()
        {
            return Err(e.clone());
        }
        let fresh = async {
            let access = self.exchange.exchange().await?;
            Token::new(access, stale + 1, self.margin).map(Arc::new)
        }
        .await;
        let result = match fresh {
            Ok(fresh) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
                tracing::debug!(expires_at = %fresh.expires_at, "access token refreshed");
                *last_error = None;
                Ok(fresh)
            }
            Err(e) => {
                *last_error = Some(e.clone());
                Err(e)
            }
        };
        // After the new token is visible: a caller that sees the count move sees the token.
        self.attempts.fetch_add(1, Ordering::SeqCst);
        result
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use secrecy::SecretString;

    use super::*;

    /// Issues `token-<n>` tokens: the first lives `first`, later ones `later`; fails once
    /// `fail_after` exchanges have succeeded.
    pub(crate) struct FakeExchange {
        pub(crate) count: Arc<AtomicU32>,
        pub(crate) first: chrono::Duration,
        pub(crate) later: chrono::Duration,
        pub(crate) fail_after: u32,
        /// If set, a failing exchange waits until the gate has a permit before failing.
        pub(crate) gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl FakeExchange {
        pub(crate) fn new(first_secs: i64, later_secs: i64) -> Self {
            Self {
                count: Arc::new(AtomicU32::new(0)),
                first: chrono::Duration::seconds(first_secs),
                later: chrono::Duration::seconds(later_secs),
                fail_after: u32::MAX,
                gate: None,
            }
        }
    }

    impl Exchange for FakeExchange {
        fn exchange(
            &self,
        ) -> Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send + '_>> {
            Box::pin(async move {
                let n = self.count.fetch_add(1, Ordering::SeqCst);
                // Let other callers run while this exchange is "on the wire".
                tokio::task::yield_now().await;
                if n >= self.fail_after {
                    if let Some(gate) = &self.gate {
                        drop(gate.acquire().await);
                    }
                    return Err(Error::Unavailable {
                        message: "down".into(),
                        attempts: 1,
                    });
                }
                let lifetime = if n == 0 { self.first } else { self.later };
                Ok(AccessToken {
                    token: SecretString::from(format!("token-{n}")),
                    expires_at: Utc::now() + lifetime,
                    org_id: OrgId::new(),
                    role: Role::Operator,
                })
            })
        }
    }

    fn bearer(token: &Token) -> String {
        token.header().to_str().unwrap().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn callers_that_find_the_token_stale_together_share_one_refresh() {
        // A 10 s token with a 60 s margin is due at once; its 300 s successor is not.
        let exchange = FakeExchange::new(10, 300);
        let count = exchange.count.clone();
        let tokens = Arc::new(
            Tokens::new(Box::new(exchange), Some(Duration::from_secs(60)))
                .await
                .unwrap(),
        );
        let callers: Vec<_> = (0..64)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { bearer(&tokens.get().await.unwrap()) })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), "Bearer token-1");
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "the first exchange and one refresh"
        );
    }

    #[tokio::test]
    async fn callers_that_waited_on_a_failed_refresh_get_its_error_without_retrying() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut exchange = FakeExchange::new(-1, 300);
        exchange.fail_after = 1;
        exchange.gate = Some(gate.clone());
        let count = exchange.count.clone();
        let tokens = Tokens::new(Box::new(exchange), None).await.unwrap();

        // The first caller starts a refresh that hangs; the others queue behind it.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut callers: Vec<_> = (0..8).map(|_| Box::pin(tokens.get())).collect();
        for caller in &mut callers {
            assert!(caller.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "one refresh under way");
        gate.add_permits(1);
        for caller in callers {
            assert!(matches!(caller.await, Err(Error::Unavailable { .. })));
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "nobody tried again");

        // A later call is a new attempt.
        assert!(tokens.get().await.is_err());
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_token_is_kept_until_its_margin_and_refreshed_after() {
        let exchange = FakeExchange::new(300, 300);
        let count = exchange.count.clone();
        let tokens = Tokens::new(Box::new(exchange), None).await.unwrap();
        assert_eq!(bearer(&tokens.get().await.unwrap()), "Bearer token-0");
        assert_eq!(count.load(Ordering::SeqCst), 1);

        // A margin as long as the lifetime makes every token due as soon as it arrives.
        let exchange = FakeExchange::new(300, 300);
        let tokens = Tokens::new(Box::new(exchange), Some(Duration::from_secs(300)))
            .await
            .unwrap();
        assert_eq!(bearer(&tokens.get().await.unwrap()), "Bearer token-1");
        assert_eq!(bearer(&tokens.get().await.unwrap()), "Bearer token-2");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_a_valid_token_but_not_an_expired_one() {
        let mut exchange = FakeExchange::new(30, 300);
        exchange.fail_after = 1;
        let tokens = Tokens::new(Box::new(exchange), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(bearer(&tokens.get().await.unwrap()), "Bearer token-0");

        let mut exchange = FakeExchange::new(-1, 300);
        exchange.fail_after = 1;
        let tokens = Tokens::new(Box::new(exchange), None).await.unwrap();
        assert!(matches!(
            tokens.get().await.unwrap_err(),
            Error::Unavailable { .. }
        ));
    }

    #[tokio::test]
    async fn a_refresh_asked_for_an_already_replaced_token_does_not_exchange_again() {
        let exchange = FakeExchange::new(300, 300);
        let count = exchange.count.clone();
        let tokens = Tokens::new(Box::new(exchange), None).await.unwrap();
        let stale = tokens.current().generation();
        tokens.refresh(stale).await.unwrap();
        let again = tokens.refresh(stale).await.unwrap();
        assert_eq!(bearer(&again), "Bearer token-1");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn debug_output_has_no_token() {
        let token = Token::new(
            AccessToken {
                token: SecretString::from("eyJhbGciOiJFZERTQSJ9.secret.sig"),
                expires_at: Utc::now(),
                org_id: OrgId::new(),
                role: Role::Viewer,
            },
            0,
            None,
        )
        .unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }
}
