//! Scenario files: the fleet, the workload, policies and routes, a timeline of faults, and the
//! quality thresholds to check. A scenario is data; it holds no code paths of its own.
//!
//! The resource types are the core's own (`JobSpec`, `Capabilities`, `PolicySpec`,
//! `ModelRouteSpec`, `Settings`), so a scenario says exactly what a cluster would be told.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use splai_scheduler::Settings;
use splai_scheduler::api::{Capabilities, JobSpec, ModelRouteSpec, PolicySpec, TaskKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The seed used when `--seed` is not given.
    #[serde(default = "Scenario::default_seed")]
    pub seed: u64,
    /// Simulated time after which the run stops, whether or not every job has ended.
    pub horizon_seconds: u64,
    /// How often each agent sends a heartbeat.
    #[serde(default = "Scenario::default_heartbeat")]
    pub heartbeat_interval_ms: u64,
    /// One-way delay of every message between an agent and the control plane.
    #[serde(default = "Scenario::default_latency")]
    pub network_latency_ms: u64,
    /// How long a job takes from its submission to the control plane: the API server's write and
    /// the watch event that brings it to the operator. A job's queue wait and JCT count from its
    /// submission. `splai-sim calibrate` measures it on a real run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub submit_latency_ms: u64,
    /// The core's settings: weights, health thresholds, aging.
    #[serde(default)]
    pub settings: Settings,
    pub fleet: Vec<WorkerGroup>,
    pub workload: Workload,
    /// What a model load costs on a worker that does not have it warm.
    #[serde(default)]
    pub cold_start: ColdStart,
    /// Random variation of task run times: each run takes `duration × (1 + noise × u)`, u in [-1, 1].
    #[serde(default)]
    pub duration_noise: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, PolicySpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, ModelRouteSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub checks: Checks,
}

impl Scenario {
    fn default_seed() -> u64 {
        1
    }
    fn default_heartbeat() -> u64 {
        5_000
    }
    fn default_latency() -> u64 {
        5
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `count` identical workers named `<group>-<i>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerGroup {
    pub group: String,
    #[serde(default = "WorkerGroup::default_count")]
    pub count: u32,
    pub capabilities: Capabilities,
    /// Models loaded when the run starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_models: Vec<String>,
    /// How many models a worker keeps loaded; the least recently used is evicted.
    #[serde(default = "WorkerGroup::default_cache")]
    pub max_warm_models: u32,
}

impl WorkerGroup {
    fn default_count() -> u32 {
        1
    }
    fn default_cache() -> u32 {
        4
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobArrival>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<Generator>,
}

/// One job and when it arrives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobArrival {
    pub name: String,
    #[serde(default)]
    pub at_ms: u64,
    pub spec: JobSpec,
    /// How long each task really runs on a worker of speed 1 (by task id). Tasks not listed run
    /// for their `expectedDurationMs`, or the core's default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub durations_ms: BTreeMap<String, u64>,
}

/// `count` copies of a job template, arriving every `intervalMs` from `startMs`, tenants and
/// priorities taken in turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Generator {
    pub name: String,
    pub count: u32,
    #[serde(default)]
    pub start_ms: u64,
    pub interval_ms: u64,
    /// Arrivals are spread uniformly within ±jitter of their slot.
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priorities: Vec<i32>,
    /// Models to draw for inference tasks, with weights; replaces the template's model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<WeightedModel>,
    pub template: JobSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedModel {
    pub model: String,
    #[serde(default = "WeightedModel::one")]
    pub weight: u32,
}

impl WeightedModel {
    fn one() -> u32 {
        1
    }
}

/// Model load time: fixed, or drawn from measured samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ColdStart {
    #[serde(default = "ColdStart::default_ms")]
    pub fixed_ms: u64,
    /// When present, each load takes one of these, chosen by the seeded generator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples_ms: Vec<u64>,
}

impl ColdStart {
    fn default_ms() -> u64 {
        30_000
    }
}

impl Default for ColdStart {
    fn default() -> Self {
        ColdStart {
            fixed_ms: Self::default_ms(),
            samples_ms: Vec::new(),
        }
    }
}

/// A worker, or a whole group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Something that goes wrong, from `atMs` for `durationMs`. (Unknown fields are caught by
/// `FaultKind`, which receives every field but these two.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub at_ms: u64,
    /// How long it lasts; absent means until the end of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(flatten)]
    pub kind: FaultKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind",
    deny_unknown_fields
)]
pub enum FaultKind {
    /// The agents keep working but their heartbeats do not arrive.
    HeartbeatLoss { target: Target },
    /// The agents die, losing their running tasks, and restart when the fault ends.
    Crash { target: Target },
    /// The agents' processes are stopped (SIGSTOP) until the fault ends: they send nothing and
    /// read nothing, while their tasks' work goes on; when thawed they read what arrived, report
    /// what finished and heartbeat again. A worker frozen past `lostAfterMs` loses its attempts
    /// to other workers, and its late reports are refused by attempt number.
    Freeze { target: Target },
    /// Every message between the group and the control plane is lost, both ways.
    Partition { target: Target },
    /// Every message is delayed by `extraLatencyMs` more, and lost with `lossRate`.
    Network {
        #[serde(default)]
        extra_latency_ms: u64,
        #[serde(default)]
        loss_rate: f64,
    },
    /// Tasks run `factor` times slower on the target.
    Slow { target: Target, factor: f64 },
    /// Attempts of tasks of this kind fail with this probability (all kinds when absent).
    TaskFailures {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_kind: Option<TaskKind>,
        probability: f64,
    },
}

/// What must hold after the run. Any check that fails makes `run` exit non-zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checks {
    /// Check the core's invariants after every step (slower; on in sweeps regardless).
    #[serde(default)]
    pub invariants_every_step: bool,
    /// Every job must end before the horizon.
    #[serde(default = "Checks::yes")]
    pub all_jobs_end: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jct_p95_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_makespan_over_lower_bound: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_warm_cache_hit_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_jobs_completed_fraction: Option<f64>,
}

impl Checks {
    fn yes() -> bool {
        true
    }
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            invariants_every_step: false,
            all_jobs_end: true,
            max_jct_p95_s: None,
            max_makespan_over_lower_bound: None,
            min_warm_cache_hit_rate: None,
            min_jobs_completed_fraction: None,
        }
    }
}

/// A scenario file that could not be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The OS error is part of the message and not also a `source`, so an error chain printed
    /// in full (anyhow's `{:#}`) shows it once.
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read {
            file: file.clone(),
            error,
        })?;
        Scenario::parse(&file, &text)
    }

    /// Parses and checks a scenario; errors name the file, line, column and field.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            // The YAML error repeats the path and the position; keep only what went wrong.
            let mut message = inner.to_string();
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            if let Some(rest) = message.strip_prefix(&format!("{field}: ")) {
                message = rest.to_owned();
            }
            ScenarioError::Parse {
                file: file.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        scenario.check(file)?;
        Ok(scenario)
    }

    fn check(&self, file: &str) -> Result<(), ScenarioError> {
        let invalid = |field: String, message: String| {
            Err(ScenarioError::Invalid {
                file: file.to_owned(),
                field,
                message,
            })
        };
        if self.fleet.is_empty() {
            return invalid(
                "fleet".into(),
                "the fleet is empty: add at least one worker group".into(),
            );
        }
        let mut groups = std::collections::BTreeSet::new();
        for (i, g) in self.fleet.iter().enumerate() {
            if !groups.insert(g.group.as_str()) {
                return invalid(
                    format!("fleet[{i}].group"),
                    format!("group `{}` is defined twice", g.group),
                );
            }
            if g.capabilities.cpu_millis == 0 || g.capabilities.memory_mib == 0 {
                return invalid(
                    format!("fleet[{i}].capabilities"),
                    "cpuMillis and memoryMib must be above 0".into(),
                );
            }
        }
        if self.workload.jobs.is_empty() && self.workload.generators.is_empty() {
            return invalid(
                "workload".into(),
                "the workload is empty: add jobs or generators".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, j) in self.workload.jobs.iter().enumerate() {
            if !names.insert(j.name.as_str()) {
                return invalid(
                    format!("workload.jobs[{i}].name"),
                    format!("job `{}` is defined twice", j.name),
                );
            }
        }
        for (i, g) in self.workload.generators.iter().enumerate() {
            if g.interval_ms == 0 && g.count > 1 {
                return invalid(
                    format!("workload.generators[{i}].intervalMs"),
                    "must be above 0".into(),
                );
            }
        }
        if !(0.0..1.0).contains(&self.duration_noise) {
            return invalid(
                "durationNoise".into(),
                format!("{} is outside [0, 1)", self.duration_noise),
            );
        }
        for (i, f) in self.faults.iter().enumerate() {
            let field = format!("faults[{i}]");
            match &f.kind {
                FaultKind::HeartbeatLoss { target }
                | FaultKind::Crash { target }
                | FaultKind::Partition { target }
                | FaultKind::Slow { target, .. } => {
                    if let Err(m) = self.check_target(target) {
                        return invalid(format!("{field}.target"), m);
                    }
                }
                FaultKind::Network { loss_rate, .. } if !(0.0..=1.0).contains(loss_rate) => {
                    return invalid(
                        format!("{field}.lossRate"),
                        format!("{loss_rate} is outside [0, 1]"),
                    );
                }
                FaultKind::TaskFailures { probability, .. }
                    if !(0.0..=1.0).contains(probability) =>
                {
                    return invalid(
                        format!("{field}.probability"),
                        format!("{probability} is outside [0, 1]"),
                    );
                }
                _ => {}
            }
            if let FaultKind::Slow { factor, .. } = f.kind
                && (factor.is_nan() || factor <= 0.0)
            {
                return invalid(
                    format!("{field}.factor"),
                    format!("{factor} must be above 0"),
                );
            }
        }
        Ok(())
    }

    fn check_target(&self, t: &Target) -> Result<(), String> {
        match (&t.worker, &t.group) {
            (Some(w), None) => {
                let known = self.fleet.iter().any(|g| {
                    w.strip_prefix(&format!("{}-", g.group))
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| n < g.count)
                });
                if known {
                    Ok(())
                } else {
                    Err(format!(
                        "no worker `{w}` in the fleet (workers are named <group>-<index>)"
                    ))
                }
            }
            (None, Some(g)) => {
                if self.fleet.iter().any(|x| &x.group == g) {
                    Ok(())
                } else {
                    Err(format!("no group `{g}` in the fleet"))
                }
            }
            _ => Err("name exactly one of `worker` or `group`".into()),
        }
    }

    /// The fault starts and ends, `(at_ms, fault index, on)`, in time order; faults due
    /// together keep the order of the file, starts before ends of the same fault.
    pub fn fault_timeline(&self) -> Vec<(u64, usize, bool)> {
        let mut out = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            out.push((f.at_ms, i, true));
            if let Some(d) = f.duration_ms {
                out.push((f.at_ms + d, i, false));
            }
        }
        // Stable: faults due together keep their queueing order.
        out.sort_by_key(|f| f.0);
        out
    }

    /// Worker names of a target.
    pub fn workers_of(&self, t: &Target) -> Vec<String> {
        match (&t.worker, &t.group) {
            (Some(w), _) => vec![w.clone()],
            (_, Some(g)) => self
                .fleet
                .iter()
                .filter(|x| &x.group == g)
                .flat_map(|x| (0..x.count).map(move |i| format!("{}-{i}", x.group)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The JSON Schema of scenario files, as committed in `scenarios/scenario.schema.json`.
pub fn schema_json() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Scenario)).expect("a schema serializes")
}
