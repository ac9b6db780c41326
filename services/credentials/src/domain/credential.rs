//! The Credential aggregate: a named secret of an org, stored as numbered versions.
//!
//! The aggregate decides names, purposes and version numbers. The values themselves never
//! enter it: each version's ciphertext and wrapped data key are written by the application to
//! the secret table in the same transaction as the `CredentialValueSet` event.

use coffer_eventstore::Aggregate;

use super::{FieldError, clean_reason};

/// Longest credential name.
pub const MAX_NAME_CHARS: usize = 128;
/// Largest value, in bytes (64 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// What a credential is for. Bound into nothing cryptographic; it tells other services which
/// kind of secret a vault reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A database password or connection secret.
    Database,
    /// Storage destination keys (S3 access key, and the like).
    Storage,
    /// An SSH private key.
    Ssh,
    /// Anything else.
    Generic,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 4] = [
        Purpose::Database,
        Purpose::Storage,
        Purpose::Ssh,
        Purpose::Generic,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Database => "database",
            Purpose::Storage => "storage",
            Purpose::Ssh => "ssh",
            Purpose::Generic => "generic",
        }
    }

    /// Parses a wire name; the error names the field and the allowed values.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                FieldError::new("purpose", "must be one of database, storage, ssh, generic")
            })
    }
}

/// Checks a credential name: 1..=128 characters of `a-z 0-9 . _ - /`, not starting or ending
/// with `/`. Names read like paths (`prod/orders-db`), as in Vault.
pub fn check_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
    if !name.chars().all(allowed) {
        return Err(FieldError::new(
            "name",
            "may hold only lowercase letters, digits and . _ - /",
        ));
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(FieldError::new(
            "name",
            "must not start or end with / or contain //",
        ));
    }
    Ok(name.to_owned())
}

/// Checks a value's length (the value itself never reaches the aggregate).
pub fn check_value_len(len: usize) -> Result<u32, FieldError> {
    if len == 0 {
        return Err(FieldError::new("value", "must not be empty"));
    }
    if len > MAX_VALUE_BYTES {
        return Err(FieldError::new(
            "value",
            format!("must be at most {MAX_VALUE_BYTES} bytes, got {len}"),
        ));
    }
    Ok(u32::try_from(len).expect("at most 64 KiB"))
}

/// State of one credential.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Whether `CredentialCreated` happened.
    pub created: bool,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub purpose: Option<Purpose>,
    /// The current version; 0 before the first value.
    pub version: u32,
}

/// A version's value, as far as the aggregate knows it: its size and the master key that
/// wraps its data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueVersion {
    /// The version number: the current one plus one.
    pub version: u32,
    /// The value's length in bytes.
    pub value_bytes: u32,
    /// The KMS master key its data key is wrapped under.
    pub kms_key_id: String,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum CredentialCommand {
    /// Create the credential with its first value (version 1).
    CreateCredential {
        /// Its name (already checked by [`check_name`] and for uniqueness by the caller).
        name: String,
        /// What it is for.
        purpose: Purpose,
        /// Version 1.
        value: ValueVersion,
    },
    /// Store a new value.
    ReplaceValue {
        /// The next version.
        value: ValueVersion,
    },
    /// Delete it; every stored version is destroyed with it.
    DeleteCredential {
        /// Why, for the audit log.
        reason: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialEvent {
    /// It was created (always followed by its first `CredentialValueSet`).
    CredentialCreated {
        /// Its name.
        name: String,
        /// What it is for.
        purpose: Purpose,
    },
    /// A new version of the value was stored.
    CredentialValueSet(ValueVersion),
    /// It was deleted.
    CredentialDeleted {
        /// Why.
        reason: String,
    },
}

/// Why a credential command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such credential, or it was deleted (NotFound).
    #[error("credential not found")]
    NotFound,
    /// The id is taken (AlreadyExists).
    #[error("credential already exists")]
    AlreadyExists,
    /// Another change got there first (Aborted): the version is not the next one.
    #[error("credential changed concurrently; retry")]
    VersionMismatch,
}

impl Aggregate for Credential {
    const TYPE: &'static str = "Credential";
    type Command = CredentialCommand;
    type Event = CredentialEvent;
    type Error = CredentialError;

    fn decide(&self, command: CredentialCommand) -> Result<Vec<CredentialEvent>, CredentialError> {
        match command {
            CredentialCommand::CreateCredential {
                name,
                purpose,
                value,
            } => {
                if self.created {
                    return Err(CredentialError::AlreadyExists);
                }
                let name = check_name(&name)?;
                if value.version != 1 {
                    return Err(CredentialError::VersionMismatch);
                }
                Ok(vec![
                    CredentialEvent::CredentialCreated { name, purpose },
                    CredentialEvent::CredentialValueSet(value),
                ])
            }
            CredentialCommand::ReplaceValue { value } => {
                self.live()?;
                if value.version != self.version + 1 {
                    return Err(CredentialError::VersionMismatch);
                }
                Ok(vec![CredentialEvent::CredentialValueSet(value)])
            }
            CredentialCommand::DeleteCredential { reason } => {
                self.live()?;
                let reason = if reason.trim().is_empty() {
                    String::new()
                } else {
                    clean_reason(&reason)?
                };
                Ok(vec![CredentialEvent::CredentialDeleted { reason }])
            }
        }
    }

    fn evolve(mut self, event: &CredentialEvent) -> Self {
        match event {
            CredentialEvent::CredentialCreated { name, purpose } => {
                self.created = true;
                self.name = name.clone();
                self.purpose = Some(*purpose);
            }
            CredentialEvent::CredentialValueSet(value) => self.version = value.version,
            CredentialEvent::CredentialDeleted { .. } => self.deleted = true,
        }
        self
    }
}

impl Credential {
    fn live(&self) -> Result<(), CredentialError> {
        if self.created && !self.deleted {
            Ok(())
        } else {
            Err(CredentialError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_eventstore::replay;

    use super::*;

    fn v(version: u32) -> ValueVersion {
        ValueVersion {
            version,
            value_bytes: 12,
            kms_key_id: "master-1".into(),
        }
    }

    fn created() -> Credential {
        replay::<Credential>(&[
            CredentialEvent::CredentialCreated {
                name: "prod/orders-db".into(),
                purpose: Purpose::Database,
            },
            CredentialEvent::CredentialValueSet(v(1)),
        ])
    }

    #[test]
    fn given_nothing_when_created_then_created_with_version_one() {
        let events = Credential::default()
            .decide(CredentialCommand::CreateCredential {
                name: " prod/orders-db ".into(),
                purpose: Purpose::Database,
                value: v(1),
            })
            .unwrap();
        assert_eq!(
            events,
            vec![
                CredentialEvent::CredentialCreated {
                    name: "prod/orders-db".into(),
                    purpose: Purpose::Database
                },
                CredentialEvent::CredentialValueSet(v(1)),
            ]
        );
    }

    #[test]
    fn given_a_credential_when_replaced_then_the_next_version_only() {
        let state = created();
        assert_eq!(
            state
                .decide(CredentialCommand::ReplaceValue { value: v(2) })
                .unwrap(),
            vec![CredentialEvent::CredentialValueSet(v(2))]
        );
        for stale in [1, 3] {
            assert_eq!(
                state.decide(CredentialCommand::ReplaceValue { value: v(stale) }),
                Err(CredentialError::VersionMismatch)
            );
        }
    }

    #[test]
    fn given_a_deleted_credential_then_it_is_not_found() {
        let state = created().evolve(&CredentialEvent::CredentialDeleted {
            reason: String::new(),
        });
        assert_eq!(
            state.decide(CredentialCommand::ReplaceValue { value: v(2) }),
            Err(CredentialError::NotFound)
        );
        assert_eq!(
            state.decide(CredentialCommand::DeleteCredential {
                reason: "again".into()
            }),
            Err(CredentialError::NotFound)
        );
        assert_eq!(
            Credential::default().decide(CredentialCommand::DeleteCredential {
                reason: String::new()
            }),
            Err(CredentialError::NotFound)
        );
    }

    #[test]
    fn names_look_like_paths() {
        for good in ["db", "prod/orders-db", "s3.backups_2026"] {
            assert_eq!(check_name(good).unwrap(), good);
        }
        for (bad, rule) in [
            ("", "name must not be empty"),
            (
                "Prod",
                "name may hold only lowercase letters, digits and . _ - /",
            ),
            (
                "a b",
                "name may hold only lowercase letters, digits and . _ - /",
            ),
            ("/abs", "name must not start or end with / or contain //"),
            ("a//b", "name must not start or end with / or contain //"),
        ] {
            assert_eq!(check_name(bad).unwrap_err().to_string(), rule, "{bad:?}");
        }
        assert!(check_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn values_are_one_byte_to_64_kib() {
        assert_eq!(check_value_len(1).unwrap(), 1);
        assert_eq!(check_value_len(65_536).unwrap(), 65_536);
        assert_eq!(
            check_value_len(0).unwrap_err().to_string(),
            "value must not be empty"
        );
        assert_eq!(
            check_value_len(65_537).unwrap_err().to_string(),
            "value must be at most 65536 bytes, got 65537"
        );
    }

    #[test]
    fn purposes_parse_from_their_wire_names_only() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()).unwrap(), p);
        }
        assert_eq!(
            Purpose::parse("kms").unwrap_err().to_string(),
            "purpose must be one of database, storage, ssh, generic"
        );
    }
}
