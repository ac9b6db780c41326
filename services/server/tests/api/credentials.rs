//! The credentials service: the vault (values in, never out), envelope encryption bound to
//! its row, the org age key and its recovery export checked with stock `age`, per-job release
//! and managed restore.
//!
//! Every test runs twice, once per KMS provider: `credentials::local::…` with key files, and
//! `credentials::aws::…` through aws-sdk-kms against the stack's KMS API emulator.

use std::process::Stdio;
use std::time::Duration;

use coffer_credentials::Credentials;
use coffer_proto::credentials::v1 as pb;
use coffer_proto::credentials::v1::credential_service_client::CredentialServiceClient;
use coffer_proto::credentials::v1::org_key_service_client::OrgKeyServiceClient;
use coffer_types::OrgId;
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;
use tonic::Code;

use crate::helpers::{Authed, Provider, TestApp, TestOrg, spawn_app_on};

pub(crate) async fn vault(app: &TestApp, org: &TestOrg) -> CredentialServiceClient<Authed> {
    CredentialServiceClient::new(app.authed(&org.owner_key).await)
}

pub(crate) async fn org_keys(app: &TestApp, key: &str) -> OrgKeyServiceClient<Authed> {
    OrgKeyServiceClient::new(app.authed(key).await)
}

pub(crate) async fn create(
    client: &mut CredentialServiceClient<Authed>,
    org: OrgId,
    name: &str,
    value: &[u8],
) -> pb::Credential {
    client
        .create_credential(pb::CreateCredentialRequest {
            org_id: org.to_string(),
            name: name.into(),
            purpose: "database".into(),
            value: value.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Counts of what the credentials service has written: events and stored value versions.
async fn written(app: &TestApp) -> (i64, i64) {
    let su = app.db.superuser().await;
    let events = sqlx::query_scalar(
        "SELECT count(*) FROM coffer_credentials.events WHERE event_type <> 'OrgKeyGenerated'",
    )
    .fetch_one(&su)
    .await
    .unwrap();
    let values = sqlx::query_scalar("SELECT count(*) FROM coffer_credentials.credential_secrets")
        .fetch_one(&su)
        .await
        .unwrap();
    (events, values)
}

/// The application over the test server's own database and KMS key, for the decrypt path no
/// RPC exposes to users.
async fn application(app: &TestApp) -> Credentials {
    Credentials::new(app.db.service(coffer_credentials::SERVICE).await, app.kms())
}

async fn p2_the_vault_stores_replaces_lists_and_deletes_and_never_stores_or_returns_a_value_in_plaintext(
    provider: Provider,
) {
    let app = spawn_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let mut client = vault(&app, &acme).await;
    let secret = b"correct horse battery staple";

    let created = create(&mut client, acme.org, "prod/orders-db", secret).await;
    assert_eq!(
        created.vault_ref,
        format!("vault:coffer/{}/{}", acme.org, created.credential_id)
    );
    assert_eq!(
        (
            created.version,
            created.value_bytes,
            created.purpose.as_str()
        ),
        (1, secret.len() as u32, "database")
    );
    assert_eq!(created.kms_key_id, app.kms().current_key_id().as_str());

    let replaced = client
        .replace_credential_value(pb::ReplaceCredentialValueRequest {
            org_id: acme.org.to_string(),
            credential_id: created.credential_id.clone(),
            value: b"a new password".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((replaced.version, replaced.value_bytes), (2, 14));
    let got = client
        .get_credential(pb::GetCredentialRequest {
            org_id: acme.org.to_string(),
            credential_id: created.credential_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, replaced);
    let listed = client
        .list_credentials(pb::ListCredentialsRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials;
    assert_eq!(listed, vec![replaced.clone()]);

    // The current value decrypts (the release path), and is nowhere in the database in clear:
    // not in the secret table, the events, the outbox or the read model.
    let credentials = application(&app).await;
    let credential_id: uuid::Uuid = created.credential_id.parse().unwrap();
    let current = credentials
        .decrypt_current(acme.org, credential_id)
        .await
        .unwrap();
    assert_eq!(current.expose_secret(), &b"a new password"[..]);
    let su = app.db.superuser().await;
    let dump: Vec<u8> = sqlx::query_scalar(
        "SELECT convert_to(
            (SELECT coalesce(string_agg(encode(ciphertext, 'escape') || encode(wrapped_dek, 'escape'), ''), '')
               FROM coffer_credentials.credential_secrets)
         || (SELECT coalesce(string_agg(encode(payload, 'escape'), ''), '') FROM coffer_credentials.events)
         || (SELECT coalesce(string_agg(to_jsonb(c)::text, ''), '') FROM coffer_credentials.credentials c),
         'UTF8')",
    )
    .fetch_one(&su)
    .await
    .unwrap();
    for plaintext in [&secret[..], b"a new password"] {
        assert!(
            !dump.windows(plaintext.len()).any(|w| w == plaintext),
            "plaintext found at rest"
        );
    }

    // Delete destroys every stored version.
    client
        .delete_credential(pb::DeleteCredentialRequest {
            org_id: acme.org.to_string(),
            credential_id: created.credential_id.clone(),
            reason: "database retired".into(),
        })
        .await
        .unwrap();
    let status = client
        .get_credential(pb::GetCredentialRequest {
            org_id: acme.org.to_string(),
            credential_id: created.credential_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(written(&app).await.1, 0, "no version survives deletion");
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM coffer_credentials.events WHERE aggregate_type = 'Credential' \
         ORDER BY position",
    )
    .fetch_all(&su)
    .await
    .unwrap();
    assert_eq!(
        types,
        [
            "CredentialCreated",
            "CredentialValueSet",
            "CredentialValueSet",
            "CredentialDeleted"
        ]
    );
    // The name is free again.
    create(&mut client, acme.org, "prod/orders-db", b"again").await;
}

async fn p2_a_ciphertext_copied_onto_another_row_or_another_orgs_row_fails_to_decrypt(
    provider: Provider,
) {
    let app = spawn_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let mut acme_vault = vault(&app, &acme).await;
    let source = create(&mut acme_vault, acme.org, "source", b"acme's secret").await;
    let sibling = create(&mut acme_vault, acme.org, "sibling", b"something else").await;
    let foreign = create(
        &mut vault(&app, &other).await,
        other.org,
        "foreign",
        b"other's",
    )
    .await;

    let su = app.db.superuser().await;
    for target in [&sibling.credential_id, &foreign.credential_id] {
        sqlx::query(
            "UPDATE coffer_credentials.credential_secrets t
                SET wrapped_dek = s.wrapped_dek, nonce = s.nonce, ciphertext = s.ciphertext
               FROM coffer_credentials.credential_secrets s
              WHERE s.credential_id = $1 AND t.credential_id = $2",
        )
        .bind(source.credential_id.parse::<uuid::Uuid>().unwrap())
        .bind(target.parse::<uuid::Uuid>().unwrap())
        .execute(&su)
        .await
        .unwrap();
    }

    let credentials = application(&app).await;
    let id = |c: &pb::Credential| c.credential_id.parse::<uuid::Uuid>().unwrap();
    let original = credentials
        .decrypt_current(acme.org, id(&source))
        .await
        .unwrap();
    assert_eq!(original.expose_secret(), &b"acme's secret"[..]);
    for (org, copy) in [(acme.org, &sibling), (other.org, &foreign)] {
        let err = credentials
            .decrypt_current(org, id(copy))
            .await
            .expect_err("a copied ciphertext must not decrypt");
        assert!(
            matches!(err, coffer_credentials::Error::Integrity(_)),
            "{err:?}"
        );
    }
}

async fn bad_input_is_refused_by_field_and_stores_nothing(provider: Provider) {
    let app = spawn_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let mut client = vault(&app, &acme).await;
    let existing = create(&mut client, acme.org, "prod/db", b"pw").await;
    let before = written(&app).await;

    let org = acme.org.to_string();
    let request = |name: &str, purpose: &str, value: Vec<u8>| pb::CreateCredentialRequest {
        org_id: org.clone(),
        name: name.into(),
        purpose: purpose.into(),
        value,
    };
    let cases = [
        (
            request("x", "database", vec![]),
            Code::InvalidArgument,
            "value must not be empty",
        ),
        (
            request("x", "database", vec![7; 64 * 1024 + 1]),
            Code::InvalidArgument,
            "value must be at most 65536 bytes, got 65537",
        ),
        (
            request("x", "kms", b"v".to_vec()),
            Code::InvalidArgument,
            "purpose must be one of database, storage, ssh, generic",
        ),
        (
            request("Prod DB", "database", b"v".to_vec()),
            Code::InvalidArgument,
            "name may hold only lowercase letters, digits and . _ - /",
        ),
        (
            request(&"n".repeat(5000), "database", b"v".to_vec()),
            Code::InvalidArgument,
            "name must be at most 4096 bytes",
        ),
        (
            request("prod/db", "database", b"v".to_vec()),
            Code::AlreadyExists,
            "a credential named prod/db already exists",
        ),
        (
            {
                let mut r = request("x", "database", b"v".to_vec());
                r.org_id = "not-an-org".into();
                r
            },
            Code::InvalidArgument,
            "org_id must be a UUID",
        ),
    ];
    for (request, code, message) in cases {
        let status = client.create_credential(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }

    let replace = |credential_id: &str, value: Vec<u8>| pb::ReplaceCredentialValueRequest {
        org_id: org.clone(),
        credential_id: credential_id.into(),
        value,
    };
    let unknown = uuid::Uuid::now_v7().to_string();
    for (request, code, message) in [
        (
            replace(&existing.credential_id, vec![]),
            Code::InvalidArgument,
            "value must not be empty",
        ),
        (
            replace("nope", b"v".to_vec()),
            Code::InvalidArgument,
            "credential_id must be a UUID",
        ),
        (
            replace(&unknown, b"v".to_vec()),
            Code::NotFound,
            "credential not found",
        ),
    ] {
        let status = client.replace_credential_value(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    let status = client
        .delete_credential(pb::DeleteCredentialRequest {
            org_id: org.clone(),
            credential_id: unknown,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    assert_eq!(written(&app).await, before, "nothing was stored");
}

async fn a_viewer_cannot_read_credentials_and_an_operator_cannot_change_them(provider: Provider) {
    let app = spawn_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let viewer = app.new_api_key(&acme, "viewer").await;
    let operator = app.new_api_key(&acme, "operator").await;
    let org = acme.org.to_string();

    let status = CredentialServiceClient::new(app.authed(&viewer).await)
        .list_credentials(pb::ListCredentialsRequest {
            org_id: org.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut as_operator = CredentialServiceClient::new(app.authed(&operator).await);
    as_operator
        .list_credentials(pb::ListCredentialsRequest {
            org_id: org.clone(),
        })
        .await
        .unwrap();
    let status = as_operator
        .create_credential(pb::CreateCredentialRequest {
            org_id: org,
            name: "x".into(),
            purpose: "generic".into(),
            value: b"v".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::PermissionDenied,
            "permission credential.manage is required"
        )
    );
}

/// Waits for the org's key pair, which the credentials consumer generates after `OrgCreated`.
pub(crate) async fn recipient(app: &TestApp, org: &TestOrg) -> pb::OrgRecipient {
    let client = org_keys(app, &org.owner_key).await;
    coffer_testkit::eventually("the org key is generated", Duration::from_secs(10), || {
        let mut client = client.clone();
        let org = org.org.to_string();
        async move {
            client
                .get_org_recipient(pb::GetOrgRecipientRequest { org_id: org })
                .await
                .ok()
                .map(tonic::Response::into_inner)
        }
    })
    .await
}

pub(crate) async fn run(program: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn p7_a_file_encrypted_to_the_org_recipient_by_stock_age_decrypts_with_the_exported_recovery_key(
    provider: Provider,
) {
    let app = spawn_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let key = recipient(&app, &acme).await;
    assert!(key.recipient.starts_with("age1"), "{key:?}");
    // Every role reads the recipient.
    let viewer = app.new_api_key(&acme, "viewer").await;
    let as_viewer = org_keys(&app, &viewer)
        .await
        .get_org_recipient(pb::GetOrgRecipientRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(as_viewer, key);

    let dir = tempfile::tempdir().unwrap();
    let encrypted = run("age", &["-r", &key.recipient], b"pg_dump output, pretend").await;

    // Only owners export, with a reason, and the export is recorded.
    let admin = app.new_api_key(&acme, "admin").await;
    let status = org_keys(&app, &admin)
        .await
        .export_recovery_key(pb::ExportRecoveryKeyRequest {
            org_id: acme.org.to_string(),
            reason: "drill".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut owner = org_keys(&app, &acme.owner_key).await;
    let status = owner
        .export_recovery_key(pb::ExportRecoveryKeyRequest {
            org_id: acme.org.to_string(),
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "reason must not be empty")
    );
    let exported = owner
        .export_recovery_key(pb::ExportRecoveryKeyRequest {
            org_id: acme.org.to_string(),
            reason: "disaster-recovery drill".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(exported.identity.starts_with("AGE-SECRET-KEY-1"));
    assert_eq!(exported.recipient, key.recipient);
    assert!(
        !format!("{exported:?}").contains("AGE-SECRET-KEY"),
        "the response's Debug is redacted"
    );
    let identity_file = dir.path().join("recovery.key");
    std::fs::write(&identity_file, &exported.identity).unwrap();
    let decrypted = run(
        "age",
        &["-d", "-i", identity_file.to_str().unwrap()],
        &encrypted,
    )
    .await;
    assert_eq!(decrypted, b"pg_dump output, pretend");

    let su = app.db.superuser().await;
    let exports: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM coffer_credentials.events \
         WHERE org_id = $1 AND event_type = 'RecoveryKeyExported'",
    )
    .bind(acme.org.as_uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(exports, 1, "one export, recorded; the refused ones are not");
    // The private key is stored only wrapped.
    let stored: Vec<u8> = sqlx::query_scalar(
        "SELECT wrapped_identity FROM coffer_credentials.org_key_secrets WHERE org_id = $1",
    )
    .bind(acme.org.as_uuid())
    .fetch_one(&su)
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("AGE-SECRET-KEY"));
}

async fn the_platform_org_gets_no_age_key_and_each_customer_org_exactly_one(provider: Provider) {
    let app = spawn_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    recipient(&app, &acme).await;
    let su = app.db.superuser().await;
    // The platform's own OrgCreated has been handled too, so its absence below is a decision.
    coffer_testkit::eventually(
        "the platform's OrgCreated is processed",
        Duration::from_secs(10),
        || {
            let su = su.clone();
            async move {
                let done: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM coffer_credentials.processed_events \
                     WHERE consumer = $1 AND org_id = $2)",
                )
                .bind(coffer_credentials::consumers::ORG_KEYS)
                .bind(OrgId::PLATFORM.as_uuid())
                .fetch_one(&su)
                .await
                .unwrap();
                done.then_some(())
            }
        },
    )
    .await;
    let keys: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT org_id FROM coffer_credentials.org_keys ORDER BY org_id")
            .fetch_all(&su)
            .await
            .unwrap();
    assert_eq!(keys, vec![*acme.org.as_uuid()]);
}

async fn rebuilding_the_credentials_projections_yields_identical_tables(provider: Provider) {
    let app = spawn_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    recipient(&app, &acme).await;
    let mut client = vault(&app, &acme).await;
    let a = create(&mut client, acme.org, "a", b"1").await;
    create(&mut client, acme.org, "b", b"2").await;
    client
        .replace_credential_value(pb::ReplaceCredentialValueRequest {
            org_id: acme.org.to_string(),
            credential_id: a.credential_id.clone(),
            value: b"3".to_vec(),
        })
        .await
        .unwrap();
    org_keys(&app, &acme.owner_key)
        .await
        .export_recovery_key(pb::ExportRecoveryKeyRequest {
            org_id: acme.org.to_string(),
            reason: "drill".into(),
        })
        .await
        .unwrap();

    let su = app.db.superuser().await;
    let dump = || async {
        let mut tables = Vec::new();
        for table in ["credentials", "org_keys"] {
            let rows: Vec<serde_json::Value> = sqlx::query_scalar(&format!(
                "SELECT to_jsonb(t) FROM coffer_credentials.{table} t ORDER BY 1::text"
            ))
            .fetch_all(&su)
            .await
            .unwrap();
            tables.push(rows);
        }
        tables
    };
    let before = dump().await;
    let replayed = coffer_eventstore::rebuild(
        &mut app.db.owner().await,
        coffer_credentials::SERVICE,
        &coffer_credentials::app::projections(),
    )
    .await
    .unwrap();
    assert!(replayed >= 5, "{replayed}");
    assert_eq!(dump().await, before);
}

/// An agent of `org` enrolled over the TLS app, and a ReleaseService client speaking mTLS as it.
pub(crate) async fn enrolled_agent(
    app: &TestApp,
    org: &TestOrg,
) -> (
    String,
    pb::release_service_client::ReleaseServiceClient<tonic::transport::Channel>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (csr, key) = crate::agents::csr_and_key(dir.path(), "EC");
    let e = crate::agents::enroll(app, &crate::agents::new_token(app, org).await, &csr)
        .await
        .unwrap();
    let chain = format!("{}{}", e.certificate_pem, e.intermediate_pem);
    let channel = app.agent_channel(&chain, &key).await;
    (
        e.agent_id,
        pb::release_service_client::ReleaseServiceClient::new(channel),
    )
}

async fn p3_an_agent_receives_exactly_its_tickets_credentials_once_per_attempt_after_the_release_is_recorded(
    provider: Provider,
) {
    use coffer_auth::ticket::JobTicket;
    use coffer_auth::token::Signer;
    use std::time::SystemTime;

    let app = crate::helpers::spawn_tls_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let mut acme_vault = vault(&app, &acme).await;
    let db = create(&mut acme_vault, acme.org, "prod/db", b"db password").await;
    let bucket = create(&mut acme_vault, acme.org, "prod/bucket", b"s3 secret").await;
    let foreign = create(&mut vault(&app, &other).await, other.org, "theirs", b"x").await;
    let (agent_id, mut agent) = enrolled_agent(&app, &acme).await;
    let agent_id: coffer_types::AgentId = agent_id.parse().unwrap();

    let scheduling = Signer::from_seed(&[9; 32]).unwrap();
    app.publish_ticket_key(&scheduling).await;
    let job = uuid::Uuid::now_v7();
    let ticket = |attempt: u32, agent: coffer_types::AgentId, refs: &[&pb::Credential]| {
        let claims = JobTicket::new(
            job,
            attempt,
            agent,
            acme.org,
            refs.iter().map(|c| c.vault_ref.clone()).collect(),
            SystemTime::now(),
            Duration::from_secs(300),
        );
        pb::ReleaseCredentialsRequest {
            ticket: scheduling.issue_ticket(&claims).unwrap(),
        }
    };

    // The published key reaches the service through the bucket watch.
    let released = coffer_testkit::eventually(
        "the ticket key is followed",
        Duration::from_secs(10),
        || {
            let mut agent = agent.clone();
            let request = ticket(1, agent_id, &[&db, &bucket]);
            async move { agent.release_credentials(request).await.ok() }
        },
    )
    .await
    .into_inner();
    assert_eq!(
        (released.job_id.as_str(), released.attempt),
        (job.to_string().as_str(), 1)
    );
    let values: Vec<(&str, &[u8])> = released
        .credentials
        .iter()
        .map(|c| (c.vault_ref.as_str(), c.value.as_slice()))
        .collect();
    assert_eq!(
        values,
        [
            (db.vault_ref.as_str(), &b"db password"[..]),
            (bucket.vault_ref.as_str(), &b"s3 secret"[..])
        ]
    );
    assert!(!format!("{released:?}").contains("db password"));

    let releases = || events_of(&app, "CredentialsReleased");
    assert_eq!(releases().await, 1);

    // Once per attempt: a replayed ticket, or a new ticket for the same attempt, is refused.
    let status = agent
        .release_credentials(ticket(1, agent_id, &[&db]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    agent
        .release_credentials(ticket(2, agent_id, &[&db]))
        .await
        .unwrap();

    // Refused tickets release nothing.
    let expired = {
        let claims = JobTicket::new(
            job,
            3,
            agent_id,
            acme.org,
            vec![db.vault_ref.clone()],
            SystemTime::now() - Duration::from_secs(400),
            Duration::from_secs(300),
        );
        scheduling.issue_ticket(&claims).unwrap()
    };
    let forged = {
        let forger = Signer::from_seed(&[10; 32]).unwrap();
        let claims = JobTicket::new(
            job,
            3,
            agent_id,
            acme.org,
            vec![db.vault_ref.clone()],
            SystemTime::now(),
            Duration::from_secs(300),
        );
        forger.issue_ticket(&claims).unwrap()
    };
    for (request, message) in [
        (
            pb::ReleaseCredentialsRequest { ticket: expired },
            "job ticket has expired",
        ),
        (
            pb::ReleaseCredentialsRequest { ticket: forged },
            "job ticket signature does not verify",
        ),
        (
            ticket(3, coffer_types::AgentId::new(), &[&db]),
            "job ticket was issued to another agent",
        ),
        (
            ticket(3, agent_id, &[&db, &foreign]),
            "job ticket vault_refs[1] is not a credential of the ticket's org",
        ),
        (
            pb::ReleaseCredentialsRequest {
                ticket: "not a ticket".into(),
            },
            "job ticket is malformed",
        ),
    ] {
        let status = agent.release_credentials(request).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::PermissionDenied, message)
        );
    }
    // Users hold no release permission, whatever their role.
    let status =
        pb::release_service_client::ReleaseServiceClient::new(app.authed(&acme.owner_key).await)
            .release_credentials(ticket(3, agent_id, &[&db]))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(releases().await, 2);

    // P3: when the release cannot be recorded, nothing is released.
    event_inserts(&app, false).await;
    let status = agent
        .release_credentials(ticket(3, agent_id, &[&db]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    event_inserts(&app, true).await;
    assert_eq!(releases().await, 2);
    // The attempt was not consumed by the failure.
    agent
        .release_credentials(ticket(3, agent_id, &[&db]))
        .await
        .unwrap();
}

/// Splits an age file into its header (through the `--- <mac>` line) and its payload.
pub(crate) fn split_age(file: &[u8]) -> (&[u8], &[u8]) {
    let mac_line = file
        .windows(4)
        .position(|w| w == b"\n---")
        .expect("an age header")
        + 1;
    let end = mac_line + file[mac_line..].iter().position(|&b| b == b'\n').unwrap() + 1;
    file.split_at(end)
}

/// Opens a one-chunk age payload with `file_key` by the age spec: a 16-byte nonce, then
/// ChaCha20-Poly1305 under HKDF-SHA256(salt = nonce, info = "payload") with chunk nonce
/// `0^11 || 1`.
fn open_payload(file_key: &[u8], payload: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let (nonce, chunk) = payload.split_at(16);
    let key = age_core::primitives::hkdf(nonce, b"payload", file_key);
    let mut chunk_nonce = [0u8; 12];
    chunk_nonce[11] = 1;
    chacha20poly1305::ChaCha20Poly1305::new(&key.into())
        .decrypt(&chunk_nonce.into(), chunk)
        .expect("the payload opens with the unwrapped file key")
}

async fn p3_managed_restore_unwraps_only_the_backups_a_restore_ticket_names_once_per_attempt_after_recording_it(
    provider: Provider,
) {
    use coffer_auth::ticket::JobTicket;
    use coffer_auth::token::Signer;
    use sha2::{Digest, Sha256};
    use std::time::SystemTime;

    let app = crate::helpers::spawn_tls_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let (agent_id, mut agent) = enrolled_agent(&app, &acme).await;
    let agent_id: coffer_types::AgentId = agent_id.parse().unwrap();

    // Backups as the agent makes them: stock age, to the org's recipient.
    let acme_recipient = recipient(&app, &acme).await.recipient;
    let backup = run("age", &["-r", &acme_recipient], b"pg_dump output, pretend").await;
    let (header, payload) = split_age(&backup);
    let second = run("age", &["-r", &acme_recipient], b"another night's dump").await;
    let (second_header, _) = split_age(&second);
    let foreign = run(
        "age",
        &["-r", &recipient(&app, &other).await.recipient],
        b"theirs",
    )
    .await;
    let (foreign_header, _) = split_age(&foreign);
    let digest = |h: &[u8]| format!("{:x}", Sha256::digest(h));

    let scheduling = Signer::from_seed(&[11; 32]).unwrap();
    app.publish_ticket_key(&scheduling).await;
    let job = uuid::Uuid::now_v7();
    let ticket = |attempt: u32, headers: &[&[u8]]| {
        let claims = JobTicket::new(
            job,
            attempt,
            agent_id,
            acme.org,
            vec![],
            SystemTime::now(),
            Duration::from_secs(300),
        )
        .with_file_key_headers(headers.iter().map(|h| digest(h)).collect());
        scheduling.issue_ticket(&claims).unwrap()
    };
    let request = |ticket: String, header: &[u8]| pb::UnwrapFileKeyRequest {
        ticket,
        header: header.to_vec(),
    };

    let unwrapped = coffer_testkit::eventually(
        "the ticket key is followed",
        Duration::from_secs(10),
        || {
            let mut agent = agent.clone();
            let request = request(ticket(1, &[header, second_header]), header);
            async move { agent.unwrap_file_key(request).await.ok() }
        },
    )
    .await
    .into_inner();
    assert_eq!(
        (
            unwrapped.job_id.as_str(),
            unwrapped.attempt,
            unwrapped.header_sha256.as_str()
        ),
        (job.to_string().as_str(), 1, digest(header).as_str())
    );
    assert_eq!(unwrapped.file_key.len(), 16);
    assert_eq!(
        open_payload(&unwrapped.file_key, payload),
        b"pg_dump output, pretend"
    );
    assert!(!format!("{unwrapped:?}").contains(&format!("{:?}", unwrapped.file_key)));

    let unwraps = || events_of(&app, "FileKeyUnwrapped");
    assert_eq!(unwraps().await, 1);

    // Once per attempt and backup; the ticket's other backup still opens.
    let status = agent
        .unwrap_file_key(request(ticket(1, &[header]), header))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    agent
        .unwrap_file_key(request(ticket(1, &[header, second_header]), second_header))
        .await
        .unwrap();
    assert_eq!(unwraps().await, 2);

    // Refused: a backup the ticket does not name (a backup job's ticket names none), another
    // org's backup even when named, a tampered header, and any user, whatever the role.
    for (request, code, message) in [
        (
            request(ticket(2, &[]), header),
            Code::PermissionDenied,
            "job ticket does not name this backup in file_key_headers",
        ),
        (
            request(ticket(2, &[second_header]), header),
            Code::PermissionDenied,
            "job ticket does not name this backup in file_key_headers",
        ),
        (
            request(ticket(2, &[foreign_header]), foreign_header),
            Code::InvalidArgument,
            "header has no stanza addressed to this org's recipient",
        ),
        (
            request(ticket(2, &[b"garbage"]), b"garbage"),
            Code::InvalidArgument,
            "header is not an age-encryption.org/v1 header: missing the age-encryption.org/v1 line",
        ),
    ] {
        let status = agent.unwrap_file_key(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    let status =
        pb::release_service_client::ReleaseServiceClient::new(app.authed(&acme.owner_key).await)
            .unwrap_file_key(request(ticket(2, &[header]), header))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = agent
        .unwrap_file_key(request(ticket(2, &[header]), &vec![b'a'; 64 * 1024 + 1]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "header must be at most 65536 bytes")
    );
    assert_eq!(unwraps().await, 2);

    // P3: when the unwrap cannot be recorded, no key leaves; the attempt is not spent.
    event_inserts(&app, false).await;
    let status = agent
        .unwrap_file_key(request(ticket(2, &[header]), header))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    event_inserts(&app, true).await;
    assert_eq!(unwraps().await, 2);
    agent
        .unwrap_file_key(request(ticket(2, &[header]), header))
        .await
        .unwrap();
}

/// Every stored ciphertext, byte for byte, with its nonce: what rotation must not touch.
async fn ciphertexts(app: &TestApp) -> Vec<(uuid::Uuid, i32, Vec<u8>, Vec<u8>)> {
    sqlx::query_as(
        "SELECT credential_id, version, nonce, ciphertext FROM coffer_credentials.credential_secrets
         ORDER BY credential_id, version",
    )
    .fetch_all(&app.db.superuser().await)
    .await
    .unwrap()
}

async fn p6_rotation_moves_every_wrapped_key_onto_the_new_master_key_and_leaves_ciphertexts_unchanged(
    provider: Provider,
) {
    use coffer_credentials::rotation::RotationSettings;

    let app = spawn_app_on(provider).await;
    let mut values = Vec::new();
    for org_name in ["Acme", "Beta"] {
        let org = app.new_org(org_name).await;
        recipient(&app, &org).await;
        let mut client = vault(&app, &org).await;
        for n in 0..3 {
            let value = format!("{org_name} secret {n}");
            let c = create(&mut client, org.org, &format!("c{n}"), value.as_bytes()).await;
            values.push((
                org.org,
                c.credential_id.parse::<uuid::Uuid>().unwrap(),
                value,
            ));
        }
        // A replaced value: both versions are stored, both move.
        let replaced = format!("{org_name} secret 0, replaced");
        client
            .replace_credential_value(pb::ReplaceCredentialValueRequest {
                org_id: org.org.to_string(),
                credential_id: values[values.len() - 3].1.to_string(),
                value: replaced.clone().into_bytes(),
            })
            .await
            .unwrap();
        let len = values.len();
        values[len - 3].2 = replaced;
    }
    let old_key = app.kms().current_key_id().as_str().to_owned();
    let before = ciphertexts(&app).await;
    assert_eq!(before.len(), 8);

    // The operator configured a new master key; this service instance runs with it.
    let next = app.next_master_key().await;
    let new_key = next.current_key_id().as_str().to_owned();
    assert_ne!(new_key, old_key);
    let rotated = Credentials::new(app.db.service(coffer_credentials::SERVICE).await, next);
    let coverage = rotated.key_coverage().await.unwrap();
    assert_eq!(
        coverage.entries,
        [
            ("credential_dek".to_owned(), old_key.clone(), 8),
            ("org_age_key".to_owned(), old_key.clone(), 2)
        ]
    );
    assert_eq!(coverage.not_under(&new_key), 10);

    let operator = coffer_types::Actor::service("test-operator");
    let err = rotated
        .start_rotation(&operator, &old_key, "yearly")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, coffer_credentials::app::Error::FailedPrecondition(m)
            if m.starts_with("new_key_id must be the master key the service is configured with")),
        "{err:?}"
    );
    let started = rotated
        .start_rotation(&operator, &new_key, "yearly rotation")
        .await
        .unwrap();
    let running = started.latest.unwrap();
    assert_eq!(
        (running.number, running.pending_at_start, running.completed),
        (1, 10, false)
    );
    rotated
        .run_rotation(RotationSettings {
            batch_size: 3,
            batch_pause: Duration::ZERO,
        })
        .await
        .unwrap();

    let done = rotated.rotation_status().await.unwrap().latest.unwrap();
    assert_eq!(
        (done.rewrapped, done.remaining, done.completed),
        (10, 0, true)
    );
    let coverage = rotated.key_coverage().await.unwrap();
    assert_eq!(
        coverage.entries,
        [
            ("credential_dek".to_owned(), new_key.clone(), 8),
            ("org_age_key".to_owned(), new_key.clone(), 2)
        ]
    );
    assert_eq!(
        coverage.not_under(&new_key),
        0,
        "nothing left under the old key"
    );
    assert_eq!(
        ciphertexts(&app).await,
        before,
        "ciphertexts are byte for byte unchanged"
    );
    // Progress was recorded batch by batch: 8 data keys in batches of 3 (org keys ride
    // along in the first batch), then the completion.
    assert_eq!(events_of(&app, "MasterKeyRotationProgressed").await, 3);
    assert_eq!(events_of(&app, "MasterKeyRotationCompleted").await, 1);

    // Every value still opens, through the new key alone on AWS (re-encrypted in KMS), and
    // the org keys unwrap too.
    for (org, credential, value) in &values {
        let opened = rotated.decrypt_current(*org, *credential).await.unwrap();
        assert_eq!(opened.expose_secret(), value.as_bytes());
    }
    for (org, ..) in values.iter().step_by(3) {
        rotated
            .export_recovery_key(&operator, *org, "post-rotation check")
            .await
            .unwrap();
    }
}

/// Lets the service role append events again, or not: P3 tests take the commit away and
/// check that nothing was handed out.
async fn event_inserts(app: &TestApp, allowed: bool) {
    let statement = if allowed {
        "GRANT INSERT ON coffer_credentials.events TO coffer_credentials"
    } else {
        "REVOKE INSERT ON coffer_credentials.events FROM coffer_credentials"
    };
    sqlx::query(statement)
        .execute(&app.db.superuser().await)
        .await
        .unwrap();
}

/// Counts events of `event_type` in the credentials service.
async fn events_of(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM coffer_credentials.events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db.superuser().await)
        .await
        .unwrap()
}

/// KMS unavailability is a property of a KMS over the network, so this test is the AWS
/// provider's only: a relay in front of the emulator takes it away and brings it back with its
/// keys intact.
#[tokio::test]
async fn with_kms_unavailable_every_rpc_fails_unavailable_stores_nothing_and_recovers_on_its_own() {
    use coffer_auth::ticket::JobTicket;
    use coffer_auth::token::Signer;
    use coffer_testkit::relay::TcpRelay;
    use std::time::SystemTime;

    let relay = TcpRelay::start_for_url(&coffer_testkit::kms_endpoint()).await;
    let key_id = crate::helpers::create_aws_master_key().await;
    let kms = coffer_kms::KmsConfig::Aws(coffer_kms::AwsConfig {
        endpoint: Some(relay.url()),
        max_attempts: 2,
        connect_timeout: Duration::from_millis(500),
        attempt_timeout: Duration::from_secs(2),
        ..coffer_kms::AwsConfig::new(key_id)
    });
    let app =
        crate::helpers::spawn_tls_app_with(Provider::Aws, |config| config.kms = Some(kms)).await;
    let acme = app.new_org("Acme").await;
    let acme_recipient = recipient(&app, &acme).await.recipient;
    let mut client = vault(&app, &acme).await;
    let db = create(&mut client, acme.org, "prod/db", b"db password").await;
    let (agent_id, mut agent) = enrolled_agent(&app, &acme).await;
    let scheduling = Signer::from_seed(&[12; 32]).unwrap();
    app.publish_ticket_key(&scheduling).await;
    let backup = run("age", &["-r", &acme_recipient], b"a dump").await;
    let (header, _) = split_age(&backup);
    let header_digest = {
        use sha2::{Digest, Sha256};
        format!("{:x}", Sha256::digest(header))
    };
    let ticket = JobTicket::new(
        uuid::Uuid::now_v7(),
        1,
        agent_id.parse().unwrap(),
        acme.org,
        vec![db.vault_ref.clone()],
        SystemTime::now(),
        Duration::from_secs(300),
    )
    .with_file_key_headers(vec![header_digest]);
    let ticket = scheduling.issue_ticket(&ticket).unwrap();
    let release = || pb::ReleaseCredentialsRequest {
        ticket: ticket.clone(),
    };
    let unwrap_key = || pb::UnwrapFileKeyRequest {
        ticket: ticket.clone(),
        header: header.to_vec(),
    };
    // The ticket key is followed before KMS goes away.
    coffer_testkit::eventually(
        "the ticket key is followed",
        Duration::from_secs(10),
        || {
            let mut agent = agent.clone();
            async move {
                let status = agent
                    .release_credentials(pb::ReleaseCredentialsRequest {
                        ticket: "x.y.z".into(),
                    })
                    .await
                    .unwrap_err();
                (status.code() == Code::PermissionDenied).then_some(())
            }
        },
    )
    .await;
    let before = written(&app).await;

    relay.cut().await;
    let unavailable = "kms is unavailable; nothing was stored or released";
    let status = client
        .create_credential(pb::CreateCredentialRequest {
            org_id: acme.org.to_string(),
            name: "prod/bucket".into(),
            purpose: "storage".into(),
            value: b"outage canary 7f3a".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, unavailable)
    );
    let status = client
        .replace_credential_value(pb::ReplaceCredentialValueRequest {
            org_id: acme.org.to_string(),
            credential_id: db.credential_id.clone(),
            value: b"outage canary 7f3a".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, unavailable)
    );
    let status = agent.release_credentials(release()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, unavailable)
    );
    let status = agent.unwrap_file_key(unwrap_key()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, unavailable)
    );
    let status = org_keys(&app, &acme.owner_key)
        .await
        .export_recovery_key(pb::ExportRecoveryKeyRequest {
            org_id: acme.org.to_string(),
            reason: "drill".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, unavailable)
    );
    // Creating an org needs KMS too (its CA key), so no org is created during the outage.
    // What the consumer would see if KMS went away between enrollment's commit and the key's
    // generation: an `OrgCreated` envelope, published here as enrollment's relay publishes it
    // (the consumer reads only the envelope). The key is generated once KMS is back, without
    // anyone asking again.
    let beta = OrgId::new();
    let org_created = coffer_eventstore::RecordedEvent {
        event_id: coffer_types::EventId::new(),
        org_id: beta,
        service: "enrollment".into(),
        aggregate_type: "Org".into(),
        aggregate_id: coffer_types::AggregateId::from(*beta.as_uuid()),
        version: 1,
        event_type: "OrgCreated".into(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        actor: coffer_types::Actor::service("test"),
        trace_context: Default::default(),
        payload: Vec::new(),
    };
    app.js
        .publish(
            app.bus.subject(beta, "enrollment", "OrgCreated"),
            org_created.encode_envelope().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let beta_keys = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM coffer_credentials.org_key_secrets WHERE org_id = $1",
        )
        .bind(beta.as_uuid())
        .fetch_one(&app.db.superuser().await)
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(beta_keys().await, 0);
    assert_eq!(written(&app).await, before, "nothing was stored");
    assert_eq!(events_of(&app, "OrgKeyGenerated").await, 1, "Acme's only");
    let su = app.db.superuser().await;
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM coffer_credentials.credential_secrets
                 WHERE position('outage canary 7f3a'::bytea IN ciphertext) > 0)
              + (SELECT count(*) FROM coffer_credentials.events
                 WHERE position('outage canary 7f3a'::bytea IN payload) > 0)",
    )
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    relay.restore();
    coffer_testkit::eventually(
        "the org key is generated after the outage",
        Duration::from_secs(30),
        || async { (beta_keys().await == 1).then_some(()) },
    )
    .await;
    let released = agent
        .release_credentials(release())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.credentials[0].value, b"db password");
    agent.unwrap_file_key(unwrap_key()).await.unwrap();
    create(&mut client, acme.org, "prod/bucket", b"s3 secret").await;
    assert_eq!(events_of(&app, "CredentialsReleased").await, 1);
    assert_eq!(events_of(&app, "FileKeyUnwrapped").await, 1);
}

/// Runs each listed test once with the local provider and once with the AWS provider.
macro_rules! on_every_provider {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $test() {
                    Box::pin(super::$test(crate::helpers::Provider::Local)).await
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test]
                async fn $test() {
                    Box::pin(super::$test(crate::helpers::Provider::Aws)).await
                }
            )*
        }
    };
}

on_every_provider!(
    p2_the_vault_stores_replaces_lists_and_deletes_and_never_stores_or_returns_a_value_in_plaintext,
    p2_a_ciphertext_copied_onto_another_row_or_another_orgs_row_fails_to_decrypt,
    bad_input_is_refused_by_field_and_stores_nothing,
    a_viewer_cannot_read_credentials_and_an_operator_cannot_change_them,
    p7_a_file_encrypted_to_the_org_recipient_by_stock_age_decrypts_with_the_exported_recovery_key,
    the_platform_org_gets_no_age_key_and_each_customer_org_exactly_one,
    rebuilding_the_credentials_projections_yields_identical_tables,
    p3_an_agent_receives_exactly_its_tickets_credentials_once_per_attempt_after_the_release_is_recorded,
    p3_managed_restore_unwraps_only_the_backups_a_restore_ticket_names_once_per_attempt_after_recording_it,
    p6_rotation_moves_every_wrapped_key_onto_the_new_master_key_and_leaves_ciphertexts_unchanged,
);
