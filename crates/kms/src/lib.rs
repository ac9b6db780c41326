//! Envelope encryption against a KMS master key: the only crate in Coffer that talks to a KMS.
//!
//! This crate owns
//! - the [`Kms`] trait: generate a data key (DEK), decrypt it, re-wrap it under another master key
//!   (rotation), and wrap caller-supplied key material (age private keys, CA and signing keys);
//! - the [`EncryptionContext`] every call carries (`{org_id, purpose, object_id}`, DESIGN §1 P2),
//!   and its canonical encodings: a string map for AWS KMS, length-prefixed bytes used as
//!   AES-GCM associated data by the local provider;
//! - the two providers: [`AwsKms`] (aws-sdk-kms; an endpoint override lets tests run against a KMS
//!   API emulator) and [`LocalKms`] (32-byte key files, mode 0600, AES-256-GCM; the dev default);
//! - [`KmsConfig`] and [`from_config`], which pick a provider at boot.
//!
//! It does not own what the data keys protect: callers encrypt their own payloads with the
//! plaintext of a [`DataKey`] and store the [`WrappedKey`] next to the ciphertext.
//!
//! Plaintext key material only ever lives in [`secrecy`] wrappers or zeroized buffers, never
//! prints, and never appears in an [`Error`].

mod aws;
mod config;
mod context;
mod error;
mod key;
mod local;

use std::fmt::Debug;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretSlice};

// Depended on only to enable its `zeroize` feature for the copy aes-gcm uses.
use aes as _;

pub use aws::AwsKms;
pub use config::{AwsConfig, KmsConfig, LocalConfig};
pub use context::{EncryptionContext, Purpose};
pub use error::Error;
pub use key::{DATA_KEY_LEN, DataKey, KeyId, WrappedKey};
pub use local::LocalKms;

/// Smallest plaintext [`Kms::encrypt`] accepts, in bytes: anything shorter is not key material.
pub const MIN_PLAINTEXT_LEN: usize = 32;

/// Largest plaintext [`Kms::encrypt`] accepts, in bytes (the AWS KMS `Encrypt` limit).
pub const MAX_PLAINTEXT_LEN: usize = 4096;

/// A KMS master key holder: wraps and unwraps key material under an [`EncryptionContext`].
///
/// Every wrapped value is bound to the context it was made with: decrypting it under any other
/// context, or under another master key, fails with [`Error::Denied`].
#[async_trait::async_trait]
pub trait Kms: Send + Sync + Debug {
    /// The master key new data keys and [`Kms::encrypt`] calls are wrapped under.
    fn current_key_id(&self) -> &KeyId;

    /// Generates a fresh 256-bit data key wrapped under [`Kms::current_key_id`].
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, Error>;

    /// Unwraps a data key made by [`Kms::generate_data_key`] (or a 32-byte [`Kms::encrypt`]).
    ///
    /// The master key is the one recorded in `wrapped`, so keys made before a rotation still
    /// decrypt. A wrapped value that does not hold exactly 32 bytes is [`Error::InvalidArgument`].
    async fn decrypt(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretBox<[u8; DATA_KEY_LEN]>, Error> {
        let plaintext = self.decrypt_bytes(wrapped, ctx).await?;
        let bytes = plaintext.expose_secret();
        if bytes.len() != DATA_KEY_LEN {
            return Err(Error::InvalidArgument(format!(
                "wrapped value under {} holds {} bytes, not a {DATA_KEY_LEN}-byte data key",
                wrapped.key_id,
                bytes.len()
            )));
        }
        Ok(SecretBox::init_with_mut(|key: &mut [u8; DATA_KEY_LEN]| {
            key.copy_from_slice(bytes)
        }))
    }

    /// Wraps caller-supplied key material (an age private key, a CA or signing key) under
    /// [`Kms::current_key_id`].
    ///
    /// `plaintext` must be [`MIN_PLAINTEXT_LEN`]`..=`[`MAX_PLAINTEXT_LEN`] bytes long; the caller
    /// keeps ownership of it and is responsible for zeroizing it.
    async fn encrypt(&self, plaintext: &[u8], ctx: &EncryptionContext)
    -> Result<WrappedKey, Error>;

    /// Unwraps any value made by [`Kms::encrypt`] or [`Kms::generate_data_key`].
    async fn decrypt_bytes(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretSlice<u8>, Error>;

    /// Re-wraps `wrapped` under `destination` without handing the plaintext to the caller
    /// (master-key rotation). The context stays the same; the old wrapped value stays valid
    /// for as long as its master key exists.
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
        destination: &KeyId,
    ) -> Result<WrappedKey, Error>;
}

/// Builds the provider `config` names.
///
/// Fails with [`Error::Config`] when the configuration is invalid or the current master key
/// cannot be loaded (local), and with [`Error::Unavailable`] / [`Error::KeyNotFound`] /
/// [`Error::Denied`] when the KMS cannot be reached or refuses to describe the key (aws), so a
/// misconfigured process stops at boot rather than on its first request.
pub async fn from_config(config: &KmsConfig) -> Result<Arc<dyn Kms>, Error> {
    config.validate()?;
    match config {
        KmsConfig::Local(local) => Ok(Arc::new(LocalKms::open(&local.key_dir, &local.key_id)?)),
        KmsConfig::Aws(aws) => Ok(Arc::new(AwsKms::connect(aws).await?)),
    }
}

/// Checks a plaintext length for [`Kms::encrypt`].
fn check_plaintext_len(len: usize) -> Result<(), Error> {
    if (MIN_PLAINTEXT_LEN..=MAX_PLAINTEXT_LEN).contains(&len) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "plaintext to wrap is {len} bytes; it must be {MIN_PLAINTEXT_LEN}..={MAX_PLAINTEXT_LEN}"
        )))
    }
}

/// Copies `bytes` into a secret buffer of exactly their length, so no reallocation leaves an
/// unzeroized copy behind (`SecretSlice::from(Vec)` shrinks the vector, which may reallocate).
fn secret_slice_from(bytes: &[u8]) -> SecretSlice<u8> {
    let mut exact = Vec::with_capacity(bytes.len());
    exact.extend_from_slice(bytes);
    SecretSlice::from(exact)
}
