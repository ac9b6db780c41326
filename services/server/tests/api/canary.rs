//! P8: secrets never reach logs, spans or error strings. Credentials are seeded with unique
//! canary values; every flow of the credentials service runs, the happy paths and the refusals,
//! under a subscriber that records every log line (at `trace`, every crate) and every field of
//! every span; then the record, and every error string a client received, is searched for each
//! canary, raw and in the encodings a careless log line would use.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use coffer_auth::ticket::JobTicket;
use coffer_auth::token::Signer;
use coffer_credentials::Credentials;
use coffer_credentials::rotation::RotationSettings;
use coffer_proto::credentials::v1 as pb;
use coffer_telemetry::{LogCapture, LogFormat, TelemetryConfig};
use secrecy::ExposeSecret;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Id, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};

use crate::helpers::Provider;

/// Records every field of every span, as created and as later recorded.
#[derive(Clone, Default)]
pub(crate) struct SpanFields(pub(crate) Arc<Mutex<String>>);

struct Writer<'a>(&'a mut String);

impl Visit for Writer<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = writeln!(self.0, "{}={value:?}", field.name());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = writeln!(self.0, "{}={value}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for SpanFields {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut out = self.0.lock().unwrap();
        let _ = writeln!(out, "span {}", attrs.metadata().name());
        attrs.record(&mut Writer(&mut out));
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        values.record(&mut Writer(&mut self.0.lock().unwrap()));
    }
}

/// The forms a secret would take in a log line, a span field or an error string.
pub(crate) fn forms(secret: &[u8]) -> Vec<String> {
    let mut forms = vec![
        hex::encode(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        format!("{secret:?}"),
        format!("{:?}", secret.to_vec()),
    ];
    if let Ok(text) = std::str::from_utf8(secret) {
        forms.push(text.to_owned());
        forms.push(format!("{text:?}"));
    }
    forms
}

fn canary(name: &str) -> Vec<u8> {
    format!("canary-{name}-{}", uuid::Uuid::new_v4().simple()).into_bytes()
}

async fn p8_no_secret_reaches_logs_spans_or_error_strings(provider: Provider) {
    let logs = LogCapture::new();
    let spans = SpanFields::default();
    let telemetry = TelemetryConfig {
        format: LogFormat::Json,
        filter: "trace".into(),
        service_name: "coffer-canary".into(),
    };
    let tracer = coffer_telemetry::tracer_provider("coffer-canary", None).unwrap();
    let subscriber = coffer_telemetry::subscriber(&telemetry, logs.clone(), &tracer)
        .unwrap()
        .with(spans.clone());
    // This test's runtime is single-threaded, so every task of the server it starts logs
    // through this subscriber.
    let _recording = tracing::subscriber::set_default(subscriber);

    let app = crate::helpers::spawn_tls_app_on(provider).await;
    let acme = app.new_org("Acme").await;
    let recipient = crate::credentials::recipient(&app, &acme).await.recipient;
    let mut vault = crate::credentials::vault(&app, &acme).await;
    let org = acme.org.to_string();
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    let errors = std::cell::RefCell::new(Vec::<String>::new());
    let refused = |status: tonic::Status| errors.borrow_mut().push(format!("{status:?}"));

    // The vault: create, replace, read, and delete.
    let (db_value, bucket_value, replaced, deleted) = (
        canary("db"),
        canary("bucket"),
        canary("replaced"),
        canary("deleted"),
    );
    secrets.extend([
        db_value.clone(),
        bucket_value.clone(),
        replaced.clone(),
        deleted.clone(),
    ]);
    let db = crate::credentials::create(&mut vault, acme.org, "prod/db", &db_value).await;
    let bucket =
        crate::credentials::create(&mut vault, acme.org, "prod/bucket", &bucket_value).await;
    vault
        .replace_credential_value(pb::ReplaceCredentialValueRequest {
            org_id: org.clone(),
            credential_id: db.credential_id.clone(),
            value: replaced.clone(),
        })
        .await
        .unwrap();
    let gone = crate::credentials::create(&mut vault, acme.org, "old", &deleted).await;
    vault
        .delete_credential(pb::DeleteCredentialRequest {
            org_id: org.clone(),
            credential_id: gone.credential_id.clone(),
            reason: "retired".into(),
        })
        .await
        .unwrap();
    vault
        .list_credentials(pb::ListCredentialsRequest {
            org_id: org.clone(),
        })
        .await
        .unwrap();

    // Refusals that carry a canary value: too large, wrong purpose, unknown org, unknown
    // credential, a name already taken.
    let big = canary("oversized").repeat(3000);
    secrets.push(canary("oversized"));
    let wrong_purpose = canary("purpose");
    secrets.push(wrong_purpose.clone());
    for request in [
        pb::CreateCredentialRequest {
            org_id: org.clone(),
            name: "big".into(),
            purpose: "database".into(),
            value: big.clone(),
        },
        pb::CreateCredentialRequest {
            org_id: org.clone(),
            name: "x".into(),
            purpose: "kms".into(),
            value: wrong_purpose.clone(),
        },
        pb::CreateCredentialRequest {
            org_id: coffer_types::OrgId::new().to_string(),
            name: "x".into(),
            purpose: "database".into(),
            value: wrong_purpose.clone(),
        },
        pb::CreateCredentialRequest {
            org_id: org.clone(),
            name: "prod/db".into(),
            purpose: "database".into(),
            value: wrong_purpose.clone(),
        },
    ] {
        refused(vault.create_credential(request).await.unwrap_err());
    }
    refused(
        vault
            .replace_credential_value(pb::ReplaceCredentialValueRequest {
                org_id: org.clone(),
                credential_id: uuid::Uuid::now_v7().to_string(),
                value: wrong_purpose.clone(),
            })
            .await
            .unwrap_err(),
    );

    // Release and managed restore, then their refusals (replay, another attempt's header).
    let (agent_id, mut agent) = crate::credentials::enrolled_agent(&app, &acme).await;
    let scheduling = Signer::from_seed(&[13; 32]).unwrap();
    app.publish_ticket_key(&scheduling).await;
    let backup = crate::credentials::run("age", &["-r", &recipient], b"dump").await;
    let (header, _) = crate::credentials::split_age(&backup);
    let digest = {
        use sha2::{Digest, Sha256};
        format!("{:x}", Sha256::digest(header))
    };
    let ticket = scheduling
        .issue_ticket(
            &JobTicket::new(
                uuid::Uuid::now_v7(),
                1,
                agent_id.parse().unwrap(),
                acme.org,
                vec![db.vault_ref.clone(), bucket.vault_ref.clone()],
                SystemTime::now(),
                Duration::from_secs(300),
            )
            .with_file_key_headers(vec![digest]),
        )
        .unwrap();
    secrets.push(ticket.clone().into_bytes());
    let released = coffer_testkit::eventually(
        "the ticket key is followed",
        Duration::from_secs(10),
        || {
            let mut agent = agent.clone();
            let ticket = ticket.clone();
            async move {
                agent
                    .release_credentials(pb::ReleaseCredentialsRequest { ticket })
                    .await
                    .ok()
            }
        },
    )
    .await
    .into_inner();
    assert_eq!(released.credentials[0].value, replaced);
    let unwrapped = agent
        .unwrap_file_key(pb::UnwrapFileKeyRequest {
            ticket: ticket.clone(),
            header: header.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(unwrapped.file_key.clone());
    errors
        .borrow_mut()
        .push(format!("{released:?} {unwrapped:?}"));
    refused(
        agent
            .release_credentials(pb::ReleaseCredentialsRequest {
                ticket: ticket.clone(),
            })
            .await
            .unwrap_err(),
    );
    refused(
        agent
            .unwrap_file_key(pb::UnwrapFileKeyRequest {
                ticket: ticket.clone(),
                header: header.to_vec(),
            })
            .await
            .unwrap_err(),
    );

    // The recovery export, by its owner; refused to an admin.
    let exported = crate::credentials::org_keys(&app, &acme.owner_key)
        .await
        .export_recovery_key(pb::ExportRecoveryKeyRequest {
            org_id: org.clone(),
            reason: "drill".into(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(exported.identity.clone().into_bytes());
    errors.borrow_mut().push(format!("{exported:?}"));
    let admin = app.new_api_key(&acme, "admin").await;
    refused(
        crate::credentials::org_keys(&app, &admin)
            .await
            .export_recovery_key(pb::ExportRecoveryKeyRequest {
                org_id: org.clone(),
                reason: "drill".into(),
            })
            .await
            .unwrap_err(),
    );

    // Master-key rotation onto a new key, then every value read back through it.
    let next = app.next_master_key().await;
    let rotated = Credentials::new(app.db.service(coffer_credentials::SERVICE).await, next);
    let new_key = rotated.key_coverage().await.unwrap().current_key_id;
    let operator = coffer_types::Actor::service("canary-operator");
    rotated
        .start_rotation(&operator, &new_key, "canary rotation")
        .await
        .unwrap();
    rotated
        .run_rotation(RotationSettings::default())
        .await
        .unwrap();
    let opened = rotated
        .decrypt_current(acme.org, bucket.credential_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(opened.expose_secret(), bucket_value.as_slice());

    // A stored key that no longer unwraps: the failure is logged, the value is not.
    sqlx::query(
        "UPDATE coffer_credentials.credential_secrets SET wrapped_dek = wrapped_dek || '\\x00'::bytea
         WHERE credential_id = $1",
    )
    .bind(bucket.credential_id.parse::<uuid::Uuid>().unwrap())
    .execute(&app.db.superuser().await)
    .await
    .unwrap();
    let tampered = JobTicket::new(
        uuid::Uuid::now_v7(),
        1,
        agent_id.parse().unwrap(),
        acme.org,
        vec![bucket.vault_ref.clone()],
        SystemTime::now(),
        Duration::from_secs(300),
    );
    refused(
        agent
            .release_credentials(pb::ReleaseCredentialsRequest {
                ticket: scheduling.issue_ticket(&tampered).unwrap(),
            })
            .await
            .unwrap_err(),
    );

    let logs = logs.contents();
    let spans = spans.0.lock().unwrap().clone();
    let errors = errors.into_inner().join("\n");
    assert!(
        logs.contains("credentials"),
        "the capture saw the service's logs"
    );
    assert!(spans.contains("span "), "the capture saw spans");
    for secret in &secrets {
        for form in forms(secret) {
            for (record, what) in [
                (&logs, "logs"),
                (&spans, "span fields"),
                (&errors, "errors"),
            ] {
                assert!(
                    !record.contains(&form),
                    "a secret ({} bytes) reached the {what} as {:?}…",
                    secret.len(),
                    &form[..form.len().min(12)]
                );
            }
        }
    }
}

#[tokio::test]
async fn p8_local_no_secret_reaches_logs_spans_or_error_strings() {
    Box::pin(p8_no_secret_reaches_logs_spans_or_error_strings(
        Provider::Local,
    ))
    .await;
}

#[tokio::test]
async fn p8_aws_no_secret_reaches_logs_spans_or_error_strings() {
    Box::pin(p8_no_secret_reaches_logs_spans_or_error_strings(
        Provider::Aws,
    ))
    .await;
}
