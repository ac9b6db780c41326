//! Job tickets: the proof an agent presents to the credentials service to receive exactly the
//! credentials of one job attempt (DESIGN §6).
//!
//! When an agent claims a job, scheduling signs a ticket with its Ed25519 key: a compact JWS
//! with `typ: coffer-job-ticket+jwt` whose claims are [`JobTicket`]. Scheduling publishes its
//! public keys in the published-keys bucket ([`crate::published`]); the credentials service
//! verifies tickets locally against them. A ticket lives at most [`MAX_LIFETIME`] (5 minutes)
//! and says which agent of which org may fetch which vault references for which attempt; the
//! credentials service refuses it for any other agent and releases once per attempt.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use coffer_types::{AgentId, OrgId};
use serde::{Deserialize, Serialize};

use crate::jws::{self, Alg, PublicKey};
use crate::token::{Jwks, Signer, unix_seconds};

/// The `typ` header of a job ticket.
pub const TYP: &str = "coffer-job-ticket+jwt";

/// The longest a ticket may live.
pub const MAX_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Largest ticket accepted, checked before anything is decoded.
pub const MAX_TICKET_BYTES: usize = 16 * 1024;

/// Most vault references one ticket may carry.
pub const MAX_VAULT_REFS: usize = 32;

/// Most backups one restore ticket may open.
pub const MAX_FILE_KEY_HEADERS: usize = 32;

/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: i64 = 5;

/// What a ticket grants: the claims of the JWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTicket {
    /// The job.
    pub job_id: uuid::Uuid,
    /// Which attempt of the job, from 1: each attempt is released once.
    pub attempt: u32,
    /// The agent the job was handed to; no other agent may use the ticket.
    pub agent_id: AgentId,
    /// The agent's org; every vault reference must be of this org.
    pub org_id: OrgId,
    /// The credentials the job needs, as `vault:coffer/<org_id>/<credential_id>`.
    pub vault_refs: Vec<String>,
    /// For restore jobs: the backups whose file key the agent may have unwrapped, each named
    /// by the SHA-256 (lowercase hex) of its age header. Empty for every other job, so a
    /// backup job's ticket opens no backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_key_headers: Vec<String>,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

impl JobTicket {
    /// A ticket issued at `now` that expires after `lifetime`.
    pub fn new(
        job_id: uuid::Uuid,
        attempt: u32,
        agent_id: AgentId,
        org_id: OrgId,
        vault_refs: Vec<String>,
        now: SystemTime,
        lifetime: Duration,
    ) -> Self {
        let iat = unix_seconds(now);
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        JobTicket {
            job_id,
            attempt,
            agent_id,
            org_id,
            vault_refs,
            file_key_headers: Vec::new(),
            iat,
            exp: iat.saturating_add(lifetime),
        }
    }

    /// The same ticket, also granting the unwrap of the file keys of the backups whose age
    /// headers have these SHA-256 digests (a restore job).
    pub fn with_file_key_headers(mut self, header_digests: Vec<String>) -> Self {
        self.file_key_headers = header_digests;
        self
    }

    fn within_limits(&self) -> bool {
        self.vault_refs.len() <= MAX_VAULT_REFS
            && self.file_key_headers.len() <= MAX_FILE_KEY_HEADERS
            && self.attempt != 0
    }
}

/// Why a ticket was refused. Says nothing of the ticket's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a well-formed job ticket (size, structure, header, claims).
    #[error("job ticket is malformed")]
    Malformed,
    /// Signed by no key scheduling published, or the signature does not verify.
    #[error("job ticket signature does not verify")]
    Signature,
    /// Past its `exp`.
    #[error("job ticket has expired")]
    Expired,
    /// Lives longer than [`MAX_LIFETIME`], or is issued in the future.
    #[error("job ticket lifetime is invalid")]
    Lifetime,
}

impl Signer {
    /// Signs a job ticket (scheduling's key; tests use their own key, published the same way).
    pub fn issue_ticket(&self, ticket: &JobTicket) -> Result<String, Error> {
        check_lifetime(ticket)?;
        if !ticket.within_limits() {
            return Err(Error::Malformed);
        }
        Ok(self.sign(
            TYP,
            &serde_json::to_vec(ticket).expect("ticket claims serialize"),
        ))
    }
}

fn check_lifetime(ticket: &JobTicket) -> Result<(), Error> {
    let lifetime = ticket.exp.saturating_sub(ticket.iat);
    let max = i64::try_from(MAX_LIFETIME.as_secs()).expect("5 minutes fit in i64");
    if lifetime <= 0 || lifetime > max {
        return Err(Error::Lifetime);
    }
    Ok(())
}

/// Verifies job tickets against the keys scheduling published.
#[derive(Debug, Clone, Default)]
pub struct TicketVerifier {
    keys: HashMap<String, PublicKey>,
}

impl TicketVerifier {
    /// A verifier accepting tickets signed by any key in `jwks`.
    pub fn new(jwks: &Jwks) -> Self {
        TicketVerifier {
            keys: jwks
                .keys
                .iter()
                .map(|jwk| (jwk.kid().to_owned(), PublicKey::Ed25519(jwk.public_key())))
                .collect(),
        }
    }

    /// Verifies `ticket` at `now`: size, structure, EdDSA with `typ` [`TYP`], a published
    /// `kid`, the signature, then lifetime and expiry.
    pub fn verify(&self, ticket: &str, now: SystemTime) -> Result<JobTicket, Error> {
        let parsed = jws::parse(ticket, MAX_TICKET_BYTES).map_err(|reject| match reject {
            jws::Reject::Signature => Error::Signature,
            _ => Error::Malformed,
        })?;
        if parsed.alg != Alg::EdDsa || parsed.header.typ.as_deref() != Some(TYP) {
            return Err(Error::Malformed);
        }
        let kid = parsed.header.kid.as_deref().ok_or(Error::Signature)?;
        let key = self.keys.get(kid).ok_or(Error::Signature)?;
        key.verify(&parsed).map_err(|_| Error::Signature)?;
        let claims: JobTicket =
            serde_json::from_slice(&parsed.payload).map_err(|_| Error::Malformed)?;
        if !claims.within_limits() {
            return Err(Error::Malformed);
        }
        check_lifetime(&claims)?;
        let now = unix_seconds(now);
        if claims.iat > now.saturating_add(LEEWAY_SECS) {
            return Err(Error::Lifetime);
        }
        if now >= claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(Error::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const T0: u64 = 1_767_225_600;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ticket() -> JobTicket {
        JobTicket::new(
            uuid::Uuid::now_v7(),
            1,
            AgentId::new(),
            OrgId::new(),
            vec!["vault:coffer/a/b".into()],
            at(T0),
            MAX_LIFETIME,
        )
    }

    #[test]
    fn a_ticket_verifies_under_its_published_key_until_it_expires() {
        let scheduling = Signer::from_seed(&[1; 32]).unwrap();
        let verifier = TicketVerifier::new(&Jwks::new([scheduling.jwk()]));
        let claims = ticket();
        let signed = scheduling.issue_ticket(&claims).unwrap();
        assert_eq!(verifier.verify(&signed, at(T0 + 1)).unwrap(), claims);
        assert_eq!(
            verifier.verify(&signed, at(T0 + 300 + 5)),
            Err(Error::Expired)
        );
        assert_eq!(
            verifier.verify(&signed, at(T0 - 60)),
            Err(Error::Lifetime),
            "issued in the future"
        );
    }

    #[test]
    fn forged_tampered_and_access_tokens_are_refused() {
        let scheduling = Signer::from_seed(&[1; 32]).unwrap();
        let forger = Signer::from_seed(&[2; 32]).unwrap();
        let verifier = TicketVerifier::new(&Jwks::new([scheduling.jwk()]));
        let claims = ticket();
        let forged = forger.issue_ticket(&claims).unwrap();
        assert_eq!(verifier.verify(&forged, at(T0)), Err(Error::Signature));

        let signed = scheduling.issue_ticket(&claims).unwrap();
        let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
        let mut other = claims.clone();
        other.attempt = 2;
        parts[1] = jws::b64_encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(
            verifier.verify(&parts.join("."), at(T0)),
            Err(Error::Signature)
        );

        // Same key, but an access token's `typ`: not a ticket.
        let not_a_ticket = scheduling.sign("at+jwt", &serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            verifier.verify(&not_a_ticket, at(T0)),
            Err(Error::Malformed)
        );
        assert_eq!(verifier.verify("garbage", at(T0)), Err(Error::Malformed));
        assert_eq!(
            TicketVerifier::default().verify(&signed, at(T0)),
            Err(Error::Signature),
            "no published keys, no tickets"
        );
    }

    #[test]
    fn long_lived_or_empty_tickets_are_not_issued() {
        let scheduling = Signer::from_seed(&[1; 32]).unwrap();
        let mut long = ticket();
        long.exp = long.iat + 301;
        assert_eq!(scheduling.issue_ticket(&long), Err(Error::Lifetime));
        let mut zeroth = ticket();
        zeroth.attempt = 0;
        assert_eq!(scheduling.issue_ticket(&zeroth), Err(Error::Malformed));
    }
}
