//! TLS for the HTTPS servers SPLAI runs: the admission webhook here and the API gateway.
//!
//! Certificates come as PEM files (`tls.crt` and `tls.key`, as cert-manager and `kubectl create
//! secret tls` name them), or, when a server has none, from `self_signed`: a fresh certificate
//! that lives as long as the process, which clients must be told to trust.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// The file names a TLS Secret mounts as.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// A server configuration from a PEM certificate chain and its key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("the TLS certificate is not valid PEM: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("the TLS certificate file holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow::anyhow!("the TLS key is not valid PEM: {e}"))?;
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| anyhow::anyhow!("the TLS certificate and key do not match: {e}"))?;
    Ok(Arc::new(config))
}

/// The configuration from `dir/tls.crt` and `dir/tls.key`, or `None` when neither file exists.
/// One file without the other is an error: a half-mounted Secret must not fall back silently.
pub fn from_dir(dir: &Path) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    match (cert.exists(), key.exists()) {
        (false, false) => Ok(None),
        (true, true) => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
            };
            server_config(&read(&cert)?, &read(&key)?).map(Some)
        }
        _ => anyhow::bail!(
            "{} needs both {CERT_FILE} and {KEY_FILE}; only one of them is there",
            dir.display()
        ),
    }
}

/// A self-signed certificate for `names` (DNS names or IP addresses), made now and kept only in
/// memory: the configuration, and the certificate's PEM for clients to trust.
pub fn self_signed(names: &[String]) -> anyhow::Result<(Arc<ServerConfig>, String)> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| anyhow::anyhow!("making a self-signed certificate: {e}"))?;
    let cert_pem = certified.cert.pem();
    let config = server_config(
        cert_pem.as_bytes(),
        certified.signing_key.serialize_pem().as_bytes(),
    )?;
    Ok((config, cert_pem))
}

/// A TCP listener that completes the TLS handshake before it hands a connection to axum.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            // Handshakes are short; one that fails (a port scan, an untrusted CA) is dropped.
            match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(tls)) => return (tls, peer),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
