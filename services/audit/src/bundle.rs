//! The export bundle: its file format, and its verification with no server.
//!
//! A bundle file is the line `coffer-audit-bundle-v1\n`, then `BundleRecord` messages
//! (`proto/coffer/audit/v1/audit.proto`), each as a protobuf varint length and the encoded
//! message: one header, the entries in order, one trailer. The gRPC export streams the same
//! records, so the CLI writes them as they arrive.
//!
//! [`verify`] reads a bundle once, front to back, in O(log n) memory. It checks that:
//! 1. the checkpoint is a C2SP signed note by the bundle's key (and by the pinned key, if one
//!    is given), whose origin names the bundle's org;
//! 2. every leaf decodes as an `AuditEntry` of that org at its position, and the hash chain
//!    recomputed from the leaves matches every stored chain hash;
//! 3. the RFC 9162 root recomputed from the leaves equals the checkpoint's root;
//! 4. given a witness (an older checkpoint the verifier kept), that it is signed by the same
//!    key and that the log is consistent with it: recomputed from the leaves when the bundle
//!    covers the witness size, else through the bundle's consistency proof.
//!
//! The chain and the signature alone cannot show that entries are missing from the end, or
//! that the whole log was replaced by another that was signed again: only a witness can.

use std::io::{BufRead, Read, Write};

use coffer_proto::audit::v1 as pb;
use coffer_tlog::note::{Checkpoint, Verifier};
use coffer_tlog::{Frontier, Hash};
use coffer_types::OrgId;
use prost::Message;

/// The bundle format name, in the header and (with a newline) as the file's first line.
pub const FORMAT: &str = "coffer-audit-bundle-v1";

/// The largest record accepted: far above any real entry, small enough to refuse garbage
/// before allocating for it.
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// Writes a bundle file record by record.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    /// Starts a bundle: writes the format line.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(FORMAT.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(Self { out })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &pb::BundleRecord) -> std::io::Result<()> {
        self.out.write_all(&record.encode_length_delimited_to_vec())
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why a bundle did not verify. Each message says what was checked and what was found.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error("cannot read the bundle: {0}")]
    Io(#[from] std::io::Error),
    /// It is not a bundle, or its structure is broken.
    #[error("not a valid bundle: {0}")]
    Format(String),
    /// It ends before its trailer.
    #[error("the bundle is truncated: {0}")]
    Truncated(String),
    /// The checkpoint or witness signature, or the key, is wrong.
    #[error("signature check failed: {0}")]
    Signature(String),
    /// It is another org's log.
    #[error("the bundle is the log of org {found}, not of org {expected}")]
    WrongOrg {
        /// The org asked for.
        expected: OrgId,
        /// The org in the bundle.
        found: String,
    },
    /// An entry is missing, out of place or not what its position says.
    #[error("entry {seq}: {reason}")]
    Entry {
        /// The position.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The recomputed chain differs from the stored one.
    #[error(
        "the hash chain breaks at entry {seq}: its stored chain hash is not SHA-256 of the previous chain hash and its leaf hash"
    )]
    Chain {
        /// The first entry whose chain hash is wrong.
        seq: u64,
    },
    /// The recomputed Merkle root differs from the signed one.
    #[error(
        "the Merkle root of entries 1..={size} is {computed}, but the signed checkpoint says {signed}"
    )]
    Root {
        /// The tree size.
        size: u64,
        /// Recomputed, hex.
        computed: String,
        /// Signed, hex.
        signed: String,
    },
    /// The log is not consistent with the witnessed checkpoint.
    #[error("inconsistent with the witnessed checkpoint: {0}")]
    Witness(String),
}

/// What to check beyond the bundle itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// An older checkpoint (signed note) of the same log, kept by the verifier.
    pub witness: Option<String>,
    /// The key the checkpoints must be signed by (a note verifier key), if known in advance.
    pub key: Option<String>,
    /// The org whose log this must be.
    pub org: Option<OrgId>,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The org whose log it is.
    pub org: OrgId,
    /// The checkpoint origin.
    pub origin: String,
    /// The key that signed the checkpoint.
    pub verifier_key: String,
    /// The checkpoint's tree size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// The first entry in the bundle.
    pub from_seq: u64,
    /// Entries checked.
    pub entries: u64,
    /// h_size, recomputed.
    pub chain_head: Hash,
    /// The witnessed size and how consistency with it was shown, when a witness was given.
    pub witness: Option<(u64, WitnessCheck)>,
}

/// How a witness was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitnessCheck {
    /// The root at the witness size was recomputed from the bundle's entries.
    Recomputed,
    /// Through the bundle's RFC 9162 consistency proof.
    ConsistencyProof,
}

struct RecordReader<R> {
    input: R,
}

impl<R: BufRead> RecordReader<R> {
    /// The next record, or `None` at a clean end of file.
    fn next(&mut self) -> Result<Option<pb::BundleRecord>, VerifyError> {
        if self.input.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let len = read_varint(&mut self.input)?;
        if len > MAX_RECORD_BYTES {
            return Err(VerifyError::Format(format!(
                "a record claims {len} bytes, more than the {MAX_RECORD_BYTES} allowed"
            )));
        }
        let mut buf = Vec::new();
        (&mut self.input).take(len).read_to_end(&mut buf)?;
        if (buf.len() as u64) < len {
            return Err(VerifyError::Truncated(format!(
                "the last record stops after {} of its {len} bytes",
                buf.len()
            )));
        }
        pb::BundleRecord::decode(buf.as_slice())
            .map(Some)
            .map_err(|e| VerifyError::Format(format!("a record does not decode: {e}")))
    }
}

fn read_varint(input: &mut impl BufRead) -> Result<u64, VerifyError> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut byte = [0u8];
        if input.read(&mut byte)? == 0 {
            return Err(VerifyError::Truncated("a record length is cut off".into()));
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(VerifyError::Format(
        "a record length is not a valid varint".into(),
    ))
}

fn hash32(bytes: &[u8], what: &str) -> Result<Hash, VerifyError> {
    bytes
        .try_into()
        .map_err(|_| VerifyError::Format(format!("{what} is {} bytes, not 32", bytes.len())))
}

fn signed_checkpoint(
    verifier: &Verifier,
    note: &str,
    what: &str,
) -> Result<Checkpoint, VerifyError> {
    let body = verifier.verify(note).map_err(|e| {
        VerifyError::Signature(format!(
            "the {what} does not verify with {}: {e}",
            verifier.to_vkey()
        ))
    })?;
    Checkpoint::parse(body).map_err(|e| VerifyError::Format(format!("the {what}: {e}")))
}

/// Verifies the bundle read from `input` (positioned at its start). See the module docs for
/// what is checked.
pub fn verify(input: impl BufRead, options: &Options) -> Result<Report, VerifyError> {
    let mut input = input;
    let mut magic = Vec::new();
    (&mut input)
        .take(FORMAT.len() as u64 + 1)
        .read_to_end(&mut magic)?;
    if magic != [FORMAT.as_bytes(), b"\n"].concat() {
        return Err(VerifyError::Format(format!(
            "the file does not start with the line {FORMAT:?}"
        )));
    }
    let mut records = RecordReader { input };
    let header = match records.next()? {
        Some(pb::BundleRecord {
            record: Some(pb::bundle_record::Record::Header(h)),
        }) => h,
        Some(_) => {
            return Err(VerifyError::Format(
                "the first record is not the header".into(),
            ));
        }
        None => return Err(VerifyError::Truncated("it ends before its header".into())),
    };
    if header.format != FORMAT {
        return Err(VerifyError::Format(format!(
            "the header names format {:?}, not {FORMAT:?}",
            header.format
        )));
    }
    let org: OrgId = header
        .org_id
        .parse()
        .map_err(|_| VerifyError::Format("the header's org_id is not a UUID".into()))?;
    if let Some(expected) = options.org
        && expected != org
    {
        return Err(VerifyError::WrongOrg {
            expected,
            found: org.to_string(),
        });
    }

    // 1. The checkpoint, its key and its origin.
    let verifier = Verifier::parse(&header.verifier_key)
        .map_err(|e| VerifyError::Format(format!("the header's verifier key: {e}")))?;
    if let Some(pinned) = &options.key {
        let pinned = Verifier::parse(pinned)
            .map_err(|e| VerifyError::Signature(format!("the expected key: {e}")))?;
        if pinned != verifier {
            return Err(VerifyError::Signature(format!(
                "the bundle is signed by {}, not by the expected key {}",
                verifier.to_vkey(),
                pinned.to_vkey()
            )));
        }
    }
    let checkpoint = signed_checkpoint(&verifier, &header.checkpoint, "checkpoint")?;
    if checkpoint.origin != verifier.name()
        || !checkpoint.origin.ends_with(&format!("/audit/{org}"))
    {
        return Err(VerifyError::Signature(format!(
            "the checkpoint origin {:?} is not the audit log of org {org} signed by key {:?}",
            checkpoint.origin,
            verifier.name()
        )));
    }
    let size = checkpoint.size;
    let from_seq = header.from_seq;
    if from_seq == 0 || from_seq > size.max(1) {
        return Err(VerifyError::Format(format!(
            "from_seq {from_seq} is outside the checkpoint's 1..={size}"
        )));
    }

    // The witness is read before the entries, so its root can be taken on the way past.
    let witness = match &options.witness {
        None => None,
        Some(note) => {
            let w = signed_checkpoint(&verifier, note, "witness checkpoint").map_err(|e| match e {
                VerifyError::Signature(m) => VerifyError::Witness(format!(
                    "{m}; the log's signing key changed or the bundle was signed by someone else"
                )),
                other => other,
            })?;
            if w.origin != checkpoint.origin {
                return Err(VerifyError::Witness(format!(
                    "the witness is a checkpoint of {:?}, the bundle of {:?}",
                    w.origin, checkpoint.origin
                )));
            }
            if w.size > size {
                return Err(VerifyError::Witness(format!(
                    "the log has {size} entries but the witness saw {}: entries were removed from its end or the log was rolled back",
                    w.size
                )));
            }
            Some(w)
        }
    };

    // 2 and 3. The entries, the chain and the tree.
    let prior_subtrees = header
        .prior_subtrees
        .iter()
        .map(|h| hash32(h, "a prior subtree hash"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tree = Frontier::from_nodes(from_seq - 1, prior_subtrees)
        .map_err(|e| VerifyError::Format(format!("the prior subtrees: {e}")))?;
    let mut chain = hash32(&header.prior_chain_hash, "the prior chain hash")?;
    if from_seq == 1 && chain != coffer_tlog::chain_genesis(&org.to_string()) {
        return Err(VerifyError::Chain { seq: 0 });
    }
    let mut witness_root = witness
        .as_ref()
        .filter(|w| w.size == tree.size())
        .map(|_| tree.root());
    let mut expected = from_seq;
    let trailer = loop {
        let record = records.next()?.ok_or_else(|| {
            VerifyError::Truncated(format!(
                "it ends after {} entries, before its trailer",
                expected - from_seq
            ))
        })?;
        match record.record {
            Some(pb::bundle_record::Record::Entry(e)) => {
                if e.seq != expected {
                    return Err(VerifyError::Entry {
                        seq: expected,
                        reason: format!("expected here, found entry {} instead", e.seq),
                    });
                }
                if e.seq > size {
                    return Err(VerifyError::Entry {
                        seq: e.seq,
                        reason: format!("is beyond the checkpoint's size {size}"),
                    });
                }
                check_leaf(&e, org)?;
                let leaf_hash = coffer_tlog::leaf_hash(&e.leaf);
                chain = coffer_tlog::chain_next(&chain, &leaf_hash);
                if e.chain_hash != chain {
                    return Err(VerifyError::Chain { seq: e.seq });
                }
                tree.push(leaf_hash);
                if witness.as_ref().is_some_and(|w| w.size == tree.size()) {
                    witness_root = Some(tree.root());
                }
                expected += 1;
            }
            Some(pb::bundle_record::Record::Trailer(t)) => break t,
            _ => {
                return Err(VerifyError::Format(
                    "a second header inside the bundle".into(),
                ));
            }
        }
    };
    if records.next()?.is_some() {
        return Err(VerifyError::Format("records follow the trailer".into()));
    }
    let entries = expected - from_seq;
    if trailer.entries != entries {
        return Err(VerifyError::Truncated(format!(
            "the trailer counts {} entries, the bundle holds {entries}",
            trailer.entries
        )));
    }
    if tree.size() != size {
        return Err(VerifyError::Truncated(format!(
            "the checkpoint covers {size} entries, the bundle ends at entry {}",
            tree.size()
        )));
    }
    let computed = tree.root();
    if computed != checkpoint.root {
        return Err(VerifyError::Root {
            size,
            computed: hex::encode(computed),
            signed: hex::encode(checkpoint.root),
        });
    }

    // 4. The witness.
    let witnessed = match witness {
        None => None,
        Some(w) => Some((
            w.size,
            check_witness(&w, witness_root, &trailer, &checkpoint)?,
        )),
    };
    Ok(Report {
        org,
        origin: checkpoint.origin,
        verifier_key: verifier.to_vkey(),
        size,
        root: checkpoint.root,
        from_seq,
        entries,
        chain_head: chain,
        witness: witnessed,
    })
}

fn check_leaf(e: &pb::BundleEntry, org: OrgId) -> Result<(), VerifyError> {
    let bad = |reason: String| VerifyError::Entry { seq: e.seq, reason };
    let leaf = pb::AuditEntry::decode(e.leaf.as_slice())
        .map_err(|_| bad("its leaf is not an encoded AuditEntry".into()))?;
    if leaf.org_id != org.to_string() {
        return Err(bad(format!("its leaf belongs to org {}", leaf.org_id)));
    }
    if leaf.seq != e.seq {
        return Err(bad(format!("its leaf says it is entry {}", leaf.seq)));
    }
    match leaf.event {
        Some(ev) if ev.org_id == leaf.org_id => Ok(()),
        Some(ev) => Err(bad(format!("its event belongs to org {}", ev.org_id))),
        None => Err(bad("its leaf carries no event".into())),
    }
}

fn check_witness(
    w: &Checkpoint,
    recomputed: Option<Hash>,
    trailer: &pb::BundleTrailer,
    checkpoint: &Checkpoint,
) -> Result<WitnessCheck, VerifyError> {
    if let Some(root) = recomputed {
        if root != w.root {
            return Err(VerifyError::Witness(format!(
                "at size {} the log's root is {} but the witness signed {}: the log was forked or rewritten",
                w.size,
                hex::encode(root),
                hex::encode(w.root)
            )));
        }
        return Ok(WitnessCheck::Recomputed);
    }
    if trailer.consistency_from_size != w.size {
        return Err(VerifyError::Witness(format!(
            "the bundle starts after the witness size {} and carries no consistency proof from it; export with --consistency-from {}",
            w.size, w.size
        )));
    }
    let proof = trailer
        .consistency_proof
        .iter()
        .map(|h| hash32(h, "a consistency proof hash"))
        .collect::<Result<Vec<_>, _>>()?;
    coffer_tlog::verify_consistency(w.size, checkpoint.size, &proof, &w.root, &checkpoint.root)
        .map_err(|e| {
            VerifyError::Witness(format!(
                "the consistency proof from size {} does not hold ({e}): the log was forked or rewritten",
                w.size
            ))
        })?;
    Ok(WitnessCheck::ConsistencyProof)
}
