use coffer_types::OrgId;

use crate::{Denied, Permission, Principal, authorize, rpc_permission};

/// The authenticated caller of one RPC, with the permission the permission table assigns to
/// that RPC. The gRPC layer builds it once per request (from the method path, so a handler
/// cannot pick the wrong permission) and handlers only say which org the request targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    principal: Principal,
    permission: Permission,
}

impl Caller {
    /// The caller of `full_method`, or `None` when the method is not in the permission table
    /// (then the request must be refused).
    pub fn for_rpc(principal: Principal, full_method: &str) -> Option<Self> {
        rpc_permission(full_method).map(|permission| Self {
            principal,
            permission,
        })
    }

    /// Whether the caller may use this RPC in `org`; on success, who they are.
    pub fn authorize(&self, org: OrgId) -> Result<&Principal, Denied> {
        authorize(&self.principal, org, self.permission)?;
        Ok(&self.principal)
    }

    /// The permission the RPC requires.
    pub fn permission(&self) -> Permission {
        self.permission
    }

    /// Who is calling, before any org check (for logs and for RPCs that are not about one
    /// org's data).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}
