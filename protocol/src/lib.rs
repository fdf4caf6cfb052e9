//! The SPLAI agent protocol: what worker agents and the control plane say to each other, and the
//! code on both ends that says it.
//!
//! An agent registers, heartbeats, runs what it is assigned and reports how each attempt ended;
//! the control plane turns all of that into `splai_scheduler::Event`s and turns the core's
//! `Assign` and `Cancel` effects back into messages. The production worker agent, the operator's
//! agent endpoint and the simulator run this same code: the network sits behind [`Network`], with
//! [`TokioNet`] in production and `TurmoilNet` (feature `turmoil`) in simulation, and time is
//! read only through `tokio::time`, which turmoil virtualises.
//!
//! - [`messages`]: the wire types and their mapping to the core's events and effects.
//! - [`frame`]: length-prefixed JSON frames with a size limit.
//! - [`net`]: the network trait and its implementations.
//! - [`agent`]: the agent's session, reconnects and fault hooks.
//! - [`server`]: the control plane's connection handling and routing.
//!
//! ## Wiring
//!
//! The control plane binds a [`Server`], keeps its [`ControlHandle`], spawns
//! [`Server::serve`], feeds each [`Inbound::Event`] to `Scheduler::handle`, and sends each
//! effect that [`ControlMessage::from_effect`] maps through [`ControlHandle::send`]. An agent
//! is [`Agent::new`] plus a spawned [`Agent::run`]; its [`AgentHandle`] injects faults. Under
//! turmoil one host can run many agents, each spawned from the host's future: they share the
//! host's address and its network faults, and the handles give each worker its own.
//!
//! This crate must never depend on kube, k8s-openapi or anything cluster-specific, and must hold
//! no scheduling logic: which worker runs what, retries, timeouts and health are decided by
//! `splai-scheduler`. A driver that needs a decision asks the core.

#![forbid(unsafe_code)]

pub mod agent;
mod error;
pub mod frame;
pub mod messages;
pub mod net;
pub mod server;

pub use agent::{
    Agent, AgentConfig, AgentHandle, AgentStatus, Backoff, CredentialSource, Executor, Load,
    Outcome,
};
pub use error::{Error, Result};
pub use frame::{DEFAULT_MAX_FRAME, FrameReader, FrameWriter};
pub use messages::{
    AgentMessage, CancelReason, ControlMessage, Credential, Envelope, PROTOCOL_VERSION,
    TaskAssignment,
};
#[cfg(feature = "turmoil")]
pub use net::TurmoilNet;
pub use net::{Network, TokioNet};
#[cfg(feature = "tls")]
pub use net::{TLS_HANDSHAKE_LIMIT, TlsListener, TlsNet};
pub use server::{AckMode, Authenticate, ControlHandle, Inbound, Server, ServerConfig};
