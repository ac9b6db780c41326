use std::fmt;
use std::str::FromStr;

/// A member's role in an org. What each role may do is decided by [`crate::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including exporting the recovery key and granting or revoking ownership.
    Owner,
    /// Everything except exporting the recovery key and changing owners.
    Admin,
    /// Day-to-day operations: reads (except audit), running jobs and restores, agents.
    Operator,
    /// Read-only, including the audit log and its export.
    Auditor,
    /// Read-only, without audit and credential metadata.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::Operator,
        Role::Auditor,
        Role::Viewer,
    ];

    /// The stable wire name, e.g. `"owner"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a string is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role must be one of owner, admin, operator, auditor, viewer")]
pub struct ParseRoleError;

impl FromStr for Role {
    type Err = ParseRoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(ParseRoleError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_through_its_name_and_serde() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
    }

    #[test]
    fn role_all_lists_every_variant_once() {
        // Exhaustive: a new variant fails to compile here until it is added to `Role::ALL`.
        let index = |r: Role| match r {
            Role::Owner => 0,
            Role::Admin => 1,
            Role::Operator => 2,
            Role::Auditor => 3,
            Role::Viewer => 4,
        };
        for (i, r) in Role::ALL.into_iter().enumerate() {
            assert_eq!(index(r), i);
        }
    }

    #[test]
    fn an_unknown_role_names_the_rule() {
        let err = "Owner".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "role must be one of owner, admin, operator, auditor, viewer"
        );
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
    }
}
