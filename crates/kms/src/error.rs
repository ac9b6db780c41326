//! The one error type of this crate.

use crate::KeyId;

/// Why a KMS operation failed.
///
/// No variant ever carries key material, plaintext or ciphertext: the strings are this crate's
/// own words plus, for AWS, the service's error code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The KMS could not be reached or did not answer in time: transport failure, timeout, or
    /// throttling that outlasted the retries. Transient; callers map it to gRPC `UNAVAILABLE`.
    #[error("kms is unavailable: {0}")]
    Unavailable(String),

    /// The KMS refused to unwrap or use the key: wrong encryption context, tampered or
    /// truncated ciphertext, a value wrapped under another master key, a disabled key, or no
    /// permission. Deliberately does not say which, nor where a ciphertext was altered.
    #[error("kms denied the operation: {0}")]
    Denied(String),

    /// The master key does not exist (no key file, or no such key in AWS KMS).
    #[error("kms master key {0} not found")]
    KeyNotFound(KeyId),

    /// The caller passed something this crate refuses before talking to the KMS (an empty
    /// object id, a plaintext of the wrong length).
    #[error("invalid kms request: {0}")]
    InvalidArgument(String),

    /// The KMS answered, but not with what the API promises (a missing field, a data key of the
    /// wrong length).
    #[error("unexpected kms response: {0}")]
    Protocol(String),

    /// The provider is misconfigured: bad settings, an unsafe key file, credentials the KMS does
    /// not accept. Not transient; fix the configuration.
    #[error("kms configuration: {0}")]
    Config(String),
}
