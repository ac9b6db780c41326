//! The math of Coffer's tamper-evident audit log, shared by the server and the offline verifier.
//!
//! This crate owns:
//! - the RFC 9162 Merkle tree: leaf and node hashes ([`leaf_hash`], [`node_hash`]), roots,
//!   inclusion and consistency proofs ([`inclusion_proof`], [`consistency_proof`]) and their
//!   verification ([`verify_inclusion`], [`verify_consistency`]);
//! - which stored perfect-subtree nodes ([`NodeId`]) each computation reads ([`root_nodes`],
//!   [`inclusion_nodes`], [`consistency_nodes`]), so the server fetches them in one query;
//! - the append [`Frontier`], which says which nodes to store as leaves arrive and checks a
//!   whole log in one pass with O(log n) memory;
//! - Coffer's per-org hash chain ([`chain_genesis`], [`chain_next`]);
//! - C2SP signed notes and checkpoints ([`note`]).
//!
//! It does no I/O: stored nodes come in through a lookup closure the caller supplies.

mod frontier;
pub mod note;
mod tree;
mod verify;

use sha2::{Digest, Sha256};

pub use frontier::Frontier;
pub use tree::{
    Error, NodeId, consistency_nodes, consistency_proof, inclusion_nodes, inclusion_proof, root,
    root_nodes,
};
pub use verify::{VerifyError, verify_consistency, verify_inclusion};

/// A SHA-256 digest: a leaf hash, node hash, tree root or chain link.
pub type Hash = [u8; 32];

/// The hash of a log entry: SHA-256(0x00 || leaf) (RFC 9162 §2.1.1).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(leaf)
        .finalize()
        .into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right) (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The first link of an org's hash chain: SHA-256("coffer-audit-v1" || org_id).
///
/// `org_id` must be the canonical lowercase hyphenated UUID string (36 bytes of UTF-8), as
/// `Display` of Coffer's id types writes it; any other spelling gives a different chain.
pub fn chain_genesis(org_id: &str) -> Hash {
    Sha256::new()
        .chain_update(b"coffer-audit-v1")
        .chain_update(org_id.as_bytes())
        .finalize()
        .into()
}

/// The chain link after `prev` for the entry with `leaf_hash`: SHA-256(prev || leaf_hash).
pub fn chain_next(prev: &Hash, leaf_hash: &Hash) -> Hash {
    Sha256::new()
        .chain_update(prev)
        .chain_update(leaf_hash)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_links_commit_to_org_and_order() {
        let org = "0190f3c4-7a2b-7c3d-8e4f-5a6b7c8d9e0f";
        let genesis = chain_genesis(org);
        assert_eq!(
            genesis,
            <Hash>::from(Sha256::digest(format!("coffer-audit-v1{org}")))
        );
        assert_ne!(genesis, chain_genesis(&org.to_uppercase()));

        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let ab = chain_next(&chain_next(&genesis, &a), &b);
        let ba = chain_next(&chain_next(&genesis, &b), &a);
        assert_ne!(ab, ba);
        assert_eq!(
            chain_next(&genesis, &a),
            <Hash>::from(Sha256::digest([genesis, a].concat()))
        );
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
