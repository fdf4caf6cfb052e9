//! SPLAI's simulator: replays fleets, workloads and faults from scenario files through the
//! scheduling core, deterministically: the same scenario and seed give byte-identical output.
//!
//! It is a thin driver. Every decision is the core's (`splai-scheduler`); this crate only
//! simulates the world around it (agents, network, task execution, faults) and measures. Its
//! agents are the real protocol code (`splai-protocol`) under the turmoil engine; it must never
//! depend on a cluster (kube) or the operator.

#![forbid(unsafe_code)]

pub mod calibrate;
pub mod compare;
pub mod control;
pub mod des;
pub mod executor;
pub mod import;
pub mod output;
pub mod plot;
mod progress;
pub mod record;
pub mod regress;
pub mod scale;
pub mod scenario;
pub mod summary;
pub mod turmoil;
pub mod worker;
pub mod workload;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use splai_scheduler::{Scheduler, Strategy};

use crate::des::{Des, RunOptions};
use crate::record::Recorder;
use crate::scenario::Scenario;
use crate::summary::Summary;

/// Which engine drives the run. On fault-free scenarios both make the same decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Discrete events on a virtual clock: the default, and the one for trace scenarios,
    /// sweeps and the quality gate.
    Des,
    /// The real agent protocol over turmoil's simulated network, one host per worker group;
    /// every host steps every simulated millisecond, so keep it to small scenarios.
    Turmoil,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Des => "des",
            Engine::Turmoil => "turmoil",
        }
    }
}

/// One run of one scenario.
pub struct Run<'a> {
    pub scenario: &'a Scenario,
    pub seed: u64,
    pub strategy: Strategy,
    pub engine: Engine,
    pub check_invariants: bool,
    pub explain: Option<(String, String)>,
}

pub struct RunResult {
    pub summary: Summary,
    pub recorder: Recorder,
    pub core: Scheduler,
    fleet_cpu: u64,
    checks: scenario::Checks,
}

impl Run<'_> {
    pub fn execute(self) -> Result<RunResult> {
        self.execute_with(false)
    }

    /// Runs, and on long runs reports progress on standard error (the outputs are unchanged).
    pub fn execute_with_progress(self) -> Result<RunResult> {
        self.execute_with(true)
    }

    fn execute_with(self, progress: bool) -> Result<RunResult> {
        let started = Instant::now();
        let opts = RunOptions {
            seed: self.seed,
            strategy: self.strategy,
            check_invariants: self.check_invariants || self.scenario.checks.invariants_every_step,
            explain: self.explain,
            progress,
        };
        let (recorder, core, _end) = match self.engine {
            Engine::Des => Des::new(self.scenario, opts).run(),
            Engine::Turmoil => turmoil::TurmoilEngine::new(self.scenario, opts).run()?,
        };
        let wall = started.elapsed().as_secs_f64();
        let summary = summary::summarize(
            self.scenario,
            self.seed,
            self.strategy,
            self.engine.name(),
            &recorder,
            &core,
            wall,
        );
        let fleet_cpu = self
            .scenario
            .fleet
            .iter()
            .map(|g| u64::from(g.count) * u64::from(g.capabilities.cpu_millis))
            .sum();
        Ok(RunResult {
            summary,
            recorder,
            core,
            fleet_cpu,
            checks: self.scenario.checks.clone(),
        })
    }
}

impl RunResult {
    pub fn write(&self, dir: &Path) -> Result<()> {
        output::write_all(dir, &self.summary, &self.recorder, self.fleet_cpu)
    }

    /// The scenario's checks and the invariants that do not hold.
    pub fn check_failures(&self) -> Vec<String> {
        let s = &self.summary;
        let c = &self.checks;
        let mut out: Vec<String> = self
            .recorder
            .violations
            .iter()
            .take(5)
            .map(|v| format!("invariant: {v}"))
            .collect();
        if s.tasks_lost > 0 {
            out.push(format!("{} tasks were lost", s.tasks_lost));
        }
        if s.duplicate_completions > 0 {
            out.push(format!(
                "{} results were committed twice",
                s.duplicate_completions
            ));
        }
        if c.all_jobs_end && s.jobs_unfinished > 0 {
            out.push(format!(
                "{} of {} jobs did not end before the horizon",
                s.jobs_unfinished, s.jobs_total
            ));
        }
        if let Some(max) = c.max_jct_p95_s
            && s.jct_p95_s > max
        {
            out.push(format!("jct_p95_s {} is above {max}", s.jct_p95_s));
        }
        if let Some(max) = c.max_makespan_over_lower_bound {
            let ratio = if s.lower_bound_s > 0.0 {
                s.makespan_s / s.lower_bound_s
            } else {
                0.0
            };
            if ratio > max {
                out.push(format!("makespan / lower bound {ratio:.3} is above {max}"));
            }
        }
        if let Some(min) = c.min_warm_cache_hit_rate
            && s.warm_cache_hit_rate < min
        {
            out.push(format!(
                "warm_cache_hit_rate {} is below {min}",
                s.warm_cache_hit_rate
            ));
        }
        if let Some(min) = c.min_jobs_completed_fraction {
            let f = if s.jobs_total > 0 {
                s.jobs_completed as f64 / s.jobs_total as f64
            } else {
                1.0
            };
            if f < min {
                out.push(format!("{:.3} of jobs completed, below {min}", f));
            }
        }
        out
    }

    /// The summary as an aligned table for a terminal.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let mut rows: Vec<(&str, String)> = vec![
            (
                "scenario",
                format!(
                    "{} (seed {}, policy {}, engine {})",
                    s.scenario, s.seed, s.policy, s.engine
                ),
            ),
            (
                "jobs",
                format!(
                    "{} total, {} completed, {} failed, {} unfinished",
                    s.jobs_total, s.jobs_completed, s.jobs_failed, s.jobs_unfinished
                ),
            ),
            (
                "tasks",
                format!(
                    "{} total, {} succeeded, {} failed, {} lost",
                    s.tasks_total, s.tasks_succeeded, s.tasks_failed, s.tasks_lost
                ),
            ),
            (
                "retries / timeouts",
                format!("{} / {}", s.retries, s.timeouts),
            ),
            (
                "makespan",
                format!(
                    "{:.1} s (lower bound {:.1} s)",
                    s.makespan_s, s.lower_bound_s
                ),
            ),
            (
                "job completion time",
                format!(
                    "mean {:.1} s, p50 {:.1} s, p95 {:.1} s, p99 {:.1} s",
                    s.jct_mean_s, s.jct_p50_s, s.jct_p95_s, s.jct_p99_s
                ),
            ),
            ("queue wait (mean)", format!("{:.2} s", s.queue_wait_mean_s)),
            (
                "slowdown (mean)",
                format!(
                    "{:.2}x the critical path; fairness between tenants {:.3} (Jain)",
                    s.slowdown_mean, s.fairness_jain
                ),
            ),
            (
                "utilization (mean)",
                format!(
                    "cpu {:.1}%, gpu {:.1}%",
                    s.utilization_mean * 100.0,
                    s.gpu_utilization_mean * 100.0
                ),
            ),
            (
                "warm-cache hit rate",
                format!(
                    "{:.1}% ({} cold starts)",
                    s.warm_cache_hit_rate * 100.0,
                    s.cold_starts
                ),
            ),
            (
                "decisions",
                format!("{} in {:.2} s wall", s.decisions, s.wall_s),
            ),
            ("duplicate completions", s.duplicate_completions.to_string()),
            ("output digest", s.output_digest.clone()),
        ];
        if let Some(goodput) = s.goodput {
            rows.insert(
                rows.len() - 3,
                (
                    "deadlines",
                    format!(
                        "{:.1}% of jobs with a deadline met it ({} missed)",
                        goodput * 100.0,
                        s.deadline_misses
                    ),
                ),
            );
        }
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        rows.into_iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

/// An inclusive range of seeds, written `A-B` or `A`.
#[derive(Clone, Debug)]
pub struct SeedRange(pub u64, pub u64);

impl SeedRange {
    pub fn range(&self) -> std::ops::RangeInclusive<u64> {
        self.0..=self.1
    }
}

impl std::str::FromStr for SeedRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a seed range such as 1-100");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (a, b) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b {
            return Err(bad());
        }
        Ok(SeedRange(a, b))
    }
}
