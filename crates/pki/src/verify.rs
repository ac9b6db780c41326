//! Verifying a presented agent certificate: leaf → its org's intermediate → platform root.
//!
//! Two steps, so the caller can fetch per-org trust between them (from a cache, or a database):
//! 1. [`agent_spiffe_id`] reads the leaf's SPIFFE id, which names the org;
//! 2. [`verify_agent_certificate`] checks the leaf against that org's intermediate, the platform
//!    root and the org's revoked serials, and returns the [`AgentIdentity`].
//!
//! The checks are this crate's own (x509-parser for the structure, ring for signatures), not
//! rustls-webpki's, which rejects every chain under a URI name constraint; see the crate docs.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use coffer_types::OrgId;
use uuid::Uuid;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, NameConstraints, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_NAME_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

use crate::ca::single_uri_san;
use crate::x509::{self, KeyAlgorithm, SignatureError};
use crate::{Serial, SpiffeId, TrustDomain, spiffe};

/// Largest certificate accepted, in bytes. Coffer's certificates are well under 2 KiB.
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

/// Which certificate of the chain an [`Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// The agent's certificate.
    Leaf,
    /// The org's intermediate CA.
    OrgIntermediate,
    /// The platform root CA.
    PlatformRoot,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Position::Leaf => "leaf",
            Position::OrgIntermediate => "org intermediate",
            Position::PlatformRoot => "platform root",
        })
    }
}

/// Why a presented agent certificate was refused. Each message names the certificate and the
/// rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Over [`MAX_CERTIFICATE_LEN`].
    #[error("{which} certificate is {len} bytes; it must be at most {MAX_CERTIFICATE_LEN}")]
    TooLarge {
        /// The certificate.
        which: Position,
        /// Its size.
        len: usize,
    },
    /// Not DER X.509, or bytes after it.
    #[error("{which} certificate is not a DER-encoded X.509 certificate")]
    Malformed {
        /// The certificate.
        which: Position,
    },
    /// A profile rule: extensions, key usages, CA flags, key and signature algorithms.
    #[error("{which} certificate {rule}")]
    Profile {
        /// The certificate.
        which: Position,
        /// The rule broken, e.g. `extendedKeyUsage lacks clientAuth`.
        rule: &'static str,
    },
    /// The leaf's one URI is not an agent SPIFFE id of this trust domain.
    #[error("leaf certificate subjectAltName: {0}")]
    SpiffeId(spiffe::Error),
    /// Validity starts after `now`.
    #[error("{which} certificate is not valid before {not_before}")]
    NotYetValid {
        /// The certificate.
        which: Position,
        /// Its notBefore.
        not_before: DateTime<Utc>,
    },
    /// Validity ended before `now`.
    #[error("{which} certificate expired at {not_after}")]
    Expired {
        /// The certificate.
        which: Position,
        /// Its notAfter.
        not_after: DateTime<Utc>,
    },
    /// The issuer name is not the next certificate's subject.
    #[error("{which} certificate was not issued by the {issuer} CA")]
    WrongIssuer {
        /// The certificate.
        which: Position,
        /// The CA it should have been issued by.
        issuer: Position,
    },
    /// The signature does not verify under the issuing CA's key.
    #[error("{which} certificate signature does not verify under the {issuer} CA key")]
    BadSignature {
        /// The certificate.
        which: Position,
        /// The CA whose key was tried.
        issuer: Position,
    },
    /// The intermediate's name constraints do not permit the leaf's URI.
    #[error("leaf certificate URI is outside the org intermediate's name constraints")]
    NameConstraints,
    /// The intermediate is another org's: the leaf claims an org its issuer does not serve.
    #[error(
        "leaf certificate names org {leaf_org}, but the org intermediate belongs to org {intermediate_org}"
    )]
    OrgMismatch {
        /// The org in the leaf's SPIFFE id.
        leaf_org: OrgId,
        /// The org in the intermediate's SPIFFE id.
        intermediate_org: OrgId,
    },
    /// The leaf's serial is on the org's revocation list.
    #[error("leaf certificate serial {serial} is revoked")]
    Revoked {
        /// The revoked serial.
        serial: Serial,
    },
}

/// What the caller trusts for one org: the platform root, that org's intermediate, and that
/// org's revoked serials.
#[derive(Debug, Clone, Copy)]
pub struct OrgTrust<'a> {
    /// The trust domain every SPIFFE id must be in.
    pub trust_domain: &'a TrustDomain,
    /// The platform root certificate, DER.
    pub root: &'a [u8],
    /// The intermediate of the org named by the leaf (see [`agent_spiffe_id`]), DER, as stored
    /// by the enrollment service; never one the client presented.
    pub org_intermediate: &'a [u8],
    /// Every serial the org has revoked.
    pub revoked_serials: &'a HashSet<Serial>,
}

/// The authenticated identity of an agent, from a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The agent's org.
    pub org_id: OrgId,
    /// The agent.
    pub agent_id: Uuid,
    /// The full SPIFFE id.
    pub spiffe_id: SpiffeId,
    /// The certificate's serial.
    pub serial: Serial,
    /// Start of the certificate's validity.
    pub not_before: DateTime<Utc>,
    /// End of the certificate's validity; renewal is due at 80 % of the lifetime.
    pub not_after: DateTime<Utc>,
    /// The agent's public key as a DER SubjectPublicKeyInfo.
    pub public_key_spki_der: Vec<u8>,
}

/// Reads the SPIFFE id of a presented agent certificate, without verifying anything else, so
/// the caller can look up the org's intermediate and revoked serials.
///
/// The subjectAltName must be exactly one URI, an agent SPIFFE id in `trust_domain`.
pub fn agent_spiffe_id(leaf: &[u8], trust_domain: &TrustDomain) -> Result<SpiffeId, Error> {
    let cert = parse(Position::Leaf, leaf)?;
    leaf_spiffe_id(&cert, trust_domain)
}

/// Verifies a presented agent certificate against `trust` at `now`.
///
/// Checks, failing closed on anything unexpected:
/// - every certificate parses, has no duplicate or malformed extension and no critical one
///   this function does not process, and is within its validity window at `now`;
/// - root: a CA with keyCertSign, self-signed;
/// - intermediate: issued and signed (ecdsa-with-SHA256) by the root, `CA:true` critical with
///   `pathLen:0`, keyCertSign, its SPIFFE id `spiffe://<td>/org/<org>` names the same org as
///   the leaf (the org-path rule the certificate's name constraint cannot carry), and its
///   URI name constraints permit the leaf's URI;
/// - leaf: issued and signed by the intermediate, not a CA, keyUsage digitalSignature without
///   keyCertSign/cRLSign, extendedKeyUsage clientAuth, an ECDSA P-256 or Ed25519 key, exactly
///   one subjectAltName (the agent SPIFFE id), a positive serial not in
///   `trust.revoked_serials`.
pub fn verify_agent_certificate(
    leaf: &[u8],
    trust: &OrgTrust<'_>,
    now: DateTime<Utc>,
) -> Result<AgentIdentity, Error> {
    let leaf_cert = parse(Position::Leaf, leaf)?;
    let intermediate = parse(Position::OrgIntermediate, trust.org_intermediate)?;
    let root = parse(Position::PlatformRoot, trust.root)?;
    let spiffe_id = leaf_spiffe_id(&leaf_cert, trust.trust_domain)?;

    check_ca(Position::PlatformRoot, &root, None)?;
    check_issued_by(Position::PlatformRoot, &root, Position::PlatformRoot, &root)?;
    check_validity(Position::PlatformRoot, &root, now)?;

    check_ca(Position::OrgIntermediate, &intermediate, Some(0))?;
    check_issued_by(
        Position::OrgIntermediate,
        &intermediate,
        Position::PlatformRoot,
        &root,
    )?;
    check_validity(Position::OrgIntermediate, &intermediate, now)?;
    let intermediate_org = single_uri_san(&intermediate)
        .and_then(|uri| trust.trust_domain.parse_org_uri(uri).ok())
        .ok_or(Error::Profile {
            which: Position::OrgIntermediate,
            rule: "subjectAltName must be exactly one spiffe://<trust-domain>/org/<org_id> URI",
        })?;
    if intermediate_org != spiffe_id.org_id() {
        return Err(Error::OrgMismatch {
            leaf_org: spiffe_id.org_id(),
            intermediate_org,
        });
    }
    check_name_constraints(&intermediate, spiffe_id.trust_domain().as_str())?;

    check_leaf_profile(&leaf_cert)?;
    check_issued_by(
        Position::Leaf,
        &leaf_cert,
        Position::OrgIntermediate,
        &intermediate,
    )?;
    check_validity(Position::Leaf, &leaf_cert, now)?;
    let serial = Serial::from_der_integer(leaf_cert.raw_serial()).map_err(|_| Error::Profile {
        which: Position::Leaf,
        rule: "serial must be a positive integer",
    })?;
    if trust.revoked_serials.contains(&serial) {
        return Err(Error::Revoked { serial });
    }

    Ok(AgentIdentity {
        org_id: spiffe_id.org_id(),
        agent_id: spiffe_id.agent_id(),
        serial,
        not_before: x509::from_asn1(leaf_cert.validity().not_before),
        not_after: x509::from_asn1(leaf_cert.validity().not_after),
        public_key_spki_der: leaf_cert.public_key().raw.to_vec(),
        spiffe_id,
    })
}

/// Extensions this module processes; any other critical extension refuses the certificate.
fn is_processed(oid: &x509_parser::der_parser::Oid<'_>) -> bool {
    [
        OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_EXTENDED_KEY_USAGE,
        OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_NAME_CONSTRAINTS,
    ]
    .contains(oid)
}

fn parse(which: Position, der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    if der.len() > MAX_CERTIFICATE_LEN {
        return Err(Error::TooLarge {
            which,
            len: der.len(),
        });
    }
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| Error::Malformed { which })?;
    if !rest.is_empty() {
        return Err(Error::Malformed { which });
    }
    let profile = |rule| Error::Profile { which, rule };
    cert.extensions_map()
        .map_err(|_| profile("has duplicate extensions"))?;
    for extension in cert.extensions() {
        if matches!(
            extension.parsed_extension(),
            ParsedExtension::ParseError { .. }
        ) {
            return Err(profile("has a malformed extension"));
        }
        if extension.critical && !is_processed(&extension.oid) {
            return Err(profile("has a critical extension Coffer does not process"));
        }
    }
    Ok(cert)
}

fn leaf_spiffe_id(
    cert: &X509Certificate<'_>,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, Error> {
    let uri = single_uri_san(cert).ok_or(Error::Profile {
        which: Position::Leaf,
        rule: "subjectAltName must be exactly one URI, the agent's SPIFFE id",
    })?;
    SpiffeId::parse(uri, trust_domain).map_err(Error::SpiffeId)
}

/// A CA certificate: `CA:true` (critical), keyCertSign, an optional exact pathLen.
fn check_ca(
    which: Position,
    cert: &X509Certificate<'_>,
    path_len: Option<u32>,
) -> Result<(), Error> {
    let profile = |rule| Error::Profile { which, rule };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.critical && bc.value.ca => {
            if path_len.is_some() && bc.value.path_len_constraint != path_len {
                return Err(profile("basicConstraints pathLen must be 0"));
            }
        }
        _ => return Err(profile("must be a CA (critical basicConstraints CA:true)")),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => Ok(()),
        _ => Err(profile("keyUsage lacks keyCertSign")),
    }
}

fn check_leaf_profile(cert: &X509Certificate<'_>) -> Result<(), Error> {
    let profile = |rule| Error::Profile {
        which: Position::Leaf,
        rule,
    };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => return Err(profile("must not be a CA")),
        Ok(_) => {}
        Err(_) => return Err(profile("has a malformed basicConstraints extension")),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() || ku.value.crl_sign() => {
            return Err(profile("keyUsage must not include keyCertSign or cRLSign"));
        }
        Ok(Some(ku)) if ku.value.digital_signature() => {}
        _ => return Err(profile("keyUsage lacks digitalSignature")),
    }
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        _ => return Err(profile("extendedKeyUsage lacks clientAuth")),
    }
    x509::key_algorithm(cert.public_key())
        .map_err(|_| profile("key must be ECDSA P-256 or Ed25519"))?;
    Ok(())
}

/// `cert`'s issuer name is `issuer`'s subject and its signature verifies under `issuer`'s key,
/// with ecdsa-with-SHA256 (every Coffer CA key is P-256).
fn check_issued_by(
    which: Position,
    cert: &X509Certificate<'_>,
    issuer_position: Position,
    issuer: &X509Certificate<'_>,
) -> Result<(), Error> {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(Error::WrongIssuer {
            which,
            issuer: issuer_position,
        });
    }
    if x509::key_algorithm(issuer.public_key()) != Ok(KeyAlgorithm::EcdsaP256) {
        return Err(Error::Profile {
            which: issuer_position,
            rule: "key must be ECDSA P-256",
        });
    }
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(Error::Profile {
            which,
            rule: "signature algorithm differs from the one in its signed part",
        });
    }
    x509::verify_signature(
        KeyAlgorithm::EcdsaP256,
        issuer.public_key(),
        &cert.signature_algorithm,
        cert.tbs_certificate.as_ref(),
        cert.signature_value.data.as_ref(),
    )
    .map_err(|e| match e {
        SignatureError::AlgorithmMismatch => Error::Profile {
            which,
            rule: "signature algorithm must be ecdsa-with-SHA256",
        },
        SignatureError::BadSignature => Error::BadSignature {
            which,
            issuer: issuer_position,
        },
    })
}

fn check_validity(
    which: Position,
    cert: &X509Certificate<'_>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let not_before = x509::from_asn1(cert.validity().not_before);
    let not_after = x509::from_asn1(cert.validity().not_after);
    if now < not_before {
        return Err(Error::NotYetValid { which, not_before });
    }
    if now > not_after {
        return Err(Error::Expired { which, not_after });
    }
    Ok(())
}

/// RFC 5280 §4.2.1.10 for URIs, the only name form Coffer constrains: a constraint is a host
/// (`coffer.example`, matching exactly) or a domain (`.coffer.example`, matching hosts below
/// it), compared case-insensitively with the URI's host. `host` is the leaf URI's host.
fn check_name_constraints(intermediate: &X509Certificate<'_>, host: &str) -> Result<(), Error> {
    let profile = |rule| Error::Profile {
        which: Position::OrgIntermediate,
        rule,
    };
    let constraints: &NameConstraints<'_> = match intermediate.name_constraints() {
        Ok(Some(nc)) if nc.critical => nc.value,
        _ => return Err(profile("must carry critical URI name constraints")),
    };
    let permitted = constraints
        .permitted_subtrees
        .as_deref()
        .unwrap_or_default();
    let excluded = constraints.excluded_subtrees.as_deref().unwrap_or_default();
    let mut bases = Vec::with_capacity(permitted.len());
    for subtree in permitted.iter().chain(excluded) {
        let GeneralName::URI(base) = subtree.base else {
            return Err(profile("name constraints must all be URI constraints"));
        };
        bases.push(base);
    }
    let (permitted_bases, excluded_bases) = bases.split_at(permitted.len());
    if permitted_bases.is_empty() {
        return Err(profile("must carry critical URI name constraints"));
    }
    let host = host.as_bytes();
    let matches = |base: &&str| {
        let base = base.as_bytes();
        if base.starts_with(b".") {
            host.len() > base.len() && host[host.len() - base.len()..].eq_ignore_ascii_case(base)
        } else {
            host.eq_ignore_ascii_case(base)
        }
    };
    if !permitted_bases.iter().any(matches) || excluded_bases.iter().any(matches) {
        return Err(Error::NameConstraints);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, CustomExtension, KeyPair};

    use super::*;
    use crate::x509::tlv;

    /// A certificate carrying a nameConstraints extension made of `permitted` and `excluded`
    /// GeneralSubtree DERs.
    fn constrained(permitted: &[Vec<u8>], excluded: &[Vec<u8>], critical: bool) -> Vec<u8> {
        let mut value = Vec::new();
        if !permitted.is_empty() {
            value.extend(tlv(0xa0, &permitted.concat()));
        }
        if !excluded.is_empty() {
            value.extend(tlv(0xa1, &excluded.concat()));
        }
        let mut extension = CustomExtension::from_oid_content(&[2, 5, 29, 30], tlv(0x30, &value));
        extension.set_criticality(critical);
        let mut params = CertificateParams::default();
        params.custom_extensions = vec![extension];
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(base: &str) -> Vec<u8> {
        tlv(0x30, &tlv(0x86, base.as_bytes()))
    }

    fn check(der: &[u8], host: &str) -> Result<(), Error> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        check_name_constraints(&cert, host)
    }

    #[test]
    fn uri_name_constraints_follow_rfc_5280_host_and_domain_matching() {
        let host = constrained(&[uri("coffer.example")], &[], true);
        check(&host, "coffer.example").unwrap();
        check(&host, "COFFER.example").unwrap();
        assert_eq!(
            check(&host, "a.coffer.example"),
            Err(Error::NameConstraints)
        );
        assert_eq!(check(&host, "evil.example"), Err(Error::NameConstraints));

        let domain = constrained(&[uri(".coffer.example")], &[], true);
        check(&domain, "a.coffer.example").unwrap();
        assert_eq!(
            check(&domain, "coffer.example"),
            Err(Error::NameConstraints)
        );
        assert_eq!(
            check(&domain, "evilcoffer.example"),
            Err(Error::NameConstraints)
        );

        let excluded = constrained(&[uri(".example")], &[uri("coffer.example")], true);
        check(&excluded, "other.example").unwrap();
        assert_eq!(
            check(&excluded, "coffer.example"),
            Err(Error::NameConstraints)
        );
    }

    #[test]
    fn missing_non_critical_or_non_uri_name_constraints_are_refused() {
        let rule = |rule| {
            Err(Error::Profile {
                which: Position::OrgIntermediate,
                rule,
            })
        };
        let key = KeyPair::generate().unwrap();
        let none = CertificateParams::default().self_signed(&key).unwrap();
        assert_eq!(
            check(none.der(), "coffer.example"),
            rule("must carry critical URI name constraints")
        );
        let non_critical = constrained(&[uri("coffer.example")], &[], false);
        assert_eq!(
            check(&non_critical, "coffer.example"),
            rule("must carry critical URI name constraints")
        );
        let only_excluded = constrained(&[], &[uri("evil.example")], true);
        assert_eq!(
            check(&only_excluded, "coffer.example"),
            rule("must carry critical URI name constraints")
        );
        let dns = tlv(0x30, &tlv(0x82, b"coffer.example"));
        let mixed = constrained(&[uri("coffer.example"), dns], &[], true);
        assert_eq!(
            check(&mixed, "coffer.example"),
            rule("name constraints must all be URI constraints")
        );
    }

    #[test]
    fn errors_name_the_certificate_and_the_rule() {
        let err = Error::Profile {
            which: Position::Leaf,
            rule: "extendedKeyUsage lacks clientAuth",
        };
        assert_eq!(
            err.to_string(),
            "leaf certificate extendedKeyUsage lacks clientAuth"
        );
        let err = Error::BadSignature {
            which: Position::OrgIntermediate,
            issuer: Position::PlatformRoot,
        };
        assert_eq!(
            err.to_string(),
            "org intermediate certificate signature does not verify under the platform root CA key"
        );
    }

    #[test]
    fn garbage_and_oversized_leaves_are_refused() {
        let td = TrustDomain::new("coffer.example").unwrap();
        assert_eq!(
            agent_spiffe_id(b"not a certificate", &td).unwrap_err(),
            Error::Malformed {
                which: Position::Leaf
            }
        );
        assert_eq!(
            agent_spiffe_id(&vec![0x30; MAX_CERTIFICATE_LEN + 1], &td)
                .unwrap_err()
                .to_string(),
            "leaf certificate is 16385 bytes; it must be at most 16384"
        );
    }
}
