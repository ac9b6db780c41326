//! The error of CA operations: creating CAs, issuing, signing CRLs, wrapping keys.

use chrono::{DateTime, Utc};
use coffer_types::OrgId;

/// Why a CA operation failed.
///
/// Input problems name the field and the rule; no variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A validity, TTL or CRL lifetime outside its bounds.
    #[error("{field} {rule}")]
    Validity {
        /// `ttl`, `validity` or `crl validity`.
        field: &'static str,
        /// The rule broken, e.g. `must be at least 1m`.
        rule: String,
    },
    /// The certificate would still be valid after the CA that signs it expires.
    #[error(
        "{what} would expire at {not_after}, after its issuing CA (which expires at {issuer_not_after})"
    )]
    OutlivesIssuer {
        /// `agent certificate` or `org intermediate`.
        what: &'static str,
        /// When the new certificate would expire.
        not_after: DateTime<Utc>,
        /// When the issuing CA expires.
        issuer_not_after: DateTime<Utc>,
    },
    /// The CA cannot do this: only the root signs intermediates; only an org CA signs agent
    /// certificates and CRLs.
    #[error("{0}")]
    WrongCa(&'static str),
    /// The CSR was checked for an agent of another org or trust domain than this CA's.
    #[error("csr was checked for {spiffe_id}, which this CA (org {ca_org}) cannot issue")]
    ForeignAgent {
        /// The SPIFFE id the CSR was checked for.
        spiffe_id: String,
        /// The CA's org.
        ca_org: OrgId,
    },
    /// A stored CA certificate that is not what this crate issues for the claimed role.
    #[error("ca certificate {0}")]
    CaCertificate(&'static str),
    /// The unwrapped key is not a PKCS#8 ECDSA P-256 key, or not the certificate's key.
    #[error("ca private key {0}")]
    CaKey(&'static str),
    /// Wrapping or unwrapping the CA key failed in the KMS (including an unwrap under another
    /// org or CA's context, which is [`coffer_kms::Error::Denied`]).
    #[error("ca key: {0}")]
    Kms(#[from] coffer_kms::Error),
    /// rcgen failed to build or sign. Never expected with the parameters this crate sets.
    #[error("sign {what}: {message}")]
    Signing {
        /// What was being signed.
        what: &'static str,
        /// rcgen's description.
        message: String,
    },
}

impl Error {
    pub(crate) fn signing(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |e| Error::Signing {
            what,
            message: e.to_string(),
        }
    }
}
