//! A real OpenID Connect issuer for tests: an HTTP server on 127.0.0.1:0 serving a discovery
//! document and a JWKS (Keycloak-style paths under `/realms/acme`), with RS256 and ES256 keys
//! that sign ID tokens. It counts JWKS requests, can rotate its keys and can lie about its
//! issuer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coffer_auth::Role;
use coffer_auth::oidc::Config;
use coffer_types::OrgId;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use url::Url;

/// An RSA-2048 key made by stock `openssl` once per test run (ring cannot generate RSA
/// keys), as PKCS#8 DER. Nothing is checked in.
fn rsa_pkcs8() -> &'static [u8] {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("run openssl genpkey");
        assert!(out.status.success(), "openssl genpkey failed");
        // PEM `PRIVATE KEY` is PKCS#8 (its DER output would be PKCS#1).
        let pem = String::from_utf8(out.stdout).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    })
}

pub const CLIENT_ID: &str = "coffer-dashboard";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A key the test IdP can sign with.
#[allow(missing_debug_implementations)] // ring key pairs do not implement Debug
pub enum Key {
    Rsa { kid: String, key: RsaKeyPair },
    Ec { kid: String, key: EcdsaKeyPair },
    Ed { kid: String, key: Ed25519KeyPair },
}

impl Key {
    /// The run's RSA-2048 key.
    pub fn rsa(kid: &str) -> Self {
        Key::Rsa {
            kid: kid.into(),
            key: RsaKeyPair::from_pkcs8(rsa_pkcs8()).unwrap(),
        }
    }

    /// A fresh P-256 key.
    pub fn ec(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Key::Ec {
            kid: kid.into(),
            key: EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
        }
    }

    /// A fresh Ed25519 key.
    pub fn ed(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Key::Ed {
            kid: kid.into(),
            key: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            Key::Rsa { kid, .. } | Key::Ec { kid, .. } | Key::Ed { kid, .. } => kid,
        }
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Key::Rsa { .. } => "RS256",
            Key::Ec { .. } => "ES256",
            Key::Ed { .. } => "EdDSA",
        }
    }

    /// The public JWK, as an IdP publishes it.
    pub fn jwk(&self) -> Value {
        match self {
            Key::Rsa { kid, key } => {
                let public: signature::RsaPublicKeyComponents<Vec<u8>> = key.public().into();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": b64(&public.n), "e": b64(&public.e)})
            }
            Key::Ec { kid, key } => {
                let point = key.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            Key::Ed { kid, key } => {
                json!({"kty": "OKP", "kid": kid, "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
                       "x": b64(key.public_key().as_ref())})
            }
        }
    }

    /// The RSA public key's DER (`RSAPublicKey`), the bytes an attacker would use as an HMAC
    /// secret.
    pub fn public_der(&self) -> Vec<u8> {
        match self {
            Key::Rsa { key, .. } => key.public().as_ref().to_vec(),
            Key::Ec { key, .. } => key.public_key().as_ref().to_vec(),
            Key::Ed { key, .. } => key.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `claims` with this key's algorithm and kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.alg(), "kid": self.kid(), "typ": "JWT"}),
            claims,
        )
    }

    /// Signs `claims` under an arbitrary header (for confusion tests).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match self {
            Key::Rsa { key, .. } => {
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Key::Ec { key, .. } => key.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Ed { key, .. } => key.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(sig))
    }
}

#[derive(Debug)]
struct Served {
    /// The `issuer` the discovery document names.
    advertised_issuer: Mutex<String>,
    /// The JWKS served.
    jwks: Mutex<Value>,
    jwks_hits: AtomicUsize,
    base: String,
}

/// The running issuer.
#[derive(Debug)]
pub struct Idp {
    /// The issuer identifier, `http://127.0.0.1:<port>/realms/acme`.
    pub issuer: String,
    served: Arc<Served>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn discovery(State(s): State<Arc<Served>>) -> Json<Value> {
    let issuer = s.advertised_issuer.lock().unwrap().clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{}/realms/acme/protocol/openid-connect/auth", s.base),
        "token_endpoint": format!("{}/realms/acme/protocol/openid-connect/token", s.base),
        "jwks_uri": format!("{}/realms/acme/protocol/openid-connect/certs", s.base),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(s): State<Arc<Served>>) -> Json<Value> {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    Json(s.jwks.lock().unwrap().clone())
}

impl Idp {
    /// Starts an issuer publishing `keys`.
    pub async fn start(keys: &[&Key]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = format!("{base}/realms/acme");
        let served = Arc::new(Served {
            advertised_issuer: Mutex::new(issuer.clone()),
            jwks: Mutex::new(json!({"keys": []})),
            jwks_hits: AtomicUsize::new(0),
            base,
        });
        let app = Router::new()
            .route(
                "/realms/acme/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/realms/acme/protocol/openid-connect/certs", get(jwks))
            .with_state(Arc::clone(&served));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let idp = Idp {
            issuer,
            served,
            server,
        };
        idp.publish(keys);
        idp
    }

    /// Replaces the published key set.
    pub fn publish(&self, keys: &[&Key]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
        self.publish_raw(json!({ "keys": keys }));
    }

    /// Replaces the published key set with arbitrary JSON.
    pub fn publish_raw(&self, jwks: Value) {
        *self.served.jwks.lock().unwrap() = jwks;
    }

    /// Makes the discovery document name another issuer.
    pub fn advertise_issuer(&self, issuer: &str) {
        *self.served.advertised_issuer.lock().unwrap() = issuer.to_owned();
    }

    /// How many times the JWKS has been fetched.
    pub fn jwks_hits(&self) -> usize {
        self.served.jwks_hits.load(Ordering::SeqCst)
    }

    /// A config trusting this issuer, with `admins`/`sre`/`viewers` mapped.
    pub fn config(&self, org: OrgId) -> Config {
        Config::new(
            Url::parse(&self.issuer).unwrap(),
            CLIENT_ID,
            org,
            BTreeMap::from([
                ("admins".to_owned(), Role::Admin),
                ("sre".to_owned(), Role::Operator),
                ("viewers".to_owned(), Role::Viewer),
            ]),
        )
    }

    /// Claims of a valid ID token for Ada, issued now, expiring in 5 minutes.
    pub fn claims(&self) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "azp": CLIENT_ID,
            "sub": "f3a1c2d4-ada",
            "iat": now,
            "exp": now + 300,
            "nonce": "n-0S6_WzA2Mj",
            "email": "ada@example.com",
            "email_verified": true,
            "name": "Ada Lovelace",
            "groups": ["viewers", "admins", "unmapped"],
        })
    }
}
