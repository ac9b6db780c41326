//! The backup and restore pipelines against the private stack's PostgreSQL, with the stock
//! `pg_dump`, `pg_restore`, `age` and `zstd` programs: no mocks.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret as _;
use bytes::Bytes;
use coffer_agent::pipeline::{
    self, BackupOutcome, BackupSpec, CHUNK_SIZE, Error, FileKey, Progress, RestoreSpec,
};
use coffer_testkit::{TestDb, eventually, superuser_url, unique};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Appears in the seeded data: must never appear in a backup's bytes (P1).
const PLAINTEXT_CANARY: &str = "plaintext-canary-5b1e0c";

/// The database tool's password in tests that must show it never surfaces.
const PASSWORD_CANARY: &str = "pw-canary-7f3a9d21";

fn url(db: &TestDb) -> String {
    database_url(&db.name)
}

fn database_url(name: &str) -> String {
    let superuser = superuser_url();
    let base = superuser.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

/// A few tables with enough rows that the backup spans several chunks and pg_restore has
/// created tables and loaded rows by the time a late failure reaches it.
async fn seed(pool: &PgPool) {
    sqlx::raw_sql(&format!(
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, note text);
         INSERT INTO customers
           SELECT i, 'customer ' || i, md5(i::text) || md5((i * 7)::text)
           FROM generate_series(1, 60000) i;
         CREATE TABLE orders (
           id bigint PRIMARY KEY,
           customer_id bigint NOT NULL REFERENCES customers (id),
           amount numeric(12, 2) NOT NULL,
           placed_at timestamptz NOT NULL);
         INSERT INTO orders
           SELECT i, 1 + i % 60000, (i % 1000) / 7.0,
                  timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute'
           FROM generate_series(1, 100000) i;
         CREATE INDEX orders_by_customer ON orders (customer_id);
         CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
         INSERT INTO notes (body) VALUES ('{PLAINTEXT_CANARY}'), ('second note');"
    ))
    .execute(pool)
    .await
    .unwrap();
}

/// Per table of `public`: its name, row count and a checksum of its rows.
async fn fingerprint(pool: &PgPool) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let (count, checksum): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')
             FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((table, count, checksum));
    }
    out
}

async fn table_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn dump_spec(database_url: &str, recipient: age::x25519::Recipient) -> BackupSpec {
    let mut spec = BackupSpec::new("pg_dump", recipient);
    spec.args = ["--format=custom", "--compress=0", "--dbname", database_url]
        .map(Into::into)
        .to_vec();
    spec.env = vec![("PGPASSWORD".into(), PASSWORD_CANARY.into())];
    spec
}

fn restore_spec(database_url: &str, max_output_bytes: u64) -> RestoreSpec {
    let mut spec = RestoreSpec::new("pg_restore", max_output_bytes);
    spec.args = [
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--dbname",
        database_url,
    ]
    .map(Into::into)
    .to_vec();
    spec
}

/// Runs a backup into a channel of `capacity` chunks, collecting every chunk.
async fn run_backup(
    spec: BackupSpec,
    capacity: usize,
) -> (Result<BackupOutcome, Error>, Vec<Bytes>, Arc<Progress>) {
    let (tx, mut rx) = mpsc::channel(capacity);
    let collector = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.recv().await {
            chunks.push(chunk);
        }
        chunks
    });
    let progress = Arc::new(Progress::new());
    let result = pipeline::backup(spec, tx, progress.clone(), CancellationToken::new()).await;
    (result, collector.await.unwrap(), progress)
}

/// A seeded database, backed up: its fingerprint, the backup's bytes and outcome, and the
/// identity it is encrypted to.
struct BackedUp {
    fingerprint: Vec<(String, i64, String)>,
    bytes: Vec<u8>,
    outcome: BackupOutcome,
    identity: age::x25519::Identity,
}

async fn backed_up() -> BackedUp {
    let source = TestDb::create().await;
    let pool = source.superuser().await;
    seed(&pool).await;
    let identity = age::x25519::Identity::generate();
    let (result, chunks, _) = run_backup(dump_spec(&url(&source), identity.to_public()), 4).await;
    BackedUp {
        fingerprint: fingerprint(&pool).await,
        bytes: chunks.concat(),
        outcome: result.unwrap(),
        identity,
    }
}

/// The age header of a file: through its `--- <mac>` line.
fn header_of(file: &[u8]) -> &[u8] {
    let mac = file.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
    let end = mac + file[mac..].iter().position(|&b| b == b'\n').unwrap() + 1;
    &file[..end]
}

/// The file key of `header`, unwrapped with the org's identity the way the credentials
/// service does: the agent itself never holds the identity.
fn file_key(identity: &age::x25519::Identity, header: &[u8]) -> FileKey {
    use age::Identity as _;
    let mut rest = header.strip_prefix(b"age-encryption.org/v1\n").unwrap();
    let mut stanzas = Vec::new();
    while !rest.starts_with(b"---") {
        let (after, stanza) = age_core::format::read::age_stanza(rest).unwrap();
        stanzas.push(age_core::format::Stanza::from(stanza));
        rest = after;
    }
    let key = identity.unwrap_stanzas(&stanzas).unwrap().unwrap();
    FileKey::from_slice(key.expose_secret()).unwrap()
}

/// Restores `file` through the pipeline, reading its header first as the agent does.
async fn run_restore(
    file: Vec<u8>,
    key: FileKey,
    expected_sha256: &str,
    spec: RestoreSpec,
) -> (Result<pipeline::RestoreOutcome, Error>, Arc<Progress>) {
    let mut source = std::io::Cursor::new(file);
    let header = pipeline::read_age_header(&mut source).await.unwrap();
    let progress = Arc::new(Progress::new());
    let result = pipeline::restore(
        header,
        source,
        key,
        expected_sha256,
        spec,
        progress.clone(),
        CancellationToken::new(),
    )
    .await;
    (result, progress)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `identity` in a file, as a customer keeps their recovery key.
fn identity_file(identity: &age::x25519::Identity) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{}", identity.to_string().expose_secret()).unwrap();
    file
}

/// `age -d -i <identity> | zstd -d | pg_restore …`, exactly as a customer without Coffer would.
fn stock_restore(file: &[u8], identity: &age::x25519::Identity, database_url: &str) {
    let key = identity_file(identity);
    let mut age = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut zstd = Command::new("zstd")
        .args(["-d", "-q", "-c"])
        .stdin(age.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pg_restore = Command::new("pg_restore")
        .args([
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--dbname",
        ])
        .arg(database_url)
        .stdin(zstd.stdout.take().unwrap())
        .spawn()
        .unwrap();
    let mut stdin = age.stdin.take().unwrap();
    let file = file.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&file));
    writer.join().unwrap().unwrap();
    assert!(age.wait().unwrap().success(), "age -d failed");
    assert!(zstd.wait().unwrap().success(), "zstd -d failed");
    assert!(
        pg_restore.wait_with_output().unwrap().status.success(),
        "pg_restore failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_backup_restores_with_stock_age_zstd_and_pg_restore() {
    let source = TestDb::create().await;
    let pool = source.superuser().await;
    seed(&pool).await;
    let identity = age::x25519::Identity::generate();
    let (result, chunks, progress) =
        run_backup(dump_spec(&url(&source), identity.to_public()), 4).await;
    let outcome = result.unwrap();
    let file = chunks.concat();

    assert!(chunks.len() > 2, "the backup spans several chunks");
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.len() == CHUNK_SIZE),
        "every chunk but the last is {CHUNK_SIZE} bytes"
    );
    assert_eq!(outcome.size_bytes, file.len() as u64);
    assert_eq!(outcome.sha256, sha256_hex(&file));
    assert_eq!(outcome.age_header_sha256, sha256_hex(header_of(&file)));
    assert_eq!(outcome.recipient, identity.to_public().to_string());
    assert!(
        outcome.bytes_read > outcome.size_bytes,
        "the dump was compressed"
    );
    assert_eq!(progress.bytes_read(), outcome.bytes_read);
    assert_eq!(progress.bytes_written(), outcome.size_bytes);

    let target = TestDb::create().await;
    stock_restore(&file, &identity, &url(&target));
    assert_eq!(
        fingerprint(&target.superuser().await).await,
        fingerprint(&pool).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_backup_bytes_are_encrypted_to_the_org_recipient_only() {
    let backup = backed_up().await;
    let file = &backup.bytes;
    assert!(file.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    let header = header_of(file);
    // age adds a random "grease" stanza to every header; the one X25519 stanza is the org's.
    assert_eq!(
        header.windows(10).filter(|w| *w == b"-> X25519 ").count(),
        1,
        "one X25519 recipient: the org's"
    );
    assert!(
        !file
            .windows(PLAINTEXT_CANARY.len())
            .any(|w| w == PLAINTEXT_CANARY.as_bytes()),
        "plaintext appears in the backup"
    );
    // Another org's key opens nothing.
    let stranger = age::x25519::Identity::generate();
    let decryptor = age::Decryptor::new(&file[..]).unwrap();
    assert!(
        decryptor
            .decrypt(std::iter::once(&stranger as &dyn age::Identity))
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p6_restore_needs_only_the_file_key() {
    let backup = backed_up().await;
    let target = TestDb::create().await;
    let key = file_key(&backup.identity, header_of(&backup.bytes));
    let (result, progress) = run_restore(
        backup.bytes.clone(),
        key,
        &backup.outcome.sha256,
        restore_spec(&url(&target), backup.outcome.bytes_read),
    )
    .await;
    let outcome = result.unwrap();

    assert_eq!(outcome.size_bytes, backup.bytes.len() as u64);
    assert_eq!(outcome.sha256, backup.outcome.sha256);
    assert_eq!(outcome.bytes_written, backup.outcome.bytes_read);
    assert_eq!(progress.bytes_read(), outcome.size_bytes);
    assert_eq!(progress.bytes_written(), outcome.bytes_written);
    assert_eq!(
        fingerprint(&target.superuser().await).await,
        backup.fingerprint
    );
}

/// Restores `file` into a fresh database and returns the error, asserting the database has
/// no tables afterwards.
async fn refused(file: Vec<u8>, key: FileKey, expected_sha256: &str, max_output: u64) -> Error {
    let target = TestDb::create().await;
    let (result, _) = run_restore(
        file,
        key,
        expected_sha256,
        restore_spec(&url(&target), max_output),
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(
        table_count(&target.superuser().await).await,
        0,
        "a refused restore leaves tables behind ({error})"
    );
    error
}

/// The offset of age payload chunk `n` (64 KiB of plaintext + 16-byte tag each).
fn chunk_offset(file: &[u8], n: usize) -> usize {
    header_of(file).len() + 16 + n * (64 * 1024 + 16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_backup_is_refused_and_restores_nothing() {
    let backup = backed_up().await;
    let key = || file_key(&backup.identity, header_of(&backup.bytes));
    let chunks = (backup.bytes.len() - chunk_offset(&backup.bytes, 0)) / (64 * 1024 + 16);
    assert!(chunks > 8, "the backup has enough chunks to cut");

    // Cut at a chunk boundary: every chunk left authenticates, but the final one is missing.
    let at_boundary = backup.bytes[..chunk_offset(&backup.bytes, chunks * 2 / 3)].to_vec();
    let error = refused(at_boundary, key(), &backup.outcome.sha256, u64::MAX).await;
    assert!(matches!(error, Error::Truncated(_)), "{error}");

    // Cut inside a chunk: the cut chunk fails authentication as a final chunk.
    let inside = backup.bytes[..chunk_offset(&backup.bytes, chunks * 2 / 3) + 1000].to_vec();
    let error = refused(inside, key(), &backup.outcome.sha256, u64::MAX).await;
    assert!(matches!(error, Error::Corrupt(_)), "{error}");
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_backup_is_refused_and_restores_nothing() {
    let backup = backed_up().await;
    let key = file_key(&backup.identity, header_of(&backup.bytes));
    let mut altered = backup.bytes.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    let error = refused(altered, key, &backup.outcome.sha256, u64::MAX).await;
    assert!(matches!(error, Error::Corrupt(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_kills_the_restore_before_its_input_ends() {
    // The file is intact, so everything decrypts and decompresses: only the held-back tail
    // keeps pg_restore from committing before the hash is compared.
    let backup = backed_up().await;
    let key = file_key(&backup.identity, header_of(&backup.bytes));
    let recorded = sha256_hex(b"another backup object");
    let error = refused(backup.bytes.clone(), key, &recorded, u64::MAX).await;
    match &error {
        Error::ChecksumMismatch { expected, actual } => {
            assert_eq!(expected, &recorded);
            assert_eq!(actual, &backup.outcome.sha256);
        }
        other => panic!("expected a checksum mismatch, got {other}"),
    }
}

/// A restore into a shell that copies its input to `path`, so the test can see how much of
/// the plaintext the program received.
fn into_file(path: &std::path::Path) -> RestoreSpec {
    let mut spec = RestoreSpec::new("sh", u64::MAX);
    spec.args = vec!["-c".into(), "exec cat > \"$0\"".into(), path.into()];
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_withholds_the_last_256_kib_from_the_program() {
    const PLAINTEXT: usize = 4 * 1024 * 1024;
    const HOLD_BACK: u64 = 256 * 1024;
    let identity = age::x25519::Identity::generate();
    let file = encrypt(&identity.to_public(), &stock_zstd(&["-3"], PLAINTEXT));
    let key = || file_key(&identity, header_of(&file));

    let received = tempfile::NamedTempFile::new().unwrap();
    let (result, _) = run_restore(
        file.clone(),
        key(),
        &sha256_hex(b"another backup object"),
        into_file(received.path()),
    )
    .await;
    let error = result.unwrap_err();
    assert!(matches!(error, Error::ChecksumMismatch { .. }), "{error}");
    let got = std::fs::metadata(received.path()).unwrap().len();
    assert!(
        got <= PLAINTEXT as u64 - HOLD_BACK,
        "the program received {got} of {PLAINTEXT} bytes before the checksum was compared"
    );

    // With the recorded checksum the same file reaches the program whole.
    let received = tempfile::NamedTempFile::new().unwrap();
    let (result, _) = run_restore(
        file.clone(),
        key(),
        &sha256_hex(&file),
        into_file(received.path()),
    )
    .await;
    let outcome = result.unwrap();
    assert_eq!(outcome.bytes_written, PLAINTEXT as u64);
    assert_eq!(outcome.size_bytes, file.len() as u64);
    assert_eq!(
        std::fs::metadata(received.path()).unwrap().len(),
        PLAINTEXT as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_file_key_is_refused() {
    let backup = backed_up().await;
    let wrong = FileKey::from_slice(&[0x42; 16]).unwrap();
    let error = refused(
        backup.bytes.clone(),
        wrong,
        &backup.outcome.sha256,
        u64::MAX,
    )
    .await;
    assert!(matches!(error, Error::WrongKey), "{error}");
}

/// `input` compressed by stock `zstd` with `flags`, fed through a pipe (so of unknown size).
fn stock_zstd(flags: &[&str], input_len: usize) -> Vec<u8> {
    let mut zstd = Command::new("zstd")
        .args(["-q", "-c"])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = zstd.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let zeros = vec![0u8; 1024 * 1024];
        let mut left = input_len;
        while left > 0 {
            let n = left.min(zeros.len());
            stdin.write_all(&zeros[..n]).unwrap();
            left -= n;
        }
    });
    let mut out = Vec::new();
    zstd.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    assert!(zstd.wait().unwrap().success());
    out
}

fn encrypt(recipient: &age::x25519::Recipient, plaintext: &[u8]) -> Vec<u8> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let mut writer = encryptor.wrap_output(&mut out).unwrap();
    writer.write_all(plaintext).unwrap();
    writer.finish().unwrap();
    out
}

/// A restore into `cat`, which reads everything it is given: only the pipeline can refuse.
fn into_cat(max_output_bytes: u64) -> RestoreSpec {
    RestoreSpec::new("cat", max_output_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_bomb_is_refused_at_the_output_cap() {
    const CAP: u64 = 64 * 1024 * 1024;
    let identity = age::x25519::Identity::generate();
    let bomb = stock_zstd(&["-3"], 1024 * 1024 * 1024);
    assert!(
        bomb.len() < 1024 * 1024,
        "1 GiB of zeros compresses to little"
    );
    let file = encrypt(&identity.to_public(), &bomb);
    let key = file_key(&identity, header_of(&file));

    let sha256 = sha256_hex(&file);
    let (result, progress) = run_restore(file, key, &sha256, into_cat(CAP)).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, Error::OutputTooLarge { cap: CAP }),
        "{error}"
    );
    assert!(error.to_string().contains(&CAP.to_string()), "{error}");
    assert!(progress.bytes_written() <= CAP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_window_over_the_cap_is_refused() {
    let identity = age::x25519::Identity::generate();
    // A 128 MiB window, as `zstd --long=27` declares for input of unknown size.
    let file = encrypt(
        &identity.to_public(),
        &stock_zstd(&["--long=27"], 1024 * 1024),
    );
    let sha256 = sha256_hex(&file);

    let key = file_key(&identity, header_of(&file));
    let (result, _) = run_restore(file.clone(), key, &sha256, into_cat(u64::MAX)).await;
    let error = result.unwrap_err();
    match &error {
        Error::Decompress { window_log, .. } => {
            assert_eq!(*window_log, pipeline::DEFAULT_MAX_WINDOW_LOG)
        }
        other => panic!("expected a refused frame, got {other}"),
    }
    assert!(error.to_string().contains("window limit 2^23"), "{error}");

    // The same file within a cap that admits its window: the refusal was the cap's.
    let key = file_key(&identity, header_of(&file));
    let mut spec = into_cat(u64::MAX);
    spec.max_window_log = 27;
    let (result, _) = run_restore(file, key, &sha256, spec).await;
    assert_eq!(result.unwrap().bytes_written, 1024 * 1024);
}

/// Whether stock age with `identity` decrypts `file` in full.
fn decrypts(file: &[u8], identity: &age::x25519::Identity) -> bool {
    let Ok(decryptor) = age::Decryptor::new(file) else {
        return false;
    };
    let Ok(mut reader) = decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)) else {
        return false;
    };
    reader.read_to_end(&mut Vec::new()).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dump_reports_its_reason_without_the_password() {
    let identity = age::x25519::Identity::generate();
    let missing = unique("missing_");
    let (result, chunks, _) =
        run_backup(dump_spec(&database_url(&missing), identity.to_public()), 4).await;
    let error = result.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::ProgramFailed { .. }), "{message}");
    assert!(
        message.starts_with("pg_dump failed (exit status: 1)"),
        "{message}"
    );
    assert!(
        message.contains(&format!("database \"{missing}\" does not exist")),
        "{message}"
    );
    assert!(!message.contains(PASSWORD_CANARY), "{message}");
    assert!(
        !decrypts(&chunks.concat(), &identity),
        "a failed dump left a complete backup with the uploader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p8_secrets_the_dump_program_echoes_are_redacted() {
    // pg_dump names the database it could not open, here taken from a secret variable.
    let identity = age::x25519::Identity::generate();
    let secret_name = unique("secretdb_");
    let superuser = superuser_url();
    let host_port = superuser
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let mut spec = BackupSpec::new("pg_dump", identity.to_public());
    spec.args = [
        "--format=custom",
        "--host",
        host,
        "--port",
        port,
        "--username",
        "postgres",
    ]
    .map(Into::into)
    .to_vec();
    spec.env = vec![("PGDATABASE".into(), secret_name.as_str().into())];
    let (result, _, _) = run_backup(spec, 4).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("database \"[redacted]\" does not exist"),
        "{message}"
    );
    assert!(!message.contains(&secret_name), "{message}");
}

/// Pids of running `pg_dump` processes whose command line mentions `needle`.
fn pg_dumps_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // A zombie has an empty command line: it is dead already.
        if args.first().is_some_and(|a| a.ends_with("pg_dump"))
            && args.iter().any(|a| a.contains(needle))
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_dump_blocked_in_the_database_and_kills_it() {
    let source = TestDb::create().await;
    let pool = source.superuser().await;
    seed(&pool).await;
    // pg_dump waits for a lock no one releases: it would never finish on its own.
    let mut lock = pool.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let identity = age::x25519::Identity::generate();
    let (tx, _rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let backup = tokio::spawn(pipeline::backup(
        dump_spec(&url(&source), identity.to_public()),
        tx,
        Arc::new(Progress::new()),
        cancel.clone(),
    ));
    eventually(
        "pg_dump waiting for the lock",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'
                   AND datname = current_database()",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    assert_eq!(pg_dumps_mentioning(&source.name).len(), 1);

    let cancelled = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), backup)
        .await
        .expect("the backup stops within seconds")
        .unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(cancelled.elapsed() < Duration::from_secs(5));
    assert_eq!(pg_dumps_mentioning(&source.name), Vec::<u32>::new());
    lock.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_backup_stalled_on_its_upload() {
    let source = TestDb::create().await;
    seed(&source.superuser().await).await;
    let identity = age::x25519::Identity::generate();
    // An uploader that takes nothing: one chunk fills the channel.
    let (tx, _rx) = mpsc::channel(1);
    let progress = Arc::new(Progress::new());
    let cancel = CancellationToken::new();
    let backup = tokio::spawn(pipeline::backup(
        dump_spec(&url(&source), identity.to_public()),
        tx,
        progress.clone(),
        cancel.clone(),
    ));
    eventually("a chunk in the channel", Duration::from_secs(30), || {
        let progress = progress.clone();
        async move { (progress.bytes_written() >= CHUNK_SIZE as u64).then_some(()) }
    })
    .await;

    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), backup)
        .await
        .expect("the backup stops within seconds")
        .unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(
        progress.bytes_written(),
        CHUNK_SIZE as u64,
        "nothing more was sent"
    );
    assert_eq!(pg_dumps_mentioning(&source.name), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_stops_when_the_upload_goes_away() {
    let source = TestDb::create().await;
    seed(&source.superuser().await).await;
    let identity = age::x25519::Identity::generate();
    let (tx, mut rx) = mpsc::channel(1);
    let uploader = tokio::spawn(async move {
        // Takes one chunk, then fails.
        rx.recv().await.unwrap();
    });
    let result = pipeline::backup(
        dump_spec(&url(&source), identity.to_public()),
        tx,
        Arc::new(Progress::new()),
        CancellationToken::new(),
    )
    .await;
    uploader.await.unwrap();
    assert!(matches!(result, Err(Error::SinkClosed)), "{result:?}");
    assert_eq!(pg_dumps_mentioning(&source.name), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_is_not_an_age_file_is_refused_at_its_header() {
    let mut plain_dump = std::io::Cursor::new(b"PGDMP\x01\x0f\x00 a custom-format dump".to_vec());
    let error = pipeline::read_age_header(&mut plain_dump)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Header(_)), "{error}");
    assert!(
        plain_dump.position() <= 1,
        "it stops at the first byte that is not age's"
    );

    let mut cut = std::io::Cursor::new(b"age-encryption.org/v1\n-> X25519 abc\n".to_vec());
    let error = pipeline::read_age_header(&mut cut).await.unwrap_err();
    assert!(matches!(error, Error::Truncated(_)), "{error}");
}
