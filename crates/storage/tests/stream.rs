//! Streaming upload and download against real backends: S3 requests against the stack's moto
//! server, local directories in a temporary root.

use std::path::Path;

use bytes::Bytes;
use coffer_storage::{AddressClass, Error, Guard, Location, PART_SIZE, Policy, S3Key, Store};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// A plain SDK client for moto (test setup and inspection, not the code under test).
async fn sdk() -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(coffer_testkit::kms_endpoint())
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// A fresh bucket and a store over it, keys under `backups/`.
async fn s3_store() -> (Store, String) {
    let bucket = coffer_testkit::unique("stream-").to_lowercase();
    sdk()
        .await
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let location = Location::S3 {
        endpoint: coffer_testkit::kms_endpoint().parse().unwrap(),
        region: "us-east-1".into(),
        bucket: bucket.clone(),
        prefix: "backups/".into(),
        path_style: true,
    };
    let key = S3Key::from_json(br#"{"access_key_id": "testing", "secret_access_key": "testing"}"#)
        .unwrap();
    let guard = Guard::new(Policy::new([AddressClass::Loopback], vec![]).unwrap());
    let store = Store::open(&location, Some(key), &guard).await.unwrap();
    (store, bucket)
}

/// A store over `<dir>/dest`, which it creates.
async fn local_store(dir: &Path) -> (Store, std::path::PathBuf) {
    let root = dir.join("dest");
    std::fs::create_dir(&root).unwrap();
    let guard = Guard::new(Policy::new([], vec![dir.to_path_buf()]).unwrap());
    let store = Store::open(&Location::Local { root: root.clone() }, None, &guard)
        .await
        .unwrap();
    (store, root)
}

/// `len` pseudo-random bytes (random data defeats any compression on the way).
fn data(len: usize) -> Bytes {
    let mut bytes = vec![0_u8; len];
    rand::rngs::StdRng::seed_from_u64(len as u64).fill(&mut bytes[..]);
    Bytes::from(bytes)
}

/// Uploads `body` in chunks of `chunk` bytes and returns what `finish` says the size is.
async fn upload_in_chunks(store: &Store, key: &str, body: &Bytes, chunk: usize) -> u64 {
    let mut upload = store.upload(key).await.unwrap();
    for piece in body.chunks(chunk) {
        upload.write(body.slice_ref(piece)).await.unwrap();
    }
    upload.finish().await.unwrap()
}

/// Reads a download to its end through a small buffer, hashing as it goes, as a restore would.
async fn downloaded_digest(store: &Store, key: &str) -> (Option<u64>, u64, [u8; 32]) {
    let mut download = store.download(key).await.unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 64 * 1024];
    let mut total = 0_u64;
    loop {
        let n = download.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    (download.size(), total, hasher.finalize().into())
}

/// ~20 MiB in chunks of 1 MiB + 17 bytes: parts fill across chunk boundaries, and the last part
/// is short.
async fn a_large_object_round_trips(store: &Store) {
    let body = data(20 * 1024 * 1024 + 12_345);
    assert!(body.len() > 2 * PART_SIZE, "spans at least three parts");
    let size = upload_in_chunks(store, "2026/db.age", &body, 1024 * 1024 + 17).await;
    assert_eq!(size, body.len() as u64);
    assert_eq!(store.list("").await.unwrap(), ["2026/db.age"]);
    let (announced, read, digest) = downloaded_digest(store, "2026/db.age").await;
    assert_eq!(announced, Some(body.len() as u64));
    assert_eq!(read, body.len() as u64);
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&body)));
}

async fn a_small_object_round_trips(store: &Store) {
    let body = data(1000);
    let size = upload_in_chunks(store, "small", &body, 7).await;
    assert_eq!(size, 1000);
    assert_eq!(store.get("small").await.unwrap(), body);
    let (announced, read, digest) = downloaded_digest(store, "small").await;
    assert_eq!((announced, read), (Some(1000), 1000));
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&body)));

    // Nothing written at all is an empty object.
    let upload = store.upload("empty").await.unwrap();
    assert_eq!(upload.finish().await.unwrap(), 0);
    assert_eq!(store.get("empty").await.unwrap(), Bytes::new());
}

/// Writes more than one part, checks nothing is listed, aborts, checks again.
async fn an_aborted_upload_is_never_visible(store: &Store) {
    let mut upload = store.upload("2026/aborted.age").await.unwrap();
    let body = data(PART_SIZE + 4096);
    upload.write(body.slice(..PART_SIZE / 2)).await.unwrap();
    upload.write(body.slice(PART_SIZE / 2..)).await.unwrap();
    assert_eq!(store.list("").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.download("2026/aborted.age").await.unwrap_err(),
        Error::NotFound
    );
    upload.abort().await.unwrap();
    assert_eq!(store.list("").await.unwrap(), Vec::<String>::new());
}

/// The number of parts the object at `key` was uploaded in: a multipart object's ETag ends in
/// `-<parts>`.
async fn parts_of(bucket: &str, key: &str) -> String {
    let head = sdk()
        .await
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let e_tag = head.e_tag().unwrap().trim_matches('"').to_owned();
    e_tag.rsplit_once('-').unwrap().1.to_owned()
}

#[tokio::test]
async fn s3_a_large_object_streams_up_in_parts_and_back_byte_identical() {
    let (store, bucket) = s3_store().await;
    a_large_object_round_trips(&store).await;
    assert_eq!(parts_of(&bucket, "backups/2026/db.age").await, "3");
}

#[tokio::test]
async fn local_a_large_object_streams_up_and_back_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root) = local_store(dir.path()).await;
    a_large_object_round_trips(&store).await;
    assert_eq!(
        std::fs::metadata(root.join("2026/db.age")).unwrap().len(),
        20 * 1024 * 1024 + 12_345
    );
}

#[tokio::test]
async fn s3_an_aborted_upload_leaves_no_object_and_no_pending_parts() {
    let (store, bucket) = s3_store().await;
    an_aborted_upload_is_never_visible(&store).await;
    let pending = sdk()
        .await
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(pending.uploads().len(), 0, "{:?}", pending.uploads());
    let objects = sdk()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(objects.contents().len(), 0);
}

#[tokio::test]
async fn local_an_aborted_upload_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root) = local_store(dir.path()).await;
    an_aborted_upload_is_never_visible(&store).await;
    // The key's directory was created for the upload; no file, named or not, is in it.
    assert_eq!(std::fs::read_dir(root.join("2026")).unwrap().count(), 0);
}

#[tokio::test]
async fn local_a_dropped_upload_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root) = local_store(dir.path()).await;
    let mut upload = store.upload("dropped").await.unwrap();
    upload.write(data(4096)).await.unwrap();
    drop(upload);
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    assert_eq!(
        store.download("dropped").await.unwrap_err(),
        Error::NotFound
    );
}

#[tokio::test]
async fn local_finish_refuses_to_replace_an_existing_object() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root) = local_store(dir.path()).await;

    // Already there when the upload starts: refused at once.
    store.put("taken", "original".into()).await.unwrap();
    let err = store.upload("taken").await.unwrap_err();
    assert_eq!(
        err,
        Error::Failed("an object already exists at taken; uploads never replace one".into())
    );

    // Appearing while the upload runs: refused at finish, and the first object wins.
    let mut upload = store.upload("raced").await.unwrap();
    upload.write(data(5000)).await.unwrap();
    store.put("raced", "first".into()).await.unwrap();
    let err = upload.finish().await.unwrap_err();
    assert_eq!(
        err,
        Error::Failed("an object already exists at raced; uploads never replace one".into())
    );
    assert_eq!(std::fs::read(root.join("raced")).unwrap(), b"first");
    assert_eq!(std::fs::read(root.join("taken")).unwrap(), b"original");
    assert_eq!(store.list("").await.unwrap(), ["raced", "taken"]);
}

#[tokio::test]
async fn s3_downloading_a_missing_key_is_not_found() {
    let (store, _) = s3_store().await;
    assert_eq!(
        store.download("missing").await.unwrap_err(),
        Error::NotFound
    );
}

#[tokio::test]
async fn local_downloading_a_missing_key_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root) = local_store(dir.path()).await;
    assert_eq!(
        store.download("missing").await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        store.download("no/such/dir").await.unwrap_err(),
        Error::NotFound
    );
    // A directory is not an object.
    std::fs::create_dir(root.join("dir")).unwrap();
    assert_eq!(store.download("dir").await.unwrap_err(), Error::NotFound);
}

#[tokio::test]
async fn s3_a_small_object_is_one_part_and_round_trips() {
    let (store, bucket) = s3_store().await;
    a_small_object_round_trips(&store).await;
    assert_eq!(parts_of(&bucket, "backups/small").await, "1");
}

#[tokio::test]
async fn local_a_small_object_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = local_store(dir.path()).await;
    a_small_object_round_trips(&store).await;
}

#[tokio::test]
async fn keys_are_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root) = local_store(dir.path()).await;
    for bad in ["../escape", "/abs", "a//b"] {
        assert!(
            matches!(store.upload(bad).await.unwrap_err(), Error::BadKey(_)),
            "{bad}"
        );
        assert!(
            matches!(store.download(bad).await.unwrap_err(), Error::BadKey(_)),
            "{bad}"
        );
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[tokio::test]
async fn local_an_upload_through_a_symlink_out_of_the_destination_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root) = local_store(dir.path()).await;
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
    let err = store.upload("out/db.age").await.unwrap_err();
    assert_eq!(
        err,
        Error::Failed("out leads outside the destination through a symbolic link".into())
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}
