//! Storage destinations through gRPC: real S3 against the stack's moto (and a second moto that
//! enforces auth), local directories, every probe step checked for real, the SSRF guard, bad
//! input by field, change/remove/list/get, roles, rebuilt projections, and the storage secret
//! kept out of logs.

use std::path::PathBuf;

use coffer_proto::credentials::v1 as cred;
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::scheduling::v1::destination_service_client::DestinationServiceClient;
use coffer_types::OrgId;
use tonic::Code;

use crate::helpers::{Authed, TestApp, TestOrg, spawn_app, spawn_app_with};

pub(crate) async fn destinations(app: &TestApp, key: &str) -> DestinationServiceClient<Authed> {
    DestinationServiceClient::new(app.authed(key).await)
}

/// A plain S3 client on `endpoint` (test setup and inspection; the code under test goes
/// through `coffer_storage`).
pub(crate) async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// A new bucket in the stack's moto.
pub(crate) async fn create_bucket() -> String {
    let bucket = coffer_testkit::unique("dest-").to_lowercase();
    s3_client(&coffer_testkit::kms_endpoint())
        .await
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    bucket
}

/// Every key in `bucket` of the stack's moto.
pub(crate) async fn objects(bucket: &str) -> Vec<String> {
    s3_client(&coffer_testkit::kms_endpoint())
        .await
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// A credential of `org` with `purpose` and `value`; returns its vault reference.
pub(crate) async fn credential(
    app: &TestApp,
    org: &TestOrg,
    purpose: &str,
    value: &[u8],
) -> String {
    crate::credentials::vault(app, org)
        .await
        .create_credential(cred::CreateCredentialRequest {
            org_id: org.org.to_string(),
            name: coffer_testkit::unique("key-"),
            purpose: purpose.into(),
            value: value.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .vault_ref
}

fn key_json(id: &str, secret: &str) -> Vec<u8> {
    format!(r#"{{"access_key_id": "{id}", "secret_access_key": "{secret}"}}"#).into_bytes()
}

/// A storage credential moto accepts (the stack's moto does not check keys).
pub(crate) async fn storage_key(app: &TestApp, org: &TestOrg) -> String {
    credential(app, org, "storage", &key_json("testing", "testing")).await
}

pub(crate) fn s3_fields(name: &str, bucket: &str, vault_ref: &str) -> pb::DestinationFields {
    pb::DestinationFields {
        name: name.into(),
        kind: Some(pb::destination_fields::Kind::S3(pb::S3Destination {
            endpoint: coffer_testkit::kms_endpoint(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: "acme/backups".into(),
            path_style: true,
            access_key_vault_ref: vault_ref.into(),
        })),
    }
}

fn local_fields(name: &str, path: &std::path::Path) -> pb::DestinationFields {
    pb::DestinationFields {
        name: name.into(),
        kind: Some(pb::destination_fields::Kind::Local(pb::LocalDestination {
            path: path.to_string_lossy().into_owned(),
        })),
    }
}

/// A fresh directory under the test local root.
fn local_dir(app: &TestApp) -> PathBuf {
    let dir = app.local_root().join(coffer_testkit::unique("d"));
    std::fs::create_dir(&dir).unwrap();
    dir
}

async fn register(
    client: &mut DestinationServiceClient<Authed>,
    org: OrgId,
    fields: pb::DestinationFields,
) -> Result<pb::Destination, tonic::Status> {
    client
        .register_destination(pb::RegisterDestinationRequest {
            org_id: org.to_string(),
            fields: Some(fields),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The scheduling events of `org`, by type.
async fn events(app: &TestApp, org: &TestOrg) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM coffer_scheduling.events WHERE org_id = $1 ORDER BY 1",
    )
    .bind(org.org.as_uuid())
    .fetch_all(&app.db.superuser().await)
    .await
    .unwrap()
}

/// The actors of the credential releases to services in `org`, oldest first.
async fn releases(app: &TestApp, org: &TestOrg) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT actor_kind || ':' || actor_id FROM coffer_credentials.events \
         WHERE org_id = $1 AND event_type = 'CredentialReleasedToService' ORDER BY position",
    )
    .bind(org.org.as_uuid())
    .fetch_all(&app.db.superuser().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn destinations_are_probed_registered_changed_listed_and_removed() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut client = destinations(&app, &acme.owner_key).await;
    let org = acme.org.to_string();
    let bucket = create_bucket().await;
    let key = storage_key(&app, &acme).await;

    let registered = register(&mut client, acme.org, s3_fields("offsite", &bucket, &key))
        .await
        .unwrap();
    assert_eq!(registered.org_id, org);
    assert_eq!(registered.name, "offsite");
    assert_eq!(registered.version, 1);
    let Some(pb::destination::Kind::S3(s3)) = &registered.kind else {
        panic!("{registered:?}")
    };
    assert_eq!(s3.prefix, "acme/backups/", "a trailing / is added");
    assert_eq!(s3.access_key_vault_ref, key);
    assert_eq!(s3.endpoint, format!("{}/", coffer_testkit::kms_endpoint()));
    // The probe really wrote, read and deleted: nothing is left, and the key's release to
    // scheduling is on record.
    assert_eq!(objects(&bucket).await, Vec::<String>::new());
    assert_eq!(releases(&app, &acme).await, ["service:scheduling"]);
    let id = registered.destination_id.clone();

    let got = client
        .get_destination(pb::GetDestinationRequest {
            org_id: org.clone(),
            destination_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, registered);

    // Probing again releases the key again and changes nothing.
    let probed = client
        .probe_destination(pb::ProbeDestinationRequest {
            org_id: org.clone(),
            destination_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probed.destination, Some(registered.clone()));
    assert_eq!(releases(&app, &acme).await.len(), 2);

    // Changed into a local directory.
    let dir = local_dir(&app);
    let changed = client
        .change_destination(pb::ChangeDestinationRequest {
            org_id: org.clone(),
            destination_id: id.clone(),
            fields: Some(local_fields("nas", &dir)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.version, 2);
    assert_eq!(changed.name, "nas");
    assert_eq!(changed.created_at, registered.created_at);
    assert_eq!(
        changed.kind,
        Some(pb::destination::Kind::Local(pb::LocalDestination {
            path: dir.to_string_lossy().into_owned()
        }))
    );
    // The local probe left only its (empty) directory behind.
    let left: Vec<_> = walk(&dir);
    assert_eq!(left, Vec::<String>::new(), "probe object left behind");

    let other = register(&mut client, acme.org, s3_fields("archive", &bucket, &key))
        .await
        .unwrap();
    let listed = client
        .list_destinations(pb::ListDestinationsRequest {
            org_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .destinations;
    assert_eq!(
        listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["archive", "nas"]
    );

    client
        .remove_destination(pb::RemoveDestinationRequest {
            org_id: org.clone(),
            destination_id: id.clone(),
            reason: "moved".into(),
        })
        .await
        .unwrap();
    let listed = client
        .list_destinations(pb::ListDestinationsRequest {
            org_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .destinations;
    assert_eq!(listed, vec![other]);
    for status in [
        client
            .get_destination(pb::GetDestinationRequest {
                org_id: org.clone(),
                destination_id: id.clone(),
            })
            .await
            .unwrap_err(),
        client
            .change_destination(pb::ChangeDestinationRequest {
                org_id: org.clone(),
                destination_id: id.clone(),
                fields: Some(local_fields("again", &dir)),
            })
            .await
            .unwrap_err(),
        client
            .remove_destination(pb::RemoveDestinationRequest {
                org_id: org.clone(),
                destination_id: id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap_err(),
        client
            .probe_destination(pb::ProbeDestinationRequest {
                org_id: org.clone(),
                destination_id: id.clone(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // A removed destination's name is free again.
    register(&mut client, acme.org, local_fields("nas", &dir))
        .await
        .unwrap();
    assert_eq!(
        events(&app, &acme).await,
        [
            "DestinationChanged",
            "DestinationRegistered",
            "DestinationRegistered",
            "DestinationRegistered",
            "DestinationRemoved",
        ]
    );
}

/// Every file below `dir`, relative.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

#[tokio::test]
async fn a_failing_probe_names_the_step_and_the_cause_and_saves_nothing() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut client = destinations(&app, &acme.owner_key).await;
    let key = storage_key(&app, &acme).await;
    let bucket = create_bucket().await;
    let existing = register(&mut client, acme.org, s3_fields("existing", &bucket, &key))
        .await
        .unwrap();
    let before = events(&app, &acme).await;

    // A bucket that does not exist fails at list.
    let missing = s3_fields("missing", "no-such-bucket-at-all", &key);
    // A key the server does not know fails at list too (a moto that enforces auth).
    let enforcing = coffer_testkit::MotoServer::start_enforcing_auth();
    let wrong_key = credential(
        &app,
        &acme,
        "storage",
        &key_json("AKIAUNKNOWNKEY000000", "not-the-secret"),
    )
    .await;
    let mut unauthorised = s3_fields("unauthorised", &bucket, &wrong_key);
    if let Some(pb::destination_fields::Kind::S3(s3)) = &mut unauthorised.kind {
        s3.endpoint = enforcing.endpoint();
    }
    // A local destination whose probe directory is a regular file fails at write.
    let blocked = local_dir(&app);
    std::fs::write(blocked.join(coffer_storage::PROBE_DIR), b"in the way").unwrap();
    // A local directory that does not exist fails at list.
    let absent = app.local_root().join(coffer_testkit::unique("absent"));

    let cases = [
        (missing, "probe failed at list: NoSuchBucket"),
        (unauthorised, "probe failed at list: InvalidAccessKeyId"),
        (local_fields("blocked", &blocked), "probe failed at write: "),
        (local_fields("absent", &absent), "probe failed at list: "),
    ];
    for (fields, message) in cases {
        for status in [
            register(&mut client, acme.org, fields.clone())
                .await
                .unwrap_err(),
            client
                .change_destination(pb::ChangeDestinationRequest {
                    org_id: acme.org.to_string(),
                    destination_id: existing.destination_id.clone(),
                    fields: Some(fields.clone()),
                })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert!(status.message().starts_with(message), "{status:?}");
        }
    }
    assert!(!absent.exists(), "a failing probe creates nothing");
    assert_eq!(
        std::fs::read(blocked.join(coffer_storage::PROBE_DIR)).unwrap(),
        b"in the way"
    );
    assert_eq!(
        events(&app, &acme).await,
        before,
        "nothing stored on refusal"
    );
    let got = client
        .get_destination(pb::GetDestinationRequest {
            org_id: acme.org.to_string(),
            destination_id: existing.destination_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got, existing,
        "a failed change leaves the destination as it was"
    );

    // A saved destination whose bucket goes away fails its next probe, and stays saved.
    s3_client(&coffer_testkit::kms_endpoint())
        .await
        .delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let status = client
        .probe_destination(pb::ProbeDestinationRequest {
            org_id: acme.org.to_string(),
            destination_id: existing.destination_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("probe failed at list: NoSuchBucket"),
        "{status:?}"
    );
}

#[tokio::test]
async fn endpoints_reaching_forbidden_addresses_are_refused_naming_the_endpoint() {
    // The default test deployment allows loopback (moto) and nothing else.
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut client = destinations(&app, &acme.owner_key).await;
    let key = storage_key(&app, &acme).await;
    let at = |endpoint: &str| {
        let mut fields = s3_fields("ssrf", "some-bucket", &key);
        if let Some(pb::destination_fields::Kind::S3(s3)) = &mut fields.kind {
            s3.endpoint = endpoint.into();
        }
        fields
    };
    for (endpoint, rule) in [
        (
            "http://169.254.169.254",
            "endpoint 169.254.169.254 is a metadata address",
        ),
        (
            "http://10.0.0.1:9000",
            "endpoint 10.0.0.1 is a private address",
        ),
        (
            "http://[fe80::1]",
            "endpoint fe80::1 is a link-local address",
        ),
        (
            "http://0.0.0.0:9000",
            "endpoint 0.0.0.0 is a unspecified address, never allowed",
        ),
    ] {
        let status = register(&mut client, acme.org, at(endpoint))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{endpoint}: {status:?}"
        );
        assert!(status.message().starts_with(rule), "{endpoint}: {status:?}");
    }

    // A deployment that does not allow loopback refuses the stack's own moto, by literal and by
    // name, and local paths outside its (empty) roots.
    let strict = spawn_app_with(|c| {
        c.scheduling.ssrf_allow.clear();
        c.scheduling.local_roots.clear();
    })
    .await;
    let other = strict.new_org("Other").await;
    let mut strict_client = destinations(&strict, &other.owner_key).await;
    let strict_key = storage_key(&strict, &other).await;
    let port = coffer_testkit::kms_endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let strict_at = |endpoint: String| {
        let mut fields = s3_fields("ssrf", "some-bucket", &strict_key);
        if let Some(pb::destination_fields::Kind::S3(s3)) = &mut fields.kind {
            s3.endpoint = endpoint;
        }
        fields
    };
    for (endpoint, rule) in [
        (
            coffer_testkit::kms_endpoint(),
            "endpoint 127.0.0.1 is a loopback address, which this deployment does not allow",
        ),
        (
            format!("http://[::1]:{port}"),
            "endpoint ::1 is a loopback address",
        ),
        (
            format!("http://localhost:{port}"),
            "endpoint host localhost resolves to ",
        ),
    ] {
        let status = register(&mut strict_client, other.org, strict_at(endpoint.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{endpoint}: {status:?}"
        );
        assert!(status.message().starts_with(rule), "{endpoint}: {status:?}");
    }
    let status = register(
        &mut strict_client,
        other.org,
        local_fields("nas", &local_dir(&app)),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("path is a local destination, which this deployment does not allow"),
        "{status:?}"
    );
    // Nothing saved, and no key was released for a refused endpoint.
    assert_eq!(events(&app, &acme).await, Vec::<String>::new());
    assert_eq!(events(&strict, &other).await, Vec::<String>::new());
    assert_eq!(releases(&app, &acme).await, Vec::<String>::new());
    assert_eq!(releases(&strict, &other).await, Vec::<String>::new());
}

#[tokio::test]
async fn bad_fields_and_unusable_keys_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let mut client = destinations(&app, &acme.owner_key).await;
    let key = storage_key(&app, &acme).await;
    let bucket = create_bucket().await;
    let existing = register(&mut client, acme.org, s3_fields("existing", &bucket, &key))
        .await
        .unwrap();
    let before = events(&app, &acme).await;

    let s3 = |f: &dyn Fn(&mut pb::S3Destination)| {
        let mut fields = s3_fields("new", &bucket, &key);
        if let Some(pb::destination_fields::Kind::S3(s3)) = &mut fields.kind {
            f(s3);
        }
        fields
    };
    let other_org_ref = storage_key(&app, &other).await;
    let database_ref = credential(&app, &acme, "database", b"hunter2").await;
    let not_json_ref = credential(&app, &acme, "storage", b"AKIA:plain").await;
    let root = app.local_root();
    let cases: Vec<(pb::DestinationFields, Code, &str)> = vec![
        (
            pb::DestinationFields {
                name: " ".into(),
                ..s3(&|_| {})
            },
            Code::InvalidArgument,
            "name must not be empty",
        ),
        (
            pb::DestinationFields {
                name: "x".into(),
                kind: None,
            },
            Code::InvalidArgument,
            "kind must be s3 or local",
        ),
        (
            s3(&|s| s.endpoint = "not a url".into()),
            Code::InvalidArgument,
            "endpoint must be a URL",
        ),
        (
            s3(&|s| s.endpoint = "ftp://s3.test".into()),
            Code::InvalidArgument,
            "endpoint must be an http",
        ),
        (
            s3(&|s| s.endpoint = "http://user:pw@s3.test".into()),
            Code::InvalidArgument,
            "endpoint must not carry credentials",
        ),
        (
            s3(&|s| s.region = "US East 1".into()),
            Code::InvalidArgument,
            "region must be",
        ),
        (
            s3(&|s| s.region = String::new()),
            Code::InvalidArgument,
            "region must not be empty",
        ),
        (
            s3(&|s| s.bucket = String::new()),
            Code::InvalidArgument,
            "bucket must not be empty",
        ),
        (
            s3(&|s| s.bucket = "Bad_Bucket".into()),
            Code::InvalidArgument,
            "bucket must be 3 to 63",
        ),
        (
            s3(&|s| s.prefix = "/abs".into()),
            Code::InvalidArgument,
            "prefix must not start with /",
        ),
        (
            s3(&|s| s.access_key_vault_ref = "AKIA-plaintext".into()),
            Code::InvalidArgument,
            "access_key_vault_ref must be vault:coffer/",
        ),
        (
            s3(&|s| s.access_key_vault_ref = other_org_ref.clone()),
            Code::InvalidArgument,
            "access_key_vault_ref must name a credential of the destination's own org",
        ),
        (
            local_fields("n", std::path::Path::new("relative/backups")),
            Code::InvalidArgument,
            "path must be an absolute path",
        ),
        (
            local_fields("n", &root.join("a/../../etc")),
            Code::InvalidArgument,
            "path must not contain ..",
        ),
        (
            local_fields("n", std::path::Path::new("/etc")),
            Code::InvalidArgument,
            "path must lie under one of the deployment's local roots",
        ),
        // Well-formed references that name no usable storage key.
        (
            s3(&|s| {
                s.access_key_vault_ref =
                    format!("vault:coffer/{}/{}", acme.org, uuid::Uuid::now_v7())
            }),
            Code::FailedPrecondition,
            "access_key_vault_ref names no credential of this org",
        ),
        (
            s3(&|s| s.access_key_vault_ref = database_ref.clone()),
            Code::FailedPrecondition,
            "access_key_vault_ref names a database credential; it must be a storage credential",
        ),
        (
            s3(&|s| s.access_key_vault_ref = not_json_ref.clone()),
            Code::FailedPrecondition,
            "access_key_vault_ref names a credential that must hold JSON",
        ),
    ];
    for (bad, code, message) in cases {
        for status in [
            register(&mut client, acme.org, bad.clone())
                .await
                .unwrap_err(),
            client
                .change_destination(pb::ChangeDestinationRequest {
                    org_id: acme.org.to_string(),
                    destination_id: existing.destination_id.clone(),
                    fields: Some(bad.clone()),
                })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), code, "{bad:?}: {status:?}");
            assert!(status.message().starts_with(message), "{bad:?}: {status:?}");
        }
    }
    let missing = client
        .register_destination(pb::RegisterDestinationRequest {
            org_id: acme.org.to_string(),
            fields: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().starts_with("fields "), "{missing:?}");

    // Names are unique among the org's live destinations.
    let taken = register(
        &mut client,
        acme.org,
        s3_fields(" existing ", &bucket, &key),
    )
    .await
    .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().starts_with("name "), "{taken:?}");

    assert_eq!(
        events(&app, &acme).await,
        before,
        "nothing stored on refusal"
    );
}

#[tokio::test]
async fn viewers_read_destinations_and_only_admins_change_or_probe_them() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let dir = local_dir(&app);
    let existing = register(
        &mut destinations(&app, &acme.owner_key).await,
        acme.org,
        local_fields("nas", &dir),
    )
    .await
    .unwrap();
    let org = acme.org.to_string();
    for role in ["viewer", "operator"] {
        let mut client = destinations(&app, &app.new_api_key(&acme, role).await).await;
        let got = client
            .get_destination(pb::GetDestinationRequest {
                org_id: org.clone(),
                destination_id: existing.destination_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, existing, "{role}");
        let listed = client
            .list_destinations(pb::ListDestinationsRequest {
                org_id: org.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .destinations;
        assert_eq!(listed, vec![existing.clone()], "{role}");
        for status in [
            register(&mut client, acme.org, local_fields(role, &dir))
                .await
                .unwrap_err(),
            client
                .change_destination(pb::ChangeDestinationRequest {
                    org_id: org.clone(),
                    destination_id: existing.destination_id.clone(),
                    fields: Some(local_fields(role, &dir)),
                })
                .await
                .unwrap_err(),
            client
                .remove_destination(pb::RemoveDestinationRequest {
                    org_id: org.clone(),
                    destination_id: existing.destination_id.clone(),
                    reason: String::new(),
                })
                .await
                .unwrap_err(),
            client
                .probe_destination(pb::ProbeDestinationRequest {
                    org_id: org.clone(),
                    destination_id: existing.destination_id.clone(),
                })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::PermissionDenied, "{role}: {status:?}");
        }
    }
    let mut admin = destinations(&app, &app.new_api_key(&acme, "admin").await).await;
    register(&mut admin, acme.org, local_fields("by-admin", &dir))
        .await
        .unwrap();
    assert_eq!(
        events(&app, &acme).await,
        ["DestinationRegistered", "DestinationRegistered"]
    );
}

#[tokio::test]
async fn rebuilding_the_destinations_projection_yields_identical_tables() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let mut client = destinations(&app, &acme.owner_key).await;
    let bucket = create_bucket().await;
    let key = storage_key(&app, &acme).await;
    let a = register(&mut client, acme.org, s3_fields("a", &bucket, &key))
        .await
        .unwrap();
    let b = register(&mut client, acme.org, local_fields("b", &local_dir(&app)))
        .await
        .unwrap();
    register(&mut client, acme.org, local_fields("c", &local_dir(&app)))
        .await
        .unwrap();
    register(
        &mut destinations(&app, &other.owner_key).await,
        other.org,
        local_fields("a", &local_dir(&app)),
    )
    .await
    .unwrap();
    client
        .change_destination(pb::ChangeDestinationRequest {
            org_id: acme.org.to_string(),
            destination_id: a.destination_id.clone(),
            fields: Some(local_fields("a2", &local_dir(&app))),
        })
        .await
        .unwrap();
    client
        .remove_destination(pb::RemoveDestinationRequest {
            org_id: acme.org.to_string(),
            destination_id: b.destination_id.clone(),
            reason: "gone".into(),
        })
        .await
        .unwrap();

    let su = app.db.superuser().await;
    let dump = || async {
        sqlx::query_scalar::<_, serde_json::Value>(
            "SELECT to_jsonb(t) FROM coffer_scheduling.destinations t ORDER BY 1::text",
        )
        .fetch_all(&su)
        .await
        .unwrap()
    };
    let before = dump().await;
    assert_eq!(before.len(), 3);
    let replayed = coffer_eventstore::rebuild(
        &mut app.db.owner().await,
        coffer_scheduling::SERVICE,
        &coffer_scheduling::app::projections(),
    )
    .await
    .unwrap();
    assert_eq!(replayed, 6);
    assert_eq!(dump().await, before);
}

/// P8 for storage keys: a destination's secret access key, released to scheduling for probes,
/// reaches no log line, span field or error string, in any flow: success, a failed probe, an
/// unauthorised key, an SSRF refusal.
#[tokio::test]
async fn p8_a_storage_secret_never_reaches_logs_spans_or_error_strings() {
    use coffer_telemetry::{LogCapture, LogFormat, TelemetryConfig};
    use tracing_subscriber::layer::SubscriberExt as _;

    let logs = LogCapture::new();
    let spans = crate::canary::SpanFields::default();
    let telemetry = TelemetryConfig {
        format: LogFormat::Json,
        filter: "trace".into(),
        service_name: "coffer-canary".into(),
    };
    let tracer = coffer_telemetry::tracer_provider("coffer-canary", None).unwrap();
    let subscriber = coffer_telemetry::subscriber(&telemetry, logs.clone(), &tracer)
        .unwrap()
        .with(spans.clone());
    // Single-threaded runtime: every task of the server logs through this subscriber.
    let _recording = tracing::subscriber::set_default(subscriber);

    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut client = destinations(&app, &acme.owner_key).await;
    let secret = format!("canary-s3-secret-{}", uuid::Uuid::new_v4().simple());
    let value = key_json("testing", &secret);
    let key = credential(&app, &acme, "storage", &value).await;
    let bucket = create_bucket().await;
    let mut errors = Vec::new();

    let saved = register(&mut client, acme.org, s3_fields("ok", &bucket, &key))
        .await
        .unwrap();
    client
        .probe_destination(pb::ProbeDestinationRequest {
            org_id: acme.org.to_string(),
            destination_id: saved.destination_id.clone(),
        })
        .await
        .unwrap();
    errors.push(
        register(
            &mut client,
            acme.org,
            s3_fields("missing", "no-such-bucket-x", &key),
        )
        .await
        .unwrap_err(),
    );
    let enforcing = coffer_testkit::MotoServer::start_enforcing_auth();
    let unknown = credential(
        &app,
        &acme,
        "storage",
        &key_json("AKIACANARY0000000000", &secret),
    )
    .await;
    let mut unauthorised = s3_fields("unauthorised", &bucket, &unknown);
    let mut ssrf = s3_fields("ssrf", &bucket, &key);
    if let (Some(pb::destination_fields::Kind::S3(a)), Some(pb::destination_fields::Kind::S3(b))) =
        (&mut unauthorised.kind, &mut ssrf.kind)
    {
        a.endpoint = enforcing.endpoint();
        b.endpoint = "http://169.254.169.254".into();
    }
    errors.push(
        register(&mut client, acme.org, unauthorised)
            .await
            .unwrap_err(),
    );
    errors.push(register(&mut client, acme.org, ssrf).await.unwrap_err());
    assert_eq!(
        errors.iter().map(tonic::Status::code).collect::<Vec<_>>(),
        [
            Code::FailedPrecondition,
            Code::FailedPrecondition,
            Code::InvalidArgument
        ],
        "{errors:?}"
    );

    let logs = logs.contents();
    let spans = spans.0.lock().unwrap().clone();
    let errors = errors
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("destination probe failed"),
        "the capture saw scheduling's logs"
    );
    assert!(
        logs.contains("credential released to a service"),
        "the capture saw the releases"
    );
    for secret in [secret.as_bytes(), value.as_slice()] {
        for form in crate::canary::forms(secret) {
            for (record, what) in [
                (&logs, "logs"),
                (&spans, "span fields"),
                (&errors, "errors"),
            ] {
                assert!(
                    !record.contains(&form),
                    "the storage secret reached the {what} as {:?}…",
                    &form[..form.len().min(12)]
                );
            }
        }
    }
}

/// A scheduling target running without the credentials target has no way to get an access
/// key: S3 destinations answer UNAVAILABLE saying so (and store nothing); local destinations,
/// which need no key, work.
#[tokio::test]
async fn scheduling_without_the_credentials_target_refuses_s3_destinations_as_unavailable() {
    use coffer_server::startup::Target;

    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let key = storage_key(&app, &acme).await;
    let bucket = create_bucket().await;

    // A second process running only scheduling (it has the KMS for its job-ticket key, but no
    // credentials service to release access keys), on the same database, bus and keys.
    let (addr, stop) = app.replica(Target::Scheduling, |_| {}).await;
    let mut client = DestinationServiceClient::new(
        crate::helpers::with_token_at(&format!("http://{addr}"), &app.token(&acme.owner_key).await)
            .await,
    );

    let status = register(&mut client, acme.org, s3_fields("offsite", &bucket, &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("S3 destinations need the credentials target in the same process"),
        "{status:?}"
    );
    assert_eq!(releases(&app, &acme).await, Vec::<String>::new());
    assert_eq!(events(&app, &acme).await, Vec::<String>::new());
    register(&mut client, acme.org, local_fields("nas", &local_dir(&app)))
        .await
        .unwrap();
    assert_eq!(events(&app, &acme).await, ["DestinationRegistered"]);
    let _ = stop.send(());
}

/// P3 for storage keys: when the release of the access key cannot be committed, scheduling
/// gets no key, the destination is never contacted, and nothing is saved.
#[tokio::test]
async fn p3_a_storage_key_whose_release_is_not_committed_is_never_used() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut client = destinations(&app, &acme.owner_key).await;
    let key = storage_key(&app, &acme).await;
    // The endpoint is a listener of this test: any use of the key would connect to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut fields = s3_fields("offsite", "some-bucket", &key);
    if let Some(pb::destination_fields::Kind::S3(s3)) = &mut fields.kind {
        s3.endpoint = format!("http://{}", listener.local_addr().unwrap());
    }
    // Every commit of a release fails.
    let su = app.db.superuser().await;
    sqlx::raw_sql(
        "CREATE FUNCTION coffer_credentials.refuse_release() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'release refused by the test'; END $$;
         CREATE TRIGGER refuse_release BEFORE INSERT ON coffer_credentials.events
           FOR EACH ROW WHEN (NEW.event_type = 'CredentialReleasedToService')
           EXECUTE FUNCTION coffer_credentials.refuse_release();",
    )
    .execute(&su)
    .await
    .unwrap();

    let status = register(&mut client, acme.org, fields).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the destination's access key cannot be released now; nothing was saved"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the destination was contacted without a committed release"
    );
    assert_eq!(releases(&app, &acme).await, Vec::<String>::new());
    assert_eq!(events(&app, &acme).await, Vec::<String>::new());
}
