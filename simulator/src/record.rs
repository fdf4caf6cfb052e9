//! What a run leaves behind: one row per finished attempt, per job and per timeline sample.
//! Times are milliseconds since the start of the run.

use std::collections::BTreeMap;

use serde::Serialize;
use splai_scheduler::api::{JobPhase, Outcome};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttemptRow {
    pub job: String,
    pub task: String,
    pub attempt: u32,
    pub worker: String,
    pub assigned_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: u64,
    pub outcome: Outcome,
    /// For inference tasks: whether the worker had to load the model.
    pub cold_start: Option<bool>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRow {
    pub job: String,
    pub tenant: String,
    pub priority: i32,
    pub tasks: usize,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    pub phase: JobPhase,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineRow {
    pub t_ms: u64,
    pub running_tasks: u64,
    pub busy_cpu_millis: u64,
    pub busy_gpus: u64,
    pub queued_tasks: u64,
    pub healthy_workers: u64,
}

#[derive(Debug, Default)]
pub struct Recorder {
    pub attempts: Vec<AttemptRow>,
    pub jobs: BTreeMap<String, JobRow>,
    pub timeline: Vec<TimelineRow>,
    /// Whether each inference attempt started cold, as the simulated worker saw it.
    pub cold: BTreeMap<(String, String, u32), bool>,
    /// Lines explaining every decision about one task, when asked for.
    pub explain: Option<(String, String, Vec<String>)>,
    /// Invariant violations seen when checking after every step.
    pub violations: Vec<String>,
    /// What the attempts of each open job did, for the summary.
    pub seen: BTreeMap<String, Box<crate::summary::JobAttempts>>,
    /// Summary totals of the jobs already ended and handed over.
    pub tally: crate::summary::Tally,
}
