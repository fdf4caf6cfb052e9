//! The crate's one error type. Variant names double as metric labels.

use std::io;
use std::time::Duration;

use crate::messages::PROTOCOL_VERSION;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The length prefix announced more than the limit; the stream is unusable afterwards.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },

    #[error("peer closed the connection")]
    Closed,

    #[error(
        "peer closed the connection in the middle of a frame ({received} of {expected} bytes received)"
    )]
    TruncatedFrame { received: usize, expected: usize },

    #[error("malformed message: {0}")]
    Malformed(#[source] serde_json::Error),

    #[error(
        "unsupported protocol version {got}: this build speaks version {supported}; upgrade the older side",
        supported = PROTOCOL_VERSION
    )]
    UnsupportedVersion { got: u32 },

    #[error("network error: {0}")]
    Io(#[from] io::Error),

    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },

    /// A connection must open with `register`, so that every later message has a known worker.
    #[error("the first message on a connection must be `register`, got `{got}`")]
    NotRegistered { got: &'static str },

    #[error("connection registered as worker `{registered}` sent a message for worker `{claimed}`")]
    WrongWorker { registered: String, claimed: String },

    /// The worker connected again; the control plane closed this older connection.
    #[error("worker `{worker}` connected again; this older connection was closed")]
    Superseded { worker: String },

    #[error("worker `{worker}` is not connected to this control plane")]
    NotConnected { worker: String },

    #[error(
        "worker `{worker}` has {capacity} control messages waiting to be written; its connection is not draining"
    )]
    OutboxFull { worker: String, capacity: usize },

    #[error("the agent has stopped; its handle can no longer reach it")]
    AgentStopped,

    #[error("reading the agent's credential from {}: {source}", path.display())]
    Credential {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// The control plane did not accept the agent's credential for the worker it claimed.
    #[error("the control plane refused worker `{worker}`: {reason}")]
    Refused { worker: String, reason: String },
}

impl Error {
    /// A short, stable name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::FrameTooLarge { .. } => "frameTooLarge",
            Error::Closed => "closed",
            Error::TruncatedFrame { .. } => "truncatedFrame",
            Error::Malformed(_) => "malformed",
            Error::UnsupportedVersion { .. } => "unsupportedVersion",
            Error::Io(_) => "io",
            Error::Timeout { .. } => "timeout",
            Error::NotRegistered { .. } => "notRegistered",
            Error::WrongWorker { .. } => "wrongWorker",
            Error::Superseded { .. } => "superseded",
            Error::NotConnected { .. } => "notConnected",
            Error::OutboxFull { .. } => "outboxFull",
            Error::AgentStopped => "agentStopped",
            Error::Refused { .. } => "refused",
            Error::Credential { .. } => "credential",
        }
    }
}
