//! Why Coffer verifies agent chains itself: rustls-webpki (what rustls's stock
//! `WebPkiClientVerifier` uses) refuses every chain under a URI name constraint.

use chrono::{TimeDelta, Utc};
use coffer_pki::{AgentCsr, DEFAULT_AGENT_TTL};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

use crate::helpers::{Hierarchy, forge, leaf_params, offset, rcgen_csr};

fn webpki_verify(
    root: &CertificateDer<'_>,
    intermediate: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
) -> Result<(), webpki::Error> {
    let anchor = anchor_from_trusted_cert(root)?;
    let leaf = EndEntityCert::try_from(leaf)?;
    leaf.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256, webpki::ring::ED25519],
        &[anchor],
        std::slice::from_ref(intermediate),
        UnixTime::now(),
        KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
}

#[tokio::test]
async fn webpki_refuses_coffer_chains_because_of_the_uri_name_constraint() {
    let pki = Hierarchy::new();
    let csr = AgentCsr::parse(
        &rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |_| {}),
        &pki.agent(),
    )
    .unwrap();
    let leaf = pki
        .org
        .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
        .unwrap();
    let err = webpki_verify(
        pki.root.certificate_der(),
        pki.org.certificate_der(),
        leaf.der(),
    )
    .unwrap_err();
    assert_eq!(err, webpki::Error::NameConstraintViolation);

    // Control: the same kind of leaf under an intermediate without the constraint verifies, so
    // the constraint, and nothing else, is what webpki refuses.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "unconstrained");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(Utc::now() - TimeDelta::hours(1));
    params.not_after = offset(Utc::now() + TimeDelta::days(1));
    let unconstrained = forge(&pki.root, &params, &key).await;
    let issuer = rcgen::Issuer::from_ca_cert_der(&unconstrained, &key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params(&pki.agent().to_uri())
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    webpki_verify(pki.root.certificate_der(), &unconstrained, leaf.der()).unwrap();
}
