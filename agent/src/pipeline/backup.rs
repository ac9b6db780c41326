//! Backup: `pg_dump | zstd | age` into fixed-size chunks on a bounded channel.
//!
//! # Why these zstd settings
//!
//! zstd's multithreaded compressor keeps, for `n` workers and job size `j`, a round buffer of
//! `max(window, n·j) + 3·j` bytes of input, one output buffer of about `j` per job in flight
//! (at most the jobs that fit in the round buffer), and one compression context per worker
//! (its match tables: `4·(2^hashLog + 2^chainLog)` bytes, set by the level). Left to its
//! defaults, level 3 (window 2 MiB) uses 8 MiB jobs: 40 MiB of round buffer with 2 workers,
//! 56 MiB with 4, plus as much again in output buffers, which alone breaks a 64 MiB budget.
//! So the job size is set to [`JOB_SIZE`] (1 MiB; zstd's minimum is 512 KiB), the window to
//! 2 MiB ([`WINDOW_LOG`], level 3's own), workers are capped at [`MAX_ZSTD_WORKERS`] and
//! levels at [`MAX_ZSTD_LEVEL`], whose tables are at most 3 MiB a worker. Estimated zstd
//! memory, level 3: about 13 MiB with 2 workers, 19 MiB with 4; level 6 with 4 workers about
//! 28 MiB. 1 MiB jobs cost a little ratio (each job sees only a 256 KiB overlap of the one
//! before), which a backup pipeline bound by the database's read speed does not miss.

use std::fs::File;
use std::io::{self, Read, Write};
use std::iter;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zstd::zstd_safe::CParameter;

use super::process::Program;
use super::{Error, MAX_HEADER_BYTES, Progress, header_len};

/// Size of the chunks sent to the sink (the last one may be shorter). The sink's channel
/// capacity times this is the memory the uploader side can hold back.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// The default zstd level: fast, and most of the ratio the higher levels get on dumps.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Highest zstd level accepted: level 7 and up grow the match tables to 12+ MiB a worker
/// (zstd's own parameter table), which with several workers breaks the memory budget.
pub const MAX_ZSTD_LEVEL: i32 = 6;

/// Most zstd workers: beyond 4 the round buffer and per-worker tables outgrow the budget, and
/// a dump rarely feeds more (pg_dump itself is one process).
pub const MAX_ZSTD_WORKERS: u32 = 4;

/// zstd job size: bounds the round buffer and each in-flight output buffer (module docs).
const JOB_SIZE: u32 = 1024 * 1024;

/// zstd window: 2 MiB for every level, so restore's window cap always has headroom and the
/// memory estimate holds at every accepted level.
const WINDOW_LOG: u32 = 21;

/// How much of the dump's output is read at a time.
const READ_SIZE: usize = 128 * 1024;

/// What to dump and how to compress and encrypt it.
#[derive(Debug)]
pub struct BackupSpec {
    /// The dump program: `pg_dump` (with `--format=custom --compress=0`) or `mariadb-dump`.
    pub program: std::path::PathBuf,
    /// Its arguments; the dump must go to stdout.
    pub args: Vec<std::ffi::OsString>,
    /// Variables added to its environment, e.g. `PGPASSWORD`: never logged, and redacted from
    /// the stderr an error message carries.
    pub env: Vec<(std::ffi::OsString, secrecy::SecretString)>,
    /// The org's age X25519 recipient: the only key the backup is encrypted to (P1).
    pub recipient: age::x25519::Recipient,
    /// zstd level, 1 to [`MAX_ZSTD_LEVEL`].
    pub zstd_level: i32,
    /// zstd worker threads, 1 to [`MAX_ZSTD_WORKERS`].
    pub zstd_threads: u32,
}

impl BackupSpec {
    /// A spec with no arguments or environment, level [`DEFAULT_ZSTD_LEVEL`], and one zstd
    /// worker per available core up to [`MAX_ZSTD_WORKERS`].
    pub fn new(program: impl Into<std::path::PathBuf>, recipient: age::x25519::Recipient) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            recipient,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            zstd_threads: u32::try_from(cores)
                .unwrap_or(MAX_ZSTD_WORKERS)
                .clamp(1, MAX_ZSTD_WORKERS),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if !(1..=MAX_ZSTD_LEVEL).contains(&self.zstd_level) {
            return Err(Error::Invalid(format!(
                "zstd level {} is outside 1..={MAX_ZSTD_LEVEL}",
                self.zstd_level
            )));
        }
        if !(1..=MAX_ZSTD_WORKERS).contains(&self.zstd_threads) {
            return Err(Error::Invalid(format!(
                "{} zstd threads is outside 1..={MAX_ZSTD_WORKERS}",
                self.zstd_threads
            )));
        }
        Ok(())
    }
}

/// What a finished backup is: what the completion event records and the audit log commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOutcome {
    /// Bytes of the age file (all chunks sent to the sink).
    pub size_bytes: u64,
    /// SHA-256 of the whole age file, lowercase hex.
    pub sha256: String,
    /// SHA-256 of its age header (from the start through the `--- <mac>` line), lowercase
    /// hex: how a restore ticket names the file key it may unwrap.
    pub age_header_sha256: String,
    /// The recipient it is encrypted to (`age1…`).
    pub recipient: String,
    /// Bytes the dump program wrote (the uncompressed dump's size).
    pub bytes_read: u64,
}

/// Runs `spec.program` and streams its output, compressed and encrypted to `spec.recipient`,
/// into `sink` in [`CHUNK_SIZE`] chunks.
///
/// `sink` is the uploader's bounded channel: when it is full, the pipeline waits, and so does
/// the dump program on its full pipe, so memory stays bounded whatever the uploader's speed.
///
/// The last chunk is sent only after the dump program exited successfully: a failed or
/// cancelled dump never hands the uploader a complete age file, and a receiver that sees the
/// channel close without that chunk holds a truncated file that does not decrypt. Even so the
/// uploader must treat the object as complete only when this returns `Ok`.
///
/// Errors: the program's non-zero exit (with its stderr tail), [`Error::SinkClosed`] if the
/// receiver is dropped, [`Error::Cancelled`] once `cancel` fires. In each case the program is
/// killed.
pub async fn backup(
    spec: BackupSpec,
    sink: mpsc::Sender<Bytes>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<BackupOutcome, Error> {
    spec.validate()?;
    let mut program = Program::spawn(
        &spec.program,
        &spec.args,
        &spec.env,
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
    )?;
    let stdout = program
        .child
        .stdout
        .take()
        .expect("stdout is piped")
        .into_owned_fd()
        .map(File::from)
        .map_err(|source| Error::ReadDump {
            program: program.name.clone(),
            source,
        })?;

    let recipient = spec.recipient.to_string();
    let chunks = Chunker::new(
        sink.clone(),
        Handle::current(),
        cancel.clone(),
        progress.clone(),
    );
    let encode = {
        let cancel = cancel.clone();
        let progress = progress.clone();
        let name = program.name.clone();
        tokio::task::spawn_blocking(move || {
            encode(
                stdout,
                &name,
                &spec.recipient,
                spec.zstd_level,
                spec.zstd_threads,
                chunks,
                &progress,
                &cancel,
            )
        })
    };

    // A dump blocked in the database (waiting on a lock, say) writes nothing, so the encode
    // thread only notices cancellation once the program is killed and its stdout closes.
    let encoded = tokio::select! {
        joined = encode => joined.map_err(|e| Error::Task(e.to_string()))?,
        () = cancel.cancelled() => {
            program.kill().await;
            return Err(Error::Cancelled);
        }
    };
    let encoded = match encoded {
        Ok(encoded) => encoded,
        Err(error) => {
            program.kill().await;
            return Err(error);
        }
    };

    // The dump's stdout is closed; its exit status says whether what it wrote is whole.
    tokio::select! {
        checked = program.check() => checked?,
        () = cancel.cancelled() => return Err(Error::Cancelled),
    }

    let last_len = encoded.last.len();
    tokio::select! {
        sent = sink.send(encoded.last) => sent.map_err(|_| Error::SinkClosed)?,
        () = cancel.cancelled() => return Err(Error::Cancelled),
    }
    progress.add_written(last_len);

    let outcome = BackupOutcome {
        size_bytes: encoded.size,
        sha256: hex::encode(encoded.sha256),
        age_header_sha256: hex::encode(encoded.header_sha256),
        recipient,
        bytes_read: encoded.bytes_read,
    };
    tracing::debug!(
        size_bytes = outcome.size_bytes,
        bytes_read = outcome.bytes_read,
        sha256 = %outcome.sha256,
        "backup encoded"
    );
    Ok(outcome)
}

/// The encode thread's result: everything but the withheld last chunk has been sent.
struct Encoded {
    last: Bytes,
    size: u64,
    sha256: [u8; 32],
    header_sha256: [u8; 32],
    bytes_read: u64,
}

/// The blocking half: reads the dump, compresses, encrypts, and hands chunks to `chunks`.
#[allow(clippy::too_many_arguments)]
fn encode(
    mut dump: File,
    program: &str,
    recipient: &age::x25519::Recipient,
    level: i32,
    workers: u32,
    chunks: Chunker,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Encoded, Error> {
    let encryptor = age::Encryptor::with_recipients(iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| Error::Encode(io::Error::other(e.to_string())))?;
    let encrypted = encryptor.wrap_output(chunks).map_err(stopped)?;
    let mut compressed =
        zstd::stream::write::Encoder::new(encrypted, level).map_err(Error::Encode)?;
    for parameter in [
        CParameter::NbWorkers(workers),
        CParameter::JobSize(JOB_SIZE),
        CParameter::WindowLog(WINDOW_LOG),
        // age already authenticates every byte; the frame checksum makes `zstd -d` (P7) and
        // our own decoder catch a compressor fault as well.
        CParameter::ChecksumFlag(true),
    ] {
        compressed.set_parameter(parameter).map_err(Error::Encode)?;
    }

    let mut buf = vec![0u8; READ_SIZE];
    let mut bytes_read = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = match dump.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::ReadDump {
                    program: program.to_owned(),
                    source,
                });
            }
        };
        bytes_read += n as u64;
        progress.add_read(n);
        compressed.write_all(&buf[..n]).map_err(stopped)?;
    }
    // The buffer held plaintext; it goes before the thread ends rather than with the heap.
    zeroize::Zeroize::zeroize(&mut buf);

    let encrypted = compressed.finish().map_err(stopped)?;
    let chunks = encrypted.finish().map_err(stopped)?;
    chunks.finish(bytes_read)
}

/// Why the chunker refused bytes: carried inside the `io::Error` zstd and age pass back up.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("the sink is closed")]
    SinkClosed,
    #[error("cancelled")]
    Cancelled,
}

/// Maps an error from the zstd/age writer chain: the chunker's own stops keep their meaning.
fn stopped(error: io::Error) -> Error {
    match error.get_ref().and_then(|e| e.downcast_ref::<Stop>()) {
        Some(Stop::SinkClosed) => Error::SinkClosed,
        Some(Stop::Cancelled) => Error::Cancelled,
        None => Error::Encode(error),
    }
}

/// The end of the pipeline: hashes every ciphertext byte (and the header on its own), counts
/// them, and sends them on in [`CHUNK_SIZE`] chunks, always holding back the latest one.
struct Chunker {
    sink: mpsc::Sender<Bytes>,
    runtime: Handle,
    cancel: CancellationToken,
    progress: Arc<Progress>,
    /// The chunk being filled.
    filling: BytesMut,
    /// The latest full chunk, not sent until the next one fills (or the dump succeeds).
    held: Option<Bytes>,
    sha256: Sha256,
    size: u64,
    /// The file's first bytes until the header's MAC line is complete; then its hash.
    header: HeaderHash,
}

enum HeaderHash {
    Reading(Vec<u8>),
    Done([u8; 32]),
}

impl Chunker {
    fn new(
        sink: mpsc::Sender<Bytes>,
        runtime: Handle,
        cancel: CancellationToken,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            sink,
            runtime,
            cancel,
            progress,
            filling: BytesMut::with_capacity(CHUNK_SIZE),
            held: None,
            sha256: Sha256::new(),
            size: 0,
            header: HeaderHash::Reading(Vec::new()),
        }
    }

    /// Sends `chunk`, waiting while the channel is full, unless cancelled.
    fn send(&self, chunk: Bytes) -> io::Result<()> {
        let len = chunk.len();
        // This thread is a blocking one, so it may wait on the runtime here; waiting on the
        // token as well lets cancellation through even when the uploader has stalled.
        let sent = self.runtime.block_on(async {
            tokio::select! {
                sent = self.sink.send(chunk) => sent.map_err(|_| Stop::SinkClosed),
                () = self.cancel.cancelled() => Err(Stop::Cancelled),
            }
        });
        sent.map_err(io::Error::other)?;
        self.progress.add_written(len);
        Ok(())
    }

    fn hash_header(&mut self, bytes: &[u8]) -> io::Result<()> {
        let HeaderHash::Reading(prefix) = &mut self.header else {
            return Ok(());
        };
        prefix.extend_from_slice(bytes);
        if let Some(len) = header_len(prefix) {
            self.header = HeaderHash::Done(Sha256::digest(&prefix[..len]).into());
        } else if prefix.len() > MAX_HEADER_BYTES {
            return Err(io::Error::other("age wrote a header without a MAC line"));
        }
        Ok(())
    }

    /// The last chunk (not sent), and the file's size and hashes.
    fn finish(mut self, bytes_read: u64) -> Result<Encoded, Error> {
        let HeaderHash::Done(header_sha256) = self.header else {
            return Err(Error::Encode(io::Error::other(
                "age wrote a header without a MAC line",
            )));
        };
        // Of the held full chunk and the partial one, only the very last bytes are withheld.
        let last = if self.filling.is_empty() {
            self.held.take().unwrap_or_default()
        } else {
            if let Some(held) = self.held.take() {
                self.send(held).map_err(stopped)?;
            }
            self.filling.split().freeze()
        };
        Ok(Encoded {
            last,
            size: self.size,
            sha256: self.sha256.finalize().into(),
            header_sha256,
            bytes_read,
        })
    }
}

impl Write for Chunker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash_header(buf)?;
        self.sha256.update(buf);
        self.size += buf.len() as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            let take = rest.len().min(CHUNK_SIZE - self.filling.len());
            self.filling.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.filling.len() == CHUNK_SIZE {
                let full = self.filling.split().freeze();
                self.filling.reserve(CHUNK_SIZE);
                if let Some(previous) = self.held.replace(full) {
                    self.send(previous)?;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
