//! Identifier newtypes and small value types shared by every Coffer crate.
//!
//! Every id is a UUIDv7 (time-ordered, so B-tree inserts stay local) wrapped in its own type,
//! so an `OrgId` can never be passed where an `AgentId` is expected. All id types are made by
//! one macro, [`define_id!`].

use std::fmt;
use std::str::FromStr;

mod field;
pub mod vault_ref;

pub use field::{FieldError, clean_name};
pub use vault_ref::VaultRef;

/// Error returned when a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be a UUID, got {len} characters that do not parse")]
pub struct ParseIdError {
    /// The id type that failed to parse, e.g. `OrgId`.
    pub kind: &'static str,
    /// Length of the rejected input (the input itself is not echoed: it may be anything).
    pub len: usize,
}

/// Defines a UUIDv7 newtype with `new()`, `Display`, `FromStr`, serde and conversions.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered (v7) id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(id: uuid::Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &uuid::Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self).map_err(|_| $crate::ParseIdError {
                    kind: stringify!($name),
                    len: s.len(),
                })
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

define_id!(
    /// A customer organisation: the tenant boundary.
    OrgId
);
define_id!(
    /// One event in an aggregate's stream.
    EventId
);
define_id!(
    /// The identity of an aggregate instance (its stream id).
    AggregateId
);

define_id!(
    /// A person: a member of one or more orgs.
    UserId
);
define_id!(
    /// An integrator's API key.
    ApiKeyId
);
define_id!(
    /// An enrolled agent: the last segment of its SPIFFE id.
    AgentId
);
define_id!(
    /// A single-use token an agent enrolls with.
    EnrollmentTokenId
);
define_id!(
    /// A credential in an org's vault (its value is never returned to users).
    CredentialId
);
define_id!(
    /// A database registered as a backup target.
    DatabaseId
);
define_id!(
    /// A storage destination backups are written to.
    DestinationId
);
define_id!(
    /// A backup schedule: a database, a destination, a cron expression and a retention policy.
    ScheduleId
);
define_id!(
    /// One backup or restore job.
    JobId
);

impl OrgId {
    /// The platform pseudo-org: events that belong to no customer (platform bootstrap, CA root).
    pub const PLATFORM: OrgId = OrgId(uuid::Uuid::nil());
}

/// Who caused an event. Recorded on every event so the audit log can say who did what.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Actor {
    /// What kind of principal acted.
    pub kind: ActorKind,
    /// The principal's id within its kind (user id, API key id, agent id, service name).
    pub id: String,
}

impl Actor {
    /// An internal Coffer service acting on its own behalf.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::Service,
            id: name.into(),
        }
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Kinds of principal (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person, signed in through OIDC or locally.
    User,
    /// An integrator's API key.
    ApiKey,
    /// An enrolled agent, authenticated by its mTLS certificate.
    Agent,
    /// A Coffer service acting on its own.
    Service,
}

impl ActorKind {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Agent => "agent",
            ActorKind::Service => "service",
        }
    }
}

/// Error parsing an [`ActorKind`] or [`Actor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("actor must be `<kind>:<id>` with kind one of user, api_key, agent, service")]
pub struct ParseActorError;

impl FromStr for ActorKind {
    type Err = ParseActorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(ActorKind::User),
            "api_key" => Ok(ActorKind::ApiKey),
            "agent" => Ok(ActorKind::Agent),
            "service" => Ok(ActorKind::Service),
            _ => Err(ParseActorError),
        }
    }
}

impl FromStr for Actor {
    type Err = ParseActorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once(':').ok_or(ParseActorError)?;
        if id.is_empty() {
            return Err(ParseActorError);
        }
        Ok(Actor {
            kind: kind.parse()?,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings() {
        let id = OrgId::new();
        assert_eq!(id.to_string().parse::<OrgId>().unwrap(), id);
    }

    #[test]
    fn a_bad_id_names_its_type_and_does_not_echo_input() {
        let err = "not-a-uuid".parse::<OrgId>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("OrgId must be a UUID"), "{msg}");
        assert!(!msg.contains("not-a-uuid"));
    }

    #[test]
    fn v7_ids_sort_by_creation() {
        let a = EventId::new();
        let b = EventId::new();
        assert!(a < b);
    }

    #[test]
    fn actors_parse_and_print() {
        let a: Actor = "api_key:k_123".parse().unwrap();
        assert_eq!(a.kind, ActorKind::ApiKey);
        assert_eq!(a.to_string(), "api_key:k_123");
        assert!("robot:x".parse::<Actor>().is_err());
        assert!("user:".parse::<Actor>().is_err());
    }
}
