//! SPLAI's Kubernetes operator. Today it holds the four `splai.io/v1alpha1` custom resources, which
//! wrap the core's specs and statuses, and the CRDs generated from them; the controllers and the
//! admission webhook come next, as thin drivers of `splai-scheduler`.
//!
//! Scheduling decisions never live here: they belong to `splai-scheduler`, which must not depend on
//! this crate, on kube or on tokio.

#![forbid(unsafe_code)]

mod condition;
pub mod crd;
mod resources;
mod schema;

pub use condition::{Condition, ConditionStatus};
pub use resources::{
    ReconcileStatus, SPLAIJob, SPLAIJobSpec, SPLAIJobStatus, SPLAIModelRoute, SPLAIModelRouteSpec,
    SPLAIPolicy, SPLAIPolicySpec, SPLAIWorker, SPLAIWorkerSpec, SPLAIWorkerStatus,
};
