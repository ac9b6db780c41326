use coffer_types::{Actor, ActorKind, AgentId, ApiKeyId, OrgId, UserId};

use crate::{Permission, Role, allows, scope_allows};

/// An authenticated caller (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person signed in through OIDC or locally, acting in one org.
    User {
        /// The user's id.
        user_id: UserId,
        /// The org the user is signed in to.
        org: OrgId,
        /// The user's role in that org.
        role: Role,
    },
    /// An integrator's API key, which belongs to one org.
    ApiKey {
        /// The key's id (never the secret).
        key_id: ApiKeyId,
        /// The org the key belongs to.
        org: OrgId,
        /// The role the key acts with.
        role: Role,
        /// Scopes narrowing the role (see [`crate::scope_allows`]); empty: the whole role.
        scopes: Vec<String>,
    },
    /// An enrolled agent, authenticated by its mTLS certificate. Holds only
    /// [`Permission::CrlRead`].
    Agent {
        /// The agent's id, from its certificate's SPIFFE URI.
        agent_id: AgentId,
        /// The org the agent is enrolled in.
        org: OrgId,
    },
    /// A Coffer service calling another. Trusted with everything in every org.
    Service {
        /// The calling service, e.g. `"enrollment"`.
        name: String,
    },
}

impl Principal {
    /// The org the principal belongs to; `None` for services, which belong to none.
    pub fn org(&self) -> Option<OrgId> {
        match self {
            Principal::User { org, .. }
            | Principal::ApiKey { org, .. }
            | Principal::Agent { org, .. } => Some(*org),
            Principal::Service { .. } => None,
        }
    }

    /// The principal's role; `None` for agents and services, which have none.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::User { role, .. } | Principal::ApiKey { role, .. } => Some(*role),
            Principal::Agent { .. } | Principal::Service { .. } => None,
        }
    }

    /// Who to record on events this principal causes.
    pub fn actor(&self) -> Actor {
        let (kind, id) = match self {
            Principal::User { user_id, .. } => (ActorKind::User, user_id.to_string()),
            Principal::ApiKey { key_id, .. } => (ActorKind::ApiKey, key_id.to_string()),
            Principal::Agent { agent_id, .. } => (ActorKind::Agent, agent_id.to_string()),
            Principal::Service { name } => (ActorKind::Service, name.clone()),
        };
        Actor { kind, id }
    }
}

/// Why [`authorize`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The principal belongs to another org. Answer `NOT_FOUND`, exactly as for a missing
    /// resource, so the existence of other tenants' data does not leak.
    #[error("not found")]
    NotFound,
    /// The principal is in the org but does not hold the permission. Answer
    /// `PERMISSION_DENIED`.
    #[error("permission {permission} is required")]
    Forbidden {
        /// The permission that was missing.
        permission: Permission,
    },
}

/// What an enrolled agent may do: fetch its org's CRL, renew its own certificate, read the
/// org's age recipient (to encrypt backups to), receive the credentials of its job tickets,
/// and have the file key of a backup its restore ticket names unwrapped.
pub const AGENT_PERMISSIONS: &[Permission] = &[
    Permission::CrlRead,
    Permission::AgentRenew,
    Permission::OrgKeyRead,
    Permission::CredentialRelease,
    Permission::FileKeyUnwrap,
    Permission::JobExecute,
];

/// Whether `principal` may use `permission` in `org`.
///
/// Tenancy is checked first: a principal of another org gets [`Denied::NotFound`] whatever
/// the permission. Users and API keys are then judged by their role through [`allows`], API
/// keys also by their scopes through [`scope_allows`];
/// agents hold only [`AGENT_PERMISSIONS`]; services are internal and allowed everything.
pub fn authorize(principal: &Principal, org: OrgId, permission: Permission) -> Result<(), Denied> {
    let held = match principal {
        Principal::Service { .. } => return Ok(()),
        Principal::User { org: own, role, .. } => {
            if *own != org {
                return Err(Denied::NotFound);
            }
            allows(*role, permission)
        }
        Principal::ApiKey {
            org: own,
            role,
            scopes,
            ..
        } => {
            if *own != org {
                return Err(Denied::NotFound);
            }
            allows(*role, permission) && scope_allows(scopes, permission)
        }
        Principal::Agent { org: own, .. } => {
            if *own != org {
                return Err(Denied::NotFound);
            }
            AGENT_PERMISSIONS.contains(&permission)
        }
    };
    if held {
        Ok(())
    } else {
        Err(Denied::Forbidden { permission })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: UserId = UserId::from_uuid(uuid::Uuid::from_u128(1));
    const KEY: ApiKeyId = ApiKeyId::from_uuid(uuid::Uuid::from_u128(2));

    fn user(org: OrgId, role: Role) -> Principal {
        Principal::User {
            user_id: USER,
            org,
            role,
        }
    }

    fn api_key(org: OrgId, role: Role) -> Principal {
        Principal::ApiKey {
            key_id: KEY,
            org,
            role,
            scopes: vec![],
        }
    }

    #[test]
    fn an_api_keys_scopes_narrow_its_role_and_never_widen_it() {
        let a = OrgId::new();
        let scoped = Principal::ApiKey {
            key_id: KEY,
            org: a,
            role: Role::Operator,
            scopes: vec!["job.*".into(), "audit.read".into()],
        };
        assert_eq!(authorize(&scoped, a, Permission::JobRun), Ok(()));
        // In scope but not in the role: still refused.
        assert!(authorize(&scoped, a, Permission::AuditRead).is_err());
        // In the role but not in scope: refused.
        assert_eq!(
            authorize(&scoped, a, Permission::DatabaseRead),
            Err(Denied::Forbidden {
                permission: Permission::DatabaseRead
            })
        );
    }

    fn agent(org: OrgId) -> Principal {
        Principal::Agent {
            agent_id: AgentId::from(uuid::Uuid::from_u128(3)),
            org,
        }
    }

    #[test]
    fn p5_cross_tenant_read_is_not_found() {
        // Given principals of org A, when they ask for anything in org B,
        // then the answer is NotFound, never Forbidden, even for an owner.
        let (a, b) = (OrgId::new(), OrgId::new());
        for principal in [user(a, Role::Owner), api_key(a, Role::Viewer), agent(a)] {
            for &p in Permission::ALL {
                assert_eq!(authorize(&principal, b, p), Err(Denied::NotFound), "{p}");
            }
        }
    }

    #[test]
    fn same_org_without_the_permission_is_forbidden() {
        // Given a viewer of org A, when they try to manage members of org A, then Forbidden.
        let a = OrgId::new();
        assert_eq!(
            authorize(&user(a, Role::Viewer), a, Permission::MemberManage),
            Err(Denied::Forbidden {
                permission: Permission::MemberManage
            })
        );
        assert_eq!(
            authorize(&api_key(a, Role::Auditor), a, Permission::JobRun),
            Err(Denied::Forbidden {
                permission: Permission::JobRun
            })
        );
    }

    #[test]
    fn users_and_api_keys_follow_the_role_table() {
        // Given any role in its own org, when authorizing any permission,
        // then the answer matches `allows` exactly.
        let a = OrgId::new();
        for role in Role::ALL {
            for &p in Permission::ALL {
                for principal in [user(a, role), api_key(a, role)] {
                    assert_eq!(authorize(&principal, a, p).is_ok(), allows(role, p));
                }
            }
        }
    }

    #[test]
    fn agents_hold_only_the_agent_permissions() {
        // Given an agent of org A, when it asks for user permissions in org A, then only
        // CrlRead, OrgKeyRead, AgentRenew, CredentialRelease, FileKeyUnwrap and JobExecute are
        // allowed.
        let a = OrgId::new();
        for &p in Permission::ALL {
            let result = authorize(&agent(a), a, p);
            if matches!(
                p,
                Permission::CrlRead
                    | Permission::OrgKeyRead
                    | Permission::AgentRenew
                    | Permission::CredentialRelease
                    | Permission::FileKeyUnwrap
                    | Permission::JobExecute
            ) {
                assert_eq!(result, Ok(()));
            } else {
                assert_eq!(result, Err(Denied::Forbidden { permission: p }), "{p}");
            }
        }
    }

    #[test]
    fn services_are_allowed_everything_in_any_org() {
        let service = Principal::Service {
            name: "enrollment".into(),
        };
        for &p in Permission::ALL {
            assert_eq!(authorize(&service, OrgId::new(), p), Ok(()));
        }
        assert_eq!(service.org(), None);
    }

    #[test]
    fn principals_become_audit_actors() {
        let a = OrgId::new();
        assert_eq!(
            user(a, Role::Admin).actor().to_string(),
            "user:00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(
            api_key(a, Role::Admin).actor().to_string(),
            "api_key:00000000-0000-0000-0000-000000000002"
        );
        assert_eq!(
            agent(a).actor().to_string(),
            "agent:00000000-0000-0000-0000-000000000003"
        );
        assert_eq!(
            Principal::Service {
                name: "enrollment".into()
            }
            .actor(),
            Actor::service("enrollment")
        );
        assert_eq!(agent(a).org(), Some(a));
        assert_eq!(agent(a).role(), None);
        assert_eq!(api_key(a, Role::Viewer).role(), Some(Role::Viewer));
    }

    #[test]
    fn denials_say_what_was_missing_but_not_found_says_nothing() {
        assert_eq!(
            Denied::Forbidden {
                permission: Permission::AuditExport
            }
            .to_string(),
            "permission audit.export is required"
        );
        assert_eq!(Denied::NotFound.to_string(), "not found");
    }
}
