//! What a run leaves behind: one row per finished attempt, per job and per timeline sample.
//! Times are milliseconds since the start of the run.

use std::collections::BTreeMap;

use serde::Serialize;
use splai_scheduler::api::{ExecutionRecord, JobPhase, JobSpec, Outcome};

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

impl Recorder {
    /// An empty recorder for a run of `sc`: the summary's lower bound needs the fleet's fastest
    /// speed factor.
    pub fn for_scenario(sc: &crate::scenario::Scenario) -> Recorder {
        let mut rec = Recorder::default();
        rec.tally.fastest = sc
            .fleet
            .iter()
            .map(|g| g.capabilities.speed_factor)
            .fold(0.0, f64::max);
        rec
    }

    /// A job arrives at `now` (ms since the start of the run); `durations_ms` are the
    /// scenario's true run times of its tasks, where it gives them.
    pub fn job_arrived(
        &mut self,
        key: &str,
        spec: &JobSpec,
        durations_ms: &BTreeMap<String, u64>,
        now: u64,
    ) {
        let seen = crate::summary::JobAttempts {
            durations_ms: durations_ms.clone(),
            ..Default::default()
        };
        self.seen.insert(key.to_owned(), Box::new(seen));
        self.jobs.insert(
            key.to_owned(),
            JobRow {
                job: key.to_owned(),
                tenant: spec.tenant.clone(),
                priority: spec.priority,
                tasks: spec.tasks.len(),
                submitted_ms: now,
                finished_ms: None,
                phase: JobPhase::Queued,
            },
        );
    }

    /// An attempt ended, as its execution record says; `epoch_ms` is the run's start on the
    /// records' clock, and the task asked for `cpu_millis` and `gpus`.
    pub fn attempt_ended(
        &mut self,
        r: &ExecutionRecord,
        epoch_ms: u64,
        cpu_millis: u32,
        gpus: u32,
    ) {
        let since = |t: splai_scheduler::Timestamp| t.millis().saturating_sub(epoch_ms);
        let cold = self
            .cold
            .remove(&(r.job.clone(), r.task.clone(), r.attempt));
        let (assigned, finished) = (since(r.assigned_at), since(r.finished_at));
        if let Some(seen) = self.seen.get_mut(&r.job) {
            let e = seen
                .tasks
                .entry(r.task.clone())
                .or_insert((assigned, None, 0));
            e.0 = e.0.min(assigned);
            if r.outcome == Outcome::Succeeded {
                e.1 = Some(finished);
                e.2 += 1;
            }
        }
        let started = r.started_at.map(since);
        if let Some(started) = started {
            let ran = finished.saturating_sub(started) as f64;
            self.tally.busy_cpu_ms += f64::from(cpu_millis) * ran;
            self.tally.busy_gpu_ms += f64::from(gpus) * ran;
        }
        self.attempts.push(AttemptRow {
            job: r.job.clone(),
            task: r.task.clone(),
            attempt: r.attempt,
            worker: r.worker.clone(),
            assigned_ms: assigned,
            started_ms: started,
            finished_ms: finished,
            outcome: r.outcome,
            cold_start: cold,
            error: r.error.clone(),
        });
    }
}
