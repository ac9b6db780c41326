//! Vault references, `vault:coffer/<org_id>/<credential_id>`: the type lives in
//! `coffer_types` so that services which only hold references parse them the same way.

pub use coffer_types::VaultRef;
