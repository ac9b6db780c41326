//! The local provider: master keys are 32-byte files, wrapping is AES-256-GCM.

use std::collections::HashMap;
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use secrecy::{ExposeSecret, SecretBox, SecretSlice};
use zeroize::Zeroizing;

use crate::{
    DATA_KEY_LEN, DataKey, EncryptionContext, Error, KeyId, Kms, WrappedKey, check_plaintext_len,
    secret_slice_from,
};

/// First byte of every wrapped value this provider makes. Bump it, and keep decrypting the old
/// value, if the layout or the AAD encoding ever changes.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest accepted key id: it becomes a file name.
const MAX_KEY_ID_LEN: usize = 128;

/// The one message for every failed unwrap, so an error never tells a tampering caller which
/// part of the ciphertext (or which context field) was wrong.
const DENIED: &str =
    "wrapped key does not decrypt under its master key with this encryption context";

/// Master keys kept in `<key_dir>/<key_id>.key` files; for development and single-node installs.
///
/// Wrapped value layout: `version (1 byte) || nonce (12) || AES-256-GCM ciphertext and tag`,
/// with AAD = [`EncryptionContext::to_local_aad`] over the version and the master key id.
///
/// A key file is refused unless it is a regular file of exactly 32 bytes whose mode grants
/// nothing to group or others. The current key is loaded by [`LocalKms::open`]; older keys are
/// loaded, with the same checks, the first time a value wrapped under them is decrypted.
pub struct LocalKms {
    key_dir: PathBuf,
    current: KeyId,
    /// Loaded master keys by id; only grows. Guards nothing else.
    ciphers: RwLock<HashMap<KeyId, Arc<Aes256Gcm>>>,
}

impl fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKms")
            .field("key_dir", &self.key_dir)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl LocalKms {
    /// Opens `key_dir` with `key_id` as the current master key.
    ///
    /// Fails with [`Error::Config`] naming the path and the rule when the current key file is
    /// missing, not a regular file, not 32 bytes long, or has any group/other permission bit.
    pub fn open(key_dir: impl AsRef<Path>, key_id: &KeyId) -> Result<Self, Error> {
        validate_key_id(key_id)?;
        let key_dir = key_dir.as_ref().to_path_buf();
        let path = key_path(&key_dir, key_id);
        let cipher = load_key_file(&path)?.ok_or_else(|| {
            Error::Config(format!(
                "current master key file {} does not exist; create it with `LocalKms::create_key`",
                path.display()
            ))
        })?;
        tracing::debug!(key_dir = %key_dir.display(), key_id = %key_id, "opened local kms");
        Ok(Self {
            key_dir,
            current: key_id.clone(),
            ciphers: RwLock::new(HashMap::from([(key_id.clone(), Arc::new(cipher))])),
        })
    }

    /// Writes a new random master key to `<key_dir>/<key_id>.key` with mode 0600, creating
    /// `key_dir` with mode 0700 if needed. Never overwrites: an existing file is
    /// [`Error::Config`]. Returns the file's path.
    pub fn create_key(key_dir: impl AsRef<Path>, key_id: &KeyId) -> Result<PathBuf, Error> {
        validate_key_id(key_id)?;
        let key_dir = key_dir.as_ref();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(key_dir)
            .map_err(|e| {
                Error::Config(format!("create key directory {}: {e}", key_dir.display()))
            })?;
        let path = key_path(key_dir, key_id);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Error::Config(format!(
                    "master key file {} already exists; a key is never overwritten",
                    path.display()
                )),
                _ => Error::Config(format!("create master key file {}: {e}", path.display())),
            })?;
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        let written = file.write_all(key.as_ref()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            // Leave no short key file behind: `open` would refuse it, but a retry of
            // `create_key` would refuse too.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(Error::Config(format!(
                "write master key file {}: {e}",
                path.display()
            )));
        }
        // Make the new directory entry durable too; best effort, the key itself is synced.
        if let Ok(dir) = File::open(key_dir) {
            let _ = dir.sync_all();
        }
        tracing::info!(path = %path.display(), key_id = %key_id, "created local master key");
        Ok(path)
    }

    /// The cipher for `key_id`, loading its file on first use.
    fn cipher(&self, key_id: &KeyId) -> Result<Arc<Aes256Gcm>, Error> {
        if let Some(cipher) = self
            .ciphers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
        {
            return Ok(Arc::clone(cipher));
        }
        // A key id that cannot name a file here cannot be one of our keys.
        if validate_key_id(key_id).is_err() {
            return Err(Error::KeyNotFound(key_id.clone()));
        }
        let cipher = load_key_file(&key_path(&self.key_dir, key_id))?
            .ok_or_else(|| Error::KeyNotFound(key_id.clone()))?;
        let cipher = Arc::new(cipher);
        self.ciphers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_id.clone(), Arc::clone(&cipher));
        tracing::debug!(key_id = %key_id, "loaded local master key");
        Ok(cipher)
    }

    fn seal(
        &self,
        key_id: &KeyId,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, Error> {
        let cipher = self.cipher(key_id)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = ctx.to_local_aad(FORMAT_V1, key_id);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::InvalidArgument("aes-gcm refused the plaintext".to_owned()))?;
        let mut ciphertext = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        ciphertext.push(FORMAT_V1);
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(WrappedKey {
            key_id: key_id.clone(),
            ciphertext,
        })
    }

    fn unseal(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let cipher = self.cipher(&wrapped.key_id)?;
        let bytes = &wrapped.ciphertext;
        if bytes.len() < 1 + NONCE_LEN + TAG_LEN || bytes[0] != FORMAT_V1 {
            return Err(Error::Denied(DENIED.to_owned()));
        }
        let (nonce, sealed) = bytes[1..].split_at(NONCE_LEN);
        let aad = ctx.to_local_aad(FORMAT_V1, &wrapped.key_id);
        // Decrypt in a buffer we zeroize, not in one aes-gcm allocates and hands back.
        let mut buffer = Zeroizing::new(sealed.to_vec());
        aes_gcm::AeadInPlace::decrypt_in_place(
            cipher.as_ref(),
            Nonce::from_slice(nonce),
            &aad,
            &mut *buffer,
        )
        .map_err(|_| Error::Denied(DENIED.to_owned()))?;
        Ok(buffer)
    }
}

#[async_trait::async_trait]
impl Kms for LocalKms {
    fn current_key_id(&self) -> &KeyId {
        &self.current
    }

    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, Error> {
        let plaintext = SecretBox::init_with_mut(|key: &mut [u8; DATA_KEY_LEN]| {
            OsRng.fill_bytes(key);
        });
        let wrapped = self.seal(&self.current, plaintext.expose_secret(), ctx)?;
        Ok(DataKey { plaintext, wrapped })
    }

    async fn encrypt(
        &self,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<WrappedKey, Error> {
        check_plaintext_len(plaintext.len())?;
        self.seal(&self.current, plaintext, ctx)
    }

    async fn decrypt_bytes(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<SecretSlice<u8>, Error> {
        let plaintext = self.unseal(wrapped, ctx)?;
        Ok(secret_slice_from(&plaintext))
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
        destination: &KeyId,
    ) -> Result<WrappedKey, Error> {
        let plaintext = self.unseal(wrapped, ctx)?;
        self.seal(destination, &plaintext, ctx)
    }
}

/// Local key ids become file names: 1..=128 of `[A-Za-z0-9._-]`, not starting with a dot.
pub(crate) fn validate_key_id(key_id: &KeyId) -> Result<(), Error> {
    let id = key_id.as_str();
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "local kms key id {id:?} is invalid; it must be 1..={MAX_KEY_ID_LEN} of \
             [A-Za-z0-9._-] and not start with '.'"
        )))
    }
}

fn key_path(key_dir: &Path, key_id: &KeyId) -> PathBuf {
    key_dir.join(format!("{key_id}.key"))
}

/// Reads and checks a key file; `Ok(None)` if it does not exist.
fn load_key_file(path: &Path) -> Result<Option<Aes256Gcm>, Error> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Config(format!(
                "open master key file {}: {e}",
                path.display()
            )));
        }
    };
    // Check the file we opened, not the path again, so a swap in between cannot slip through.
    let metadata = file
        .metadata()
        .map_err(|e| Error::Config(format!("stat master key file {}: {e}", path.display())))?;
    if !metadata.is_file() {
        return Err(Error::Config(format!(
            "master key file {} is not a regular file",
            path.display()
        )));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "master key file {} has mode {mode:04o}; it must grant nothing to group or others \
             (chmod 600)",
            path.display()
        )));
    }
    if metadata.len() != DATA_KEY_LEN as u64 {
        return Err(Error::Config(format!(
            "master key file {} is {} bytes; it must be exactly {DATA_KEY_LEN}",
            path.display(),
            metadata.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    file.read_exact(key.as_mut())
        .map_err(|e| Error::Config(format!("read master key file {}: {e}", path.display())))?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_ref()));
    Ok(Some(cipher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_that_are_not_plain_file_names_are_refused() {
        for bad in [
            "",
            ".hidden",
            "../up",
            "a/b",
            "a b",
            &"k".repeat(MAX_KEY_ID_LEN + 1),
        ] {
            assert!(
                matches!(validate_key_id(&KeyId::new(bad)), Err(Error::Config(_))),
                "{bad:?} accepted"
            );
        }
        for good in [
            "master",
            "master-2025.01",
            "k_1",
            &"k".repeat(MAX_KEY_ID_LEN),
        ] {
            validate_key_id(&KeyId::new(good)).unwrap();
        }
    }
}
