use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// `SPLAIWorker.spec`: what a worker can run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerSpec {
    pub capabilities: Capabilities,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    #[schemars(range(min = 1))]
    pub cpu_millis: u32,
    #[schemars(range(min = 1))]
    pub memory_mib: u32,
    #[serde(default)]
    pub gpus: u32,
    /// The GPU model, such as `A10` or `V100M32`; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// Models the worker can serve. `*` means any model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The worker's zone or rack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Data classifications the worker is cleared to handle. Empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<String>,
    /// Relative speed (1.0 is nominal); the scheduler refines it from observed task durations.
    #[serde(default = "Capabilities::default_speed")]
    pub speed_factor: f64,
}

impl Capabilities {
    fn default_speed() -> f64 {
        1.0
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            cpu_millis: 4000,
            memory_mib: 8192,
            gpus: 0,
            gpu_model: None,
            models: Vec::new(),
            tools: Vec::new(),
            locality: None,
            classifications: Vec::new(),
            speed_factor: 1.0,
        }
    }
}

/// `SPLAIWorker.status`, folded from the agent's heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Timestamp>,
    /// Changes each time the agent process restarts.
    #[serde(default)]
    pub incarnation: u64,
    #[serde(default)]
    pub utilization: Utilization,
    #[serde(default)]
    pub queue_depth: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running_tasks: Vec<AttemptRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_models: Vec<String>,
    /// The speed the scheduler has observed, relative to the tasks' duration hints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_speed: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Health {
    /// Registered but no heartbeat seen yet.
    #[default]
    Unknown,
    Healthy,
    /// Silent past `staleAfterMs`: gets no new work, keeps its tasks.
    Stale,
    /// Silent past `lostAfterMs`: its tasks are requeued.
    Lost,
}

/// Fractions from 0 to 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Utilization {
    pub cpu: f64,
    pub memory: f64,
    pub gpu: f64,
}

impl Utilization {
    /// Each fraction held within [0, 1] (NaN read as 0): what an agent reports is measured, and
    /// a measurement past its bounds must not reach scores or the stored status.
    pub fn clamped(self) -> Utilization {
        let f = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        Utilization {
            cpu: f(self.cpu),
            memory: f(self.memory),
            gpu: f(self.gpu),
        }
    }
}

/// One attempt of one task.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRef {
    pub job: String,
    pub task: String,
    pub attempt: u32,
}
