//! The streaming pipelines between a database tool and a bucket.
//!
//! - [`backup`]: `pg_dump` (or `mariadb-dump`) → zstd (multithreaded) → age, to the org's X25519
//!   recipient → SHA-256 → fixed-size chunks into a bounded channel the uploader drains.
//! - [`restore`]: the backup's bytes → age, opened with the file key the credentials service
//!   unwrapped for this job → zstd with its window and output capped → `pg_restore` (or
//!   `mariadb`), which sees the end of its input only once the whole object's SHA-256 matched.
//!
//! Both are bounded in memory whatever the database size, and neither writes a byte to local
//! disk: plaintext lives only in the pipes between the database tool and these pipelines and in
//! their fixed buffers. The CPU-bound stages (zstd, age) run on one blocking thread per
//! pipeline; the async side only spawns, watches and cancels.
//!
//! # Memory budget (backup)
//!
//! The target is a peak RSS under 64 MiB for the whole agent process, whatever the dump size.
//! zstd's multithreaded compressor is the one stage whose memory is not obviously small, so its
//! settings are fixed here rather than left to zstd's defaults (see [`backup`] for the numbers):
//! window 2 MiB, 1 MiB jobs, at most [`MAX_ZSTD_WORKERS`] workers, levels up to
//! [`MAX_ZSTD_LEVEL`]. Expected peak for level 3 with 4 workers: about 20 MiB in zstd, 2 MiB
//! held by the chunker, plus the sink channel's capacity in 1 MiB chunks; with a 4-chunk channel
//! and a base process of ~10 MiB, about 36 MiB, independent of the database size (1 GB or 4 GB
//! alike: nothing scales with the input).

mod backup;
mod process;
mod restore;

use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::{ExposeSecret, SecretBox};

pub use backup::{
    BackupOutcome, BackupSpec, CHUNK_SIZE, DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL, MAX_ZSTD_WORKERS,
    backup,
};
pub use restore::{DEFAULT_MAX_WINDOW_LOG, RestoreOutcome, RestoreSpec, read_age_header, restore};

/// Largest age header accepted: room for hundreds of recipient stanzas. The credentials
/// service applies the same limit to the header it unwraps a file key from.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The first line of every age v1 file.
const AGE_INTRO: &[u8] = b"age-encryption.org/v1\n";

/// What the header's last line (the MAC) starts with; stanza lines start with `-> ` and
/// stanza bodies are base64, so no other header line can.
const MAC_LINE: &[u8] = b"--- ";

/// Why a backup or restore stopped. Messages name the stage and the reason and never carry
/// key material or a secret from the program's environment (those are redacted from its
/// stderr before it is kept).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec asks for something the pipeline refuses (a zstd level that would break the
    /// memory budget, a malformed expected hash, …).
    #[error("invalid pipeline settings: {0}")]
    Invalid(String),
    /// The database tool could not be started.
    #[error("start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The database tool exited unsuccessfully; `stderr` is the end of what it printed.
    #[error("{program} failed ({status}): {stderr}")]
    ProgramFailed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// The restore program exited successfully without reading all of the backup.
    #[error("{program} exited before reading the whole backup")]
    ProgramStoppedReading { program: String },
    /// Reading the dump program's output failed.
    #[error("read {program}'s output: {source}")]
    ReadDump {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Compressing or encrypting failed (not for lack of a receiver).
    #[error("compress and encrypt the dump: {0}")]
    Encode(#[source] std::io::Error),
    /// The receiver of the backup's chunks went away before the backup finished.
    #[error("the upload stopped taking backup bytes before the backup finished")]
    SinkClosed,
    /// The caller cancelled; the database tool was killed.
    #[error("cancelled")]
    Cancelled,
    /// The bytes do not start with a well-formed age v1 header.
    #[error("not an age backup: {0}")]
    Header(String),
    /// The file key does not open this backup: the header MAC does not verify under it.
    #[error("the file key does not open this backup (its header MAC does not verify)")]
    WrongKey,
    /// The backup ends early: age's final-chunk flag was never seen.
    #[error("the backup is truncated: {0}")]
    Truncated(String),
    /// A payload chunk fails authentication: the bytes were altered (or cut inside a chunk).
    #[error("the backup is corrupt or truncated: {0}")]
    Corrupt(String),
    /// Reading the backup's bytes from their source failed.
    #[error("read the backup: {0}")]
    Source(#[source] std::io::Error),
    /// The decrypted bytes are not a zstd stream this pipeline accepts, e.g. a frame whose
    /// window is larger than the cap.
    #[error("decompress the backup (window limit 2^{window_log} bytes): {reason}")]
    Decompress { window_log: u32, reason: String },
    /// The backup decompresses to more than the spec's output cap: a zstd bomb is refused.
    #[error("the backup decompresses to more than the {cap}-byte output limit; refused")]
    OutputTooLarge { cap: u64 },
    /// The whole object's SHA-256 is not the one recorded for the backup.
    #[error("the backup's SHA-256 is {actual}, not the recorded {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    /// A pipeline thread panicked or was lost.
    #[error("pipeline task failed: {0}")]
    Task(String),
}

/// Byte counters of a running pipeline, read by a heartbeat task elsewhere while it runs.
///
/// Backup: `bytes_read` counts the dump's (plaintext) bytes, `bytes_written` the ciphertext
/// bytes handed to the sink. Restore: `bytes_read` counts ciphertext bytes read (header
/// included), `bytes_written` plaintext bytes handed to the restore program.
#[derive(Debug, Default)]
pub struct Progress {
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

impl Progress {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read so far (see the type's docs for which bytes).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes written so far (see the type's docs for which bytes).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    fn add_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_written(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The 16-byte age file key of one backup, as the credentials service unwraps it for a restore
/// job. Never printed; zeroed when dropped.
pub struct FileKey(SecretBox<[u8; 16]>);

impl FileKey {
    /// Takes a file key from the bytes the credentials service returned; they must be exactly
    /// 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != 16 {
            return Err(Error::Invalid(format!(
                "an age file key is 16 bytes, not {}",
                bytes.len()
            )));
        }
        Ok(Self(SecretBox::init_with_mut(|key: &mut [u8; 16]| {
            key.copy_from_slice(bytes)
        })))
    }

    fn expose(&self) -> &[u8; 16] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey([REDACTED])")
    }
}

/// The length of the age header at the start of `bytes`, through the `--- <mac>\n` line, or
/// `None` while that line is not complete yet.
fn header_len(bytes: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    while let Some(offset) = bytes[line_start..].iter().position(|&b| b == b'\n') {
        let line_end = line_start + offset + 1;
        if bytes[line_start..line_end].starts_with(MAC_LINE) {
            return Some(line_end);
        }
        line_start = line_end;
    }
    None
}

/// The file name of a program path, for messages: `pg_dump`, not `/usr/lib/…/pg_dump`.
fn program_name(program: &std::path::Path) -> String {
    program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_len_ends_after_the_mac_line() {
        let header = b"age-encryption.org/v1\n-> X25519 abc\nZGVm\n--- bWFj\n";
        let mut file = header.to_vec();
        file.extend_from_slice(b"\x00\x01binary payload\n--- not a header line\n");
        assert_eq!(header_len(&file), Some(header.len()));
        assert_eq!(header_len(&header[..header.len() - 1]), None);
    }

    #[test]
    fn file_keys_never_print() {
        let key = FileKey::from_slice(&[7; 16]).unwrap();
        assert_eq!(format!("{key:?}"), "FileKey([REDACTED])");
        assert!(FileKey::from_slice(&[7; 15]).is_err());
    }
}
