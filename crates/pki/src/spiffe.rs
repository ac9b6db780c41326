//! Trust domains and the SPIFFE ids Coffer puts in certificates.
//!
//! An agent is named `spiffe://<trust-domain>/org/<org_id>/agent/<agent_id>`; an org's
//! intermediate CA carries `spiffe://<trust-domain>/org/<org_id>` and the platform root
//! `spiffe://<trust-domain>`. Ids are compared as strings, so each identity has exactly one
//! accepted spelling: a lowercase trust domain and lowercase hyphenated UUIDs.

use std::fmt;
use std::str::FromStr;

use coffer_types::OrgId;
use uuid::Uuid;

/// The URI scheme of every SPIFFE id.
const SCHEME: &str = "spiffe://";

/// Longest accepted trust domain, in bytes (the SPIFFE limit).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a trust domain or SPIFFE id was refused.
///
/// The offending input is never echoed: it may come from a presented certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The trust domain breaks a naming rule.
    #[error("trust domain {0}")]
    TrustDomain(&'static str),
    /// The URI is not `spiffe://<trust-domain>/org/<org_id>/agent/<agent_id>`.
    #[error("spiffe id must be spiffe://<trust-domain>/org/<org_id>/agent/<agent_id>")]
    Shape,
    /// The URI names another trust domain.
    #[error("spiffe id trust domain is not {expected}")]
    ForeignTrustDomain {
        /// The trust domain this deployment serves.
        expected: TrustDomain,
    },
    /// An id segment is not a UUID in its canonical spelling.
    #[error("spiffe id {segment} must be a lowercase hyphenated UUID")]
    Uuid {
        /// `org_id` or `agent_id`.
        segment: &'static str,
    },
}

/// A SPIFFE trust domain: the host part of every SPIFFE id this deployment issues.
///
/// 1..=255 bytes of `a-z 0-9 . - _`, made of non-empty dot-separated labels of at most 63
/// bytes, so it is also a valid host name for an RFC 5280 URI name constraint.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates a trust domain. Uppercase is refused rather than folded, so configuration
    /// and certificates always spell it the same way.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(Error::TrustDomain("must be 1..=255 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(Error::TrustDomain(
                "may contain only lowercase letters, digits, '.', '-' and '_'",
            ));
        }
        if name
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
        {
            return Err(Error::TrustDomain(
                "must be dot-separated labels of 1..=63 characters",
            ));
        }
        Ok(Self(name))
    }

    /// The trust domain as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The platform root's SPIFFE id: `spiffe://<trust-domain>`.
    pub fn root_uri(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }

    /// An org intermediate's SPIFFE id: `spiffe://<trust-domain>/org/<org_id>`.
    pub fn org_uri(&self, org_id: OrgId) -> String {
        format!("{SCHEME}{}/org/{}", self.0, org_id.as_uuid().hyphenated())
    }

    /// Parses an org intermediate's SPIFFE id (see [`TrustDomain::org_uri`]) in this trust
    /// domain and returns its org.
    pub(crate) fn parse_org_uri(&self, uri: &str) -> Result<OrgId, Error> {
        let path = self.strip_prefix(uri)?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["", "org", org] => Ok(OrgId::from_uuid(canonical_uuid(org, "org_id")?)),
            _ => Err(Error::Shape),
        }
    }

    /// Strips `spiffe://<this trust domain>` from `uri`, returning the path.
    fn strip_prefix<'u>(&self, uri: &'u str) -> Result<&'u str, Error> {
        let rest = uri.strip_prefix(SCHEME).ok_or(Error::Shape)?;
        let (domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if domain != self.0 {
            return Err(Error::ForeignTrustDomain {
                expected: self.clone(),
            });
        }
        Ok(path)
    }
}

impl FromStr for TrustDomain {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// An agent's SPIFFE id: `spiffe://<trust-domain>/org/<org_id>/agent/<agent_id>`.
///
/// The only name an agent certificate carries (its single subjectAltName URI).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    org_id: OrgId,
    agent_id: Uuid,
}

impl SpiffeId {
    /// The id of agent `agent_id` of org `org_id`.
    pub fn new(trust_domain: TrustDomain, org_id: OrgId, agent_id: Uuid) -> Self {
        Self {
            trust_domain,
            org_id,
            agent_id,
        }
    }

    /// Parses an agent SPIFFE id, which must be in `trust_domain`.
    ///
    /// Strict: no trailing slash, query, fragment, port, user info or percent-encoding, and
    /// both ids in lowercase hyphenated form, so two different strings never name the same
    /// agent.
    pub fn parse(uri: &str, trust_domain: &TrustDomain) -> Result<Self, Error> {
        let path = trust_domain.strip_prefix(uri)?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["", "org", org, "agent", agent] => Ok(Self {
                trust_domain: trust_domain.clone(),
                org_id: OrgId::from_uuid(canonical_uuid(org, "org_id")?),
                agent_id: canonical_uuid(agent, "agent_id")?,
            }),
            _ => Err(Error::Shape),
        }
    }

    /// The trust domain the id belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The agent's org.
    pub fn org_id(&self) -> OrgId {
        self.org_id
    }

    /// The agent.
    pub fn agent_id(&self) -> Uuid {
        self.agent_id
    }

    /// The id as a URI string.
    pub fn to_uri(&self) -> String {
        format!(
            "{}/agent/{}",
            self.trust_domain.org_uri(self.org_id),
            self.agent_id.hyphenated()
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.to_uri())
    }
}

/// Parses a UUID that must already be in lowercase hyphenated form (what `Display` prints).
fn canonical_uuid(s: &str, segment: &'static str) -> Result<Uuid, Error> {
    let id = Uuid::try_parse(s).map_err(|_| Error::Uuid { segment })?;
    if id.hyphenated().to_string() != s {
        return Err(Error::Uuid { segment });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "0190d3c4-7a6b-7c1e-9f00-000000000007";
    const AGENT: &str = "0190d3c4-7a6b-7c1e-9f00-0000000000a1";

    fn td() -> TrustDomain {
        TrustDomain::new("coffer.example").unwrap()
    }

    #[test]
    fn trust_domain_rules() {
        for good in [
            "coffer.example",
            "a",
            "prod-1.coffer_internal",
            &"a".repeat(63),
        ] {
            TrustDomain::new(good).unwrap();
        }
        let cases = [
            ("", "trust domain must be 1..=255 characters"),
            (
                "Coffer.example",
                "trust domain may contain only lowercase letters, digits, '.', '-' and '_'",
            ),
            (
                "coffer.example:8443",
                "trust domain may contain only lowercase letters, digits, '.', '-' and '_'",
            ),
            (
                ".coffer.example",
                "trust domain must be dot-separated labels of 1..=63 characters",
            ),
            (
                "coffer..example",
                "trust domain must be dot-separated labels of 1..=63 characters",
            ),
        ];
        for (bad, message) in cases {
            assert_eq!(TrustDomain::new(bad).unwrap_err().to_string(), message);
        }
        assert!(TrustDomain::new("a".repeat(64)).is_err());
        assert!(TrustDomain::new(format!("{}.b", "a.".repeat(127))).is_err());
    }

    #[test]
    fn agent_ids_round_trip() {
        let uri = format!("spiffe://coffer.example/org/{ORG}/agent/{AGENT}");
        let id = SpiffeId::parse(&uri, &td()).unwrap();
        assert_eq!(id.org_id().to_string(), ORG);
        assert_eq!(id.agent_id().to_string(), AGENT);
        assert_eq!(id.to_string(), uri);
    }

    #[test]
    fn every_other_spelling_is_refused() {
        let upper = AGENT.to_uppercase();
        let simple = AGENT.replace('-', "");
        let bad = [
            format!("https://coffer.example/org/{ORG}/agent/{AGENT}"),
            format!("spiffe://other.example/org/{ORG}/agent/{AGENT}"),
            format!("spiffe://coffer.example:443/org/{ORG}/agent/{AGENT}"),
            format!("spiffe://coffer.example/org/{ORG}/agent/{AGENT}/"),
            format!("spiffe://coffer.example/org/{ORG}/agent/{AGENT}?x=1"),
            format!("spiffe://coffer.example/org/{ORG}//agent/{AGENT}"),
            format!("spiffe://coffer.example/org/{ORG}/agent/{upper}"),
            format!("spiffe://coffer.example/org/{ORG}/agent/{simple}"),
            format!("spiffe://coffer.example/org/{ORG}/agent/{{{AGENT}}}"),
            format!("spiffe://coffer.example/org/{ORG}/x/{AGENT}"),
            format!("spiffe://coffer.example/org/{ORG}"),
            "spiffe://coffer.example".to_owned(),
        ];
        for uri in bad {
            assert!(SpiffeId::parse(&uri, &td()).is_err(), "{uri}");
        }
    }

    #[test]
    fn errors_name_the_rule() {
        let foreign = format!("spiffe://other.example/org/{ORG}/agent/{AGENT}");
        assert_eq!(
            SpiffeId::parse(&foreign, &td()).unwrap_err().to_string(),
            "spiffe id trust domain is not coffer.example"
        );
        let upper = format!(
            "spiffe://coffer.example/org/{}/agent/{AGENT}",
            ORG.to_uppercase()
        );
        assert_eq!(
            SpiffeId::parse(&upper, &td()).unwrap_err().to_string(),
            "spiffe id org_id must be a lowercase hyphenated UUID"
        );
    }

    #[test]
    fn org_uris_round_trip() {
        let org: OrgId = ORG.parse().unwrap();
        let uri = td().org_uri(org);
        assert_eq!(uri, format!("spiffe://coffer.example/org/{ORG}"));
        assert_eq!(td().parse_org_uri(&uri).unwrap(), org);
        assert!(td().parse_org_uri(&format!("{uri}/")).is_err());
        assert!(td().parse_org_uri("spiffe://coffer.example").is_err());
    }
}
