//! Proof verification, as RFC 9162 §2.1.3.2 and §2.1.4.2 describe it.
//!
//! Both check the proof length up front (against the length `PATH`/`PROOF` has for these
//! sizes), which also bounds the loops; the RFC's in-loop "sn is 0" checks then cannot fire.

use crate::tree::{consistency_ranges, inclusion_ranges};
use crate::{Hash, node_hash};

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not below the tree size, so no inclusion proof exists.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// Consistency proofs exist only for `0 < old <= new`.
    #[error(
        "a consistency proof needs 0 < old size <= new size, got old size {old} and new size {new}"
    )]
    SizeOutOfRange {
        /// The claimed old size.
        old: u64,
        /// The claimed new size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {actual} hashes, expected {expected}")]
    ProofLength {
        /// Hashes in the proof.
        actual: usize,
        /// Hashes a proof for these sizes has.
        expected: usize,
    },
    /// The inclusion proof leads to a different root.
    #[error("computed root differs from the expected root")]
    RootMismatch,
    /// The consistency proof does not lead to the old root.
    #[error("computed old root differs from the expected old root")]
    OldRootMismatch,
    /// The consistency proof does not lead to the new root (for equal sizes: the roots differ).
    #[error("computed new root differs from the expected new root")]
    NewRootMismatch,
}

/// Checks that `proof` shows the leaf with `leaf_hash` at `index` in the tree of `size`
/// leaves with `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    check_length(proof, inclusion_ranges(index, size).len())?;

    let (mut fnode, mut snode) = (index, size - 1);
    let mut hash = *leaf_hash;
    for sibling in proof {
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(sibling, &hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 || hash != *root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that `proof` shows the tree of `old_size` leaves with `old_root` is a prefix of the
/// tree of `new_size` leaves with `new_root` (RFC 9162 §2.1.4.2). For equal sizes the proof
/// is empty and the roots must be equal.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), VerifyError> {
    if old_size == 0 || old_size > new_size {
        return Err(VerifyError::SizeOutOfRange {
            old: old_size,
            new: new_size,
        });
    }
    check_length(proof, consistency_ranges(old_size, new_size).len())?;
    if old_size == new_size {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(VerifyError::NewRootMismatch)
        };
    }

    // A power-of-two old tree is a node of the new one; the proof leaves it out.
    let mut path = proof.iter().copied();
    let start = if old_size.is_power_of_two() {
        *old_root
    } else {
        path.next()
            .expect("the length check leaves at least one hash")
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut old_hash, mut new_hash) = (start, start);
    for node in path {
        if fnode & 1 == 1 || fnode == snode {
            old_hash = node_hash(&node, &old_hash);
            new_hash = node_hash(&node, &new_hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, &node);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if old_hash != *old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if snode != 0 || new_hash != *new_root {
        return Err(VerifyError::NewRootMismatch);
    }
    Ok(())
}

fn check_length(proof: &[Hash], expected: usize) -> Result<(), VerifyError> {
    if proof.len() == expected {
        Ok(())
    } else {
        Err(VerifyError::ProofLength {
            actual: proof.len(),
            expected,
        })
    }
}
