//! The metrics of a run, as `summary.json` holds them. docs/metrics in the README defines each.

use std::collections::BTreeMap;
use std::hash::Hasher as _;

use serde::{Deserialize, Serialize};
use splai_scheduler::api::{JobPhase, JobSpec, JobStatus, TaskPhase};
use splai_scheduler::hash::FnvHasher;
use splai_scheduler::{Scheduler, Strategy};

use crate::record::{JobRow, Recorder};
use crate::scenario::Scenario;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub policy: String,
    pub engine: String,
    pub jobs_total: u64,
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    pub jobs_unfinished: u64,
    pub tasks_total: u64,
    pub tasks_succeeded: u64,
    pub tasks_failed: u64,
    pub tasks_lost: u64,
    pub duplicate_completions: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub makespan_s: f64,
    pub lower_bound_s: f64,
    pub jct_mean_s: f64,
    pub jct_p50_s: f64,
    pub jct_p95_s: f64,
    pub jct_p99_s: f64,
    pub queue_wait_mean_s: f64,
    /// Mean over completed jobs of JCT divided by the job's critical path (its JCT had it
    /// run alone on workers of speed 1): 1 is no waiting at speed 1; faster workers can take
    /// it below 1.
    #[serde(default)]
    pub slowdown_mean: f64,
    /// Jain's index of the tenants' mean slowdowns, `(sum x)^2 / (n * sum x^2)`: 1 when every
    /// tenant's jobs are slowed alike, down to `1/n` when one tenant takes all the waiting.
    #[serde(default)]
    pub fairness_jain: f64,
    pub utilization_mean: f64,
    /// The fleet's GPUs busy over the makespan (0 on a fleet without GPUs).
    #[serde(default)]
    pub gpu_utilization_mean: f64,
    /// Jobs with `deadlineSeconds` that did not complete within it.
    #[serde(default)]
    pub deadline_misses: u64,
    /// The share of jobs with a deadline that completed within it; absent when no job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goodput: Option<f64>,
    pub warm_cache_hit_rate: f64,
    pub cold_starts: u64,
    pub decisions: u64,
    pub invariant_violations: u64,
    /// Wall-clock seconds the run took: the one field that differs between identical runs.
    pub wall_s: f64,
    pub output_digest: String,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Summary {
    /// A metric by its `summary.json` name (plus `makespan_over_lower_bound`), or `None` for a
    /// name that is not a metric: the quality gate fails on it rather than skip it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "jobs_completed" => self.jobs_completed as f64,
            "jobs_failed" => self.jobs_failed as f64,
            "jobs_unfinished" => self.jobs_unfinished as f64,
            "tasks_lost" => self.tasks_lost as f64,
            "duplicate_completions" => self.duplicate_completions as f64,
            "retries" => self.retries as f64,
            "makespan_s" => self.makespan_s,
            "makespan_over_lower_bound" if self.lower_bound_s > 0.0 => {
                self.makespan_s / self.lower_bound_s
            }
            "makespan_over_lower_bound" => 1.0,
            "jct_mean_s" => self.jct_mean_s,
            "jct_p50_s" => self.jct_p50_s,
            "jct_p95_s" => self.jct_p95_s,
            "jct_p99_s" => self.jct_p99_s,
            "queue_wait_mean_s" => self.queue_wait_mean_s,
            "slowdown_mean" => self.slowdown_mean,
            "fairness_jain" => self.fairness_jain,
            "utilization_mean" => self.utilization_mean,
            "gpu_utilization_mean" => self.gpu_utilization_mean,
            "deadline_misses" => self.deadline_misses as f64,
            "goodput" => self.goodput?,
            "warm_cache_hit_rate" => self.warm_cache_hit_rate,
            "cold_starts" => self.cold_starts as f64,
            _ => return None,
        })
    }
}

/// Jain's fairness index of `xs`: 1 for equal values (and for none).
fn jain(xs: impl Iterator<Item = f64>) -> f64 {
    let (n, sum, squares) = xs.fold((0f64, 0f64, 0f64), |(n, s, q), x| {
        (n + 1.0, s + x, q + x * x)
    });
    if squares > 0.0 {
        sum * sum / (n * squares)
    } else {
        1.0
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What each task of one job did, gathered from its attempt records while the job runs.
#[derive(Debug, Default)]
pub struct JobAttempts {
    /// Per task id: first assignment, last success, and how many successes.
    pub tasks: BTreeMap<String, (u64, Option<u64>, u64)>,
    /// The scenario's true run times by task id (`durationsMs`), where it gives them.
    pub durations_ms: BTreeMap<String, u64>,
}

impl JobAttempts {
    /// A task's run time at speed 1: the scenario's, else its hint, else the core's default.
    fn duration(&self, t: &splai_scheduler::api::TaskSpec, default_ms: u64) -> u64 {
        self.durations_ms
            .get(&t.id)
            .copied()
            .or(t.expected_duration_ms)
            .unwrap_or(default_ms)
    }
}

/// The summary's running totals. A job is added when it ends, so the engine can then drop it;
/// jobs still open when the run stops are added at the end.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    jobs_completed: u64,
    jobs_failed: u64,
    jobs_unfinished: u64,
    tasks_total: u64,
    tasks_succeeded: u64,
    tasks_failed: u64,
    tasks_lost: u64,
    duplicate_completions: u64,
    cpu_work: f64,
    mem_work: f64,
    gpu_work: f64,
    /// The latest arrival plus critical path of any job, on the fleet's fastest workers.
    critical_end_ms: f64,
    /// The fleet's largest speed factor: no task runs faster than its duration divided by it.
    pub fastest: f64,
    waits_s: f64,
    waits: u64,
    jcts: Vec<f64>,
    last_end_ms: u64,
    /// cpu-milliseconds of started attempts.
    pub busy_cpu_ms: f64,
    /// GPU-milliseconds of started attempts.
    pub busy_gpu_ms: f64,
    /// Per tenant: the sum of its completed jobs' slowdowns, and how many.
    slowdowns: BTreeMap<String, (f64, u64)>,
    deadline_jobs: u64,
    deadline_met: u64,
    digests: Vec<(String, u64)>,
}

impl Tally {
    /// Adds one job: its final status, its spec and what its attempts did.
    pub fn add_job(
        &mut self,
        settings: &splai_scheduler::Settings,
        key: &str,
        spec: &JobSpec,
        st: &JobStatus,
        row: &JobRow,
        seen: &JobAttempts,
    ) {
        match st.phase {
            JobPhase::Completed => self.jobs_completed += 1,
            JobPhase::Failed | JobPhase::Canceled => self.jobs_failed += 1,
            _ => self.jobs_unfinished += 1,
        }
        if let Some(end) = row.finished_ms {
            self.last_end_ms = self.last_end_ms.max(end);
            if st.phase == JobPhase::Completed {
                self.jcts.push((end - row.submitted_ms) as f64 / 1000.0);
            }
        }
        self.tasks_total += st.tasks.len() as u64;
        let index: BTreeMap<&str, usize> = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); spec.tasks.len()];
        for d in &spec.dependencies {
            if let Some(&c) = index.get(d.task.as_str()) {
                parents[c].extend(
                    d.depends_on
                        .iter()
                        .filter_map(|p| index.get(p.as_str()).copied()),
                );
            }
        }
        let durations: Vec<u64> = spec
            .tasks
            .iter()
            .map(|t| seen.duration(t, settings.default_duration_ms))
            .collect();
        let mut finish = vec![0f64; spec.tasks.len()];
        if let Ok(dag) = splai_scheduler::dag::validate(spec, &settings.limits) {
            for &t in dag.topological_order() {
                let t = t as usize;
                let start = parents[t].iter().map(|&p| finish[p]).fold(0.0, f64::max);
                finish[t] = start + durations[t] as f64;
            }
        }
        let critical = finish.iter().copied().fold(0.0, f64::max);
        let fastest = if self.fastest > 0.0 {
            self.fastest
        } else {
            1.0
        };
        self.critical_end_ms = self
            .critical_end_ms
            .max(row.submitted_ms as f64 + critical / fastest);
        let jct_ms = row
            .finished_ms
            .filter(|_| st.phase == JobPhase::Completed)
            .map(|end| end.saturating_sub(row.submitted_ms));
        if let Some(jct) = jct_ms.filter(|_| critical > 0.0) {
            let e = self.slowdowns.entry(spec.tenant.clone()).or_default();
            e.0 += jct as f64 / critical;
            e.1 += 1;
        }
        if let Some(deadline) = spec.deadline_seconds {
            self.deadline_jobs += 1;
            if jct_ms.is_some_and(|jct| jct <= deadline.saturating_mul(1000)) {
                self.deadline_met += 1;
            }
        }
        let mut digest = FnvHasher::default();
        for (i, (t, ts)) in spec.tasks.iter().zip(&st.tasks).enumerate() {
            let d = durations[i] as f64;
            self.cpu_work += f64::from(t.resources.cpu_millis) * d;
            self.mem_work += f64::from(t.resources.memory_mib) * d;
            self.gpu_work += f64::from(t.resources.gpus) * d;
            match ts.phase {
                TaskPhase::Succeeded => self.tasks_succeeded += 1,
                TaskPhase::Failed | TaskPhase::TimedOut => self.tasks_failed += 1,
                _ => {}
            }
            if st.phase.is_terminal() && !ts.phase.is_terminal() {
                self.tasks_lost += 1;
            }
            if let Some(&(assigned, _, successes)) = seen.tasks.get(&t.id) {
                self.duplicate_completions += successes.saturating_sub(1);
                let ready = parents[i]
                    .iter()
                    .filter_map(|&p| seen.tasks.get(&spec.tasks[p].id).and_then(|s| s.1))
                    .max()
                    .unwrap_or(row.submitted_ms)
                    .max(row.submitted_ms);
                self.waits_s += assigned.saturating_sub(ready) as f64 / 1000.0;
                self.waits += 1;
            }
            let line = format!(
                "{}/{} {:?} {} {} {:?}\n",
                key,
                ts.id,
                ts.phase,
                ts.attempt,
                ts.worker.as_deref().unwrap_or("-"),
                ts.finished_at
            );
            digest.write(line.as_bytes());
        }
        self.digests.push((key.to_owned(), digest.finish()));
    }
}

/// The control plane's counters a summary reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub retries: u64,
    pub timeouts: u64,
    pub decisions: u64,
}

pub fn summarize(
    sc: &Scenario,
    seed: u64,
    strategy: Strategy,
    engine: &str,
    rec: &Recorder,
    core: &Scheduler,
    wall_s: f64,
) -> Summary {
    let snapshot = core.snapshot();
    let jobs = snapshot
        .jobs
        .iter()
        .map(|j| (j.key.as_str(), &j.spec, &j.status));
    let stats = core.stats();
    let counters = Counters {
        retries: stats.retries,
        timeouts: stats.timeouts,
        decisions: stats.decisions,
    };
    summarize_jobs(
        sc,
        seed,
        strategy.name(),
        engine,
        rec,
        jobs,
        counters,
        wall_s,
    )
}

/// [`summarize`] from the jobs' specs and final statuses rather than a core: `jobs` are those
/// the recorder has not handed over yet (a real run hands over none).
#[allow(clippy::too_many_arguments)]
pub fn summarize_jobs<'a>(
    sc: &Scenario,
    seed: u64,
    policy: &str,
    engine: &str,
    rec: &Recorder,
    jobs: impl Iterator<Item = (&'a str, &'a JobSpec, &'a JobStatus)>,
    counters: Counters,
    wall_s: f64,
) -> Summary {
    // Jobs the engine has not handed over yet (still open, or engines that keep every job).
    let mut t = rec.tally.clone();
    let none = JobAttempts::default();
    for (key, spec, status) in jobs {
        if let Some(row) = rec.jobs.get(key) {
            let seen = rec.seen.get(key).map_or(&none, |s| &**s);
            t.add_job(&sc.settings, key, spec, status, row, seen);
        }
    }
    let (mut warm, mut cold) = (0u64, 0u64);
    for a in &rec.attempts {
        match a.cold_start {
            Some(true) => cold += 1,
            Some(false) => warm += 1,
            None => {}
        }
    }
    let first_arrival = rec.jobs.values().map(|j| j.submitted_ms).min().unwrap_or(0) as f64;
    let (cap_cpu, _, cap_gpu) = sc.fleet.iter().fold((0f64, 0f64, 0f64), |acc, g| {
        let n = f64::from(g.count);
        (
            acc.0 + n * f64::from(g.capabilities.cpu_millis),
            acc.1 + n * f64::from(g.capabilities.memory_mib),
            acc.2 + n * f64::from(g.capabilities.gpus),
        )
    });
    // Capacity in work per millisecond: a worker of speed s does s times the work at speed 1.
    let (fast_cpu, fast_mem, fast_gpu) = sc.fleet.iter().fold((0f64, 0f64, 0f64), |acc, g| {
        let n = f64::from(g.count) * g.capabilities.speed_factor;
        (
            acc.0 + n * f64::from(g.capabilities.cpu_millis),
            acc.1 + n * f64::from(g.capabilities.memory_mib),
            acc.2 + n * f64::from(g.capabilities.gpus),
        )
    });
    let per = |work: f64, cap: f64| if cap > 0.0 { work / cap } else { 0.0 };
    let lb_ms = (t.critical_end_ms - first_arrival)
        .max(0.0)
        .max(per(t.cpu_work, fast_cpu))
        .max(per(t.mem_work, fast_mem))
        .max(per(t.gpu_work, fast_gpu));
    let makespan_ms = (t.last_end_ms as f64 - first_arrival).max(0.0);
    t.jcts.sort_by(f64::total_cmp);
    t.digests.sort();
    let mut h = FnvHasher::default();
    for (key, d) in &t.digests {
        h.write(key.as_bytes());
        h.write(&d.to_le_bytes());
    }
    let jcts = &t.jcts;
    let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { round(sum / n as f64) };
    Summary {
        scenario: sc.name.clone(),
        seed,
        policy: policy.into(),
        engine: engine.into(),
        jobs_total: rec.jobs.len() as u64,
        jobs_completed: t.jobs_completed,
        jobs_failed: t.jobs_failed,
        jobs_unfinished: t.jobs_unfinished,
        tasks_total: t.tasks_total,
        tasks_succeeded: t.tasks_succeeded,
        tasks_failed: t.tasks_failed,
        tasks_lost: t.tasks_lost,
        duplicate_completions: t.duplicate_completions,
        retries: counters.retries,
        timeouts: counters.timeouts,
        makespan_s: round(makespan_ms / 1000.0),
        lower_bound_s: round(lb_ms / 1000.0),
        jct_mean_s: mean(jcts.iter().sum(), jcts.len()),
        jct_p50_s: round(pct(jcts, 0.50)),
        jct_p95_s: round(pct(jcts, 0.95)),
        jct_p99_s: round(pct(jcts, 0.99)),
        queue_wait_mean_s: mean(t.waits_s, t.waits as usize),
        slowdown_mean: mean(
            t.slowdowns.values().map(|v| v.0).sum(),
            t.slowdowns.values().map(|v| v.1 as usize).sum(),
        ),
        fairness_jain: round(jain(t.slowdowns.values().map(|&(sum, n)| sum / n as f64))),
        utilization_mean: if makespan_ms > 0.0 && cap_cpu > 0.0 {
            round(t.busy_cpu_ms / (cap_cpu * makespan_ms))
        } else {
            0.0
        },
        gpu_utilization_mean: if makespan_ms > 0.0 && cap_gpu > 0.0 {
            round(t.busy_gpu_ms / (cap_gpu * makespan_ms))
        } else {
            0.0
        },
        deadline_misses: t.deadline_jobs - t.deadline_met,
        goodput: (t.deadline_jobs > 0)
            .then(|| round(t.deadline_met as f64 / t.deadline_jobs as f64)),
        warm_cache_hit_rate: if warm + cold > 0 {
            round(warm as f64 / (warm + cold) as f64)
        } else {
            0.0
        },
        cold_starts: cold,
        decisions: counters.decisions,
        invariant_violations: rec.violations.len() as u64,
        wall_s: round(wall_s),
        output_digest: format!("{:016x}", h.finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::jain;

    #[test]
    fn jains_index_is_one_for_equal_tenants_and_one_over_n_when_one_takes_everything() {
        assert_eq!(jain([2.0, 2.0, 2.0].into_iter()), 1.0);
        assert!((jain([1.0, 0.0, 0.0, 0.0].into_iter()) - 0.25).abs() < 1e-12);
        assert!((jain([1.0, 3.0].into_iter()) - 0.8).abs() < 1e-12);
        assert_eq!(jain(std::iter::empty()), 1.0);
    }
}
