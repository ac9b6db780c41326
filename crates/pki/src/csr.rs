//! Agent certificate signing requests: parsed, proven and screened before anything is signed.
//!
//! Only the CSR's public key is used. Its subject and requested extensions never reach the
//! certificate; but a CSR that *asks* for something an agent may not have (a CA certificate, a
//! name other than its own SPIFFE id) is refused, so a confused or malicious client learns that
//! at enrollment instead of holding a certificate that differs from what it asked for.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME};
use x509_parser::prelude::FromDer;

use crate::SpiffeId;
use crate::x509::{self, KeyAlgorithm, SignatureError};

/// Largest CSR accepted, PEM or DER, in bytes. A P-256 or Ed25519 CSR is well under 1 KiB.
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// PEM labels a CSR may carry (`NEW CERTIFICATE REQUEST` is what `openssl req -newhdr` writes).
const PEM_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// Why a CSR was refused. Every message names the rule it broke; none echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No bytes at all.
    #[error("csr is empty")]
    Empty,
    /// Over [`MAX_CSR_LEN`].
    #[error("csr is {len} bytes; it must be at most {MAX_CSR_LEN}")]
    TooLarge {
        /// Size of the input.
        len: usize,
    },
    /// Starts like PEM but is not one well-formed PEM block.
    #[error("csr PEM is malformed; it must be one CERTIFICATE REQUEST block")]
    MalformedPem,
    /// A PEM block with another label (a certificate, a private key…).
    #[error("csr PEM label is {label}; it must be CERTIFICATE REQUEST")]
    PemLabel {
        /// The label found, when it is a short printable one; otherwise `unexpected`.
        label: String,
    },
    /// Not a DER PKCS#10 CertificationRequest (garbage, truncated, or bytes after it).
    #[error("csr is not a DER-encoded PKCS#10 certification request")]
    MalformedDer,
    /// A key type other than ECDSA P-256 or Ed25519.
    #[error("csr key type {key_type} is not supported; use ECDSA P-256 or Ed25519")]
    UnsupportedKey {
        /// A readable name of the key type found (`RSA`, `ECDSA P-384`…).
        key_type: String,
    },
    /// The signature algorithm does not go with the key (e.g. ECDSA with SHA-1).
    #[error(
        "csr signature algorithm must be ecdsa-with-SHA256 for an ECDSA P-256 key \
         or Ed25519 for an Ed25519 key"
    )]
    SignatureAlgorithm,
    /// The signature does not verify under the CSR's own key: no proof of possession.
    #[error("csr signature does not verify")]
    BadSignature,
    /// The CSR asks for `basicConstraints CA:true`.
    #[error("csr must not request a CA certificate (basicConstraints CA:true)")]
    RequestsCa,
    /// The CSR asks for a subjectAltName other than the agent's SPIFFE id.
    #[error(
        "csr subjectAltName may only contain the agent's SPIFFE id {expected}; it also asks for {found}"
    )]
    ForeignName {
        /// The only name the certificate will carry.
        expected: String,
        /// The kind of name found (`a DNS name`, `another URI`…), not its value.
        found: &'static str,
    },
    /// A basicConstraints or subjectAltName extension request that does not parse.
    #[error("csr {extension} extension request is malformed")]
    MalformedExtension {
        /// `basicConstraints` or `subjectAltName`.
        extension: &'static str,
    },
}

/// A CSR that passed every check: its signature verifies under its own key (proof of
/// possession), the key is ECDSA P-256 or Ed25519, and it asks for nothing beyond `spiffe_id`.
///
/// Only the key is kept; issue the certificate with
/// [`CertificateAuthority::issue_agent_certificate`](crate::CertificateAuthority::issue_agent_certificate).
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCsr {
    spiffe_id: SpiffeId,
    algorithm: KeyAlgorithm,
    /// The subjectPublicKey bits (an uncompressed P-256 point or a 32-byte Ed25519 key).
    public_key: Vec<u8>,
    /// The whole SubjectPublicKeyInfo, DER.
    spki_der: Vec<u8>,
}

impl AgentCsr {
    /// Parses and checks a CSR (PEM or DER) for the agent `spiffe_id`.
    ///
    /// Checks, in order: size, encoding, key type, signature algorithm, signature, then the
    /// requested extensions (no `CA:true`, no subjectAltName except `spiffe_id` itself). The
    /// subject and every other requested extension are ignored.
    pub fn parse(input: &[u8], spiffe_id: &SpiffeId) -> Result<Self, Error> {
        if input.is_empty() {
            return Err(Error::Empty);
        }
        if input.len() > MAX_CSR_LEN {
            return Err(Error::TooLarge { len: input.len() });
        }
        let der = decode(input)?;
        let (rest, csr) =
            X509CertificationRequest::from_der(&der).map_err(|_| Error::MalformedDer)?;
        if !rest.is_empty() {
            return Err(Error::MalformedDer);
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let algorithm =
            x509::key_algorithm(spki).map_err(|key_type| Error::UnsupportedKey { key_type })?;
        x509::verify_signature(
            algorithm,
            spki,
            &csr.signature_algorithm,
            info.raw,
            csr.signature_value.data.as_ref(),
        )
        .map_err(|e| match e {
            SignatureError::AlgorithmMismatch => Error::SignatureAlgorithm,
            SignatureError::BadSignature => Error::BadSignature,
        })?;
        check_requested_extensions(&csr, spiffe_id)?;
        Ok(Self {
            spiffe_id: spiffe_id.clone(),
            algorithm,
            public_key: spki.subject_public_key.data.to_vec(),
            spki_der: spki.raw.to_vec(),
        })
    }

    /// The agent the CSR was checked for.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The key's algorithm.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public key as a DER SubjectPublicKeyInfo: what the certificate will carry.
    pub fn public_key_spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

impl std::fmt::Debug for AgentCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCsr")
            .field("spiffe_id", &self.spiffe_id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl rcgen::PublicKeyData for AgentCsr {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen()
    }
}

/// PEM (when the input starts with `-----BEGIN`) or DER as given.
fn decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    if !input.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(input.to_vec());
    }
    let text = std::str::from_utf8(input).map_err(|_| Error::MalformedPem)?;
    let blocks = pem::parse_many(text).map_err(|_| Error::MalformedPem)?;
    let [block] = blocks.as_slice() else {
        return Err(Error::MalformedPem);
    };
    if !PEM_LABELS.contains(&block.tag()) {
        let label = block.tag();
        let label =
            if label.len() <= 40 && label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ') {
                label.to_owned()
            } else {
                "unexpected".to_owned()
            };
        return Err(Error::PemLabel { label });
    }
    Ok(block.contents().to_vec())
}

/// Refuses CA requests and names other than `spiffe_id` in any extension request.
fn check_requested_extensions(
    csr: &X509CertificationRequest<'_>,
    spiffe_id: &SpiffeId,
) -> Result<(), Error> {
    let expected = spiffe_id.to_uri();
    // Every extensionRequest attribute, not only the first one x509-parser's
    // `requested_extensions` returns: a second one must not smuggle a request past the check.
    let requests = csr
        .certification_request_info
        .iter_attributes()
        .filter_map(|attribute| match attribute.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(request) => Some(request),
            _ => None,
        });
    for extension in requests.flat_map(|request| request.extensions.iter()) {
        if extension.oid == OID_X509_EXT_BASIC_CONSTRAINTS {
            match extension.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(Error::RequestsCa),
                ParsedExtension::BasicConstraints(_) => {}
                _ => {
                    return Err(Error::MalformedExtension {
                        extension: "basicConstraints",
                    });
                }
            }
        } else if extension.oid == OID_X509_EXT_SUBJECT_ALT_NAME {
            let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() else {
                return Err(Error::MalformedExtension {
                    extension: "subjectAltName",
                });
            };
            for name in &san.general_names {
                let found = match name {
                    GeneralName::URI(uri) if *uri == expected => continue,
                    GeneralName::URI(_) => "another URI",
                    GeneralName::DNSName(_) => "a DNS name",
                    GeneralName::IPAddress(_) => "an IP address",
                    GeneralName::RFC822Name(_) => "an email address",
                    GeneralName::DirectoryName(_) => "a directory name",
                    GeneralName::OtherName(..) => "an otherName",
                    _ => "another kind of name",
                };
                return Err(Error::ForeignName {
                    expected: expected.clone(),
                    found,
                });
            }
        }
    }
    Ok(())
}
