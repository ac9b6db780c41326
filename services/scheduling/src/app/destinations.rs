//! Storage destinations: register, change, get, list, remove, and probe again.
//!
//! A destination is checked and probed before anything is written: the fields (the
//! aggregate's rules), the SSRF guard on the endpoint or the local path (a refusal is
//! InvalidArgument naming `endpoint` or `path`), then a real probe (list, write, read back,
//! delete) whose failure is FailedPrecondition `probe failed at <step>: <cause>`. The access key
//! of an S3 destination comes from the credentials service through [`StorageKeys`] for the one
//! probe and lives in memory only for it; scheduling stores only its vault reference.

use std::sync::Arc;

use coffer_storage::{EndpointError, Guard, Location, Policy, S3Key, Store};
use coffer_types::{Actor, AggregateId, OrgId, VaultRef};

use super::{Error, Scheduling};
use crate::domain::FieldError;
use crate::domain::destination::{
    Destination, DestinationCommand, DestinationError, DestinationFields, DestinationSpec, Kind,
};
use crate::store::destinations::{self as store, DestinationView};
use coffer_eventstore::ExecuteError;

/// Why scheduling asks for a storage key (recorded in the credentials service's release event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Probing a destination before it is saved, or again on request.
    DestinationProbe,
    /// Deleting expired backups.
    Retention,
}

impl KeyPurpose {
    /// `destination_probe` or `retention`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::DestinationProbe => "destination_probe",
            KeyPurpose::Retention => "retention",
        }
    }
}

/// A storage key could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The reference names no usable storage credential (FailedPrecondition); the message
    /// names `access_key_vault_ref`.
    #[error("{0}")]
    Precondition(String),
    /// The credentials service cannot answer now (Unavailable).
    #[error("{0}")]
    Unavailable(String),
}

/// Where scheduling gets a destination's access key without holding secrets at rest: the
/// credentials service releases the current value of a `storage` credential, committing the
/// release as an event first (P3). The key lives in memory only for the call that needs it.
#[async_trait::async_trait]
pub trait StorageKeys: std::fmt::Debug + Send + Sync {
    /// The S3 key `vault_ref` (a credential of `org`) holds, released for `purpose` on
    /// `destination`.
    async fn storage_key(
        &self,
        org: OrgId,
        vault_ref: VaultRef,
        purpose: KeyPurpose,
        destination: uuid::Uuid,
    ) -> Result<S3Key, KeyError>;
}

/// What destinations need from the deployment: the SSRF guard (policy and resolver) and where
/// access keys come from (none when the credentials target runs in another process).
#[derive(Debug, Clone)]
pub struct StorageAccess {
    guard: Guard,
    keys: Option<Arc<dyn StorageKeys>>,
}

impl Default for StorageAccess {
    /// Refuses every guarded address class and every local path, and has no access keys.
    fn default() -> Self {
        Self {
            guard: Guard::new(Policy::default()),
            keys: None,
        }
    }
}

impl StorageAccess {
    /// `guard` for endpoints and paths, `keys` for access keys.
    pub fn new(guard: Guard, keys: Option<Arc<dyn StorageKeys>>) -> Self {
        Self { guard, keys }
    }
}

impl From<ExecuteError<DestinationError>> for Error {
    fn from(e: ExecuteError<DestinationError>) -> Self {
        match e {
            ExecuteError::Rejected(DestinationError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(DestinationError::NotFound) => Error::NotFound("destination"),
            ExecuteError::Rejected(e @ DestinationError::AlreadyExists) => {
                Error::AlreadyExists(e.to_string())
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

/// Where a destination's objects live, for `coffer_storage`.
pub fn location(spec: &DestinationSpec) -> Location {
    match &spec.kind {
        Kind::S3(s3) => Location::S3 {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            path_style: s3.path_style,
        },
        Kind::Local { path } => Location::Local { root: path.clone() },
    }
}

fn destination_aggregate(id: uuid::Uuid) -> AggregateId {
    AggregateId::from(id)
}

fn name_conflict(name: &str) -> Error {
    Error::AlreadyExists(format!(
        "name {name} is taken by another destination of the org"
    ))
}

/// Whether a guard refusal is about the request's own fields (InvalidArgument) or about a
/// saved destination the deployment's policy no longer allows (FailedPrecondition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probing {
    Request,
    Saved,
}

impl Probing {
    fn refused(self, refused: coffer_storage::Refused) -> Error {
        match self {
            Probing::Request => Error::Invalid(FieldError::new(refused.field, refused.rule)),
            Probing::Saved => Error::FailedPrecondition(refused.to_string()),
        }
    }
}

impl Scheduling {
    /// Probes, then registers a destination of `org`.
    pub async fn register_destination(
        &self,
        actor: &Actor,
        org: OrgId,
        fields: DestinationFields,
    ) -> Result<DestinationView, Error> {
        let id = uuid::Uuid::now_v7();
        let command = DestinationCommand::RegisterDestination {
            org,
            fields: fields.clone(),
        };
        self.write_destination(actor, org, id, &fields, command)
            .await
    }

    /// Probes the new fields, then replaces every field of a destination of `org`.
    pub async fn change_destination(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        fields: DestinationFields,
    ) -> Result<DestinationView, Error> {
        let command = DestinationCommand::ChangeDestination {
            org,
            fields: fields.clone(),
        };
        self.write_destination(actor, org, id, &fields, command)
            .await
    }

    /// The checks that need no I/O outside Postgres (fields, existence, name), the probe, then
    /// the command in one tenant transaction that checks existence and the name again (the
    /// probe took time; another request may have taken the name meanwhile).
    #[tracing::instrument(skip_all, fields(org_id = %org, destination_id = %id))]
    async fn write_destination(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        fields: &DestinationFields,
        command: DestinationCommand,
    ) -> Result<DestinationView, Error> {
        let spec = DestinationSpec::check(org, fields)?;
        let change = matches!(command, DestinationCommand::ChangeDestination { .. });
        let precheck = async |tx: &mut coffer_db::TenantTx| {
            if change && store::destination(tx, id).await?.is_none() {
                return Err(Error::NotFound("destination"));
            }
            if store::name_taken(tx, &spec.name, id).await? {
                return Err(name_conflict(&spec.name));
            }
            Ok::<_, Error>(())
        };
        {
            let mut tx = self.begin(org).await?;
            precheck(&mut tx).await?;
        }
        self.probe_spec(org, id, &spec, Probing::Request).await?;
        let mut tx = self.begin(org).await?;
        precheck(&mut tx).await?;
        self.store
            .execute_in::<Destination>(&mut tx, destination_aggregate(id), actor, command)
            .await?;
        let view = store::destination(&mut tx, id)
            .await?
            .expect("written in this transaction");
        tx.commit().await?;
        tracing::info!(
            kind = view.spec.kind.as_str(),
            version = view.version,
            "destination saved"
        );
        Ok(view)
    }

    /// The SSRF guard at save time, the access key, then the probe through a store whose
    /// connections the guard checks again.
    async fn probe_spec(
        &self,
        org: OrgId,
        id: uuid::Uuid,
        spec: &DestinationSpec,
        probing: Probing,
    ) -> Result<(), Error> {
        let store = self
            .open_store(org, id, spec, KeyPurpose::DestinationProbe, probing)
            .await?;
        store.probe().await.map_err(|e| {
            tracing::info!(step = %e.step, cause = %e.cause, "destination probe failed");
            match e.cause {
                coffer_storage::Error::Refused(r) => probing.refused(r),
                _ => Error::FailedPrecondition(e.to_string()),
            }
        })
    }

    /// A handle on destination `id` of `org` for retention's deletions: the SSRF guard, then
    /// the access key released for `retention`.
    pub(crate) async fn open_for_retention(
        &self,
        org: OrgId,
        id: uuid::Uuid,
        spec: &DestinationSpec,
    ) -> Result<Store, Error> {
        self.open_store(org, id, spec, KeyPurpose::Retention, Probing::Saved)
            .await
    }

    /// The SSRF guard at open time, then the access key released for `purpose`, then a store
    /// whose every connection the guard checks again.
    async fn open_store(
        &self,
        org: OrgId,
        id: uuid::Uuid,
        spec: &DestinationSpec,
        purpose: KeyPurpose,
        probing: Probing,
    ) -> Result<Store, Error> {
        let access = &self.storage;
        let location = location(spec);
        match &location {
            Location::S3 { endpoint, .. } => {
                access
                    .guard
                    .check_endpoint(endpoint)
                    .await
                    .map_err(|e| match e {
                        EndpointError::Refused(r) => probing.refused(r),
                        // Well-formed but unreachable: the world, not the request, is at fault.
                        unresolved @ EndpointError::Unresolved { .. } => {
                            Error::FailedPrecondition(unresolved.to_string())
                        }
                    })?
            }
            Location::Local { root } => access
                .guard
                .check_local_path(root)
                .map_err(|r| probing.refused(r))?,
        }
        let key = match &spec.kind {
            Kind::S3(s3) => {
                let keys = access.keys.as_ref().ok_or_else(|| {
                    Error::Unavailable(
                        "S3 destinations need the credentials target in the same process as \
                         scheduling (coffer serve --target all); this deployment runs them apart"
                            .into(),
                    )
                })?;
                let key = keys
                    .storage_key(org, s3.access_key_vault_ref, purpose, id)
                    .await
                    .map_err(|e| match e {
                        KeyError::Precondition(m) => Error::FailedPrecondition(m),
                        KeyError::Unavailable(m) => Error::Unavailable(m),
                    })?;
                Some(key)
            }
            Kind::Local { .. } => None,
        };
        Store::open(&location, key, &access.guard)
            .await
            .map_err(|e| match e {
                coffer_storage::OpenError::Refused(r) => probing.refused(r),
                e @ coffer_storage::OpenError::MissingKey => {
                    Error::FailedPrecondition(e.to_string())
                }
            })
    }

    /// Removes a destination of `org`.
    pub async fn remove_destination(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        reason: &str,
    ) -> Result<(), Error> {
        let mut tx = self.begin(org).await?;
        let command = DestinationCommand::RemoveDestination {
            reason: reason.to_owned(),
        };
        self.store
            .execute_in::<Destination>(&mut tx, destination_aggregate(id), actor, command)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One live destination of `org`.
    pub async fn get_destination(
        &self,
        org: OrgId,
        id: uuid::Uuid,
    ) -> Result<DestinationView, Error> {
        let mut tx = self.begin(org).await?;
        store::destination(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("destination"))
    }

    /// Every live destination of `org`, by name.
    pub async fn list_destinations(&self, org: OrgId) -> Result<Vec<DestinationView>, Error> {
        let mut tx = self.begin(org).await?;
        Ok(store::destinations(&mut tx).await?)
    }

    /// Probes a saved destination of `org` again; changes nothing in scheduling.
    #[tracing::instrument(skip_all, fields(org_id = %org, destination_id = %id))]
    pub async fn probe_destination(
        &self,
        org: OrgId,
        id: uuid::Uuid,
    ) -> Result<DestinationView, Error> {
        let view = self.get_destination(org, id).await?;
        self.probe_spec(org, id, &view.spec, Probing::Saved).await?;
        Ok(view)
    }
}
