//! What the enrollment service publishes for every other service to verify callers locally:
//! the access-token key set and the agent CA certificates (platform root and each org's
//! intermediate), in a JetStream KV bucket every process follows. A process that runs only
//! (say) diagnostics verifies tokens and agent certificates without asking enrollment, and
//! picks up a new signing key or a new org without a restart.
//!
//! Keys: `access_token.jwks` (RFC 7517 JSON), `ca.root` and `ca.org.<org_id>` (DER).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use chrono::Utc;
use coffer_pki::AgentIdentity;
use coffer_types::OrgId;
use futures::StreamExt;
use tracing::Instrument;

use crate::Principal;
use crate::agent::{self, AgentTrust};
use crate::bearer::{self, Authenticator};
use crate::revocation::Revocations;
use crate::ticket::{self, JobTicket, TicketVerifier};
use crate::token::{Jwks, Verifier};

/// The KV key holding the key set as RFC 7517 JSON.
pub const JWKS_KEY: &str = "access_token.jwks";
/// The KV key holding the platform root certificate (DER).
pub const ROOT_KEY: &str = "ca.root";
/// Key of the job-ticket key set (scheduling's public keys, [`crate::ticket`]).
pub const TICKET_KEYS_KEY: &str = "job_ticket.jwks";
const ORG_PREFIX: &str = "ca.org.";

/// Publishing or following failed. Names the bucket operation; never carries key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

/// Opens (creating if needed) the bucket.
pub async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, Error> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    match js
        .create_key_value(kv::Config {
            bucket: name.to_owned(),
            description: "Coffer access-token public keys and agent CA certificates".to_owned(),
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
            .map_err(|_| Error(format!("create KV bucket {name}: {create}"))),
    }
}

/// Writes what enrollment publishes.
#[derive(Debug, Clone)]
pub struct Publisher {
    store: kv::Store,
}

impl Publisher {
    /// A publisher into `store`.
    pub fn new(store: kv::Store) -> Self {
        Self { store }
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), Error> {
        self.store
            .put(key, value.into())
            .await
            .map(|_| ())
            .map_err(|e| Error(format!("publish {key}: {e}")))
    }

    /// Publishes the access-token key set.
    pub async fn jwks(&self, jwks: &Jwks) -> Result<(), Error> {
        self.put(
            JWKS_KEY,
            serde_json::to_vec(jwks).expect("a key set serializes"),
        )
        .await
    }

    /// Publishes the keys job tickets are signed with (scheduling's; tests publish their own).
    pub async fn ticket_keys(&self, jwks: &Jwks) -> Result<(), Error> {
        self.put(
            TICKET_KEYS_KEY,
            serde_json::to_vec(jwks).expect("a key set serializes"),
        )
        .await
    }

    /// Publishes the platform root certificate.
    pub async fn root(&self, der: &[u8]) -> Result<(), Error> {
        self.put(ROOT_KEY, der.to_vec()).await
    }

    /// Publishes `org`'s intermediate certificate.
    pub async fn org_ca(&self, org: OrgId, der: &[u8]) -> Result<(), Error> {
        self.put(&format!("{ORG_PREFIX}{org}"), der.to_vec()).await
    }
}

/// Verifies callers against the latest published material and the revocation set.
pub struct PublishedKeys {
    // Replaced whenever a new key set is published; read on every request.
    current: RwLock<Arc<Authenticator>>,
    // Replaced whenever scheduling publishes a new ticket key set; read per release.
    tickets: RwLock<Arc<TicketVerifier>>,
    trust: Arc<AgentTrust>,
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

impl PublishedKeys {
    /// The principal a bearer access token authenticates now.
    pub fn authenticate(&self, token: &str) -> Result<Principal, bearer::Error> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        current.authenticate(token, SystemTime::now())
    }

    /// The agent certificate a client presented (DER), verified and not revoked now.
    pub fn authenticate_agent(&self, leaf: &[u8]) -> Result<AgentIdentity, agent::Error> {
        agent::authenticate_agent(&self.trust, &self.revocations, leaf, Utc::now())
    }

    /// The agent `leaf`'s identity, its chain verified but its revocation not checked. Only for
    /// reading the org's CRL: a revoked agent must still fetch the signed list that tells it it
    /// is revoked, so that it halts (P6).
    pub fn verify_agent_chain(&self, leaf: &[u8]) -> Result<AgentIdentity, agent::Error> {
        self.trust.verify(leaf, Utc::now())
    }

    /// Verifies a job ticket against the ticket keys published so far.
    pub fn verify_ticket(&self, ticket: &str) -> Result<JobTicket, ticket::Error> {
        let verifier = self
            .tickets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        verifier.verify(ticket, SystemTime::now())
    }

    /// The agent CA certificates followed so far (for the TLS handshake).
    pub fn trust(&self) -> &Arc<AgentTrust> {
        &self.trust
    }

    fn install(&self, jwks: &Jwks) {
        let verifier = Verifier::new(jwks, &self.issuer, &self.audience);
        let next = Arc::new(Authenticator::new(verifier, self.revocations.clone()));
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
    }

    fn apply(&self, entry: &kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        if entry.key == JWKS_KEY {
            if let Some(jwks) = parse(entry) {
                self.install(&jwks);
            }
        } else if entry.key == TICKET_KEYS_KEY {
            if let Some(jwks) = parse(entry) {
                *self
                    .tickets
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Arc::new(TicketVerifier::new(&jwks));
            }
        } else if entry.key == ROOT_KEY {
            self.trust.set_root(entry.value.to_vec());
        } else if let Some(org) = entry.key.strip_prefix(ORG_PREFIX) {
            match org.parse::<OrgId>() {
                Ok(org) => self.trust.set_org(org, entry.value.to_vec()),
                Err(_) => tracing::error!(key = %entry.key, "published CA key names no org"),
            }
        }
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

/// Waits up to `wait` for a published key set, then keeps following the bucket in the
/// background for as long as the returned value lives.
pub async fn follow(
    store: kv::Store,
    issuer: &str,
    audience: &str,
    revocations: Revocations,
    trust: Arc<AgentTrust>,
    wait: Duration,
) -> Result<Arc<PublishedKeys>, Error> {
    let deadline = tokio::time::Instant::now() + wait;
    let first = loop {
        match store.entry(JWKS_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                if let Some(jwks) = parse(&entry) {
                    break jwks;
                }
            }
            Ok(_) => {}
            Err(e) => return Err(Error(format!("read the access-token key set: {e}"))),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error(format!(
                "no access-token key set was published within {wait:?}; \
                 run the enrollment target (and `coffer admin init` once)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let keys = Arc::new(PublishedKeys {
        current: RwLock::new(Arc::new(Authenticator::new(
            Verifier::new(&first, issuer, audience),
            revocations.clone(),
        ))),
        tickets: RwLock::new(Arc::new(TicketVerifier::default())),
        trust,
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        revocations,
    });
    // Everything published so far, before serving: the watch below replays current values
    // too, but the first request must not race it.
    let mut existing = store
        .keys()
        .await
        .map_err(|e| Error(format!("list published keys: {e}")))?;
    while let Some(key) = existing.next().await {
        let key = key.map_err(|e| Error(format!("list published keys: {e}")))?;
        if let Ok(Some(entry)) = store.entry(&key).await {
            keys.apply(&entry);
        }
    }
    let weak = Arc::downgrade(&keys);
    tokio::spawn(
        async move {
            loop {
                let mut watch = match store.watch_all().await {
                    Ok(watch) => watch,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch published keys; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(entry) = watch.next().await {
                    let Some(keys) = weak.upgrade() else { return };
                    match entry {
                        Ok(entry) => keys.apply(&entry),
                        Err(e) => tracing::warn!(error = %e, "published keys watch"),
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        .instrument(tracing::info_span!("published_keys_watch")),
    );
    Ok(keys)
}
