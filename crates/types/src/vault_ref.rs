//! Vault references: how services name a credential without holding it,
//! `vault:coffer/<org_id>/<credential_id>`, stored in their `*_vault_ref` columns. The
//! credentials service issues them; the others (scheduling's `password_vault_ref`) parse them.

use std::fmt;
use std::str::FromStr;

use crate::{FieldError, OrgId};

const PREFIX: &str = "vault:coffer/";

/// A parsed vault reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VaultRef {
    /// The org the credential belongs to.
    pub org: OrgId,
    /// The credential.
    pub credential: uuid::Uuid,
}

impl fmt::Display for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.org, self.credential)
    }
}

impl FromStr for VaultRef {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, FieldError> {
        let malformed =
            || FieldError::new("vault_ref", "must be vault:coffer/<org_id>/<credential_id>");
        let rest = s.strip_prefix(PREFIX).ok_or_else(malformed)?;
        let (org, credential) = rest.split_once('/').ok_or_else(malformed)?;
        // Canonical form only: lowercase hyphenated UUIDs, so one credential has one reference.
        let canonical = |u: &uuid::Uuid, text: &str| u.hyphenated().to_string() == text;
        let org_uuid: uuid::Uuid = org.parse().map_err(|_| malformed())?;
        let credential_uuid: uuid::Uuid = credential.parse().map_err(|_| malformed())?;
        if !canonical(&org_uuid, org) || !canonical(&credential_uuid, credential) {
            return Err(malformed());
        }
        Ok(VaultRef {
            org: OrgId::from(org_uuid),
            credential: credential_uuid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_round_trips_and_only_the_canonical_form_parses() {
        let r = VaultRef {
            org: OrgId::new(),
            credential: uuid::Uuid::now_v7(),
        };
        let text = r.to_string();
        assert!(text.starts_with("vault:coffer/"));
        assert_eq!(text.parse::<VaultRef>().unwrap(), r);
        let upper = format!(
            "vault:coffer/{}/{}",
            r.org.to_string().to_uppercase(),
            r.credential
        );
        for bad in [
            "",
            "vault:coffer/",
            "vault:other/x/y",
            &format!("vault:coffer/{}", r.org),
            &format!("vault:coffer/{}/nope", r.org),
            &format!("vault:coffer/{}/{}/extra", r.org, r.credential),
            &upper,
        ] {
            assert_eq!(
                bad.parse::<VaultRef>().unwrap_err().to_string(),
                "vault_ref must be vault:coffer/<org_id>/<credential_id>",
                "{bad:?}"
            );
        }
    }
}
