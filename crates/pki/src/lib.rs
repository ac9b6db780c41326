//! Coffer's X.509 certificate authority: the only crate that issues or verifies agent identities.
//!
//! This crate owns (DESIGN §1 P6, §5, §6)
//! - the CA hierarchy ([`CertificateAuthority`]): the platform root, created once by
//!   `coffer admin init`, and one intermediate per org, created with the org; all CA keys are
//!   ECDSA P-256, held as zeroized PKCS#8 and stored only wrapped by the KMS
//!   ([`CertificateAuthority::wrap_key`] / [`CertificateAuthority::from_wrapped_key`], purpose `ca_key`,
//!   the root under [`OrgId::PLATFORM`](coffer_types::OrgId::PLATFORM));
//! - CSR screening ([`AgentCsr`]): proof of possession, ECDSA P-256 or Ed25519 keys only, no
//!   CA or foreign-name requests;
//! - agent certificates ([`CertificateAuthority::issue_agent_certificate`]): SAN URI
//!   `spiffe://<trust-domain>/org/<org_id>/agent/<agent_id>`, clientAuth, random 128-bit serial,
//!   24 h by default;
//! - per-org CRLs ([`CertificateAuthority::sign_crl`]);
//! - verification of a presented agent chain ([`verify::agent_spiffe_id`],
//!   [`verify::verify_agent_certificate`]), for the mTLS client-certificate verifier and the
//!   Renew RPC.
//!
//! It does not own storage, events or the TLS stack: callers persist certificates, wrapped
//! keys, revocations and CRL numbers, and feed them back in.
//!
//! # The org name constraint, and what OpenSSL and webpki do with it
//!
//! The ideal constraint on an org intermediate would be "URIs under
//! `spiffe://<td>/org/<org_id>/`". RFC 5280 §4.2.1.10 cannot say that: a URI name constraint is
//! a *host* (`td`) or a *domain* (`.td`) and is compared with the URI's host only; paths are not
//! part of the model. Measured with OpenSSL 3.0 (`openssl verify`), whose `nc_uri` follows the
//! RFC:
//! - `permitted;URI:spiffe://td/org/<org_id>/` (the literal prefix): every leaf is refused with
//!   "permitted subtree violation", because the constraint is compared, as a host, with `td`;
//! - `permitted;URI:.td`: refused too (a leading dot matches hosts *below* `td` only);
//! - `permitted;URI:td`: accepted for `spiffe://td/...`, refused for any other trust domain.
//!
//! rustls-webpki 0.103 does not implement URI constraints at all and fails closed: any chain
//! whose intermediate carries one, and whose leaf has a URI name, is refused with
//! `NameConstraintViolation`, whatever the constraint says.
//!
//! So the intermediate carries the most faithful RFC-valid form, a critical
//! `permitted;URI:<trust-domain>` (stock tools confine the CA to our trust domain), and the
//! org path is enforced by [`verify::verify_agent_certificate`]: the intermediate carries its
//! org's SPIFFE id `spiffe://<td>/org/<org_id>` as its subjectAltName, and a leaf is accepted
//! only when its own SPIFFE id names that same org. Chain checks are therefore this crate's own
//! (x509-parser and ring), not webpki's. The tests pin all three behaviours.

mod ca;
pub mod csr;
mod error;
pub mod serial;
pub mod spiffe;
pub mod verify;
mod x509;

pub use ca::{
    AgentCertificate, CaRole, CertificateAuthority, Crl, DEFAULT_AGENT_TTL, MAX_AGENT_TTL,
    MIN_AGENT_TTL, MIN_CA_VALIDITY, NOT_BEFORE_BACKDATE, RevokedCertificate,
};
pub use csr::AgentCsr;
pub use error::Error;
pub use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
pub use serial::{SERIAL_RANDOM_BYTES, Serial};
pub use spiffe::{SpiffeId, TrustDomain};
pub use verify::{AgentIdentity, OrgTrust};
pub use x509::KeyAlgorithm;
