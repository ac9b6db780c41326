//! The encryption context every KMS call carries, and its canonical encodings.

use std::collections::HashMap;
use std::fmt;

use coffer_types::OrgId;

use crate::{Error, KeyId};

/// What a wrapped value is for. Part of every [`EncryptionContext`].
///
/// A closed enum rather than a free-form string: the set of things Coffer wraps under its master
/// key is a security decision, so adding one is a reviewed change to this crate, and a typo in
/// a caller is a compile error instead of a value that silently fails to decrypt later. The
/// string names ([`Purpose::as_str`]) are stored inside every ciphertext's context and must
/// never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Purpose {
    /// A per-credential-version data key (database passwords, storage keys, SSH keys).
    CredentialDek,
    /// An org's age X25519 private key.
    OrgAgeKey,
    /// A CA private key (platform root or an org intermediate).
    CaKey,
    /// An Ed25519 signing key (access tokens, job tickets, audit checkpoints).
    SigningKey,
}

impl Purpose {
    /// Every purpose, for exhaustive tests and listings.
    pub const ALL: [Purpose; 4] = [
        Purpose::CredentialDek,
        Purpose::OrgAgeKey,
        Purpose::CaKey,
        Purpose::SigningKey,
    ];

    /// The stable name bound into ciphertexts. Never change an existing one.
    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::CredentialDek => "credential_dek",
            Purpose::OrgAgeKey => "org_age_key",
            Purpose::CaKey => "ca_key",
            Purpose::SigningKey => "signing_key",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest accepted [`EncryptionContext::object_id`], in bytes.
pub const MAX_OBJECT_ID_LEN: usize = 256;

/// The authenticated context a wrapped value is bound to: `{org_id, purpose, object_id}`.
///
/// A value wrapped under one context decrypts under exactly that context, so a wrapped key
/// copied to another org's row, another purpose or another object fails with
/// [`Error::Denied`]. The context is not secret: AWS KMS records it in CloudTrail in clear, so
/// `object_id` must be an identifier (`"<credential_id>/v3"`), never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptionContext {
    org_id: OrgId,
    purpose: Purpose,
    object_id: String,
}

impl EncryptionContext {
    /// Builds a context. `object_id` must be 1..=256 bytes with no control characters.
    pub fn new(
        org_id: OrgId,
        purpose: Purpose,
        object_id: impl Into<String>,
    ) -> Result<Self, Error> {
        let object_id = object_id.into();
        if object_id.is_empty() || object_id.len() > MAX_OBJECT_ID_LEN {
            return Err(Error::InvalidArgument(format!(
                "encryption context object_id is {} bytes; it must be 1..={MAX_OBJECT_ID_LEN}",
                object_id.len()
            )));
        }
        if object_id.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(
                "encryption context object_id contains a control character".to_owned(),
            ));
        }
        Ok(Self {
            org_id,
            purpose,
            object_id,
        })
    }

    /// The org the wrapped value belongs to.
    pub fn org_id(&self) -> OrgId {
        self.org_id
    }

    /// What the wrapped value is for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Which object (credential version, org key, CA, signing key) the value belongs to.
    pub fn object_id(&self) -> &str {
        &self.object_id
    }

    /// The canonical AWS KMS form: the map `{org_id, purpose, object_id}`.
    pub fn to_aws_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("org_id".to_owned(), self.org_id.to_string()),
            ("purpose".to_owned(), self.purpose.as_str().to_owned()),
            ("object_id".to_owned(), self.object_id.clone()),
        ])
    }

    /// The canonical local form: a deterministic byte string used as AES-GCM associated data.
    ///
    /// `"coffer-kms-local" || version || lp(key_id) || lp(org_id as 16 bytes) || lp(purpose)
    /// || lp(object_id)`, where `lp(x)` is `x`'s length as a big-endian `u32` followed by `x`.
    /// Length prefixes make the encoding injective: no two different contexts (or key ids)
    /// produce the same bytes, whatever characters the fields hold. The key id is included so a
    /// ciphertext cannot be relabelled as belonging to another master key.
    pub fn to_local_aad(&self, format_version: u8, key_id: &KeyId) -> Vec<u8> {
        const DOMAIN: &[u8] = b"coffer-kms-local";
        let mut aad = Vec::with_capacity(
            DOMAIN.len() + 1 + 4 * 4 + key_id.as_str().len() + 16 + 16 + self.object_id.len(),
        );
        aad.extend_from_slice(DOMAIN);
        aad.push(format_version);
        for field in [
            key_id.as_str().as_bytes(),
            self.org_id.as_uuid().as_bytes().as_slice(),
            self.purpose.as_str().as_bytes(),
            self.object_id.as_bytes(),
        ] {
            let len = u32::try_from(field.len()).expect("fields are bounded far below 4 GiB");
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(field);
        }
        aad
    }
}

impl fmt::Display for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "org_id={} purpose={} object_id={}",
            self.org_id, self.purpose, self.object_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> OrgId {
        "0190d3c4-7a6b-7c1e-9f00-000000000007".parse().unwrap()
    }

    fn ctx(purpose: Purpose, object_id: &str) -> EncryptionContext {
        EncryptionContext::new(org(), purpose, object_id).unwrap()
    }

    #[test]
    fn purpose_names_are_stable_and_match_serde() {
        let names: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names,
            ["credential_dek", "org_age_key", "ca_key", "signing_key"]
        );
        for purpose in Purpose::ALL {
            let json = serde_json::to_string(&purpose).unwrap();
            assert_eq!(json, format!("\"{}\"", purpose.as_str()));
        }
    }

    #[test]
    fn aws_map_has_exactly_the_three_fields() {
        let map = ctx(Purpose::CaKey, "ca/root").to_aws_map();
        assert_eq!(map.len(), 3);
        assert_eq!(map["org_id"], org().to_string());
        assert_eq!(map["purpose"], "ca_key");
        assert_eq!(map["object_id"], "ca/root");
    }

    #[test]
    fn local_aad_is_deterministic_and_binds_every_field() {
        let key = KeyId::new("k1");
        let base = ctx(Purpose::CredentialDek, "cred/v1");
        assert_eq!(base.to_local_aad(1, &key), base.to_local_aad(1, &key));

        let variants = [
            base.to_local_aad(2, &key),
            base.to_local_aad(1, &KeyId::new("k2")),
            EncryptionContext::new(OrgId::new(), Purpose::CredentialDek, "cred/v1")
                .unwrap()
                .to_local_aad(1, &key),
            ctx(Purpose::SigningKey, "cred/v1").to_local_aad(1, &key),
            ctx(Purpose::CredentialDek, "cred/v2").to_local_aad(1, &key),
        ];
        for other in variants {
            assert_ne!(base.to_local_aad(1, &key), other);
        }
    }

    #[test]
    fn local_aad_length_prefixes_keep_field_boundaries() {
        // Moving a character across the key id / object id boundary must change the bytes.
        let a = ctx(Purpose::CaKey, "xy").to_local_aad(1, &KeyId::new("k"));
        let b = ctx(Purpose::CaKey, "y").to_local_aad(1, &KeyId::new("kx"));
        assert_ne!(a, b);
    }

    #[test]
    fn object_id_is_validated() {
        for bad in [
            String::new(),
            "a".repeat(MAX_OBJECT_ID_LEN + 1),
            "a\nb".to_owned(),
        ] {
            let err = EncryptionContext::new(org(), Purpose::CaKey, bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        }
        EncryptionContext::new(org(), Purpose::CaKey, "a".repeat(MAX_OBJECT_ID_LEN)).unwrap();
    }
}
