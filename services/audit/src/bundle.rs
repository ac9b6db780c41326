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

use crate::app::ExportPart;
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

/// The bundle record of one part of an export, as streamed and as written to the file.
pub fn record(org: OrgId, part: ExportPart) -> pb::BundleRecord {
    use pb::bundle_record::Record;
    let record = match part {
        ExportPart::Header {
            checkpoint,
            from_seq,
            prior_chain_hash,
            prior_subtrees,
        } => Record::Header(pb::BundleHeader {
            format: FORMAT.to_owned(),
            org_id: org.to_string(),
            checkpoint: checkpoint.signed_note,
            verifier_key: checkpoint.verifier_key,
            from_seq,
            prior_chain_hash: prior_chain_hash.to_vec(),
            prior_subtrees: prior_subtrees.iter().map(|h| h.to_vec()).collect(),
            exported_at: Some(coffer_proto::time::to_timestamp(chrono::Utc::now())),
        }),
        ExportPart::Entry(e) => Record::Entry(pb::BundleEntry {
            seq: e.seq,
            leaf: e.leaf,
            chain_hash: e.chain_hash.to_vec(),
        }),
        ExportPart::Trailer {
            entries,
            consistency,
        } => Record::Trailer(pb::BundleTrailer {
            entries,
            consistency_from_size: consistency.as_ref().map_or(0, |c| c.from_size),
            consistency_proof: consistency
                .map(|c| c.proof.iter().map(|h| h.to_vec()).collect())
                .unwrap_or_default(),
        }),
    };
    pb::BundleRecord {
        record: Some(record),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use coffer_eventstore::RecordedEvent;
    use coffer_tlog::NodeId;
    use coffer_tlog::note::Signer;
    use coffer_types::{Actor, AggregateId, EventId};

    use super::*;

    /// A log of `n` entries of `org`, built with the same pieces the service uses, and the
    /// means to export any part of it.
    struct Log {
        org: OrgId,
        signer: Signer,
        leaves: Vec<Vec<u8>>,
        chain: Vec<Hash>,
        nodes: HashMap<NodeId, Hash>,
    }

    impl Log {
        fn new(org: OrgId, n: u64, seed: u8) -> Self {
            let signer = Signer::new(
                format!("coffer/audit/{org}"),
                ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
            )
            .unwrap();
            let mut log = Self {
                org,
                signer,
                leaves: Vec::new(),
                chain: vec![coffer_tlog::chain_genesis(&org.to_string())],
                nodes: HashMap::new(),
            };
            let mut tree = Frontier::new();
            for seq in 1..=n {
                let event = RecordedEvent {
                    event_id: EventId::new(),
                    org_id: org,
                    service: "diag".into(),
                    aggregate_type: "Probe".into(),
                    aggregate_id: AggregateId::new(),
                    version: 1,
                    event_type: "ProbeSent".into(),
                    schema_version: 1,
                    occurred_at: chrono::Utc::now(),
                    actor: Actor::service("test"),
                    trace_context: Default::default(),
                    payload: format!("event {seq} seed {seed}").into_bytes(),
                };
                let leaf = crate::log::leaf(&event, seq);
                let leaf_hash = coffer_tlog::leaf_hash(&leaf);
                let prev = *log.chain.last().unwrap();
                log.chain.push(coffer_tlog::chain_next(&prev, &leaf_hash));
                log.nodes.extend(tree.push(leaf_hash));
                log.leaves.push(leaf);
            }
            log
        }

        fn get(&self) -> impl Fn(NodeId) -> Option<Hash> + '_ {
            |id| self.nodes.get(&id).copied()
        }

        fn checkpoint(&self, size: u64) -> String {
            let root = coffer_tlog::root(size, self.get()).unwrap();
            let body = Checkpoint {
                origin: self.signer.name().to_owned(),
                size,
                root,
                extensions: Vec::new(),
            }
            .to_body();
            self.signer.sign(&body).unwrap()
        }

        fn bundle(&self, from_seq: u64, size: u64, consistency_from: Option<u64>) -> Vec<u8> {
            let mut w = Writer::new(Vec::new()).unwrap();
            let prior = from_seq - 1;
            let record = |r| pb::BundleRecord { record: Some(r) };
            w.write(&record(pb::bundle_record::Record::Header(
                pb::BundleHeader {
                    format: FORMAT.into(),
                    org_id: self.org.to_string(),
                    checkpoint: self.checkpoint(size),
                    verifier_key: self.signer.verifier().to_vkey(),
                    from_seq,
                    prior_chain_hash: self.chain[prior as usize].to_vec(),
                    prior_subtrees: coffer_tlog::root_nodes(prior)
                        .iter()
                        .map(|id| self.nodes[id].to_vec())
                        .collect(),
                    exported_at: None,
                },
            )))
            .unwrap();
            for seq in from_seq..=size {
                w.write(&record(pb::bundle_record::Record::Entry(pb::BundleEntry {
                    seq,
                    leaf: self.leaves[seq as usize - 1].clone(),
                    chain_hash: self.chain[seq as usize].to_vec(),
                })))
                .unwrap();
            }
            let proof = consistency_from
                .map(|m| coffer_tlog::consistency_proof(m, size, self.get()).unwrap())
                .unwrap_or_default();
            w.write(&record(pb::bundle_record::Record::Trailer(
                pb::BundleTrailer {
                    entries: size + 1 - from_seq,
                    consistency_from_size: consistency_from.unwrap_or(0),
                    consistency_proof: proof.iter().map(|h| h.to_vec()).collect(),
                },
            )))
            .unwrap();
            w.finish().unwrap()
        }
    }

    fn check(file: &[u8], options: &Options) -> Result<Report, VerifyError> {
        verify(file, options)
    }

    fn witness(note: String) -> Options {
        Options {
            witness: Some(note),
            ..Options::default()
        }
    }

    #[test]
    fn a_whole_log_verifies_and_says_what_it_checked() {
        let log = Log::new(OrgId::new(), 9, 1);
        let report = check(&log.bundle(1, 9, None), &witness(log.checkpoint(5))).unwrap();
        assert_eq!((report.org, report.size, report.entries), (log.org, 9, 9));
        assert_eq!(report.chain_head, log.chain[9]);
        assert_eq!(report.witness, Some((5, WitnessCheck::Recomputed)));
        assert_eq!(report.verifier_key, log.signer.verifier().to_vkey());
    }

    #[test]
    fn a_bundle_cut_anywhere_or_made_of_garbage_is_refused() {
        let log = Log::new(OrgId::new(), 2, 1);
        let file = log.bundle(1, 2, None);
        for cut in 0..file.len() {
            assert!(
                check(&file[..cut], &Options::default()).is_err(),
                "cut at {cut}"
            );
        }
        let e = check(b"", &Options::default()).unwrap_err();
        assert!(
            e.to_string().contains("does not start with the line"),
            "{e}"
        );
        let e = check(b"\x89PNG\r\n\x1a\n garbage", &Options::default()).unwrap_err();
        assert!(matches!(e, VerifyError::Format(_)), "{e}");
        let mut trailing = file.clone();
        trailing.extend_from_slice(&file[23..]);
        let e = check(&trailing, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("records follow the trailer"), "{e}");
        let mut huge = FORMAT.as_bytes().to_vec();
        huge.extend_from_slice(b"\n\xff\xff\xff\xff\x0f");
        let e = check(&huge, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("more than the"), "{e}");
    }

    #[test]
    fn a_changed_leaf_breaks_the_chain() {
        let log = Log::new(OrgId::new(), 6, 1);
        let file = log.bundle(1, 6, None);
        // The payload bytes of entry 3 sit inside its leaf; flip one.
        let needle = b"event 3 seed 1";
        let at = file
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let mut tampered = file.clone();
        tampered[at] ^= 1;
        let e = check(&tampered, &Options::default()).unwrap_err();
        assert!(matches!(e, VerifyError::Chain { seq: 3 }), "{e}");
    }

    #[test]
    fn another_orgs_bundle_or_witness_or_key_is_refused() {
        let ours = Log::new(OrgId::new(), 3, 1);
        let theirs = Log::new(OrgId::new(), 3, 2);
        let file = theirs.bundle(1, 3, None);
        let e = check(
            &file,
            &Options {
                org: Some(ours.org),
                ..Options::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, VerifyError::WrongOrg { .. }), "{e}");
        let e = check(&ours.bundle(1, 3, None), &witness(theirs.checkpoint(2))).unwrap_err();
        assert!(matches!(e, VerifyError::Witness(_)), "{e}");
        let e = check(
            &ours.bundle(1, 3, None),
            &Options {
                key: Some(theirs.signer.verifier().to_vkey()),
                ..Options::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("not by the expected key"), "{e}");
    }

    #[test]
    fn a_witness_exposes_truncation_and_forks_that_the_chain_alone_misses() {
        let log = Log::new(OrgId::new(), 8, 1);
        let shorter = log.bundle(1, 6, None);
        check(&shorter, &Options::default()).unwrap();
        let e = check(&shorter, &witness(log.checkpoint(8))).unwrap_err();
        assert!(e.to_string().contains("removed from its end"), "{e}");

        // Same key, same size, other entries: a fork.
        let mut fork = Log::new(log.org, 8, 1);
        fork.signer = Signer::new(
            log.signer.name().to_owned(),
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap();
        let forked = fork.bundle(1, 8, None);
        check(&forked, &Options::default()).unwrap();
        let e = check(&forked, &witness(log.checkpoint(8))).unwrap_err();
        assert!(e.to_string().contains("forked or rewritten"), "{e}");
    }

    #[test]
    fn a_partial_bundle_proves_consistency_with_an_older_witness_through_its_proof() {
        let log = Log::new(OrgId::new(), 13, 1);
        let partial = log.bundle(7, 13, Some(3));
        let report = check(&partial, &witness(log.checkpoint(3))).unwrap();
        assert_eq!((report.from_seq, report.entries), (7, 7));
        assert_eq!(report.witness, Some((3, WitnessCheck::ConsistencyProof)));
        // A witness inside the partial range is recomputed from the entries.
        let report = check(&partial, &witness(log.checkpoint(9))).unwrap();
        assert_eq!(report.witness, Some((9, WitnessCheck::Recomputed)));
        // Without a proof from its size, an older witness cannot be checked.
        let e = check(&log.bundle(7, 13, None), &witness(log.checkpoint(3))).unwrap_err();
        assert!(e.to_string().contains("--consistency-from 3"), "{e}");
        // A witness of a forked history fails the proof.
        let fork = Log::new(log.org, 13, 1);
        let forked_witness = {
            let root = coffer_tlog::root(3, fork.get()).unwrap();
            log.signer
                .sign(
                    &Checkpoint {
                        origin: log.signer.name().to_owned(),
                        size: 3,
                        root,
                        extensions: Vec::new(),
                    }
                    .to_body(),
                )
                .unwrap()
        };
        let e = check(&partial, &witness(forked_witness)).unwrap_err();
        assert!(e.to_string().contains("does not hold"), "{e}");
    }
}
