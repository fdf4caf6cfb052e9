//! Tunables of the core: limits, health thresholds, score weights, fairness. Scenario files and
//! the operator's config both deserialize this one type.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::score::Weights;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Settings {
    pub limits: Limits,
    pub weights: Weights,
    /// A worker with no heartbeat for this long is Stale and gets no new work.
    pub stale_after_ms: u64,
    /// A worker with no heartbeat for this long is Lost and its tasks are requeued.
    pub lost_after_ms: u64,
    /// An attempt assigned this long ago that its worker's heartbeat does not list is lost
    /// (the assignment or the attempt's report went missing) and is retried.
    pub assignment_grace_ms: u64,
    /// Waiting work gains one priority level per interval past its due time (submission, plus
    /// the critical path under `criticalPath` order), so low priorities never starve: a job
    /// whose critical path is long starts to gain levels only once it could have finished.
    pub aging_interval_ms: u64,
    /// Workers scored per capability class and list (least loaded, and warm for the model; a
    /// task that packs also scores 16 times as many of the tightest fits). 0 scores every
    /// worker: exact, and slower on large fleets.
    pub candidates_per_class: u32,
    /// Queue depth at which `queue_penalty` reaches one half.
    pub queue_half_depth: f64,
    /// Predicted run time at which `latency_prediction` reaches one half.
    pub latency_half_ms: f64,
    /// Duration assumed for tasks without `expectedDurationMs`.
    pub default_duration_ms: u64,
    /// Time to load a model that is not warm on the worker.
    pub model_load_ms: u64,
    /// An inference task waits for a busy worker with its model warm when that worker should be
    /// free within this fraction of a model load (0 never waits). Lower favours completion time,
    /// higher the warm-cache hit rate; BENCHMARKS.md measures both.
    pub warm_wait_fraction: f64,
    /// Weight of the newest observation in a worker's observed speed (0 keeps the spec's speed).
    pub speed_smoothing: f64,
    /// How the splai policy orders ready tasks of equal priority and tenant share (the baseline
    /// policies always use `arrival`).
    pub queue_order: QueueOrder,
}

/// The order of ready tasks of equal priority and tenant share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum QueueOrder {
    /// Jobs by when they would finish if nothing waited (submission plus critical path, by
    /// duration hints), earliest first; inside a job, tasks by slack (the critical path minus
    /// the longest path from the task to the job's end), least first. Short jobs are not held
    /// up behind long ones, equal jobs keep their arrival order, and a job's critical tasks run
    /// before those that can wait.
    #[default]
    CriticalPath,
    /// First come, first served: tasks in the order their jobs were submitted.
    Arrival,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            weights: Weights::default(),
            stale_after_ms: 15_000,
            lost_after_ms: 60_000,
            assignment_grace_ms: 30_000,
            aging_interval_ms: 300_000,
            candidates_per_class: 4,
            queue_half_depth: 2.0,
            latency_half_ms: 60_000.0,
            default_duration_ms: 10_000,
            model_load_ms: 30_000,
            warm_wait_fraction: 0.5,
            speed_smoothing: 0.2,
            queue_order: QueueOrder::CriticalPath,
        }
    }
}

/// Size limits that keep one job from overwhelming the API server or the scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Limits {
    pub max_tasks_per_job: usize,
    pub max_edges_per_job: usize,
    pub max_timeout_seconds: u64,
    pub max_task_cpu_millis: u32,
    pub max_task_memory_mib: u32,
    pub max_task_gpus: u32,
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tasks_per_job: 20_000,
            max_edges_per_job: 200_000,
            max_timeout_seconds: 7 * 24 * 3600,
            max_task_cpu_millis: 256_000,
            max_task_memory_mib: 4 * 1024 * 1024,
            max_task_gpus: 64,
            max_retries: 100,
        }
    }
}
