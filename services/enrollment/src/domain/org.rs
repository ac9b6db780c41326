//! The Org aggregate: an organisation and its members.
//!
//! Who may ask for a change is `coffer_auth`'s decision; this aggregate keeps the invariants
//! that hold whoever asks: an org exists once, a user is a member once, and an org always
//! keeps at least one active owner.

use std::collections::BTreeMap;

use coffer_auth::Role;
use coffer_eventstore::Aggregate;
use coffer_types::UserId;

use super::{FieldError, clean_name};

/// Longest org name.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest suspension reason.
pub const MAX_REASON_CHARS: usize = 500;

/// A member as the aggregate knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Contact and sign-in address.
    pub email: String,
    /// Their role in this org.
    pub role: Role,
    /// Suspended members keep their role but may do nothing.
    pub suspended: bool,
}

/// State of one org.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Org {
    /// Whether `OrgCreated` happened.
    pub created: bool,
    /// Display name.
    pub name: String,
    /// Members by user id.
    pub members: BTreeMap<UserId, Member>,
}

impl Org {
    fn active_owners(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.role == Role::Owner && !m.suspended)
            .count()
    }

    /// Whether `user` is the only active owner, so losing them would orphan the org.
    fn is_last_active_owner(&self, user: UserId) -> bool {
        self.members
            .get(&user)
            .is_some_and(|m| m.role == Role::Owner && !m.suspended)
            && self.active_owners() == 1
    }

    fn member(&self, user: UserId) -> Result<&Member, OrgError> {
        if !self.created {
            return Err(OrgError::NotFound);
        }
        self.members.get(&user).ok_or(OrgError::NotAMember)
    }
}

/// Commands.
#[derive(Debug, Clone)]
pub enum OrgCommand {
    /// Create the org with its first owner.
    CreateOrg {
        /// Display name.
        name: String,
        /// The first owner.
        owner: UserId,
        /// Their email.
        owner_email: String,
    },
    /// Add a member.
    AddMember {
        /// The user.
        user: UserId,
        /// Their email.
        email: String,
        /// Their role.
        role: Role,
    },
    /// Change a member's role.
    ChangeRole {
        /// The member.
        user: UserId,
        /// The new role.
        role: Role,
    },
    /// Remove a member.
    RemoveMember {
        /// The member.
        user: UserId,
    },
    /// Suspend a member: they keep their role but may do nothing until reactivated.
    SuspendMember {
        /// The member.
        user: UserId,
        /// Why, for the audit log.
        reason: String,
    },
    /// Lift a suspension.
    ReactivateMember {
        /// The member.
        user: UserId,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgEvent {
    /// The org exists, with its first owner.
    OrgCreated {
        /// Display name.
        name: String,
        /// The first owner.
        owner: UserId,
        /// Their email.
        owner_email: String,
    },
    /// A member joined.
    MemberAdded {
        /// The user.
        user: UserId,
        /// Their email.
        email: String,
        /// Their role.
        role: Role,
    },
    /// A member's role changed.
    MemberRoleChanged {
        /// The member.
        user: UserId,
        /// Before.
        from: Role,
        /// After.
        to: Role,
    },
    /// A member left or was removed.
    MemberRemoved {
        /// The member.
        user: UserId,
    },
    /// A member was suspended.
    MemberSuspended {
        /// The member.
        user: UserId,
        /// Why.
        reason: String,
    },
    /// A suspension was lifted.
    MemberReactivated {
        /// The member.
        user: UserId,
    },
}

/// Why an org command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The org does not exist (NotFound).
    #[error("org not found")]
    NotFound,
    /// The org already exists (AlreadyExists).
    #[error("org already exists")]
    AlreadyExists,
    /// The user is already a member (AlreadyExists).
    #[error("user is already a member of this org")]
    AlreadyMember,
    /// The user is not a member (NotFound).
    #[error("user is not a member of this org")]
    NotAMember,
    /// The change would leave the org without an active owner (FailedPrecondition).
    #[error("an org must keep at least one active owner")]
    LastOwner,
}

fn clean_email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim();
    let well_formed = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if !well_formed {
        return Err(FieldError::new(
            "email",
            format!("must be an address like name@example.com of at most {MAX_EMAIL_LEN} bytes"),
        ));
    }
    Ok(email.to_ascii_lowercase())
}

impl Aggregate for Org {
    const TYPE: &'static str = "Org";
    type Command = OrgCommand;
    type Event = OrgEvent;
    type Error = OrgError;

    fn decide(&self, command: OrgCommand) -> Result<Vec<OrgEvent>, OrgError> {
        match command {
            OrgCommand::CreateOrg {
                name,
                owner,
                owner_email,
            } => {
                if self.created {
                    return Err(OrgError::AlreadyExists);
                }
                Ok(vec![OrgEvent::OrgCreated {
                    name: clean_name("name", &name, MAX_NAME_CHARS)?,
                    owner,
                    owner_email: clean_email(&owner_email)?,
                }])
            }
            OrgCommand::AddMember { user, email, role } => {
                if !self.created {
                    return Err(OrgError::NotFound);
                }
                let email = clean_email(&email)?;
                if self.members.contains_key(&user)
                    || self.members.values().any(|m| m.email == email)
                {
                    return Err(OrgError::AlreadyMember);
                }
                Ok(vec![OrgEvent::MemberAdded { user, email, role }])
            }
            OrgCommand::ChangeRole { user, role } => {
                let member = self.member(user)?;
                if member.role == role {
                    return Ok(vec![]);
                }
                if self.is_last_active_owner(user) {
                    return Err(OrgError::LastOwner);
                }
                Ok(vec![OrgEvent::MemberRoleChanged {
                    user,
                    from: member.role,
                    to: role,
                }])
            }
            OrgCommand::RemoveMember { user } => {
                self.member(user)?;
                if self.is_last_active_owner(user) {
                    return Err(OrgError::LastOwner);
                }
                Ok(vec![OrgEvent::MemberRemoved { user }])
            }
            OrgCommand::SuspendMember { user, reason } => {
                let member = self.member(user)?;
                let reason = clean_name("reason", &reason, MAX_REASON_CHARS)?;
                if member.suspended {
                    return Ok(vec![]);
                }
                if self.is_last_active_owner(user) {
                    return Err(OrgError::LastOwner);
                }
                Ok(vec![OrgEvent::MemberSuspended { user, reason }])
            }
            OrgCommand::ReactivateMember { user } => {
                if !self.member(user)?.suspended {
                    return Ok(vec![]);
                }
                Ok(vec![OrgEvent::MemberReactivated { user }])
            }
        }
    }

    fn evolve(mut self, event: &OrgEvent) -> Self {
        match event {
            OrgEvent::OrgCreated {
                name,
                owner,
                owner_email,
            } => {
                self.created = true;
                self.name = name.clone();
                self.members.insert(
                    *owner,
                    Member {
                        email: owner_email.clone(),
                        role: Role::Owner,
                        suspended: false,
                    },
                );
            }
            OrgEvent::MemberAdded { user, email, role } => {
                self.members.insert(
                    *user,
                    Member {
                        email: email.clone(),
                        role: *role,
                        suspended: false,
                    },
                );
            }
            OrgEvent::MemberRoleChanged { user, to, .. } => {
                if let Some(m) = self.members.get_mut(user) {
                    m.role = *to;
                }
            }
            OrgEvent::MemberRemoved { user } => {
                self.members.remove(user);
            }
            OrgEvent::MemberSuspended { user, .. } => {
                if let Some(m) = self.members.get_mut(user) {
                    m.suspended = true;
                }
            }
            OrgEvent::MemberReactivated { user } => {
                if let Some(m) = self.members.get_mut(user) {
                    m.suspended = false;
                }
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use coffer_eventstore::replay;

    use super::*;

    fn created(owner: UserId) -> OrgEvent {
        OrgEvent::OrgCreated {
            name: "Acme".into(),
            owner,
            owner_email: "ada@acme.test".into(),
        }
    }

    fn added(user: UserId, role: Role) -> OrgEvent {
        OrgEvent::MemberAdded {
            user,
            email: "bob@acme.test".into(),
            role,
        }
    }

    fn given(events: &[OrgEvent]) -> Org {
        replay(events)
    }

    #[test]
    fn given_nothing_when_created_then_the_first_member_is_an_owner() {
        let owner = UserId::new();
        let events = Org::default()
            .decide(OrgCommand::CreateOrg {
                name: "  Acme  ".into(),
                owner,
                owner_email: "Ada@Acme.test".into(),
            })
            .unwrap();
        assert_eq!(events, vec![created(owner)]);
        let org = given(&events);
        assert_eq!(org.members[&owner].role, Role::Owner);
    }

    #[test]
    fn given_an_org_when_created_again_then_already_exists() {
        let org = given(&[created(UserId::new())]);
        let err = org
            .decide(OrgCommand::CreateOrg {
                name: "Acme".into(),
                owner: UserId::new(),
                owner_email: "x@y.test".into(),
            })
            .unwrap_err();
        assert_eq!(err, OrgError::AlreadyExists);
    }

    #[test]
    fn bad_names_and_emails_name_the_field() {
        let create = |name: &str, email: &str| {
            Org::default()
                .decide(OrgCommand::CreateOrg {
                    name: name.into(),
                    owner: UserId::new(),
                    owner_email: email.into(),
                })
                .unwrap_err()
                .to_string()
        };
        assert_eq!(create("   ", "a@b.test"), "name must not be empty");
        assert_eq!(
            create(&"x".repeat(101), "a@b.test"),
            "name must be at most 100 characters, got 101"
        );
        assert!(create("Acme", "not-an-email").starts_with("email must be an address"));
        assert!(create("Acme", "a b@c.test").starts_with("email must be"));
    }

    #[test]
    fn given_no_org_when_a_member_is_added_then_not_found() {
        let err = Org::default()
            .decide(OrgCommand::AddMember {
                user: UserId::new(),
                email: "a@b.test".into(),
                role: Role::Viewer,
            })
            .unwrap_err();
        assert_eq!(err, OrgError::NotFound);
    }

    #[test]
    fn given_a_member_when_added_again_then_already_member() {
        let bob = UserId::new();
        let org = given(&[created(UserId::new()), added(bob, Role::Viewer)]);
        let err = org
            .decide(OrgCommand::AddMember {
                user: bob,
                email: "bob@acme.test".into(),
                role: Role::Admin,
            })
            .unwrap_err();
        assert_eq!(err, OrgError::AlreadyMember);
    }

    #[test]
    fn given_a_member_when_their_address_is_added_as_a_new_user_then_already_member() {
        let org = given(&[created(UserId::new()), added(UserId::new(), Role::Viewer)]);
        let err = org
            .decide(OrgCommand::AddMember {
                user: UserId::new(),
                email: "  BOB@acme.test ".into(),
                role: Role::Admin,
            })
            .unwrap_err();
        assert_eq!(err, OrgError::AlreadyMember);
    }

    #[test]
    fn the_last_active_owner_cannot_be_demoted_removed_or_suspended() {
        let ada = UserId::new();
        let org = given(&[created(ada), added(UserId::new(), Role::Admin)]);
        for command in [
            OrgCommand::ChangeRole {
                user: ada,
                role: Role::Admin,
            },
            OrgCommand::RemoveMember { user: ada },
            OrgCommand::SuspendMember {
                user: ada,
                reason: "left".into(),
            },
        ] {
            assert_eq!(org.decide(command), Err(OrgError::LastOwner));
        }
    }

    #[test]
    fn given_two_owners_when_one_is_removed_then_removed() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let org = given(&[created(ada), added(bob, Role::Owner)]);
        assert_eq!(
            org.decide(OrgCommand::RemoveMember { user: ada }).unwrap(),
            vec![OrgEvent::MemberRemoved { user: ada }]
        );
    }

    #[test]
    fn a_suspended_owner_does_not_count_as_the_remaining_owner() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let org = given(&[
            created(ada),
            added(bob, Role::Owner),
            OrgEvent::MemberSuspended {
                user: bob,
                reason: "on leave".into(),
            },
        ]);
        assert_eq!(
            org.decide(OrgCommand::RemoveMember { user: ada }),
            Err(OrgError::LastOwner)
        );
        // Reactivating bob makes ada removable again.
        let org = org.evolve(&OrgEvent::MemberReactivated { user: bob });
        assert!(org.decide(OrgCommand::RemoveMember { user: ada }).is_ok());
    }

    #[test]
    fn role_changes_record_from_and_to_and_no_op_changes_record_nothing() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let org = given(&[created(ada), added(bob, Role::Viewer)]);
        assert_eq!(
            org.decide(OrgCommand::ChangeRole {
                user: bob,
                role: Role::Operator
            })
            .unwrap(),
            vec![OrgEvent::MemberRoleChanged {
                user: bob,
                from: Role::Viewer,
                to: Role::Operator
            }]
        );
        assert!(
            org.decide(OrgCommand::ChangeRole {
                user: bob,
                role: Role::Viewer
            })
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn suspend_and_reactivate_are_idempotent() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let suspended = OrgEvent::MemberSuspended {
            user: bob,
            reason: "audit".into(),
        };
        let org = given(&[created(ada), added(bob, Role::Operator), suspended]);
        assert!(org.members[&bob].suspended);
        assert!(
            org.decide(OrgCommand::SuspendMember {
                user: bob,
                reason: "again".into()
            })
            .unwrap()
            .is_empty()
        );
        assert_eq!(
            org.decide(OrgCommand::ReactivateMember { user: bob })
                .unwrap(),
            vec![OrgEvent::MemberReactivated { user: bob }]
        );
    }

    #[test]
    fn commands_on_a_stranger_are_not_a_member() {
        let org = given(&[created(UserId::new())]);
        assert_eq!(
            org.decide(OrgCommand::RemoveMember {
                user: UserId::new()
            }),
            Err(OrgError::NotAMember)
        );
    }
}
