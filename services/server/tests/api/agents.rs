//! Agent enrollment: enrollment tokens, CSRs, certificates from the org's intermediate,
//! revocation and the CRL, checked with stock `openssl`.

use std::path::Path;
use std::process::Command;

use coffer_proto::enrollment::v1::{
    CreateEnrollmentTokenRequest, EnrollRequest, EnrollResponse, GetAgentRequest, GetCrlRequest,
    ListAgentsRequest, ListEnrollmentTokensRequest, RevokeAgentRequest,
    RevokeEnrollmentTokenRequest, agent_service_client::AgentServiceClient,
    enrollment_token_service_client::EnrollmentTokenServiceClient,
};
use tonic::Code;

use crate::helpers::{Authed, TestApp, TestOrg, spawn_app, spawn_tls_app};

pub(crate) fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl")
}

/// A CSR made by stock openssl for a fresh key of `algorithm` (`ed25519`, `EC`, `RSA`).
pub(crate) fn csr(dir: &Path, algorithm: &str, extra: &[&str]) -> Vec<u8> {
    let key = dir.join(format!("{algorithm}.key"));
    let mut genpkey = vec![
        "genpkey",
        "-algorithm",
        algorithm,
        "-out",
        key.to_str().unwrap(),
    ];
    if algorithm == "EC" {
        genpkey.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    assert!(openssl(dir, &genpkey).status.success());
    let mut req = vec![
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=agent.example/O=Whatever the agent asks for",
        "-outform",
        "DER",
    ];
    req.extend(extra);
    let out = openssl(dir, &req);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn tokens(app: &TestApp, org: &TestOrg) -> EnrollmentTokenServiceClient<Authed> {
    EnrollmentTokenServiceClient::new(app.authed(&org.owner_key).await)
}

async fn agents(app: &TestApp, org: &TestOrg) -> AgentServiceClient<Authed> {
    AgentServiceClient::new(app.authed(&org.owner_key).await)
}

pub(crate) async fn new_token(app: &TestApp, org: &TestOrg) -> String {
    tokens(app, org)
        .await
        .create_enrollment_token(CreateEnrollmentTokenRequest {
            org_id: org.org.to_string(),
            name: "db-host-1".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

pub(crate) async fn enroll(
    app: &TestApp,
    token: &str,
    csr: &[u8],
) -> Result<EnrollResponse, tonic::Status> {
    AgentServiceClient::new(app.channel().await)
        .enroll(EnrollRequest {
            enrollment_token: token.to_owned(),
            csr: csr.to_vec(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn event_count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM coffer_enrollment.events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db.superuser().await)
        .await
        .unwrap()
}

pub(crate) fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `openssl verify` of `leaf` against the enrollment's root and intermediate (and `crl`).
fn openssl_verify(dir: &Path, e: &EnrollResponse, leaf: &str, crl: Option<&str>) -> (bool, String) {
    let root = write(dir, "root.pem", &e.root_pem);
    let intermediate = write(dir, "intermediate.pem", &e.intermediate_pem);
    let leaf = write(dir, "leaf.pem", leaf);
    let mut args = vec![
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        &root,
        "-untrusted",
        &intermediate,
    ];
    let crl_path;
    if let Some(crl) = crl {
        crl_path = write(dir, "crl.pem", crl);
        args.extend(["-CRLfile", &crl_path, "-crl_check"]);
    }
    args.push(&leaf);
    let out = openssl(dir, &args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn an_agent_enrolls_with_a_token_and_a_csr_and_gets_a_spiffe_certificate_from_its_org_ca() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let token = new_token(&app, &acme).await;
    assert!(token.starts_with("coffer_enroll_"));

    // The CSR asks for a subject; only its key is used.
    let e = enroll(&app, &token, &csr(dir.path(), "ED25519", &[]))
        .await
        .unwrap();
    assert_eq!(e.org_id, acme.org.to_string());
    assert_eq!(
        e.spiffe_id,
        format!(
            "spiffe://coffer.local/org/{}/agent/{}",
            acme.org, e.agent_id
        )
    );
    assert_eq!(e.serial.len(), 32, "a 128-bit serial in hex: {}", e.serial);
    let ttl = e.not_after.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!(
        (86_300..=86_400).contains(&ttl),
        "24 h by default, got {ttl}s"
    );

    let (ok, output) = openssl_verify(dir.path(), &e, &e.certificate_pem, None);
    assert!(ok, "stock openssl accepts the chain: {output}");
    let leaf = write(dir.path(), "leaf.pem", &e.certificate_pem);
    let text = openssl(dir.path(), &["x509", "-in", &leaf, "-noout", "-text"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("URI:{}", e.spiffe_id)), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        !text.contains("Whatever the agent asks for"),
        "CSR subject ignored: {text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    let intermediate = write(dir.path(), "int.pem", &e.intermediate_pem);
    let text = openssl(
        dir.path(),
        &["x509", "-in", &intermediate, "-noout", "-text"],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Permitted:"), "{text}");
    assert!(
        text.contains(&format!("spiffe://coffer.local/org/{}", acme.org)),
        "{text}"
    );

    // The agent is listed; the token shows who used it.
    let listed = agents(&app, &acme)
        .await
        .list_agents(ListAgentsRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].agent_id.as_str(), listed[0].serial.as_str()),
        (e.agent_id.as_str(), e.serial.as_str())
    );
    let listed = tokens(&app, &acme)
        .await
        .list_enrollment_tokens(ListEnrollmentTokensRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(listed[0].used_by_agent_id, e.agent_id);
    assert_eq!(listed[0].display_prefix, &token[..20]);

    // ECDSA P-256 keys work too.
    let token = new_token(&app, &acme).await;
    enroll(&app, &token, &csr(dir.path(), "EC", &[]))
        .await
        .unwrap();
}

#[tokio::test]
async fn p6_an_enrollment_token_has_exactly_one_winner_among_50_concurrent_enrolls_in_200_trials() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let csr = csr(dir.path(), "ED25519", &[]);
    let channel = app.channel().await;
    let mut token_client = tokens(&app, &acme).await;
    for trial in 0..200 {
        let token = token_client
            .create_enrollment_token(CreateEnrollmentTokenRequest {
                org_id: acme.org.to_string(),
                name: format!("trial {trial}"),
                ttl_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .secret;
        let calls = (0..50).map(|_| {
            let mut client = AgentServiceClient::new(channel.clone());
            let request = EnrollRequest {
                enrollment_token: token.clone(),
                csr: csr.clone(),
            };
            async move { client.enroll(request).await }
        });
        let results = futures::future::join_all(calls).await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "trial {trial}: {winners} winners");
        for lost in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(
                (lost.code(), lost.message()),
                (
                    Code::Unauthenticated,
                    "enrollment token has already been used"
                ),
                "trial {trial}"
            );
        }
    }
    assert_eq!(event_count(&app, "AgentEnrolled").await, 200);
    assert_eq!(event_count(&app, "EnrollmentTokenConsumed").await, 200);
}

#[tokio::test]
async fn bad_csrs_and_spent_tokens_are_refused_and_nothing_is_issued() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let token = new_token(&app, &acme).await;
    let good = csr(dir.path(), "ED25519", &[]);
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage".to_vec(), "csr"),
        (good[..good.len() / 2].to_vec(), "csr"),
        (tampered, "csr signature does not verify"),
        (
            csr(dir.path(), "RSA", &[]),
            "csr key type RSA is not supported",
        ),
        (
            csr(
                dir.path(),
                "ED25519",
                &["-addext", "basicConstraints=critical,CA:TRUE"],
            ),
            "csr",
        ),
        (
            csr(
                dir.path(),
                "ED25519",
                &[
                    "-addext",
                    "subjectAltName=URI:spiffe://coffer.local/org/x/agent/y,DNS:evil.example",
                ],
            ),
            "csr",
        ),
        (vec![0x30; 17 * 1024], "csr must be at most 16384 bytes"),
    ];
    for (csr, message) in cases {
        let status = enroll(&app, &token, &csr).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(message),
            "{message}: {status:?}"
        );
    }
    assert_eq!(
        event_count(&app, "AgentEnrolled").await,
        0,
        "nothing issued"
    );
    // The token was not spent by the refusals.
    enroll(&app, &token, &good).await.unwrap();
    // Spent, unknown, malformed and revoked tokens.
    let revoked = new_token(&app, &acme).await;
    let mut t = tokens(&app, &acme).await;
    let listed = t
        .list_enrollment_tokens(ListEnrollmentTokensRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let revoked_id = listed
        .iter()
        .find(|x| revoked.starts_with(&x.display_prefix) && x.used_by_agent_id.is_empty())
        .unwrap()
        .token_id
        .clone();
    t.revoke_enrollment_token(RevokeEnrollmentTokenRequest {
        org_id: acme.org.to_string(),
        token_id: revoked_id,
        reason: "host rebuilt".into(),
    })
    .await
    .unwrap();
    for (token, message) in [
        (token.as_str(), "enrollment token has already been used"),
        (
            "coffer_enroll_0123456789abcdefghijklmnopqrstuvwxyzAB",
            "invalid enrollment token",
        ),
        ("nope", "invalid enrollment token"),
        (revoked.as_str(), "enrollment token has been revoked"),
    ] {
        let status = enroll(&app, token, &good).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unauthenticated, message)
        );
    }
    assert_eq!(event_count(&app, "AgentEnrolled").await, 1);

    // A token's lifetime is capped at a day.
    let status = t
        .create_enrollment_token(CreateEnrollmentTokenRequest {
            org_id: acme.org.to_string(),
            name: "too long".into(),
            ttl_seconds: 86_401,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::InvalidArgument,
            "ttl_seconds must be between 1 and 86400 (24 hours)"
        )
    );
}

#[tokio::test]
async fn a_revoked_agent_is_on_its_orgs_crl_and_stock_openssl_agrees() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let kept = enroll(
        &app,
        &new_token(&app, &acme).await,
        &csr(dir.path(), "ED25519", &[]),
    )
    .await
    .unwrap();
    let gone = enroll(
        &app,
        &new_token(&app, &acme).await,
        &csr(dir.path(), "EC", &[]),
    )
    .await
    .unwrap();
    let mut a = agents(&app, &acme).await;
    let revoked = a
        .revoke_agent(RevokeAgentRequest {
            org_id: acme.org.to_string(),
            agent_id: gone.agent_id.clone(),
            reason: "host decommissioned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    let crl = a
        .get_crl(GetCrlRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(crl.next_update.unwrap().seconds > crl.this_update.unwrap().seconds);

    // Signed by the org intermediate.
    let text = crl_text(dir.path(), &crl.pem, &kept.intermediate_pem);
    assert!(text.to_lowercase().contains(&gone.serial), "{text}");
    assert!(!text.to_lowercase().contains(&kept.serial), "{text}");

    let (ok, output) = openssl_verify(dir.path(), &kept, &kept.certificate_pem, Some(&crl.pem));
    assert!(ok, "the kept agent verifies with the CRL: {output}");
    let (ok, output) = openssl_verify(dir.path(), &gone, &gone.certificate_pem, Some(&crl.pem));
    assert!(!ok && output.contains("certificate revoked"), "{output}");

    // A second revoke records nothing more.
    a.revoke_agent(RevokeAgentRequest {
        org_id: acme.org.to_string(),
        agent_id: gone.agent_id.clone(),
        reason: "again".into(),
    })
    .await
    .unwrap();
    assert_eq!(event_count(&app, "AgentRevoked").await, 1);
}

#[tokio::test]
async fn p5_another_orgs_agents_tokens_and_crl_are_not_found() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let dir = tempfile::tempdir().unwrap();
    let e = enroll(
        &app,
        &new_token(&app, &acme).await,
        &csr(dir.path(), "ED25519", &[]),
    )
    .await
    .unwrap();
    let mut theirs = agents(&app, &other).await;
    for org in [acme.org.to_string(), other.org.to_string()] {
        let status = theirs
            .get_agent(GetAgentRequest {
                org_id: org.clone(),
                agent_id: e.agent_id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{org}");
        let status = theirs
            .revoke_agent(RevokeAgentRequest {
                org_id: org,
                agent_id: e.agent_id.clone(),
                reason: "hostile".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    let status = theirs
        .get_crl(GetCrlRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(event_count(&app, "AgentRevoked").await, 0);
}

/// A CSR and the PEM private key it was made with.
pub(crate) fn csr_and_key(dir: &Path, algorithm: &str) -> (Vec<u8>, String) {
    let csr = csr(dir, algorithm, &[]);
    let key = std::fs::read_to_string(dir.join(format!("{algorithm}.key"))).unwrap();
    (csr, key)
}

#[tokio::test]
async fn p6_an_agent_calls_over_mtls_and_its_revoked_certificate_is_refused_within_a_second() {
    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let dir = tempfile::tempdir().unwrap();
    let (csr, key) = csr_and_key(dir.path(), "EC");
    let e = enroll(&app, &new_token(&app, &acme).await, &csr)
        .await
        .unwrap();
    let chain = format!("{}{}", e.certificate_pem, e.intermediate_pem);
    let mut agent = AgentServiceClient::new(app.agent_channel(&chain, &key).await);
    let crl = |org: &TestOrg| GetCrlRequest {
        org_id: org.org.to_string(),
    };

    // The agent reads its own org's CRL, nothing of another org, and no user RPC.
    agent.get_crl(crl(&acme)).await.unwrap();
    let status = agent.get_crl(crl(&other)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = agent
        .list_agents(ListAgentsRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Renewal opens at half the lifetime; a fresh certificate is refused and nothing changes.
    let status = agent
        .renew(coffer_proto::enrollment::v1::RenewRequest { csr: csr.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with("renewal opens at half"),
        "{status:?}"
    );
    assert_eq!(event_count(&app, "CertificateRenewed").await, 0);

    // Without a client certificate or token, agent RPCs are refused.
    let status = AgentServiceClient::new(app.channel().await)
        .get_crl(crl(&acme))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let started = std::time::Instant::now();
    agents(&app, &acme)
        .await
        .revoke_agent(RevokeAgentRequest {
            org_id: acme.org.to_string(),
            agent_id: e.agent_id.clone(),
            reason: "host compromised".into(),
        })
        .await
        .unwrap();
    let renew = coffer_proto::enrollment::v1::RenewRequest { csr: csr.clone() };
    let status = coffer_testkit::eventually(
        "the revoked certificate refused on the open connection",
        std::time::Duration::from_secs(1),
        || {
            let mut agent = agent.clone();
            let request = renew.clone();
            async move {
                let status = agent.renew(request).await.unwrap_err();
                (status.code() == Code::Unauthenticated).then_some(status)
            }
        },
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(
        status.message(),
        format!(
            "client certificate refused: agent certificate {} has been revoked",
            e.serial
        )
    );

    // Its org's CRL stays readable to it, so it learns from the signed list that it is revoked
    // (and halts); another org's stays hidden.
    let list = agent.get_crl(crl(&acme)).await.unwrap().into_inner();
    let text = crl_text(dir.path(), &list.pem, &e.intermediate_pem);
    assert!(
        text.to_ascii_uppercase()
            .contains(&e.serial.to_ascii_uppercase()),
        "{text}"
    );
    let status = agent.get_crl(crl(&other)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// `openssl crl -text` of `crl_pem`, its signature checked against `intermediate_pem`.
fn crl_text(dir: &Path, crl_pem: &str, intermediate_pem: &str) -> String {
    let intermediate = write(dir, "crl-issuer.pem", intermediate_pem);
    let crl_file = write(dir, "crl-check.pem", crl_pem);
    let out = openssl(
        dir,
        &[
            "crl",
            "-in",
            &crl_file,
            "-CAfile",
            &intermediate,
            "-noout",
            "-text",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("verify OK"), "{text}");
    text
}

#[tokio::test]
async fn p6_an_agent_renews_from_half_its_lifetime_with_a_new_key() {
    use coffer_pki::{AgentCsr, CaRole, CertificateAuthority, SpiffeId, TrustDomain};

    let app = spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let (csr, key) = csr_and_key(dir.path(), "ED25519");
    let e = enroll(&app, &new_token(&app, &acme).await, &csr)
        .await
        .unwrap();

    // A certificate 13 hours into its 24: mint it with the org CA, as if time had passed.
    let (der, wrapped, kms_key_id): (Vec<u8>, Vec<u8>, String) = sqlx::query_as(
        "SELECT certificate_der, wrapped_private_key, kms_key_id
         FROM coffer_enrollment.certificate_authorities WHERE org_id = $1",
    )
    .bind(acme.org.as_uuid())
    .fetch_one(&app.db.superuser().await)
    .await
    .unwrap();
    let td = TrustDomain::new("coffer.local").unwrap();
    let ca = CertificateAuthority::from_wrapped_key(
        app.kms().as_ref(),
        CaRole::Org(acme.org),
        &td,
        &der,
        &coffer_kms::WrappedKey {
            key_id: coffer_kms::KeyId::new(kms_key_id),
            ciphertext: wrapped,
        },
    )
    .await
    .unwrap();
    let spiffe = SpiffeId::new(td, acme.org, e.agent_id.parse().unwrap());
    let aged = ca
        .issue_agent_certificate(
            &AgentCsr::parse(&csr, &spiffe).unwrap(),
            chrono::Utc::now() - chrono::Duration::hours(13),
            std::time::Duration::from_secs(24 * 3600),
        )
        .unwrap();
    let chain = format!("{}{}", aged.pem(), e.intermediate_pem);
    let mut agent = AgentServiceClient::new(app.agent_channel(&chain, &key).await);

    // Renew with a new key (rotation).
    let (new_csr, new_key) = csr_and_key(dir.path(), "EC");
    let renewed = agent
        .renew(coffer_proto::enrollment::v1::RenewRequest { csr: new_csr })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (renewed.agent_id.as_str(), renewed.spiffe_id.as_str()),
        (e.agent_id.as_str(), e.spiffe_id.as_str())
    );
    assert_ne!(renewed.serial, e.serial);
    let ttl = renewed.not_after.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((86_300..=86_400).contains(&ttl), "{ttl}");
    let chain = format!("{}{}", renewed.certificate_pem, renewed.intermediate_pem);
    let mut renewed_agent = AgentServiceClient::new(app.agent_channel(&chain, &new_key).await);
    renewed_agent
        .get_crl(GetCrlRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap();
    let listed = agents(&app, &acme)
        .await
        .get_agent(GetAgentRequest {
            org_id: acme.org.to_string(),
            agent_id: e.agent_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.serial, renewed.serial);
    assert_eq!(event_count(&app, "CertificateRenewed").await, 1);
    // A bad CSR is refused naming it.
    let status = agent
        .renew(coffer_proto::enrollment::v1::RenewRequest {
            csr: b"nope".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn rebuilding_the_enrollment_projections_yields_identical_tables() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let e = enroll(
        &app,
        &new_token(&app, &acme).await,
        &csr(dir.path(), "EC", &[]),
    )
    .await
    .unwrap();
    new_token(&app, &acme).await;
    agents(&app, &acme)
        .await
        .revoke_agent(RevokeAgentRequest {
            org_id: acme.org.to_string(),
            agent_id: e.agent_id,
            reason: "rebuild me".into(),
        })
        .await
        .unwrap();
    let tables: Vec<&str> = coffer_enrollment::app::projections()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    assert!(tables.len() >= 8, "{tables:?}");
    let su = app.db.superuser().await;
    let dump = || async {
        let mut all = Vec::new();
        for table in &tables {
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT to_jsonb(t)::text FROM coffer_enrollment.{table} t ORDER BY 1"
            ))
            .fetch_all(&su)
            .await
            .unwrap();
            all.push((table.to_string(), rows));
        }
        all
    };
    let before = dump().await;
    let mut owner = app.db.owner().await;
    let replayed = coffer_eventstore::rebuild(
        &mut owner,
        coffer_enrollment::SERVICE,
        &coffer_enrollment::app::projections(),
    )
    .await
    .unwrap();
    assert!(replayed > 10, "{replayed} events");
    assert_eq!(dump().await, before, "rebuilt tables are identical");
}
