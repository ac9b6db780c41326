//! Roots and proofs computed from stored perfect subtrees.
//!
//! Every hash in an RFC 9162 root or proof is the MTH of a leaf range `[lo, hi)` where `lo`
//! is a multiple of a power of two no smaller than `hi - lo`. Such a range splits, left to
//! right, into perfect subtrees of decreasing size, and its MTH folds their hashes from the
//! right. So a proof is planned as a list of ranges, from which follow both the nodes to
//! fetch and the hashes to return.

use std::fmt;
use std::ops::Range;

use crate::{Hash, empty_root, node_hash};

/// A perfect (complete) subtree: covers leaves `[index << level, (index + 1) << level)`.
///
/// Level 0 nodes are leaf hashes. Nodes order by level, then index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves: the subtree holds `2^level` leaves.
    pub level: u8,
    /// Position among the nodes of this level, counted from the left.
    pub index: u64,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {} index {}", self.level, self.index)
    }
}

/// Why a root or proof cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof needs `0 < old <= new` (RFC 9162 §2.1.4).
    #[error(
        "a consistency proof needs 0 < old size <= new size, got old size {old} and new size {new}"
    )]
    SizeOutOfRange {
        /// The old tree size.
        old: u64,
        /// The new tree size.
        new: u64,
    },
    /// The lookup had no hash for a node the computation needs.
    #[error("stored node {0} is missing")]
    MissingNode(NodeId),
    /// [`crate::Frontier::from_nodes`] got the wrong number of hashes for its size.
    #[error("a frontier of size {size} has {expected} hashes, got {actual}")]
    FrontierLength {
        /// The frontier size.
        size: u64,
        /// `size.count_ones()`, the length of `root_nodes(size)`.
        expected: usize,
        /// The number of hashes given.
        actual: usize,
    },
}

/// The binary decomposition of `[0, size)` into perfect subtrees, left to right (so by
/// descending level). Their hashes, folded from the right, give the root.
pub fn root_nodes(size: u64) -> Vec<NodeId> {
    decompose(0..size)
}

/// The stored nodes [`inclusion_proof`] reads, sorted and deduplicated.
pub fn inclusion_nodes(index: u64, size: u64) -> Result<Vec<NodeId>, Error> {
    check_index(index, size)?;
    Ok(nodes_of(inclusion_ranges(index, size)))
}

/// The stored nodes [`consistency_proof`] reads, sorted and deduplicated.
pub fn consistency_nodes(old_size: u64, new_size: u64) -> Result<Vec<NodeId>, Error> {
    check_sizes(old_size, new_size)?;
    Ok(nodes_of(consistency_ranges(old_size, new_size)))
}

/// The RFC 9162 Merkle tree hash of the first `size` leaves; reads [`root_nodes`]`(size)`.
pub fn root(size: u64, get: impl Fn(NodeId) -> Option<Hash>) -> Result<Hash, Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(0..size, &get)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves: RFC 9162 §2.1.3.1
/// `PATH(index, D[0:size])`, from the leaf's sibling up. Reads [`inclusion_nodes`].
pub fn inclusion_proof(
    index: u64,
    size: u64,
    get: impl Fn(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, Error> {
    check_index(index, size)?;
    hashes_of(inclusion_ranges(index, size), &get)
}

/// The proof that the tree of `old_size` leaves is a prefix of the tree of `new_size`:
/// RFC 9162 §2.1.4.1 `PROOF(old_size, D[0:new_size])`, empty when the sizes are equal.
/// Reads [`consistency_nodes`].
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    get: impl Fn(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, Error> {
    check_sizes(old_size, new_size)?;
    hashes_of(consistency_ranges(old_size, new_size), &get)
}

fn check_index(index: u64, size: u64) -> Result<(), Error> {
    if index < size {
        Ok(())
    } else {
        Err(Error::IndexOutOfRange { index, size })
    }
}

fn check_sizes(old: u64, new: u64) -> Result<(), Error> {
    if 0 < old && old <= new {
        Ok(())
    } else {
        Err(Error::SizeOutOfRange { old, new })
    }
}

/// The leaf ranges whose MTHs make up `PATH(index, D[0:size])`, in proof order.
/// Needs `index < size`.
pub(crate) fn inclusion_ranges(index: u64, size: u64) -> Vec<Range<u64>> {
    // Walk from the whole tree down to the leaf, keeping the half without it; the proof
    // lists those halves from the leaf up.
    let mut ranges = Vec::new();
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let mid = lo + split(hi - lo);
        if index < mid {
            ranges.push(mid..hi);
            hi = mid;
        } else {
            ranges.push(lo..mid);
            lo = mid;
        }
    }
    ranges.reverse();
    ranges
}

/// The leaf ranges whose MTHs make up `PROOF(old, D[0:new])`, in proof order.
/// Needs `0 < old <= new`.
pub(crate) fn consistency_ranges(old: u64, new: u64) -> Vec<Range<u64>> {
    // SUBPROOF(m, D[lo:hi], b), unrolled: `whole_old_tree` is b, true while [lo, hi) still
    // starts at leaf 0, where the verifier already knows MTH(D[0:m]).
    let mut ranges = Vec::new();
    let (mut lo, mut hi, mut whole_old_tree) = (0, new, true);
    while old < hi {
        let mid = lo + split(hi - lo);
        if old <= mid {
            ranges.push(mid..hi);
            hi = mid;
        } else {
            ranges.push(lo..mid);
            lo = mid;
            whole_old_tree = false;
        }
    }
    if !whole_old_tree {
        ranges.push(lo..hi);
    }
    ranges.reverse();
    ranges
}

/// The largest power of two below `n`, where RFC 9162 splits a tree of `n >= 2` leaves.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees covering `range`, left to right, each as large as alignment allows.
fn decompose(range: Range<u64>) -> Vec<NodeId> {
    let (mut lo, hi) = (range.start, range.end);
    let mut nodes = Vec::new();
    while lo < hi {
        let fits = 63 - (hi - lo).leading_zeros();
        let level = lo.trailing_zeros().min(fits);
        nodes.push(NodeId {
            level: level as u8,
            index: lo >> level,
        });
        lo += 1 << level;
    }
    nodes
}

fn nodes_of(ranges: Vec<Range<u64>>) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = ranges.into_iter().flat_map(decompose).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

fn hashes_of(
    ranges: Vec<Range<u64>>,
    get: &impl Fn(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, Error> {
    ranges
        .into_iter()
        .map(|range| range_hash(range, get))
        .collect()
}

/// MTH of a non-empty, suitably aligned range (see the module docs).
fn range_hash(range: Range<u64>, get: &impl Fn(NodeId) -> Option<Hash>) -> Result<Hash, Error> {
    let hashes = decompose(range)
        .into_iter()
        .map(|id| get(id).ok_or(Error::MissingNode(id)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(fold_from_right(&hashes).expect("a non-empty range has at least one node"))
}

/// Combines perfect-subtree hashes of decreasing size, left to right, into their MTH.
pub(crate) fn fold_from_right(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(
        rest.iter()
            .rev()
            .fold(*last, |right, left| node_hash(left, &right)),
    )
}
