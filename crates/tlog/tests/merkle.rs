//! Roots, proofs and the frontier against published RFC 6962 vectors and a naive model.

use std::collections::HashMap;

use coffer_tlog::{
    Error, Frontier, Hash, NodeId, VerifyError, consistency_nodes, consistency_proof, empty_root,
    inclusion_nodes, inclusion_proof, leaf_hash, node_hash, root, root_nodes, verify_consistency,
    verify_inclusion,
};

// The 8-leaf RFC 6962 test tree, its roots and proofs, from the certificate-transparency test
// data as republished in github.com/transparency-dev/merkle, proof/verify_test.go
// (`leaves`, `roots`, `inclusionProofs`, `consistencyProofs`; there leaf numbers are 1-based).
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
/// (0-based leaf index, tree size, PATH).
#[rustfmt::skip]
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (0, 8, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, &["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
];
/// (old size, new size, PROOF).
#[rustfmt::skip]
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (1, 8, &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, &["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, &["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, &["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
];

fn h(hex: &str) -> Hash {
    hex::decode(hex).unwrap().try_into().unwrap()
}

fn hashes(hexes: &[&str]) -> Vec<Hash> {
    hexes.iter().map(|hex| h(hex)).collect()
}

/// What the server stores: every node `Frontier::push` returned.
#[derive(Default)]
struct Log {
    frontier: Frontier,
    stored: HashMap<NodeId, Hash>,
}

impl Log {
    fn append(&mut self, leaf_hash: Hash) {
        let index = self.frontier.size();
        let completed = self.frontier.push(leaf_hash);
        assert_eq!(completed[0], (NodeId { level: 0, index }, leaf_hash));
        for (level, (id, _)) in completed.iter().enumerate() {
            assert_eq!(level, usize::from(id.level), "levels increase one by one");
            assert_eq!(
                (id.index + 1) << id.level,
                index + 1,
                "node ends at the new leaf"
            );
        }
        for (id, hash) in completed {
            assert!(
                self.stored.insert(id, hash).is_none(),
                "{id} completed twice"
            );
        }
    }

    /// A lookup that sees only `nodes`, so reading anything else fails as `MissingNode`.
    fn only<'a>(&'a self, nodes: &'a [NodeId]) -> impl Fn(NodeId) -> Option<Hash> + 'a {
        move |id| nodes.contains(&id).then(|| self.stored[&id])
    }
}

fn vector_log() -> Log {
    let mut log = Log::default();
    for leaf in LEAVES {
        log.append(leaf_hash(&hex::decode(leaf).unwrap()));
    }
    log
}

fn flipped(proof: &[Hash], at: usize) -> Vec<Hash> {
    let mut proof = proof.to_vec();
    proof[at][0] ^= 0x10;
    proof
}

#[test]
fn published_roots_match() {
    let mut log = Log::default();
    assert_eq!(log.frontier.root(), empty_root());
    for (size, (leaf, want)) in (1..).zip(LEAVES.iter().zip(ROOTS)) {
        log.append(leaf_hash(&hex::decode(leaf).unwrap()));
        assert_eq!(log.frontier.root(), h(want), "frontier root at size {size}");
        let nodes = root_nodes(size);
        assert_eq!(
            root(size, log.only(&nodes)).unwrap(),
            h(want),
            "root at size {size}"
        );
    }
}

#[test]
fn published_inclusion_proofs_are_produced_and_verify() {
    let log = vector_log();
    for (index, size, want) in INCLUSION {
        let want = hashes(want);
        let nodes = inclusion_nodes(index, size).unwrap();
        assert_eq!(
            inclusion_proof(index, size, log.only(&nodes)).unwrap(),
            want
        );

        let leaf = leaf_hash(&hex::decode(LEAVES[index as usize]).unwrap());
        let tree_root = h(ROOTS[size as usize - 1]);
        assert_eq!(
            verify_inclusion(&leaf, index, size, &want, &tree_root),
            Ok(())
        );

        let refused = |leaf: &Hash, index, size, proof: &[Hash], root: &Hash| {
            verify_inclusion(leaf, index, size, proof, root).is_err()
        };
        for at in 0..want.len() {
            assert!(refused(&leaf, index, size, &flipped(&want, at), &tree_root));
        }
        assert!(refused(&leaf, index + 1, size, &want, &tree_root));
        assert!(refused(
            &leaf,
            index.wrapping_sub(1),
            size,
            &want,
            &tree_root
        ));
        // Not size + 1: PATH(1, D[0:6]) has the shape of PATH(1, D[0:5]), so the size is
        // bound by the signed checkpoint, not the proof. These are the source's probes.
        assert!(refused(&leaf, index, size * 2, &want, &tree_root));
        assert!(refused(&leaf, index, size / 2, &want, &tree_root));
        assert!(refused(
            &leaf_hash(b"wrong"),
            index,
            size,
            &want,
            &tree_root
        ));
        assert!(refused(&leaf, index, size, &want, &empty_root()));
        let longer = [want.as_slice(), &[tree_root]].concat();
        assert_eq!(
            verify_inclusion(&leaf, index, size, &longer, &tree_root),
            Err(VerifyError::ProofLength {
                actual: want.len() + 1,
                expected: want.len()
            })
        );
    }
}

#[test]
fn published_consistency_proofs_are_produced_and_verify() {
    let log = vector_log();
    for (old, new, want) in CONSISTENCY {
        let want = hashes(want);
        let nodes = consistency_nodes(old, new).unwrap();
        assert_eq!(consistency_proof(old, new, log.only(&nodes)).unwrap(), want);

        let (old_root, new_root) = (h(ROOTS[old as usize - 1]), h(ROOTS[new as usize - 1]));
        assert_eq!(
            verify_consistency(old, new, &want, &old_root, &new_root),
            Ok(())
        );

        let refused = |old, new, proof: &[Hash], old_root: &Hash, new_root: &Hash| {
            verify_consistency(old, new, proof, old_root, new_root).is_err()
        };
        assert!(refused(old, new, &want, &old_root, &empty_root()));
        let Some((_, shorter)) = want.split_last() else {
            continue; // equal sizes: nothing more to tamper with
        };
        assert_eq!(
            verify_consistency(old, new, shorter, &old_root, &new_root),
            Err(VerifyError::ProofLength {
                actual: want.len() - 1,
                expected: want.len()
            })
        );
        for at in 0..want.len() {
            assert!(refused(old, new, &flipped(&want, at), &old_root, &new_root));
        }
        assert!(refused(old, new, &want, &new_root, &old_root));
        assert!(refused(old, new, &want, &empty_root(), &new_root));
        // The source's size probes.
        for (old, new) in [
            (old - 1, new),
            (old + 1, new),
            (old ^ 2, new),
            (old, new * 2),
            (old, new / 2),
        ] {
            assert!(
                refused(old, new, &want, &old_root, &new_root),
                "{old}..{new}"
            );
        }
    }
}

#[test]
fn out_of_range_requests_are_errors() {
    let log = vector_log();
    let none = |_| None;
    assert_eq!(
        inclusion_nodes(8, 8),
        Err(Error::IndexOutOfRange { index: 8, size: 8 })
    );
    assert_eq!(
        inclusion_proof(0, 0, none),
        Err(Error::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        consistency_nodes(0, 8),
        Err(Error::SizeOutOfRange { old: 0, new: 8 })
    );
    assert_eq!(
        consistency_proof(5, 4, none),
        Err(Error::SizeOutOfRange { old: 5, new: 4 })
    );
    assert_eq!(root(0, none), Ok(empty_root()));
    assert_eq!(
        root(8, log.only(&[])),
        Err(Error::MissingNode(NodeId { level: 3, index: 0 }))
    );
    assert_eq!(
        verify_consistency(0, 8, &[], &empty_root(), &h(ROOTS[7])),
        Err(VerifyError::SizeOutOfRange { old: 0, new: 8 })
    );
    assert_eq!(
        Frontier::from_nodes(7, vec![empty_root(); 2]),
        Err(Error::FrontierLength {
            size: 7,
            expected: 3,
            actual: 2
        })
    );
}

#[test]
fn huge_sizes_do_not_overflow() {
    assert_eq!(root_nodes(u64::MAX).len(), 64);
    assert!(inclusion_nodes(u64::MAX - 1, u64::MAX).unwrap().len() <= 128);
    assert!(consistency_nodes(1, u64::MAX).unwrap().len() <= 128);
    assert!(consistency_nodes(u64::MAX - 1, u64::MAX).unwrap().len() <= 128);
    let garbage = [empty_root(); 3];
    assert!(verify_inclusion(&empty_root(), 5, u64::MAX, &garbage, &empty_root()).is_err());
    assert!(verify_consistency(3, u64::MAX, &garbage, &empty_root(), &empty_root()).is_err());
}

// The naive model: RFC 9162 §2.1 MTH, PATH and PROOF written as the recursive definitions.

fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n == 1 {
        return Vec::new();
    }
    let k = largest_power_of_two_below(n);
    let (mut proof, sibling) = if m < k {
        (path(m, &leaves[..k]), mth(&leaves[k..]))
    } else {
        (path(m - k, &leaves[k..]), mth(&leaves[..k]))
    };
    proof.push(sibling);
    proof
}

fn subproof(m: usize, leaves: &[Hash], whole_old_tree: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole_old_tree {
            Vec::new()
        } else {
            vec![mth(leaves)]
        };
    }
    let k = largest_power_of_two_below(n);
    let (mut proof, sibling) = if m <= k {
        (subproof(m, &leaves[..k], whole_old_tree), mth(&leaves[k..]))
    } else {
        (subproof(m - k, &leaves[k..], false), mth(&leaves[..k]))
    };
    proof.push(sibling);
    proof
}

/// The server reads these nodes in one query: sorted, distinct, and at most two per level.
fn assert_small_sorted_set(nodes: &[NodeId], size: u64) {
    assert!(nodes.windows(2).all(|w| w[0] < w[1]), "{nodes:?}");
    let levels = 64 - size.leading_zeros() as usize;
    assert!(
        nodes.len() <= 2 * levels,
        "{} nodes for size {size}",
        nodes.len()
    );
}

#[test]
fn every_root_and_proof_up_to_70_leaves_matches_the_rfc_definitions() {
    let mut log = Log::default();
    let mut leaves = Vec::new();
    for size in 1..=70u64 {
        let leaf = leaf_hash(&size.to_be_bytes());
        leaves.push(leaf);
        log.append(leaf);
        let tree_root = mth(&leaves);

        assert_eq!(
            log.frontier.root(),
            tree_root,
            "frontier root at size {size}"
        );
        let nodes = root_nodes(size);
        assert_eq!(
            root(size, log.only(&nodes)),
            Ok(tree_root),
            "root at size {size}"
        );
        let frontier_hashes: Vec<Hash> = nodes.iter().map(|id| log.stored[id]).collect();
        assert_eq!(
            Frontier::from_nodes(size, frontier_hashes).unwrap(),
            log.frontier
        );

        for index in 0..size {
            let nodes = inclusion_nodes(index, size).unwrap();
            assert_small_sorted_set(&nodes, size);
            let proof = inclusion_proof(index, size, log.only(&nodes)).unwrap();
            assert_eq!(
                proof,
                path(index as usize, &leaves),
                "PATH({index}, {size})"
            );
            let leaf = &leaves[index as usize];
            assert_eq!(
                verify_inclusion(leaf, index, size, &proof, &tree_root),
                Ok(())
            );
        }

        for old in 1..=size {
            let nodes = consistency_nodes(old, size).unwrap();
            assert_small_sorted_set(&nodes, size);
            let proof = consistency_proof(old, size, log.only(&nodes)).unwrap();
            assert_eq!(
                proof,
                subproof(old as usize, &leaves, true),
                "PROOF({old}, {size})"
            );
            let old_root = mth(&leaves[..old as usize]);
            assert_eq!(
                verify_consistency(old, size, &proof, &old_root, &tree_root),
                Ok(())
            );
        }
    }
    // About two stored rows per leaf.
    assert_eq!(log.stored.len(), 2 * 70 - 70u64.count_ones() as usize);
}
