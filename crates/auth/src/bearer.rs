//! Authenticating a request's bearer token: verify the access token, then consult the
//! revocation set, and produce the [`Principal`] that [`crate::authorize`] judges.
//!
//! Independent of tonic: the gRPC layer extracts the `authorization` metadata value, calls
//! [`token_from_authorization`] and [`Authenticator::authenticate`], and maps [`Error`] to a
//! status: [`Error::NotReady`] to `UNAVAILABLE`, everything else to `UNAUTHENTICATED`.

use std::time::SystemTime;

use crate::Principal;
use crate::revocation::Revocations;
use crate::token::{self, Subject};

/// Why a bearer token does not authenticate. The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The token itself is invalid: malformed, expired, wrongly signed, not for us.
    #[error(transparent)]
    Token(#[from] token::Error),
    /// The API key the token speaks for has been revoked.
    #[error("api key has been revoked")]
    ApiKeyRevoked,
    /// The user the token speaks for is suspended in the token's org.
    #[error("user is suspended")]
    UserSuspended,
    /// The revocation set has not finished loading, so a revoked token could slip through.
    /// Retry shortly (`UNAVAILABLE`).
    #[error("revocations are not loaded yet")]
    NotReady,
}

/// Verifies bearer tokens and checks them against the revocation set.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: token::Verifier,
    revocations: Revocations,
}

impl Authenticator {
    /// An authenticator using `tokens` for signatures and claims and `revocations` for
    /// revoked API keys and suspended users.
    pub fn new(tokens: token::Verifier, revocations: Revocations) -> Self {
        Authenticator {
            tokens,
            revocations,
        }
    }

    /// The principal `token` authenticates at time `now`.
    ///
    /// Refuses until the revocation set has loaded ([`Error::NotReady`]); after that a revoked
    /// key or a suspended user is refused as soon as the watch has delivered the change.
    pub fn authenticate(&self, token: &str, now: SystemTime) -> Result<Principal, Error> {
        if !self.revocations.is_synced() {
            return Err(Error::NotReady);
        }
        let claims = self.tokens.verify(token, now)?;
        match claims.subject {
            Subject::ApiKey(key) if self.revocations.is_api_key_revoked(key) => {
                Err(Error::ApiKeyRevoked)
            }
            Subject::User(user) if self.revocations.is_user_suspended(claims.org, user) => {
                Err(Error::UserSuspended)
            }
            _ => Ok(claims.principal()),
        }
    }
}

/// The token in an `authorization` header value of the form `Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110 §11.1), or `None` for any other form.
pub fn token_from_authorization(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_matches(' ');
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token.contains(|c: char| c.is_ascii_whitespace());
    well_formed.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_extracted_from_the_authorization_header() {
        assert_eq!(
            token_from_authorization("Bearer abc.def.ghi"),
            Some("abc.def.ghi")
        );
        assert_eq!(token_from_authorization("bearer abc"), Some("abc"));
        assert_eq!(token_from_authorization("BEARER  abc "), Some("abc"));
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "Bearer a b",
            "abc",
        ] {
            assert_eq!(token_from_authorization(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn errors_say_why_without_the_token() {
        assert_eq!(Error::ApiKeyRevoked.to_string(), "api key has been revoked");
        assert_eq!(
            Error::Token(token::Error::Expired).to_string(),
            "access token has expired"
        );
    }
}
