//! `coffer-agent enroll`: a new key, a CSR, one enrollment token, and the certificate the
//! org's CA issues for it, stored in the identity directory.

use std::path::Path;

use coffer_proto::enrollment::v1 as pb;
use coffer_proto::enrollment::v1::agent_service_client::AgentServiceClient;
use secrecy::{ExposeSecret as _, SecretString};

use crate::connect;
use crate::identity::{self, Identity};

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL or TLS settings are refused.
    #[error(transparent)]
    Connect(#[from] connect::Error),
    /// The key, CSR or identity directory.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// The directory already holds an identity.
    #[error("{0} already holds an agent identity; remove it to enroll again")]
    AlreadyEnrolled(std::path::PathBuf),
    /// The server refused or could not be reached.
    #[error("enrollment refused: {0}")]
    Refused(String),
}

/// Where and how to enroll.
#[derive(Debug)]
pub struct Enrollment<'a> {
    /// `https://host:port` of the Coffer server.
    pub server: &'a str,
    /// The single-use enrollment token.
    pub token: SecretString,
    /// The CA the server's TLS certificate chains to, PEM, when not a system-trusted one.
    pub server_ca_pem: Option<&'a str>,
    /// Permit `http://`.
    pub allow_insecure: bool,
    /// The identity directory.
    pub identity_dir: &'a Path,
}

/// Enrolls once and stores the identity.
pub async fn enroll(enrollment: Enrollment<'_>) -> Result<Identity, Error> {
    connect::check_url(enrollment.server, enrollment.allow_insecure)?;
    if enrollment.identity_dir.join("identity.json").exists() {
        return Err(Error::AlreadyEnrolled(
            enrollment.identity_dir.to_path_buf(),
        ));
    }
    identity::prepare_dir(enrollment.identity_dir)?;
    let key = identity::new_key_and_csr()?;
    let channel = connect::enrollment_channel(
        enrollment.server,
        enrollment.server_ca_pem,
        enrollment.allow_insecure,
    )?;
    let answer = AgentServiceClient::new(channel)
        .enroll(pb::EnrollRequest {
            enrollment_token: enrollment.token.expose_secret().to_owned(),
            csr: key.csr_pem.clone().into_bytes(),
        })
        .await
        .map_err(|status| Error::Refused(describe(&status)))?
        .into_inner();
    Ok(Identity::store(
        enrollment.identity_dir,
        enrollment.server,
        &key,
        &answer,
        enrollment.server_ca_pem,
    )?)
}

/// A refused call in one line: the server's message, or why the call never reached it.
pub fn describe(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
