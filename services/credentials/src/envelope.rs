//! Envelope encryption of credential values: XChaCha20-Poly1305 under a per-version data key
//! (DEK) that KMS generates and wraps (DESIGN §6).
//!
//! The associated data binds a ciphertext to the row it belongs to: `(org_id, credential_id,
//! version)`. The KMS encryption context binds the wrapped DEK to the same triple. A ciphertext
//! copied onto another credential, version or org therefore fails twice over: KMS refuses to
//! unwrap its DEK under the other context, and even with the right DEK the tag does not verify.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use coffer_kms::{DATA_KEY_LEN, EncryptionContext, Purpose};
use coffer_types::OrgId;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretSlice};

/// Length of an XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;

/// Domain separation for the associated data, versioned with the format.
const AAD_LABEL: &[u8] = b"coffer-credential-v1";

/// Which stored value a ciphertext is: its org, credential and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSlot {
    /// The org.
    pub org: OrgId,
    /// The credential.
    pub credential: uuid::Uuid,
    /// The version.
    pub version: u32,
}

impl ValueSlot {
    /// The associated data: label, org id, credential id (16 bytes each), version (big endian).
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 16 + 16 + 4);
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(self.org.as_uuid().as_bytes());
        aad.extend_from_slice(self.credential.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad
    }

    /// The KMS encryption context of this version's data key.
    pub fn kms_context(&self) -> Result<EncryptionContext, coffer_kms::Error> {
        EncryptionContext::new(
            self.org,
            Purpose::CredentialDek,
            format!("{}/v{}", self.credential, self.version),
        )
    }
}

/// A sealed value: nonce and ciphertext (with its 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Random per encryption.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// A sealed value did not open: wrong key, wrong slot, or tampered bytes. Says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("credential ciphertext does not verify")]
pub struct OpenError;

/// Encrypts `plaintext` for `slot` under `dek` with a fresh random nonce.
pub fn seal(dek: &SecretBox<[u8; DATA_KEY_LEN]>, slot: ValueSlot, plaintext: &[u8]) -> Sealed {
    let cipher = XChaCha20Poly1305::new(dek.expose_secret().into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = slot.aad();
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption fails only beyond 256 GiB");
    Sealed { nonce, ciphertext }
}

/// Decrypts a value sealed for `slot` under `dek`.
pub fn open(
    dek: &SecretBox<[u8; DATA_KEY_LEN]>,
    slot: ValueSlot,
    sealed: &Sealed,
) -> Result<SecretSlice<u8>, OpenError> {
    let cipher = XChaCha20Poly1305::new(dek.expose_secret().into());
    let aad = slot.aad();
    cipher
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .map(SecretSlice::from)
        .map_err(|_| OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dek(byte: u8) -> SecretBox<[u8; DATA_KEY_LEN]> {
        SecretBox::new(Box::new([byte; DATA_KEY_LEN]))
    }

    fn slot() -> ValueSlot {
        ValueSlot {
            org: OrgId::new(),
            credential: uuid::Uuid::now_v7(),
            version: 1,
        }
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_slot_under_its_own_key() {
        let slot = slot();
        let sealed = seal(&dek(7), slot, b"hunter2");
        assert_eq!(
            open(&dek(7), slot, &sealed).unwrap().expose_secret(),
            b"hunter2"
        );
        assert!(open(&dek(8), slot, &sealed).is_err());
        for other in [
            ValueSlot { version: 2, ..slot },
            ValueSlot {
                credential: uuid::Uuid::now_v7(),
                ..slot
            },
            ValueSlot {
                org: OrgId::new(),
                ..slot
            },
        ] {
            assert!(open(&dek(7), other, &sealed).is_err());
        }
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(open(&dek(7), slot, &tampered).is_err());
    }

    #[test]
    fn nonces_are_fresh_per_encryption() {
        let slot = slot();
        let a = seal(&dek(1), slot, b"same");
        let b = seal(&dek(1), slot, b"same");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }
}
