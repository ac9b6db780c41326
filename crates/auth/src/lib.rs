//! Who may do what in Coffer, and how a caller proves who it is (DESIGN.md §5).
//!
//! Every authorization decision in the product goes through this crate:
//!
//! - [`allows`] answers "may this [`Role`] use this [`Permission`]?" from a single exhaustive
//!   table, so adding a permission does not compile until every role has been decided on.
//! - [`can_change_member`] adds the rules about the owner role that a flat table cannot express.
//! - [`authorize`] applies the table to an authenticated [`Principal`] and the org a request
//!   targets, keeping tenants apart: another org's caller is told [`Denied::NotFound`].
//! - [`rpc_permission`] and [`is_public_rpc`] map gRPC methods to permissions; a method with
//!   neither is unknown and must be refused. [`Caller`] binds a principal to the permission of
//!   the RPC it is calling.
//!
//! Those parts are pure: no I/O, no async. Authentication produces the [`Principal`]:
//!
//! - [`token`]: Coffer access tokens, Ed25519-signed JWTs with a `kid`, issued by
//!   enrollment's `TokenService` and verified locally by every service against the JWKS.
//!   Pure as well.
//! - [`oidc`]: verifies ID tokens from the customer's OpenID Connect provider and maps its
//!   groups to a role. **Does I/O**: fetches the provider's discovery document and JWKS over
//!   HTTPS.
//! - [`revocation`]: revoked API keys, suspended users and revoked agent certificates, kept in
//!   a JetStream KV bucket. **Does I/O**: watches the bucket from a background task.
//! - [`bearer`]: the [`Authenticator`] that turns a bearer token into a [`Principal`],
//!   refusing revoked keys and suspended users. Independent of tonic.
//!
//! Agent (mTLS) authentication lives with the PKI; it checks serials against
//! [`revocation::Revocations::is_cert_revoked`].

pub mod agent;
pub mod bearer;
mod caller;
#[cfg(feature = "tonic")]
pub mod grpc;
mod jws;
pub mod oidc;
mod permission;
mod principal;
pub mod published;
pub mod revocation;
mod role;
mod rpc;
pub mod ticket;
pub mod token;

pub use bearer::Authenticator;
pub use caller::Caller;
pub use permission::{
    ParsePermissionError, Permission, allows, can_change_member, is_valid_scope, roles_allowed,
    scope_allows,
};
pub use principal::{AGENT_PERMISSIONS, Denied, Principal, authorize};
pub use role::{ParseRoleError, Role};
pub use rpc::{is_public_rpc, rpc_permission};
