//! Restore: a backup's bytes → age (opened with a file key) → zstd (capped) → `pg_restore`.
//!
//! The agent never holds the org's private key (P6): the credentials service unwraps the file
//! key from the header [`read_age_header`] returns, for this job only, and age checks the
//! header MAC with it, so a wrong key fails before any payload is read.
//!
//! The restore program sees the end of its input only after the whole object's SHA-256
//! matched the recorded one: the last [`HOLD_BACK`] bytes of plaintext are held until then, and
//! on a mismatch the program is killed instead. Callers run `pg_restore --single-transaction`,
//! so a killed restore commits nothing. (For `mariadb`, which applies statements as they
//! arrive, the hold-back only keeps the tail out; it cannot roll back what ran.)
//!
//! Memory: the source is read in 64 KiB pieces through a 4-deep channel; age holds one 64 KiB
//! chunk; the zstd decoder holds its window (at most `2^max_window_log`, 8 MiB by default)
//! and a 128 KiB block; the hold-back at most 2·[`HOLD_BACK`] + 128 KiB. About 10 MiB in all.

use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Write};
use std::iter;
use std::sync::Arc;

use age_core::format::{FileKey as AgeFileKey, Stanza};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::process::Program;
use super::{AGE_INTRO, Error, FileKey, MAC_LINE, MAX_HEADER_BYTES, Progress, header_len};

/// The default zstd window cap: 8 MiB. Coffer's own backups use a 2 MiB window; 8 MiB admits
/// what stock `zstd` writes up to level 19 (`zstd -19` on a large input) while keeping the
/// decoder's memory well inside the agent's budget. Stock `zstd -d` allows 128 MiB (27).
pub const DEFAULT_MAX_WINDOW_LOG: u32 = 23;

/// zstd's smallest and largest window logs (64-bit builds).
const WINDOW_LOG_RANGE: std::ops::RangeInclusive<u32> = 10..=31;

/// Plaintext held back from the restore program until the object's hash matched. Large
/// enough that it always holds the end of a pg_restore archive's last data block.
const HOLD_BACK: usize = 256 * 1024;

/// Size of the pieces the source is read in, and how many may wait for the decoder.
const FEED_SIZE: usize = 64 * 1024;
const FEED_DEPTH: usize = 4;

/// How much decompressed output is read at a time.
const READ_SIZE: usize = 128 * 1024;

/// age's stanza tag for X25519 recipients, the only kind Coffer encrypts to.
const X25519_TAG: &str = "X25519";

/// Where to restore a backup to, and the limits its contents must respect.
#[derive(Debug)]
pub struct RestoreSpec {
    /// The restore program: `pg_restore` (with `--single-transaction`) or `mariadb`.
    pub program: std::path::PathBuf,
    /// Its arguments; it must read the dump from stdin.
    pub args: Vec<std::ffi::OsString>,
    /// Variables added to its environment, e.g. `PGPASSWORD`: never logged, and redacted from
    /// the stderr an error message carries.
    pub env: Vec<(std::ffi::OsString, secrecy::SecretString)>,
    /// The largest zstd window accepted, as a power of two (see [`DEFAULT_MAX_WINDOW_LOG`]).
    pub max_window_log: u32,
    /// The most decompressed bytes accepted: the backup's recorded `bytes_read` (its dump
    /// size) is the natural value. Past it the restore stops: a zstd bomb is refused.
    pub max_output_bytes: u64,
}

impl RestoreSpec {
    /// A spec with no arguments or environment and the default window cap.
    pub fn new(program: impl Into<std::path::PathBuf>, max_output_bytes: u64) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            max_window_log: DEFAULT_MAX_WINDOW_LOG,
            max_output_bytes,
        }
    }
}

/// What a finished restore read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Bytes of the age file read, header included.
    pub size_bytes: u64,
    /// Its SHA-256, lowercase hex: the expected one.
    pub sha256: String,
    /// Decompressed bytes handed to the restore program.
    pub bytes_written: u64,
}

/// Reads a backup's age header from the start of `source`: exactly the bytes through the
/// `--- <mac>` line, at most [`MAX_HEADER_BYTES`], so the credentials service can unwrap its
/// file key. Reads one byte at a time so that nothing past the header is consumed: pass the
/// same reader on to [`restore`] (wrap a raw socket in a `BufReader` first, and pass that).
pub async fn read_age_header(source: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, Error> {
    let mut header = Vec::with_capacity(256);
    let mut line_start = 0;
    loop {
        if header.len() == MAX_HEADER_BYTES {
            return Err(Error::Header(format!(
                "the header is longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        let byte = match source.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(if header.is_empty() {
                    Error::Header("the backup is empty".into())
                } else {
                    Error::Truncated("it ends inside its age header".into())
                });
            }
            Err(e) => return Err(Error::Source(e)),
        };
        if let Some(&expected) = AGE_INTRO.get(header.len())
            && byte != expected
        {
            return Err(Error::Header(
                "it does not start with `age-encryption.org/v1`".into(),
            ));
        }
        header.push(byte);
        if byte == b'\n' {
            if header[line_start..].starts_with(MAC_LINE) {
                return Ok(header);
            }
            line_start = header.len();
        }
    }
}

/// Restores the backup whose header is `header` and whose remaining bytes are `rest`, into
/// `spec.program`'s stdin.
///
/// `file_key` is the backup's file key (from the credentials service); `expected_sha256` the
/// SHA-256 recorded for the whole object, hex. Fails, killing the program before it sees the
/// end of its input, on a wrong key, a truncated or altered object (age authenticates every
/// 64 KiB chunk and flags the last), a hash mismatch, a zstd frame over the window cap, or
/// output over the output cap. Otherwise the program's exit status decides.
pub async fn restore(
    header: Vec<u8>,
    rest: impl AsyncRead + Unpin + Send + 'static,
    file_key: FileKey,
    expected_sha256: &str,
    spec: RestoreSpec,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<RestoreOutcome, Error> {
    let expected = parse_sha256(expected_sha256)?;
    if !WINDOW_LOG_RANGE.contains(&spec.max_window_log) {
        return Err(Error::Invalid(format!(
            "max_window_log {} is outside {WINDOW_LOG_RANGE:?}",
            spec.max_window_log
        )));
    }
    if header_len(&header) != Some(header.len()) || !header.starts_with(AGE_INTRO) {
        return Err(Error::Header(
            "the header must run from `age-encryption.org/v1` through its `--- <mac>` line".into(),
        ));
    }

    let mut program = Program::spawn(
        &spec.program,
        &spec.args,
        &spec.env,
        std::process::Stdio::piped(),
        std::process::Stdio::null(),
    )?;
    let stdin = program
        .child
        .stdin
        .take()
        .expect("stdin is piped")
        .into_owned_fd()
        .map(File::from)
        .map_err(|e| Error::Task(format!("take {}'s stdin: {e}", program.name)))?;

    let mut hasher = Sha256::new();
    hasher.update(&header);
    progress.add_read(header.len());
    let (pieces, pieces_rx) = mpsc::channel(FEED_DEPTH);
    let (digest, digest_rx) = oneshot::channel();
    let header_len = header.len() as u64;
    let feeder = tokio::spawn(feed(
        rest,
        header_len,
        pieces,
        hasher,
        progress.clone(),
        digest,
    ));

    let limits = Limits {
        max_window_log: spec.max_window_log,
        max_output_bytes: spec.max_output_bytes,
    };
    let decode = {
        let progress = progress.clone();
        let cancel = cancel.clone();
        let mut stdin = stdin;
        tokio::task::spawn_blocking(move || {
            let decoded = decode(
                header, pieces_rx, &file_key, limits, &mut stdin, digest_rx, expected, &progress,
                &cancel,
            );
            // Closing stdin is the program's end of input: only once all of it is there.
            // On failure the pipe stays open until the program is killed, so it never sees
            // an end of input it might take for a whole archive.
            match decoded {
                Ok(decoded) => {
                    drop(stdin);
                    (Ok(decoded), None)
                }
                Err(failure) => (Err(failure), Some(stdin)),
            }
        })
    };

    let decoded = tokio::select! {
        joined = decode => joined.map_err(|e| Error::Task(e.to_string())),
        () = cancel.cancelled() => Err(Error::Cancelled),
    };
    let decoded = match decoded {
        Ok((Ok(decoded), _)) => decoded,
        Ok((Err(Failure::ProgramGone(write_error)), _)) => {
            // The program closed its stdin early: its own exit status and stderr say why.
            feeder.abort();
            let name = program.name.clone();
            // Dropping the wait on cancellation kills the program (`kill_on_drop`).
            tokio::select! {
                checked = program.check() => checked?,
                () = cancel.cancelled() => return Err(Error::Cancelled),
            }
            tracing::debug!(program = %name, error = %write_error, "stopped reading");
            return Err(Error::ProgramStoppedReading { program: name });
        }
        Ok((Err(Failure::Error(error)), stdin)) => {
            feeder.abort();
            program.kill().await;
            drop(stdin);
            return Err(error);
        }
        Err(error) => {
            feeder.abort();
            program.kill().await;
            return Err(error);
        }
    };

    tokio::select! {
        checked = program.check() => checked?,
        () = cancel.cancelled() => return Err(Error::Cancelled),
    }
    Ok(RestoreOutcome {
        size_bytes: decoded.size_bytes,
        sha256: hex::encode(expected),
        bytes_written: decoded.bytes_written,
    })
}

fn parse_sha256(hex_digest: &str) -> Result<[u8; 32], Error> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest)
        .map_err(|_| Error::Invalid("the expected SHA-256 must be 64 hex digits".into()))?;
    Ok(digest)
}

/// Reads `rest` to its end, hashing every byte, and hands it on in pieces; then sends the
/// whole object's digest and size (`size` counts the header already hashed). The digest goes
/// out before the channel closes, so the decoder, which sees the channel's end only after age
/// read the final chunk, always finds it.
async fn feed(
    mut rest: impl AsyncRead + Unpin,
    mut size: u64,
    pieces: mpsc::Sender<io::Result<Bytes>>,
    mut hasher: Sha256,
    progress: Arc<Progress>,
    digest: oneshot::Sender<SourceDigest>,
) {
    loop {
        let mut piece = BytesMut::with_capacity(FEED_SIZE);
        match rest.read_buf(&mut piece).await {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&piece);
                size += n as u64;
                progress.add_read(n);
                if pieces.send(Ok(piece.freeze())).await.is_err() {
                    // The decoder stopped; it reports why.
                    return;
                }
            }
            Err(e) => {
                let _ = pieces.send(Err(e)).await;
                return;
            }
        }
    }
    let _ = digest.send(SourceDigest {
        sha256: hasher.finalize().into(),
        size,
    });
}

/// The whole object's SHA-256 and length, as read from the source.
struct SourceDigest {
    sha256: [u8; 32],
    size: u64,
}

#[derive(Clone, Copy)]
struct Limits {
    max_window_log: u32,
    max_output_bytes: u64,
}

struct Decoded {
    /// Bytes of the object read, header included.
    size_bytes: u64,
    bytes_written: u64,
}

/// How the decode thread stopped short.
enum Failure {
    /// Writing to the program failed: it exited or closed its stdin.
    ProgramGone(io::Error),
    Error(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::Error(error)
    }
}

/// The blocking half: decrypts, decompresses within `limits`, and writes to the program,
/// holding back the last [`HOLD_BACK`] bytes until the object's digest equals `expected`.
#[allow(clippy::too_many_arguments)]
fn decode(
    header: Vec<u8>,
    pieces: mpsc::Receiver<io::Result<Bytes>>,
    file_key: &FileKey,
    limits: Limits,
    stdin: &mut File,
    digest: oneshot::Receiver<SourceDigest>,
    expected: [u8; 32],
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Decoded, Failure> {
    let ciphertext = BufReader::with_capacity(
        FEED_SIZE,
        Read::chain(
            Cursor::new(header),
            Pieces {
                pieces,
                current: Bytes::new(),
            },
        ),
    );
    let decryptor =
        age::Decryptor::new_buffered(ciphertext).map_err(|e| opening_error(e, cancel))?;
    let identity = FileKeyIdentity(file_key);
    let plaintext = decryptor
        .decrypt(iter::once(&identity as &dyn age::Identity))
        .map_err(|e| opening_error(e, cancel))?;
    let mut decompressed = zstd::stream::read::Decoder::new(Payload(plaintext))
        .map_err(|e| decompress_error(e, limits, cancel))?;
    decompressed
        .window_log_max(limits.max_window_log)
        .map_err(|e| decompress_error(e, limits, cancel))?;

    let mut buf = Zeroizing::new(vec![0u8; READ_SIZE]);
    let mut held = Zeroizing::new(Vec::with_capacity(2 * HOLD_BACK + READ_SIZE));
    let mut total = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled.into());
        }
        let n = match decompressed.read(&mut buf[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(decompress_error(e, limits, cancel).into()),
        };
        total += n as u64;
        if total > limits.max_output_bytes {
            return Err(Error::OutputTooLarge {
                cap: limits.max_output_bytes,
            }
            .into());
        }
        held.extend_from_slice(&buf[..n]);
        if held.len() >= 2 * HOLD_BACK {
            let release = held.len() - HOLD_BACK;
            stdin
                .write_all(&held[..release])
                .map_err(Failure::ProgramGone)?;
            progress.add_written(release);
            held.drain(..release);
        }
    }
    drop(decompressed);

    // age returned its end only after the source's end, so the digest has been sent.
    let SourceDigest {
        sha256: actual,
        size,
    } = digest
        .blocking_recv()
        .map_err(|_| Error::Source(io::Error::other("the backup's reader stopped early")))?;
    if actual != expected {
        return Err(Error::ChecksumMismatch {
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        }
        .into());
    }
    stdin.write_all(&held).map_err(Failure::ProgramGone)?;
    progress.add_written(held.len());
    Ok(Decoded {
        size_bytes: size,
        bytes_written: total,
    })
}

/// age's view of the file key: every X25519 stanza "unwraps" to it. age then checks the
/// header MAC with it, so a key that does not belong to this header fails there.
struct FileKeyIdentity<'a>(&'a FileKey);

impl age::Identity for FileKeyIdentity<'_> {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<AgeFileKey, age::DecryptError>> {
        (stanza.tag == X25519_TAG).then(|| {
            Ok(AgeFileKey::init_with_mut(|key| {
                key.copy_from_slice(self.0.expose())
            }))
        })
    }
}

/// The source's bytes, from the feeder's channel.
struct Pieces {
    pieces: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.pieces.blocking_recv() {
                None => return Ok(0),
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => return Err(io::Error::new(e.kind(), SourceError(e))),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Marks an error as the source's, as it passes up through age and zstd.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SourceError(io::Error);

/// Marks an error as age's (or the source's beneath it), as it passes up through zstd.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PayloadError(io::Error);

/// The decrypted payload; its errors are marked so they are not taken for zstd's.
struct Payload<R>(R);

impl<R: Read> Read for Payload<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), PayloadError(e)))
    }
}

fn inner<T: std::error::Error + 'static>(error: &io::Error) -> Option<&T> {
    error.get_ref().and_then(|e| e.downcast_ref::<T>())
}

/// An error from reading the header, nonce and key.
fn opening_error(error: age::DecryptError, cancel: &CancellationToken) -> Error {
    if cancel.is_cancelled() {
        return Error::Cancelled;
    }
    match error {
        age::DecryptError::InvalidMac => Error::WrongKey,
        age::DecryptError::Io(e) => payload_io_error(&e),
        age::DecryptError::NoMatchingKeys => {
            Error::Header("it has no X25519 recipient stanza".into())
        }
        other => Error::Header(other.to_string()),
    }
}

/// An error from age's payload stream or the source below it.
fn payload_io_error(error: &io::Error) -> Error {
    if let Some(SourceError(source)) = inner::<SourceError>(error) {
        return Error::Source(io::Error::new(source.kind(), source.to_string()));
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated(error.to_string()),
        _ => Error::Corrupt(format!("a payload chunk fails authentication ({error})")),
    }
}

/// An error from the zstd decoder: its own (the frame is refused), or age's passed up.
fn decompress_error(error: io::Error, limits: Limits, cancel: &CancellationToken) -> Error {
    if cancel.is_cancelled() {
        return Error::Cancelled;
    }
    if let Some(PayloadError(payload)) = inner::<PayloadError>(&error) {
        return payload_io_error(payload);
    }
    Error::Decompress {
        window_log: limits.max_window_log,
        reason: error.to_string(),
    }
}
