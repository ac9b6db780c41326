//! An audit-log verifier written from the specifications alone (RFC 9162 §2.1, C2SP
//! signed-note and tlog-checkpoint, DESIGN §7), sharing no code with `coffer-tlog` or
//! `coffer-audit`: whatever they prove, this must accept, by its own arithmetic.

#![allow(dead_code)] // the proof checks are used as the audit tests grow

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

pub type H = [u8; 32];

pub fn sha(parts: &[&[u8]]) -> H {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub fn leaf(bytes: &[u8]) -> H {
    sha(&[&[0], bytes])
}

fn node(l: &H, r: &H) -> H {
    sha(&[&[1], l, r])
}

/// MTH(D[n]) by the RFC's recursive definition.
pub fn mth(leaves: &[H]) -> H {
    match leaves.len() {
        0 => sha(&[]),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n);
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The largest power of two smaller than `n` (n > 1).
fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// h_0 and the chain over `leaf_hashes`; returns every h_i, i >= 1.
pub fn chain(org_id: &str, leaf_hashes: &[H]) -> Vec<H> {
    let mut h = sha(&[b"coffer-audit-v1", org_id.as_bytes()]);
    leaf_hashes
        .iter()
        .map(|l| {
            h = sha(&[&h, l]);
            h
        })
        .collect()
}

/// RFC 9162 §2.1.3.2.
pub fn inclusion_holds(index: u64, size: u64, leaf_hash: &H, proof: &[H], root: &H) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &r == root
}

/// RFC 9162 §2.1.4.2.
pub fn consistency_holds(
    first: u64,
    second: u64,
    first_root: &H,
    second_root: &H,
    proof: &[H],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut path: Vec<H> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let Some((c0, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*c0, *c0);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    &fr == first_root && &sr == second_root && s == 0
}

/// A checkpoint read from a signed note, after checking its Ed25519 signature against the
/// verifier key `vkey` ("name+hash+base64(0x01 || key)").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub origin: String,
    pub size: u64,
    pub root: H,
}

pub fn open_checkpoint(note: &str, vkey: &str) -> Result<Signed, String> {
    let mut parts = vkey.splitn(3, '+');
    let (name, hash_hex, key_b64) = (
        parts.next().ok_or("vkey name")?,
        parts.next().ok_or("vkey hash")?,
        parts.next().ok_or("vkey key")?,
    );
    let key = STANDARD.decode(key_b64).map_err(|e| e.to_string())?;
    if key.len() != 33 || key[0] != 1 {
        return Err("vkey is not an Ed25519 key".into());
    }
    let key_hash = &sha(&[name.as_bytes(), b"\n", &key])[..4];
    if hex::encode(key_hash) != hash_hex {
        return Err("vkey hash does not match".into());
    }
    let public = ed25519_dalek::VerifyingKey::from_bytes(key[1..].try_into().unwrap())
        .map_err(|e| e.to_string())?;
    let split = note.rfind("\n\n").ok_or("no signature block")?;
    let (body, sigs) = (&note[..=split], &note[split + 2..]);
    let prefix = format!("\u{2014} {name} ");
    let mut verified = false;
    for line in sigs.lines() {
        let Some(b64) = line.strip_prefix(&prefix) else {
            continue;
        };
        let sig = STANDARD.decode(b64).map_err(|e| e.to_string())?;
        if sig.len() != 68 || sig[..4] != *key_hash {
            continue;
        }
        let sig = ed25519_dalek::Signature::from_bytes(sig[4..].try_into().unwrap());
        public
            .verify_strict(body.as_bytes(), &sig)
            .map_err(|_| "signature does not verify".to_owned())?;
        verified = true;
    }
    if !verified {
        return Err(format!("no signature by {name}"));
    }
    let lines: Vec<&str> = body.lines().collect();
    if lines.len() < 3 {
        return Err("checkpoint has fewer than 3 lines".into());
    }
    Ok(Signed {
        origin: lines[0].to_owned(),
        size: lines[1].parse().map_err(|_| "size is not a number")?,
        root: STANDARD
            .decode(lines[2])
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or("root is not 32 bytes of base64")?,
    })
}
