//! Stock `openssl verify` and Coffer's verifier, side by side on the same chains.

use std::collections::HashSet;

use chrono::{TimeDelta, Utc};
use coffer_pki::verify::{self, Error, OrgTrust, Position};
use coffer_pki::{AgentCertificate, AgentCsr, DEFAULT_AGENT_TTL, RevokedCertificate, Serial};
use rcgen::{BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyPair, KeyUsagePurpose};

use crate::helpers::{CRL_VALIDITY, Hierarchy, Scratch, forge, leaf_params, offset, rcgen_csr, td};

fn issue(pki: &Hierarchy, at: chrono::DateTime<Utc>) -> AgentCertificate {
    let csr = AgentCsr::parse(
        &rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |_| {}),
        &pki.agent(),
    )
    .unwrap();
    pki.org
        .issue_agent_certificate(&csr, at, DEFAULT_AGENT_TTL)
        .unwrap()
}

#[test]
fn p6_openssl_and_coffer_agree_on_valid_expired_and_revoked_agents() {
    let pki = Hierarchy::new();
    let now = Utc::now();
    let valid = issue(&pki, now);
    let expired = issue(&pki, now - TimeDelta::days(3));
    let revoked = issue(&pki, now);

    let revocations = [RevokedCertificate {
        serial: revoked.serial().clone(),
        revoked_at: now - TimeDelta::minutes(1),
    }];
    let crl = pki
        .org
        .sign_crl(&revocations, 7, now, CRL_VALIDITY)
        .unwrap();
    let revoked_serials: HashSet<Serial> = revocations.iter().map(|r| r.serial.clone()).collect();

    let scratch = Scratch::new();
    let root = scratch.write("root.pem", pki.root.certificate_pem());
    let org = scratch.write("org.pem", pki.org.certificate_pem());
    let crl = scratch.write("crl.pem", crl.pem());
    let trust = OrgTrust {
        trust_domain: &td(),
        root: pki.root.certificate_der(),
        org_intermediate: pki.org.certificate_der(),
        revoked_serials: &revoked_serials,
    };

    // Valid: both accept.
    let leaf = scratch.write("valid.pem", valid.pem());
    let (ok, text) = scratch.openssl_verify(&root, &org, &crl, &leaf);
    assert!(ok && text.contains(": OK"), "{text}");
    let identity = verify::verify_agent_certificate(valid.der(), &trust, Utc::now()).unwrap();
    assert_eq!(&identity.serial, valid.serial());

    // Expired: both refuse, for that reason.
    let leaf = scratch.write("expired.pem", expired.pem());
    let (ok, text) = scratch.openssl_verify(&root, &org, &crl, &leaf);
    assert!(!ok && text.contains("certificate has expired"), "{text}");
    let err = verify::verify_agent_certificate(expired.der(), &trust, Utc::now()).unwrap_err();
    assert_eq!(
        err,
        Error::Expired {
            which: Position::Leaf,
            not_after: expired.not_after()
        }
    );

    // Revoked: both refuse, for that reason.
    let leaf = scratch.write("revoked.pem", revoked.pem());
    let (ok, text) = scratch.openssl_verify(&root, &org, &crl, &leaf);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let err = verify::verify_agent_certificate(revoked.der(), &trust, Utc::now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("leaf certificate serial {} is revoked", revoked.serial())
    );

    // And the verifier's clock is the caller's: at a time inside the expired leaf's window it
    // is accepted, before its notBefore it is not yet valid.
    verify::verify_agent_certificate(
        expired.der(),
        &trust,
        expired.not_after() - TimeDelta::hours(1),
    )
    .unwrap();
    let err = verify::verify_agent_certificate(
        valid.der(),
        &trust,
        valid.not_before() - TimeDelta::seconds(1),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotYetValid {
                which: Position::Leaf,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn p6_an_agent_of_org_b_is_refused_for_org_a() {
    let pki = Hierarchy::new();
    let (org_b_id, org_b) = pki.other_org();
    let csr = AgentCsr::parse(
        &rcgen_csr(&rcgen::PKCS_ED25519, |_| {}),
        &coffer_pki::SpiffeId::new(td(), org_b_id, uuid::Uuid::now_v7()),
    )
    .unwrap();
    let leaf_b = org_b
        .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
        .unwrap();

    // Checked against org A's intermediate (e.g. a caller that expects org A).
    let err = verify::verify_agent_certificate(
        leaf_b.der(),
        &OrgTrust {
            trust_domain: &td(),
            root: pki.root.certificate_der(),
            org_intermediate: pki.org.certificate_der(),
            revoked_serials: &HashSet::new(),
        },
        Utc::now(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::OrgMismatch {
            leaf_org: org_b_id,
            intermediate_org: pki.org_id
        }
    );
}

/// The case the name constraint cannot cover: org B's intermediate key (stolen, or misused)
/// signs a leaf naming an agent of org A. OpenSSL accepts it, since the constraint only pins
/// the trust domain; Coffer's verifier refuses it whichever intermediate the caller pairs it
/// with.
#[tokio::test]
async fn p6_org_b_ca_cannot_vouch_for_an_agent_of_org_a() {
    let pki = Hierarchy::new();
    let (org_b_id, org_b) = pki.other_org();
    let agent_of_a = pki.agent();
    let key = KeyPair::generate().unwrap();
    let forged = forge(&org_b, &leaf_params(&agent_of_a.to_uri()), &key).await;

    let scratch = Scratch::new();
    let root = scratch.write("root.pem", pki.root.certificate_pem());
    let org_b_pem = scratch.write("org-b.pem", org_b.certificate_pem());
    let crl = scratch.write(
        "crl.pem",
        org_b
            .sign_crl(&[], 1, Utc::now(), CRL_VALIDITY)
            .unwrap()
            .pem(),
    );
    let leaf = scratch.write("forged.pem", crate::helpers::pem("CERTIFICATE", &forged));
    let (ok, text) = scratch.openssl_verify(&root, &org_b_pem, &crl, &leaf);
    assert!(ok, "openssl is expected to accept this chain: {text}");

    // The caller looks up the intermediate of the org the leaf names: org A's.
    let spiffe_id = verify::agent_spiffe_id(&forged, &td()).unwrap();
    assert_eq!(spiffe_id, agent_of_a);
    let no_revocations = HashSet::new();
    let trust_a = OrgTrust {
        trust_domain: &td(),
        root: pki.root.certificate_der(),
        org_intermediate: pki.org.certificate_der(),
        revoked_serials: &no_revocations,
    };
    let err = verify::verify_agent_certificate(&forged, &trust_a, Utc::now()).unwrap_err();
    assert_eq!(
        err,
        Error::WrongIssuer {
            which: Position::Leaf,
            issuer: Position::OrgIntermediate
        }
    );
    // Even paired with the intermediate that did sign it, the org path rule refuses it.
    let trust_b = OrgTrust {
        org_intermediate: org_b.certificate_der(),
        ..trust_a
    };
    let err = verify::verify_agent_certificate(&forged, &trust_b, Utc::now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "leaf certificate names org {}, but the org intermediate belongs to org {}",
            pki.org_id, org_b_id
        )
    );
}

/// The trust-domain constraint is enforced by stock OpenSSL and by Coffer alike.
#[tokio::test]
async fn p6_openssl_and_coffer_refuse_a_leaf_outside_the_trust_domain() {
    let pki = Hierarchy::new();
    let foreign = format!(
        "spiffe://evil.example/org/{}/agent/{}",
        pki.org_id,
        uuid::Uuid::now_v7()
    );
    let key = KeyPair::generate().unwrap();
    let forged = forge(&pki.org, &leaf_params(&foreign), &key).await;

    let scratch = Scratch::new();
    let root = scratch.write("root.pem", pki.root.certificate_pem());
    let org = scratch.write("org.pem", pki.org.certificate_pem());
    let crl = scratch.write(
        "crl.pem",
        pki.org
            .sign_crl(&[], 1, Utc::now(), CRL_VALIDITY)
            .unwrap()
            .pem(),
    );
    let leaf = scratch.write("foreign.pem", crate::helpers::pem("CERTIFICATE", &forged));
    let (ok, text) = scratch.openssl_verify(&root, &org, &crl, &leaf);
    assert!(
        !ok && text.contains("permitted subtree violation"),
        "{text}"
    );

    let err = verify::agent_spiffe_id(&forged, &td()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "leaf certificate subjectAltName: spiffe id trust domain is not coffer.example"
    );
}

/// Why the intermediate is not constrained to `spiffe://<td>/org/<org_id>/` literally: stock
/// OpenSSL compares a URI constraint with the URI's host only, so that constraint refuses every
/// agent certificate, including correct ones. (Documented in the crate docs.)
#[tokio::test]
async fn openssl_refuses_every_leaf_under_a_literal_org_path_constraint() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let org_key = KeyPair::generate().unwrap();

    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "literal path constraint");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(Utc::now() - TimeDelta::hours(1));
    params.not_after = offset(Utc::now() + TimeDelta::days(1));
    let literal = format!("spiffe://coffer.example/org/{}/", pki.org_id);
    let mut nc = CustomExtension::from_oid_content(&[2, 5, 29, 30], name_constraints_der(&literal));
    nc.set_criticality(true);
    params.custom_extensions = vec![nc];
    let intermediate = forge(&pki.root, &params, &org_key).await;

    let leaf_key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&intermediate, &org_key).unwrap();
    let leaf = leaf_params(&agent.to_uri())
        .signed_by(&leaf_key, &issuer)
        .unwrap();

    let scratch = Scratch::new();
    let root = scratch.write("root.pem", pki.root.certificate_pem());
    let org = scratch.write("org.pem", crate::helpers::pem("CERTIFICATE", &intermediate));
    let leaf = scratch.write("leaf.pem", leaf.pem());
    let (ok, text) = scratch.openssl(&[
        "verify",
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        org.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(
        !ok && text.contains("permitted subtree violation"),
        "{text}"
    );
}

/// NameConstraints with one permitted URI subtree, DER (all lengths < 128 here).
fn name_constraints_der(uri: &str) -> Vec<u8> {
    let general_name = [&[0x86, uri.len() as u8][..], uri.as_bytes()].concat();
    let subtree = [&[0x30, general_name.len() as u8][..], &general_name].concat();
    let permitted = [&[0xa0, subtree.len() as u8][..], &subtree].concat();
    [&[0x30, permitted.len() as u8][..], &permitted].concat()
}

/// Leaves signed by the right org CA but outside the agent profile: both verifiers refuse the
/// ones a stock TLS client check covers, and Coffer's refuses the rest too.
#[tokio::test]
async fn p6_leaves_outside_the_agent_profile_are_refused() {
    let pki = Hierarchy::new();
    let agent = pki.agent().to_uri();
    let scratch = Scratch::new();
    let root = scratch.write("root.pem", pki.root.certificate_pem());
    let org = scratch.write("org.pem", pki.org.certificate_pem());
    let crl = scratch.write(
        "crl.pem",
        pki.org
            .sign_crl(&[], 1, Utc::now(), CRL_VALIDITY)
            .unwrap()
            .pem(),
    );
    let no_revocations = HashSet::new();
    let trust = OrgTrust {
        trust_domain: &td(),
        root: pki.root.certificate_der(),
        org_intermediate: pki.org.certificate_der(),
        revoked_serials: &no_revocations,
    };

    let server_only = {
        let mut p = leaf_params(&agent);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p
    };
    let unknown_critical = {
        let mut p = leaf_params(&agent);
        let mut ext =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions = vec![ext];
        p
    };
    let two_names = {
        let mut p = leaf_params(&agent);
        p.subject_alt_names
            .push(rcgen::SanType::DnsName("agent.example".try_into().unwrap()));
        p
    };
    let a_ca = {
        let mut p = leaf_params(&agent);
        // With a subject, so strict openssl judges the CA flag and not the empty name.
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "agent");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        p
    };
    let no_digital_signature = {
        let mut p = leaf_params(&agent);
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        p
    };

    // (params, what openssl says or None if stock openssl accepts it, Coffer's message)
    let cases = [
        (
            server_only,
            Some("unsuitable certificate purpose"),
            "leaf certificate extendedKeyUsage lacks clientAuth",
        ),
        (
            unknown_critical,
            Some("unhandled critical extension"),
            "leaf certificate has a critical extension Coffer does not process",
        ),
        (
            two_names,
            None,
            "leaf certificate subjectAltName must be exactly one URI, the agent's SPIFFE id",
        ),
        (a_ca, None, "leaf certificate must not be a CA"),
        (
            no_digital_signature,
            Some("unsuitable certificate purpose"),
            "leaf certificate keyUsage lacks digitalSignature",
        ),
    ];
    for (i, (params, openssl_says, coffer_says)) in cases.into_iter().enumerate() {
        let key = KeyPair::generate().unwrap();
        let leaf = forge(&pki.org, &params, &key).await;
        let path = scratch.write(
            &format!("leaf-{i}.pem"),
            crate::helpers::pem("CERTIFICATE", &leaf),
        );
        let (ok, text) = scratch.openssl_verify(&root, &org, &crl, &path);
        match openssl_says {
            Some(reason) => assert!(!ok && text.contains(reason), "case {i}: {text}"),
            None => assert!(ok, "case {i}: stock openssl was expected to accept: {text}"),
        }
        let err = verify::verify_agent_certificate(&leaf, &trust, Utc::now()).unwrap_err();
        assert_eq!(err.to_string(), coffer_says, "case {i}");
    }
}
