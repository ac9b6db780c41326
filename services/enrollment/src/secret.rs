//! API key secrets: `coffer_` followed by 40 base62 characters (about 238 bits) from the OS
//! CSPRNG. Shown once at creation; stored only as SHA-256 plus a 12-character display
//! prefix.
//!
//! Lookup is by the secret's hash (an indexed equality on `secret_sha256`), so no code path
//! ever compares a presented secret with a stored one byte by byte: a constant-time
//! comparison would protect nothing here, and there is none.

use rand::Rng;
use rand::distributions::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Every key starts with this, so leaked keys are easy to recognise and scan for.
pub const PREFIX: &str = "coffer_";
/// Random characters after the prefix.
pub const RANDOM_CHARS: usize = 40;
/// Fewest random characters a presented key may have.
pub const MIN_RANDOM_CHARS: usize = 32;
/// Length of the display prefix kept in lists.
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// A presented API key is not of the right shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("api key must be `coffer_` followed by at least 32 letters and digits")]
pub struct MalformedKey;

/// An API key secret. Never printed: `Debug` shows only the display prefix.
pub struct ApiKeySecret(SecretString);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

impl ApiKeySecret {
    /// A fresh secret.
    pub fn generate() -> Self {
        let random: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(RANDOM_CHARS)
            .map(char::from)
            .collect();
        Self(SecretString::from(format!("{PREFIX}{random}")))
    }

    /// Checks the shape of a presented key.
    pub fn parse(presented: &str) -> Result<Self, MalformedKey> {
        let random = presented.strip_prefix(PREFIX).ok_or(MalformedKey)?;
        if random.len() < MIN_RANDOM_CHARS || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedKey);
        }
        Ok(Self(SecretString::from(presented.to_owned())))
    }

    /// The value to show the user, once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// SHA-256 of the whole secret: what is stored and looked up.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }

    /// The first 12 characters, for recognising a key in lists.
    pub fn display_prefix(&self) -> String {
        self.0
            .expose_secret()
            .chars()
            .take(DISPLAY_PREFIX_LEN)
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
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            ApiKeySecret::generate().sha256(),
            ApiKeySecret::generate().sha256()
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "coffer_",
            "coffer_short",
            "vault_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &format!("coffer_{}!", "a".repeat(40)),
        ] {
            assert_eq!(ApiKeySecret::parse(bad).unwrap_err(), MalformedKey, "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = ApiKeySecret::generate();
        let d = format!("{k:?}");
        assert!(!d.contains(&k.expose()[DISPLAY_PREFIX_LEN..]), "{d}");
    }
}
