//! TLS for `coffer serve`: rustls with the operator's (or a generated development) server
//! certificate, and optional client certificates for agents.
//!
//! rustls's stock WebPKI client verifier cannot be used: it refuses any chain whose
//! intermediate carries a URI name constraint, which every org CA does (see `coffer-pki`).
//! The handshake therefore verifies agent chains with `coffer_auth::agent::AgentTrust`, and
//! the auth layer verifies the certificate again (with revocations) on every request.
//! Clients without a certificate (API-key callers) are let through to bearer-token checks.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use coffer_auth::agent::AgentTrust;
use rustls::DistinguishedName;
use rustls::SignatureScheme;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// What the auth layer learns about a TLS connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client certificate (DER), when one was presented and its chain verified.
    pub client_certificate: Option<Arc<Vec<u8>>>,
}

/// An accepted TLS connection.
#[derive(Debug)]
pub struct TlsIo(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        let (tcp, session) = self.0.get_ref();
        PeerInfo {
            remote_addr: tcp.peer_addr().ok(),
            client_certificate: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::new(leaf.to_vec())),
        }
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Verifies agent client certificates during the handshake; a client may also present none.
#[derive(Debug)]
struct AgentClientVerifier {
    trust: Arc<AgentTrust>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AgentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Only the stored intermediate of the org named in the leaf is trusted; presented
        // intermediates add nothing.
        self.trust
            .verify(end_entity.as_ref(), chrono::Utc::now())
            .map(|_| ClientCertVerified::assertion())
            .map_err(|e| {
                tracing::info!(error = %e, "client certificate refused in the handshake");
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(e)),
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Loading the server certificate failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

/// Writes a self-signed development certificate for `localhost` and `127.0.0.1` to
/// `cert_file` and its key to `key_file` (mode 0600), unless both exist.
pub fn ensure_dev_certificate(cert_file: &Path, key_file: &Path) -> Result<(), Error> {
    if cert_file.exists() && key_file.exists() {
        return Ok(());
    }
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| Error(format!("generate a development server certificate: {e}")))?;
    std::fs::write(cert_file, generated.cert.pem())
        .map_err(|e| Error(format!("write {}: {e}", cert_file.display())))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)
        .map_err(|e| Error(format!("create {}: {e}", key_file.display())))?;
    key.write_all(generated.signing_key.serialize_pem().as_bytes())
        .map_err(|e| Error(format!("write {}: {e}", key_file.display())))?;
    Ok(())
}

/// The acceptor for `cert_file` (PEM chain) and `key_file` (PEM key), verifying agent
/// client certificates against `trust`.
pub fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    trust: Arc<AgentTrust>,
) -> Result<TlsAcceptor, Error> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| Error(format!("read {}: {e}", cert_file.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error(format!("parse {}: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(Error(format!(
            "{} holds no certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| Error(format!("read the key in {}: {e}", key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AgentClientVerifier {
        trust,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error(format!("tls protocol versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| Error(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections on `listener` and completes their handshakes concurrently, so a slow
/// or hostile client cannot hold up the others; failed handshakes are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsIo, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            // Small gRPC responses must not wait for the client's delayed ACK (measured: a
            // 40 ms stall per enrollment without this).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(%peer, error = %e, "set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsIo(stream))).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "tls handshake failed"),
                    Err(_) => tracing::info!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
