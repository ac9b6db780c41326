//! Connections to the Coffer server: outbound only. Enrollment speaks TLS without a client
//! certificate (the token is the credential); everything after it is mutual TLS with the
//! agent's certificate.

use std::time::Duration;

use secrecy::ExposeSecret as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::identity::Identity;

/// Why a connection cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is not usable.
    #[error("server {url} {rule}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        rule: &'static str,
    },
    /// The TLS settings are refused (an unreadable CA or key).
    #[error("TLS: {0}")]
    Tls(String),
}

/// Whether `url` may be used: `https://`, or `http://` when `allow_insecure` is set.
pub fn check_url(url: &str, allow_insecure: bool) -> Result<bool, Error> {
    let refuse = |rule| Error::Url {
        url: url.to_owned(),
        rule,
    };
    let parsed: http::Uri = url.parse().map_err(|_| refuse("must be an https:// URL"))?;
    if parsed.host().is_none_or(str::is_empty) {
        return Err(refuse("has no host"));
    }
    match parsed.scheme_str() {
        Some("https") => Ok(true),
        Some("http") if allow_insecure => Ok(false),
        Some("http") => Err(refuse(
            "is plain http://: refused, since nothing would be encrypted in transit \
             (set allow_insecure only for local development)",
        )),
        _ => Err(refuse("must be an https:// URL")),
    }
}

fn endpoint(url: &str) -> Result<Endpoint, Error> {
    Endpoint::from_shared(url.to_owned())
        .map(|e| {
            e.connect_timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
        })
        .map_err(|_| Error::Url {
            url: url.to_owned(),
            rule: "does not parse",
        })
}

/// TLS trusting `server_ca_pem`, or the system's roots without one.
fn tls(server_ca_pem: Option<&str>) -> ClientTlsConfig {
    match server_ca_pem {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
        None => ClientTlsConfig::new().with_native_roots(),
    }
}

/// A channel for enrollment: TLS (or plain HTTP when allowed) without a client certificate.
/// Connects lazily: the first call reports an unreachable server.
pub fn enrollment_channel(
    url: &str,
    server_ca_pem: Option<&str>,
    allow_insecure: bool,
) -> Result<Channel, Error> {
    let mut endpoint = endpoint(url)?;
    if check_url(url, allow_insecure)? {
        endpoint = endpoint
            .tls_config(tls(server_ca_pem))
            .map_err(|e| Error::Tls(e.to_string()))?;
    }
    Ok(endpoint.connect_lazy())
}

/// A mutual-TLS channel presenting the agent's certificate. Connects lazily.
pub fn agent_channel(identity: &Identity, allow_insecure: bool) -> Result<Channel, Error> {
    let url = &identity.record.server;
    let mut endpoint = endpoint(url)?;
    if check_url(url, allow_insecure)? {
        let client = tonic::transport::Identity::from_pem(
            identity.chain_pem(),
            identity.key_pem().expose_secret(),
        );
        endpoint = endpoint
            .tls_config(tls(identity.server_ca_pem.as_deref()).identity(client))
            .map_err(|e| Error::Tls(e.to_string()))?;
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let err = check_url("http://coffer.example:8443", false).unwrap_err();
        assert!(err.to_string().contains("plain http://"), "{err}");
        assert!(!check_url("http://coffer.example:8443", true).unwrap());
        assert!(check_url("https://coffer.example", false).unwrap());
        assert!(check_url("ftp://coffer.example", true).is_err());
        assert!(check_url("https://", false).is_err());
    }
}
