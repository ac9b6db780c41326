//! Bearer secrets the enrollment service hands out: API keys (`coffer_` + 40 base62
//! characters, about 238 bits from the OS CSPRNG) and agent enrollment tokens
//! (`coffer_enroll_` + 40). Shown once at creation; stored only as SHA-256 plus a short
//! display prefix.
//!
//! Lookup is by the secret's hash (an indexed equality on `secret_sha256`), so no code path
//! ever compares a presented secret with a stored one byte by byte: a constant-time
//! comparison would protect nothing here, and there is none.

use std::marker::PhantomData;

use rand::Rng;
use rand::distributions::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Every API key starts with this, so leaked keys are easy to recognise and scan for.
pub const PREFIX: &str = "coffer_";
/// Every enrollment token starts with this.
pub const ENROLLMENT_PREFIX: &str = "coffer_enroll_";
/// Random characters after the prefix.
pub const RANDOM_CHARS: usize = 40;
/// Fewest random characters a presented secret may have.
pub const MIN_RANDOM_CHARS: usize = 32;
/// Length of an API key's display prefix kept in lists.
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// What kind of secret: its prefix and how much of it lists show.
pub trait Kind {
    /// The fixed prefix.
    const PREFIX: &'static str;
    /// Characters kept as the display prefix.
    const DISPLAY_LEN: usize;
    /// For messages.
    const NAME: &'static str;
}

/// API keys.
#[derive(Debug)]
pub enum ApiKeyKind {}

impl Kind for ApiKeyKind {
    const PREFIX: &'static str = PREFIX;
    const DISPLAY_LEN: usize = DISPLAY_PREFIX_LEN;
    const NAME: &'static str = "api key";
}

/// Agent enrollment tokens.
#[derive(Debug)]
pub enum EnrollmentKind {}

impl Kind for EnrollmentKind {
    const PREFIX: &'static str = ENROLLMENT_PREFIX;
    // The prefix plus six random characters, enough to tell tokens apart in a list.
    const DISPLAY_LEN: usize = ENROLLMENT_PREFIX.len() + 6;
    const NAME: &'static str = "enrollment token";
}

/// A presented secret is not of the right shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be `{prefix}` followed by at least 32 letters and digits")]
pub struct MalformedKey {
    name: &'static str,
    prefix: &'static str,
}

/// A secret of kind `K`. Never printed: `Debug` shows only the display prefix.
pub struct Secret<K: Kind>(SecretString, PhantomData<K>);

/// An API key secret.
pub type ApiKeySecret = Secret<ApiKeyKind>;
/// An enrollment token secret.
pub type EnrollmentTokenSecret = Secret<EnrollmentKind>;

impl<K: Kind> std::fmt::Debug for Secret<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}…)", self.display_prefix())
    }
}

impl<K: Kind> Secret<K> {
    /// A fresh secret.
    pub fn generate() -> Self {
        let random: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(RANDOM_CHARS)
            .map(char::from)
            .collect();
        Self(
            SecretString::from(format!("{}{random}", K::PREFIX)),
            PhantomData,
        )
    }

    /// Checks the shape of a presented secret.
    pub fn parse(presented: &str) -> Result<Self, MalformedKey> {
        let malformed = MalformedKey {
            name: K::NAME,
            prefix: K::PREFIX,
        };
        let random = presented.strip_prefix(K::PREFIX).ok_or(malformed.clone())?;
        if random.len() < MIN_RANDOM_CHARS || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(malformed);
        }
        Ok(Self(SecretString::from(presented.to_owned()), PhantomData))
    }

    /// The value to show the user, once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// SHA-256 of the whole secret: what is stored and looked up.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }

    /// The first characters, for recognising a secret in lists.
    pub fn display_prefix(&self) -> String {
        self.0
            .expose_secret()
            .chars()
            .take(K::DISPLAY_LEN)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_parse_back() {
        let k = ApiKeySecret::generate();
        assert_eq!(k.expose().len(), PREFIX.len() + RANDOM_CHARS);
        assert!(k.expose().starts_with("coffer_"));
        assert_eq!(k.display_prefix().len(), 12);
        assert_eq!(
            ApiKeySecret::parse(k.expose()).unwrap().sha256(),
            k.sha256()
        );
        let t = EnrollmentTokenSecret::generate();
        assert!(t.expose().starts_with("coffer_enroll_"));
        assert_eq!(t.display_prefix().len(), 20);
        assert!(EnrollmentTokenSecret::parse(t.expose()).is_ok());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            ApiKeySecret::generate().sha256(),
            ApiKeySecret::generate().sha256()
        );
    }

    #[test]
    fn malformed_keys_are_refused_and_kinds_do_not_mix() {
        let token = EnrollmentTokenSecret::generate();
        let key = ApiKeySecret::generate();
        for bad in [
            "",
            "coffer_",
            "coffer_short",
            "vault_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &format!("coffer_{}!", "a".repeat(40)),
            token.expose(),
        ] {
            let err = ApiKeySecret::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                "api key must be `coffer_` followed by at least 32 letters and digits",
                "{bad}"
            );
        }
        assert!(EnrollmentTokenSecret::parse(key.expose()).is_err());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = ApiKeySecret::generate();
        let d = format!("{k:?}");
        assert!(!d.contains(&k.expose()[DISPLAY_PREFIX_LEN..]), "{d}");
    }
}
