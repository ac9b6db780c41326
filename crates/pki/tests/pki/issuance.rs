//! Issuance round trips: root → org intermediate → agent leaves, and CRLs, read back with
//! x509-parser and with stock openssl.

use std::collections::HashSet;

use chrono::{TimeDelta, Utc};
use coffer_pki::verify::{self, OrgTrust};
use coffer_pki::{
    AgentCsr, CaRole, CertificateAuthority, DEFAULT_AGENT_TTL, Error, KeyAlgorithm,
    NOT_BEFORE_BACKDATE, RevokedCertificate, Serial,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_X509_EXT_NAME_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::helpers::{CRL_VALIDITY, DAY, Hierarchy, Scratch, YEAR, local_kms, rcgen_csr, td};

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => uri.to_string(),
            other => panic!("unexpected name {other:?}"),
        })
        .collect()
}

#[test]
fn root_and_org_intermediate_have_the_ca_profile() {
    let pki = Hierarchy::new();
    let root = parse(pki.root.certificate_der());
    let org = parse(pki.org.certificate_der());

    assert_eq!(pki.root.role(), CaRole::PlatformRoot);
    let bc = root.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(1));
    assert_eq!(uris(&root), ["spiffe://coffer.example"]);
    assert_eq!(root.subject(), root.issuer());
    root.verify_signature(None).unwrap();

    assert_eq!(pki.org.role(), CaRole::Org(pki.org_id));
    let bc = org.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = org.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    assert_eq!(
        uris(&org),
        [format!("spiffe://coffer.example/org/{}", pki.org_id)]
    );
    assert!(org.subject().to_string().contains(&pki.org_id.to_string()));

    // The name constraint: critical, one permitted URI subtree, the trust domain host (the
    // crate docs explain why not the org path).
    let nc = org.name_constraints().unwrap().unwrap();
    assert!(nc.critical);
    assert!(nc.value.excluded_subtrees.is_none());
    let permitted = nc.value.permitted_subtrees.as_ref().unwrap();
    assert_eq!(permitted.len(), 1);
    assert_eq!(permitted[0].base, GeneralName::URI("coffer.example"));
    assert!(
        org.extensions()
            .iter()
            .any(|e| e.oid == OID_X509_EXT_NAME_CONSTRAINTS)
    );

    assert_eq!(org.issuer(), root.subject());
    org.verify_signature(Some(root.public_key())).unwrap();
    assert!(pki.org.not_after() < pki.root.not_after());
    assert_eq!(
        pki.org.not_after() - pki.org.not_before(),
        TimeDelta::from_std(YEAR + NOT_BEFORE_BACKDATE).unwrap()
    );
}

#[test]
fn p6_agent_certificate_from_a_p256_csr() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let csr = AgentCsr::parse(&rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |_| {}), &agent).unwrap();
    assert_eq!(csr.key_algorithm(), KeyAlgorithm::EcdsaP256);
    let now = Utc::now();
    let issued = pki
        .org
        .issue_agent_certificate(&csr, now, DEFAULT_AGENT_TTL)
        .unwrap();
    let leaf = parse(issued.der());

    // The only name is the SPIFFE id, critical because the subject is empty.
    assert_eq!(uris(&leaf), [agent.to_uri()]);
    assert!(leaf.subject().iter_attributes().next().is_none());
    let san = leaf
        .extensions()
        .iter()
        .find(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
        .unwrap();
    assert!(san.critical);

    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);

    // A random 128-bit serial, positive, the one reported.
    let serial = Serial::from_be_bytes(&leaf.tbs_certificate.serial.to_bytes_be()).unwrap();
    assert_eq!(&serial, issued.serial());
    assert!(
        serial.bit_len() <= 128 && serial.bit_len() > 64,
        "{serial:?}"
    );
    assert!(
        leaf.raw_serial()[0] & 0x80 == 0,
        "serial must encode as positive"
    );

    // 24 h TTL from issue time; notBefore backdated a minute for clock skew.
    let issued_at = now.timestamp();
    assert_eq!(leaf.validity().not_after.timestamp(), issued_at + 24 * 3600);
    assert_eq!(leaf.validity().not_before.timestamp(), issued_at - 60);
    assert_eq!(issued.not_after().timestamp(), issued_at + 24 * 3600);

    // The key is the CSR's, byte for byte.
    assert_eq!(leaf.public_key().raw, csr.public_key_spki_der());
    assert_eq!(leaf.issuer(), parse(pki.org.certificate_der()).subject());

    let identity = verify::verify_agent_certificate(
        issued.der(),
        &OrgTrust {
            trust_domain: &td(),
            root: pki.root.certificate_der(),
            org_intermediate: pki.org.certificate_der(),
            revoked_serials: &HashSet::new(),
        },
        now,
    )
    .unwrap();
    assert_eq!(identity.org_id, pki.org_id);
    assert_eq!(identity.agent_id, agent.agent_id());
    assert_eq!(identity.spiffe_id, agent);
    assert_eq!(&identity.serial, issued.serial());
    assert_eq!(identity.not_after, issued.not_after());
    assert_eq!(identity.public_key_spki_der, csr.public_key_spki_der());
}

#[test]
fn agent_certificate_from_an_ed25519_csr() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let csr = AgentCsr::parse(&rcgen_csr(&rcgen::PKCS_ED25519, |_| {}), &agent).unwrap();
    assert_eq!(csr.key_algorithm(), KeyAlgorithm::Ed25519);
    let issued = pki
        .org
        .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
        .unwrap();
    let leaf = parse(issued.der());
    assert_eq!(leaf.public_key().raw, csr.public_key_spki_der());
    assert_eq!(uris(&leaf), [agent.to_uri()]);
    // The CA still signs with its P-256 key.
    leaf.verify_signature(Some(parse(pki.org.certificate_der()).public_key()))
        .unwrap();
    assert_eq!(issued.key_algorithm(), KeyAlgorithm::Ed25519);
}

#[test]
fn agent_certificates_from_openssl_csrs_pass_openssl_verify() {
    let pki = Hierarchy::new();
    let scratch = Scratch::new();
    let root = scratch.write("root.pem", pki.root.certificate_pem());
    let org = scratch.write("org.pem", pki.org.certificate_pem());
    let crl = pki.org.sign_crl(&[], 1, Utc::now(), CRL_VALIDITY).unwrap();
    let crl = scratch.write("crl.pem", crl.pem());

    for (name, newkey, algorithm) in [
        (
            "p256",
            &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            KeyAlgorithm::EcdsaP256,
        ),
        ("ed25519", &["ed25519"][..], KeyAlgorithm::Ed25519),
    ] {
        let agent = pki.agent();
        let pem = scratch.openssl_csr(name, newkey, &[]);
        let csr = AgentCsr::parse(&pem, &agent).unwrap();
        assert_eq!(csr.key_algorithm(), algorithm);
        let issued = pki
            .org
            .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
            .unwrap();
        let leaf = scratch.write(&format!("{name}.pem"), issued.pem());

        let (ok, text) = scratch.openssl_verify(&root, &org, &crl, &leaf);
        assert!(ok, "{name}: {text}");

        // The certificate carries the key openssl generated: openssl agrees that the private
        // key it wrote matches the certificate's public key.
        let key_pub = scratch.openssl_ok(&["pkey", "-in", &format!("{name}.key"), "-pubout"]);
        let cert_pub =
            scratch.openssl_ok(&["x509", "-in", &format!("{name}.pem"), "-noout", "-pubkey"]);
        assert_eq!(key_pub, cert_pub, "{name}");
        let serial =
            scratch.openssl_ok(&["x509", "-in", &format!("{name}.pem"), "-noout", "-serial"]);
        assert_eq!(
            serial.trim(),
            format!("serial={}", issued.serial().to_hex().to_uppercase())
        );
    }
}

#[test]
fn serials_differ_between_certificates_for_the_same_key() {
    let pki = Hierarchy::new();
    let agent = pki.agent();
    let csr = AgentCsr::parse(&rcgen_csr(&rcgen::PKCS_ECDSA_P256_SHA256, |_| {}), &agent).unwrap();
    let serials: HashSet<Serial> = (0..8)
        .map(|_| {
            pki.org
                .issue_agent_certificate(&csr, Utc::now(), DEFAULT_AGENT_TTL)
                .unwrap()
                .serial()
                .clone()
        })
        .collect();
    assert_eq!(serials.len(), 8);
}

#[test]
fn ttl_bounds_and_the_issuer_lifetime_are_enforced() {
    let pki = Hierarchy::new();
    let csr = AgentCsr::parse(&rcgen_csr(&rcgen::PKCS_ED25519, |_| {}), &pki.agent()).unwrap();
    let now = Utc::now();
    let too_short = pki
        .org
        .issue_agent_certificate(&csr, now, std::time::Duration::ZERO)
        .unwrap_err();
    assert_eq!(too_short.to_string(), "ttl must be at least 300s");
    let too_long = pki
        .org
        .issue_agent_certificate(&csr, now, std::time::Duration::from_secs(31 * 24 * 3600))
        .unwrap_err();
    assert_eq!(too_long.to_string(), "ttl must be at most 2592000s");

    // Issued near the end of the intermediate's life, a 24 h certificate would outlive it.
    let late = pki.org.not_after() - TimeDelta::hours(1);
    let err = pki
        .org
        .issue_agent_certificate(&csr, late, DEFAULT_AGENT_TTL)
        .unwrap_err();
    assert!(matches!(err, Error::OutlivesIssuer { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("agent certificate would expire at"),
        "{err}"
    );

    // Same rule for an intermediate that would outlive the root.
    let err = pki
        .root
        .create_org_intermediate(pki.org_id, now, 20 * YEAR)
        .unwrap_err();
    assert!(matches!(err, Error::OutlivesIssuer { .. }), "{err}");
}

#[test]
fn only_the_root_signs_intermediates_and_only_the_agents_org_ca_issues() {
    let pki = Hierarchy::new();
    let now = Utc::now();
    assert_eq!(
        pki.org
            .create_org_intermediate(pki.org_id, now, YEAR)
            .unwrap_err()
            .to_string(),
        "only the platform root CA signs org intermediates"
    );

    let csr = AgentCsr::parse(&rcgen_csr(&rcgen::PKCS_ED25519, |_| {}), &pki.agent()).unwrap();
    assert_eq!(
        pki.root
            .issue_agent_certificate(&csr, now, DEFAULT_AGENT_TTL)
            .unwrap_err()
            .to_string(),
        "agent certificates are signed by an org intermediate, not the platform root"
    );
    let (other_org, other) = pki.other_org();
    let err = other
        .issue_agent_certificate(&csr, now, DEFAULT_AGENT_TTL)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "csr was checked for {}, which this CA (org {other_org}) cannot issue",
            csr.spiffe_id()
        )
    );
    assert_eq!(
        pki.root
            .sign_crl(&[], 1, now, CRL_VALIDITY)
            .unwrap_err()
            .to_string(),
        "CRLs are signed by an org intermediate, not the platform root"
    );
}

#[test]
fn p6_crl_lists_revoked_serials_with_times_and_number() {
    let pki = Hierarchy::new();
    let scratch = Scratch::new();
    let now = Utc::now();
    let revoked = [
        RevokedCertificate {
            serial: Serial::random(),
            revoked_at: now - TimeDelta::hours(2),
        },
        RevokedCertificate {
            serial: "00ff00".parse().unwrap(),
            revoked_at: now - TimeDelta::minutes(5),
        },
    ];
    let crl = pki.org.sign_crl(&revoked, 42, now, CRL_VALIDITY).unwrap();
    assert_eq!(crl.number(), 42);
    assert_eq!(crl.this_update().timestamp(), now.timestamp());
    assert_eq!(crl.next_update() - crl.this_update(), DAY);

    let (rest, parsed) = CertificateRevocationList::from_der(crl.der()).unwrap();
    assert!(rest.is_empty());
    let org = parse(pki.org.certificate_der());
    assert_eq!(parsed.issuer(), org.subject());
    assert_eq!(parsed.last_update().timestamp(), now.timestamp());
    assert_eq!(
        parsed.next_update().unwrap().timestamp(),
        now.timestamp() + 24 * 3600
    );
    assert_eq!(parsed.crl_number().unwrap().to_u64_digits(), [42]);
    let listed: Vec<(Serial, i64)> = parsed
        .iter_revoked_certificates()
        .map(|r| {
            (
                Serial::from_be_bytes(&r.user_certificate.to_bytes_be()).unwrap(),
                r.revocation_date.timestamp(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        revoked
            .iter()
            .map(|r| (r.serial.clone(), r.revoked_at.timestamp()))
            .collect::<Vec<_>>()
    );
    // The authorityKeyIdentifier names the intermediate's key.
    let crl_akid = parsed
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(akid) => akid.key_identifier.clone(),
            _ => None,
        })
        .unwrap();
    let org_skid = org
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(crl_akid.0, org_skid.0);

    // Stock openssl checks the signature against the intermediate and reads the same entries.
    scratch.write("org.pem", pki.org.certificate_pem());
    scratch.write("crl.pem", crl.pem());
    let text = scratch.openssl_ok(&[
        "crl", "-in", "crl.pem", "-CAfile", "org.pem", "-noout", "-text",
    ]);
    assert!(text.contains("verify OK"), "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                42"),
        "{text}"
    );
    assert!(text.contains("Serial Number: FF00"), "{text}");
    assert!(
        text.contains(&format!(
            "Serial Number: {}",
            revoked[0].serial.to_hex().to_uppercase()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn ca_roles_must_match_their_certificates() {
    // A CA is reloaded from storage by role; a certificate for another role is refused before
    // the KMS is asked to unwrap anything.
    let pki = Hierarchy::new();
    let (_dir, kms) = local_kms();
    let wrapped = pki.org.wrap_key(&kms).await.unwrap();
    for (role, message) in [
        (
            CaRole::PlatformRoot,
            "ca certificate is not the platform root of this trust domain",
        ),
        (
            CaRole::Org(coffer_types::OrgId::new()),
            "ca certificate is not this org's intermediate in this trust domain",
        ),
    ] {
        let err = CertificateAuthority::from_wrapped_key(
            &kms,
            role,
            &td(),
            pki.org.certificate_der(),
            &wrapped,
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), message);
    }
}
