//! `coffer-sdk` against the real server: every method, token refresh, retries, error mapping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_sdk::{
    ApiKeyId, AuditQuery, Client, ClientOptions, Code, CredentialId, Error, ExportOptions,
    ExposeSecret, NewApiKey, OrgId, Purpose, RetryPolicy, Role, RotationState, SecretSlice, UserId,
    WrappedKeyPurpose,
};
use coffer_testkit::eventually;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{TestApp, TestOrg, spawn_app};

async fn connect(app: &TestApp, api_key: &str) -> Client {
    Box::pin(Client::connect(&app.url(), api_key))
        .await
        .expect("connect")
}

async fn owner(app: &TestApp, org: &TestOrg) -> Client {
    connect(app, &org.owner_key).await
}

#[tokio::test]
async fn every_sdk_method_works_against_the_server() {
    let app = spawn_app().await;
    let platform = connect(&app, &app.platform_key).await;
    assert_eq!(
        (platform.org(), platform.role()),
        (OrgId::PLATFORM, Role::Owner)
    );

    // Orgs.
    let created = platform
        .orgs()
        .create("Acme", "Owner@Acme.test")
        .await
        .unwrap();
    assert_eq!(created.org.name, "Acme");
    assert_eq!(
        (created.owner.email.as_str(), created.owner.role),
        ("owner@acme.test", Role::Owner)
    );
    assert_eq!(created.owner_api_key.key.role, Role::Owner);
    let secret = created.owner_api_key.secret.expose_secret().to_owned();
    assert!(secret.starts_with("coffer_"));
    assert_eq!(created.owner_api_key.key.display_prefix, secret[..12]);

    let acme = Client::connect(&app.url(), secret).await.unwrap();
    let org = acme.org();
    assert_eq!(org, created.org.org_id);
    assert_eq!(acme.role(), Role::Owner);
    assert_eq!(acme.orgs().get(org).await.unwrap(), created.org);

    // Members.
    let members = acme.members();
    let bob = members
        .add(org, "bob@acme.test", Role::Operator)
        .await
        .unwrap();
    assert_eq!((bob.role, bob.suspended), (Role::Operator, false));
    let listed = members.list(org).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&bob));
    let bob = members
        .change_role(org, bob.user_id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(bob.role, Role::Admin);
    let bob = members.suspend(org, bob.user_id, "on leave").await.unwrap();
    assert!(bob.suspended);
    let bob = members.reactivate(org, bob.user_id).await.unwrap();
    assert!(!bob.suspended);
    members.remove(org, bob.user_id).await.unwrap();
    let listed = members.list(org).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user_id, created.owner.user_id);

    // API keys.
    let expires_at = chrono::Utc::now() + chrono::Duration::days(30);
    let ci = acme
        .api_keys()
        .create(
            org,
            NewApiKey::new("ci", Role::Operator)
                .scope("job.run")
                .expires_at(expires_at),
        )
        .await
        .unwrap();
    assert_eq!(
        (ci.key.name.as_str(), ci.key.role, ci.key.scopes.as_slice()),
        ("ci", Role::Operator, ["job.run".to_owned()].as_slice())
    );
    assert_eq!(
        ci.key.expires_at.map(|t| t.timestamp_micros()),
        Some(expires_at.timestamp_micros())
    );
    let as_ci = Client::connect(&app.url(), ci.secret.clone())
        .await
        .unwrap();
    assert_eq!((as_ci.org(), as_ci.role()), (org, Role::Operator));
    let keys = acme.api_keys().list(org).await.unwrap();
    assert_eq!(keys.len(), 2, "the owner key and ci");
    let listed_ci = keys.iter().find(|k| k.key_id == ci.key.key_id).unwrap();
    assert!(listed_ci.last_used_at.is_some(), "connecting exchanged it");
    let revoked = acme
        .api_keys()
        .revoke(org, ci.key.key_id, "rotated")
        .await
        .unwrap();
    assert!(revoked.revoked);

    // Tokens.
    let token = acme.tokens().exchange().await.unwrap();
    assert_eq!((token.org_id, token.role), (org, Role::Owner));
    let lifetime = token.expires_at - chrono::Utc::now();
    assert!(
        (290..=300).contains(&lifetime.num_seconds()),
        "{lifetime:?}"
    );
    assert_ne!(
        token.token.expose_secret(),
        "",
        "a token usable outside the SDK"
    );
    let jwks = acme.tokens().jwks().await.unwrap();
    assert!(!jwks.keys.is_empty());
    assert!(
        jwks.keys
            .iter()
            .all(|k| k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"))
    );
    let kid = jwt_kid(token.token.expose_secret());
    assert!(
        jwks.keys.iter().any(|k| k.kid == kid),
        "{kid} not in {jwks:?}"
    );

    // Diagnostics.
    let sent = acme.diagnostics().send_probe(org, "hello").await.unwrap();
    assert_eq!(sent.version, 1);
    let probe = eventually("the probe is observed", Duration::from_secs(10), || {
        let acme = acme.clone();
        async move {
            let probe = acme
                .diagnostics()
                .get_probe(org, sent.probe_id)
                .await
                .unwrap();
            probe.observed_at.is_some().then_some(probe)
        }
    })
    .await;
    assert_eq!(
        (probe.note.as_str(), probe.probes_sent, probe.published),
        ("hello", 1, true)
    );
    assert!(probe.stream_sequence.is_some());
}

#[tokio::test]
async fn the_sdk_manages_enrollment_tokens_agents_and_the_crl() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let client = owner(&app, &acme).await;
    let org = acme.org;
    let dir = tempfile::tempdir().unwrap();

    let created = client
        .enrollment_tokens()
        .create(org, "db-host-1", Some(Duration::from_secs(2 * 3600)))
        .await
        .unwrap();
    let secret = created.secret.expose_secret().to_owned();
    assert!(secret.starts_with("coffer_enroll_"));
    assert_eq!(created.token.display_prefix, secret[..20]);
    assert_eq!(created.token.name, "db-host-1");
    let ttl = created.token.expires_at - created.token.created_at;
    assert!((7199..=7200).contains(&ttl.num_seconds()), "{ttl:?}");
    assert_eq!(created.token.status(chrono::Utc::now()), "active");
    assert!(!format!("{created:?}").contains(&secret[14..]));

    // The default lifetime is an hour; more than a day is refused, naming the field.
    let default = client
        .enrollment_tokens()
        .create(org, "db-host-2", None)
        .await
        .unwrap();
    let ttl = default.token.expires_at - default.token.created_at;
    assert!((3599..=3600).contains(&ttl.num_seconds()), "{ttl:?}");
    let err = client
        .enrollment_tokens()
        .create(org, "too-long", Some(Duration::from_secs(25 * 3600)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("ttl_seconds"), "{err}");

    // An agent enrolls with the first token (agents call Enroll themselves, not the SDK).
    let enrolled = crate::agents::enroll(
        &app,
        &secret,
        &crate::agents::csr(dir.path(), "ED25519", &[]),
    )
    .await
    .unwrap();
    let agent_id: coffer_sdk::AgentId = enrolled.agent_id.parse().unwrap();

    let tokens = client.enrollment_tokens().list(org).await.unwrap();
    assert_eq!(tokens.len(), 2);
    let used = tokens
        .iter()
        .find(|t| t.token_id == created.token.token_id)
        .unwrap();
    assert_eq!(used.used_by_agent_id, Some(agent_id));
    assert_eq!(used.status(chrono::Utc::now()), "used");
    let revoked = client
        .enrollment_tokens()
        .revoke(org, default.token.token_id, "host retired")
        .await
        .unwrap();
    assert_eq!(revoked.status(chrono::Utc::now()), "revoked");

    // Agents.
    let agents = client.agents().list(org).await.unwrap();
    assert_eq!(agents.len(), 1);
    let agent = client.agents().get(org, agent_id).await.unwrap();
    assert_eq!(agent, agents[0]);
    assert_eq!(
        (
            agent.serial.as_str(),
            agent.spiffe_id.as_str(),
            agent.revoked
        ),
        (enrolled.serial.as_str(), enrolled.spiffe_id.as_str(), false)
    );
    let err = client
        .agents()
        .get(org, coffer_sdk::AgentId::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    let before = client.agents().crl(org).await.unwrap();
    assert!(before.pem.starts_with("-----BEGIN X509 CRL-----"));
    assert!(before.next_update > before.this_update);
    let agent = client
        .agents()
        .revoke(org, agent_id, "host compromised")
        .await
        .unwrap();
    assert!(agent.revoked);
    let after = client.agents().crl(org).await.unwrap();
    assert!(after.number > before.number, "{after:?} after {before:?}");
    let crl = crate::agents::write(dir.path(), "crl.der", &after.der);
    let text = crate::agents::openssl(
        dir.path(),
        &["crl", "-inform", "DER", "-in", &crl, "-noout", "-text"],
    );
    let text = String::from_utf8_lossy(&text.stdout).to_uppercase();
    assert!(
        text.contains(&enrolled.serial.to_uppercase()),
        "the revoked serial is on the CRL: {text}"
    );
}

#[tokio::test]
async fn the_sdk_manages_credentials_reads_the_org_recipient_and_only_owners_export_the_recovery_key()
 {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let client = owner(&app, &acme).await;
    let org = acme.org;
    let vault = client.credentials();

    // Create, get, list.
    let password = SecretSlice::from(b"correct horse battery staple".to_vec());
    let created = vault
        .create(org, "prod/orders-db", Purpose::Database, &password)
        .await
        .unwrap();
    assert_eq!(
        (
            created.org_id,
            created.name.as_str(),
            created.purpose,
            created.version,
            created.value_bytes,
            created.kms_key_id.as_str()
        ),
        (
            org,
            "prod/orders-db",
            Purpose::Database,
            1,
            28,
            "test-master"
        )
    );
    assert_eq!(
        created.vault_ref,
        format!("vault:coffer/{org}/{}", created.credential_id)
    );
    let err = vault
        .create(org, "prod/orders-db", Purpose::Generic, &password)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
    let err = vault
        .create(org, "Prod DB", Purpose::Generic, &password)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("name"), "{err}");
    let key = SecretSlice::from(b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec());
    let ssh = vault
        .create(org, "prod/bastion", Purpose::Ssh, &key)
        .await
        .unwrap();
    assert_eq!(ssh.purpose, Purpose::Ssh);
    assert_eq!(
        vault.get(org, created.credential_id).await.unwrap(),
        created
    );
    let mut listed = vault.list(org).await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![ssh.clone(), created.clone()]);

    // Replace: a new version, the same credential.
    let replaced = vault
        .replace_value(
            org,
            created.credential_id,
            &SecretSlice::from(b"a new password".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            replaced.credential_id,
            replaced.version,
            replaced.value_bytes,
            replaced.created_at
        ),
        (created.credential_id, 2, 14, created.created_at)
    );
    assert!(replaced.updated_at >= created.updated_at);
    assert_eq!(
        vault.get(org, created.credential_id).await.unwrap(),
        replaced
    );

    // Another org's credentials are not found, not forbidden.
    let other = app.new_org("Other").await;
    let err = owner(&app, &other)
        .await
        .credentials()
        .get(org, created.credential_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    // Delete, with a reason; then it is gone.
    vault
        .delete(org, created.credential_id, "database retired")
        .await
        .unwrap();
    let err = vault.get(org, created.credential_id).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    let err = vault
        .delete(org, created.credential_id, "again")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    let err = vault.get(org, CredentialId::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert_eq!(vault.list(org).await.unwrap(), vec![ssh]);

    // The org key: every member reads the recipient once the key pair is generated.
    let recipient = eventually("the org key is generated", Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.org_keys().recipient(org).await.ok() }
    })
    .await;
    assert_eq!(recipient.org_id, org);
    assert!(recipient.recipient.starts_with("age1"), "{recipient:?}");
    let admin = connect(&app, &app.new_api_key(&acme, "admin").await).await;
    assert_eq!(admin.org_keys().recipient(org).await.unwrap(), recipient);

    // Only owners export the recovery key.
    let err = admin
        .org_keys()
        .export_recovery_key(org, "drill")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    let err = client
        .org_keys()
        .export_recovery_key(org, " ")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    let exported = client
        .org_keys()
        .export_recovery_key(org, "disaster-recovery drill")
        .await
        .unwrap();
    assert_eq!(
        (exported.org_id, exported.recipient.as_str()),
        (org, recipient.recipient.as_str())
    );
    let identity = exported.identity.expose_secret();
    assert!(identity.starts_with("AGE-SECRET-KEY-1"));
    assert!(
        !format!("{exported:?}").contains(&identity[16..]),
        "Debug redacts the identity"
    );
}

#[tokio::test]
async fn the_sdk_reports_master_key_coverage_and_rotates_only_onto_the_configured_master_key() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let acme_owner = owner(&app, &acme).await;
    let value = SecretSlice::from(b"correct horse battery staple".to_vec());
    for name in ["prod/orders-db", "prod/users-db"] {
        acme_owner
            .credentials()
            .create(acme.org, name, Purpose::Database, &value)
            .await
            .unwrap();
    }
    eventually("the org key is generated", Duration::from_secs(10), || {
        let client = acme_owner.clone();
        async move { client.org_keys().recipient(acme.org).await.ok() }
    })
    .await;

    // Coverage: every wrapped key is under the configured master key.
    let platform = connect(&app, &app.platform_key).await;
    let master_keys = platform.master_keys();
    let coverage = master_keys.coverage().await.unwrap();
    assert_eq!(coverage.current_key_id, "test-master");
    let entries: Vec<(WrappedKeyPurpose, &str, u64)> = coverage
        .entries
        .iter()
        .map(|e| (e.purpose, e.kms_key_id.as_str(), e.wrapped_keys))
        .collect();
    assert_eq!(
        entries,
        [
            (WrappedKeyPurpose::CredentialDek, "test-master", 2),
            (WrappedKeyPurpose::OrgAgeKey, "test-master", 1)
        ]
    );
    assert_eq!(coverage.not_under("test-master"), 0);
    assert_eq!(coverage.not_under("other-key"), 3);
    let none = master_keys.rotation().await.unwrap();
    assert_eq!(
        (none.state, none.number, none.current_key_id.as_str()),
        (RotationState::None, 0, "test-master")
    );

    // Only onto the key the server is configured with, and never without a reason.
    let err = master_keys
        .rotate("other-key", "yearly rotation")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("test-master"), "{err}");
    let err = master_keys.rotate("test-master", " ").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert_eq!(
        master_keys.rotation().await.unwrap().state,
        RotationState::None
    );

    // Onto the configured key: nothing to move, so it completes with nothing remaining.
    let started = master_keys
        .rotate("test-master", "yearly rotation")
        .await
        .unwrap();
    assert_eq!(
        (
            started.number,
            started.to_key_id.as_str(),
            started.reason.as_str(),
            started.pending_at_start
        ),
        (1, "test-master", "yearly rotation", 0)
    );
    assert_ne!(started.state, RotationState::None);
    let done = eventually(
        "the rotation completes",
        Duration::from_secs(10),
        || async {
            let rotation = master_keys.rotation().await.unwrap();
            (rotation.state == RotationState::Completed).then_some(rotation)
        },
    )
    .await;
    assert_eq!(
        (done.number, done.rewrapped, done.remaining),
        (1, 0, 0),
        "{done:?}"
    );
    assert_eq!(master_keys.coverage().await.unwrap(), coverage);

    // A customer org's owner does not see the platform's master key at all.
    let customer = acme_owner.master_keys();
    for err in [
        customer.coverage().await.unwrap_err(),
        customer.rotation().await.unwrap_err(),
        customer
            .rotate("test-master", "yearly rotation")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    }
    assert_eq!(master_keys.rotation().await.unwrap().number, 1);
}

#[tokio::test]
async fn the_sdk_reads_the_audit_log_in_pages_with_proofs_and_exports_a_bundle_that_verifies() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let client = owner(&app, &acme).await;
    let org = acme.org;
    eventually("the org key is generated", Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.org_keys().recipient(org).await.ok() }
    })
    .await;
    let value = SecretSlice::from(b"v".to_vec());
    let mut created = Vec::new();
    for name in ["a", "b", "c"] {
        let credential = client
            .credentials()
            .create(org, name, Purpose::Generic, &value)
            .await
            .unwrap();
        created.push(credential.credential_id.to_string());
    }
    let audit = client.audit();
    let n = crate::cli::org_events(&app, org).await;
    let checkpoint = eventually(
        "a checkpoint covers the log",
        Duration::from_secs(20),
        || async move {
            audit
                .checkpoint(org, None)
                .await
                .ok()
                .filter(|c| c.size >= n)
        },
    )
    .await;
    assert_eq!((checkpoint.org_id, checkpoint.size), (org, n));

    // Pages of 3, oldest first, then all of them at once.
    let first = audit
        .query(org, &AuditQuery::new().page_size(3))
        .await
        .unwrap();
    assert_eq!(
        first.items.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let token = first.next_page_token.clone().expect("more pages");
    let second = audit
        .query(org, &AuditQuery::new().page_size(3).page_token(token))
        .await
        .unwrap();
    assert_eq!(second.items[0].seq, 4);
    let all = audit
        .query_all(org, AuditQuery::new().page_size(3))
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(all[..3], first.items[..]);
    assert!(all.iter().all(|e| e.event.org_id == org));
    let made = audit
        .query_all(org, AuditQuery::new().action("CredentialCreated"))
        .await
        .unwrap();
    assert_eq!(
        made.iter()
            .map(|e| e.event.aggregate_id.to_string())
            .collect::<Vec<_>>(),
        created
    );
    let by_actor = audit
        .query_all(org, AuditQuery::new().actor(&made[0].event.actor))
        .await
        .unwrap();
    assert!(by_actor.len() >= 6, "the owner key made the credentials");

    // An entry with its leaf and inclusion proof, which check against the checkpoint.
    let proof = audit.entry(org, 2, None).await.unwrap();
    assert_eq!(proof.entry, all[1]);
    assert_eq!(proof.checkpoint, checkpoint);
    let leaf_hash = coffer_tlog::leaf_hash(&proof.leaf);
    assert_eq!(leaf_hash, proof.entry.leaf_hash.0);
    let path: Vec<[u8; 32]> = proof.inclusion_proof.iter().map(|h| h.0).collect();
    coffer_tlog::verify_inclusion(&leaf_hash, 1, n, &path, &checkpoint.root_hash.0).unwrap();
    let err = audit.entry(org, n + 1_000, None).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    // Checkpoints: by size, listed newest first a page at a time; a consistency proof.
    assert_eq!(audit.checkpoint(org, Some(n)).await.unwrap(), checkpoint);
    let listed = audit.checkpoints(org, Some(1), None).await.unwrap();
    assert_eq!(listed.items, std::slice::from_ref(&checkpoint));
    if let Some(token) = listed.next_page_token {
        let older = audit.checkpoints(org, None, Some(&token)).await.unwrap();
        assert!(older.items.iter().all(|c| c.size < n));
    }
    let consistency = audit.consistency(org, 2, n).await.unwrap();
    assert_eq!(consistency.to_root, checkpoint.root_hash);
    let path: Vec<[u8; 32]> = consistency.proof.iter().map(|h| h.0).collect();
    coffer_tlog::verify_consistency(
        2,
        n,
        &path,
        &consistency.from_root.0,
        &consistency.to_root.0,
    )
    .unwrap();

    // The export: written in the bundle file format, it verifies offline.
    let mut file = Vec::new();
    let written = audit
        .export(org, ExportOptions::new())
        .await
        .unwrap()
        .write_to(&mut file)
        .await
        .unwrap();
    assert_eq!((written.from_seq, written.entries, written.size), (1, n, n));
    let report = coffer_audit::bundle::verify(
        file.as_slice(),
        &coffer_audit::bundle::Options {
            key: Some(checkpoint.verifier_key.clone()),
            org: Some(org),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((report.size, report.entries), (n, n));
    assert_eq!(report.root, checkpoint.root_hash.0);
    assert_eq!(report.chain_head, all[all.len() - 1].chain_hash.0);

    // Streamed record by record: a header, the entries from --from-seq, a trailer with proof.
    let mut stream = audit
        .export(org, ExportOptions::new().from_seq(n).consistency_from(2))
        .await
        .unwrap();
    let mut records = Vec::new();
    while let Some(record) = stream.next().await.unwrap() {
        records.push(record.record.unwrap());
    }
    use coffer_proto::audit::v1::bundle_record::Record;
    assert!(matches!(&records[0], Record::Header(h) if h.from_seq == n));
    assert!(matches!(&records[1], Record::Entry(e) if e.seq == n));
    assert!(
        matches!(&records[2], Record::Trailer(t) if t.entries == 1 && t.consistency_from_size == 2)
    );
    let err = audit
        .export(org, ExportOptions::new().tree_size(n + 1_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::OutOfRange), "{err}");

    // Auditors read it; operators do not.
    let auditor = connect(&app, &app.new_api_key(&acme, "auditor").await).await;
    assert_eq!(
        auditor.audit().checkpoint(org, Some(n)).await.unwrap(),
        checkpoint
    );
    let operator = connect(&app, &app.new_api_key(&acme, "operator").await).await;
    let err = operator.audit().checkpoint(org, None).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
}

/// The `kid` in a JWT's header.
fn jwt_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut bits, mut n, mut json) = (0u32, 0, Vec::new());
    for c in header.bytes() {
        bits = (bits << 6) | alphabet.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            json.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    let header: serde_json::Value = serde_json::from_slice(&json).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn server_errors_arrive_as_typed_variants_with_the_servers_message() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let client = owner(&app, &acme).await;
    let org = acme.org;

    let err = client
        .members()
        .add(org, "not an email", Role::Viewer)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::InvalidArgument {
            message: "email must be an address like name@example.com of at most 254 bytes".into()
        }
    );
    assert_eq!(err.code(), Some(Code::InvalidArgument));

    client
        .members()
        .add(org, "bob@acme.test", Role::Viewer)
        .await
        .unwrap();
    let err = client
        .members()
        .add(org, "bob@acme.test", Role::Viewer)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");

    // Another tenant's org, an unknown member, an unknown key: all NOT_FOUND.
    for err in [
        client.orgs().get(other.org).await.unwrap_err(),
        client
            .members()
            .remove(org, UserId::new())
            .await
            .unwrap_err(),
        client
            .api_keys()
            .revoke(org, ApiKeyId::new(), "x")
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    let owner_id: UserId = acme.owner_user_id.parse().unwrap();
    let err = client
        .members()
        .change_role(org, owner_id, Role::Viewer)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::FailedPrecondition {
            message: "an org must keep at least one active owner".into()
        }
    );

    let viewer = client
        .api_keys()
        .create(org, NewApiKey::new("read only", Role::Viewer))
        .await
        .unwrap();
    let as_viewer = Client::connect(&app.url(), viewer.secret.clone())
        .await
        .unwrap();
    let err = as_viewer
        .api_keys()
        .create(org, NewApiKey::new("escalate", Role::Viewer))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::PermissionDenied {
            message: "permission api_key.manage is required".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "permission denied: permission api_key.manage is required"
    );

    // A refused key: UNAUTHENTICATED, and neither the error nor its Debug shows the key.
    let bad_key = "coffer_0123456789abcdefghijklmnopqrstuvwxyzAB";
    let err = Client::connect(&app.url(), bad_key).await.unwrap_err();
    assert_eq!(
        err,
        Error::Unauthenticated {
            message: "invalid credentials".into()
        }
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(bad_key), "{text}");
    }
    let err = Client::connect("127.0.0.1:7443", bad_key)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidEndpoint { .. }), "{err:?}");
    assert_eq!(err.code(), None);
}

#[tokio::test]
async fn secrets_never_show_in_debug_output() {
    let app = spawn_app().await;
    let platform = connect(&app, &app.platform_key).await;
    let created = platform.orgs().create("Acme", "o@acme.test").await.unwrap();
    let secret = created.owner_api_key.secret.expose_secret().to_owned();
    let client = Client::connect(&app.url(), secret.clone()).await.unwrap();
    let token = client.tokens().exchange().await.unwrap();
    let jwt = token.token.expose_secret().to_owned();
    for debug in [
        format!("{created:?}"),
        format!("{client:?}"),
        format!("{platform:?}"),
        format!("{token:?}"),
    ] {
        for secret in [&secret, &app.platform_key, &jwt] {
            // The display prefix is public; nothing past it may show.
            assert!(!debug.contains(&secret[10..]), "{debug}");
        }
    }
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let direct = owner(&app, &acme).await;
    let key = direct
        .api_keys()
        .create(acme.org, NewApiKey::new("watched", Role::Viewer))
        .await
        .unwrap();
    // Every exchange of the key is recorded as its last use.
    let last_used = || {
        let direct = direct.clone();
        async move {
            direct
                .api_keys()
                .list(acme.org)
                .await
                .unwrap()
                .into_iter()
                .find(|k| k.key_id == key.key.key_id)
                .and_then(|k| k.last_used_at)
                .expect("exchanged at connect")
        }
    };

    // The default margin (60 s of a 5-minute token): calls reuse the token.
    let client = Client::connect(&app.url(), key.secret.clone())
        .await
        .unwrap();
    let connected = last_used().await;
    client.members().list(acme.org).await.unwrap();
    client.orgs().get(acme.org).await.unwrap();
    assert_eq!(last_used().await, connected, "no exchange");

    // A margin longer than the lifetime: every call finds its token due and refreshes it.
    let eager = ClientOptions::new()
        .refresh_margin(Duration::from_secs(600))
        .connect(&app.url(), key.secret.clone())
        .await
        .unwrap();
    let mut uses = vec![last_used().await];
    for _ in 0..3 {
        eager.members().list(acme.org).await.unwrap();
        uses.push(last_used().await);
    }
    assert!(
        uses.windows(2).all(|w| w[0] < w[1]),
        "each call exchanged the key first: {uses:?}"
    );
    assert!(eager.token_expires_at() > chrono::Utc::now());

    // Concurrent callers on a due token all get through.
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let eager = eager.clone();
            let org = acme.org;
            tokio::spawn(async move { eager.members().list(org).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_revoked_keys_client_refreshes_once_then_reports_the_refusal() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let client = owner(&app, &acme).await;
    let ci = client
        .api_keys()
        .create(acme.org, NewApiKey::new("ci", Role::Operator))
        .await
        .unwrap();
    let as_ci = Client::connect(&app.url(), ci.secret.clone())
        .await
        .unwrap();
    as_ci
        .diagnostics()
        .send_probe(acme.org, "ok")
        .await
        .unwrap();
    client
        .api_keys()
        .revoke(acme.org, ci.key.key_id, "leaked")
        .await
        .unwrap();
    // The token is refused once the revocation propagates; the SDK exchanges the key again,
    // that fails too, and the server's reason for refusing the token is what the caller sees.
    let err = eventually("the revoked key refused", Duration::from_secs(2), || {
        let as_ci = as_ci.clone();
        async move { as_ci.diagnostics().send_probe(acme.org, "x").await.err() }
    })
    .await;
    assert_eq!(
        err,
        Error::Unauthenticated {
            message: "access token refused: api key has been revoked".into()
        }
    );
}

/// A TCP proxy in front of the server that can misbehave.
struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    answers_lost: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Accept new connections and close them at once.
    Drop,
    /// Pass bytes both ways.
    Forward,
    /// Pass requests to the server, but from the server's next answer (HTTP/2 HEADERS
    /// frame) on, pass nothing back on that connection.
    LoseAnswers,
}

impl Proxy {
    async fn start(upstream: SocketAddr, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(mode);
        let (cut, _) = watch::channel(0);
        let accepted = Arc::new(AtomicUsize::new(0));
        let answers_lost = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (mode, cut) = (mode.clone(), cut.clone());
            let (accepted, answers_lost) = (accepted.clone(), answers_lost.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    // Subscribed and read before the connection is counted, so a test that
                    // saw the count rise knows how this connection is treated.
                    let (mode, cut) = (mode.subscribe(), cut.subscribe());
                    let drop_it = *mode.borrow() == Mode::Drop;
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if !drop_it {
                        tokio::spawn(relay(client, upstream, mode, cut, answers_lost.clone()));
                    }
                }
            }
        });
        Self {
            addr,
            mode,
            cut,
            accepted,
            answers_lost,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how new connections, and answers on open ones, are treated.
    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every open connection.
    fn cut(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn answers_lost(&self) -> usize {
        self.answers_lost.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    mut cut: watch::Receiver<u64>,
    answers_lost: Arc<AtomicUsize>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = forward_answers(&mut server_read, &mut client_write, &mode, &answers_lost);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut.changed() => {}
    }
}

/// Forwards the server's HTTP/2 frames until, in [`Mode::LoseAnswers`], a HEADERS frame
/// starts an answer; from there on, drops everything.
async fn forward_answers(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    mode: &watch::Receiver<Mode>,
    answers_lost: &AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const HEADERS: u8 = 0x1;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut losing = false;
    loop {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        if losing {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        // A frame: 3-byte length, type, flags, 4-byte stream id, payload.
        while buf.len() >= 9 {
            if buf[3] == HEADERS && *mode.borrow() == Mode::LoseAnswers {
                losing = true;
                answers_lost.fetch_add(1, Ordering::SeqCst);
                break;
            }
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..9 + len).collect();
            to.write_all(&frame).await?;
        }
    }
}

fn patient() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(1000)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(50))
        .deadline(Some(Duration::from_secs(30)))
}

#[tokio::test]
async fn connect_retries_until_the_server_answers() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr, Mode::Drop).await;
    let connecting = tokio::spawn({
        let (url, key) = (proxy.url(), app.platform_key.clone());
        async move {
            ClientOptions::new()
                .retry(patient())
                .connect(&url, key)
                .await
        }
    });
    eventually("two failed attempts", Duration::from_secs(10), || async {
        (proxy.accepted() >= 2).then_some(())
    })
    .await;
    proxy.set(Mode::Forward);
    let client = connecting
        .await
        .unwrap()
        .expect("connected once the server answered");
    assert_eq!(client.org(), OrgId::PLATFORM);
}

#[tokio::test]
async fn a_server_that_never_answers_fails_after_the_retry_budget() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr, Mode::Drop).await;
    let err = ClientOptions::new()
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .initial_backoff(Duration::from_millis(1)),
        )
        .connect(&proxy.url(), app.platform_key.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Transport { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains(&app.platform_key[10..]));

    // Nothing listening at all: the connection is refused, also retried.
    let port = coffer_testkit::free_port();
    let err = ClientOptions::new()
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .initial_backoff(Duration::from_millis(1)),
        )
        .connect(
            &format!("http://127.0.0.1:{port}"),
            app.platform_key.clone(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport { attempts: 2, message } if message.contains("Connection refused")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_https_endpoint_speaks_tls_and_never_falls_back_to_plaintext() {
    let app = spawn_app().await;
    // The test server speaks plaintext HTTP/2: the TLS handshake fails, nothing is sent.
    let err = ClientOptions::new()
        .retry(RetryPolicy::never())
        .connect(&format!("https://{}", app.addr), app.platform_key.clone())
        .await
        .unwrap_err();
    // rustls read the server's plaintext HTTP/2 frames as a TLS record.
    assert!(
        matches!(&err, Error::Transport { attempts: 1, message } if message.contains("InvalidContentType")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_repeated_but_a_read_is() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let direct = owner(&app, &acme).await;
    let proxy = Proxy::start(app.addr, Mode::Forward).await;
    let client = ClientOptions::new()
        .retry(patient())
        .connect(&proxy.url(), acme.owner_key.clone())
        .await
        .unwrap();
    let named = |name: &'static str| {
        let direct = direct.clone();
        async move {
            direct
                .api_keys()
                .list(acme.org)
                .await
                .unwrap()
                .into_iter()
                .filter(|k| k.name == name)
                .count()
        }
    };

    // The server creates the key and answers; the answer is lost; the connection breaks.
    proxy.set(Mode::LoseAnswers);
    let create = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .api_keys()
                .create(acme.org, NewApiKey::new("lost answer", Role::Viewer))
                .await
        }
    });
    eventually("the answer is lost", Duration::from_secs(10), || async {
        (proxy.answers_lost() == 1).then_some(())
    })
    .await;
    // Were the SDK to repeat the write now, it would go through.
    proxy.set(Mode::Forward);
    proxy.cut();
    let err = create.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Transport { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(named("lost answer").await, 1, "created exactly once");

    // The same loss on a read: repeated, and the caller gets the answer.
    proxy.set(Mode::LoseAnswers);
    let list = tokio::spawn({
        let client = client.clone();
        async move { client.api_keys().list(acme.org).await }
    });
    eventually("the answer is lost", Duration::from_secs(10), || async {
        (proxy.answers_lost() == 2).then_some(())
    })
    .await;
    proxy.set(Mode::Forward);
    proxy.cut();
    let keys = list.await.unwrap().expect("the read was repeated");
    assert_eq!(keys.len(), 2);
}

#[tokio::test]
async fn the_sdk_registers_a_database_schedules_it_and_runs_lists_and_cancels_its_jobs() {
    use coffer_sdk::{
        AgentId, DatabaseFields, DestinationId, Engine, JobKind, JobQuery, JobState, JobTrigger,
        MissedRuns, Retention, ScheduleFields,
    };

    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent: AgentId = crate::scheduling::enrolled_agent(&app, &acme)
        .await
        .parse()
        .unwrap();
    let client = owner(&app, &acme).await;
    let org = acme.org;

    // Databases.
    let fields = DatabaseFields {
        name: "orders".into(),
        engine: Engine::Postgresql,
        host: "db1.internal.example".into(),
        port: None,
        database: "orders".into(),
        user: "backup".into(),
        password_vault_ref: format!("vault:coffer/{org}/{}", CredentialId::new()),
        agent_id: agent,
    };
    let registered = client.databases().register(org, &fields).await.unwrap();
    assert_eq!(
        (registered.port, registered.version, registered.agent_id),
        (5432, 1, agent),
        "no port means the engine's default"
    );
    let mut new_fields = registered.fields();
    new_fields.name = "orders-primary".into();
    new_fields.port = Some(6432);
    let database = client
        .databases()
        .change(org, registered.database_id, &new_fields)
        .await
        .unwrap();
    assert_eq!(
        (database.name.as_str(), database.port, database.version),
        ("orders-primary", 6432, 2)
    );
    assert_eq!(database.created_at, registered.created_at);
    assert_eq!(
        client
            .databases()
            .get(org, database.database_id)
            .await
            .unwrap(),
        database
    );
    assert_eq!(
        client.databases().list(org).await.unwrap(),
        vec![database.clone()]
    );
    let err = client
        .databases()
        .register(
            org,
            &DatabaseFields {
                name: "other".into(),
                host: "https://db2.example".into(),
                ..fields.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("host"), "{err}");

    // Schedules, to a local destination; the cron fires once a year, and no agent polls, so
    // nothing runs by itself.
    let destination: DestinationId = app.local_destination(&acme).await.0.parse().unwrap();
    let nightly = ScheduleFields::new("yearly", database.database_id, destination, "30 2 1 1 *")
        .timezone("Europe/Berlin")
        .jitter(Duration::from_secs(90))
        .missed_runs(MissedRuns::Skip)
        .retention(Retention {
            keep_last: 3,
            daily: 7,
            ..Retention::default()
        })
        .max_attempts(2);
    let schedules = client.schedules();
    let created = schedules.create(org, &nightly).await.unwrap();
    assert_eq!(created.fields, nightly);
    assert_eq!((created.paused, created.version), (false, 1));
    let next = created.next_due_at.unwrap();
    assert!(next > chrono::Utc::now(), "{next}");
    assert!(created.next_fire_at.unwrap() >= next);
    assert_eq!(created.last_due_at, None);
    let id = created.schedule_id;

    let changed = schedules
        .change(
            org,
            id,
            &created.fields.clone().missed_runs(MissedRuns::RunOnce),
        )
        .await
        .unwrap();
    assert_eq!(
        (changed.fields.missed_runs, changed.version),
        (MissedRuns::RunOnce, 2)
    );
    let paused = schedules.pause(org, id).await.unwrap();
    assert!(paused.paused);
    assert_eq!((paused.next_due_at, paused.next_fire_at), (None, None));
    let resumed = schedules.resume(org, id).await.unwrap();
    assert!(!resumed.paused);
    assert!(resumed.next_due_at.is_some());
    assert_eq!(schedules.get(org, id).await.unwrap(), resumed);
    assert_eq!(schedules.list(org).await.unwrap(), vec![resumed.clone()]);

    for (bad, field) in [
        (nightly.clone().timezone("Mars/Base"), "timezone"),
        (
            ScheduleFields {
                cron: "61 * * * *".into(),
                ..nightly.clone()
            },
            "cron",
        ),
        (nightly.clone().max_attempts(11), "max_attempts"),
    ] {
        let err = schedules.create(org, &bad).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("invalid argument: {field} ")),
            "{err}"
        );
    }
    assert_eq!(schedules.list(org).await.unwrap().len(), 1, "nothing saved");

    // Jobs: run now, list (a page at a time), get, cancel.
    let jobs = client.jobs();
    let job = jobs.run_now(org, id).await.unwrap();
    assert_eq!(
        (job.kind, job.trigger, job.state, job.schedule_id),
        (
            JobKind::Backup,
            JobTrigger::Manual,
            JobState::Pending,
            Some(id)
        )
    );
    assert_eq!(
        (job.database_id, job.destination_id, job.agent_id),
        (database.database_id, destination, agent)
    );
    assert_eq!((job.attempt, job.max_attempts), (1, 2));
    assert_eq!((job.artifact.as_ref(), job.finished_at), (None, None));
    assert_eq!(jobs.get(org, job.job_id).await.unwrap(), job);
    let second = jobs.run_now(org, id).await.unwrap();
    let third = jobs.run_now(org, id).await.unwrap();
    // A restore needs a succeeded backup, which needs an agent over mTLS and so a TLS server
    // (`cli::the_cli_follows_a_backup_an_agent_runs_to_success_and_restores_it`); here the
    // refusals show the call.
    let err = jobs.restore(org, second.job_id, None).await.unwrap_err();
    assert_eq!(
        err,
        Error::FailedPrecondition {
            message: "backup_job_id must name a succeeded backup job".into()
        }
    );
    let err = jobs
        .restore(org, coffer_sdk::JobId::new(), Some(database.database_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    let page = jobs
        .list(org, &JobQuery::new().schedule(id).page_size(2))
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        [third.job_id, second.job_id],
        "newest first"
    );
    let token = page.next_page_token.expect("a second page");
    let rest = jobs
        .list(
            org,
            &JobQuery::new().schedule(id).page_size(2).page_token(token),
        )
        .await
        .unwrap();
    assert_eq!(rest.items, vec![job.clone()]);
    assert_eq!(rest.next_page_token, None);
    let all = jobs
        .list_all(org, JobQuery::new().state(JobState::Pending).page_size(1))
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let other_schedule = jobs
        .list(
            org,
            &JobQuery::new().schedule(coffer_sdk::ScheduleId::new()),
        )
        .await
        .unwrap();
    assert!(other_schedule.items.is_empty());

    let cancelled = jobs.cancel(org, job.job_id, "not needed").await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.reason.as_deref(), Some("not needed"));
    assert!(cancelled.finished_at.is_some());
    assert_eq!(
        jobs.get(org, job.job_id).await.unwrap().state,
        JobState::Cancelled
    );
    let err = jobs.cancel(org, job.job_id, "").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    let listed = jobs
        .list(org, &JobQuery::new().state(JobState::Cancelled))
        .await
        .unwrap();
    assert_eq!(listed.items, vec![cancelled]);
    let err = jobs.get(org, coffer_sdk::JobId::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    // Another org sees none of it, whichever org it names (P5).
    let other = owner(&app, &app.new_org("Other").await).await;
    for err in [
        other.schedules().get(org, id).await.unwrap_err(),
        other.schedules().get(other.org(), id).await.unwrap_err(),
        other
            .jobs()
            .get(other.org(), second.job_id)
            .await
            .unwrap_err(),
        other
            .jobs()
            .cancel(other.org(), second.job_id, "")
            .await
            .unwrap_err(),
        other
            .databases()
            .get(other.org(), database.database_id)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    }
    assert!(
        other
            .jobs()
            .list(other.org(), &JobQuery::new())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        jobs.get(org, second.job_id).await.unwrap().state,
        JobState::Pending
    );

    // Deleting the schedule keeps its jobs; removing the database frees it.
    schedules.delete(org, id, "replaced").await.unwrap();
    let err = schedules.get(org, id).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert!(schedules.list(org).await.unwrap().is_empty());
    assert_eq!(
        jobs.list_all(org, JobQuery::new().schedule(id))
            .await
            .unwrap()
            .len(),
        3
    );
    client
        .databases()
        .remove(org, database.database_id, "decommissioned")
        .await
        .unwrap();
    assert!(client.databases().list(org).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_sdk_registers_probes_changes_lists_and_removes_destinations() {
    use coffer_sdk::{DestinationFields, DestinationKind};

    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let client = owner(&app, &acme).await;
    let destinations = client.destinations();
    let org = acme.org;

    // A local directory under the deployment's local root.
    let dir = app.local_root().join(coffer_testkit::unique("nas-"));
    std::fs::create_dir(&dir).unwrap();
    let path = dir.to_string_lossy().into_owned();
    let nas_fields = DestinationFields {
        name: "nas".into(),
        kind: DestinationKind::Local { path: path.clone() },
    };
    let nas = destinations.register(org, &nas_fields).await.unwrap();
    assert_eq!((nas.org_id, nas.version), (org, 1));
    assert_eq!(nas.fields, nas_fields);
    assert_eq!(nas.created_at, nas.updated_at);
    assert_eq!(
        destinations.get(org, nas.destination_id).await.unwrap(),
        nas
    );
    assert_eq!(
        destinations.probe(org, nas.destination_id).await.unwrap(),
        nas,
        "a passing probe answers with the destination, unchanged"
    );

    // An S3 bucket in the stack's moto; the server normalises the prefix and endpoint.
    let bucket = crate::destinations::create_bucket().await;
    let key = crate::destinations::storage_key(&app, &acme).await;
    let s3 = |prefix: &str| DestinationFields {
        name: "offsite".into(),
        kind: DestinationKind::S3 {
            endpoint: coffer_testkit::kms_endpoint(),
            region: "us-east-1".into(),
            bucket: bucket.clone(),
            prefix: prefix.into(),
            path_style: true,
            access_key_vault_ref: key.clone(),
        },
    };
    let offsite = destinations.register(org, &s3("acme")).await.unwrap();
    let DestinationKind::S3 {
        endpoint, prefix, ..
    } = &offsite.fields.kind
    else {
        panic!("{offsite:?}")
    };
    assert_eq!(prefix, "acme/", "a trailing / is added");
    assert_eq!(endpoint, &format!("{}/", coffer_testkit::kms_endpoint()));
    assert_eq!(
        destinations.list(org).await.unwrap(),
        vec![nas.clone(), offsite.clone()],
        "by name"
    );

    // A change replaces every field, after a probe: start from the current ones.
    let mut fields = offsite.fields.clone();
    if let DestinationKind::S3 { prefix, .. } = &mut fields.kind {
        *prefix = "acme/v2/".into();
    }
    let changed = destinations
        .change(org, offsite.destination_id, &fields)
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
    assert_eq!(changed.created_at, offsite.created_at);
    assert_eq!(changed.fields, fields);
    let mut renamed = nas.fields.clone();
    renamed.name = "nas-primary".into();
    let nas = destinations
        .change(org, nas.destination_id, &renamed)
        .await
        .unwrap();
    assert_eq!((nas.fields.name.as_str(), nas.version), ("nas-primary", 2));

    // Refusals: by field, and a probe that fails saves nothing.
    let err = destinations
        .register(
            org,
            &DestinationFields {
                name: "outside".into(),
                kind: DestinationKind::Local {
                    path: "/etc".into(),
                },
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(
        err.to_string().starts_with(
            "invalid argument: path must lie under one of the deployment's local roots"
        ),
        "{err}"
    );
    let mut metadata = s3("");
    if let DestinationKind::S3 { endpoint, .. } = &mut metadata.kind {
        *endpoint = "http://169.254.169.254".into();
    }
    metadata.name = "metadata".into();
    let err = destinations.register(org, &metadata).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message }
            if message.starts_with("endpoint 169.254.169.254 is a metadata address")),
        "{err}"
    );
    let absent = app.local_root().join(coffer_testkit::unique("absent-"));
    let err = destinations
        .change(
            org,
            nas.destination_id,
            &DestinationFields {
                name: "nas-primary".into(),
                kind: DestinationKind::Local {
                    path: absent.to_string_lossy().into_owned(),
                },
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(
        err.to_string()
            .starts_with("failed precondition: probe failed at list: "),
        "{err}"
    );
    assert_eq!(
        destinations.get(org, nas.destination_id).await.unwrap(),
        nas,
        "a failed change leaves it as it was"
    );
    // A saved destination whose directory went away fails its next probe and stays saved.
    std::fs::remove_dir_all(&dir).unwrap();
    let err = destinations
        .probe(org, nas.destination_id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition { message }
            if message.starts_with("probe failed at list: ")),
        "{err}"
    );
    assert_eq!(destinations.list(org).await.unwrap().len(), 2);

    // Another org sees none of it (P5).
    let other = owner(&app, &app.new_org("Other").await).await;
    for err in [
        other
            .destinations()
            .get(org, nas.destination_id)
            .await
            .unwrap_err(),
        other
            .destinations()
            .get(other.org(), nas.destination_id)
            .await
            .unwrap_err(),
        other
            .destinations()
            .probe(other.org(), offsite.destination_id)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    }
    assert!(
        other
            .destinations()
            .list(other.org())
            .await
            .unwrap()
            .is_empty()
    );

    // Removed: gone, and its name is free again.
    destinations
        .remove(org, nas.destination_id, "decommissioned")
        .await
        .unwrap();
    let err = destinations.get(org, nas.destination_id).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert_eq!(destinations.list(org).await.unwrap(), vec![changed.clone()]);
    let err = destinations
        .remove(org, nas.destination_id, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    let again = app.local_root().join(coffer_testkit::unique("nas-"));
    std::fs::create_dir(&again).unwrap();
    let reused = destinations
        .register(
            org,
            &DestinationFields {
                name: "nas-primary".into(),
                kind: DestinationKind::Local {
                    path: again.to_string_lossy().into_owned(),
                },
            },
        )
        .await
        .unwrap();
    assert_ne!(reused.destination_id, nas.destination_id);
}
