//! What drivers tell the core (events) and what the core asks drivers to do (effects).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::{
    AttemptRef, Capabilities, Dependency, ExecutionRecord, Health, JobPhase, JobSpec,
    ModelRouteSpec, PolicySpec, ResolvedRoute, TaskSpec, Utilization,
};
use crate::score::Explanation;
use crate::time::Timestamp;

// Events are built once and moved into `handle`; boxing the job spec would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Event {
    /// A new job. `key` is unique (the operator uses `namespace/name`). Without a `traceId` one
    /// is derived from the key and the submission time.
    JobSubmitted {
        key: String,
        spec: JobSpec,
        trace_id: Option<String>,
    },
    JobCanceled {
        key: String,
    },
    /// Drops a finished job from memory; its records were already emitted.
    JobForgotten {
        key: String,
    },
    /// A worker joined, or rejoined. A new `incarnation` means the agent restarted and lost
    /// whatever it was running.
    WorkerRegistered {
        name: String,
        capabilities: Capabilities,
        incarnation: u64,
    },
    WorkerRemoved {
        name: String,
    },
    Heartbeat(Heartbeat),
    TaskStarted {
        attempt: AttemptRef,
        worker: String,
    },
    TaskSucceeded {
        attempt: AttemptRef,
        worker: String,
        artifact_uri: Option<String>,
    },
    /// `retryable: false` fails the task at once, whatever its retry budget.
    TaskFailed {
        attempt: AttemptRef,
        worker: String,
        error: String,
        retryable: bool,
    },
    PolicyUpserted {
        name: String,
        spec: PolicySpec,
    },
    PolicyRemoved {
        name: String,
    },
    RouteUpserted {
        name: String,
        spec: ModelRouteSpec,
    },
    RouteRemoved {
        name: String,
    },
    /// Nothing happened but time passed: fire timers and schedule.
    Tick,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub worker: String,
    pub incarnation: u64,
    #[serde(default)]
    pub utilization: Utilization,
    #[serde(default)]
    pub queue_depth: u32,
    #[serde(default)]
    pub warm_models: Vec<String>,
    /// Attempts the agent is running; any that is not current is cancelled.
    #[serde(default)]
    pub running: Vec<AttemptRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Effect {
    JobPhaseChanged {
        job: Arc<str>,
        from: JobPhase,
        to: JobPhase,
        reason: &'static str,
        message: Option<String>,
    },
    /// The planner wrote the job's tasks; the operator stores them in `.spec`.
    JobPlanned {
        job: Arc<str>,
        tasks: Vec<TaskSpec>,
        dependencies: Vec<Dependency>,
    },
    Assign(Box<Assignment>),
    /// Stop an attempt on a worker.
    Cancel {
        job: Arc<str>,
        task: Arc<str>,
        attempt: u32,
        worker: Arc<str>,
        reason: CancelReason,
    },
    /// An attempt ended and the task will run again once `not_before` has passed.
    Requeue {
        job: Arc<str>,
        task: Arc<str>,
        failed_attempt: u32,
        not_before: Timestamp,
        error: String,
    },
    /// An attempt ran past the task's timeout (the attempt is also cancelled and recorded).
    TaskTimedOut {
        job: Arc<str>,
        task: Arc<str>,
        attempt: u32,
        worker: Arc<str>,
    },
    /// One attempt is over, whatever its outcome. Drivers keep these.
    AttemptEnded(Box<ExecutionRecord>),
    WorkerHealthChanged {
        worker: Arc<str>,
        from: Health,
        to: Health,
    },
    /// The first task of a bucket changed why it waits; read every task's reason from the status.
    Pending {
        job: Arc<str>,
        task: Arc<str>,
        reason: String,
    },
    /// A report or request that changed nothing, and why; kept for metrics and audit.
    Ignored(Ignored),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub job: Arc<str>,
    pub task: Arc<str>,
    pub attempt: u32,
    pub worker: Arc<str>,
    pub traceparent: String,
    pub route: Option<ResolvedRoute>,
    pub explanation: Explanation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CancelReason {
    JobCanceled,
    JobTimedOut,
    TaskTimedOut,
    /// The worker reported an attempt that is no longer current.
    Orphaned,
}

impl CancelReason {
    /// A stable snake_case name, usable as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            CancelReason::JobCanceled => "job_canceled",
            CancelReason::JobTimedOut => "job_timed_out",
            CancelReason::TaskTimedOut => "task_timed_out",
            CancelReason::Orphaned => "orphaned",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "why")]
pub enum Ignored {
    DuplicateJob {
        job: String,
    },
    UnknownJob {
        job: String,
    },
    UnknownTask {
        job: String,
        task: String,
    },
    UnknownWorker {
        worker: String,
    },
    /// A report for an attempt that is not the task's current one, or from another worker:
    /// fencing by attempt keeps a result from being committed twice.
    StaleReport {
        attempt: AttemptRef,
        worker: String,
        current_attempt: u32,
    },
    UnknownPolicy {
        name: String,
    },
    UnknownRoute {
        name: String,
    },
}

impl Ignored {
    /// A stable snake_case name for the variant, usable as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Ignored::DuplicateJob { .. } => "duplicate_job",
            Ignored::UnknownJob { .. } => "unknown_job",
            Ignored::UnknownTask { .. } => "unknown_task",
            Ignored::UnknownWorker { .. } => "unknown_worker",
            Ignored::StaleReport { .. } => "stale_report",
            Ignored::UnknownPolicy { .. } => "unknown_policy",
            Ignored::UnknownRoute { .. } => "unknown_route",
        }
    }
}
