//! Reading the log: queries, entries with inclusion proofs, checkpoints, consistency proofs,
//! and the export bundle. Every read runs in the caller's org's tenant transaction.

use chrono::{DateTime, Utc};
use coffer_db::{Database, TenantTx};
use coffer_tlog::{Hash, NodeId};
use coffer_types::{FieldError, OrgId};
use tokio::sync::mpsc;

use crate::checkpoint::Checkpointer;
use crate::store::{self, CheckpointRow, EntryRow, Filter};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Nothing of that name in the caller's org (NotFound).
    #[error("{0} not found")]
    NotFound(String),
    /// A size or position beyond the log (OutOfRange).
    #[error("{0}")]
    OutOfRange(String),
    /// Not possible yet, e.g. no checkpoint issued so far (FailedPrecondition).
    #[error("{0}")]
    FailedPrecondition(String),
    /// KMS is unavailable (Unavailable).
    #[error("kms is unavailable")]
    KmsUnavailable,
    /// Stored log data is inconsistent, or KMS refused a stored key (Internal). Logged where
    /// it becomes a status.
    #[error("audit log data is inconsistent: {0}")]
    Corrupt(String),
    /// The database failed (Unavailable).
    #[error(transparent)]
    Db(#[from] coffer_db::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(e.into())
    }
}

impl From<coffer_kms::Error> for Error {
    fn from(e: coffer_kms::Error) -> Self {
        match e {
            coffer_kms::Error::Unavailable(_) => Error::KmsUnavailable,
            other => Error::Corrupt(format!("kms refused the checkpoint key: {other}")),
        }
    }
}

/// The largest page a query or listing returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    /// 1-based position.
    pub seq: u64,
    /// The leaf bytes: an encoded `AuditEntry`.
    pub leaf: Vec<u8>,
    /// SHA-256(0x00 || leaf).
    pub leaf_hash: Hash,
    /// h_seq.
    pub chain_hash: Hash,
    /// When the audit service appended it.
    pub appended_at: DateTime<Utc>,
}

impl From<EntryRow> for EntryView {
    fn from(r: EntryRow) -> Self {
        Self {
            seq: r.seq,
            leaf: r.leaf,
            leaf_hash: r.leaf_hash,
            chain_hash: r.chain_hash,
            appended_at: r.appended_at,
        }
    }
}

/// A checkpoint with the key that verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointView {
    /// The tree size it signs.
    pub size: u64,
    /// The RFC 9162 root of that tree.
    pub root: Hash,
    /// The C2SP signed note.
    pub signed_note: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// The note verifier key of the org's signing key.
    pub verifier_key: String,
}

/// What to look for. Every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Events that occurred at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred before this.
    pub to: Option<DateTime<Utc>>,
    /// `user`, `api_key`, `agent` or `service`.
    pub actor_kind: Option<String>,
    /// The actor's id; needs `actor_kind`.
    pub actor_id: Option<String>,
    /// The event type.
    pub action: Option<String>,
    /// The aggregate type.
    pub aggregate_type: Option<String>,
    /// The aggregate.
    pub aggregate_id: Option<uuid::Uuid>,
}

/// A page request: size and opaque token.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// 0 for the default.
    pub size: u32,
    /// Empty for the first page.
    pub token: String,
}

impl Page {
    fn limit(&self) -> Result<u32, FieldError> {
        match self.size {
            0 => Ok(DEFAULT_PAGE_SIZE),
            n if n > MAX_PAGE_SIZE => Err(FieldError::new(
                "page.page_size",
                format!("must be at most {MAX_PAGE_SIZE}, got {n}"),
            )),
            n => Ok(n),
        }
    }

    /// The position the token continues after.
    fn after(&self) -> Result<Option<u64>, FieldError> {
        if self.token.is_empty() {
            return Ok(None);
        }
        self.token
            .strip_prefix("s")
            .and_then(|n| n.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| FieldError::new("page.page_token", "is not a token this API issued"))
    }
}

fn token(position: u64) -> String {
    format!("s{position}")
}

/// An entry with its inclusion proof against a checkpoint.
#[derive(Debug, Clone)]
pub struct EntryProof {
    /// The entry.
    pub entry: EntryView,
    /// RFC 9162 PATH(seq - 1, tree of checkpoint.size).
    pub inclusion_proof: Vec<Hash>,
    /// The checkpoint proven against.
    pub checkpoint: CheckpointView,
}

/// A consistency proof and the two roots it links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    /// The older size.
    pub from_size: u64,
    /// The newer size.
    pub to_size: u64,
    /// Root at `from_size`.
    pub from_root: Hash,
    /// Root at `to_size`.
    pub to_root: Hash,
    /// RFC 9162 PROOF(from_size, tree of to_size).
    pub proof: Vec<Hash>,
}

/// What an export asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportRequest {
    /// The first entry; 0 or 1 for the whole log.
    pub from_seq: u64,
    /// The checkpoint size; `None` for the latest.
    pub tree_size: Option<u64>,
    /// Also prove consistency from this older size.
    pub consistency_from: Option<u64>,
}

/// The parts of an export bundle, in order.
#[derive(Debug, Clone)]
pub enum ExportPart {
    /// First.
    Header {
        /// The checkpoint exported up to.
        checkpoint: CheckpointView,
        /// The first entry.
        from_seq: u64,
        /// h_{from_seq - 1}.
        prior_chain_hash: Hash,
        /// The compact range of leaves [0, from_seq - 1).
        prior_subtrees: Vec<Hash>,
    },
    /// One per entry, in order.
    Entry(EntryView),
    /// Last.
    Trailer {
        /// Entries sent.
        entries: u64,
        /// Consistency proof from an older size, when asked for.
        consistency: Option<Consistency>,
    },
}

/// Entries fetched per round trip while exporting.
const EXPORT_BATCH: u32 = 1000;

/// The audit service's read side.
#[derive(Debug, Clone)]
pub struct Audit {
    db: Database,
    checkpointer: Checkpointer,
}

impl Audit {
    /// Reads through `db`; checkpoints are issued by `checkpointer`.
    pub fn new(db: Database, checkpointer: Checkpointer) -> Self {
        Self { db, checkpointer }
    }

    /// The checkpointer.
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// Entries matching `query`, oldest first, and the token of the next page.
    pub async fn query(
        &self,
        org: OrgId,
        query: Query,
        page: Page,
    ) -> Result<(Vec<EntryView>, Option<String>), Error> {
        let limit = page.limit()?;
        let after = page.after()?.unwrap_or(0);
        if let (Some(from), Some(to)) = (query.from, query.to)
            && to <= from
        {
            return Err(FieldError::new("to", "must be after from").into());
        }
        if query.actor_id.is_some() && query.actor_kind.is_none() {
            return Err(FieldError::new("actor_kind", "is required with actor_id").into());
        }
        if let Some(kind) = &query.actor_kind
            && kind.parse::<coffer_types::ActorKind>().is_err()
        {
            return Err(
                FieldError::new("actor_kind", "must be user, api_key, agent or service").into(),
            );
        }
        let filter = Filter {
            from: query.from,
            to: query.to,
            actor_kind: query.actor_kind,
            actor_id: query.actor_id,
            action: query.action,
            aggregate_type: query.aggregate_type,
            aggregate_id: query.aggregate_id,
        };
        let mut tx = self.db.begin_tenant(org).await?;
        let rows = store::query(&mut tx, &filter, after, limit).await?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| token(r.seq)))
            .flatten();
        Ok((rows.into_iter().map(EntryView::from).collect(), next))
    }

    /// Entry `seq` with its inclusion proof against the checkpoint of `tree_size` (the
    /// latest when `None`).
    pub async fn entry(
        &self,
        org: OrgId,
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<EntryProof, Error> {
        if seq == 0 {
            return Err(FieldError::new("seq", "must be at least 1").into());
        }
        let mut tx = self.db.begin_tenant(org).await?;
        let size = log_size(&mut tx).await?;
        if seq > size {
            return Err(Error::NotFound(format!("entry {seq}")));
        }
        let checkpoint = self.signed(&mut tx, tree_size, size).await?;
        if seq > checkpoint.size {
            return Err(Error::OutOfRange(format!(
                "entry {seq} is not in the checkpoint of size {}; ask for a later checkpoint",
                checkpoint.size
            )));
        }
        let entry = store::entry(&mut tx, seq)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("entry {seq} is missing below the head")))?;
        let ids = coffer_tlog::inclusion_nodes(seq - 1, checkpoint.size)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let nodes = store::nodes(&mut tx, &ids).await?;
        let proof =
            coffer_tlog::inclusion_proof(seq - 1, checkpoint.size, |id| nodes.get(&id).copied())
                .map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(EntryProof {
            entry: entry.into(),
            inclusion_proof: proof,
            checkpoint,
        })
    }

    /// The checkpoint of `size`, or the latest.
    pub async fn checkpoint(&self, org: OrgId, size: Option<u64>) -> Result<CheckpointView, Error> {
        let mut tx = self.db.begin_tenant(org).await?;
        let log = log_size(&mut tx).await?;
        self.signed(&mut tx, size, log).await
    }

    /// Checkpoints, newest first.
    pub async fn checkpoints(
        &self,
        org: OrgId,
        page: Page,
    ) -> Result<(Vec<CheckpointView>, Option<String>), Error> {
        let limit = page.limit()?;
        let before = page.after()?;
        let mut tx = self.db.begin_tenant(org).await?;
        let rows = store::checkpoints(&mut tx, before, limit).await?;
        let Some(verifier) = self.checkpointer.verifier(&mut tx).await? else {
            return Ok((Vec::new(), None));
        };
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| token(r.size)))
            .flatten();
        let vkey = verifier.to_vkey();
        Ok((
            rows.into_iter().map(|r| view(r, vkey.clone())).collect(),
            next,
        ))
    }

    /// The consistency proof from `from_size` to `to_size`.
    pub async fn consistency(
        &self,
        org: OrgId,
        from_size: u64,
        to_size: u64,
    ) -> Result<Consistency, Error> {
        if from_size == 0 {
            return Err(FieldError::new("from_size", "must be at least 1").into());
        }
        if to_size < from_size {
            return Err(FieldError::new("to_size", "must not be below from_size").into());
        }
        let mut tx = self.db.begin_tenant(org).await?;
        let size = log_size(&mut tx).await?;
        if to_size > size {
            return Err(Error::OutOfRange(format!(
                "to_size {to_size} is beyond the log, which has {size} entries"
            )));
        }
        consistency(&mut tx, from_size, to_size).await
    }

    /// Streams the export bundle's parts into `sink`, ending with the trailer or an error.
    /// Stops early if the receiver goes away.
    pub async fn export(
        &self,
        org: OrgId,
        request: ExportRequest,
        sink: mpsc::Sender<Result<ExportPart, Error>>,
    ) {
        if let Err(e) = self.export_into(org, request, &sink).await {
            let _ = sink.send(Err(e)).await;
        }
    }

    async fn export_into(
        &self,
        org: OrgId,
        request: ExportRequest,
        sink: &mpsc::Sender<Result<ExportPart, Error>>,
    ) -> Result<(), Error> {
        let from_seq = request.from_seq.max(1);
        let mut tx = self.db.begin_tenant(org).await?;
        let size = log_size(&mut tx).await?;
        let checkpoint = self.signed(&mut tx, request.tree_size, size).await?;
        if from_seq > checkpoint.size {
            return Err(Error::OutOfRange(format!(
                "from_seq {from_seq} is beyond the checkpoint of size {}",
                checkpoint.size
            )));
        }
        let consistency = match request.consistency_from {
            None => None,
            Some(0) => return Err(FieldError::new("consistency_from", "must be at least 1").into()),
            Some(m) if m > checkpoint.size => {
                return Err(Error::OutOfRange(format!(
                    "consistency_from {m} is beyond the checkpoint of size {}",
                    checkpoint.size
                )));
            }
            Some(m) => Some(consistency(&mut tx, m, checkpoint.size).await?),
        };
        let prior = from_seq - 1;
        let prior_chain_hash = if prior == 0 {
            coffer_tlog::chain_genesis(&org.to_string())
        } else {
            store::entry(&mut tx, prior)
                .await?
                .ok_or_else(|| Error::Corrupt(format!("entry {prior} is missing")))?
                .chain_hash
        };
        let prior_subtrees = crate::log::frontier(&mut tx, prior)
            .await?
            .hashes()
            .to_vec();
        drop(tx);
        let to = checkpoint.size;
        let header = ExportPart::Header {
            checkpoint,
            from_seq,
            prior_chain_hash,
            prior_subtrees,
        };
        if sink.send(Ok(header)).await.is_err() {
            return Ok(());
        }
        let mut next = from_seq;
        while next <= to {
            let mut tx = self.db.begin_tenant(org).await?;
            let rows = store::entries(&mut tx, next, to, EXPORT_BATCH).await?;
            drop(tx);
            if rows.is_empty() {
                return Err(Error::Corrupt(format!(
                    "entry {next} is missing below the head"
                )));
            }
            for row in rows {
                next = row.seq + 1;
                if sink.send(Ok(ExportPart::Entry(row.into()))).await.is_err() {
                    return Ok(());
                }
            }
        }
        let entries = to + 1 - from_seq;
        let _ = sink
            .send(Ok(ExportPart::Trailer {
                entries,
                consistency,
            }))
            .await;
        Ok(())
    }

    /// The checkpoint of `size` (latest when `None`), with its verifier key.
    async fn signed(
        &self,
        tx: &mut TenantTx,
        size: Option<u64>,
        log_size: u64,
    ) -> Result<CheckpointView, Error> {
        if let Some(s) = size
            && s > log_size
        {
            return Err(Error::OutOfRange(format!(
                "tree_size {s} is beyond the log, which has {log_size} entries"
            )));
        }
        let row = store::checkpoint(tx, size)
            .await?
            .ok_or_else(|| match size {
                Some(s) => Error::NotFound(format!("checkpoint of size {s}")),
                None => Error::FailedPrecondition(
                    "no checkpoint has been issued for this log yet; try again shortly".into(),
                ),
            })?;
        let verifier =
            self.checkpointer.verifier(tx).await?.ok_or_else(|| {
                Error::Corrupt("a checkpoint exists without a signing key".into())
            })?;
        Ok(view(row, verifier.to_vkey()))
    }
}

fn view(row: CheckpointRow, verifier_key: String) -> CheckpointView {
    CheckpointView {
        size: row.size,
        root: row.root_hash,
        signed_note: row.signed_note,
        issued_at: row.issued_at,
        verifier_key,
    }
}

async fn log_size(tx: &mut TenantTx) -> Result<u64, Error> {
    Ok(store::head(tx).await?.map_or(0, |h| h.size))
}

async fn consistency(tx: &mut TenantTx, from: u64, to: u64) -> Result<Consistency, Error> {
    let corrupt = |e: coffer_tlog::Error| Error::Corrupt(e.to_string());
    let mut ids: Vec<NodeId> = coffer_tlog::consistency_nodes(from, to).map_err(corrupt)?;
    ids.extend(coffer_tlog::root_nodes(from));
    ids.extend(coffer_tlog::root_nodes(to));
    let nodes = store::nodes(tx, &ids).await?;
    let get = |id| nodes.get(&id).copied();
    Ok(Consistency {
        from_size: from,
        to_size: to,
        from_root: coffer_tlog::root(from, get).map_err(corrupt)?,
        to_root: coffer_tlog::root(to, get).map_err(corrupt)?,
        proof: coffer_tlog::consistency_proof(from, to, get).map_err(corrupt)?,
    })
}
