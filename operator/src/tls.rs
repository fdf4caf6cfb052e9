//! TLS for the HTTPS servers SPLAI runs: the admission webhook here and the API gateway.
//!
//! Certificates come as PEM files (`tls.crt` and `tls.key`, as cert-manager and `kubectl create
//! secret tls` name them), or, when a server has none, from `self_signed`: a fresh certificate
//! that lives as long as the process, which clients must be told to trust.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
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

/// A TCP listener that hands axum connections whose TLS handshake is done. Handshakes run side
/// by side, each in a task of its own with a 10 s limit, so a client that connects and stalls
/// (a port scan, a slow or hostile peer) holds up nobody else.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; must be called within a tokio runtime.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            // Ends with the listener: the next connection after it is dropped finds no one.
            while !tx.is_closed() {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task only stops once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
