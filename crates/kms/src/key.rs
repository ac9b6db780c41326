//! Key identifiers, wrapped keys and data keys.

use std::fmt;

use secrecy::SecretBox;

/// Length of a data key: 256 bits.
pub const DATA_KEY_LEN: usize = 32;

/// Names a master key: a local key file's stem, or an AWS KMS key id, ARN or alias.
///
/// Not secret. Recorded in every [`WrappedKey`] so a value made before a rotation is decrypted
/// with the key that made it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Wraps a key id as given. Providers validate it when they use it.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl From<String> for KeyId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for KeyId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// Key material wrapped (encrypted) under a master key: safe to store anywhere.
///
/// Other crates persist it (`key_id` and `ciphertext` columns, or serde). The ciphertext is
/// opaque and provider-specific; only the provider that made it, holding `key_id`, can unwrap
/// it, and only under the same [`EncryptionContext`](crate::EncryptionContext).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    /// The master key that wrapped `ciphertext`. For AWS this is the key ARN the service
    /// reported, even when the provider was configured with an alias, so rotation can tell
    /// which values still need re-wrapping.
    pub key_id: KeyId,
    /// The wrapped bytes.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret, but long and useless in logs: print the size only.
        f.debug_struct("WrappedKey")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A freshly generated data key: its plaintext, to use now, and its wrapped form, to store.
///
/// `Debug` redacts the plaintext; it is zeroed when the `DataKey` is dropped.
pub struct DataKey {
    /// The 256-bit key to encrypt with. Drop it as soon as the payload is encrypted.
    pub plaintext: SecretBox<[u8; DATA_KEY_LEN]>,
    /// The same key wrapped under the master key, to store next to the payload.
    pub wrapped: WrappedKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"[REDACTED]")
            .field("wrapped", &self.wrapped)
            .finish()
    }
}
