//! The AWS provider against a real KMS API server on loopback (moto, started by
//! `cargo xtask test`, which exports `COFFER_TEST_KMS_ENDPOINT` and AWS test credentials).

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use coffer_kms::{AwsConfig, AwsKms, EncryptionContext, Error, KeyId, Kms, KmsConfig, Purpose};
use coffer_testkit::relay::TcpRelay;
use coffer_types::OrgId;
use secrecy::ExposeSecret;

/// The emulator's URL. Missing means the test was not started by the test stack: fail loudly
/// rather than pass without having tested anything.
fn endpoint() -> String {
    std::env::var("COFFER_TEST_KMS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "COFFER_TEST_KMS_ENDPOINT is not set: the AWS KMS tests need a KMS API server on \
             loopback; run through `cargo xtask test`, which starts one and sets it (plus \
             AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)"
        )
    })
}

fn config(key_id: &str, endpoint: String) -> AwsConfig {
    AwsConfig {
        endpoint: Some(endpoint),
        ..AwsConfig::new(key_id)
    }
}

/// A plain SDK client for test setup (creating master keys); the code under test never uses it.
async fn admin_client() -> aws_sdk_kms::Client {
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .load()
        .await;
    aws_sdk_kms::Client::new(&sdk_config)
}

/// Creates a symmetric master key; returns (key id, ARN).
async fn create_master_key(client: &aws_sdk_kms::Client) -> (String, String) {
    let out = client
        .create_key()
        .description("coffer-kms test")
        .send()
        .await
        .expect("create a test master key");
    let metadata = out.key_metadata().expect("CreateKey returns metadata");
    (
        metadata.key_id().to_owned(),
        metadata.arn().expect("CreateKey returns an ARN").to_owned(),
    )
}

fn ctx(org_id: OrgId, purpose: Purpose, object_id: &str) -> EncryptionContext {
    EncryptionContext::new(org_id, purpose, object_id).unwrap()
}

#[tokio::test]
async fn data_key_round_trips_and_records_the_key_arn_behind_an_alias() {
    let admin = admin_client().await;
    let (key_id, arn) = create_master_key(&admin).await;
    let alias = format!("alias/coffer-test-{}", OrgId::new());
    admin
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();

    let kms = coffer_kms::from_config(&KmsConfig::Aws(config(&alias, endpoint())))
        .await
        .unwrap();
    assert_eq!(kms.current_key_id(), &KeyId::new(arn.clone()));

    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(data_key.wrapped.key_id, KeyId::new(arn));
    assert_ne!(data_key.plaintext.expose_secret(), &[0u8; 32]);

    let unwrapped = kms.decrypt(&data_key.wrapped, &ctx).await.unwrap();
    assert_eq!(
        unwrapped.expose_secret(),
        data_key.plaintext.expose_secret()
    );
}

#[tokio::test]
async fn caller_key_material_round_trips() {
    let (key_id, _) = create_master_key(&admin_client().await).await;
    let kms = AwsKms::connect(&config(&key_id, endpoint())).await.unwrap();
    let ctx = ctx(OrgId::new(), Purpose::OrgAgeKey, "org-age-key/1");

    let material: Vec<u8> = (0..74u8).collect();
    let wrapped = kms.encrypt(&material, &ctx).await.unwrap();
    assert_eq!(&wrapped.key_id, kms.current_key_id());
    let unwrapped = kms.decrypt_bytes(&wrapped, &ctx).await.unwrap();
    assert_eq!(unwrapped.expose_secret(), material.as_slice());

    let err = kms.encrypt(&[1u8; 4097], &ctx).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn p2_wrong_encryption_context_is_denied_by_kms() {
    let (key_id, _) = create_master_key(&admin_client().await).await;
    let kms = AwsKms::connect(&config(&key_id, endpoint())).await.unwrap();
    let org = OrgId::new();
    let right = ctx(org, Purpose::CredentialDek, "cred-1/v1");
    let data_key = kms.generate_data_key(&right).await.unwrap();

    let wrong_contexts = [
        (
            "org_id",
            ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1"),
        ),
        ("purpose", ctx(org, Purpose::CaKey, "cred-1/v1")),
        ("object_id", ctx(org, Purpose::CredentialDek, "cred-1/v2")),
    ];
    for (field, wrong) in &wrong_contexts {
        let err = kms.decrypt(&data_key.wrapped, wrong).await.unwrap_err();
        // KMS rejects the ciphertext itself (its authentication covers the context), not the
        // key or the caller: that is what proves the context was checked.
        match &err {
            Error::Denied(message) => assert!(
                message.contains("InvalidCiphertextException"),
                "{field}: {message}"
            ),
            other => panic!("{field}: expected Denied, got {other:?}"),
        }
        let plaintext_hex = hex::encode(data_key.plaintext.expose_secret());
        assert!(!err.to_string().contains(&plaintext_hex));

        let err = kms
            .re_encrypt(&data_key.wrapped, wrong, kms.current_key_id())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Denied(_)),
            "re-encrypt {field}: {err:?}"
        );
    }
    let unwrapped = kms.decrypt(&data_key.wrapped, &right).await.unwrap();
    assert_eq!(
        unwrapped.expose_secret(),
        data_key.plaintext.expose_secret()
    );
}

#[tokio::test]
async fn tampered_ciphertext_and_wrong_key_are_denied() {
    let admin = admin_client().await;
    let (key_1, _) = create_master_key(&admin).await;
    let (_, arn_2) = create_master_key(&admin).await;
    let kms = AwsKms::connect(&config(&key_1, endpoint())).await.unwrap();
    let ctx = ctx(OrgId::new(), Purpose::SigningKey, "audit-checkpoint/1");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();

    let mut tampered = data_key.wrapped.clone();
    let last = tampered.ciphertext.len() - 1;
    tampered.ciphertext[last] ^= 0x01;
    let err = kms.decrypt(&tampered, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err:?}");

    // Claiming another master key made it: KMS refuses (IncorrectKeyException on AWS,
    // AccessDeniedException on moto).
    let mut relabelled = data_key.wrapped.clone();
    relabelled.key_id = KeyId::new(arn_2);
    let err = kms.decrypt(&relabelled, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err:?}");
}

#[tokio::test]
async fn re_encrypt_moves_a_key_to_the_second_master_key() {
    let admin = admin_client().await;
    let (key_1, arn_1) = create_master_key(&admin).await;
    let (key_2, arn_2) = create_master_key(&admin).await;
    let kms = AwsKms::connect(&config(&key_1, endpoint())).await.unwrap();
    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-7/v2");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(data_key.wrapped.key_id, KeyId::new(arn_1));

    let moved = kms
        .re_encrypt(&data_key.wrapped, &ctx, &KeyId::new(key_2.clone()))
        .await
        .unwrap();
    assert_eq!(moved.key_id, KeyId::new(arn_2.clone()));
    assert_ne!(moved.ciphertext, data_key.wrapped.ciphertext);

    let via_new = kms.decrypt(&moved, &ctx).await.unwrap();
    assert_eq!(via_new.expose_secret(), data_key.plaintext.expose_secret());
    let via_old = kms.decrypt(&data_key.wrapped, &ctx).await.unwrap();
    assert_eq!(via_old.expose_secret(), data_key.plaintext.expose_secret());

    // A process that rotated to the second key reads both too.
    let rotated = AwsKms::connect(&config(&key_2, endpoint())).await.unwrap();
    assert_eq!(rotated.current_key_id(), &KeyId::new(arn_2));
    for wrapped in [&moved, &data_key.wrapped] {
        let key = rotated.decrypt(wrapped, &ctx).await.unwrap();
        assert_eq!(key.expose_secret(), data_key.plaintext.expose_secret());
    }
}

#[tokio::test]
async fn a_missing_master_key_is_key_not_found_at_boot() {
    let missing = "00000000-0000-4000-8000-000000000000";
    let err = AwsKms::connect(&config(missing, endpoint()))
        .await
        .unwrap_err();
    assert_eq!(err, Error::KeyNotFound(KeyId::new(missing)));
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

fn fast_failing(key_id: &str, endpoint: String) -> AwsConfig {
    AwsConfig {
        max_attempts: 2,
        connect_timeout: Duration::from_millis(500),
        attempt_timeout: Duration::from_secs(2),
        ..config(key_id, endpoint)
    }
}

#[tokio::test]
async fn an_unreachable_kms_is_unavailable_at_boot_quickly() {
    // Needs no emulator, but does need the stack's AWS credentials, or the SDK would fail
    // before dialling; require the stack like every other test here.
    endpoint();
    let started = Instant::now();
    let err = AwsKms::connect(&fast_failing(
        "any-key",
        format!("http://{}", closed_port()),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_kms_that_goes_away_makes_calls_unavailable_quickly() {
    let (key_id, _) = create_master_key(&admin_client().await).await;
    let relay = TcpRelay::start_for_url(&endpoint()).await;
    let kms = AwsKms::connect(&fast_failing(&key_id, relay.url()))
        .await
        .unwrap();
    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();

    relay.cut().await;
    let started = Instant::now();
    let err = kms.decrypt(&data_key.wrapped, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let err = kms.generate_data_key(&ctx).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}
