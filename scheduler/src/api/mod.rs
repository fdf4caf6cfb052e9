//! The specs and statuses of SPLAI's four resources, defined once.
//!
//! The operator wraps these in Kubernetes custom resources (`splai.io/v1alpha1`) and the simulator
//! reads them from scenario files, so both see exactly the same fields. Field names are camelCase,
//! as in every Kubernetes API.

mod job;
mod policy;
mod route;
mod worker;

pub use job::*;
pub use policy::*;
pub use route::*;
pub use worker::*;
