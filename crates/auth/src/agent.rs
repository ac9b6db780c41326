//! Agents authenticate with their mTLS client certificate. This is the one place a
//! certificate becomes a [`Principal::Agent`]: the chain must lead to the platform root
//! through the intermediate of the org named in the certificate's SPIFFE id, the certificate
//! must be valid now, and its serial must not be in the revocation set.
//!
//! The TLS handshake checks the chain once per connection; [`authenticate_agent`] checks it
//! again on every request, so a certificate that expires or is revoked while its connection
//! stays open is refused on its next request.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use coffer_pki::verify::{self, OrgTrust, agent_spiffe_id, verify_agent_certificate};
use coffer_pki::{AgentIdentity, TrustDomain};
use coffer_types::{AgentId, OrgId};

use crate::Principal;
use crate::revocation::{CertSerial, Revocations};

/// Why a client certificate does not authenticate an agent. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The platform root or the org's intermediate is not known (yet) to this process.
    #[error("no certificate authority is known for org {0}")]
    UnknownOrg(OrgId),
    /// The certificate or its chain is invalid, expired or of another org.
    #[error(transparent)]
    Certificate(#[from] verify::Error),
    /// The certificate's serial has been revoked.
    #[error("agent certificate {0} has been revoked")]
    Revoked(String),
}

/// The certificates agent chains must lead to: the platform root and each org's
/// intermediate, as published by the enrollment service.
#[derive(Debug)]
pub struct AgentTrust {
    trust_domain: TrustDomain,
    // The platform root (DER) and org intermediates (DER) by org; replaced as enrollment
    // publishes them, read on every handshake and request.
    certificates: RwLock<Certificates>,
}

#[derive(Debug, Default)]
struct Certificates {
    root: Option<Vec<u8>>,
    orgs: HashMap<OrgId, Vec<u8>>,
}

impl AgentTrust {
    /// Trust for `trust_domain`, empty until certificates are added.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            certificates: RwLock::new(Certificates::default()),
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Sets the platform root certificate (DER).
    pub fn set_root(&self, der: Vec<u8>) {
        self.write().root = Some(der);
    }

    /// Sets `org`'s intermediate certificate (DER).
    pub fn set_org(&self, org: OrgId, der: Vec<u8>) {
        self.write().orgs.insert(org, der);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Certificates> {
        self.certificates
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Verifies the chain of `leaf` (DER) at `now`, without consulting revocations.
    pub fn verify(&self, leaf: &[u8], now: DateTime<Utc>) -> Result<AgentIdentity, Error> {
        let spiffe = agent_spiffe_id(leaf, &self.trust_domain)?;
        let org = spiffe.org_id();
        let certificates = self
            .certificates
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (Some(root), Some(intermediate)) = (&certificates.root, certificates.orgs.get(&org))
        else {
            return Err(Error::UnknownOrg(org));
        };
        // Revocations are checked against the revocation set, which is fresher than any CRL.
        let none = HashSet::new();
        let trust = OrgTrust {
            trust_domain: &self.trust_domain,
            root,
            org_intermediate: intermediate,
            revoked_serials: &none,
        };
        Ok(verify_agent_certificate(leaf, &trust, now)?)
    }
}

/// The agent `leaf` (DER) authenticates at `now`: its chain verifies through its org's
/// intermediate and its serial is not revoked. The identity says which certificate it was
/// (renewal judges its lifetime); [`principal`] says who it is.
pub fn authenticate_agent(
    trust: &AgentTrust,
    revocations: &Revocations,
    leaf: &[u8],
    now: DateTime<Utc>,
) -> Result<AgentIdentity, Error> {
    let identity = trust.verify(leaf, now)?;
    let serial = CertSerial::from_bytes(identity.serial.as_be_bytes())
        .map_err(|_| Error::Revoked(identity.serial.to_hex()))?;
    if revocations.is_cert_revoked(identity.org_id, &serial) {
        return Err(Error::Revoked(identity.serial.to_hex()));
    }
    Ok(identity)
}

/// The principal an authenticated agent certificate stands for.
pub fn principal(identity: &AgentIdentity) -> Principal {
    Principal::Agent {
        agent_id: AgentId::from(identity.agent_id),
        org: identity.org_id,
    }
}
