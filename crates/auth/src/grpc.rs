//! The gRPC side of authorization (feature `tonic`): what a handler calls to learn whether
//! the request's [`Caller`] may act in the org it names.

use coffer_types::OrgId;

use crate::{Caller, Denied, Principal};

/// The principal behind `request`, if the caller (attached by the server's auth layer) may
/// use this RPC in `org`.
///
/// Another org's caller gets `NOT_FOUND` — the same answer as for an org that does not exist
/// — and a member lacking the RPC's permission `PERMISSION_DENIED` naming it. A request that
/// reached a handler without a caller is `UNAUTHENTICATED` (the layer was not installed).
pub fn authorize<T>(request: &tonic::Request<T>, org: OrgId) -> Result<&Principal, tonic::Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| tonic::Status::unauthenticated("credentials are required"))?;
    caller.authorize(org).map_err(|denied| match denied {
        Denied::NotFound => tonic::Status::not_found("org not found"),
        Denied::Forbidden { permission } => {
            tonic::Status::permission_denied(format!("permission {permission} is required"))
        }
    })
}

/// The agent behind `request` and its org, if the caller is an agent (mTLS) allowed this RPC.
/// Any other caller gets `PERMISSION_DENIED`: these RPCs act on the calling agent's own work.
pub fn agent_of<T>(
    request: &tonic::Request<T>,
) -> Result<(coffer_types::AgentId, OrgId), tonic::Status> {
    let Some(&Principal::Agent { agent_id, org }) =
        request.extensions().get::<Caller>().map(Caller::principal)
    else {
        return Err(tonic::Status::permission_denied(
            "only agents call this, over mTLS with their certificate",
        ));
    };
    authorize(request, org)?;
    Ok((agent_id, org))
}
