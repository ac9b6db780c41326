//! Small X.509 helpers shared by issuance, CSR checks and verification.

use std::fmt;

use chrono::{DateTime, Utc};
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ED448,
    OID_SIG_ED25519,
};
use x509_parser::time::ASN1Time;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// The key algorithms Coffer accepts in an agent CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 (secp256r1), signatures with SHA-256.
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    /// The rcgen algorithm that writes this key's SubjectPublicKeyInfo.
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
            KeyAlgorithm::Ed25519 => "Ed25519",
        })
    }
}

/// Classifies a SubjectPublicKeyInfo: a supported algorithm, or a readable name of the key
/// type it is (for the error message).
pub(crate) fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyAlgorithm, String> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => {
                let point = spki.subject_public_key.data.as_ref();
                // ring (and this crate) only take uncompressed points.
                if point.len() == 65 && point[0] == 0x04 {
                    Ok(KeyAlgorithm::EcdsaP256)
                } else {
                    Err("ECDSA P-256 with a compressed or malformed point".to_owned())
                }
            }
            Some(c) if c == OID_NIST_EC_P384 => Err("ECDSA P-384".to_owned()),
            Some(c) if c == OID_NIST_EC_P521 => Err("ECDSA P-521".to_owned()),
            Some(c) => Err(format!("ECDSA on curve {c}")),
            None => Err("ECDSA with explicit curve parameters".to_owned()),
        };
    }
    if *oid == OID_SIG_ED25519 {
        return if spki.subject_public_key.data.len() == 32 && spki.algorithm.parameters.is_none() {
            Ok(KeyAlgorithm::Ed25519)
        } else {
            Err("Ed25519 with a malformed key".to_owned())
        };
    }
    if *oid == OID_PKCS1_RSAENCRYPTION || *oid == OID_PKCS1_RSASSAPSS {
        return Err("RSA".to_owned());
    }
    if *oid == OID_SIG_ED448 {
        return Err("Ed448".to_owned());
    }
    Err(format!("with algorithm OID {oid}"))
}

/// Checks that `signature` over `message` was made with `key` using the one signature algorithm
/// Coffer pairs with that key type: ecdsa-with-SHA256 for P-256, Ed25519 for Ed25519.
///
/// Returns `Err(AlgorithmMismatch)` when `algorithm` is not that one, `Err(BadSignature)` when
/// the signature does not verify.
pub(crate) fn verify_signature(
    key_algorithm: KeyAlgorithm,
    key: &SubjectPublicKeyInfo<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let ring_algorithm: &'static dyn signature::VerificationAlgorithm = match key_algorithm {
        KeyAlgorithm::EcdsaP256 if algorithm.algorithm == OID_SIG_ECDSA_WITH_SHA256 => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        KeyAlgorithm::Ed25519 if algorithm.algorithm == OID_SIG_ED25519 => &signature::ED25519,
        _ => return Err(SignatureError::AlgorithmMismatch),
    };
    UnparsedPublicKey::new(ring_algorithm, key.subject_public_key.data.as_ref())
        .verify(message, signature)
        .map_err(|_| SignatureError::BadSignature)
}

/// Why [`verify_signature`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The signature algorithm is not the one paired with the key type.
    AlgorithmMismatch,
    /// The signature does not verify.
    BadSignature,
}

/// Converts to rcgen's time type, at whole seconds (X.509 times carry no fraction).
pub(crate) fn to_offset(at: DateTime<Utc>) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp()).ok()
}

/// Converts an X.509 time to chrono.
pub(crate) fn from_asn1(at: ASN1Time) -> DateTime<Utc> {
    // Every ASN1Time is within 0000..=9999, which chrono represents.
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Drops sub-second precision, which X.509 cannot carry.
pub(crate) fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

/// DER of a NameConstraints extension value permitting exactly the URIs whose host is `host`:
/// `SEQUENCE { [0] { SEQUENCE { [6] IA5String host } } }`.
///
/// Hand-encoded because rcgen's `GeneralSubtree` has no URI form.
pub(crate) fn uri_host_name_constraints(host: &str) -> Vec<u8> {
    let uri = tlv(0x86, host.as_bytes());
    let subtree = tlv(0x30, &uri);
    let permitted = tlv(0xa0, &subtree);
    tlv(0x30, &permitted)
}

/// One DER tag-length-value with a definite, minimal length.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = &bytes[first..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::{GeneralName, NameConstraints};
    use x509_parser::prelude::FromDer;

    use super::*;

    #[test]
    fn name_constraints_encode_a_permitted_uri_host() {
        for host in ["coffer.example", &"a".repeat(200)] {
            let der = uri_host_name_constraints(host);
            let (rest, parsed) = NameConstraints::from_der(&der).unwrap();
            assert!(rest.is_empty());
            assert!(parsed.excluded_subtrees.is_none());
            let permitted = parsed.permitted_subtrees.unwrap();
            assert_eq!(permitted.len(), 1);
            assert_eq!(permitted[0].base, GeneralName::URI(host));
        }
    }

    #[test]
    fn long_lengths_use_the_minimal_long_form() {
        assert_eq!(tlv(0x04, &[0; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(0x04, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[0; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
    }
}
