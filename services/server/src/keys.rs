//! The access-token key set, published by the enrollment target into a JetStream KV bucket
//! and watched by every target, so a process that runs only (say) diagnostics verifies tokens
//! locally and picks up a new signing key without a restart.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use coffer_auth::Principal;
use coffer_auth::bearer::{self, Authenticator};
use coffer_auth::revocation::Revocations;
use coffer_auth::token::{Jwks, Verifier};
use futures::StreamExt;
use tracing::Instrument;

use crate::authn::Authenticate;

/// The KV key holding the key set as RFC 7517 JSON.
pub const JWKS_KEY: &str = "access_token.jwks";

/// Opens (creating if needed) the key-set bucket.
pub async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    match js
        .create_key_value(kv::Config {
            bucket: name.to_owned(),
            description: "Coffer access-token public keys (JWKS)".to_owned(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
    {
        Ok(store) => Ok(store),
        // Another process may have created it between the two calls.
        Err(create) => js
            .get_key_value(name)
            .await
            .map_err(|_| format!("create KV bucket {name}: {create}")),
    }
}

/// Publishes `jwks` (enrollment, at boot and after a key change).
pub async fn publish(store: &kv::Store, jwks: &Jwks) -> Result<(), String> {
    let json = serde_json::to_vec(jwks).expect("a key set serializes");
    store
        .put(JWKS_KEY, json.into())
        .await
        .map(|_| ())
        .map_err(|e| format!("publish the access-token key set: {e}"))
}

/// Verifies tokens against the latest published key set and the revocation set.
pub struct PublishedKeys {
    // Replaced whenever a new key set is published; read on every request.
    current: RwLock<Arc<Authenticator>>,
    issuer: String,
    audience: String,
    revocations: Revocations,
}

impl std::fmt::Debug for PublishedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Authenticate for PublishedKeys {
    fn authenticate(&self, token: &str) -> Result<Principal, bearer::Error> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        current.authenticate(token, SystemTime::now())
    }
}

impl PublishedKeys {
    fn install(&self, jwks: &Jwks) {
        let verifier = Verifier::new(jwks, &self.issuer, &self.audience);
        let next = Arc::new(Authenticator::new(verifier, self.revocations.clone()));
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
    }
}

fn parse(entry: &kv::Entry) -> Option<Jwks> {
    match serde_json::from_slice(&entry.value) {
        Ok(jwks) => Some(jwks),
        Err(e) => {
            tracing::error!(error = %e, "published key set does not parse; keeping the previous one");
            None
        }
    }
}

/// Waits up to `wait` for a published key set, then keeps following it in the background
/// (until the returned value and its watch task are dropped with the runtime).
pub async fn follow(
    store: kv::Store,
    issuer: &str,
    audience: &str,
    revocations: Revocations,
    wait: Duration,
) -> Result<Arc<PublishedKeys>, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let first = loop {
        match store.entry(JWKS_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                if let Some(jwks) = parse(&entry) {
                    break jwks;
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("read the access-token key set: {e}")),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no access-token key set was published within {wait:?}; \
                 run the enrollment target (and `coffer admin init` once)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let keys = Arc::new(PublishedKeys {
        current: RwLock::new(Arc::new(Authenticator::new(
            Verifier::new(&first, issuer, audience),
            revocations.clone(),
        ))),
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        revocations,
    });
    let weak = Arc::downgrade(&keys);
    tokio::spawn(
        async move {
            loop {
                let mut watch = match store.watch(JWKS_KEY).await {
                    Ok(watch) => watch,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch the key set; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(entry) = watch.next().await {
                    let Some(keys) = weak.upgrade() else { return };
                    match entry {
                        Ok(entry) if entry.operation == kv::Operation::Put => {
                            if let Some(jwks) = parse(&entry) {
                                keys.install(&jwks);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "key set watch"),
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        .instrument(tracing::info_span!("jwks_watch")),
    );
    Ok(keys)
}
