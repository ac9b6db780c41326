//! `coffer audit …`: the org's audit log.
//!
//! The commands that talk to the server check what they can on this side: a checkpoint's
//! signature (with the key the server names, which the user should compare with one kept
//! earlier), a leaf's hash and inclusion proof, a consistency proof. `audit verify` talks to
//! no server at all: it reads a bundle file and runs `coffer_audit::bundle::verify`, so it
//! works on a machine that has only the bundle and this binary.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use coffer_audit::bundle;
use coffer_proto::audit::v1 as pb;
use coffer_proto::audit::v1::bundle_record::Record;
use coffer_sdk::{
    AuditEntry, AuditQuery, Checkpoint, Client, EntryProof, Event, ExportOptions, Hash, OrgId,
};
use coffer_tlog::note::{self, Verifier};
use prost::Message;
use serde_json::json;

use super::{Table, connect, print_json, target_org, time};
use crate::cli::{AuditCommand, AuditQueryArgs, AuditVerifyArgs, ConnectArgs, OutputArgs};

/// Runs an `audit` command that talks to the server (every one but `verify`).
pub(super) async fn run(
    args: &ConnectArgs,
    output: OutputArgs,
    command: AuditCommand,
) -> anyhow::Result<()> {
    if let AuditCommand::Verify(verify_args) = &command {
        // `main` runs it before any runtime or connection exists; this is for other callers.
        return if verify_offline(verify_args, args.org, output) == ExitCode::SUCCESS {
            Ok(())
        } else {
            Err(anyhow::anyhow!("the bundle did not verify"))
        };
    }
    let client = connect(args).await?;
    let org = target_org(&client, args);
    match command {
        AuditCommand::Query(query) => self::query(&client, org, output, query).await,
        AuditCommand::Entry { seq, tree_size } => entry(&client, org, output, seq, tree_size).await,
        AuditCommand::Checkpoint { size, out } => {
            checkpoint(&client, org, output, size, out.as_deref()).await
        }
        AuditCommand::Checkpoints { limit, page_token } => {
            let page = client
                .audit()
                .checkpoints(org, limit, page_token.as_deref())
                .await
                .context("list checkpoints")?;
            if output.json {
                return print_json(&json!({
                    "checkpoints": page.items,
                    "next_page_token": page.next_page_token,
                }));
            }
            let mut table = Table::new(["SIZE", "ROOT", "ISSUED"]);
            for c in &page.items {
                table.row([
                    c.size.to_string(),
                    c.root_hash.to_string(),
                    time(c.issued_at),
                ]);
            }
            print!("{table}");
            print_next_page(page.next_page_token.as_deref());
            Ok(())
        }
        AuditCommand::Consistency { from, to } => consistency(&client, org, output, from, to).await,
        AuditCommand::Export {
            out,
            from_seq,
            tree_size,
            consistency_from,
        } => {
            let mut options = ExportOptions::new();
            if let Some(seq) = from_seq {
                options = options.from_seq(seq);
            }
            if let Some(size) = tree_size {
                options = options.tree_size(size);
            }
            if let Some(size) = consistency_from {
                options = options.consistency_from(size);
            }
            export(&client, org, output, options, &out).await
        }
        AuditCommand::Verify(_) => unreachable!("handled above"),
    }
}

async fn query(
    client: &Client,
    org: OrgId,
    output: OutputArgs,
    args: AuditQueryArgs,
) -> anyhow::Result<()> {
    let mut query = AuditQuery::new();
    if let Some(at) = args.from {
        query = query.from(at);
    }
    if let Some(at) = args.to {
        query = query.to(at);
    }
    if let Some(kind) = args.actor_kind {
        query = query.actor_kind(kind);
    }
    if let Some(id) = args.actor_id {
        query = query.actor_id(id);
    }
    if let Some(action) = args.action {
        query = query.action(action);
    }
    if let Some(t) = args.aggregate_type {
        query = query.aggregate_type(t);
    }
    if let Some(id) = args.aggregate_id {
        query = query.aggregate_id(id);
    }
    if let Some(n) = args.limit {
        query = query.page_size(n);
    }
    if let Some(token) = args.page_token {
        query = query.page_token(token);
    }
    let page = client
        .audit()
        .query(org, &query)
        .await
        .context("query the audit log")?;
    if output.json {
        return print_json(&json!({
            "entries": page.items,
            "next_page_token": page.next_page_token,
        }));
    }
    print!("{}", entries_table(&page.items));
    print_next_page(page.next_page_token.as_deref());
    Ok(())
}

fn print_next_page(token: Option<&str>) {
    if let Some(token) = token {
        println!("next page: --page-token {token}");
    }
}

fn entries_table(entries: &[AuditEntry]) -> Table {
    let mut table = Table::new(["SEQ", "OCCURRED", "ACTOR", "ACTION", "AGGREGATE"]);
    for e in entries {
        table.row([
            e.seq.to_string(),
            time(e.event.occurred_at),
            e.event.actor.to_string(),
            e.event.event_type.clone(),
            format!("{}/{}", e.event.aggregate_type, e.event.aggregate_id),
        ]);
    }
    table
}

/// Checks a checkpoint's signature with the key it names, that it is `org`'s log signed by
/// that key, and that the fields the server sent beside the note say what the note says.
fn open_checkpoint(org: OrgId, c: &Checkpoint) -> anyhow::Result<note::Checkpoint> {
    anyhow::ensure!(
        c.org_id == org,
        "the server answered with a checkpoint of org {}, not of org {org}",
        c.org_id
    );
    let verifier = Verifier::parse(&c.verifier_key).context("read the checkpoint's key")?;
    let body = verifier.verify(&c.signed_note).with_context(|| {
        format!(
            "check the signature on the checkpoint of size {} with {}",
            c.size, c.verifier_key
        )
    })?;
    let signed = note::Checkpoint::parse(body).context("read the signed checkpoint")?;
    anyhow::ensure!(
        signed.origin == verifier.name() && signed.origin.ends_with(&format!("/audit/{org}")),
        "the checkpoint origin {:?} is not the audit log of org {org} signed by key {:?}",
        signed.origin,
        verifier.name()
    );
    anyhow::ensure!(
        signed.size == c.size && signed.root == c.root_hash.0,
        "the server says the checkpoint has size {} and root {}, but its signed note says size {} \
         and root {}",
        c.size,
        c.root_hash,
        signed.size,
        Hash(signed.root)
    );
    Ok(signed)
}

/// What `audit entry` showed to hold.
struct VerifiedEntry {
    signed: note::Checkpoint,
    leaf_hash: Hash,
    proof_hashes: usize,
}

fn verify_entry(org: OrgId, seq: u64, p: &EntryProof) -> anyhow::Result<VerifiedEntry> {
    anyhow::ensure!(
        p.entry.seq == seq,
        "the server answered with entry {}",
        p.entry.seq
    );
    let signed = open_checkpoint(org, &p.checkpoint)?;
    let leaf = pb::AuditEntry::decode(p.leaf.as_slice())
        .context("the leaf is not an encoded AuditEntry")?;
    anyhow::ensure!(
        leaf.org_id == org.to_string() && leaf.seq == seq,
        "the leaf is entry {} of org {}, not entry {seq} of org {org}",
        leaf.seq,
        leaf.org_id
    );
    let event = Event::try_from(leaf.event.context("the leaf carries no event")?)
        .context("read the leaf's event")?;
    anyhow::ensure!(
        event == p.entry.event,
        "the entry the server shows is not the event its leaf holds"
    );
    let leaf_hash = coffer_tlog::leaf_hash(&p.leaf);
    anyhow::ensure!(
        leaf_hash == p.entry.leaf_hash.0,
        "the leaf hashes to {}, not to the entry's leaf hash {}",
        Hash(leaf_hash),
        p.entry.leaf_hash
    );
    let proof: Vec<coffer_tlog::Hash> = p.inclusion_proof.iter().map(|h| h.0).collect();
    coffer_tlog::verify_inclusion(&leaf_hash, seq - 1, signed.size, &proof, &signed.root)
        .with_context(|| {
            format!(
                "the inclusion proof of entry {seq} in the checkpoint of size {} does not hold",
                signed.size
            )
        })?;
    Ok(VerifiedEntry {
        signed,
        leaf_hash: Hash(leaf_hash),
        proof_hashes: proof.len(),
    })
}

async fn entry(
    client: &Client,
    org: OrgId,
    output: OutputArgs,
    seq: u64,
    tree_size: Option<u64>,
) -> anyhow::Result<()> {
    let proof = client
        .audit()
        .entry(org, seq, tree_size)
        .await
        .with_context(|| format!("get audit entry {seq}"))?;
    let verified = verify_entry(org, seq, &proof)
        .with_context(|| format!("audit entry {seq} did not verify"))?;
    let size = verified.signed.size;
    let root = Hash(verified.signed.root);
    let key = &proof.checkpoint.verifier_key;
    if output.json {
        let mut doc = serde_json::to_value(&proof).context("encode JSON output")?;
        doc["verified"] = json!({
            "checkpoint_size": size,
            "root": root,
            "verifier_key": key,
            "leaf_hash": verified.leaf_hash,
            "inclusion_proof_hashes": verified.proof_hashes,
        });
        return print_json(&doc);
    }
    let e = &proof.entry;
    let mut table = Table::new(["", ""]);
    table.row(["entry".into(), e.seq.to_string()]);
    table.row(["occurred".into(), time(e.event.occurred_at)]);
    table.row(["actor".into(), e.event.actor.to_string()]);
    table.row(["action".into(), e.event.event_type.clone()]);
    table.row([
        "aggregate".into(),
        format!("{}/{}", e.event.aggregate_type, e.event.aggregate_id),
    ]);
    table.row(["service".into(), e.event.service.clone()]);
    table.row(["event id".into(), e.event.event_id.to_string()]);
    table.row(["appended".into(), time(e.appended_at)]);
    table.row(["leaf hash".into(), e.leaf_hash.to_string()]);
    table.row(["chain hash".into(), e.chain_hash.to_string()]);
    print!("{}", table.without_header());
    println!("verified here:");
    println!(
        "  checkpoint  size {size}, root {root}: its signature checks with {key} (the key the \
         server names; compare it with one you kept, or pin it with `coffer audit verify --key`)"
    );
    println!(
        "  leaf        hash {} recomputed from the leaf bytes, which are entry {seq} of org \
         {org} and hold the event shown",
        verified.leaf_hash
    );
    println!(
        "  inclusion   the RFC 9162 proof ({}) leads from leaf index {} to the signed root",
        hash_count(verified.proof_hashes),
        seq - 1
    );
    Ok(())
}

fn hash_count(n: usize) -> String {
    if n == 1 {
        "1 hash".to_owned()
    } else {
        format!("{n} hashes")
    }
}

async fn checkpoint(
    client: &Client,
    org: OrgId,
    output: OutputArgs,
    size: Option<u64>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let c = client
        .audit()
        .checkpoint(org, size)
        .await
        .context("get the checkpoint")?;
    open_checkpoint(org, &c).context("the checkpoint did not verify")?;
    if let Some(path) = out {
        std::fs::write(path, &c.signed_note)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if output.json {
        return print_json(&c);
    }
    match out {
        Some(path) => println!(
            "saved the checkpoint of size {} (root {}, signature checked with {}) to {}; keep it \
             to witness the log: coffer audit verify <bundle> --witness {}",
            c.size,
            c.root_hash,
            c.verifier_key,
            path.display(),
            path.display()
        ),
        None => print!("{}", c.signed_note),
    }
    Ok(())
}

async fn consistency(
    client: &Client,
    org: OrgId,
    output: OutputArgs,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let audit = client.audit();
    let p = audit
        .consistency(org, from, to)
        .await
        .context("get the consistency proof")?;
    anyhow::ensure!(
        (p.from_size, p.to_size) == (from, to),
        "the server answered with a proof from size {} to size {}",
        p.from_size,
        p.to_size
    );
    let proof: Vec<coffer_tlog::Hash> = p.proof.iter().map(|h| h.0).collect();
    coffer_tlog::verify_consistency(from, to, &proof, &p.from_root.0, &p.to_root.0)
        .with_context(|| format!("the consistency proof from size {from} to {to} does not hold"))?;

    // The proof links the two roots; a root means something once a signed checkpoint says it.
    let mut signed_by: Option<String> = None;
    let mut lines = Vec::new();
    let mut signed_sizes = Vec::new();
    for (size, root) in [(from, p.from_root), (to, p.to_root)] {
        match audit.checkpoint(org, Some(size)).await {
            Ok(c) => {
                let signed = open_checkpoint(org, &c)
                    .with_context(|| format!("the checkpoint of size {size} did not verify"))?;
                anyhow::ensure!(
                    signed.root == root.0,
                    "the proof's root at size {size} is {root}, but the signed checkpoint of that \
                     size says {}",
                    Hash(signed.root)
                );
                if let Some(key) = &signed_by {
                    anyhow::ensure!(
                        *key == c.verifier_key,
                        "the checkpoints of sizes {from} and {to} are signed by different keys"
                    );
                }
                lines.push(format!(
                    "  size {size:<6} root {root}: the signed checkpoint of this size says so \
                     (signature checked with {})",
                    c.verifier_key
                ));
                signed_by = Some(c.verifier_key);
                signed_sizes.push(size);
            }
            Err(coffer_sdk::Error::NotFound { .. }) => lines.push(format!(
                "  size {size:<6} root {root}: no checkpoint was issued at this size; the \
                 server's root is taken as given"
            )),
            Err(e) => {
                return Err(e).with_context(|| format!("get the checkpoint of size {size}"));
            }
        }
    }
    if output.json {
        return print_json(&json!({
            "from_size": from,
            "to_size": to,
            "from_root": p.from_root,
            "to_root": p.to_root,
            "proof": p.proof,
            "verified": true,
            "signed_sizes": signed_sizes,
            "verifier_key": signed_by,
        }));
    }
    println!(
        "verified here: the RFC 9162 consistency proof ({}) shows the log at size {from} is a \
         prefix of the log at size {to}",
        hash_count(proof.len())
    );
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

async fn export(
    client: &Client,
    org: OrgId,
    output: OutputArgs,
    options: ExportOptions,
    out: &Path,
) -> anyhow::Result<()> {
    // Written beside the target and renamed once complete, so an interrupted export never
    // leaves a file that looks like a bundle.
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = write_bundle(client, org, options, &partial).await;
    let (from_seq, entries) = match written {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("move {} to {}", partial.display(), out.display()))?;
    let size = (from_seq + entries).saturating_sub(1);
    if output.json {
        return print_json(&json!({
            "org_id": org,
            "file": out,
            "from_seq": from_seq,
            "entries": entries,
            "checkpoint_size": size,
        }));
    }
    println!(
        "exported {entries} entries ({from_seq}..={size}) of org {org}'s audit log, up to the \
         checkpoint of size {size}, to {}; check it with: coffer audit verify {}",
        out.display(),
        out.display()
    );
    Ok(())
}

/// Streams the export into `path`; returns the first entry and the count.
async fn write_bundle(
    client: &Client,
    org: OrgId,
    options: ExportOptions,
    path: &Path,
) -> anyhow::Result<(u64, u64)> {
    let mut stream = client
        .audit()
        .export(org, options)
        .await
        .context("export the audit log")?;
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut writer = bundle::Writer::new(BufWriter::new(file))
        .with_context(|| format!("write {}", path.display()))?;
    let mut from_seq = None;
    let mut entries = None;
    while let Some(record) = stream.next().await.context("receive the export")? {
        writer
            .write(&record)
            .with_context(|| format!("write {}", path.display()))?;
        match record.record {
            Some(Record::Header(h)) => from_seq = Some(h.from_seq),
            Some(Record::Trailer(t)) => entries = Some(t.entries),
            _ => {}
        }
    }
    let (Some(from_seq), Some(entries)) = (from_seq, entries) else {
        anyhow::bail!("the export ended before its trailer");
    };
    let file = writer
        .finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .with_context(|| format!("write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("write {}", path.display()))?;
    Ok((from_seq, entries))
}

/// `coffer audit verify`: reads only the files it is given. Prints what it established and
/// returns success, or prints `audit verify: FAILED: <why>` on stderr and returns exit code 1.
pub fn verify_offline(args: &AuditVerifyArgs, org: Option<OrgId>, output: OutputArgs) -> ExitCode {
    match verify_bundle(args, org) {
        Ok(report) => {
            let shown = if output.json {
                print_json(&report_json(args, &report))
            } else {
                print_report(args, &report);
                Ok(())
            };
            match shown {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("audit verify: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Err(why) => {
            eprintln!("audit verify: FAILED: {why}");
            ExitCode::from(1)
        }
    }
}

fn verify_bundle(args: &AuditVerifyArgs, org: Option<OrgId>) -> Result<bundle::Report, String> {
    let witness = match &args.witness {
        None => None,
        Some(path) => {
            let note = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the witness {}: {e}", path.display()))?;
            // A note saved through a shell or an editor may have gained trailing blank lines;
            // the signature covers none of them.
            Some(format!("{}\n", note.trim_end()))
        }
    };
    let file = File::open(&args.bundle)
        .map_err(|e| format!("cannot open {}: {e}", args.bundle.display()))?;
    let options = bundle::Options {
        witness,
        key: args.key.clone(),
        org,
    };
    bundle::verify(BufReader::new(file), &options).map_err(|e| e.to_string())
}

fn witness_how(check: bundle::WitnessCheck) -> &'static str {
    match check {
        bundle::WitnessCheck::Recomputed => "its root recomputed from the bundle's entries",
        bundle::WitnessCheck::ConsistencyProof => "through the bundle's RFC 9162 consistency proof",
    }
}

fn print_report(args: &AuditVerifyArgs, r: &bundle::Report) {
    let mut table = Table::new(["", ""]);
    table.row(["org".into(), r.org.to_string()]);
    table.row(["origin".into(), r.origin.clone()]);
    table.row([
        "signing key".into(),
        if args.key.is_some() {
            format!("{} (the key given with --key)", r.verifier_key)
        } else {
            format!(
                "{} (as the bundle names it; pass --key to require it)",
                r.verifier_key
            )
        },
    ]);
    let mut checked = format!(
        "{} checked: {}..={}, each an entry of this org at its position",
        r.entries, r.from_seq, r.size
    );
    if r.from_seq > 1 {
        checked.push_str(&format!(
            " (1..={} are covered by the header's subtree hashes, not one by one)",
            r.from_seq - 1
        ));
    }
    table.row(["entries".into(), checked]);
    table.row([
        "chain head".into(),
        format!(
            "{}: the hash chain recomputed from the leaves matches every stored chain hash",
            Hash(r.chain_head)
        ),
    ]);
    table.row([
        "Merkle root".into(),
        format!(
            "{}: recomputed from the entries, it matches the signed checkpoint of size {}",
            Hash(r.root),
            r.size
        ),
    ]);
    table.row([
        "witness".into(),
        match r.witness {
            Some((size, how)) => format!(
                "consistent with the witnessed checkpoint of size {size}: {}",
                witness_how(how)
            ),
            None => {
                "no witness given: truncation, rollback and forks cannot be ruled out".to_owned()
            }
        },
    ]);
    println!("verified {}", args.bundle.display());
    print!("{}", table.without_header());
}

fn report_json(args: &AuditVerifyArgs, r: &bundle::Report) -> serde_json::Value {
    json!({
        "file": args.bundle,
        "org_id": r.org,
        "origin": r.origin,
        "verifier_key": r.verifier_key,
        "key_pinned": args.key.is_some(),
        "size": r.size,
        "root": Hash(r.root),
        "from_seq": r.from_seq,
        "entries": r.entries,
        "chain_head": Hash(r.chain_head),
        "witness": r.witness.map(|(size, how)| json!({
            "size": size,
            "check": match how {
                bundle::WitnessCheck::Recomputed => "recomputed",
                bundle::WitnessCheck::ConsistencyProof => "consistency_proof",
            },
        })),
    })
}
