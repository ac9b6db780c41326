//! CSR screening: what is accepted, what is refused, and that each refusal names its rule.

use chrono::Utc;
use coffer_pki::csr::{Error, MAX_CSR_LEN};
use coffer_pki::{AgentCsr, DEFAULT_AGENT_TTL, SpiffeId};
use rcgen::{
    BasicConstraints, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, SanType,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::helpers::{Hierarchy, Scratch, pem, rcgen_csr};

fn refused(input: &[u8], agent: &SpiffeId) -> (Error, String) {
    let err = AgentCsr::parse(input, agent).unwrap_err();
    let message = err.to_string();
    (err, message)
}

#[test]
fn pem_and_der_are_both_accepted() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let der = rcgen_csr(&PKCS_ECDSA_P256_SHA256, |_| {});
    let from_der = AgentCsr::parse(&der, &agent).unwrap();
    let from_pem = AgentCsr::parse(pem("CERTIFICATE REQUEST", &der).as_bytes(), &agent).unwrap();
    assert_eq!(from_der, from_pem);
    let newhdr = pem("NEW CERTIFICATE REQUEST", &der);
    AgentCsr::parse(format!("\n  {newhdr}").as_bytes(), &agent).unwrap();
}

#[test]
fn garbage_truncated_empty_and_oversized_input_is_refused() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let der = rcgen_csr(&PKCS_ECDSA_P256_SHA256, |_| {});

    let (_, message) = refused(b"\x01\x02 definitely not a csr", &agent);
    assert_eq!(
        message,
        "csr is not a DER-encoded PKCS#10 certification request"
    );
    let (err, _) = refused(&der[..der.len() / 2], &agent);
    assert_eq!(err, Error::MalformedDer);
    let mut trailing = der.clone();
    trailing.push(0);
    assert_eq!(refused(&trailing, &agent).0, Error::MalformedDer);

    assert_eq!(refused(b"", &agent).1, "csr is empty");
    let (_, message) = refused(&vec![0x30; MAX_CSR_LEN + 1], &agent);
    assert_eq!(message, "csr is 16385 bytes; it must be at most 16384");

    let garbage_pem = "-----BEGIN CERTIFICATE REQUEST-----\n!!!not base64!!!\n-----END CERTIFICATE REQUEST-----\n";
    assert_eq!(
        refused(garbage_pem.as_bytes(), &agent).1,
        "csr PEM is malformed; it must be one CERTIFICATE REQUEST block"
    );
    let two = format!(
        "{}{}",
        pem("CERTIFICATE REQUEST", &der),
        pem("CERTIFICATE REQUEST", &der)
    );
    assert_eq!(refused(two.as_bytes(), &agent).0, Error::MalformedPem);
    let certificate = pem("CERTIFICATE", pki.org.certificate_der());
    assert_eq!(
        refused(certificate.as_bytes(), &agent).1,
        "csr PEM label is CERTIFICATE; it must be CERTIFICATE REQUEST"
    );
}

#[test]
fn a_flipped_signature_byte_fails_proof_of_possession() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ED25519] {
        let mut der = rcgen_csr(alg, |_| {});
        // The signature BIT STRING is the last element of the CSR.
        *der.last_mut().unwrap() ^= 0x01;
        let (err, message) = refused(&der, &agent);
        assert_eq!(err, Error::BadSignature, "{alg:?}");
        assert_eq!(message, "csr signature does not verify");
    }
}

#[test]
fn unsupported_key_types_are_refused_by_name() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let scratch = Scratch::new();

    let rsa = scratch.openssl_csr("rsa", &["rsa:2048"], &[]);
    assert_eq!(
        refused(&rsa, &agent).1,
        "csr key type RSA is not supported; use ECDSA P-256 or Ed25519"
    );
    let p384 = scratch.openssl_csr("p384", &["ec", "-pkeyopt", "ec_paramgen_curve:P-384"], &[]);
    assert_eq!(
        refused(&p384, &agent).1,
        "csr key type ECDSA P-384 is not supported; use ECDSA P-256 or Ed25519"
    );
    let p384 = rcgen_csr(&PKCS_ECDSA_P384_SHA384, |_| {});
    assert_eq!(
        refused(&p384, &agent).0,
        Error::UnsupportedKey {
            key_type: "ECDSA P-384".to_owned()
        }
    );
}

#[test]
fn a_p256_csr_signed_with_another_hash_is_refused() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let scratch = Scratch::new();
    let csr = scratch.openssl_csr(
        "sha384",
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["-sha384"],
    );
    assert_eq!(
        refused(&csr, &agent).1,
        "csr signature algorithm must be ecdsa-with-SHA256 for an ECDSA P-256 key or Ed25519 for an Ed25519 key"
    );
}

#[test]
fn p6_a_csr_asking_for_a_ca_certificate_is_refused() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let expected = "csr must not request a CA certificate (basicConstraints CA:true)";

    let csr = rcgen_csr(&PKCS_ECDSA_P256_SHA256, |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    assert_eq!(refused(&csr, &agent).1, expected);

    let scratch = Scratch::new();
    let csr = scratch.openssl_csr(
        "ca",
        &["ed25519"],
        &["-addext", "basicConstraints=critical,CA:TRUE"],
    );
    assert_eq!(refused(&csr, &agent).1, expected);

    // CA:false is a harmless request.
    let csr = rcgen_csr(&PKCS_ECDSA_P256_SHA256, |p| p.is_ca = IsCa::ExplicitNoCa);
    AgentCsr::parse(&csr, &agent).unwrap();
}

#[test]
fn p6_a_csr_asking_for_any_other_name_is_refused() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let own = SanType::URI(agent.to_uri().try_into().unwrap());

    // Its own SPIFFE id, alone, is fine.
    let csr = rcgen_csr(&PKCS_ED25519, |p| p.subject_alt_names = vec![own.clone()]);
    AgentCsr::parse(&csr, &agent).unwrap();

    let csr = rcgen_csr(&PKCS_ED25519, |p| {
        p.subject_alt_names = vec![
            own.clone(),
            SanType::DnsName("evil.example".try_into().unwrap()),
        ];
    });
    assert_eq!(
        refused(&csr, &agent).1,
        format!(
            "csr subjectAltName may only contain the agent's SPIFFE id {agent}; it also asks for a DNS name"
        )
    );

    // Another agent of the same org, asked for through stock openssl.
    let scratch = Scratch::new();
    let other = pki.agent();
    let csr = scratch.openssl_csr(
        "other",
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["-addext", &format!("subjectAltName=URI:{other}")],
    );
    let (err, message) = refused(&csr, &agent);
    assert_eq!(
        err,
        Error::ForeignName {
            expected: agent.to_uri(),
            found: "another URI"
        }
    );
    assert!(
        message.ends_with("it also asks for another URI"),
        "{message}"
    );
}

#[test]
fn the_subject_and_other_requested_extensions_never_reach_the_certificate() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let csr = rcgen_csr(&PKCS_ECDSA_P256_SHA256, |p| {
        p.distinguished_name
            .push(DnType::CommonName, "Coffer platform root CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    let csr = AgentCsr::parse(&csr, &agent).unwrap();
    let issued = pki
        .org
        .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(issued.der()).unwrap();
    assert!(leaf.subject().iter_attributes().next().is_none());
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
}
