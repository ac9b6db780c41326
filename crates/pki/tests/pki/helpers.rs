//! Fixtures: a CA hierarchy, CSRs made by rcgen and by stock `openssl`, a local KMS, and a way
//! to sign arbitrary certificates with a real Coffer CA key (for chains our API refuses to make).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use coffer_kms::{KeyId, Kms, LocalKms};
use coffer_pki::{CertificateAuthority, SpiffeId, TrustDomain};
use coffer_types::OrgId;
use rcgen::{CertificateParams, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use secrecy::ExposeSecret;
use uuid::Uuid;

pub const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);
pub const DAY: TimeDelta = TimeDelta::days(1);
pub const CRL_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

pub fn td() -> TrustDomain {
    TrustDomain::new("coffer.example").unwrap()
}

/// A root and one org intermediate, both created ten days ago so certificates can be issued
/// "in the past" (expired leaves) and still sit inside the CAs' validity.
pub struct Hierarchy {
    pub root: CertificateAuthority,
    pub org_id: OrgId,
    pub org: CertificateAuthority,
}

impl Hierarchy {
    pub fn new() -> Self {
        let created = Utc::now() - DAY * 10;
        let root = CertificateAuthority::create_root(&td(), created, 10 * YEAR).unwrap();
        let org_id = OrgId::new();
        let org = root.create_org_intermediate(org_id, created, YEAR).unwrap();
        Self { root, org_id, org }
    }

    /// Another org under the same root.
    pub fn other_org(&self) -> (OrgId, CertificateAuthority) {
        let org_id = OrgId::new();
        let ca = self
            .root
            .create_org_intermediate(org_id, Utc::now() - DAY * 10, YEAR)
            .unwrap();
        (org_id, ca)
    }

    pub fn agent(&self) -> SpiffeId {
        SpiffeId::new(td(), self.org_id, Uuid::now_v7())
    }
}

/// A CSR made by rcgen for `alg`, optionally customised, as DER.
pub fn rcgen_csr(
    alg: &'static rcgen::SignatureAlgorithm,
    customise: impl FnOnce(&mut CertificateParams),
) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    customise(&mut params);
    params.serialize_request(&key).unwrap().der().to_vec()
}

/// A scratch directory for `openssl` runs.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// Runs stock `openssl` in this directory; returns (success, stdout + stderr).
    pub fn openssl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Like [`Scratch::openssl`] but the command must succeed.
    pub fn openssl_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.openssl(args);
        assert!(ok, "openssl {args:?} failed: {text}");
        text
    }

    /// A CSR made by `openssl req` with a fresh key of `newkey` (e.g. `ec` with
    /// `-pkeyopt ec_paramgen_curve:P-256`, `ed25519`), plus `extra` arguments; PEM bytes.
    pub fn openssl_csr(&self, name: &str, newkey: &[&str], extra: &[&str]) -> Vec<u8> {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut args = vec!["req", "-new", "-nodes", "-keyout", &key, "-out", &csr];
        args.extend_from_slice(&["-subj", "/CN=agent"]);
        args.push("-newkey");
        args.extend_from_slice(newkey);
        args.extend_from_slice(extra);
        self.openssl_ok(&args);
        self.read(&csr)
    }

    /// `openssl verify` the way a stock TLS stack checks an agent client certificate:
    /// strict X.509, the sslclient purpose, and the leaf checked against the org CRL.
    pub fn openssl_verify(
        &self,
        root: &Path,
        intermediate: &Path,
        crl: &Path,
        leaf: &Path,
    ) -> (bool, String) {
        self.openssl(&[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslclient",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            intermediate.to_str().unwrap(),
            "-CRLfile",
            crl.to_str().unwrap(),
            "-crl_check",
            leaf.to_str().unwrap(),
        ])
    }
}

/// A local KMS with one fresh master key in a temporary directory.
pub fn local_kms() -> (tempfile::TempDir, LocalKms) {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("kms");
    LocalKms::create_key(&key_dir, &KeyId::new("master-1")).unwrap();
    let kms = LocalKms::open(&key_dir, &KeyId::new("master-1")).unwrap();
    (dir, kms)
}

/// The PKCS#8 key of `ca`, obtained the only way it ever leaves the crate: wrapped by the KMS,
/// then unwrapped by someone holding the KMS (here, the test).
pub async fn ca_key_pkcs8(ca: &CertificateAuthority) -> Vec<u8> {
    let (_dir, kms) = local_kms();
    let wrapped = ca.wrap_key(&kms).await.unwrap();
    let plaintext = kms
        .decrypt_bytes(&wrapped, &ca.key_context().unwrap())
        .await
        .unwrap();
    plaintext.expose_secret().to_vec()
}

/// Signs `params` for `public_key` with `ca`'s real key: certificates Coffer's API refuses to
/// issue (another org's name, another trust domain, a different name constraint).
pub async fn forge(
    ca: &CertificateAuthority,
    params: &CertificateParams,
    public_key: &KeyPair,
) -> CertificateDer<'static> {
    let pkcs8 = ca_key_pkcs8(ca).await;
    let signer = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &PKCS_ECDSA_P256_SHA256,
    )
    .unwrap();
    let issuer = Issuer::from_ca_cert_der(ca.certificate_der(), signer).unwrap();
    params.signed_by(public_key, &issuer).unwrap().der().clone()
}

/// Leaf parameters like the ones Coffer issues, for `uri`, valid around now.
pub fn leaf_params(uri: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = Utc::now();
    params.not_before = offset(now - TimeDelta::hours(1));
    params.not_after = offset(now + TimeDelta::hours(1));
    params
}

pub fn offset(at: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp()).unwrap()
}

pub fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}
