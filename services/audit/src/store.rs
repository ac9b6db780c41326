//! The audit service's SQL. Every query runs in a tenant transaction, so row-level security
//! already confines it to one org; the `org_id = $1` predicates are there for the indexes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use coffer_db::TenantTx;
use coffer_tlog::{Hash, NodeId};
use sqlx::Row;

use crate::app::Error;

/// The newest entry of a log: its size and chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub size: u64,
    pub chain_hash: Hash,
}

pub(crate) fn hash(bytes: Vec<u8>, what: &str) -> Result<Hash, Error> {
    bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("a stored {what} is not 32 bytes")))
}

fn size(v: i64) -> u64 {
    // Sizes and sequence numbers are CHECKed non-negative in the schema.
    v.max(0) as u64
}

/// Serialises appenders of one org, across every process, until the transaction ends.
pub(crate) async fn lock_log(tx: &mut TenantTx) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("coffer_audit:{}", tx.org()))
        .execute(tx.conn())
        .await?;
    Ok(())
}

pub(crate) async fn head(tx: &mut TenantTx) -> Result<Option<Head>, Error> {
    let org = tx.org();
    let row = sqlx::query(
        "SELECT seq, chain_hash FROM audit_entries WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(org.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        Ok(Head {
            size: size(r.try_get("seq")?),
            chain_hash: hash(r.try_get("chain_hash")?, "chain hash")?,
        })
    })
    .transpose()
}

pub(crate) async fn start_log(tx: &mut TenantTx, genesis: &Hash) -> Result<(), Error> {
    let org = tx.org();
    sqlx::query("INSERT INTO audit_logs (org_id, genesis) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(org.as_uuid())
        .bind(genesis.as_slice())
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// The stored hashes of `ids`; absent ones are simply missing from the map.
pub(crate) async fn nodes(
    tx: &mut TenantTx,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let org = tx.org();
    let levels: Vec<i16> = ids.iter().map(|n| i16::from(n.level)).collect();
    let indexes: Vec<i64> = ids.iter().map(|n| n.index as i64).collect();
    // One primary-key probe per wanted node. As a plain join, the planner chose to read all
    // of the org's nodes and hash-join them while its log was small to mid-sized: O(n) per
    // append instead of O(log n) (`cargo xtask bench audit` measured ~2,700 index entries read
    // per append on logs of ~1,300 entries, and half the append rate by ~3,000). The LIMIT
    // keeps the subquery from being flattened back into that join; the key is unique, so it
    // changes no result.
    let rows = sqlx::query(
        "SELECT n.level, n.idx, n.hash
           FROM unnest($2::smallint[], $3::bigint[]) AS want(level, idx)
          CROSS JOIN LATERAL (
                SELECT level, idx, hash FROM audit_nodes
                 WHERE org_id = $1 AND level = want.level AND idx = want.idx
                 LIMIT 1) n",
    )
    .bind(org.as_uuid())
    .bind(&levels)
    .bind(&indexes)
    .fetch_all(tx.conn())
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let level: i16 = r.try_get("level")?;
        let index: i64 = r.try_get("idx")?;
        let id = NodeId {
            level: level as u8,
            index: size(index),
        };
        out.insert(id, hash(r.try_get("hash")?, "tree node")?);
    }
    Ok(out)
}

/// One entry to insert.
pub(crate) struct NewEntry<'a> {
    pub seq: u64,
    pub event: &'a coffer_eventstore::RecordedEvent,
    pub leaf: &'a [u8],
    pub leaf_hash: &'a Hash,
    pub chain_hash: &'a Hash,
}

pub(crate) async fn insert_entry(tx: &mut TenantTx, e: NewEntry<'_>) -> Result<(), Error> {
    let org = tx.org();
    sqlx::query(
        "INSERT INTO audit_entries (org_id, seq, event_id, occurred_at, actor_kind, actor_id,
                                    action, service, aggregate_type, aggregate_id,
                                    leaf, leaf_hash, chain_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(org.as_uuid())
    .bind(e.seq as i64)
    .bind(e.event.event_id.as_uuid())
    .bind(e.event.occurred_at)
    .bind(e.event.actor.kind.as_str())
    .bind(&e.event.actor.id)
    .bind(&e.event.event_type)
    .bind(&e.event.service)
    .bind(&e.event.aggregate_type)
    .bind(e.event.aggregate_id.as_uuid())
    .bind(e.leaf)
    .bind(e.leaf_hash.as_slice())
    .bind(e.chain_hash.as_slice())
    .execute(tx.conn())
    .await?;
    Ok(())
}

pub(crate) async fn insert_nodes(tx: &mut TenantTx, nodes: &[(NodeId, Hash)]) -> Result<(), Error> {
    let org = tx.org();
    let levels: Vec<i16> = nodes.iter().map(|(n, _)| i16::from(n.level)).collect();
    let indexes: Vec<i64> = nodes.iter().map(|(n, _)| n.index as i64).collect();
    let hashes: Vec<&[u8]> = nodes.iter().map(|(_, h)| h.as_slice()).collect();
    sqlx::query(
        "INSERT INTO audit_nodes (org_id, level, idx, hash)
         SELECT $1, * FROM unnest($2::smallint[], $3::bigint[], $4::bytea[])",
    )
    .bind(org.as_uuid())
    .bind(&levels)
    .bind(&indexes)
    .bind(&hashes)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A stored entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryRow {
    pub seq: u64,
    pub leaf: Vec<u8>,
    pub leaf_hash: Hash,
    pub chain_hash: Hash,
    pub appended_at: DateTime<Utc>,
}

fn entry_row(r: &sqlx::postgres::PgRow) -> Result<EntryRow, Error> {
    Ok(EntryRow {
        seq: size(r.try_get("seq")?),
        leaf: r.try_get("leaf")?,
        leaf_hash: hash(r.try_get("leaf_hash")?, "leaf hash")?,
        chain_hash: hash(r.try_get("chain_hash")?, "chain hash")?,
        appended_at: r.try_get("appended_at")?,
    })
}

const ENTRY_COLUMNS: &str = "seq, leaf, leaf_hash, chain_hash, appended_at";

/// Query filters; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub actor_kind: Option<String>,
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<uuid::Uuid>,
}

pub(crate) async fn query(
    tx: &mut TenantTx,
    filter: &Filter,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<EntryRow>, Error> {
    let org = tx.org();
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_entries
          WHERE org_id = $1 AND seq > $2
            AND ($3::timestamptz IS NULL OR occurred_at >= $3)
            AND ($4::timestamptz IS NULL OR occurred_at < $4)
            AND ($5::text IS NULL OR actor_kind = $5)
            AND ($6::text IS NULL OR actor_id = $6)
            AND ($7::text IS NULL OR action = $7)
            AND ($8::text IS NULL OR aggregate_type = $8)
            AND ($9::uuid IS NULL OR aggregate_id = $9)
          ORDER BY seq LIMIT $10"
    ))
    .bind(org.as_uuid())
    .bind(after_seq as i64)
    .bind(filter.from)
    .bind(filter.to)
    .bind(&filter.actor_kind)
    .bind(&filter.actor_id)
    .bind(&filter.action)
    .bind(&filter.aggregate_type)
    .bind(filter.aggregate_id)
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(entry_row).collect()
}

pub(crate) async fn entry(tx: &mut TenantTx, seq: u64) -> Result<Option<EntryRow>, Error> {
    let org = tx.org();
    let row = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE org_id = $1 AND seq = $2"
    ))
    .bind(org.as_uuid())
    .bind(seq as i64)
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(entry_row).transpose()
}

/// Entries `from..=to`, at most `limit`.
pub(crate) async fn entries(
    tx: &mut TenantTx,
    from: u64,
    to: u64,
    limit: u32,
) -> Result<Vec<EntryRow>, Error> {
    let org = tx.org();
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM audit_entries
          WHERE org_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq LIMIT $4"
    ))
    .bind(org.as_uuid())
    .bind(from as i64)
    .bind(to as i64)
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(entry_row).collect()
}

/// The org's checkpoint signing key as stored.
#[derive(Debug, Clone)]
pub(crate) struct SigningKeyRow {
    pub key_name: String,
    pub public_key: [u8; 32],
    pub kms_key_id: String,
    pub wrapped_private_key: Vec<u8>,
}

pub(crate) async fn signing_key(tx: &mut TenantTx) -> Result<Option<SigningKeyRow>, Error> {
    let org = tx.org();
    let row = sqlx::query(
        "SELECT key_name, public_key, kms_key_id, wrapped_private_key
           FROM audit_signing_keys WHERE org_id = $1",
    )
    .bind(org.as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        Ok(SigningKeyRow {
            key_name: r.try_get("key_name")?,
            public_key: hash(r.try_get("public_key")?, "public key")?,
            kms_key_id: r.try_get("kms_key_id")?,
            wrapped_private_key: r.try_get("wrapped_private_key")?,
        })
    })
    .transpose()
}

/// Stores the org's signing key unless another process stored one first.
pub(crate) async fn insert_signing_key(
    tx: &mut TenantTx,
    key: &SigningKeyRow,
) -> Result<(), Error> {
    let org = tx.org();
    sqlx::query(
        "INSERT INTO audit_signing_keys (org_id, key_name, public_key, kms_key_id, wrapped_private_key)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id) DO NOTHING",
    )
    .bind(org.as_uuid())
    .bind(&key.key_name)
    .bind(key.public_key.as_slice())
    .bind(&key.kms_key_id)
    .bind(&key.wrapped_private_key)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A stored checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointRow {
    pub size: u64,
    pub root_hash: Hash,
    pub signed_note: String,
    pub issued_at: DateTime<Utc>,
}

fn checkpoint_row(r: &sqlx::postgres::PgRow) -> Result<CheckpointRow, Error> {
    Ok(CheckpointRow {
        size: size(r.try_get("size")?),
        root_hash: hash(r.try_get("root_hash")?, "root hash")?,
        signed_note: r.try_get("signed_note")?,
        issued_at: r.try_get("issued_at")?,
    })
}

/// The checkpoint of `size`, or the latest when `size` is `None`.
pub(crate) async fn checkpoint(
    tx: &mut TenantTx,
    size: Option<u64>,
) -> Result<Option<CheckpointRow>, Error> {
    let org = tx.org();
    let row = sqlx::query(
        "SELECT size, root_hash, signed_note, issued_at FROM audit_checkpoints
          WHERE org_id = $1 AND ($2::bigint IS NULL OR size = $2)
          ORDER BY size DESC LIMIT 1",
    )
    .bind(org.as_uuid())
    .bind(size.map(|s| s as i64))
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(checkpoint_row).transpose()
}

/// Checkpoints smaller than `before` (all when `None`), newest first.
pub(crate) async fn checkpoints(
    tx: &mut TenantTx,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<CheckpointRow>, Error> {
    let org = tx.org();
    let rows = sqlx::query(
        "SELECT size, root_hash, signed_note, issued_at FROM audit_checkpoints
          WHERE org_id = $1 AND ($2::bigint IS NULL OR size < $2)
          ORDER BY size DESC LIMIT $3",
    )
    .bind(org.as_uuid())
    .bind(before.map(|s| s as i64))
    .bind(i64::from(limit))
    .fetch_all(tx.conn())
    .await?;
    rows.iter().map(checkpoint_row).collect()
}

/// Stores a checkpoint; `false` when one of that size exists already.
pub(crate) async fn insert_checkpoint(
    tx: &mut TenantTx,
    size: u64,
    root: &Hash,
    signed_note: &str,
) -> Result<bool, Error> {
    let org = tx.org();
    let inserted = sqlx::query(
        "INSERT INTO audit_checkpoints (org_id, size, root_hash, signed_note)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(org.as_uuid())
    .bind(size as i64)
    .bind(root.as_slice())
    .bind(signed_note)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Orgs owed a checkpoint (see `audit_checkpoints_due` in the migration). Not a tenant
/// query: it runs on the pool.
pub(crate) async fn checkpoints_due(
    pool: &sqlx::PgPool,
    min_entries: u64,
    max_age: std::time::Duration,
) -> Result<Vec<uuid::Uuid>, Error> {
    let rows = sqlx::query("SELECT org_id FROM audit_checkpoints_due($1, $2)")
        .bind(min_entries as i64)
        .bind(
            sqlx::postgres::types::PgInterval::try_from(max_age).map_err(|e| {
                Error::Corrupt(format!("checkpoint interval does not fit an interval: {e}"))
            })?,
        )
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<uuid::Uuid, _>("org_id").map_err(Error::from))
        .collect()
}
