//! CA keys are stored only wrapped by the KMS, bound to their org and CA (DESIGN §1 P2).

use std::collections::HashSet;

use chrono::Utc;
use coffer_kms::{Error as KmsError, Purpose};
use coffer_pki::verify::{self, OrgTrust};
use coffer_pki::{AgentCsr, CaRole, CertificateAuthority, DEFAULT_AGENT_TTL, Error};
use coffer_types::OrgId;

use crate::helpers::{Hierarchy, YEAR, ca_key_pkcs8, local_kms, rcgen_csr, td};

#[tokio::test]
async fn p2_ca_keys_round_trip_through_the_kms_and_still_sign() {
    let pki = Hierarchy::new();
    let (_dir, kms) = local_kms();
    let root_wrapped = pki.root.wrap_key(&kms).await.unwrap();
    let org_wrapped = pki.org.wrap_key(&kms).await.unwrap();

    // The root is wrapped for the platform pseudo-org; each CA under its own object id.
    let root_context = pki.root.key_context().unwrap();
    assert_eq!(root_context.org_id(), OrgId::PLATFORM);
    assert_eq!(root_context.purpose(), Purpose::CaKey);
    assert_eq!(
        root_context.object_id(),
        format!("ca/{}", pki.root.serial())
    );
    let org_context = pki.org.key_context().unwrap();
    assert_eq!(org_context.org_id(), pki.org_id);
    assert_eq!(org_context.purpose(), Purpose::CaKey);
    assert_eq!(org_context.object_id(), format!("ca/{}", pki.org.serial()));

    let root = CertificateAuthority::from_wrapped_key(
        &kms,
        CaRole::PlatformRoot,
        &td(),
        pki.root.certificate_der(),
        &root_wrapped,
    )
    .await
    .unwrap();
    let org = CertificateAuthority::from_wrapped_key(
        &kms,
        CaRole::Org(pki.org_id),
        &td(),
        pki.org.certificate_der(),
        &org_wrapped,
    )
    .await
    .unwrap();
    assert_eq!(root.serial(), pki.root.serial());
    assert_eq!(org.not_after(), pki.org.not_after());

    // The unwrapped keys are the real ones: the reloaded root signs a new intermediate that
    // chains to the original root certificate, and the reloaded org CA issues a leaf that
    // verifies against the original chain.
    let new_org = OrgId::new();
    let intermediate = root
        .create_org_intermediate(new_org, Utc::now(), YEAR)
        .unwrap();
    let agent = pki.agent();
    let csr = AgentCsr::parse(&rcgen_csr(&rcgen::PKCS_ED25519, |_| {}), &agent).unwrap();
    let leaf = org
        .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
        .unwrap();
    let identity = verify::verify_agent_certificate(
        leaf.der(),
        &OrgTrust {
            trust_domain: &td(),
            root: pki.root.certificate_der(),
            org_intermediate: pki.org.certificate_der(),
            revoked_serials: &HashSet::new(),
        },
        Utc::now(),
    )
    .unwrap();
    assert_eq!(identity.spiffe_id, agent);

    let new_agent = coffer_pki::SpiffeId::new(td(), new_org, uuid::Uuid::now_v7());
    let csr = AgentCsr::parse(&rcgen_csr(&rcgen::PKCS_ED25519, |_| {}), &new_agent).unwrap();
    let leaf = intermediate
        .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
        .unwrap();
    verify::verify_agent_certificate(
        leaf.der(),
        &OrgTrust {
            trust_domain: &td(),
            root: pki.root.certificate_der(),
            org_intermediate: intermediate.certificate_der(),
            revoked_serials: &HashSet::new(),
        },
        Utc::now(),
    )
    .unwrap();
}

#[tokio::test]
async fn p2_a_wrapped_ca_key_does_not_unwrap_for_another_org_or_ca() {
    let pki = Hierarchy::new();
    let (org_b, ca_b) = pki.other_org();
    let second_a = pki
        .root
        .create_org_intermediate(pki.org_id, Utc::now(), YEAR)
        .unwrap();
    let (_dir, kms) = local_kms();
    let wrapped_a = pki.org.wrap_key(&kms).await.unwrap();
    let wrapped_root = pki.root.wrap_key(&kms).await.unwrap();

    let denied = |err: Error| {
        assert!(
            matches!(err, Error::Kms(KmsError::Denied(_))),
            "expected a KMS denial, got {err:?}"
        );
    };
    // Org A's key copied to org B's row: another org in the context.
    denied(
        CertificateAuthority::from_wrapped_key(
            &kms,
            CaRole::Org(org_b),
            &td(),
            ca_b.certificate_der(),
            &wrapped_a,
        )
        .await
        .unwrap_err(),
    );
    // Org A's key presented for org A's other intermediate: another object in the context.
    denied(
        CertificateAuthority::from_wrapped_key(
            &kms,
            CaRole::Org(pki.org_id),
            &td(),
            second_a.certificate_der(),
            &wrapped_a,
        )
        .await
        .unwrap_err(),
    );
    // The root key presented as org A's intermediate key.
    denied(
        CertificateAuthority::from_wrapped_key(
            &kms,
            CaRole::Org(pki.org_id),
            &td(),
            pki.org.certificate_der(),
            &wrapped_root,
        )
        .await
        .unwrap_err(),
    );
    // And the message says which subsystem refused, without key material.
    let err = CertificateAuthority::from_wrapped_key(
        &kms,
        CaRole::Org(org_b),
        &td(),
        ca_b.certificate_der(),
        &wrapped_a,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ca key: kms denied the operation"),
        "{err}"
    );
}

#[tokio::test]
async fn p8_ca_keys_never_print() {
    let pki = Hierarchy::new();
    let pkcs8 = ca_key_pkcs8(&pki.org).await;
    let debug = format!("{:?} {:?}", pki.org, pki.root);
    assert!(debug.contains("CaKey([REDACTED])"), "{debug}");
    // Neither as a byte list, nor as hex, does any run of the key appear.
    let as_list = format!("{:?}", &pkcs8[pkcs8.len() - 8..]);
    let as_list = as_list.trim_start_matches('[').trim_end_matches(']');
    assert!(!debug.contains(as_list), "{debug}");
    assert!(
        !debug.contains(&hex::encode(&pkcs8[pkcs8.len() - 8..])),
        "{debug}"
    );
}
