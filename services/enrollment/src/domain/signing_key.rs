//! The SigningKey aggregate: an Ed25519 key that signs access tokens. The private half exists
//! here only wrapped by the KMS master key.

use coffer_eventstore::Aggregate;

use super::FieldError;

/// State of one signing key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Whether `SigningKeyCreated` happened.
    pub created: bool,
    /// The JWS key id.
    pub kid: String,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum SigningKeyCommand {
    /// Record a freshly generated key.
    CreateSigningKey {
        /// The JWS key id, derived from the public key.
        kid: String,
        /// The Ed25519 public key.
        public_key: [u8; 32],
        /// The private key wrapped by the KMS master key.
        wrapped_private_key: Vec<u8>,
        /// The master key that wrapped it.
        kms_key_id: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKeyEvent {
    /// A key was created.
    SigningKeyCreated {
        /// The JWS key id.
        kid: String,
        /// The Ed25519 public key.
        public_key: [u8; 32],
        /// The wrapped private key.
        wrapped_private_key: Vec<u8>,
        /// The master key that wrapped it.
        kms_key_id: String,
    },
}

/// Why a signing key command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    /// A field broke a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The id is taken.
    #[error("signing key already exists")]
    AlreadyExists,
}

impl Aggregate for SigningKey {
    const TYPE: &'static str = "SigningKey";
    type Command = SigningKeyCommand;
    type Event = SigningKeyEvent;
    type Error = SigningKeyError;

    fn decide(&self, command: SigningKeyCommand) -> Result<Vec<SigningKeyEvent>, SigningKeyError> {
        match command {
            SigningKeyCommand::CreateSigningKey {
                kid,
                public_key,
                wrapped_private_key,
                kms_key_id,
            } => {
                if self.created {
                    return Err(SigningKeyError::AlreadyExists);
                }
                if kid.is_empty() || kid.len() > 64 {
                    return Err(FieldError::new("kid", "must be 1..=64 characters").into());
                }
                if wrapped_private_key.is_empty() {
                    return Err(FieldError::new("wrapped_private_key", "must not be empty").into());
                }
                Ok(vec![SigningKeyEvent::SigningKeyCreated {
                    kid,
                    public_key,
                    wrapped_private_key,
                    kms_key_id,
                }])
            }
        }
    }

    fn evolve(mut self, event: &SigningKeyEvent) -> Self {
        match event {
            SigningKeyEvent::SigningKeyCreated { kid, .. } => {
                self.created = true;
                self.kid = kid.clone();
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> SigningKeyCommand {
        SigningKeyCommand::CreateSigningKey {
            kid: "k1".into(),
            public_key: [7; 32],
            wrapped_private_key: vec![1, 2, 3],
            kms_key_id: "master".into(),
        }
    }

    #[test]
    fn a_key_is_created_once() {
        let events = SigningKey::default().decide(create()).unwrap();
        let state = events
            .iter()
            .fold(SigningKey::default(), |s, e| s.evolve(e));
        assert_eq!(state.kid, "k1");
        assert_eq!(state.decide(create()), Err(SigningKeyError::AlreadyExists));
    }

    #[test]
    fn an_unwrapped_key_is_refused() {
        let command = SigningKeyCommand::CreateSigningKey {
            kid: "k1".into(),
            public_key: [7; 32],
            wrapped_private_key: vec![],
            kms_key_id: "master".into(),
        };
        assert_eq!(
            SigningKey::default()
                .decide(command)
                .unwrap_err()
                .to_string(),
            "wrapped_private_key must not be empty"
        );
    }
}
