//! Coffer access tokens: short-lived JWTs signed with Ed25519 (DESIGN.md §5, §6).
//!
//! Enrollment's `TokenService` holds a [`Signer`] and exchanges an API key or an IdP sign-in
//! for a 5-minute token; every service holds a [`Verifier`] built from the published [`Jwks`]
//! and checks tokens locally. Revocations that must bite before a token expires are
//! [`crate::revocation`]'s job, and [`crate::bearer::Authenticator`] combines the two.
//!
//! # Wire format
//!
//! A compact JWS (RFC 7515) with the header `{"alg":"EdDSA","kid":"<kid>","typ":"at+jwt"}`
//! and the claims of [`AccessClaims`]:
//!
//! ```json
//! {"iss":"https://coffer.example","aud":"coffer","sub":"api_key:0190…","org":"0190…",
//!  "role":"admin","scopes":[],"iat":1767225600,"exp":1767225900,"jti":"9f0c…"}
//! ```
//!
//! The `kid` is the key's RFC 7638 JWK thumbprint, so it is derived from the public key alone
//! and anyone holding the JWKS can recompute it.
//!
//! # Rotation
//!
//! Publish the new key in the JWKS next to the old one, switch the signer, and remove the old
//! key once the last token it signed has expired (5 minutes plus leeway). A [`Verifier`] accepts
//! any key in the JWKS it was built from.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer_types::{ApiKeyId, OrgId, UserId};
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::jws::{self, Alg, JwkReject, PublicKey, RawJwk, Reject};
use crate::{Principal, Role};

/// The lifetime of an access token (DESIGN.md §5).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The longest lifetime [`Signer::issue`] accepts: access tokens are short-lived by design.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The clock skew a [`Verifier`] tolerates by default.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(10);

/// The most clock skew a [`Verifier`] can be told to tolerate.
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);

/// Tokens longer than this are refused before they are decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The JOSE `typ` of a Coffer access token (RFC 9068), which keeps other JWTs signed by the
/// same key material from passing as access tokens.
const TYP: &str = "at+jwt";

/// Why a token could not be issued or was refused. The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("access token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// The token is not a well-formed compact JWS with Coffer access-token claims.
    #[error("access token is malformed")]
    Malformed,
    /// The token is signed with another algorithm than EdDSA, or is not an access token.
    #[error("access token must be an EdDSA-signed at+jwt")]
    Algorithm,
    /// The token names no key, or a key the verifier does not know.
    #[error("access token is signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("access token signature is invalid")]
    Signature,
    /// The token was issued by someone else.
    #[error("access token has the wrong issuer")]
    Issuer,
    /// The token is meant for another audience.
    #[error("access token has the wrong audience")]
    Audience,
    /// The token has expired.
    #[error("access token has expired")]
    Expired,
    /// The token is not valid yet (`nbf` or `iat` in the future).
    #[error("access token is not valid yet")]
    NotYetValid,
    /// A signing key could not be loaded (wrong length or not an Ed25519 PKCS#8 document).
    #[error("signing key must be a 32-byte Ed25519 seed or an Ed25519 PKCS#8 document")]
    SigningKey,
    /// A JWKS entry is not an Ed25519 signature key, or its `kid` is not its thumbprint.
    #[error("JWKS key {kid:?} is not a valid Ed25519 signature key")]
    Jwk {
        /// The offending key's id.
        kid: String,
    },
    /// Claims handed to [`Signer::issue`] expire before they are issued or live longer than
    /// [`MAX_LIFETIME`].
    #[error("access token lifetime must be positive and at most {} s", MAX_LIFETIME.as_secs())]
    Lifetime,
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

/// Who a token speaks for; serialized as the `sub` claim, `api_key:<uuid>` or `user:<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Subject {
    /// An integrator's API key.
    ApiKey(ApiKeyId),
    /// A person.
    User(UserId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::ApiKey(id) => write!(f, "api_key:{id}"),
            Subject::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// Error returned when a `sub` claim is not `api_key:<uuid>` or `user:<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject must be `api_key:<uuid>` or `user:<uuid>`")]
pub struct ParseSubjectError;

impl FromStr for Subject {
    type Err = ParseSubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once(':').ok_or(ParseSubjectError)?;
        match kind {
            "api_key" => id
                .parse()
                .map(Subject::ApiKey)
                .map_err(|_| ParseSubjectError),
            "user" => id.parse().map(Subject::User).map_err(|_| ParseSubjectError),
            _ => Err(ParseSubjectError),
        }
    }
}

impl TryFrom<String> for Subject {
    type Error = ParseSubjectError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> Self {
        subject.to_string()
    }
}

/// The claims of a Coffer access token. Times are seconds since the Unix epoch (JWT
/// NumericDate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuing Coffer deployment, e.g. `https://coffer.example`.
    pub iss: String,
    /// The audience: the Coffer API, e.g. `coffer`.
    pub aud: String,
    /// The API key or user the token speaks for.
    #[serde(rename = "sub")]
    pub subject: Subject,
    /// The org the token acts in.
    pub org: OrgId,
    /// The role the token acts with.
    pub role: Role,
    /// API key scopes, as granted when the key was created; empty for users.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the token was issued.
    pub iat: i64,
    /// Not valid before, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// When the token expires.
    pub exp: i64,
    /// A unique id for this token, for audit correlation.
    pub jti: uuid::Uuid,
}

impl AccessClaims {
    /// Claims valid from `now` for `lifetime`, with a fresh random `jti` and no scopes.
    pub fn new(
        iss: impl Into<String>,
        aud: impl Into<String>,
        subject: Subject,
        org: OrgId,
        role: Role,
        now: SystemTime,
        lifetime: Duration,
    ) -> Self {
        let iat = unix_seconds(now);
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        AccessClaims {
            iss: iss.into(),
            aud: aud.into(),
            subject,
            org,
            role,
            scopes: Vec::new(),
            iat,
            nbf: None,
            exp: iat.saturating_add(secs),
            jti: uuid::Uuid::new_v4(),
        }
    }

    /// The principal these claims authenticate.
    pub fn principal(&self) -> Principal {
        match self.subject {
            Subject::ApiKey(key_id) => Principal::ApiKey {
                key_id,
                org: self.org,
                role: self.role,
                scopes: self.scopes.clone(),
            },
            Subject::User(user_id) => Principal::User {
                user_id,
                org: self.org,
                role: self.role,
            },
        }
    }
}

/// Seconds since the Unix epoch; times before it count as 0.
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One public key in a [`Jwks`]: an RFC 8037 OKP key,
/// `{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"alg":"EdDSA","use":"sig"}`.
///
/// Deserializing checks that it is an Ed25519 signature key and that its `kid` is its
/// thumbprint, so a `Jwk` value is always usable.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "JwkJson", into = "JwkJson")]
pub struct Jwk {
    key: ed25519_dalek::VerifyingKey,
    kid: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn from_public_key(key: ed25519_dalek::VerifyingKey) -> Self {
        Jwk {
            kid: thumbprint(&key),
            key,
        }
    }

    /// The key id: the RFC 7638 thumbprint of the key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk").field("kid", &self.kid).finish()
    }
}

/// The JSON shape of a [`Jwk`].
#[derive(Serialize, Deserialize)]
struct JwkJson {
    kty: String,
    crv: String,
    x: String,
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    use_: Option<String>,
}

impl TryFrom<JwkJson> for Jwk {
    type Error = Error;
    fn try_from(json: JwkJson) -> Result<Self, Self::Error> {
        let invalid = || Error::Jwk {
            kid: json.kid.clone(),
        };
        let raw = RawJwk {
            kty: json.kty.clone(),
            kid: Some(json.kid.clone()),
            alg: json.alg.clone(),
            use_: json.use_.clone(),
            crv: Some(json.crv.clone()),
            x: Some(json.x.clone()),
            ..RawJwk::default()
        };
        let PublicKey::Ed25519(key) = raw.to_public_key().map_err(|_: JwkReject| invalid())? else {
            return Err(invalid());
        };
        let jwk = Jwk::from_public_key(key);
        if jwk.kid != json.kid {
            return Err(invalid());
        }
        Ok(jwk)
    }
}

impl From<Jwk> for JwkJson {
    fn from(jwk: Jwk) -> Self {
        JwkJson {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: jws::b64_encode(jwk.key.as_bytes()),
            kid: jwk.kid,
            alg: Some(Alg::EdDsa.as_str().into()),
            use_: Some("sig".into()),
        }
    }
}

/// RFC 7638 thumbprint of an OKP key: SHA-256 over the required members in lexicographic
/// order, without whitespace, base64url-encoded.
fn thumbprint(key: &ed25519_dalek::VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        jws::b64_encode(key.as_bytes())
    );
    jws::b64_encode(Sha256::digest(canonical.as_bytes()))
}

/// A JSON Web Key Set (RFC 7517 §5): the public keys that verify Coffer access tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, in no particular order.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// A set of `keys`.
    pub fn new(keys: impl IntoIterator<Item = Jwk>) -> Self {
        Jwks {
            keys: keys.into_iter().collect(),
        }
    }
}

/// Signs access tokens with an Ed25519 key. The key is zeroized on drop and never printed.
pub struct Signer {
    key: ed25519_dalek::SigningKey,
    jwk: Jwk,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for the Ed25519 key with this 32-byte seed (RFC 8032's private key).
    pub fn from_seed(seed: &[u8]) -> Result<Self, Error> {
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(seed.try_into().map_err(|_| Error::SigningKey)?);
        Ok(Self::from_key(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// A signer for an Ed25519 private key in a PKCS#8 (RFC 8410) DER document.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|_| Error::SigningKey)?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: ed25519_dalek::SigningKey) -> Self {
        let jwk = Jwk::from_public_key(key.verifying_key());
        Signer { key, jwk }
    }

    /// The key id tokens from this signer carry.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The public key to publish in the JWKS.
    pub fn jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    /// A compact JWS of `payload` with this key: EdDSA, its `kid`, and `typ`.
    pub(crate) fn sign(&self, typ: &str, payload: &[u8]) -> String {
        let header = serde_json::json!({
            "alg": Alg::EdDsa.as_str(),
            "kid": self.jwk.kid,
            "typ": typ,
        });
        let header = serde_json::to_vec(&header).expect("a JSON value serializes");
        let mut token = jws::b64_encode(header);
        token.push('.');
        token.push_str(&jws::b64_encode(payload));
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&jws::b64_encode(signature.to_bytes()));
        token
    }

    /// Signs `claims` into a compact JWS.
    ///
    /// Refuses claims that expire before they are issued or live longer than
    /// [`MAX_LIFETIME`]; the lifetime itself ([`DEFAULT_LIFETIME`]) is the caller's choice.
    pub fn issue(&self, claims: &AccessClaims) -> Result<String, Error> {
        let lifetime = claims.exp.saturating_sub(claims.iat);
        let max = i64::try_from(MAX_LIFETIME.as_secs()).expect("an hour fits in i64");
        if lifetime <= 0 || lifetime > max {
            return Err(Error::Lifetime);
        }
        Ok(self.sign(
            TYP,
            &serde_json::to_vec(claims).expect("access claims serialize"),
        ))
    }
}

/// Verifies access tokens against a [`Jwks`], an issuer and an audience.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: HashMap<String, PublicKey>,
    issuer: String,
    audience: String,
    leeway: Duration,
}

impl Verifier {
    /// A verifier accepting tokens signed by any key in `jwks`, issued by `issuer` for
    /// `audience`, with [`DEFAULT_LEEWAY`].
    pub fn new(jwks: &Jwks, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let keys = jwks
            .keys
            .iter()
            .map(|jwk| (jwk.kid.clone(), PublicKey::Ed25519(jwk.key)))
            .collect();
        Verifier {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// The same verifier tolerating `leeway` of clock skew, at most [`MAX_LEEWAY`].
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(MAX_LEEWAY);
        self
    }

    /// Verifies `token` at time `now` and returns its claims.
    ///
    /// Checks, in order: size, structure, `alg` is EdDSA and `typ` is `at+jwt`, `kid` is a
    /// known key, the signature, then `iss`, `aud`, `exp`, `nbf` and `iat` (the last three with
    /// the leeway).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<AccessClaims, Error> {
        let parsed = jws::parse(token, MAX_TOKEN_BYTES)?;
        if parsed.alg != Alg::EdDsa || parsed.header.typ.as_deref() != Some(TYP) {
            return Err(Error::Algorithm);
        }
        let kid = parsed.header.kid.as_deref().ok_or(Error::UnknownKey)?;
        let key = self.keys.get(kid).ok_or(Error::UnknownKey)?;
        key.verify(&parsed)?;
        let claims: AccessClaims =
            serde_json::from_slice(&parsed.payload).map_err(|_| Error::Malformed)?;
        if claims.iss != self.issuer {
            return Err(Error::Issuer);
        }
        if claims.aud != self.audience {
            return Err(Error::Audience);
        }
        let now = unix_seconds(now);
        let leeway = i64::try_from(self.leeway.as_secs()).expect("leeway is capped");
        if now >= claims.exp.saturating_add(leeway) {
            return Err(Error::Expired);
        }
        let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
        if not_before > now.saturating_add(leeway) {
            return Err(Error::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://coffer.example";
    const AUD: &str = "coffer";

    fn signer(byte: u8) -> Signer {
        Signer::from_seed(&[byte; 32]).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const T0: u64 = 1_767_225_600;

    fn api_key_claims() -> (AccessClaims, ApiKeyId, OrgId) {
        let (key, org) = (ApiKeyId::new(), OrgId::new());
        let claims = AccessClaims::new(
            ISS,
            AUD,
            Subject::ApiKey(key),
            org,
            Role::Operator,
            at(T0),
            DEFAULT_LIFETIME,
        );
        (claims, key, org)
    }

    fn verifier(signers: &[&Signer]) -> Verifier {
        Verifier::new(&Jwks::new(signers.iter().map(|s| s.jwk())), ISS, AUD)
    }

    /// Re-signs `header` and `claims` (as JSON) with `signer`, bypassing `issue`'s rules.
    fn forge(signer: &Signer, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            jws::b64_encode(header.to_string()),
            jws::b64_encode(claims.to_string())
        );
        let sig = signer.key.sign(input.as_bytes());
        format!("{input}.{}", jws::b64_encode(sig.to_bytes()))
    }

    #[test]
    fn an_issued_token_verifies_and_becomes_the_api_key_principal() {
        let s = signer(1);
        let (mut claims, key, org) = api_key_claims();
        claims.scopes = vec!["backup.read".into()];
        let token = s.issue(&claims).unwrap();
        let verified = verifier(&[&s]).verify(&token, at(T0 + 60)).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(
            verified.principal(),
            Principal::ApiKey {
                key_id: key,
                org,
                role: Role::Operator,
                scopes: vec!["backup.read".into()],
            }
        );
        assert_eq!(
            verified.principal().actor().to_string(),
            format!("api_key:{key}")
        );
    }

    #[test]
    fn user_tokens_become_user_principals() {
        let s = signer(1);
        let (user, org) = (UserId::new(), OrgId::new());
        let claims = AccessClaims::new(
            ISS,
            AUD,
            Subject::User(user),
            org,
            Role::Auditor,
            at(T0),
            DEFAULT_LIFETIME,
        );
        let verified = verifier(&[&s])
            .verify(&s.issue(&claims).unwrap(), at(T0))
            .unwrap();
        assert_eq!(
            verified.principal(),
            Principal::User {
                user_id: user,
                org,
                role: Role::Auditor
            }
        );
    }

    #[test]
    fn the_claims_have_the_documented_json_shape() {
        let s = signer(1);
        let (claims, key, org) = api_key_claims();
        let token = s.issue(&claims).unwrap();
        let mut parts = token.split('.');
        let header: serde_json::Value =
            serde_json::from_slice(&jws::b64_decode(parts.next().unwrap()).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "EdDSA", "kid": s.kid(), "typ": "at+jwt"})
        );
        let body: serde_json::Value =
            serde_json::from_slice(&jws::b64_decode(parts.next().unwrap()).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "iss": ISS, "aud": AUD, "sub": format!("api_key:{key}"), "org": org.to_string(),
                "role": "operator", "scopes": [], "iat": T0, "exp": T0 + 300,
                "jti": claims.jti.to_string(),
            })
        );
    }

    #[test]
    fn expiry_and_not_before_are_enforced_with_a_small_leeway() {
        let s = signer(1);
        let (claims, _, _) = api_key_claims();
        let token = s.issue(&claims).unwrap();
        let v = verifier(&[&s]);
        let exp = T0 + 300;
        assert!(v.verify(&token, at(exp + 9)).is_ok());
        assert_eq!(v.verify(&token, at(exp + 10)), Err(Error::Expired));
        assert_eq!(v.verify(&token, at(exp + 3600)), Err(Error::Expired));
        assert!(v.verify(&token, at(T0 - 10)).is_ok());
        assert_eq!(v.verify(&token, at(T0 - 11)), Err(Error::NotYetValid));

        let strict = verifier(&[&s]).with_leeway(Duration::ZERO);
        assert_eq!(strict.verify(&token, at(exp)), Err(Error::Expired));
        let lax = verifier(&[&s]).with_leeway(Duration::from_secs(3600));
        assert_eq!(lax.verify(&token, at(exp + 30)), Err(Error::Expired));

        let mut later = claims.clone();
        later.nbf = Some(T0 as i64 + 120);
        let token = s.issue(&later).unwrap();
        assert_eq!(v.verify(&token, at(T0 + 60)), Err(Error::NotYetValid));
        assert!(v.verify(&token, at(T0 + 120)).is_ok());
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        let s = signer(1);
        let (claims, _, _) = api_key_claims();
        let token = s.issue(&claims).unwrap();
        let keys = Jwks::new([s.jwk()]);
        assert_eq!(
            Verifier::new(&keys, "https://other.example", AUD).verify(&token, at(T0)),
            Err(Error::Issuer)
        );
        assert_eq!(
            Verifier::new(&keys, ISS, "other").verify(&token, at(T0)),
            Err(Error::Audience)
        );
    }

    #[test]
    fn alg_none_hs256_with_the_public_key_and_missing_typ_are_refused() {
        let s = signer(1);
        let (claims, _, _) = api_key_claims();
        let body = serde_json::to_value(&claims).unwrap();
        let v = verifier(&[&s]);
        let input = |alg: &str| {
            format!(
                "{}.{}",
                jws::b64_encode(
                    serde_json::json!({"alg": alg, "kid": s.kid(), "typ": "at+jwt"}).to_string()
                ),
                jws::b64_encode(body.to_string())
            )
        };

        // alg=none with an empty or arbitrary signature.
        let none = input("none");
        assert_eq!(v.verify(&format!("{none}."), at(T0)), Err(Error::Malformed));
        assert_eq!(
            v.verify(&format!("{none}.AA"), at(T0)),
            Err(Error::Algorithm)
        );

        // The classic confusion: HMAC keyed with the public key a verifier holds.
        let hs = input("HS256");
        let mac_key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.jwk().public_key().as_bytes());
        let mac = ring::hmac::sign(&mac_key, hs.as_bytes());
        let hs_token = format!("{hs}.{}", jws::b64_encode(mac.as_ref()));
        assert_eq!(v.verify(&hs_token, at(T0)), Err(Error::Algorithm));
        // Same with the JWK's JSON text as the secret.
        let jwk_json = serde_json::to_string(&s.jwk()).unwrap();
        let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk_json.as_bytes());
        let mac = ring::hmac::sign(&mac_key, hs.as_bytes());
        let hs_token = format!("{hs}.{}", jws::b64_encode(mac.as_ref()));
        assert_eq!(v.verify(&hs_token, at(T0)), Err(Error::Algorithm));

        // Other asymmetric algorithms are refused too, even with a valid Ed25519 signature.
        for alg in ["RS256", "ES256", "PS256"] {
            let forged = forge(
                &s,
                &serde_json::json!({"alg": alg, "kid": s.kid(), "typ": "at+jwt"}),
                &body,
            );
            assert_eq!(v.verify(&forged, at(T0)), Err(Error::Algorithm), "{alg}");
        }

        // A correctly signed JWT that is not an access token (another typ, or none).
        for header in [
            serde_json::json!({"alg": "EdDSA", "kid": s.kid(), "typ": "JWT"}),
            serde_json::json!({"alg": "EdDSA", "kid": s.kid()}),
        ] {
            let forged = forge(&s, &header, &body);
            assert_eq!(v.verify(&forged, at(T0)), Err(Error::Algorithm), "{header}");
        }
    }

    #[test]
    fn unknown_or_missing_kid_and_foreign_keys_are_refused() {
        let (trusted, foreign) = (signer(1), signer(2));
        let (claims, _, _) = api_key_claims();
        let v = verifier(&[&trusted]);
        assert_eq!(
            v.verify(&foreign.issue(&claims).unwrap(), at(T0)),
            Err(Error::UnknownKey)
        );
        // A foreign key's signature under the trusted key's kid.
        let body = serde_json::to_value(&claims).unwrap();
        let forged = forge(
            &foreign,
            &serde_json::json!({"alg": "EdDSA", "kid": trusted.kid(), "typ": "at+jwt"}),
            &body,
        );
        assert_eq!(v.verify(&forged, at(T0)), Err(Error::Signature));
        let no_kid = forge(
            &trusted,
            &serde_json::json!({"alg": "EdDSA", "typ": "at+jwt"}),
            &body,
        );
        assert_eq!(v.verify(&no_kid, at(T0)), Err(Error::UnknownKey));
    }

    #[test]
    fn tampered_claims_or_signature_are_refused() {
        let s = signer(1);
        let (claims, _, _) = api_key_claims();
        let token = s.issue(&claims).unwrap();
        let v = verifier(&[&s]);
        let (head, sig) = token.rsplit_once('.').unwrap();
        let (header, _) = head.split_once('.').unwrap();

        let mut owner = serde_json::to_value(&claims).unwrap();
        owner["role"] = "owner".into();
        let escalated = format!("{header}.{}.{sig}", jws::b64_encode(owner.to_string()));
        assert_eq!(v.verify(&escalated, at(T0)), Err(Error::Signature));

        let mut bytes = jws::b64_decode(sig).unwrap();
        bytes[10] ^= 0x40;
        let flipped = format!("{head}.{}", jws::b64_encode(&bytes));
        assert_eq!(v.verify(&flipped, at(T0)), Err(Error::Signature));
        assert_eq!(v.verify(&format!("{head}."), at(T0)), Err(Error::Malformed));
    }

    #[test]
    fn oversized_and_garbage_tokens_are_refused_and_errors_do_not_echo_them() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let (mut claims, _, _) = api_key_claims();
        claims.scopes = vec!["x".repeat(MAX_TOKEN_BYTES)];
        let huge = s.issue(&claims).unwrap();
        assert_eq!(v.verify(&huge, at(T0)), Err(Error::TooLarge));

        let (claims, _, _) = api_key_claims();
        let token = s.issue(&claims).unwrap();
        for bad in [
            "coffer_secretlookingapikeyvalue1234567890",
            "Bearer abc.def.ghi",
            &token[..token.len() - 3],
            &huge,
        ] {
            let err = v.verify(bad, at(T0 + 10_000)).unwrap_err();
            let shown = format!("{err} {err:?}");
            for segment in bad.split('.').filter(|p| p.len() > 4) {
                assert!(!shown.contains(segment), "{shown}");
            }
        }
        let expired = v.verify(&token, at(T0 + 10_000)).unwrap_err();
        assert_eq!(expired.to_string(), "access token has expired");
    }

    #[test]
    fn claims_that_are_not_coffer_claims_are_malformed() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let header = serde_json::json!({"alg": "EdDSA", "kid": s.kid(), "typ": "at+jwt"});
        let (claims, _, _) = api_key_claims();
        let mut agent = serde_json::to_value(&claims).unwrap();
        agent["sub"] = "agent:a_1".into();
        let mut no_exp = serde_json::to_value(&claims).unwrap();
        no_exp.as_object_mut().unwrap().remove("exp");
        let mut bad_role = serde_json::to_value(&claims).unwrap();
        bad_role["role"] = "root".into();
        for body in [agent, no_exp, bad_role, serde_json::json!([1, 2])] {
            assert_eq!(
                v.verify(&forge(&s, &header, &body), at(T0)),
                Err(Error::Malformed),
                "{body}"
            );
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_the_old_key_is_removed() {
        let (old, new) = (signer(1), signer(2));
        let (claims, _, _) = api_key_claims();
        let old_token = old.issue(&claims).unwrap();
        let new_token = new.issue(&claims).unwrap();

        let both = verifier(&[&old, &new]);
        assert!(both.verify(&old_token, at(T0)).is_ok());
        assert!(both.verify(&new_token, at(T0)).is_ok());

        let new_only = verifier(&[&new]);
        assert_eq!(new_only.verify(&old_token, at(T0)), Err(Error::UnknownKey));
        assert!(new_only.verify(&new_token, at(T0)).is_ok());
    }

    #[test]
    fn the_jwks_is_rfc8037_json_and_the_kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.1 (seed) and A.3 (thumbprint of its public key).
        let seed = jws::b64_decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap();
        let s = Signer::from_seed(&seed).unwrap();
        assert_eq!(s.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let json = serde_json::to_value(Jwks::new([s.jwk()])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"keys": [{
                "kty": "OKP", "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
                "alg": "EdDSA", "use": "sig",
            }]})
        );
        let back: Jwks = serde_json::from_value(json).unwrap();
        assert_eq!(back, Jwks::new([s.jwk()]));
    }

    #[test]
    fn a_jwks_entry_with_a_wrong_kid_or_type_does_not_deserialize() {
        let good = serde_json::to_value(signer(1).jwk()).unwrap();
        let mut wrong_kid = good.clone();
        wrong_kid["kid"] = signer(2).kid().into();
        let mut hmac = good.clone();
        hmac["alg"] = "HS256".into();
        let mut enc = good.clone();
        enc["use"] = "enc".into();
        let mut x25519 = good.clone();
        x25519["crv"] = "X25519".into();
        for bad in [wrong_kid, hmac, enc, x25519] {
            let err = serde_json::from_value::<Jwk>(bad.clone()).unwrap_err();
            assert!(
                err.to_string().contains("not a valid Ed25519"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn signing_keys_load_from_a_seed_or_pkcs8_and_never_print() {
        // RFC 8410 §10.3: an Ed25519 private key in PKCS#8 and its seed.
        let pkcs8 =
            jws::b64_decode("MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp-K06_nwoy_HU--CXqI9EdVhC")
                .unwrap();
        let seed: Vec<u8> = (0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
                        [2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        let from_der = Signer::from_pkcs8_der(&pkcs8).unwrap();
        let from_seed = Signer::from_seed(&seed).unwrap();
        assert_eq!(from_der.kid(), from_seed.kid());

        let shown = format!("{from_seed:?}");
        assert!(shown.contains(from_seed.kid()), "{shown}");
        assert!(
            !shown.contains("d4ee") && !shown.contains("1EdVhC"),
            "{shown}"
        );
        assert!(!shown.to_lowercase().contains("d4, ee"), "{shown}");

        assert_eq!(Signer::from_seed(&[1; 31]).unwrap_err(), Error::SigningKey);
        assert_eq!(
            Signer::from_pkcs8_der(b"junk").unwrap_err(),
            Error::SigningKey
        );
    }

    #[test]
    fn issue_refuses_long_lived_or_backwards_claims() {
        let s = signer(1);
        let (mut claims, _, _) = api_key_claims();
        claims.exp = claims.iat + 3601;
        assert_eq!(s.issue(&claims), Err(Error::Lifetime));
        claims.exp = claims.iat;
        assert_eq!(s.issue(&claims), Err(Error::Lifetime));
        claims.exp = claims.iat + 3600;
        assert!(s.issue(&claims).is_ok());
    }

    #[test]
    fn subjects_round_trip_and_reject_other_kinds() {
        let id = ApiKeyId::new();
        let s: Subject = format!("api_key:{id}").parse().unwrap();
        assert_eq!(s, Subject::ApiKey(id));
        let user = UserId::new();
        assert_eq!(
            format!("user:{user}").parse::<Subject>().unwrap(),
            Subject::User(user)
        );
        for bad in ["agent:x", "user:", "user:not-a-uuid", "api_key", ""] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }
}
