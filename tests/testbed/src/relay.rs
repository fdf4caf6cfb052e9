//! A TCP relay in front of the API server that a test can cut, as a network partition would cut
//! one client off while the rest of the cluster goes on.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Relays loopback connections to `target`. While cut, every relayed connection is closed and
/// new ones are closed as soon as they are accepted. TLS passes through untouched: the API
/// server's certificate is for 127.0.0.1, which the relay's address also is.
pub struct Relay {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying to `target` (`https://127.0.0.1:PORT` or `127.0.0.1:PORT`) on a free
    /// loopback port. Call it inside the runtime the relayed clients use.
    pub async fn start(target: &str) -> Result<Relay> {
        let target = target.trim_start_matches("https://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (open, _) = watch::channel(true);
        let gate = open.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*gate.borrow() {
                    continue;
                }
                let (target, mut cut) = (target.clone(), gate.subscribe());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Ok(Relay { addr, open, accept })
    }

    /// `https://127.0.0.1:<port>`, for [`crate::ControlPlane::client_at`].
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
