//! Who may do what in Coffer: roles, permissions, principals and the one permission table
//! (DESIGN.md §5).
//!
//! Every authorization decision in the product goes through this crate:
//!
//! - [`allows`] answers "may this [`Role`] use this [`Permission`]?" from a single exhaustive
//!   table, so adding a permission does not compile until every role has been decided on.
//! - [`can_change_member`] adds the rules about the owner role that a flat table cannot express.
//! - [`authorize`] applies the table to an authenticated [`Principal`] and the org a request
//!   targets, keeping tenants apart: another org's caller is told [`Denied::NotFound`].
//! - [`rpc_permission`] and [`is_public_rpc`] map gRPC methods to permissions; a method with
//!   neither is unknown and must be refused.
//!
//! The crate is pure: no I/O, no async. Authentication (tokens, certificates) happens
//! elsewhere and produces a [`Principal`].

mod permission;
mod principal;
mod role;
mod rpc;

pub use permission::{ParsePermissionError, Permission, allows, can_change_member, roles_allowed};
pub use principal::{Denied, Principal, authorize};
pub use role::{ParseRoleError, Role};
pub use rpc::{is_public_rpc, rpc_permission};
