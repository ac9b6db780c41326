//! The agent's identity: an ECDSA P-256 key made here and never sent anywhere, the certificate
//! the org's intermediate CA issued for it, and the chain above it, kept in the identity
//! directory.
//!
//! Layout (the directory is 0700, the key 0600; every file is replaced by writing a sibling and
//! renaming it over, so a crash leaves the old identity or the new one, never half of each):
//!
//! - `key.pem`: the private key (PKCS#8);
//! - `cert.pem`, `intermediate.pem`, `root.pem`: the agent's certificate, its org's
//!   intermediate CA, the platform root;
//! - `server-ca.pem` (optional): the CA the server's TLS certificate must chain to, when it is
//!   not one the system trusts;
//! - `identity.json`: the server's URL, the org and agent ids, the certificate's serial and
//!   validity.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use coffer_proto::enrollment::v1 as pb;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// What `identity.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The server the agent enrolled with, `https://host:port`.
    pub server: String,
    /// The agent's org.
    pub org_id: String,
    /// The agent.
    pub agent_id: String,
    /// `spiffe://<trust-domain>/org/<org>/agent/<agent>`.
    pub spiffe_id: String,
    /// The current certificate's serial, lowercase hex.
    pub serial: String,
    /// The current certificate's validity.
    pub not_before: DateTime<Utc>,
    /// When the current certificate expires.
    pub not_after: DateTime<Utc>,
}

impl Record {
    /// When to renew: at 80 % of the certificate's lifetime (P6).
    pub fn renew_at(&self) -> DateTime<Utc> {
        let lifetime = self.not_after - self.not_before;
        self.not_before + lifetime * 4 / 5
    }
}

/// The agent's key and certificates, loaded from its identity directory.
pub struct Identity {
    dir: PathBuf,
    /// What the directory records.
    pub record: Record,
    key_pem: SecretString,
    /// The agent's certificate, PEM.
    pub certificate_pem: String,
    /// Its org's intermediate CA, PEM.
    pub intermediate_pem: String,
    /// The platform root CA, PEM.
    pub root_pem: String,
    /// The CA the server's TLS certificate chains to, PEM, when not a system-trusted one.
    pub server_ca_pem: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("dir", &self.dir)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Why the identity could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory holds no identity yet.
    #[error("{0} holds no agent identity; run `coffer-agent enroll` first")]
    NotEnrolled(PathBuf),
    /// A file could not be read or written.
    #[error("{what} {path}: {cause}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        cause: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path} is damaged: {rule}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        rule: String,
    },
    /// The directory is readable by others than the agent's user.
    #[error("{0} must be accessible by its owner only (mode 0700)")]
    Exposed(PathBuf),
    /// The key or CSR could not be made.
    #[error("making the key and CSR: {0}")]
    Key(String),
    /// The server's answer is incomplete.
    #[error("the server's enrollment answer {0}")]
    Answer(&'static str),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |cause| Error::Io { what, path, cause }
}

/// A fresh key and a CSR for it: no subject alternative names and no CA request, as the
/// enrollment service requires (it writes the SPIFFE id itself).
pub struct KeyAndCsr {
    /// The private key, PEM (PKCS#8).
    pub key_pem: SecretString,
    /// The CSR, PEM.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr").finish_non_exhaustive()
    }
}

/// Makes a new ECDSA P-256 key and its CSR.
pub fn new_key_and_csr() -> Result<KeyAndCsr, Error> {
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coffer-agent");
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| Error::Key(e.to_string()))?;
    Ok(KeyAndCsr {
        key_pem: SecretString::from(key.serialize_pem()),
        csr_pem: csr,
    })
}

const KEY: &str = "key.pem";
const CERT: &str = "cert.pem";
const INTERMEDIATE: &str = "intermediate.pem";
const ROOT: &str = "root.pem";
const SERVER_CA: &str = "server-ca.pem";
const RECORD: &str = "identity.json";

/// Creates `dir` (0700) if missing; refuses one others can read.
pub fn prepare_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(Error::Exposed(dir.to_path_buf()));
            }
            Ok(())
        }
        Ok(_) => Err(Error::Damaged {
            path: dir.to_path_buf(),
            rule: "is not a directory".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create directory", dir)),
        Err(e) => Err(io("open directory", dir)(e)),
    }
}

/// Writes `contents` to `dir/name` with `mode`, through a sibling renamed over it.
fn replace(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), Error> {
    let path = dir.join(name);
    let next = dir.join(format!(".{name}.next"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&next)
        .map_err(io("write", &next))?;
    // The mode above applies only when the file is created.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of", &next))?;
    file.write_all(contents).map_err(io("write", &next))?;
    file.sync_all().map_err(io("sync", &next))?;
    std::fs::rename(&next, &path).map_err(io("replace", &path))
}

fn read(dir: &Path, name: &str) -> Result<String, Error> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(io("read", &path))
}

impl Identity {
    /// Loads the identity in `dir`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let record_path = dir.join(RECORD);
        if !record_path.exists() {
            return Err(Error::NotEnrolled(dir.to_path_buf()));
        }
        prepare_dir(dir)?;
        let record: Record =
            serde_json::from_str(&read(dir, RECORD)?).map_err(|e| Error::Damaged {
                path: record_path.clone(),
                rule: e.to_string(),
            })?;
        let key_path = dir.join(KEY);
        let mode = std::fs::metadata(&key_path)
            .map_err(io("read", &key_path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::Damaged {
                path: key_path,
                rule: "must be readable by its owner only (mode 0600)".into(),
            });
        }
        let server_ca_pem = match std::fs::read_to_string(dir.join(SERVER_CA)) {
            Ok(pem) => Some(pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("read", &dir.join(SERVER_CA))(e)),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            record,
            key_pem: SecretString::from(read(dir, KEY)?),
            certificate_pem: read(dir, CERT)?,
            intermediate_pem: read(dir, INTERMEDIATE)?,
            root_pem: read(dir, ROOT)?,
            server_ca_pem,
        })
    }

    /// Stores what enrollment (or a renewal) returned with the key it was issued for, and
    /// returns the identity. `server_ca_pem` is kept from the last store when `None`.
    pub fn store(
        dir: &Path,
        server: &str,
        key: &KeyAndCsr,
        answer: &pb::EnrollResponse,
        server_ca_pem: Option<&str>,
    ) -> Result<Self, Error> {
        prepare_dir(dir)?;
        if answer.certificate_pem.is_empty() || answer.intermediate_pem.is_empty() {
            return Err(Error::Answer("carries no certificate chain"));
        }
        let time = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
        };
        let not_after = time(&answer.not_after).ok_or(Error::Answer("carries no not_after"))?;
        let not_before = certificate_not_before(&answer.certificate_pem)
            .ok_or(Error::Answer("carries an unreadable certificate"))?;
        let record = Record {
            server: server.to_owned(),
            org_id: answer.org_id.clone(),
            agent_id: answer.agent_id.clone(),
            spiffe_id: answer.spiffe_id.clone(),
            serial: answer.serial.to_ascii_lowercase(),
            not_before,
            not_after,
        };
        // The key first: a certificate on disk always has its key beside it.
        replace(dir, KEY, key.key_pem.expose_secret().as_bytes(), 0o600)?;
        replace(dir, CERT, answer.certificate_pem.as_bytes(), 0o644)?;
        replace(dir, INTERMEDIATE, answer.intermediate_pem.as_bytes(), 0o644)?;
        replace(dir, ROOT, answer.root_pem.as_bytes(), 0o644)?;
        if let Some(ca) = server_ca_pem {
            replace(dir, SERVER_CA, ca.as_bytes(), 0o644)?;
        }
        let json = serde_json::to_vec_pretty(&record).expect("a record serialises");
        replace(dir, RECORD, &json, 0o644)?;
        Self::load(dir)
    }

    /// The identity directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate and the intermediate, as a TLS client presents them.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.certificate_pem, self.intermediate_pem)
    }

    /// The private key, PEM.
    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }
}

/// The notBefore of a PEM certificate.
fn certificate_not_before(pem: &str) -> Option<DateTime<Utc>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    DateTime::from_timestamp(cert.validity().not_before.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_at_four_fifths_of_the_lifetime() {
        let not_before = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let record = Record {
            server: "https://coffer.example".into(),
            org_id: String::new(),
            agent_id: String::new(),
            spiffe_id: String::new(),
            serial: String::new(),
            not_before,
            not_after: not_before + chrono::Duration::hours(24),
        };
        assert_eq!(
            record.renew_at(),
            not_before + chrono::Duration::minutes(24 * 60 * 4 / 5)
        );
    }

    #[test]
    fn a_new_key_comes_with_a_csr_and_prints_no_secret() {
        let made = new_key_and_csr().unwrap();
        assert!(
            made.csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert!(
            made.key_pem
                .expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(format!("{made:?}"), "KeyAndCsr { .. }");
    }

    #[test]
    fn the_directory_is_made_0700_and_an_exposed_one_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("identity");
        prepare_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(prepare_dir(&dir), Err(Error::Exposed(_))));
        assert!(matches!(
            Identity::load(base.path()),
            Err(Error::NotEnrolled(_))
        ));
    }
}
