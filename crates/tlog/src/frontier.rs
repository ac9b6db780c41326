//! The append frontier: the perfect subtrees covering `[0, size)`.

use crate::tree::{Error, NodeId, fold_from_right};
use crate::{Hash, empty_root, node_hash};

/// The compact range `[0, size)`: the hashes of [`crate::root_nodes`]`(size)`, left to right.
///
/// Appending a leaf completes the nodes the server stores; the frontier alone gives the root,
/// so a verifier can replay a whole log in one pass with O(log n) memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Invariant: `hashes.len() == size.count_ones()`.
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of a log of `size` leaves from the hashes of
    /// [`crate::root_nodes`]`(size)`, in that order.
    pub fn from_nodes(size: u64, hashes: Vec<Hash>) -> Result<Self, Error> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(Error::FrontierLength {
                size,
                expected,
                actual: hashes.len(),
            });
        }
        Ok(Self { size, hashes })
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The hashes of [`crate::root_nodes`]`(self.size())`, in that order.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends the leaf with `leaf_hash` at index `self.size()` and returns every perfect
    /// node it completes: the leaf itself (level 0) first, then each higher node by
    /// increasing level.
    pub fn push(&mut self, leaf_hash: Hash) -> Vec<(NodeId, Hash)> {
        let size = self
            .size
            .checked_add(1)
            .expect("a log never holds 2^64 leaves");
        let mut node = NodeId {
            level: 0,
            index: self.size,
        };
        let mut hash = leaf_hash;
        let mut completed = vec![(node, hash)];
        // An odd index is a right child whose left sibling is the frontier's last node.
        while node.index & 1 == 1 {
            let left = self
                .hashes
                .pop()
                .expect("each set bit of size has its node in the frontier");
            hash = node_hash(&left, &hash);
            node = NodeId {
                level: node.level + 1,
                index: node.index >> 1,
            };
            completed.push((node, hash));
        }
        self.hashes.push(hash);
        self.size = size;
        completed
    }

    /// The RFC 9162 Merkle tree hash of the leaves so far ([`empty_root`] for none).
    pub fn root(&self) -> Hash {
        fold_from_right(&self.hashes).unwrap_or_else(empty_root)
    }
}
