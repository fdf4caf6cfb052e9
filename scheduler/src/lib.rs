//! SPLAI's scheduling core.
//!
//! One synchronous state machine holds everything that decides where and when work runs: the
//! DAG state of every job, the task lifecycle with retries and timeouts, fleet health from
//! heartbeats, tenant policy and quotas, model routing, and the SPLAI score. The Kubernetes
//! operator and the simulator both drive it through [`Scheduler::handle`], so they make the same
//! decisions.
//!
//! This crate must stay pure: no tokio, kube, k8s-openapi, hyper, files, sockets, clocks or OS
//! randomness. Time comes in as a [`Timestamp`] argument and randomness from a seed. A test
//! (`tests/purity.rs`) fails if any of those crates enters its dependencies.

#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod dag;
mod engine;
pub mod event;
mod fleet;
pub mod hash;
mod health;
mod inspect;
mod intern;
mod lifecycle;
mod peers;
pub mod place;
pub mod plan;
pub mod policy;
mod queue;
mod rebuild;
pub mod route;
mod schedule;
pub mod score;
pub mod settings;
pub mod time;
pub mod validate;

pub use engine::{Scheduler, Stats};
pub use event::{Assignment, CancelReason, Effect, Event, Heartbeat, Ignored};
pub use place::PendingReason;
pub use rebuild::{JobRecord, RebuildInput, Snapshot, WorkerRecord};
pub use score::{Explanation, ScoreTerms, Strategy, Weights};
pub use settings::{Limits, QueueOrder, Settings};
pub use time::Timestamp;
pub use validate::{ValidationErrors, ValidationIssue};
