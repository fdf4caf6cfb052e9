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
