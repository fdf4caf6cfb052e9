//! TLS for the HTTPS servers SPLAI runs: the admission webhook here and the API gateway.
//!
//! Certificates come as PEM files (`tls.crt` and `tls.key`, as cert-manager and `kubectl create
//! secret tls` name them), or, when a server has none, from `self_signed`: a fresh certificate
//! that lives as long as the process, which clients must be told to trust.
//!
//! Certificates from files are read again when the files change ([`from_dir`]), so a renewal
//! (cert-manager rewrites the mounted Secret before the old certificate expires) is served
//! without a restart. The files are polled rather than watched with inotify: a Secret volume
//! is updated by swapping a symlink, which file watchers report unreliably, and reading two
//! small files every few seconds costs nothing measurable.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
pub use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

/// The file names a TLS Secret mounts as.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
/// How often [`from_dir`]'s files are read again in the servers.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the TLS certificate is not valid PEM: {0}")]
    CertificatePem(pem::Error),
    #[error("the TLS certificate file holds no certificate")]
    NoCertificate,
    #[error("the TLS key is not valid PEM: {0}")]
    KeyPem(pem::Error),
    #[error("the TLS certificate and key do not match, or the key is of an unsupported kind: {0}")]
    Mismatch(rustls::Error),
    #[error("{} needs both {CERT_FILE} and {KEY_FILE}; only one of them is there", dir.display())]
    HalfMounted { dir: PathBuf },
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("setting up TLS: {0}")]
    Setup(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(TlsError::CertificatePem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::KeyPem)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(TlsError::Mismatch)
}

/// The certificate a server presents; [`from_dir`]'s can be swapped while it serves.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole certificate: it is only ever replaced whole.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

fn config_with(current: Arc<Current>) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_cert_resolver(current);
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain and its key, fixed for its lifetime.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let key = certified_key(cert_pem, key_pem)?;
    config_with(Arc::new(Current(RwLock::new(Arc::new(key)))))
}

/// The configuration from `dir/tls.crt` and `dir/tls.key`, or `None` when neither file exists.
/// One file without the other is an error: a half-mounted Secret must not fall back silently.
///
/// The files are read again every `reload_every` for as long as the configuration is in use:
/// new contents are served from the next handshake on, and contents that are not a matching
/// pair (a renewal caught half-written) are logged and skipped, the last good pair staying in
/// use. Call it within a tokio runtime, which runs the rereading.
pub fn from_dir(dir: &Path, reload_every: Duration) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let files = Files {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    match (files.cert.exists(), files.key.exists()) {
        (false, false) => Ok(None),
        (true, true) => {
            let pair = files.read()?;
            let current = Arc::new(Current(RwLock::new(Arc::new(certified_key(
                &pair.0, &pair.1,
            )?))));
            tokio::spawn(files.reload(Arc::downgrade(&current), pair, reload_every));
            config_with(current).map(Some)
        }
        _ => Err(TlsError::HalfMounted {
            dir: dir.to_owned(),
        }),
    }
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// Reads the files every `every` until the configuration is dropped, and swaps in each new
    /// pair that is whole.
    async fn reload(self, current: Weak<Current>, mut seen: (Vec<u8>, Vec<u8>), every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let Some(current) = current.upgrade() else {
                return;
            };
            let pair = match self.read() {
                Ok(pair) if pair == seen => continue,
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "rereading the TLS certificate failed; serving the last one read");
                    continue;
                }
            };
            match certified_key(&pair.0, &pair.1) {
                Ok(key) => {
                    current.set(key);
                    tracing::info!(cert = %self.cert.display(), "serving the renewed TLS certificate");
                }
                Err(e) => {
                    tracing::warn!(cert = %self.cert.display(), error = %e, "the renewed TLS certificate is not usable; serving the last good one")
                }
            }
            // Either way, these contents have been judged: they are not logged again.
            seen = pair;
        }
    }
}

/// A self-signed certificate for `names` (DNS names or IP addresses), made now and kept only in
/// memory: the configuration, and the certificate's PEM for clients to trust.
pub fn self_signed(names: &[String]) -> Result<(Arc<ServerConfig>, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    /// A CA and a way to issue serving certificates for 127.0.0.1 under it, as cert-manager
    /// renews a certificate: same CA, new key and certificate.
    struct Ca(CertifiedIssuer<'static, KeyPair>);

    impl Ca {
        fn new() -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
        }

        /// (certificate PEM, key PEM)
        fn issue(&self) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
            let cert = params.signed_by(&key, &self.0).unwrap();
            (cert.pem(), key.serialize_pem())
        }

        fn client(&self) -> TlsConnector {
            let mut roots = RootCertStore::empty();
            roots.add(self.0.der().clone()).unwrap();
            let config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
        }
    }

    /// The certificate the server at `addr` presents in a new handshake.
    async fn presented(client: &TlsConnector, addr: SocketAddr) -> CertificateDer<'static> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = client.connect(name, tcp).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    fn write(dir: &Path, (cert, key): &(String, String)) {
        std::fs::write(dir.join(KEY_FILE), key).unwrap();
        std::fs::write(dir.join(CERT_FILE), cert).unwrap();
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_from_the_next_handshake_and_a_broken_one_is_not() {
        let dir = std::env::temp_dir().join(format!("splai-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new();
        let (first, second) = (ca.issue(), ca.issue());
        write(&dir, &first);
        let config = from_dir(&dir, Duration::from_millis(20)).unwrap().unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let _listener = TlsListener::new(tcp, config).unwrap();
        let client = ca.client();
        let der_of = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(presented(&client, addr).await, der_of(&first.0));

        // A certificate without its key: refused, and the first one is still served.
        std::fs::write(dir.join(CERT_FILE), &second.0).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(presented(&client, addr).await, der_of(&first.0));

        write(&dir, &second);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while presented(&client, addr).await != der_of(&second.0) {
            assert!(tokio::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn half_a_mounted_secret_is_an_error_that_names_the_missing_file() {
        let dir = std::env::temp_dir().join(format!("splai-tls-half-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CERT_FILE), "x").unwrap();
        let e = from_dir(&dir, RELOAD_EVERY).unwrap_err();
        assert!(
            e.to_string().contains("needs both tls.crt and tls.key"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
