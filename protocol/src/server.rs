//! The control plane's side: accepts agent connections, hands what they say to the driver as core
//! events, and routes control messages to the right worker's connection.
//!
//! The server decides nothing. It checks only that a connection registered and keeps to its
//! worker's name; what the messages mean is the core's business.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use splai_scheduler::Event;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep_until, timeout};

use crate::error::{Error, Result};
use crate::frame::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter};
use crate::messages::{AgentMessage, ControlMessage};
use crate::net::Network;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub max_frame: usize,
    /// A connection silent this long is closed. Longer than an agent's heartbeat interval, or
    /// healthy agents are cut off.
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// Control messages queued per worker before [`ControlHandle::send`] refuses more.
    pub outbox_capacity: usize,
    /// Who answers `register` and `heartbeat`.
    pub ack: AckMode,
    /// Checks each registration's credential; `None` accepts every agent (a trusted network:
    /// the simulator, a laptop).
    pub authenticate: Option<Arc<dyn Authenticate>>,
}

/// Decides whether a registration's credential lets its agent speak for the worker it names.
/// Checked once per connection: every later message on it must name the same worker.
pub trait Authenticate: std::fmt::Debug + Send + Sync + 'static {
    /// `Err` holds the reason, which the agent is told (it must not echo the credential).
    fn authenticate<'a>(
        &'a self,
        worker: &'a str,
        credential: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>>;
}

/// When an agent's `register` and `heartbeat` are answered. An answer tells the agent that its
/// earlier reports arrived, and it then forgets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// As soon as the driver has the message: enough when the driver's state is the truth (the
    /// simulator).
    #[default]
    OnReceipt,
    /// Only when the driver calls [`ControlHandle::ack`], after it has made what it received
    /// durable (the operator, after writing statuses). A crash before that loses no report: the
    /// agent sends it again to the next control plane.
    ByDriver,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            outbox_capacity: 1024,
            ack: AckMode::OnReceipt,
            authenticate: None,
        }
    }
}

/// What the server hands the driver.
// Nearly every value is an `Event`, moved on into `Scheduler::handle`; boxing it would add an
// allocation per message to spare the rare `Disconnected` some bytes (the core's `Event` does
// the same).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    /// A message from a worker, as the core's event; feed it to `Scheduler::handle`.
    Event {
        worker: String,
        event: Event,
        /// The connection it came on; with [`AckMode::ByDriver`], answer a `register` or
        /// `heartbeat` by passing it to [`ControlHandle::ack`].
        connection: u64,
        /// The message was a `register` or `heartbeat`, which expects an answer.
        asks: bool,
    },
    /// A connection ended. For logs and metrics only: the core learns that a worker is gone
    /// from its missing heartbeats, not from a socket.
    Disconnected {
        /// `None` if the connection never registered.
        worker: Option<String>,
        peer: String,
        reason: Error,
    },
}

/// Sends control messages to connected workers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    routes: Arc<Mutex<BTreeMap<String, Route>>>,
}

#[derive(Debug)]
struct Route {
    connection: u64,
    outbox: mpsc::Sender<ControlMessage>,
}

impl ControlHandle {
    /// Queues `message` for `worker`'s connection without waiting, so a driver can apply a
    /// batch of effects in one synchronous pass.
    pub fn send(&self, worker: &str, message: ControlMessage) -> Result<()> {
        let routes = self.routes();
        let route = routes.get(worker).ok_or_else(|| Error::NotConnected {
            worker: worker.to_owned(),
        })?;
        route.outbox.try_send(message).map_err(|e| match e {
            TrySendError::Full(_) => Error::OutboxFull {
                worker: worker.to_owned(),
                capacity: route.outbox.max_capacity(),
            },
            TrySendError::Closed(_) => Error::NotConnected {
                worker: worker.to_owned(),
            },
        })
    }

    /// Answers one `register` or `heartbeat` that arrived on `connection` (see
    /// [`AckMode::ByDriver`]). Does nothing if the worker has since reconnected: an answer
    /// counts only on the connection whose message it answers.
    pub fn ack(&self, worker: &str, connection: u64) -> Result<()> {
        let routes = self.routes();
        match routes.get(worker) {
            Some(route) if route.connection == connection => route
                .outbox
                .try_send(ControlMessage::Ack)
                .map_err(|e| match e {
                    TrySendError::Full(_) => Error::OutboxFull {
                        worker: worker.to_owned(),
                        capacity: route.outbox.max_capacity(),
                    },
                    TrySendError::Closed(_) => Error::NotConnected {
                        worker: worker.to_owned(),
                    },
                }),
            _ => Ok(()),
        }
    }

    pub fn is_connected(&self, worker: &str) -> bool {
        self.routes().contains_key(worker)
    }

    /// Connected workers, by name.
    pub fn connected(&self) -> Vec<String> {
        self.routes().keys().cloned().collect()
    }

    /// A newer connection replaces an older one; dropping the older one's outbox closes it.
    fn attach(&self, worker: &str, connection: u64, outbox: mpsc::Sender<ControlMessage>) {
        self.routes()
            .insert(worker.to_owned(), Route { connection, outbox });
    }

    fn detach(&self, worker: &str, connection: u64) {
        let mut routes = self.routes();
        if routes
            .get(worker)
            .is_some_and(|r| r.connection == connection)
        {
            routes.remove(worker);
        }
    }

    fn routes(&self) -> MutexGuard<'_, BTreeMap<String, Route>> {
        // The map stays consistent even if a holder panicked: every critical section is one call.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts agent connections on one address.
pub struct Server<N: Network> {
    net: N,
    listener: N::Listener,
    config: ServerConfig,
    handle: ControlHandle,
}

impl<N: Network> Server<N> {
    pub async fn bind(net: N, addr: &str, config: ServerConfig) -> io::Result<Self> {
        let listener = net.bind(addr).await?;
        Ok(Server {
            net,
            listener,
            config,
            handle: ControlHandle {
                routes: Arc::default(),
            },
        })
    }

    pub fn handle(&self) -> ControlHandle {
        self.handle.clone()
    }

    /// The address agents should dial, once the port is known.
    pub fn local_addr(&self) -> io::Result<String> {
        self.net.local_addr(&self.listener)
    }

    /// Accepts agents until the receiver of `events` is dropped; each connection runs in its
    /// own task. Taking the sender lets a driver merge other sources into the same channel.
    pub async fn serve(self, events: mpsc::Sender<Inbound>) {
        let mut connection = 0u64;
        loop {
            let accepted = tokio::select! {
                biased;
                () = events.closed() => return,
                accepted = self.net.accept(&self.listener) => accepted,
            };
            let Ok((stream, peer)) = accepted else {
                // Accept fails for one connection (reset before accept) or for a while (out of
                // file descriptors); neither ends the server, and a pause avoids a hot loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            connection += 1;
            let conn = Connection {
                id: connection,
                config: self.config.clone(),
                handle: self.handle.clone(),
                events: events.clone(),
                worker: None,
            };
            tokio::spawn(conn.run(stream, peer));
        }
    }
}

struct Connection {
    id: u64,
    config: ServerConfig,
    handle: ControlHandle,
    events: mpsc::Sender<Inbound>,
    /// Set by the connection's `register`.
    worker: Option<String>,
}

impl Connection {
    async fn run<S: AsyncRead + AsyncWrite>(mut self, stream: S, peer: String) {
        let ended = self.serve(stream).await;
        if let Some(worker) = &self.worker {
            self.handle.detach(worker, self.id);
        }
        if let Err(reason) = ended {
            let worker = self.worker;
            // Fails only when the driver is gone, and then nobody is listening.
            let _ = self
                .events
                .send(Inbound::Disconnected {
                    worker,
                    peer,
                    reason,
                })
                .await;
        }
    }

    /// Returns `Ok` only when the driver has gone away.
    async fn serve<S: AsyncRead + AsyncWrite>(&mut self, stream: S) -> Result<()> {
        let (read, write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read, self.config.max_frame);
        let mut writer = FrameWriter::new(write, self.config.max_frame);
        let idle = self.config.idle_timeout;

        let first = timeout(idle, reader.recv::<AgentMessage>())
            .await
            .map_err(|_| Error::Timeout {
                what: "waiting for the agent to register",
                after: idle,
            })??;
        if !matches!(first, AgentMessage::Register { .. }) {
            return Err(Error::NotRegistered { got: first.kind() });
        }
        let worker = first.worker().to_owned();
        if let Some(auth) = &self.config.authenticate {
            let credential = match &first {
                AgentMessage::Register { credential, .. } => credential.as_ref(),
                _ => None,
            };
            // Bounded like any wait for the agent: a check that hangs (its API server slow)
            // must not hold the connection open for ever.
            let checked = timeout(
                self.config.idle_timeout,
                auth.authenticate(&worker, credential.map(|c| c.0.as_str())),
            )
            .await
            .unwrap_or_else(|_| {
                Err("the credential could not be checked in time; try again".into())
            });
            if let Err(reason) = checked {
                let refused = ControlMessage::Refused {
                    reason: reason.clone(),
                };
                // Told why, when the agent still listens; the connection closes either way.
                let _ = writer
                    .send_within(&refused, self.config.write_timeout)
                    .await;
                return Err(Error::Refused { worker, reason });
            }
        }
        let (outbox_tx, mut outbox) = mpsc::channel(self.config.outbox_capacity.max(1));
        // Attach before the driver sees the registration, so that it can assign at once.
        self.handle.attach(&worker, self.id, outbox_tx);
        self.worker = Some(worker.clone());

        let mut message = first;
        loop {
            if message.worker() != worker {
                return Err(Error::WrongWorker {
                    registered: worker,
                    claimed: message.worker().to_owned(),
                });
            }
            let asks = matches!(
                message,
                AgentMessage::Register { .. } | AgentMessage::Heartbeat(_)
            );
            let inbound = Inbound::Event {
                worker: worker.clone(),
                event: message.into(),
                connection: self.id,
                asks,
            };
            if self.events.send(inbound).await.is_err() {
                return Ok(());
            }
            // Answered after the driver has the message, so an answer means "received".
            if asks && self.config.ack == AckMode::OnReceipt {
                writer
                    .send_within(&ControlMessage::Ack, self.config.write_timeout)
                    .await?;
            }
            let deadline = Instant::now() + idle;
            message = loop {
                tokio::select! {
                    biased;
                    out = outbox.recv() => match out {
                        Some(out) => writer.send_within(&out, self.config.write_timeout).await?,
                        None => return Err(Error::Superseded { worker }),
                    },
                    received = reader.recv::<AgentMessage>() => break received?,
                    () = sleep_until(deadline) => {
                        return Err(Error::Timeout {
                            what: "waiting for a message from the agent",
                            after: idle,
                        });
                    }
                }
            };
        }
    }
}
