//! The credentials application: commands and queries over the vault and the org keys.
//!
//! Callers have already been authenticated and authorised for the RPC's permission by the
//! gRPC layer (`coffer_auth`'s table). KMS is called outside database transactions, so a slow
//! KMS never holds a connection, and every consequential action commits its event before its
//! result leaves this layer (P3).

mod service_release;

use std::sync::Arc;

pub use service_release::ServiceReleaseRequest;

use age_core::format::FileKey;
use coffer_db::TenantTx;
use coffer_eventstore::{EventStore, ExecuteError, Projection};
use coffer_kms::{Kms, WrappedKey};
use coffer_types::{Actor, AggregateId, OrgId};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::age_key;
use crate::domain::FieldError;
use crate::domain::credential::{
    Credential, CredentialCommand, CredentialError, Purpose, ValueVersion, check_name,
    check_value_len,
};
use crate::domain::org_key::{OrgKey, OrgKeyCommand, OrgKeyError};
use crate::domain::release::{
    JobRelease, JobReleaseCommand, JobReleaseError, Released, release_id,
};
use crate::envelope::{self, ValueSlot};
use crate::file_key;
use crate::store::{self, CredentialView, OrgKeyView, StoredValue};
use crate::vault_ref::VaultRef;
use coffer_auth::published::PublishedKeys;
use coffer_auth::ticket::JobTicket;
use coffer_types::AgentId;

/// Why a credentials request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such thing in the caller's org (NotFound). Another org's things are reported the
    /// same way.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It exists already (AlreadyExists).
    #[error("{0}")]
    AlreadyExists(String),
    /// Another change got there first (Aborted).
    #[error("{0}")]
    Conflict(String),
    /// KMS, or something generated asynchronously, is not available yet (Unavailable). Nothing
    /// was stored or released.
    #[error("{0}")]
    Unavailable(String),
    /// KMS refused to unwrap a stored key, or stored material does not verify (Internal). Logged
    /// where it is turned into a status; the caller learns nothing more.
    #[error("stored key material cannot be used: {0}")]
    Integrity(String),
    /// A job ticket was refused: forged, expired, another agent's, another org's
    /// (PermissionDenied). Nothing was released.
    #[error("{0}")]
    TicketRefused(String),
    /// The state forbids it (FailedPrecondition), e.g. a job attempt released already.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] coffer_eventstore::Error),
}

impl From<coffer_db::Error> for Error {
    fn from(e: coffer_db::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(coffer_db::Error::from(e).into())
    }
}

impl From<coffer_kms::Error> for Error {
    fn from(e: coffer_kms::Error) -> Self {
        match e {
            coffer_kms::Error::Unavailable(_) => {
                Error::Unavailable("kms is unavailable; nothing was stored or released".into())
            }
            other => Error::Integrity(other.to_string()),
        }
    }
}

impl From<ExecuteError<CredentialError>> for Error {
    fn from(e: ExecuteError<CredentialError>) -> Self {
        match e {
            ExecuteError::Rejected(CredentialError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(CredentialError::NotFound) => Error::NotFound("credential"),
            ExecuteError::Rejected(e @ CredentialError::AlreadyExists) => {
                Error::AlreadyExists(e.to_string())
            }
            ExecuteError::Rejected(e @ CredentialError::VersionMismatch) => {
                Error::Conflict(e.to_string())
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

impl From<ExecuteError<OrgKeyError>> for Error {
    fn from(e: ExecuteError<OrgKeyError>) -> Self {
        match e {
            ExecuteError::Rejected(OrgKeyError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(OrgKeyError::NotFound) => not_generated(),
            ExecuteError::Rejected(e @ OrgKeyError::AlreadyExists) => {
                Error::AlreadyExists(e.to_string())
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

impl From<ExecuteError<JobReleaseError>> for Error {
    fn from(e: ExecuteError<JobReleaseError>) -> Self {
        match e {
            ExecuteError::Rejected(
                e @ (JobReleaseError::AlreadyReleased | JobReleaseError::AlreadyUnwrapped),
            ) => Error::FailedPrecondition(e.to_string()),
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

/// A live credential's metadata and its current stored version, in the transaction's org.
async fn current_value(
    tx: &mut TenantTx,
    id: uuid::Uuid,
) -> Result<Option<(CredentialView, StoredValue)>, Error> {
    let Some(view) = store::credential(tx, id).await? else {
        return Ok(None);
    };
    let stored = store::value(tx, id, view.version).await?;
    Ok(stored.map(|stored| (view, stored)))
}

/// The actor of what an agent does with its ticket.
fn agent_actor(agent: AgentId, org: OrgId) -> Actor {
    coffer_auth::Principal::Agent {
        agent_id: agent,
        org,
    }
    .actor()
}

/// The vault references a ticket names, each checked to be a well-formed reference of `org`.
fn vault_refs(ticket: &JobTicket, org: OrgId) -> Result<Vec<VaultRef>, Error> {
    let mut refs = Vec::with_capacity(ticket.vault_refs.len());
    for (i, text) in ticket.vault_refs.iter().enumerate() {
        let parsed: VaultRef = text.parse().map_err(|_| {
            Error::TicketRefused(format!(
                "job ticket vault_refs[{i}] must be vault:coffer/<org_id>/<credential_id>"
            ))
        })?;
        if parsed.org != org {
            return Err(Error::TicketRefused(format!(
                "job ticket vault_refs[{i}] is not a credential of the ticket's org"
            )));
        }
        refs.push(parsed);
    }
    Ok(refs)
}

fn not_generated() -> Error {
    Error::Unavailable("the org key has not been generated yet; retry shortly".into())
}

/// A plaintext credential value, as it arrives: never printed, zeroed on drop.
pub type Value = SecretSlice<u8>;

/// The org's exported private key and its recipient.
#[derive(Debug)]
pub struct RecoveryKey {
    /// The org.
    pub org_id: OrgId,
    /// `age1…`.
    pub recipient: String,
    /// `AGE-SECRET-KEY-1…`.
    pub identity: SecretString,
}

/// One released credential: its reference, version, purpose and value.
#[derive(Debug)]
pub struct ReleasedValue {
    /// `vault:coffer/<org>/<credential>`.
    pub vault_ref: VaultRef,
    /// The version released.
    pub version: u32,
    /// What it is for.
    pub purpose: Purpose,
    /// The value.
    pub value: Value,
}

/// A backup's file key, unwrapped for a restore job attempt.
pub struct UnwrappedFileKey {
    /// The ticket it was unwrapped for.
    pub ticket: JobTicket,
    /// SHA-256 of the backup's age header, lowercase hex.
    pub header_sha256: String,
    /// The 16-byte file key; zeroed on drop, never printed.
    pub file_key: FileKey,
}

impl std::fmt::Debug for UnwrappedFileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnwrappedFileKey")
            .field("job_id", &self.ticket.job_id)
            .field("attempt", &self.ticket.attempt)
            .field("header_sha256", &self.header_sha256)
            .field("file_key", &"[REDACTED]")
            .finish()
    }
}

/// The projections this service maintains (also used by `coffer admin rebuild-projections`).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(store::Credentials), Arc::new(store::OrgKeys)]
}

/// The credentials service's application layer.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub(crate) store: EventStore,
    pub(crate) kms: Arc<dyn Kms>,
    /// Job-ticket keys as scheduling published them; without them no ticket verifies.
    pub(crate) tickets: Option<Arc<PublishedKeys>>,
    /// Held while this process runs a master-key rotation.
    pub(crate) rotation_lock: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the rotation worker when a rotation starts.
    pub(crate) rotation_wake: Arc<tokio::sync::Notify>,
}

/// The aggregate id of a credential: its credential id.
fn credential_aggregate(id: uuid::Uuid) -> AggregateId {
    AggregateId::from(id)
}

/// The aggregate id of an org's key pair: the org id.
fn org_key_aggregate(org: OrgId) -> AggregateId {
    AggregateId::from(*org.as_uuid())
}

impl Credentials {
    /// The application over the service's database, wrapping keys with `kms`.
    pub fn new(db: coffer_db::Database, kms: Arc<dyn Kms>) -> Self {
        Self {
            store: EventStore::new(db, projections()),
            kms,
            tickets: None,
            rotation_lock: Arc::default(),
            rotation_wake: Arc::default(),
        }
    }

    /// The same application, verifying job tickets against the keys published in `keys`.
    pub fn with_ticket_keys(mut self, keys: Arc<PublishedKeys>) -> Self {
        self.tickets = Some(keys);
        self
    }

    pub(crate) async fn begin(&self, org: OrgId) -> Result<TenantTx, Error> {
        Ok(self.store.db().begin_tenant(org).await?)
    }

    /// Encrypts `value` as `version` of `credential` under a fresh data key.
    async fn encrypt(&self, slot: ValueSlot, value: &Value) -> Result<StoredValue, Error> {
        let dek = self.kms.generate_data_key(&slot.kms_context()?).await?;
        let sealed = envelope::seal(&dek.plaintext, slot, value.expose_secret());
        Ok(StoredValue {
            wrapped_dek: dek.wrapped,
            sealed,
        })
    }

    /// Stores a new credential with its first value.
    pub async fn create_credential(
        &self,
        actor: &Actor,
        org: OrgId,
        name: &str,
        purpose: Purpose,
        value: Value,
    ) -> Result<CredentialView, Error> {
        let name = check_name(name)?;
        let value_bytes = check_value_len(value.expose_secret().len())?;
        let id = uuid::Uuid::now_v7();
        let slot = ValueSlot {
            org,
            credential: id,
            version: 1,
        };
        let stored = self.encrypt(slot, &value).await?;
        drop(value);

        let mut tx = self.begin(org).await?;
        if store::name_taken(&mut tx, &name).await? {
            return Err(Error::AlreadyExists(format!(
                "a credential named {name} already exists"
            )));
        }
        let command = CredentialCommand::CreateCredential {
            name,
            purpose,
            value: ValueVersion {
                version: 1,
                value_bytes,
                kms_key_id: stored.wrapped_dek.key_id.as_str().to_owned(),
            },
        };
        self.store
            .execute_in::<Credential>(&mut tx, credential_aggregate(id), actor, command)
            .await?;
        store::insert_value(&mut tx, org, id, 1, &stored).await?;
        let view = store::credential(&mut tx, id)
            .await?
            .expect("written in this transaction");
        tx.commit().await?;
        Ok(view)
    }

    /// Stores a new version of a credential's value.
    pub async fn replace_value(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        value: Value,
    ) -> Result<CredentialView, Error> {
        let value_bytes = check_value_len(value.expose_secret().len())?;
        let current = {
            let mut tx = self.begin(org).await?;
            store::credential(&mut tx, id)
                .await?
                .ok_or(Error::NotFound("credential"))?
        };
        let version = current.version + 1;
        let slot = ValueSlot {
            org,
            credential: id,
            version,
        };
        let stored = self.encrypt(slot, &value).await?;
        drop(value);

        let mut tx = self.begin(org).await?;
        let command = CredentialCommand::ReplaceValue {
            value: ValueVersion {
                version,
                value_bytes,
                kms_key_id: stored.wrapped_dek.key_id.as_str().to_owned(),
            },
        };
        // The aggregate refuses any version but the next, so two concurrent replacements
        // cannot both store the same version number.
        self.store
            .execute_in::<Credential>(&mut tx, credential_aggregate(id), actor, command)
            .await?;
        store::insert_value(&mut tx, org, id, version, &stored).await?;
        let view = store::credential(&mut tx, id)
            .await?
            .expect("written in this transaction");
        tx.commit().await?;
        Ok(view)
    }

    /// Deletes a credential and destroys every stored version of its value.
    pub async fn delete_credential(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        reason: &str,
    ) -> Result<(), Error> {
        let mut tx = self.begin(org).await?;
        let command = CredentialCommand::DeleteCredential {
            reason: reason.to_owned(),
        };
        self.store
            .execute_in::<Credential>(&mut tx, credential_aggregate(id), actor, command)
            .await?;
        store::delete_values(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One credential's metadata.
    pub async fn get_credential(
        &self,
        org: OrgId,
        id: uuid::Uuid,
    ) -> Result<CredentialView, Error> {
        let mut tx = self.begin(org).await?;
        store::credential(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("credential"))
    }

    /// Every live credential's metadata.
    pub async fn list_credentials(&self, org: OrgId) -> Result<Vec<CredentialView>, Error> {
        let mut tx = self.begin(org).await?;
        Ok(store::credentials(&mut tx).await?)
    }

    /// Decrypts the current value of a credential. For the release path only: no RPC hands
    /// a value back to a user.
    pub async fn decrypt_current(&self, org: OrgId, id: uuid::Uuid) -> Result<Value, Error> {
        Ok(self.decrypt_current_version(org, id).await?.1)
    }

    async fn decrypt_current_version(
        &self,
        org: OrgId,
        id: uuid::Uuid,
    ) -> Result<(CredentialView, Value), Error> {
        let (view, stored) = {
            let mut tx = self.begin(org).await?;
            current_value(&mut tx, id)
                .await?
                .ok_or(Error::NotFound("credential"))?
        };
        let value = self.open(org, &view, &stored).await?;
        Ok((view, value))
    }

    /// Unwraps a stored version's data key through KMS and opens the value.
    async fn open(
        &self,
        org: OrgId,
        view: &CredentialView,
        stored: &StoredValue,
    ) -> Result<Value, Error> {
        let slot = ValueSlot {
            org,
            credential: view.credential_id,
            version: view.version,
        };
        let dek = self
            .kms
            .decrypt(&stored.wrapped_dek, &slot.kms_context()?)
            .await?;
        envelope::open(&dek, slot, &stored.sealed).map_err(|e| Error::Integrity(e.to_string()))
    }

    /// Releases to `agent` of `org` the credentials its job `ticket` names, once per job
    /// attempt. Checks, in order: the ticket's signature and expiry, that it was issued to
    /// this agent of this org, that every reference is a well-formed reference of that org.
    /// Then decrypts every value, commits `CredentialsReleased`, and only then returns them
    /// (P3): if the commit fails, the values are dropped (and zeroed) unsent.
    pub async fn release(
        &self,
        agent: AgentId,
        org: OrgId,
        ticket: &str,
    ) -> Result<(JobTicket, Vec<ReleasedValue>), Error> {
        let ticket = self.verify_ticket(agent, org, ticket)?;
        let refs = vault_refs(&ticket, org)?;

        // One read for the attempt's state and every referenced version; KMS is called only
        // after it, outside any transaction, and not at all for a spent attempt.
        let release = AggregateId::from(release_id(ticket.job_id, ticket.attempt));
        let (spent, stored) = {
            let mut tx = self.begin(org).await?;
            let (state, _) = self.store.load::<JobRelease>(&mut tx, release).await?;
            let mut stored = Vec::with_capacity(refs.len());
            for vault_ref in refs {
                let (view, value) = current_value(&mut tx, vault_ref.credential)
                    .await?
                    .ok_or_else(|| {
                        Error::FailedPrecondition(format!(
                            "{vault_ref} named by the job ticket does not exist"
                        ))
                    })?;
                stored.push((vault_ref, view, value));
            }
            (state.released, stored)
        };
        if spent {
            return Err(Error::FailedPrecondition(
                JobReleaseError::AlreadyReleased.to_string(),
            ));
        }
        let mut released = Vec::with_capacity(stored.len());
        for (vault_ref, view, value) in &stored {
            released.push(ReleasedValue {
                vault_ref: *vault_ref,
                version: view.version,
                purpose: view.purpose,
                value: self.open(org, view, value).await?,
            });
        }

        let mut tx = self.begin(org).await?;
        let command = JobReleaseCommand::ReleaseCredentials {
            job_id: ticket.job_id,
            attempt: ticket.attempt,
            agent_id: agent,
            credentials: released
                .iter()
                .map(|r| Released {
                    vault_ref: r.vault_ref.to_string(),
                    version: r.version,
                })
                .collect(),
        };
        self.store
            .execute_in::<JobRelease>(&mut tx, release, &agent_actor(agent, org), command)
            .await?;
        tx.commit().await?;
        Ok((ticket, released))
    }

    /// Verifies a job ticket and that it was issued to `agent` of `org`.
    fn verify_ticket(&self, agent: AgentId, org: OrgId, ticket: &str) -> Result<JobTicket, Error> {
        let keys = self
            .tickets
            .as_ref()
            .ok_or_else(|| Error::Unavailable("no job-ticket keys are configured".into()))?;
        let ticket = keys
            .verify_ticket(ticket)
            .map_err(|e| Error::TicketRefused(e.to_string()))?;
        if ticket.org_id != org || ticket.agent_id != agent {
            return Err(Error::TicketRefused(
                "job ticket was issued to another agent".into(),
            ));
        }
        Ok(ticket)
    }

    /// Unwraps the org's private key through KMS.
    async fn org_identity(&self, org: OrgId, wrapped: &WrappedKey) -> Result<SecretString, Error> {
        age_key::unwrap(self.kms.as_ref(), org, wrapped)
            .await
            .map_err(|e| match e {
                age_key::UnwrapError::Kms(e) => Error::from(e),
                corrupt @ age_key::UnwrapError::Corrupt => Error::Integrity(corrupt.to_string()),
            })
    }

    /// Managed restore: unwraps, for `agent` of `org`, the file key of the backup whose age
    /// `header` its restore `ticket` names, once per job attempt and backup. Checks the ticket
    /// (as [`Credentials::release`] does) and that it lists SHA-256(header), unwraps the org's
    /// private key through KMS, unwraps the file key and checks the header MAC with it, then
    /// commits `FileKeyUnwrapped`, and only then returns the key (P3). The org's private key is
    /// zeroed before the commit; the file key is zeroed when the caller drops it.
    pub async fn unwrap_file_key(
        &self,
        agent: AgentId,
        org: OrgId,
        ticket: &str,
        header: &[u8],
    ) -> Result<UnwrappedFileKey, Error> {
        let ticket = self.verify_ticket(agent, org, ticket)?;
        let header_sha256 = file_key::digest(header);
        if !ticket.file_key_headers.contains(&header_sha256) {
            return Err(Error::TicketRefused(
                "job ticket does not name this backup in file_key_headers".into(),
            ));
        }
        let release = AggregateId::from(release_id(ticket.job_id, ticket.attempt));
        let (state, wrapped) = {
            let mut tx = self.begin(org).await?;
            let (state, _) = self.store.load::<JobRelease>(&mut tx, release).await?;
            let wrapped = store::org_key_secret(&mut tx)
                .await?
                .ok_or_else(not_generated)?;
            (state, wrapped)
        };
        if state.unwrapped.contains(&header_sha256) {
            return Err(Error::FailedPrecondition(
                JobReleaseError::AlreadyUnwrapped.to_string(),
            ));
        }
        let identity = self.org_identity(org, &wrapped).await?;
        let file_key = file_key::unwrap(&identity, header)
            .map_err(|e| FieldError::new("header", e.to_string()))?;
        drop(identity);

        let mut tx = self.begin(org).await?;
        let command = JobReleaseCommand::UnwrapFileKey {
            job_id: ticket.job_id,
            attempt: ticket.attempt,
            agent_id: agent,
            header_sha256: header_sha256.clone(),
        };
        self.store
            .execute_in::<JobRelease>(&mut tx, release, &agent_actor(agent, org), command)
            .await?;
        tx.commit().await?;
        Ok(UnwrappedFileKey {
            ticket,
            header_sha256,
            file_key,
        })
    }

    /// The org's public recipient.
    pub async fn org_recipient(&self, org: OrgId) -> Result<OrgKeyView, Error> {
        let mut tx = self.begin(org).await?;
        store::org_key(&mut tx).await?.ok_or_else(not_generated)
    }

    /// Generates the org's key pair unless it has one; runs in the caller's transaction (the
    /// `OrgCreated` consumer's). Returns whether a key was generated.
    pub async fn ensure_org_key(
        &self,
        tx: &mut TenantTx,
        org: OrgId,
        actor: &Actor,
    ) -> Result<bool, Error> {
        let (existing, _) = self
            .store
            .load::<OrgKey>(tx, org_key_aggregate(org))
            .await?;
        if existing.exists() {
            return Ok(false);
        }
        let key = age_key::generate();
        let wrapped = age_key::wrap(self.kms.as_ref(), org, &key.identity).await?;
        let command = OrgKeyCommand::GenerateOrgKey {
            recipient: key.recipient,
            kms_key_id: wrapped.key_id.as_str().to_owned(),
        };
        self.store
            .execute_in::<OrgKey>(tx, org_key_aggregate(org), actor, command)
            .await?;
        store::insert_org_key_secret(tx, org, &wrapped).await?;
        Ok(true)
    }

    /// Hands an owner the org's private key. The export is committed as an event before the
    /// key leaves this function (P3); if KMS or the commit fails, nothing is returned.
    pub async fn export_recovery_key(
        &self,
        actor: &Actor,
        org: OrgId,
        reason: &str,
    ) -> Result<RecoveryKey, Error> {
        let (view, wrapped) = {
            let mut tx = self.begin(org).await?;
            let view = store::org_key(&mut tx).await?.ok_or_else(not_generated)?;
            let wrapped = store::org_key_secret(&mut tx)
                .await?
                .ok_or_else(not_generated)?;
            (view, wrapped)
        };
        let identity = self.org_identity(org, &wrapped).await?;
        let mut tx = self.begin(org).await?;
        let command = OrgKeyCommand::ExportRecoveryKey {
            reason: reason.to_owned(),
        };
        self.store
            .execute_in::<OrgKey>(&mut tx, org_key_aggregate(org), actor, command)
            .await?;
        tx.commit().await?;
        Ok(RecoveryKey {
            org_id: org,
            recipient: view.recipient,
            identity,
        })
    }
}
