//! The four custom resources. Each spec is a newtype over the core's spec, so the operator and
//! the simulator read exactly the same fields; the operator adds only what Kubernetes needs on the
//! status: `observedGeneration`, conditions and the strings kubectl's columns print.

// kube's `printcolumn(...)` lists repeat `type_ = "string"`, which clippy mistakes for duplicated
// attributes.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use splai_scheduler::api::{
    JobSpec, JobStatus, ModelRouteSpec, PolicySpec, WorkerSpec, WorkerStatus,
};

use crate::Condition;

/// A DAG of tasks submitted by one tenant.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "splai.io",
    version = "v1alpha1",
    kind = "SPLAIJob",
    doc = "A DAG of tasks that one tenant submits; SPLAI admits, schedules and tracks it.",
    plural = "splaijobs",
    namespaced,
    status = "SPLAIJobStatus",
    shortname = "sj",
    category = "splai",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.completions"),
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct SPLAIJobSpec(pub JobSpec);

/// `SPLAIJob.status`: the core's job status, kept compact, and the Kubernetes bookkeeping around
/// it. A job of thousands of tasks must fit in one etcd object (1.5 MiB), so `tasks` lists only
/// the tasks worth a look (see [`crate::view`]): while the job runs, those in flight, retrying,
/// failed or first in line; once a job of at most 100 tasks has ended, every task, with its last
/// attempt's worker and score. `taskPhases` holds every task's phase in one letter, and the full
/// execution records go to the JSON-lines artifact at `recordsUri`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SPLAIJobStatus {
    #[serde(flatten)]
    pub job: JobStatus,
    /// `succeeded/total`, such as `7/10`; what kubectl's Progress column prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<String>,
    /// One letter per task, in the order of `.spec.tasks`: `W` waiting, `R` ready, `B` retrying
    /// after a backoff, `A` assigned, `X` running, `S` succeeded, `F` failed, `T` timed out,
    /// `C` canceled, `K` skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_phases: Option<String>,
    /// Ready tasks left out of `tasks` to keep the status small.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tasks_not_shown: u32,
    /// Every attempt of every task (worker, times, outcome, error, artifact, trace, and the
    /// decision that placed it: score terms, runner-up, why it waited), as JSON lines; written
    /// when the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SPLAIJobStatus {
    /// Wraps the core's status for `generation` of the object, as it is (every task listed).
    pub fn new(job: JobStatus, generation: Option<i64>) -> Self {
        SPLAIJobStatus {
            completions: Some(format!("{}/{}", job.progress.succeeded, job.progress.total)),
            job,
            observed_generation: generation,
            ..SPLAIJobStatus::default()
        }
    }
}

/// A machine that runs tasks, registered by its agent.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "splai.io",
    version = "v1alpha1",
    kind = "SPLAIWorker",
    doc = "A machine that runs SPLAI tasks, registered and kept fresh by its agent.",
    plural = "splaiworkers",
    namespaced,
    status = "SPLAIWorkerStatus",
    shortname = "sw",
    category = "splai",
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health"),
    printcolumn(
        name = "Running",
        type_ = "integer",
        json_path = ".status.runningCount"
    ),
    printcolumn(name = "Queue", type_ = "integer", json_path = ".status.queueDepth"),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.lastHeartbeat"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct SPLAIWorkerSpec(pub WorkerSpec);

/// `SPLAIWorker.status`: the core's worker status and the Kubernetes bookkeeping around it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SPLAIWorkerStatus {
    #[serde(flatten)]
    pub worker: WorkerStatus,
    /// The length of `runningTasks`; what kubectl's Running column prints.
    #[serde(default)]
    pub running_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl SPLAIWorkerStatus {
    /// Wraps the core's status for `generation` of the object.
    pub fn new(worker: WorkerStatus, generation: Option<i64>) -> Self {
        SPLAIWorkerStatus {
            running_count: u32::try_from(worker.running_tasks.len()).unwrap_or(u32::MAX),
            worker,
            observed_generation: generation,
            conditions: Vec::new(),
        }
    }
}

/// What one tenant may run, and how much of it at once.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "splai.io",
    version = "v1alpha1",
    kind = "SPLAIPolicy",
    doc = "What one tenant may run, and how much of it at once.",
    plural = "splaipolicies",
    namespaced,
    status = "ReconcileStatus",
    shortname = "spol",
    category = "splai",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenant"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct SPLAIPolicySpec(pub PolicySpec);

/// Which backend serves the inference tasks a route matches.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "splai.io",
    version = "v1alpha1",
    kind = "SPLAIModelRoute",
    doc = "Which model backend serves the inference tasks that a route matches.",
    plural = "splaimodelroutes",
    namespaced,
    status = "ReconcileStatus",
    shortname = "sroute",
    category = "splai",
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.backend"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct SPLAIModelRouteSpec(pub ModelRouteSpec);

/// The status of resources that the operator only reads: policies and model routes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
