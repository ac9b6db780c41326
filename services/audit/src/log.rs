//! Appending to an org's log.
//!
//! An append takes the org's advisory lock for the rest of its transaction, so one appender
//! per org runs at a time across every process, while other orgs append in parallel. It reads
//! the head (size and chain hash) and the O(log n) perfect-subtree hashes of the tree's right
//! edge, then inserts the entry and every subtree the new leaf completes (about two rows per
//! entry). Nothing is ever updated.

use coffer_db::TenantTx;
use coffer_eventstore::RecordedEvent;
use coffer_proto::audit::v1 as pb;
use coffer_tlog::{Frontier, Hash};
use prost::Message;

use crate::app::Error;
use crate::store::{self, NewEntry};

/// What an append produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The entry's sequence number (the log's new size).
    pub seq: u64,
    /// Its chain hash.
    pub chain_hash: Hash,
}

/// The leaf bytes of `event` at `seq`: the deterministic protobuf of `AuditEntry`.
pub fn leaf(event: &RecordedEvent, seq: u64) -> Vec<u8> {
    pb::AuditEntry {
        org_id: event.org_id.to_string(),
        seq,
        event: Some(event.to_envelope()),
    }
    .encode_to_vec()
}

/// Appends `event` to the log of the transaction's org. The caller commits; the event must
/// belong to that org. Deduplication is the caller's: the consumer records every event it
/// applies in `processed_events` in the same transaction, and the table refuses an event id
/// twice per org.
pub async fn append(tx: &mut TenantTx, event: &RecordedEvent) -> Result<Appended, Error> {
    let org = tx.org();
    if event.org_id != org {
        return Err(Error::Corrupt(format!(
            "event {} of org {} offered to the log of org {org}",
            event.event_id, event.org_id
        )));
    }
    store::lock_log(tx).await?;
    let (size, prev) = match store::head(tx).await? {
        Some(head) => (head.size, head.chain_hash),
        None => {
            let genesis = coffer_tlog::chain_genesis(&org.to_string());
            store::start_log(tx, &genesis).await?;
            (0, genesis)
        }
    };
    let mut frontier = frontier(tx, size).await?;
    let seq = size + 1;
    let leaf = leaf(event, seq);
    let leaf_hash = coffer_tlog::leaf_hash(&leaf);
    let chain_hash = coffer_tlog::chain_next(&prev, &leaf_hash);
    let nodes = frontier.push(leaf_hash);
    store::insert_entry(
        tx,
        NewEntry {
            seq,
            event,
            leaf: &leaf,
            leaf_hash: &leaf_hash,
            chain_hash: &chain_hash,
        },
    )
    .await?;
    store::insert_nodes(tx, &nodes).await?;
    Ok(Appended { seq, chain_hash })
}

/// The compact range of the first `size` leaves, from the stored nodes.
pub(crate) async fn frontier(tx: &mut TenantTx, size: u64) -> Result<Frontier, Error> {
    let ids = coffer_tlog::root_nodes(size);
    let stored = store::nodes(tx, &ids).await?;
    let hashes = ids
        .iter()
        .map(|id| {
            stored
                .get(id)
                .copied()
                .ok_or_else(|| Error::Corrupt(format!("tree node {id:?} is missing")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_nodes(size, hashes).map_err(|e| Error::Corrupt(e.to_string()))
}
