//! SPLAI's Kubernetes operator: the four `splai.io/v1alpha1` custom resources, which wrap the
//! core's specs and statuses, the CRDs generated from them, and the controllers that drive
//! `splai-scheduler` against the API server.
//!
//! - [`driver`]: the job, scheduler and heartbeat controllers in one synchronous driver of the
//!   core; it decides what to write, never writes.
//! - [`flush`]: the writes (statuses, specs, finalizers, Events) and [`artifacts`] (records).
//! - [`run`]: leader election ([`leader`]), watches, the agent endpoint and `/metrics`.
//! - [`webhook`]: the admission webhook; [`webhook_cert`]: its self-signed certificate when
//!   cert-manager does not provide one; [`tls`]: certificates and the HTTPS listener it and the
//!   gateway share.
//!
//! Scheduling decisions never live here: they belong to `splai-scheduler`, which must not depend on
//! this crate, on kube or on tokio.

#![forbid(unsafe_code)]

pub mod agent_auth;
pub mod artifacts;
mod condition;
pub mod crd;
pub mod driver;
pub mod flush;
pub mod leader;
pub mod metrics;
mod resources;
pub mod run;
mod schema;
pub mod tls;
pub mod view;
pub mod watch;
pub mod webhook;
pub mod webhook_cert;

pub use condition::{Condition, ConditionStatus, set_condition};
pub use resources::{
    ReconcileStatus, SPLAIJob, SPLAIJobSpec, SPLAIJobStatus, SPLAIModelRoute, SPLAIModelRouteSpec,
    SPLAIPolicy, SPLAIPolicySpec, SPLAIWorker, SPLAIWorkerSpec, SPLAIWorkerStatus,
};
