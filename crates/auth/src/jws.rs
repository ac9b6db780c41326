//! Compact JWS (RFC 7515) parsing and signature checks shared by Coffer access tokens
//! ([`crate::token`]) and IdP ID tokens ([`crate::oidc`]).
//!
//! Deliberately small, so every check can be read in one sitting:
//!
//! - exactly three segments, each base64url without padding and canonically encoded;
//! - a size cap applied before anything is decoded;
//! - the algorithm comes from a closed list ([`Alg`]): `none`, HMAC and everything else do not
//!   parse, and a key verifies only the one algorithm its type implies, so a public key can
//!   never be used as an HMAC secret;
//! - headers that would change what is verified (`crit`, `b64`) or point at other keys
//!   (`jku`, `jwk`, `x5u`, `x5c`) are refused rather than ignored.
//!
//! Errors never carry token material.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Base64url without padding; decoding refuses padding and non-canonical trailing bits.
pub(crate) fn b64_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// See [`b64_encode`].
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Why a compact JWS was refused before its claims were looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Longer than the caller's cap.
    TooLarge,
    /// Not three base64url segments, or the header is not the expected JSON.
    Malformed,
    /// The header names an algorithm outside [`Alg`], or uses a header we refuse.
    Algorithm,
    /// The signature does not verify under the chosen key.
    Signature,
}

/// The signature algorithms Coffer accepts. There is deliberately no `none` and no HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// Ed25519 (RFC 8037).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048 to 8192-bit moduli.
    Rs256,
    /// ECDSA on P-256 with SHA-256, fixed-length `r || s` signatures.
    Es256,
}

impl Alg {
    /// The `alg` header value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn parse(name: &str) -> Option<Alg> {
        [Alg::EdDsa, Alg::Rs256, Alg::Es256]
            .into_iter()
            .find(|a| a.as_str() == name)
    }
}

/// The JOSE header fields we read. Unknown members are ignored except the dangerous ones,
/// which are captured so their presence can be refused.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    /// The signature algorithm.
    pub alg: String,
    /// The signing key's id.
    #[serde(default)]
    pub kid: Option<String>,
    /// The token type, e.g. `at+jwt`.
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    b64: Option<serde_json::Value>,
    #[serde(default)]
    jku: Option<serde_json::Value>,
    #[serde(default)]
    jwk: Option<serde_json::Value>,
    #[serde(default)]
    x5u: Option<serde_json::Value>,
    #[serde(default)]
    x5c: Option<serde_json::Value>,
}

/// A compact JWS split and decoded, its signature not yet checked.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The decoded header.
    pub header: Header,
    /// The algorithm the header names, already known to be one we accept.
    pub alg: Alg,
    /// The decoded payload (the claims JSON). Not to be trusted before [`PublicKey::verify`].
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes `token`, refusing anything longer than `max_len` bytes.
pub(crate) fn parse(token: &str, max_len: usize) -> Result<Parsed<'_>, Reject> {
    if token.len() > max_len {
        return Err(Reject::TooLarge);
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Reject::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(Reject::Malformed);
    }
    let header_json = b64_decode(header).ok_or(Reject::Malformed)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| Reject::Malformed)?;
    let alg = Alg::parse(&header.alg).ok_or(Reject::Algorithm)?;
    let refused_member = header.crit.is_some()
        || header.b64.is_some()
        || header.jku.is_some()
        || header.jwk.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some();
    if refused_member {
        return Err(Reject::Algorithm);
    }
    let payload = b64_decode(payload).ok_or(Reject::Malformed)?;
    let signature = b64_decode(signature).ok_or(Reject::Malformed)?;
    Ok(Parsed {
        signing_input: &token[..header_len_plus_payload(token)],
        header,
        alg,
        payload,
        signature,
    })
}

/// Byte length of `header.payload` in a token already known to have three segments.
fn header_len_plus_payload(token: &str) -> usize {
    token
        .rfind('.')
        .expect("parse checked there are three segments")
}

/// A public key that verifies exactly one [`Alg`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// Ed25519, verified strictly (no small-order keys, canonical signatures only).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// RSA modulus and exponent, big-endian.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// A P-256 point, uncompressed (`0x04 || x || y`).
    P256(Vec<u8>),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKey::Ed25519(_) => f.write_str("PublicKey::Ed25519"),
            PublicKey::Rsa { n, .. } => write!(f, "PublicKey::Rsa({} bits)", n.len() * 8),
            PublicKey::P256(_) => f.write_str("PublicKey::P256"),
        }
    }
}

impl PublicKey {
    /// The only algorithm this key verifies.
    pub(crate) fn alg(&self) -> Alg {
        match self {
            PublicKey::Ed25519(_) => Alg::EdDsa,
            PublicKey::Rsa { .. } => Alg::Rs256,
            PublicKey::P256(_) => Alg::Es256,
        }
    }

    /// Checks `parsed`'s signature with this key. A token whose header names another
    /// algorithm than the key's is refused without looking at the signature.
    pub(crate) fn verify(&self, parsed: &Parsed<'_>) -> Result<(), Reject> {
        if parsed.alg != self.alg() {
            return Err(Reject::Algorithm);
        }
        let message = parsed.signing_input.as_bytes();
        let signature = parsed.signature.as_slice();
        let ok = match self {
            PublicKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
            PublicKey::Rsa { n, e } => ring::signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    message,
                    signature,
                )
                .is_ok(),
            PublicKey::P256(point) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(message, signature)
            .is_ok(),
        };
        if ok { Ok(()) } else { Err(Reject::Signature) }
    }
}

/// Why a JWK could not become a [`PublicKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwkReject {
    /// A key type, curve or algorithm we do not verify, or a key not meant for signatures.
    Unsupported,
    /// The key's members are missing or malformed.
    Invalid,
}

/// The members of a JWK (RFC 7517) that matter for signature verification.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawJwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
}

impl RawJwk {
    /// The verification key this JWK describes.
    ///
    /// `kty`/`crv` decide the algorithm; a JWK that also names an `alg` must name that same
    /// one. Keys marked for encryption only (`use` other than `sig`, or `key_ops` without
    /// `verify`) are refused.
    pub(crate) fn to_public_key(&self) -> Result<PublicKey, JwkReject> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(JwkReject::Unsupported);
        }
        if let Some(ops) = &self.key_ops
            && !ops.iter().any(|op| op == "verify")
        {
            return Err(JwkReject::Unsupported);
        }
        let field =
            |v: &Option<String>| v.as_deref().and_then(b64_decode).ok_or(JwkReject::Invalid);
        let key = match (self.kty.as_str(), self.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                let x: [u8; 32] = field(&self.x)?.try_into().map_err(|_| JwkReject::Invalid)?;
                let key =
                    ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| JwkReject::Invalid)?;
                if key.is_weak() {
                    return Err(JwkReject::Invalid);
                }
                PublicKey::Ed25519(key)
            }
            ("RSA", None) => {
                let n = strip_leading_zeros(field(&self.n)?);
                let e = strip_leading_zeros(field(&self.e)?);
                if n.len() < 256 || e.is_empty() {
                    return Err(JwkReject::Invalid);
                }
                PublicKey::Rsa { n, e }
            }
            ("EC", Some("P-256")) => {
                let x = field(&self.x)?;
                let y = field(&self.y)?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(JwkReject::Invalid);
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                PublicKey::P256(point)
            }
            _ => return Err(JwkReject::Unsupported),
        };
        if self.alg.as_deref().is_some_and(|a| a != key.alg().as_str()) {
            return Err(JwkReject::Unsupported);
        }
        Ok(key)
    }
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    /// RFC 8037 appendix A.1/A.4: the Ed25519 key and the JWS over "Example of Ed25519 signing".
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    fn rfc8037_key() -> PublicKey {
        RawJwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(RFC8037_X.into()),
            ..RawJwk::default()
        }
        .to_public_key()
        .unwrap()
    }

    #[test]
    fn the_rfc8037_example_signature_verifies_and_is_reproduced() {
        let parsed = parse(RFC8037_JWS, 1024).unwrap();
        assert_eq!(parsed.alg, Alg::EdDsa);
        assert_eq!(parsed.payload, b"Example of Ed25519 signing");
        rfc8037_key().verify(&parsed).unwrap();

        let seed: [u8; 32] = b64_decode(RFC8037_D).unwrap().try_into().unwrap();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let signature = signing.sign(parsed.signing_input.as_bytes());
        assert_eq!(
            format!(
                "{}.{}",
                parsed.signing_input,
                b64_encode(signature.to_bytes())
            ),
            RFC8037_JWS
        );
    }

    #[test]
    fn structure_padding_and_size_are_checked_before_anything_else() {
        assert_eq!(parse(RFC8037_JWS, 10).unwrap_err(), Reject::TooLarge);
        let mut four = RFC8037_JWS.to_owned();
        four.push_str(".AA");
        for bad in [
            "",
            "a.b",
            "..",
            four.as_str(),
            "eyJhbGciOiJFZERTQSJ9..AA",
            "eyJhbGciOiJFZERTQSJ9=.AA.AA",
            "!!!.AA.AA",
        ] {
            assert_eq!(parse(bad, 1024).unwrap_err(), Reject::Malformed, "{bad}");
        }
    }

    #[test]
    fn none_hmac_and_key_pointing_headers_are_refused() {
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"PS256"}"#,
            r#"{"alg":"eddsa"}"#,
            r#"{"alg":"EdDSA","crit":["exp"]}"#,
            r#"{"alg":"EdDSA","b64":false}"#,
            r#"{"alg":"EdDSA","jku":"https://evil.example/jwks"}"#,
            r#"{"alg":"EdDSA","jwk":{"kty":"OKP"}}"#,
            r#"{"alg":"EdDSA","x5u":"https://evil.example/cert"}"#,
        ] {
            let token = format!("{}.e30.AA", b64_encode(header));
            assert_eq!(
                parse(&token, 1024).unwrap_err(),
                Reject::Algorithm,
                "{header}"
            );
        }
    }

    #[test]
    fn a_key_verifies_only_its_own_algorithm() {
        let header = b64_encode(r#"{"alg":"RS256"}"#);
        let token = RFC8037_JWS.replacen("eyJhbGciOiJFZERTQSJ9", &header, 1);
        let parsed = parse(&token, 1024).unwrap();
        assert_eq!(rfc8037_key().verify(&parsed), Err(Reject::Algorithm));
    }

    #[test]
    fn a_changed_payload_or_signature_does_not_verify() {
        let (head, sig) = RFC8037_JWS.rsplit_once('.').unwrap();
        let (header, _) = head.split_once('.').unwrap();
        let other_payload = format!(
            "{header}.{}.{sig}",
            b64_encode("Example of Ed25519 signinG")
        );
        let parsed = parse(&other_payload, 1024).unwrap();
        assert_eq!(rfc8037_key().verify(&parsed), Err(Reject::Signature));

        let mut sig_bytes = b64_decode(sig).unwrap();
        sig_bytes[0] ^= 1;
        let other_sig = format!("{head}.{}", b64_encode(&sig_bytes));
        let parsed = parse(&other_sig, 1024).unwrap();
        assert_eq!(rfc8037_key().verify(&parsed), Err(Reject::Signature));
    }

    #[test]
    fn jwks_entries_must_be_signature_keys_of_a_known_shape() {
        let ok = RawJwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(RFC8037_X.into()),
            ..RawJwk::default()
        };
        assert!(ok.to_public_key().is_ok());
        let cases = [
            (
                RawJwk {
                    use_: Some("enc".into()),
                    ..ok.clone()
                },
                JwkReject::Unsupported,
            ),
            (
                RawJwk {
                    key_ops: Some(vec!["encrypt".into()]),
                    ..ok.clone()
                },
                JwkReject::Unsupported,
            ),
            (
                RawJwk {
                    alg: Some("RS256".into()),
                    ..ok.clone()
                },
                JwkReject::Unsupported,
            ),
            (
                RawJwk {
                    crv: Some("X25519".into()),
                    ..ok.clone()
                },
                JwkReject::Unsupported,
            ),
            (
                RawJwk {
                    kty: "oct".into(),
                    ..ok.clone()
                },
                JwkReject::Unsupported,
            ),
            (
                RawJwk {
                    x: Some("AAAA".into()),
                    ..ok.clone()
                },
                JwkReject::Invalid,
            ),
            (
                RawJwk {
                    kty: "RSA".into(),
                    crv: None,
                    n: Some(b64_encode([0xff; 128])),
                    e: Some("AQAB".into()),
                    ..RawJwk::default()
                },
                JwkReject::Invalid,
            ),
        ];
        for (jwk, expected) in cases {
            assert_eq!(jwk.to_public_key().unwrap_err(), expected, "{jwk:?}");
        }
    }
}
