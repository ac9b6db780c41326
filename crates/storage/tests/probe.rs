//! The probe and the SSRF guard against real backends: S3 requests against the stack's moto
//! server, local directories in a temporary root, and scripted DNS answers for rebinding.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns};
use coffer_storage::{AddressClass, Error, Guard, Location, Policy, S3Key, Step, Store};

fn moto() -> url::Url {
    coffer_testkit::kms_endpoint().parse().unwrap()
}

fn test_key() -> S3Key {
    S3Key::from_json(br#"{"access_key_id": "testing", "secret_access_key": "testing"}"#).unwrap()
}

fn loopback_allowed() -> Guard {
    Guard::new(Policy::new([AddressClass::Loopback], vec![]).unwrap())
}

/// Creates a bucket in moto with a plain SDK client (test setup, not the code under test).
async fn create_bucket() -> String {
    let bucket = coffer_testkit::unique("probe-").to_lowercase();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(coffer_testkit::kms_endpoint())
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    bucket
}

fn s3_at(endpoint: url::Url, bucket: &str, prefix: &str) -> Location {
    Location::S3 {
        endpoint,
        region: "us-east-1".into(),
        bucket: bucket.into(),
        prefix: prefix.into(),
        path_style: true,
    }
}

#[tokio::test]
async fn an_s3_probe_lists_writes_reads_back_and_deletes_its_object() {
    let bucket = create_bucket().await;
    let location = s3_at(moto(), &bucket, "backups/");
    let store = Store::open(&location, Some(test_key()), &loopback_allowed())
        .await
        .unwrap();
    store.probe().await.unwrap();
    assert_eq!(
        store.list("").await.unwrap(),
        Vec::<String>::new(),
        "probe object left behind"
    );

    store.put("a/one", "1".into()).await.unwrap();
    store.put("b", "22".into()).await.unwrap();
    assert_eq!(store.list("").await.unwrap(), ["a/one", "b"]);
    assert_eq!(store.list("a/").await.unwrap(), ["a/one"]);
    assert_eq!(&store.get("b").await.unwrap()[..], b"22");
    assert_eq!(store.get("missing").await.unwrap_err(), Error::NotFound);
    store.delete("a/one").await.unwrap();
    assert_eq!(store.list("").await.unwrap(), ["b"]);
    // Keys live under the prefix.
    let whole = Store::open(
        &s3_at(moto(), &bucket, ""),
        Some(test_key()),
        &loopback_allowed(),
    )
    .await
    .unwrap();
    assert_eq!(whole.list("").await.unwrap(), ["backups/b"]);
}

#[tokio::test]
async fn a_bucket_that_does_not_exist_fails_at_list() {
    let location = s3_at(moto(), "no-such-bucket-coffer", "");
    let store = Store::open(&location, Some(test_key()), &loopback_allowed())
        .await
        .unwrap();
    let err = store.probe().await.unwrap_err();
    assert_eq!(err.step, Step::List, "{err}");
    assert!(
        err.to_string()
            .starts_with("probe failed at list: NoSuchBucket"),
        "{err}"
    );
}

#[tokio::test]
async fn a_loopback_endpoint_is_refused_when_the_policy_does_not_allow_it() {
    let guard = Guard::new(Policy::default());
    let bucket = create_bucket().await;
    // IP literal: refused when the client is built (connectors never resolve literals).
    let err = Store::open(&s3_at(moto(), &bucket, ""), Some(test_key()), &guard)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("endpoint 127.0.0.1 is a loopback address"),
        "{err}"
    );
    // A name: refused by the resolver when connecting.
    let mut by_name = moto();
    by_name.set_host(Some("localhost")).unwrap();
    let store = Store::open(&s3_at(by_name, &bucket, ""), Some(test_key()), &guard)
        .await
        .unwrap();
    let err = store.probe().await.unwrap_err();
    assert_eq!(err.step, Step::List);
    let Error::Refused(refused) = &err.cause else {
        panic!("{err}")
    };
    assert_eq!(refused.field, "endpoint");
    assert!(
        refused.rule.starts_with("host localhost resolves to "),
        "{refused}"
    );
}

/// Answers each lookup with the next scripted address (the last one repeats), and records the
/// names asked.
#[derive(Debug, Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<IpAddr>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn new(answers: &[&str]) -> Self {
        Self {
            answers: Arc::new(Mutex::new(
                answers.iter().map(|a| a.parse().unwrap()).collect(),
            )),
            asked: Arc::default(),
        }
    }

    fn asked(&self) -> usize {
        self.asked.lock().unwrap().len()
    }
}

impl ResolveDns for Scripted {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        self.asked.lock().unwrap().push(name.to_owned());
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            *answers.front().unwrap()
        };
        DnsFuture::ready(Ok(vec![answer]))
    }
}

#[tokio::test]
async fn a_name_that_rebinds_to_loopback_after_the_save_time_check_is_refused_at_connect() {
    let bucket = create_bucket().await;
    let mut endpoint = moto();
    // No dot in the name: moto then reads the bucket from the path, as path-style requires.
    endpoint.set_host(Some("rebinding-name")).unwrap();
    let location = s3_at(endpoint.clone(), &bucket, "");

    // Control: where loopback is allowed, the scripted name really reaches moto, so the
    // refusal below is the guard's doing, not a name that leads nowhere.
    let dns = Scripted::new(&["93.184.215.14", "127.0.0.1"]);
    let allowing = Guard::with_resolver(
        Policy::new([AddressClass::Loopback], vec![]).unwrap(),
        dns.clone(),
    );
    allowing.check_endpoint(&endpoint).await.unwrap();
    let store = Store::open(&location, Some(test_key()), &allowing)
        .await
        .unwrap();
    store.probe().await.unwrap();

    // The attack: public at save time, loopback at connect time.
    let dns = Scripted::new(&["93.184.215.14", "127.0.0.1"]);
    let guard = Guard::with_resolver(Policy::default(), dns.clone());
    guard.check_endpoint(&endpoint).await.unwrap();
    assert_eq!(dns.asked(), 1);
    let store = Store::open(&location, Some(test_key()), &guard)
        .await
        .unwrap();
    let err = store.probe().await.unwrap_err();
    assert!(dns.asked() >= 2, "the connector resolved the name again");
    assert_eq!(err.step, Step::List, "{err}");
    assert_eq!(
        err.cause,
        Error::Refused(coffer_storage::Refused {
            field: "endpoint",
            rule: "host rebinding-name resolves to 127.0.0.1 is a loopback address, which this deployment does not allow (scheduling.ssrf_allow)".into(),
        })
    );
}

fn local_guard(root: &Path) -> Guard {
    Guard::new(Policy::new([], vec![root.to_path_buf()]).unwrap())
}

#[tokio::test]
async fn a_local_probe_works_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dest");
    std::fs::create_dir(&root).unwrap();
    let store = Store::open(
        &Location::Local { root: root.clone() },
        None,
        &local_guard(dir.path()),
    )
    .await
    .unwrap();
    store.probe().await.unwrap();
    assert_eq!(store.list("").await.unwrap(), Vec::<String>::new());
    store.put("2026/db.age", "x".into()).await.unwrap();
    assert_eq!(store.list("").await.unwrap(), ["2026/db.age"]);
    assert_eq!(std::fs::read(root.join("2026/db.age")).unwrap(), b"x");
    store.delete("2026/db.age").await.unwrap();
    assert_eq!(store.get("2026/db.age").await.unwrap_err(), Error::NotFound);
}

#[tokio::test]
async fn local_failures_name_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let guard = local_guard(dir.path());

    let missing = Store::open(
        &Location::Local {
            root: dir.path().join("missing"),
        },
        None,
        &guard,
    )
    .await
    .unwrap();
    let err = missing.probe().await.unwrap_err();
    assert_eq!(err.step, Step::List, "{err}");

    // The probe's directory is a regular file: listing sees nothing, writing fails.
    let root = dir.path().join("blocked");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join(coffer_storage::PROBE_DIR), b"in the way").unwrap();
    let blocked = Store::open(&Location::Local { root }, None, &guard)
        .await
        .unwrap();
    let err = blocked.probe().await.unwrap_err();
    assert_eq!(err.step, Step::Write, "{err}");
    assert!(
        err.to_string()
            .starts_with("probe failed at write: cannot create directory .coffer-probe: "),
        "{err}"
    );

    // A destination swapped for a symbolic link out of the roots is refused when used.
    let outside = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let linked = Store::open(&Location::Local { root: link }, None, &guard)
        .await
        .unwrap();
    let err = linked.probe().await.unwrap_err();
    assert_eq!(err.step, Step::List, "{err}");
    assert!(matches!(err.cause, Error::Refused(_)), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// Fails every lookup, like a name that does not exist.
#[derive(Debug)]
struct Nxdomain;

impl ResolveDns for Nxdomain {
    fn resolve_dns<'a>(&'a self, _name: &'a str) -> DnsFuture<'a> {
        DnsFuture::ready(Err(
            aws_smithy_runtime_api::client::dns::ResolveDnsError::new("NXDOMAIN"),
        ))
    }
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_unreachable_not_refused() {
    let guard = Guard::with_resolver(Policy::default(), Nxdomain);
    let endpoint: url::Url = "https://nowhere.coffer.invalid".parse().unwrap();
    let err = guard.check_endpoint(&endpoint).await.unwrap_err();
    assert_eq!(
        err,
        coffer_storage::EndpointError::Unresolved {
            host: "nowhere.coffer.invalid".into()
        }
    );
    let store = Store::open(&s3_at(endpoint, "bucket", ""), Some(test_key()), &guard)
        .await
        .unwrap();
    let err = store.probe().await.unwrap_err();
    assert_eq!(err.step, Step::List, "{err}");
    let Error::Failed(cause) = &err.cause else {
        panic!("{err}")
    };
    assert!(
        cause.contains("endpoint host nowhere.coffer.invalid does not resolve"),
        "{cause}"
    );
}
