//! The org's age X25519 key pair: generation, and the KMS wrapping of its private half.
//!
//! The private key is handled only as the standard `AGE-SECRET-KEY-1…` string, in a
//! [`SecretString`]: that is what KMS wraps, and what `ExportRecoveryKey` hands an owner, so the
//! export needs no conversion and reads with stock `age -d -i`.

use coffer_kms::{EncryptionContext, Kms, Purpose, WrappedKey};
use coffer_types::OrgId;
use secrecy::{ExposeSecret, SecretString};

/// A freshly generated key pair.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The public recipient, `age1…`.
    pub recipient: String,
    /// The private key, `AGE-SECRET-KEY-1…`.
    pub identity: SecretString,
}

/// Generates a key pair from the OS CSPRNG.
pub fn generate() -> GeneratedKey {
    let identity = age::x25519::Identity::generate();
    GeneratedKey {
        recipient: identity.to_public().to_string(),
        identity: identity.to_string(),
    }
}

/// The KMS encryption context the org's private key is wrapped under.
pub fn kms_context(org: OrgId) -> Result<EncryptionContext, coffer_kms::Error> {
    EncryptionContext::new(org, Purpose::OrgAgeKey, format!("org-key/{org}"))
}

/// Wraps `identity` under the current master key.
pub async fn wrap(
    kms: &dyn Kms,
    org: OrgId,
    identity: &SecretString,
) -> Result<WrappedKey, coffer_kms::Error> {
    kms.encrypt(identity.expose_secret().as_bytes(), &kms_context(org)?)
        .await
}

/// Unwraps the org's private key and checks it is an age X25519 identity.
pub async fn unwrap(
    kms: &dyn Kms,
    org: OrgId,
    wrapped: &WrappedKey,
) -> Result<SecretString, UnwrapError> {
    let plaintext = kms.decrypt_bytes(wrapped, &kms_context(org)?).await?;
    let text = std::str::from_utf8(plaintext.expose_secret()).map_err(|_| UnwrapError::Corrupt)?;
    text.parse::<age::x25519::Identity>()
        .map_err(|_| UnwrapError::Corrupt)?;
    Ok(SecretString::from(text.to_owned()))
}

/// The org's private key could not be unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    /// KMS refused or failed.
    #[error(transparent)]
    Kms(#[from] coffer_kms::Error),
    /// KMS returned something that is not an age identity.
    #[error("the stored org key is not an age identity")]
    Corrupt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_in_the_standard_encodings() {
        let key = generate();
        assert!(key.recipient.starts_with("age1"), "{}", key.recipient);
        let identity: age::x25519::Identity = key.identity.expose_secret().parse().unwrap();
        assert!(key.identity.expose_secret().starts_with("AGE-SECRET-KEY-1"));
        assert_eq!(identity.to_public().to_string(), key.recipient);
        assert!(!format!("{key:?}").contains("AGE-SECRET-KEY"));
    }
}
