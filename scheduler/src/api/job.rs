use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// `SPLAIJob.spec`: a DAG of tasks that one tenant submits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// The tenant that owns the job; quotas and policies are counted per tenant.
    pub tenant: String,
    /// The `SPLAIPolicy` to admit the job against. Without it, the tenant's own policy applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<String>,
    /// Higher runs first. Waiting work gains one level per `agingIntervalMs` past its due time
    /// (its submission under `arrival` order, submission plus critical path under
    /// `criticalPath`), so nothing starves.
    #[serde(default)]
    pub priority: i32,
    /// The tasks. Leave empty and set `plan` to have the planner write them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSpec>,
    /// Edges of the DAG: each entry names a task and the tasks that must succeed before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    /// The whole job fails, and its running tasks are stopped, once it has run this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    /// When the job should have finished, counted from its submission. Only the deadline-driven
    /// policies (`edf`, `lsf`) read it; a job without one counts its critical path as its
    /// deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub deadline_seconds: Option<u64>,
    /// The planner's input, used only when `tasks` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<PlanSpec>>,
    /// Set to true to cancel the job; its running tasks are stopped first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

/// One node of the DAG.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique within the job: lowercase letters, digits, `-`, `_` and `.`, at most 63 characters.
    pub id: String,
    pub kind: TaskKind,
    #[serde(default)]
    pub resources: Resources,
    /// The model an `inference` task needs; workers must serve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tools the worker must offer, such as `python` or `ffmpeg`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Preferred locality (zone) of the worker. A preference, not a constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Data classification of the task's inputs, such as `public` or `confidential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default, skip_serializing_if = "InteractionClass::is_batch")]
    pub interaction_class: InteractionClass,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reasoning_required: bool,
    /// An attempt that runs longer than this is stopped and counts as a timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "RetryPolicy::is_default")]
    pub retry: RetryPolicy,
    /// How long the task is expected to take on a worker of speed 1.0; feeds `latency_prediction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration_ms: Option<u64>,
    /// The command a `command` task runs (argv, no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The prompt or input document of an `inference` task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    #[default]
    Command,
    Inference,
}

/// What one attempt of a task reserves on its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "Resources::default_cpu")]
    pub cpu_millis: u32,
    #[serde(default = "Resources::default_memory")]
    pub memory_mib: u32,
    #[serde(default)]
    pub gpus: u32,
}

impl Resources {
    fn default_cpu() -> u32 {
        1000
    }
    fn default_memory() -> u32 {
        512
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_millis: Self::default_cpu(),
            memory_mib: Self::default_memory(),
            gpus: 0,
        }
    }
}

impl InteractionClass {
    fn is_batch(&self) -> bool {
        *self == InteractionClass::Batch
    }
}

/// How interactive the caller of a model is; model routes match on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InteractionClass {
    Interactive,
    #[default]
    Batch,
    Background,
}

/// Retries with exponential backoff: attempt `n` (n ≥ 2) waits
/// `min(initialBackoffMs × backoffFactor^(n-2), maxBackoffMs)` after attempt `n-1` ends.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt; a task runs at most `limit + 1` times.
    #[serde(default = "RetryPolicy::default_limit")]
    #[schemars(range(max = 100))]
    pub limit: u32,
    #[serde(default = "RetryPolicy::default_initial")]
    pub initial_backoff_ms: u64,
    #[serde(default = "RetryPolicy::default_factor")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub backoff_factor: f64,
    #[serde(default = "RetryPolicy::default_max")]
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    fn is_default(&self) -> bool {
        *self == RetryPolicy::default()
    }

    fn default_limit() -> u32 {
        3
    }
    fn default_initial() -> u64 {
        1_000
    }
    fn default_factor() -> f64 {
        2.0
    }
    fn default_max() -> u64 {
        60_000
    }

    /// The wait before attempt `next_attempt` (2 for the first retry).
    pub fn backoff_before(&self, next_attempt: u32) -> u64 {
        let exp = next_attempt.saturating_sub(2).min(64) as i32;
        let ms = self.initial_backoff_ms as f64 * self.backoff_factor.powi(exp);
        if ms.is_finite() {
            (ms as u64).min(self.max_backoff_ms)
        } else {
            self.max_backoff_ms
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            limit: Self::default_limit(),
            initial_backoff_ms: Self::default_initial(),
            backoff_factor: Self::default_factor(),
            max_backoff_ms: Self::default_max(),
        }
    }
}

/// `task` starts only after every task in `dependsOn` has succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    pub task: String,
    pub depends_on: Vec<String>,
}

/// The planner's input: a shape and a task template to expand into `tasks` and `dependencies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanSpec {
    pub kind: PlanKind,
    /// Steps of a `chain`, or mappers of a `map-reduce`. Ignored by `single`.
    #[serde(default = "PlanSpec::default_count")]
    #[schemars(range(min = 1, max = 10000))]
    pub count: u32,
    /// The task every generated step copies. Its `id` is the prefix of the generated ids.
    pub template: TaskSpec,
    /// The reducer of a `map-reduce`; defaults to the template with id `reduce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<TaskSpec>,
}

impl PlanSpec {
    fn default_count() -> u32 {
        1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlanKind {
    Single,
    Chain,
    MapReduce,
}

/// `SPLAIJob.status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub phase: JobPhase,
    #[serde(default)]
    pub progress: Progress,
    /// Machine-readable cause of the current phase, such as `QuotaExceeded` or `TaskFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The W3C trace id (32 hex digits) shared by the job and all its tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The output of the job's single sink task, once the job completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_artifact_uri: Option<String>,
    /// The outputs of every sink task, when the DAG has more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result_artifacts: Vec<TaskArtifact>,
    /// The state of each task, in the order of `spec.tasks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskArtifact {
    pub task: String,
    pub uri: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JobPhase {
    #[default]
    Queued,
    Planning,
    Scheduled,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobPhase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobPhase::Completed | JobPhase::Failed | JobPhase::Canceled
        )
    }
}

/// Task counts by state. `total` is the sum of the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub total: u32,
    pub waiting: u32,
    pub ready: u32,
    pub retrying: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub timed_out: u32,
    pub canceled: u32,
    pub skipped: u32,
}

impl Progress {
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed + self.timed_out + self.canceled + self.skipped
    }

    pub(crate) fn slot(&mut self, state: TaskPhase) -> &mut u32 {
        match state {
            TaskPhase::Waiting => &mut self.waiting,
            TaskPhase::Ready => &mut self.ready,
            TaskPhase::Retrying => &mut self.retrying,
            TaskPhase::Assigned | TaskPhase::Running => &mut self.running,
            TaskPhase::Succeeded => &mut self.succeeded,
            TaskPhase::Failed => &mut self.failed,
            TaskPhase::TimedOut => &mut self.timed_out,
            TaskPhase::Canceled => &mut self.canceled,
            TaskPhase::Skipped => &mut self.skipped,
        }
    }
}

/// The observable state of a task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TaskPhase {
    /// Some dependency has not succeeded yet.
    #[default]
    Waiting,
    /// Runnable, waiting for a worker (see `pendingReason`).
    Ready,
    /// An attempt failed; the next one starts after `notBefore`.
    Retrying,
    /// Placed on a worker, not yet reported started.
    Assigned,
    Running,
    Succeeded,
    /// Retries exhausted.
    Failed,
    /// The last attempt ran past the task's timeout and no retry was left.
    TimedOut,
    Canceled,
    /// A dependency failed, so the task never ran.
    Skipped,
}

impl TaskPhase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded
                | TaskPhase::Failed
                | TaskPhase::TimedOut
                | TaskPhase::Canceled
                | TaskPhase::Skipped
        )
    }
}

/// Compact per-task state kept in the job's status; enough to rebuild the scheduler after a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub id: String,
    pub phase: TaskPhase,
    /// The current or last attempt, counted from 1; 0 before the first.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The earliest time of the next attempt, while `Retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// W3C `traceparent` of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Why a `Ready` task has no worker yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// The backend an `inference` task was routed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<crate::api::ResolvedRoute>,
    /// Why the current attempt went to its worker: each term of the score and the runner-up.
    /// The core does not keep it; drivers fill it in from the assignment's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
}

/// What became of one attempt of one task. The core emits one per finished attempt; drivers keep
/// them (the operator as a JSON-lines artifact, the simulator in `tasks.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    pub job: String,
    pub task: String,
    pub attempt: u32,
    pub worker: String,
    pub assigned_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    pub traceparent: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    WorkerLost,
    Canceled,
}
