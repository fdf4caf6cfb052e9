//! The network behind a small trait, so the same agent and server code runs over tokio in
//! production and over turmoil in simulation.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// Opens and accepts byte streams. Addresses are `host:port` strings; under turmoil the host is a
/// simulated host's name.
pub trait Network: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Listener: Send + Sync + 'static;

    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The next connection and its peer's address.
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;

    /// The address a listener is bound to, such as the port picked for `127.0.0.1:0`.
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<String>;
}

/// Real TCP through `tokio::net`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Network for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        // Frames are small and latency-sensitive; Nagle would hold heartbeats back.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer.to_string()))
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<String> {
        Ok(listener.local_addr()?.to_string())
    }
}

/// Simulated TCP through `turmoil::net`. Must be used inside a turmoil host or client.
#[cfg(feature = "turmoil")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNet;

#[cfg(feature = "turmoil")]
impl Network for TurmoilNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr).await
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = listener.accept().await?;
        Ok((stream, peer.to_string()))
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<String> {
        Ok(listener.local_addr()?.to_string())
    }
}

/// TCP with TLS (feature `tls`): what the operator's agent endpoint and the worker agent speak
/// in a cluster, so that tasks, prompts and the agent's token cross the network encrypted and
/// the agent knows it talks to the operator.
///
/// A client verifies the server's certificate against its roots for the host it dials (the
/// part of `host:port` before the colon). A server runs each handshake in a task of its own,
/// bounded by [`TLS_HANDSHAKE_LIMIT`], so a client that connects and stalls holds up nobody.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct TlsNet {
    client: Option<tokio_rustls::TlsConnector>,
    server: Option<tokio_rustls::TlsAcceptor>,
}

/// How long a TLS handshake may take before the connection is dropped.
#[cfg(feature = "tls")]
pub const TLS_HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(feature = "tls")]
impl TlsNet {
    /// A network that dials with `config` (its roots decide which servers are trusted).
    pub fn client(config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        TlsNet {
            client: Some(config.into()),
            server: None,
        }
    }

    /// A network that accepts with `config` (its certificate resolver may renew in place).
    pub fn server(config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        TlsNet {
            client: None,
            server: Some(config.into()),
        }
    }
}

/// A listener whose connections have finished their TLS handshake.
#[cfg(feature = "tls")]
pub struct TlsListener {
    ready: tokio::sync::Mutex<
        tokio::sync::mpsc::Receiver<(tokio_rustls::TlsStream<tokio::net::TcpStream>, String)>,
    >,
    local: String,
    accepting: tokio::task::AbortHandle,
}

#[cfg(feature = "tls")]
impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

#[cfg(feature = "tls")]
fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this TlsNet has no {what} configuration"),
    )
}

#[cfg(feature = "tls")]
impl Network for TlsNet {
    type Stream = tokio_rustls::TlsStream<tokio::net::TcpStream>;
    type Listener = TlsListener;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let connector = self.client.as_ref().ok_or_else(|| unsupported("client"))?;
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let tcp = TokioNet.connect(addr).await?;
        let tls = connector.connect(name, tcp).await?;
        Ok(tokio_rustls::TlsStream::Client(tls))
    }

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        let acceptor = self.server.clone().ok_or_else(|| unsupported("server"))?;
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let local = tcp.local_addr()?.to_string();
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = TokioNet.accept(&tcp).await else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_LIMIT, handshake).await
                    {
                        let _ = tx.send((tokio_rustls::TlsStream::Server(tls), peer)).await;
                    }
                });
            }
        })
        .abort_handle();
        Ok(TlsListener {
            ready: tokio::sync::Mutex::new(ready),
            local,
            accepting,
        })
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, String)> {
        listener
            .ready
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the TLS listener stopped accepting"))
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<String> {
        Ok(listener.local.clone())
    }
}
