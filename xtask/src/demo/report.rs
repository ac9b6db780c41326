//! What the demo prints at the end: what happened, how big and how fast, and where the files
//! are.

use std::fmt;
use std::time::Duration;

use super::sample::{Fingerprint, thousands};
use super::{RESTORED_DB, SOURCE_DB, STOCK_DB};

/// Facts gathered along the way.
#[derive(Debug)]
pub struct Report {
    /// From the end of the build to the end of the story.
    pub total: Duration,
    pub server_url: String,
    pub org_id: String,
    pub agent_id: String,
    pub run_as: String,
    pub scale: u32,
    pub source: Fingerprint,
    pub source_size: u64,
    pub cron: String,
    pub due: String,
    pub backup_job: String,
    pub backup_took: Duration,
    pub dump_size: u64,
    pub object_size: u64,
    pub object_sha256: String,
    pub restore_job: String,
    pub restore_took: Duration,
    pub audit_size: u64,
    pub audit_root: String,
    pub witness_size: u64,
    pub backup_seq: u64,
    pub restore_seq: u64,
    pub export_seq: u64,
    pub laps: Vec<(String, Duration)>,
    /// What, and where (relative to the repository).
    pub files: Vec<(&'static str, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        writeln!(f)?;
        writeln!(
            f,
            "Coffer demo finished: the whole story in {} after the build.",
            secs(r.total)
        )?;
        writeln!(f)?;
        writeln!(f, "What happened")?;
        let lines = [
            "A private Postgres, nats-server (JetStream) and moto started on loopback ports."
                .to_owned(),
            format!(
                "`coffer serve --target all` served every service over TLS on {} \
                 (development certificate).",
                r.server_url
            ),
            format!(
                "`coffer org create` made org \"Demo Org\" ({}) and its owner's API key; the \
                 owner made an admin key with `coffer apikey create`.",
                r.org_id
            ),
            format!(
                "`coffer agent token create` made a single-use enrollment token; coffer-agent \
                 enrolled with it as agent {} and ran as {}, outbound only.",
                r.agent_id, r.run_as
            ),
            format!(
                "{SOURCE_DB} was seeded with `pgbench -i -s {}`: {} rows in {} tables, {} on \
                 disk; its password went into the vault.",
                r.scale,
                thousands(r.source.rows()),
                r.source.0.len(),
                mib(r.source_size)
            ),
            format!(
                "Schedule demo-daily (cron \"{}\", daily at {} UTC) fired backup job {}: \
                 pg_dump | zstd | age streamed a {} dump into {} of ciphertext ({:.1}x smaller) \
                 in {}, {} of dump and {} of database on disk. The artifact's size and SHA-256 \
                 ({}…) match the object, which is encrypted to the org's recipient.",
                r.cron,
                r.due,
                r.backup_job,
                mib(r.dump_size),
                mib(r.object_size),
                r.dump_size as f64 / (r.object_size as f64).max(1.0),
                secs(r.backup_took),
                rate(r.dump_size, r.backup_took),
                rate(r.source_size, r.backup_took),
                &r.object_sha256[..16.min(r.object_sha256.len())]
            ),
            format!(
                "Stock `age -d -i recovery.key | zstd -d | pg_restore` restored it into \
                 {STOCK_DB}: every table's row count and checksum equal the source's."
            ),
            format!(
                "Restore job {} restored it through the agent into {RESTORED_DB} in {}: equal \
                 to the source too.",
                r.restore_job,
                secs(r.restore_took)
            ),
            format!(
                "`coffer audit verify` checked the exported log offline: {} entries, the hash \
                 chain and the Merkle root ({}…) recomputed, signed by the pinned key, \
                 consistent with the witness checkpoint of size {} kept before the backup. The \
                 backup's JobSucceeded, which commits to the object's size and SHA-256, is entry \
                 {} (its inclusion proof also checked with `coffer audit entry`), the restore's \
                 entry {}, the recovery key's export entry {}.",
                r.audit_size,
                &r.audit_root[..16.min(r.audit_root.len())],
                r.witness_size,
                r.backup_seq,
                r.restore_seq,
                r.export_seq
            ),
            "The agent, the server and the stack were stopped.".to_owned(),
        ];
        for (n, line) in lines.iter().enumerate() {
            writeln!(f, "  {:>2}. {line}", n + 1)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Source tables (row count and content checksum; both restores match them)"
        )?;
        write!(f, "{}", r.source)?;
        writeln!(f)?;
        writeln!(f, "Timings")?;
        for (what, took) in &r.laps {
            writeln!(f, "  {what:<60} {:>7}", secs(*took))?;
        }
        writeln!(f)?;
        writeln!(f, "Where things are")?;
        for (what, path) in &r.files {
            writeln!(f, "  {what:<18} {path}")?;
        }
        Ok(())
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn rate(bytes: u64, d: Duration) -> String {
    format!(
        "{:.1} MiB/s",
        bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(0.001)
    )
}
