//! Access tokens: the signing key (stored only wrapped by KMS), issuance, the published key
//! set, and propagation of revocations and suspensions to every service.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use coffer_auth::Role;
use coffer_auth::revocation::Revocations;
use coffer_auth::token::{AccessClaims, Jwks, Signer, Subject, Verifier};
use coffer_db::Database;
use coffer_eventstore::{EventStore, ExecuteError};
use coffer_kms::{EncryptionContext, Kms, Purpose, WrappedKey};
use coffer_types::{Actor, AggregateId, ApiKeyId, OrgId, UserId};
use rand::RngCore;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::app::Error;
use crate::domain::signing_key::{SigningKey, SigningKeyCommand, SigningKeyError};
use crate::store::{self, ApiKeyView};

/// How access tokens are minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The `iss` claim: this deployment.
    pub issuer: String,
    /// The `aud` claim: the Coffer API.
    pub audience: String,
    /// How long a token lives.
    pub lifetime: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "coffer".to_owned(),
            audience: "coffer".to_owned(),
            lifetime: coffer_auth::token::DEFAULT_LIFETIME,
        }
    }
}

/// A freshly issued access token.
#[derive(Debug)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: SecretString,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The org it acts in.
    pub org: OrgId,
    /// The role it acts with.
    pub role: Role,
}

/// Issues access tokens and publishes revocations.
pub struct Tokens {
    settings: TokenSettings,
    signer: Signer,
    jwks: Jwks,
    revocations: Revocations,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("kid", &self.signer.kid())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn signing_context(id: AggregateId) -> Result<EncryptionContext, Error> {
    EncryptionContext::new(OrgId::PLATFORM, Purpose::SigningKey, id.to_string())
        .map_err(|e| Error::Unavailable(format!("cannot build the KMS context: {e}")))
}

fn kms_error(what: &str, e: coffer_kms::Error) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

impl Tokens {
    /// Loads the newest signing key (unwrapping it through KMS) and the public keys of every
    /// unretired one.
    pub async fn load(
        db: &Database,
        kms: &dyn Kms,
        settings: TokenSettings,
        revocations: Revocations,
    ) -> Result<Self, Error> {
        let mut tx = db.begin_tenant(OrgId::PLATFORM).await?;
        let rows = store::signing_keys(&mut tx).await?;
        drop(tx);
        let newest = rows.first().ok_or_else(|| {
            Error::FailedPrecondition(
                "no access-token signing key exists; run `coffer admin init`".to_owned(),
            )
        })?;
        let wrapped = WrappedKey {
            key_id: coffer_kms::KeyId::new(newest.kms_key_id.clone()),
            ciphertext: newest.wrapped_private_key.clone(),
        };
        let ctx = signing_context(AggregateId::from(newest.signing_key_id))?;
        let seed = kms
            .decrypt_bytes(&wrapped, &ctx)
            .await
            .map_err(|e| kms_error("unwrap the access-token signing key", e))?;
        let signer = Signer::from_seed(secrecy::ExposeSecret::expose_secret(&seed))
            .map_err(|e| Error::FailedPrecondition(format!("stored signing key: {e}")))?;
        let mut keys = vec![signer.jwk()];
        for row in &rows[1..] {
            let public: [u8; 32] = row.public_key.as_slice().try_into().map_err(|_| {
                Error::FailedPrecondition(format!("signing key {} is not 32 bytes", row.kid))
            })?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| {
                Error::FailedPrecondition(format!("signing key {} is not Ed25519", row.kid))
            })?;
            keys.push(coffer_auth::token::Jwk::from_public_key(key));
        }
        Ok(Self {
            settings,
            signer,
            jwks: Jwks::new(keys),
            revocations,
        })
    }

    /// Generates an Ed25519 signing key, wraps it through KMS and records it (platform org).
    /// Returns its `kid`.
    pub async fn create_signing_key(
        store: &EventStore,
        kms: &dyn Kms,
        actor: &Actor,
    ) -> Result<String, Error> {
        let id = AggregateId::new();
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        let signer = Signer::from_seed(seed.as_ref())
            .map_err(|e| Error::FailedPrecondition(format!("generated signing key: {e}")))?;
        let wrapped = kms
            .encrypt(seed.as_ref(), &signing_context(id)?)
            .await
            .map_err(|e| kms_error("wrap the access-token signing key", e))?;
        let jwk = signer.jwk();
        let command = SigningKeyCommand::CreateSigningKey {
            kid: signer.kid().to_owned(),
            public_key: jwk.public_key().to_bytes(),
            wrapped_private_key: wrapped.ciphertext,
            kms_key_id: wrapped.key_id.as_str().to_owned(),
        };
        store
            .execute::<SigningKey>(OrgId::PLATFORM, id, actor, command)
            .await
            .map_err(|e| match e {
                ExecuteError::Rejected(SigningKeyError::Invalid(f)) => Error::Invalid(f),
                ExecuteError::Rejected(e @ SigningKeyError::AlreadyExists) => {
                    Error::AlreadyExists(e.to_string())
                }
                ExecuteError::Store(s) => Error::Store(s),
            })?;
        Ok(signer.kid().to_owned())
    }

    /// A token for an API key that has been checked to be usable.
    pub fn issue_for_api_key(
        &self,
        key: &ApiKeyView,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, Error> {
        let mut claims = AccessClaims::new(
            &self.settings.issuer,
            &self.settings.audience,
            Subject::ApiKey(key.key_id),
            key.org_id,
            key.role,
            now.into(),
            self.settings.lifetime,
        );
        claims.scopes = key.scopes.clone();
        // A key that expires sooner than a token would live caps the token.
        if let Some(expires_at) = key.expires_at {
            claims.exp = claims.exp.min(expires_at.timestamp());
        }
        let token = self
            .signer
            .issue(&claims)
            .map_err(|e| Error::FailedPrecondition(format!("cannot issue a token: {e}")))?;
        Ok(IssuedToken {
            token: SecretString::from(token),
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now),
            org: key.org_id,
            role: key.role,
        })
    }

    /// A token for a member signed in through an identity provider, with the role the
    /// provider's groups grant.
    pub fn issue_for_user(
        &self,
        org: OrgId,
        user: UserId,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, Error> {
        let claims = AccessClaims::new(
            &self.settings.issuer,
            &self.settings.audience,
            Subject::User(user),
            org,
            role,
            now.into(),
            self.settings.lifetime,
        );
        let token = self
            .signer
            .issue(&claims)
            .map_err(|e| Error::FailedPrecondition(format!("cannot issue a token: {e}")))?;
        Ok(IssuedToken {
            token: SecretString::from(token),
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now),
            org,
            role,
        })
    }

    /// The published key set.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The key set as RFC 7517 JSON.
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&self.jwks).expect("a key set serializes")
    }

    /// A verifier for the tokens this issuer mints.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(&self.jwks, &self.settings.issuer, &self.settings.audience)
    }

    /// The settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The revocation set every service watches.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Publishes a key revocation right after its event committed. A failure here is only
    /// logged: the revocation consumer publishes it again from the event.
    pub async fn revoke_api_key(&self, key: ApiKeyId) {
        if let Err(e) = self.revocations.revoke_api_key(key).await {
            tracing::warn!(error = %e, %key, "publish revocation; the consumer will retry");
        }
    }

    /// Publishes a certificate revocation (see [`Tokens::revoke_api_key`] on failures).
    pub async fn revoke_cert(&self, org: OrgId, serial_hex: &str) {
        let Some(serial) = crate::agents::cert_serial(serial_hex) else {
            tracing::error!(
                serial = serial_hex,
                "stored serial is not hex; not published"
            );
            return;
        };
        if let Err(e) = self.revocations.revoke_cert(org, &serial).await {
            tracing::warn!(error = %e, %serial, "publish certificate revocation; the consumer will retry");
        }
    }

    /// Publishes a suspension (see [`Tokens::revoke_api_key`] on failures).
    pub async fn suspend_user(&self, org: OrgId, user: UserId) {
        if let Err(e) = self.revocations.suspend_user(org, user).await {
            tracing::warn!(error = %e, %user, "publish suspension; the consumer will retry");
        }
    }

    /// Publishes the end of a suspension (see [`Tokens::revoke_api_key`] on failures).
    pub async fn reactivate_user(&self, org: OrgId, user: UserId) {
        if let Err(e) = self.revocations.reactivate_user(org, user).await {
            tracing::warn!(error = %e, %user, "publish reactivation; the consumer will retry");
        }
    }
}

/// Shared handle.
pub type SharedTokens = Arc<Tokens>;
