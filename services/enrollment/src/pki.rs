//! The CA hierarchy as the service runs it: the platform root and org intermediates, stored
//! as events with their keys wrapped by KMS, unwrapped on first use and kept in memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use coffer_db::TenantTx;
use coffer_eventstore::{EventStore, ExecuteError};
use coffer_kms::{KeyId, Kms, WrappedKey};
use coffer_pki::{CaRole, CertificateAuthority, Crl, RevokedCertificate, Serial, TrustDomain};
use coffer_types::{Actor, AggregateId, OrgId};

use crate::app::Error;
use crate::domain::ca::{Ca, CaCommand, CaError, CaKind};
use crate::store;

/// How certificates are made.
#[derive(Debug, Clone)]
pub struct PkiSettings {
    /// The SPIFFE trust domain of this deployment.
    pub trust_domain: TrustDomain,
    /// Lifetime of agent certificates.
    pub agent_ttl: Duration,
    /// Lifetime of org intermediates.
    pub org_ca_validity: Duration,
    /// Lifetime of the platform root.
    pub root_validity: Duration,
    /// How long a CRL is valid (its `nextUpdate`).
    pub crl_validity: Duration,
}

impl PkiSettings {
    /// Defaults for `trust_domain`: 24 h agents, 5-year intermediates, 10-year root, 24 h CRLs.
    pub fn new(trust_domain: TrustDomain) -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self {
            trust_domain,
            agent_ttl: coffer_pki::DEFAULT_AGENT_TTL,
            org_ca_validity: Duration::from_secs(5 * 365 * DAY),
            root_validity: Duration::from_secs(10 * 365 * DAY),
            crl_validity: Duration::from_secs(DAY),
        }
    }
}

/// The CAs, unwrapped on first use.
pub struct Pki {
    settings: PkiSettings,
    kms: Arc<dyn Kms>,
    // Unwrapped CAs by org (the root under the platform org); filled on first use, never
    // changed afterwards (a CA is created once per org).
    cache: RwLock<HashMap<OrgId, Arc<CertificateAuthority>>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn pki_error(e: coffer_pki::Error) -> Error {
    match e {
        coffer_pki::Error::Kms(e) => Error::Unavailable(format!("ca key: {e}")),
        other => Error::FailedPrecondition(other.to_string()),
    }
}

impl Pki {
    /// The hierarchy with these settings, wrapping and unwrapping through `kms`.
    pub fn new(settings: PkiSettings, kms: Arc<dyn Kms>) -> Self {
        Self {
            settings,
            kms,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &PkiSettings {
        &self.settings
    }

    /// The KMS.
    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    fn cached(&self, org: OrgId) -> Option<Arc<CertificateAuthority>> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&org)
            .cloned()
    }

    /// The CA of `tx`'s org (the root in the platform org), loaded and unwrapped once.
    pub async fn ca(&self, tx: &mut TenantTx) -> Result<Arc<CertificateAuthority>, Error> {
        let org = tx.org();
        if let Some(ca) = self.cached(org) {
            return Ok(ca);
        }
        let row = store::certificate_authority(tx).await?.ok_or_else(|| {
            if org == OrgId::PLATFORM {
                Error::FailedPrecondition(
                    "the platform root CA does not exist; run `coffer admin init`".to_owned(),
                )
            } else {
                Error::NotFound("org certificate authority")
            }
        })?;
        let role = if org == OrgId::PLATFORM {
            CaRole::PlatformRoot
        } else {
            CaRole::Org(org)
        };
        let wrapped = WrappedKey {
            key_id: KeyId::new(row.kms_key_id),
            ciphertext: row.wrapped_private_key,
        };
        let ca = CertificateAuthority::from_wrapped_key(
            self.kms.as_ref(),
            role,
            &self.settings.trust_domain,
            &row.certificate_der,
            &wrapped,
        )
        .await
        .map_err(pki_error)?;
        let ca = Arc::new(ca);
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(org, ca.clone());
        Ok(ca)
    }

    /// The platform root.
    pub async fn root(&self, store: &EventStore) -> Result<Arc<CertificateAuthority>, Error> {
        if let Some(ca) = self.cached(OrgId::PLATFORM) {
            return Ok(ca);
        }
        let mut tx = store.db().begin_tenant(OrgId::PLATFORM).await?;
        self.ca(&mut tx).await
    }

    /// Creates the platform root (in the platform org), unless it exists.
    pub async fn create_root(&self, store: &EventStore, actor: &Actor) -> Result<(), Error> {
        let mut tx = store.db().begin_tenant(OrgId::PLATFORM).await?;
        if store::certificate_authority(&mut tx).await?.is_some() {
            return Ok(());
        }
        let root = CertificateAuthority::create_root(
            &self.settings.trust_domain,
            Utc::now(),
            self.settings.root_validity,
        )
        .map_err(pki_error)?;
        self.record(store, &mut tx, CaKind::Root, &root, actor)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates `tx`'s org's intermediate inside `tx` (the org's creation).
    pub async fn create_org_ca(
        &self,
        store: &EventStore,
        tx: &mut TenantTx,
        actor: &Actor,
    ) -> Result<(), Error> {
        let root = self.root(store).await?;
        let ca = root
            .create_org_intermediate(tx.org(), Utc::now(), self.settings.org_ca_validity)
            .map_err(pki_error)?;
        self.record(store, tx, CaKind::Org, &ca, actor).await
    }

    async fn record(
        &self,
        store: &EventStore,
        tx: &mut TenantTx,
        kind: CaKind,
        ca: &CertificateAuthority,
        actor: &Actor,
    ) -> Result<(), Error> {
        let wrapped = ca.wrap_key(self.kms.as_ref()).await.map_err(pki_error)?;
        let command = CaCommand::CreateCa {
            kind,
            certificate_der: ca.certificate_der().to_vec(),
            wrapped_private_key: wrapped.ciphertext,
            kms_key_id: wrapped.key_id.as_str().to_owned(),
        };
        store
            .execute_in::<Ca>(tx, AggregateId::new(), actor, command)
            .await
            .map_err(|e| match e {
                ExecuteError::Rejected(CaError::Invalid(f)) => Error::Invalid(f),
                ExecuteError::Rejected(e @ CaError::AlreadyExists) => {
                    Error::AlreadyExists(e.to_string())
                }
                ExecuteError::Store(s) => Error::Store(s),
            })?;
        Ok(())
    }

    /// The org's current CRL, signed by its intermediate.
    pub async fn crl(&self, tx: &mut TenantTx, now: DateTime<Utc>) -> Result<Crl, Error> {
        let ca = self.ca(tx).await?;
        let revoked = store::revoked_certificates(tx, now)
            .await?
            .into_iter()
            .map(|(serial, revoked_at)| {
                let serial: Serial = serial.parse().map_err(|_| {
                    Error::FailedPrecondition(format!("stored serial {serial} is not hex"))
                })?;
                Ok(RevokedCertificate { serial, revoked_at })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // Each CRL gets a larger number than the last: its issue time in milliseconds.
        let number = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        ca.sign_crl(&revoked, number, now, self.settings.crl_validity)
            .map_err(pki_error)
    }
}
