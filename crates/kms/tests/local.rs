//! The local provider against real key files in a temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use coffer_kms::{
    EncryptionContext, Error, KeyId, Kms, KmsConfig, LocalConfig, LocalKms, Purpose, WrappedKey,
};
use coffer_types::OrgId;
use secrecy::ExposeSecret;

fn ctx(org_id: OrgId, purpose: Purpose, object_id: &str) -> EncryptionContext {
    EncryptionContext::new(org_id, purpose, object_id).unwrap()
}

/// A key directory holding one freshly created key, and the provider opened on it.
fn setup(key_id: &str) -> (tempfile::TempDir, LocalKms) {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("kms");
    LocalKms::create_key(&key_dir, &KeyId::new(key_id)).unwrap();
    let kms = LocalKms::open(&key_dir, &KeyId::new(key_id)).unwrap();
    (dir, kms)
}

fn key_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("kms")
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn data_key_round_trips() {
    let (_dir, kms) = setup("master-1");
    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1");

    let data_key = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(data_key.wrapped.key_id, KeyId::new("master-1"));
    assert_eq!(&data_key.wrapped.key_id, kms.current_key_id());
    assert_ne!(data_key.plaintext.expose_secret(), &[0u8; 32]);

    let unwrapped = kms.decrypt(&data_key.wrapped, &ctx).await.unwrap();
    assert_eq!(
        unwrapped.expose_secret(),
        data_key.plaintext.expose_secret()
    );

    // Two data keys are different keys with different ciphertexts.
    let other = kms.generate_data_key(&ctx).await.unwrap();
    assert_ne!(
        other.plaintext.expose_secret(),
        data_key.plaintext.expose_secret()
    );
    assert_ne!(other.wrapped.ciphertext, data_key.wrapped.ciphertext);
}

#[tokio::test]
async fn caller_key_material_round_trips_within_length_limits() {
    let (_dir, kms) = setup("master-1");
    let ctx = ctx(OrgId::new(), Purpose::OrgAgeKey, "org-age-key/1");

    for len in [32, 74, 4096] {
        let material: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let wrapped = kms.encrypt(&material, &ctx).await.unwrap();
        let unwrapped = kms.decrypt_bytes(&wrapped, &ctx).await.unwrap();
        assert_eq!(unwrapped.expose_secret(), material.as_slice());
    }
    for len in [0, 31, 4097] {
        let err = kms.encrypt(&vec![1u8; len], &ctx).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{len}: {err:?}");
    }

    // A 74-byte value is not a data key: `decrypt` says so instead of truncating.
    let wrapped = kms.encrypt(&[9u8; 74], &ctx).await.unwrap();
    let err = kms.decrypt(&wrapped, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn p2_wrapped_key_is_bound_to_org_purpose_and_object() {
    let (_dir, kms) = setup("master-1");
    let org = OrgId::new();
    let right = ctx(org, Purpose::CredentialDek, "cred-1/v1");
    let data_key = kms.generate_data_key(&right).await.unwrap();

    let wrong_contexts = [
        (
            "org_id",
            ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1"),
        ),
        ("purpose", ctx(org, Purpose::SigningKey, "cred-1/v1")),
        ("object_id", ctx(org, Purpose::CredentialDek, "cred-1/v2")),
    ];
    for (field, wrong) in &wrong_contexts {
        let err = kms.decrypt(&data_key.wrapped, wrong).await.unwrap_err();
        assert!(matches!(err, Error::Denied(_)), "{field}: {err:?}");
        let err = kms
            .re_encrypt(&data_key.wrapped, wrong, kms.current_key_id())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Denied(_)),
            "re-encrypt {field}: {err:?}"
        );
    }
    // The failures did not disturb the right context.
    kms.decrypt(&data_key.wrapped, &right).await.unwrap();
}

#[tokio::test]
async fn tampered_ciphertext_is_denied_without_saying_where() {
    let (_dir, kms) = setup("master-1");
    let ctx = ctx(OrgId::new(), Purpose::CaKey, "ca/root");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();
    let original = &data_key.wrapped;

    let mut messages = std::collections::BTreeSet::new();
    for i in 0..original.ciphertext.len() {
        let mut tampered = original.clone();
        tampered.ciphertext[i] ^= 0x01;
        let err = kms.decrypt(&tampered, &ctx).await.unwrap_err();
        assert!(matches!(err, Error::Denied(_)), "byte {i}: {err:?}");
        messages.insert(err.to_string());
    }
    let mut truncated = original.clone();
    truncated.ciphertext.pop();
    let mut extended = original.clone();
    extended.ciphertext.push(0);
    let empty = WrappedKey {
        key_id: original.key_id.clone(),
        ciphertext: Vec::new(),
    };
    for bad in [truncated, extended, empty] {
        let err = kms.decrypt(&bad, &ctx).await.unwrap_err();
        assert!(matches!(err, Error::Denied(_)), "{err:?}");
        messages.insert(err.to_string());
    }
    assert_eq!(messages.len(), 1, "errors differ by position: {messages:?}");
}

#[tokio::test]
async fn relabelling_a_wrapped_key_with_another_key_id_is_denied() {
    let (dir, kms) = setup("master-1");
    LocalKms::create_key(key_dir(&dir), &KeyId::new("master-2")).unwrap();
    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1");
    let mut wrapped = kms.generate_data_key(&ctx).await.unwrap().wrapped;

    wrapped.key_id = KeyId::new("master-2");
    let err = kms.decrypt(&wrapped, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::Denied(_)), "{err:?}");

    wrapped.key_id = KeyId::new("master-missing");
    let err = kms.decrypt(&wrapped, &ctx).await.unwrap_err();
    assert_eq!(err, Error::KeyNotFound(KeyId::new("master-missing")));

    wrapped.key_id = KeyId::new("../kms/master-1");
    let err = kms.decrypt(&wrapped, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::KeyNotFound(_)), "{err:?}");
}

#[tokio::test]
async fn re_encrypt_moves_a_key_to_the_new_master_key_and_the_old_copy_still_decrypts() {
    let (dir, kms) = setup("master-1");
    let new_key = KeyId::new("master-2");
    LocalKms::create_key(key_dir(&dir), &new_key).unwrap();
    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-9/v3");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();

    let moved = kms
        .re_encrypt(&data_key.wrapped, &ctx, &new_key)
        .await
        .unwrap();
    assert_eq!(moved.key_id, new_key);
    assert_ne!(moved.ciphertext, data_key.wrapped.ciphertext);

    let via_new = kms.decrypt(&moved, &ctx).await.unwrap();
    assert_eq!(via_new.expose_secret(), data_key.plaintext.expose_secret());
    let via_old = kms.decrypt(&data_key.wrapped, &ctx).await.unwrap();
    assert_eq!(via_old.expose_secret(), data_key.plaintext.expose_secret());

    // A restarted process whose current key is the new one still reads both.
    let rotated = LocalKms::open(key_dir(&dir), &new_key).unwrap();
    assert_eq!(rotated.current_key_id(), &new_key);
    for wrapped in [&moved, &data_key.wrapped] {
        let key = rotated.decrypt(wrapped, &ctx).await.unwrap();
        assert_eq!(key.expose_secret(), data_key.plaintext.expose_secret());
    }
    // New values go under the new key.
    let fresh = rotated.generate_data_key(&ctx).await.unwrap();
    assert_eq!(fresh.wrapped.key_id, new_key);

    let err = kms
        .re_encrypt(&data_key.wrapped, &ctx, &KeyId::new("master-3"))
        .await
        .unwrap_err();
    assert_eq!(err, Error::KeyNotFound(KeyId::new("master-3")));
}

#[test]
fn key_files_readable_by_group_or_others_are_refused() {
    for mode in [0o640, 0o604, 0o660, 0o644, 0o601] {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = key_dir(&dir);
        let path = LocalKms::create_key(&key_dir, &KeyId::new("master-1")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();

        let err = LocalKms::open(&key_dir, &KeyId::new("master-1")).unwrap_err();
        let Error::Config(message) = &err else {
            panic!("mode {mode:o}: expected Config, got {err:?}");
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("group or others"), "{message}");
    }
}

#[tokio::test]
async fn an_older_key_file_with_loose_mode_is_refused_when_first_used() {
    let (dir, kms) = setup("master-2");
    let old = KeyId::new("master-1");
    let path = LocalKms::create_key(key_dir(&dir), &old).unwrap();
    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1");
    let writer = LocalKms::open(key_dir(&dir), &old).unwrap();
    let wrapped = writer.generate_data_key(&ctx).await.unwrap().wrapped;

    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
    let err = kms.decrypt(&wrapped, &ctx).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[test]
fn key_files_of_the_wrong_length_are_refused() {
    for len in [0, 16, 31, 33, 64] {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = key_dir(&dir);
        let path = LocalKms::create_key(&key_dir, &KeyId::new("master-1")).unwrap();
        fs::write(&path, vec![7u8; len]).unwrap();
        assert_eq!(mode_of(&path), 0o600);

        let err = LocalKms::open(&key_dir, &KeyId::new("master-1")).unwrap_err();
        let Error::Config(message) = &err else {
            panic!("{len} bytes: expected Config, got {err:?}");
        };
        assert!(message.contains("exactly 32"), "{message}");
    }
}

#[test]
fn a_missing_current_key_is_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = LocalKms::open(dir.path(), &KeyId::new("absent")).unwrap_err();
    let Error::Config(message) = &err else {
        panic!("expected Config, got {err:?}");
    };
    assert!(message.contains("absent.key"), "{message}");
}

#[test]
fn create_key_writes_0600_in_a_0700_dir_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("nested").join("kms");
    let key_id = KeyId::new("master-1");

    let path = LocalKms::create_key(&key_dir, &key_id).unwrap();
    assert_eq!(path, key_dir.join("master-1.key"));
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(&key_dir), 0o700);
    let first = fs::read(&path).unwrap();
    assert_eq!(first.len(), 32);

    let err = LocalKms::create_key(&key_dir, &key_id).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert_eq!(fs::read(&path).unwrap(), first, "key file was overwritten");

    // A second key is a different key.
    let second = LocalKms::create_key(&key_dir, &KeyId::new("master-2")).unwrap();
    assert_ne!(fs::read(second).unwrap(), first);

    let err = LocalKms::create_key(&key_dir, &KeyId::new("../escape")).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(!dir.path().join("nested").join("escape.key").exists());
}

#[tokio::test]
async fn p8_data_key_debug_does_not_print_the_key() {
    let (_dir, kms) = setup("master-1");
    let ctx = ctx(OrgId::new(), Purpose::SigningKey, "token-signing/1");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();
    let key = *data_key.plaintext.expose_secret();

    let debug = format!("{data_key:?} {data_key:#?} {kms:?}");
    assert!(debug.contains("REDACTED"), "{debug}");
    assert!(!debug.contains(&hex::encode(key)), "{debug}");
    assert!(!debug.contains(&hex::encode_upper(key)), "{debug}");
    assert!(!debug.contains(&format!("{key:?}")), "{debug}");
    assert!(
        !debug
            .as_bytes()
            .windows(key.len())
            .any(|window| window == key),
        "raw key bytes in {debug}"
    );

    let unwrapped = kms.decrypt(&data_key.wrapped, &ctx).await.unwrap();
    let debug = format!("{unwrapped:?}");
    assert!(!debug.contains(&hex::encode(key)), "{debug}");
    assert!(!debug.contains(&format!("{key:?}")), "{debug}");
}

#[tokio::test]
async fn wrapped_keys_survive_serde_and_from_config_builds_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let key_id = KeyId::new("master-1");
    LocalKms::create_key(key_dir(&dir), &key_id).unwrap();
    let config = KmsConfig::Local(LocalConfig {
        key_dir: key_dir(&dir),
        key_id: key_id.clone(),
    });
    let kms = coffer_kms::from_config(&config).await.unwrap();
    assert_eq!(kms.current_key_id(), &key_id);

    let ctx = ctx(OrgId::new(), Purpose::CredentialDek, "cred-1/v1");
    let data_key = kms.generate_data_key(&ctx).await.unwrap();
    let stored = serde_json::to_string(&data_key.wrapped).unwrap();
    let loaded: WrappedKey = serde_json::from_str(&stored).unwrap();
    assert_eq!(loaded, data_key.wrapped);
    let key = kms.decrypt(&loaded, &ctx).await.unwrap();
    assert_eq!(key.expose_secret(), data_key.plaintext.expose_secret());

    let missing = KmsConfig::Local(LocalConfig {
        key_dir: key_dir(&dir),
        key_id: KeyId::new("master-9"),
    });
    let err = coffer_kms::from_config(&missing).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}
