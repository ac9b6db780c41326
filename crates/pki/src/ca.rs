//! The CA hierarchy: the platform root, one intermediate per org, agent leaves and CRLs.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use coffer_kms::{EncryptionContext, Kms, Purpose, WrappedKey};
use coffer_types::OrgId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivatePkcs8KeyDer};
use secrecy::ExposeSecret;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::x509::{self, KeyAlgorithm};
use crate::{AgentCsr, Error, Serial, SpiffeId, TrustDomain};

/// How far `notBefore` is set before the `now` a certificate is issued at, so a verifier whose
/// clock runs slightly behind the issuer's still accepts a fresh certificate.
pub const NOT_BEFORE_BACKDATE: Duration = Duration::from_secs(60);

/// The agent certificate lifetime Coffer uses unless configured otherwise (DESIGN §1 P6).
pub const DEFAULT_AGENT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Shortest accepted agent certificate TTL.
pub const MIN_AGENT_TTL: Duration = Duration::from_secs(5 * 60);

/// Longest accepted agent certificate TTL: agent identities are meant to be short-lived.
pub const MAX_AGENT_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Shortest accepted CA validity.
pub const MIN_CA_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// OID of the nameConstraints extension (RFC 5280 §4.2.1.10).
const OID_NAME_CONSTRAINTS: [u64; 4] = [2, 5, 29, 30];

/// Which CA a [`CertificateAuthority`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaRole {
    /// The platform root: signs org intermediates only. Created once by `coffer admin init`.
    PlatformRoot,
    /// An org's intermediate: signs that org's agent certificates and CRL.
    Org(OrgId),
}

impl CaRole {
    /// The org the CA key is wrapped for: [`OrgId::PLATFORM`] for the root.
    pub fn org_id(self) -> OrgId {
        match self {
            CaRole::PlatformRoot => OrgId::PLATFORM,
            CaRole::Org(org_id) => org_id,
        }
    }
}

/// A CA private key: PKCS#8 DER of an ECDSA P-256 key, zeroed on drop, never printed.
struct CaKey(Zeroizing<Vec<u8>>);

impl CaKey {
    fn generate() -> Result<Self, Error> {
        let key_pair = Zeroizing::new(
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(Error::signing("generate ca key"))?,
        );
        Ok(Self(Zeroizing::new(key_pair.serialize_der())))
    }

    /// The signing key, wrapped so its copy of the PKCS#8 bytes is zeroed on drop too.
    fn key_pair(&self) -> Result<Zeroizing<KeyPair>, Error> {
        KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(self.0.as_slice()),
            &PKCS_ECDSA_P256_SHA256,
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::CaKey("is not a PKCS#8 ECDSA P-256 key"))
    }
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaKey([REDACTED])")
    }
}

/// A CA certificate together with its private key: the platform root or an org intermediate.
///
/// Both use ECDSA P-256 keys and sign with ecdsa-with-SHA256, which every OpenSSL, rustls and
/// Go TLS stack accepts. The key only leaves this type wrapped by the KMS
/// ([`CertificateAuthority::wrap_key`]); `Debug` shows the certificate's facts, never the key.
///
/// What the certificates carry:
/// - root: `O=Coffer, CN=Coffer platform root CA`, `basicConstraints CA:true, pathLen:1`,
///   keyUsage `keyCertSign, cRLSign`, subjectAltName URI `spiffe://<trust-domain>`;
/// - org intermediate: `O=Coffer, OU=<org_id>, CN=Coffer org CA`,
///   `basicConstraints CA:true, pathLen:0`, keyUsage `keyCertSign, cRLSign`, subjectAltName
///   URI `spiffe://<trust-domain>/org/<org_id>`, and a critical nameConstraints extension
///   permitting URIs whose host is the trust domain (see the crate docs for why not the
///   org path);
/// - agent leaf: empty subject, critical subjectAltName with the agent's SPIFFE id only,
///   `basicConstraints CA:false`, keyUsage `digitalSignature`, extendedKeyUsage `clientAuth`,
///   a random 128-bit serial.
pub struct CertificateAuthority {
    role: CaRole,
    trust_domain: TrustDomain,
    certificate: CertificateDer<'static>,
    serial: Serial,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    /// The subjectKeyIdentifier, which CRLs repeat as their authorityKeyIdentifier.
    key_id: Vec<u8>,
    key: CaKey,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("role", &self.role)
            .field("trust_domain", &self.trust_domain)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates the platform root CA: a fresh P-256 key and a self-signed certificate valid
    /// from `now` (less [`NOT_BEFORE_BACKDATE`]) for `validity` (at least [`MIN_CA_VALIDITY`]).
    pub fn create_root(
        trust_domain: &TrustDomain,
        now: DateTime<Utc>,
        validity: Duration,
    ) -> Result<Self, Error> {
        check_lifetime("validity", validity, MIN_CA_VALIDITY, None)?;
        let serial = Serial::random();
        let mut params = ca_params(&serial, now, validity)?;
        params.distinguished_name = distinguished_name(&[
            (DnType::OrganizationName, "Coffer"),
            (DnType::CommonName, "Coffer platform root CA"),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.subject_alt_names = vec![uri_san(trust_domain.root_uri())?];

        let key = CaKey::generate()?;
        let certificate = params
            .self_signed(&*key.key_pair()?)
            .map_err(Error::signing("root certificate"))?;
        Self::from_parts(
            CaRole::PlatformRoot,
            trust_domain,
            certificate.der().clone(),
            key,
        )
    }

    /// Creates org `org_id`'s intermediate CA, signed by this root: a fresh P-256 key and a
    /// certificate valid from `now` for `validity`, which must end before the root does.
    pub fn create_org_intermediate(
        &self,
        org_id: OrgId,
        now: DateTime<Utc>,
        validity: Duration,
    ) -> Result<Self, Error> {
        if self.role != CaRole::PlatformRoot {
            return Err(Error::WrongCa(
                "only the platform root CA signs org intermediates",
            ));
        }
        check_lifetime("validity", validity, MIN_CA_VALIDITY, None)?;
        let serial = Serial::random();
        let mut params = ca_params(&serial, now, validity)?;
        self.check_outlives("org intermediate", &params)?;
        params.distinguished_name = distinguished_name(&[
            (DnType::OrganizationName, "Coffer"),
            (
                DnType::OrganizationalUnitName,
                &org_id.as_uuid().hyphenated().to_string(),
            ),
            (DnType::CommonName, "Coffer org CA"),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.subject_alt_names = vec![uri_san(self.trust_domain.org_uri(org_id))?];
        let mut name_constraints = CustomExtension::from_oid_content(
            &OID_NAME_CONSTRAINTS,
            x509::uri_host_name_constraints(self.trust_domain.as_str()),
        );
        name_constraints.set_criticality(true);
        params.custom_extensions = vec![name_constraints];
        params.use_authority_key_identifier_extension = true;

        let key = CaKey::generate()?;
        let signer = self.key.key_pair()?;
        let certificate = params
            .signed_by(&*key.key_pair()?, &self.issuer(&signer)?)
            .map_err(Error::signing("org intermediate certificate"))?;
        Self::from_parts(
            CaRole::Org(org_id),
            &self.trust_domain,
            certificate.der().clone(),
            key,
        )
    }

    /// Issues the certificate for the agent `csr` was checked for, valid from `now` for `ttl`
    /// ([`MIN_AGENT_TTL`]`..=`[`MAX_AGENT_TTL`]; [`DEFAULT_AGENT_TTL`] is the usual choice).
    ///
    /// The certificate carries the CSR's public key and nothing else from the CSR. Refused when
    /// this is not the intermediate of the agent's org, or when the certificate would outlive
    /// this CA.
    pub fn issue_agent_certificate(
        &self,
        csr: &AgentCsr,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<AgentCertificate, Error> {
        let spiffe_id = csr.spiffe_id();
        let CaRole::Org(ca_org) = self.role else {
            return Err(Error::WrongCa(
                "agent certificates are signed by an org intermediate, not the platform root",
            ));
        };
        if spiffe_id.org_id() != ca_org || spiffe_id.trust_domain() != &self.trust_domain {
            return Err(Error::ForeignAgent {
                spiffe_id: spiffe_id.to_uri(),
                ca_org,
            });
        }
        check_lifetime("ttl", ttl, MIN_AGENT_TTL, Some(MAX_AGENT_TTL))?;
        let serial = Serial::random();
        let (not_before, not_after) = window("ttl", now, ttl)?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(serial.as_be_bytes()));
        params.not_before = offset(not_before)?;
        params.not_after = offset(not_after)?;
        self.check_outlives("agent certificate", &params)?;
        // An empty subject makes rcgen mark the subjectAltName critical (RFC 5280 §4.2.1.6).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![uri_san(spiffe_id.to_uri())?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;

        let signer = self.key.key_pair()?;
        let certificate = params
            .signed_by(csr, &self.issuer(&signer)?)
            .map_err(Error::signing("agent certificate"))?;
        Ok(AgentCertificate {
            certificate: certificate.der().clone(),
            spiffe_id: spiffe_id.clone(),
            key_algorithm: csr.key_algorithm(),
            serial,
            not_before,
            not_after,
        })
    }

    /// Signs this org's CRL: `revoked` listed with their revocation times, `thisUpdate = now`,
    /// `nextUpdate = now + validity`, and CRL number `number`, which the caller keeps
    /// increasing from one CRL of this CA to the next.
    pub fn sign_crl(
        &self,
        revoked: &[RevokedCertificate],
        number: u64,
        now: DateTime<Utc>,
        validity: Duration,
    ) -> Result<Crl, Error> {
        if !matches!(self.role, CaRole::Org(_)) {
            return Err(Error::WrongCa(
                "CRLs are signed by an org intermediate, not the platform root",
            ));
        }
        check_lifetime("crl validity", validity, Duration::from_secs(60), None)?;
        let this_update = x509::whole_seconds(now);
        let next_update = this_update + delta("crl validity", validity)?;
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(r.serial.as_be_bytes()),
                    revocation_time: offset(r.revoked_at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let params = CertificateRevocationListParams {
            this_update: offset(this_update)?,
            next_update: offset(next_update)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_id.clone()),
        };
        let signer = self.key.key_pair()?;
        let crl = params
            .signed_by(&self.issuer(&signer)?)
            .map_err(Error::signing("crl"))?;
        Ok(Crl {
            crl: crl.der().clone(),
            number,
            this_update,
            next_update,
        })
    }

    /// Wraps the private key under the KMS master key, bound to
    /// [`CertificateAuthority::key_context`]. Store the result next to the certificate; it is
    /// the only form in which a CA key is ever stored (DESIGN §1 P2).
    pub async fn wrap_key(&self, kms: &dyn Kms) -> Result<WrappedKey, Error> {
        Ok(kms.encrypt(&self.key.0, &self.key_context()?).await?)
    }

    /// Loads a CA from its stored certificate and wrapped key.
    ///
    /// The certificate must be the one this crate issues for `role` in `trust_domain`; the key
    /// is unwrapped under that role's org and this certificate's serial, so a wrapped key
    /// copied to another org's or another CA's row fails with [`Error::Kms`]
    /// ([`coffer_kms::Error::Denied`]).
    pub async fn from_wrapped_key(
        kms: &dyn Kms,
        role: CaRole,
        trust_domain: &TrustDomain,
        certificate: &[u8],
        wrapped: &WrappedKey,
    ) -> Result<Self, Error> {
        let facts = CaFacts::parse(role, trust_domain, certificate)?;
        let context = key_context(role, &facts.serial)?;
        let plaintext = kms.decrypt_bytes(wrapped, &context).await?;
        let key = CaKey(Zeroizing::new(plaintext.expose_secret().to_vec()));
        Self::from_parts(
            role,
            trust_domain,
            CertificateDer::from(certificate.to_vec()),
            key,
        )
    }

    /// The encryption context the key is wrapped under:
    /// `{org_id: role's org, purpose: ca_key, object_id: "ca/<serial hex>"}`.
    pub fn key_context(&self) -> Result<EncryptionContext, Error> {
        key_context(self.role, &self.serial)
    }

    /// Which CA this is.
    pub fn role(&self) -> CaRole {
        self.role
    }

    /// The trust domain the CA issues in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.certificate)
    }

    /// The CA certificate's serial.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// Start of the CA certificate's validity.
    pub fn not_before(&self) -> DateTime<Utc> {
        self.not_before
    }

    /// End of the CA certificate's validity.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// Checks `certificate` against `role` and the key against the certificate.
    fn from_parts(
        role: CaRole,
        trust_domain: &TrustDomain,
        certificate: CertificateDer<'static>,
        key: CaKey,
    ) -> Result<Self, Error> {
        let facts = CaFacts::parse(role, trust_domain, &certificate)?;
        if key.key_pair()?.public_key_raw() != facts.public_key.as_slice() {
            return Err(Error::CaKey("does not match the ca certificate"));
        }
        Ok(Self {
            role,
            trust_domain: trust_domain.clone(),
            certificate,
            serial: facts.serial,
            not_before: facts.not_before,
            not_after: facts.not_after,
            key_id: facts.key_id,
            key,
        })
    }

    /// An rcgen issuer over this CA's certificate and `signer` (this CA's key pair).
    fn issuer<'k>(&self, signer: &'k KeyPair) -> Result<Issuer<'static, &'k KeyPair>, Error> {
        Issuer::from_ca_cert_der(&self.certificate, signer)
            .map_err(|_| Error::CaCertificate("does not parse"))
    }

    /// Refuses a certificate that would outlive this CA.
    fn check_outlives(&self, what: &'static str, params: &CertificateParams) -> Result<(), Error> {
        let not_after = DateTime::from_timestamp(params.not_after.unix_timestamp(), 0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if not_after > self.not_after {
            return Err(Error::OutlivesIssuer {
                what,
                not_after,
                issuer_not_after: self.not_after,
            });
        }
        Ok(())
    }
}

/// An issued agent certificate and the facts the enrollment service records about it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCertificate {
    certificate: CertificateDer<'static>,
    spiffe_id: SpiffeId,
    key_algorithm: KeyAlgorithm,
    serial: Serial,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

impl AgentCertificate {
    /// The certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The certificate, PEM.
    pub fn pem(&self) -> String {
        to_pem("CERTIFICATE", &self.certificate)
    }

    /// The agent's SPIFFE id, the certificate's only name.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The agent key's algorithm.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }

    /// The random serial; what a revocation names.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// Start of validity (the issue time less [`NOT_BEFORE_BACKDATE`]).
    pub fn not_before(&self) -> DateTime<Utc> {
        self.not_before
    }

    /// End of validity (the issue time plus the TTL).
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }
}

impl fmt::Debug for AgentCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCertificate")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// One entry of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// The revoked certificate's serial.
    pub serial: Serial,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
}

/// A signed per-org CRL.
#[derive(Clone, PartialEq, Eq)]
pub struct Crl {
    crl: CertificateRevocationListDer<'static>,
    number: u64,
    this_update: DateTime<Utc>,
    next_update: DateTime<Utc>,
}

impl Crl {
    /// The CRL, DER.
    pub fn der(&self) -> &CertificateRevocationListDer<'static> {
        &self.crl
    }

    /// The CRL, PEM (`X509 CRL`, what `openssl crl` and `openssl verify -CRLfile` read).
    pub fn pem(&self) -> String {
        to_pem("X509 CRL", &self.crl)
    }

    /// The CRL number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// When the CRL was issued.
    pub fn this_update(&self) -> DateTime<Utc> {
        self.this_update
    }

    /// When the next CRL is due; verifiers treat this one as stale after it.
    pub fn next_update(&self) -> DateTime<Utc> {
        self.next_update
    }
}

impl fmt::Debug for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crl")
            .field("number", &self.number)
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .finish_non_exhaustive()
    }
}

/// What a stored CA certificate says, once checked against its claimed role.
struct CaFacts {
    serial: Serial,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    key_id: Vec<u8>,
    public_key: Vec<u8>,
}

impl CaFacts {
    fn parse(role: CaRole, trust_domain: &TrustDomain, der: &[u8]) -> Result<Self, Error> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|_| Error::CaCertificate("does not parse"))?;
        if !rest.is_empty() {
            return Err(Error::CaCertificate("has trailing bytes"));
        }
        if !matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
            return Err(Error::CaCertificate("is not a CA certificate"));
        }
        if x509::key_algorithm(cert.public_key()) != Ok(KeyAlgorithm::EcdsaP256) {
            return Err(Error::CaCertificate("key is not ECDSA P-256"));
        }
        let uri = single_uri_san(&cert).ok_or(Error::CaCertificate(
            "must carry exactly one subjectAltName, a spiffe:// URI",
        ))?;
        match role {
            CaRole::PlatformRoot => {
                if uri != trust_domain.root_uri() {
                    return Err(Error::CaCertificate(
                        "is not the platform root of this trust domain",
                    ));
                }
            }
            CaRole::Org(org_id) => {
                if trust_domain.parse_org_uri(uri) != Ok(org_id) {
                    return Err(Error::CaCertificate(
                        "is not this org's intermediate in this trust domain",
                    ));
                }
            }
        }
        let key_id = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .ok_or(Error::CaCertificate("has no subjectKeyIdentifier"))?;
        Ok(Self {
            serial: Serial::from_der_integer(cert.raw_serial())
                .map_err(|_| Error::CaCertificate("serial is not a positive integer"))?,
            not_before: x509::from_asn1(cert.validity().not_before),
            not_after: x509::from_asn1(cert.validity().not_after),
            key_id,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
        })
    }
}

/// The one URI of a certificate whose subjectAltName is exactly one URI.
pub(crate) fn single_uri_san<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    let san = cert.subject_alternative_name().ok()??;
    match san.value.general_names.as_slice() {
        [GeneralName::URI(uri)] => Some(uri),
        _ => None,
    }
}

fn key_context(role: CaRole, serial: &Serial) -> Result<EncryptionContext, Error> {
    Ok(EncryptionContext::new(
        role.org_id(),
        Purpose::CaKey,
        format!("ca/{serial}"),
    )?)
}

/// Parameters shared by root and intermediate certificates.
fn ca_params(
    serial: &Serial,
    now: DateTime<Utc>,
    validity: Duration,
) -> Result<CertificateParams, Error> {
    let (not_before, not_after) = window("validity", now, validity)?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(serial.as_be_bytes()));
    params.not_before = offset(not_before)?;
    params.not_after = offset(not_after)?;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// `notBefore` and `notAfter` for a certificate issued at `now` for `lifetime`.
fn window(
    field: &'static str,
    now: DateTime<Utc>,
    lifetime: Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    let now = x509::whole_seconds(now);
    let backdate = delta(field, NOT_BEFORE_BACKDATE)?;
    Ok((now - backdate, now + delta(field, lifetime)?))
}

fn check_lifetime(
    field: &'static str,
    lifetime: Duration,
    min: Duration,
    max: Option<Duration>,
) -> Result<(), Error> {
    if lifetime < min {
        return Err(Error::Validity {
            field,
            rule: format!("must be at least {}s", min.as_secs()),
        });
    }
    if let Some(max) = max.filter(|max| lifetime > *max) {
        return Err(Error::Validity {
            field,
            rule: format!("must be at most {}s", max.as_secs()),
        });
    }
    Ok(())
}

fn delta(field: &'static str, d: Duration) -> Result<TimeDelta, Error> {
    TimeDelta::from_std(d).map_err(|_| Error::Validity {
        field,
        rule: "is too large".to_owned(),
    })
}

fn offset(at: DateTime<Utc>) -> Result<time::OffsetDateTime, Error> {
    x509::to_offset(at).ok_or(Error::Validity {
        field: "validity",
        rule: "must end before the year 10000".to_owned(),
    })
}

fn distinguished_name(entries: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (kind, value) in entries {
        dn.push(kind.clone(), *value);
    }
    dn
}

fn uri_san(uri: String) -> Result<SanType, Error> {
    Ok(SanType::URI(
        uri.try_into().map_err(Error::signing("subjectAltName"))?,
    ))
}

fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
