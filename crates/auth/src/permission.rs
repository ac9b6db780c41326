use std::fmt;
use std::str::FromStr;

use crate::Role;
use crate::Role::{Admin, Auditor, Operator, Owner, Viewer};

/// Defines [`Permission`], its stable names and `Permission::ALL` from one list, so `ALL`
/// cannot miss a variant.
macro_rules! permissions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// One action in the product. Which roles hold it is decided by [`roles_allowed`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Permission {
            $($(#[$doc])* $variant,)+
        }

        impl Permission {
            /// Every permission, in declaration order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)+];

            /// The stable name, `<resource>.<action>`, e.g. `"member.manage"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)+
                }
            }
        }
    };
}

permissions! {
    /// Create orgs. Held in the platform org (set up by `coffer admin init`): an org's own
    /// members cannot create other orgs, because [`crate::authorize`] checks it against the
    /// platform org.
    OrgCreate => "org.create",
    /// See the org's settings.
    OrgRead => "org.read",
    /// Change the org's settings.
    OrgUpdate => "org.update",
    /// List members and their roles.
    MemberRead => "member.read",
    /// Add, remove, change the role of, suspend and reactivate members; see also
    /// [`can_change_member`] for the owner role.
    MemberManage => "member.manage",
    /// List API keys (display prefix and metadata, never the secret).
    ApiKeyRead => "api_key.read",
    /// Create and revoke API keys.
    ApiKeyManage => "api_key.manage",
    /// List enrollment tokens.
    EnrollmentTokenRead => "enrollment_token.read",
    /// Create and revoke enrollment tokens.
    EnrollmentTokenManage => "enrollment_token.manage",
    /// List agents and their status.
    AgentRead => "agent.read",
    /// Revoke agents.
    AgentManage => "agent.manage",
    /// Fetch the certificate revocation list. Held by every role and by agents.
    CrlRead => "crl.read",
    /// Renew one's own agent certificate. Held by agents only (see
    /// [`crate::AGENT_PERMISSIONS`]), never by a role.
    AgentRenew => "agent.renew",
    /// See credential metadata (never the secret material).
    CredentialRead => "credential.read",
    /// Create, rotate and delete credentials.
    CredentialManage => "credential.manage",
    /// Export the org's recovery key. Owners only.
    RecoveryKeyExport => "recovery_key.export",
    /// Receive the credentials a job ticket names. Held by agents only (see
    /// [`crate::AGENT_PERMISSIONS`]), never by a role.
    CredentialRelease => "credential.release",
    /// Unwrap the file key of a backup a restore ticket names. Held by agents only (see
    /// [`crate::AGENT_PERMISSIONS`]), never by a role.
    FileKeyUnwrap => "file_key.unwrap",
    /// Read the org's public age recipient, which every backup is encrypted to. Held by every
    /// role and by agents.
    OrgKeyRead => "org_key.read",
    /// Rotate the KMS master key and read key coverage. Meaningful in the platform org only.
    MasterKeyManage => "master_key.manage",
    /// List databases under backup.
    DatabaseRead => "database.read",
    /// Add, change and remove databases.
    DatabaseManage => "database.manage",
    /// List backup destinations.
    DestinationRead => "destination.read",
    /// Add, change and remove backup destinations.
    DestinationManage => "destination.manage",
    /// List backup schedules.
    ScheduleRead => "schedule.read",
    /// Create, change, pause and delete schedules.
    ScheduleManage => "schedule.manage",
    /// See jobs and their history.
    JobRead => "job.read",
    /// Run a job now and cancel a running job.
    JobRun => "job.run",
    /// Start a restore.
    RestoreRun => "restore.run",
    /// Claim, heartbeat and report on one's own jobs. Held by agents only (see
    /// [`crate::AGENT_PERMISSIONS`]), never by a role.
    JobExecute => "job.execute",
    /// Read the audit log.
    AuditRead => "audit.read",
    /// Export the audit log.
    AuditExport => "audit.export",
    /// Send and read diagnostics probes.
    DiagnosticsProbe => "diagnostics.probe",
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a string is not a permission name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission must be a known `<resource>.<action>` name such as member.manage")]
pub struct ParsePermissionError;

impl FromStr for Permission {
    type Err = ParsePermissionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or(ParsePermissionError)
    }
}

const EVERYONE: &[Role] = &[Owner, Admin, Operator, Auditor, Viewer];
const READERS_OF_SECRETS_METADATA: &[Role] = &[Owner, Admin, Operator, Auditor];
const AUDITORS: &[Role] = &[Owner, Admin, Auditor];
const OPERATORS: &[Role] = &[Owner, Admin, Operator];
const ADMINS: &[Role] = &[Owner, Admin];
const OWNERS: &[Role] = &[Owner];
const NOBODY: &[Role] = &[];

/// The permission table: the roles that hold `permission`.
///
/// This `match` is the single source of truth and is exhaustive, so a new [`Permission`]
/// does not compile until someone decides who holds it. The rules:
///
/// - **owner**: everything except [`Permission::AgentRenew`],
///   [`Permission::CredentialRelease`], [`Permission::FileKeyUnwrap`] and
///   [`Permission::JobExecute`], which only agents hold.
/// - **admin**: everything except [`Permission::RecoveryKeyExport`]. Granting or revoking
///   the owner role and removing owners is further limited by [`can_change_member`].
/// - **operator**: every `*.read` except [`Permission::AuditRead`], plus
///   [`Permission::JobRun`], [`Permission::RestoreRun`], [`Permission::DiagnosticsProbe`],
///   [`Permission::AgentManage`] and [`Permission::EnrollmentTokenManage`].
/// - **auditor**: every `*.read` plus [`Permission::AuditExport`]; nothing that changes state.
/// - **viewer**: every `*.read` except [`Permission::AuditRead`] and
///   [`Permission::CredentialRead`].
pub fn roles_allowed(permission: Permission) -> &'static [Role] {
    match permission {
        Permission::OrgRead
        | Permission::MemberRead
        | Permission::ApiKeyRead
        | Permission::EnrollmentTokenRead
        | Permission::AgentRead
        | Permission::CrlRead
        | Permission::OrgKeyRead
        | Permission::DatabaseRead
        | Permission::DestinationRead
        | Permission::ScheduleRead
        | Permission::JobRead => EVERYONE,
        Permission::CredentialRead => READERS_OF_SECRETS_METADATA,
        Permission::AuditRead | Permission::AuditExport => AUDITORS,
        Permission::EnrollmentTokenManage
        | Permission::AgentManage
        | Permission::JobRun
        | Permission::RestoreRun
        | Permission::DiagnosticsProbe => OPERATORS,
        Permission::OrgCreate
        | Permission::OrgUpdate
        | Permission::MemberManage
        | Permission::ApiKeyManage
        | Permission::CredentialManage
        | Permission::DatabaseManage
        | Permission::DestinationManage
        | Permission::ScheduleManage
        | Permission::MasterKeyManage => ADMINS,
        Permission::RecoveryKeyExport => OWNERS,
        Permission::AgentRenew
        | Permission::CredentialRelease
        | Permission::FileKeyUnwrap
        | Permission::JobExecute => NOBODY,
    }
}

/// Whether an API key with `scopes` may use `permission` (its role permitting). Empty scopes
/// leave the role whole; otherwise a scope names the permission (`audit.read`), every
/// permission of a resource (`job.*`), or everything (`*`).
pub fn scope_allows(scopes: &[String], permission: Permission) -> bool {
    scopes.is_empty()
        || scopes.iter().any(|scope| {
            scope == "*"
                || scope == permission.as_str()
                || scope.strip_suffix(".*").is_some_and(|resource| {
                    permission
                        .as_str()
                        .strip_prefix(resource)
                        .is_some_and(|rest| rest.starts_with('.'))
                })
        })
}

/// Whether `scope` means something: a permission name, `<resource>.*` for a resource that has
/// permissions, or `*`.
pub fn is_valid_scope(scope: &str) -> bool {
    scope == "*"
        || scope.parse::<Permission>().is_ok()
        || scope.strip_suffix(".*").is_some_and(|resource| {
            Permission::ALL.iter().any(|p| {
                p.as_str()
                    .strip_prefix(resource)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
        })
}

/// Whether `role` holds `permission`, per [`roles_allowed`].
pub fn allows(role: Role, permission: Permission) -> bool {
    roles_allowed(permission).contains(&role)
}

/// Whether a member with `actor` may move another member from `current` to `new`.
///
/// `current` is `None` when adding a member; `new` is `None` when removing one; suspending or
/// reactivating passes the member's role as both. The actor needs
/// [`Permission::MemberManage`], and only owners may grant or revoke the owner role or touch
/// an owner at all; admins manage non-owner members. (Keeping at least one owner depends on
/// the org's state and is the membership aggregate's rule, not this one's.)
pub fn can_change_member(actor: Role, current: Option<Role>, new: Option<Role>) -> bool {
    if current.is_none() && new.is_none() {
        return false;
    }
    if !allows(actor, Permission::MemberManage) {
        return false;
    }
    let touches_owner = current == Some(Owner) || new == Some(Owner);
    !touches_owner || actor == Owner
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full matrix, one row per permission, one column per role in `Role::ALL` order.
    fn render_matrix() -> String {
        let mut out = String::new();
        for &p in Permission::ALL {
            out.push_str(&format!("{:<24}", p.as_str()));
            for role in Role::ALL {
                out.push_str(if allows(role, p) { " x" } else { " ." });
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_permission_matrix_is_exactly_the_documented_one() {
        // Columns: owner admin operator auditor viewer.
        let expected = "\
org.create               x x . . .
org.read                 x x x x x
org.update               x x . . .
member.read              x x x x x
member.manage            x x . . .
api_key.read             x x x x x
api_key.manage           x x . . .
enrollment_token.read    x x x x x
enrollment_token.manage  x x x . .
agent.read               x x x x x
agent.manage             x x x . .
crl.read                 x x x x x
agent.renew              . . . . .
credential.read          x x x x .
credential.manage        x x . . .
recovery_key.export      x . . . .
credential.release       . . . . .
file_key.unwrap          . . . . .
org_key.read             x x x x x
master_key.manage        x x . . .
database.read            x x x x x
database.manage          x x . . .
destination.read         x x x x x
destination.manage       x x . . .
schedule.read            x x x x x
schedule.manage          x x . . .
job.read                 x x x x x
job.run                  x x x . .
restore.run              x x x . .
job.execute              . . . . .
audit.read               x x . x .
audit.export             x x . x .
diagnostics.probe        x x x . .
";
        let rendered = render_matrix();
        assert_eq!(rendered, expected, "rendered matrix:\n{rendered}");
    }

    #[test]
    fn owner_holds_every_permission_but_the_agents_own() {
        for &p in Permission::ALL {
            let agents_own = matches!(
                p,
                Permission::AgentRenew
                    | Permission::CredentialRelease
                    | Permission::FileKeyUnwrap
                    | Permission::JobExecute
            );
            assert_eq!(allows(Owner, p), !agents_own, "{p}");
        }
    }

    #[test]
    fn admin_holds_everything_but_recovery_key_export() {
        for &p in Permission::ALL {
            let expected = !matches!(
                p,
                Permission::RecoveryKeyExport
                    | Permission::AgentRenew
                    | Permission::CredentialRelease
                    | Permission::FileKeyUnwrap
                    | Permission::JobExecute
            );
            assert_eq!(allows(Admin, p), expected, "{p}");
        }
    }

    #[test]
    fn auditor_reads_and_exports_audit_but_changes_nothing() {
        assert!(allows(Auditor, Permission::AuditRead));
        assert!(allows(Auditor, Permission::AuditExport));
        assert!(!allows(Auditor, Permission::JobRun));
        for &p in Permission::ALL {
            let read_only = p.as_str().ends_with(".read") || p == Permission::AuditExport;
            assert_eq!(allows(Auditor, p), read_only, "{p}");
        }
    }

    #[test]
    fn viewer_reads_but_not_audit_or_credentials_and_manages_nothing() {
        assert!(!allows(Viewer, Permission::AuditRead));
        assert!(!allows(Viewer, Permission::AuditExport));
        assert!(!allows(Viewer, Permission::CredentialRead));
        for &p in Permission::ALL {
            if p.as_str().ends_with(".manage") {
                assert!(!allows(Viewer, p), "viewer holds {p}");
            }
        }
    }

    #[test]
    fn operator_runs_things_but_cannot_read_audit_or_manage_config() {
        for p in [
            Permission::JobRun,
            Permission::RestoreRun,
            Permission::DiagnosticsProbe,
            Permission::AgentManage,
            Permission::EnrollmentTokenManage,
            Permission::CredentialRead,
        ] {
            assert!(allows(Operator, p), "operator lacks {p}");
        }
        for p in [
            Permission::AuditRead,
            Permission::AuditExport,
            Permission::CredentialManage,
            Permission::MemberManage,
            Permission::RecoveryKeyExport,
        ] {
            assert!(!allows(Operator, p), "operator holds {p}");
        }
    }

    #[test]
    fn scopes_narrow_a_key_to_named_permissions_resources_or_everything() {
        let scopes = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(scope_allows(&[], Permission::MemberManage));
        assert!(scope_allows(&scopes(&["*"]), Permission::MemberManage));
        assert!(scope_allows(&scopes(&["job.*"]), Permission::JobRun));
        assert!(scope_allows(
            &scopes(&["audit.read"]),
            Permission::AuditRead
        ));
        assert!(!scope_allows(
            &scopes(&["audit.read"]),
            Permission::AuditExport
        ));
        assert!(!scope_allows(&scopes(&["job.*"]), Permission::RestoreRun));
        // A resource prefix must end at a dot: `api.*` is not `api_key.*`.
        assert!(!is_valid_scope("api.*"));
        assert!(!scope_allows(&scopes(&["api.*"]), Permission::ApiKeyRead));
        for valid in ["*", "job.*", "api_key.read", "audit.export"] {
            assert!(is_valid_scope(valid), "{valid}");
        }
        for invalid in ["", "job", "jobs.*", "job.delete", "**"] {
            assert!(!is_valid_scope(invalid), "{invalid}");
        }
    }

    #[test]
    fn every_permission_has_a_unique_name_that_parses_back() {
        for (i, &p) in Permission::ALL.iter().enumerate() {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
            assert!(
                !Permission::ALL[..i]
                    .iter()
                    .any(|q| q.as_str() == p.as_str())
            );
        }
        assert!("member.delete".parse::<Permission>().is_err());
    }

    #[test]
    fn only_owners_grant_revoke_or_remove_ownership() {
        // Given an admin, when they touch the owner role in any way, then it is refused.
        assert!(!can_change_member(Admin, None, Some(Owner)));
        assert!(!can_change_member(Admin, Some(Viewer), Some(Owner)));
        assert!(!can_change_member(Admin, Some(Owner), Some(Admin)));
        assert!(!can_change_member(Admin, Some(Owner), None));
        assert!(!can_change_member(Admin, Some(Owner), Some(Owner)));
        // Given an owner, when they do the same, then it is allowed.
        assert!(can_change_member(Owner, None, Some(Owner)));
        assert!(can_change_member(Owner, Some(Admin), Some(Owner)));
        assert!(can_change_member(Owner, Some(Owner), Some(Viewer)));
        assert!(can_change_member(Owner, Some(Owner), None));
    }

    #[test]
    fn admins_manage_non_owner_members_and_others_manage_none() {
        assert!(can_change_member(Admin, None, Some(Admin)));
        assert!(can_change_member(Admin, Some(Viewer), Some(Operator)));
        assert!(can_change_member(Admin, Some(Admin), None));
        assert!(can_change_member(Admin, Some(Auditor), Some(Auditor)));
        for actor in [Operator, Auditor, Viewer] {
            assert!(!can_change_member(actor, None, Some(Viewer)));
            assert!(!can_change_member(actor, Some(Viewer), None));
        }
        assert!(!can_change_member(Owner, None, None));
    }
}
