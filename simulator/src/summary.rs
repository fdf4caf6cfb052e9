//! The metrics of a run, as `summary.json` holds them. docs/metrics in the README defines each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use splai_scheduler::api::{JobPhase, Outcome, TaskPhase};
use splai_scheduler::{Scheduler, Strategy};

use crate::record::Recorder;
use crate::scenario::Scenario;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    pub utilization_mean: f64,
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

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
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
    let mut s = Summary {
        scenario: sc.name.clone(),
        seed,
        policy: strategy.name().into(),
        engine: engine.into(),
        jobs_total: rec.jobs.len() as u64,
        jobs_completed: 0,
        jobs_failed: 0,
        jobs_unfinished: 0,
        tasks_total: 0,
        tasks_succeeded: 0,
        tasks_failed: 0,
        tasks_lost: 0,
        duplicate_completions: 0,
        retries: core.stats().retries,
        timeouts: core.stats().timeouts,
        makespan_s: 0.0,
        lower_bound_s: 0.0,
        jct_mean_s: 0.0,
        jct_p50_s: 0.0,
        jct_p95_s: 0.0,
        jct_p99_s: 0.0,
        queue_wait_mean_s: 0.0,
        utilization_mean: 0.0,
        warm_cache_hit_rate: 0.0,
        cold_starts: 0,
        decisions: core.stats().decisions,
        invariant_violations: rec.violations.len() as u64,
        wall_s: round(wall_s),
        output_digest: String::new(),
    };
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    let mut jcts = Vec::new();
    let mut cpu_work = 0f64;
    let mut gpu_work = 0f64;
    let mut mem_work = 0f64;
    let mut critical = 0f64;
    let first_arrival = rec.jobs.values().map(|j| j.submitted_ms).min().unwrap_or(0) as f64;
    let mut last_end = first_arrival;
    let mut waits = Vec::new();
    let mut busy_cpu_ms = 0f64;
    // First assignment and successful finish of each task, from the attempt records.
    let mut first_assigned: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut succeeded_at: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut successes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in &rec.attempts {
        let k = (a.job.as_str(), a.task.as_str());
        first_assigned
            .entry(k)
            .and_modify(|t| *t = (*t).min(a.assigned_ms))
            .or_insert(a.assigned_ms);
        if a.outcome == Outcome::Succeeded {
            succeeded_at.insert(k, a.finished_ms);
            *successes.entry(k).or_default() += 1;
        }
    }
    s.duplicate_completions = successes.values().map(|&n| n.saturating_sub(1)).sum();
    for job in &snapshot.jobs {
        let Some(row) = rec.jobs.get(&job.key) else {
            continue;
        };
        let st = &job.status;
        match st.phase {
            JobPhase::Completed => s.jobs_completed += 1,
            JobPhase::Failed | JobPhase::Canceled => s.jobs_failed += 1,
            _ => s.jobs_unfinished += 1,
        }
        if let Some(end) = row.finished_ms {
            last_end = last_end.max(end as f64);
            if st.phase == JobPhase::Completed {
                jcts.push((end - row.submitted_ms) as f64 / 1000.0);
            }
        }
        s.tasks_total += st.tasks.len() as u64;
        let spec = &job.spec;
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
        let durations = crate::workload::durations_of(sc, &job.key, spec);
        let mut finish = vec![0f64; spec.tasks.len()];
        if let Ok(dag) = splai_scheduler::dag::validate(spec, &sc.settings.limits) {
            for &t in dag.topological_order() {
                let t = t as usize;
                let start = parents[t].iter().map(|&p| finish[p]).fold(0.0, f64::max);
                finish[t] = start + durations[t] as f64;
            }
        }
        critical = critical.max(
            row.submitted_ms as f64 - first_arrival + finish.iter().copied().fold(0.0, f64::max),
        );
        for (i, (t, ts)) in spec.tasks.iter().zip(&st.tasks).enumerate() {
            let d = durations[i] as f64;
            cpu_work += f64::from(t.resources.cpu_millis) * d;
            mem_work += f64::from(t.resources.memory_mib) * d;
            gpu_work += f64::from(t.resources.gpus) * d;
            match ts.phase {
                TaskPhase::Succeeded => s.tasks_succeeded += 1,
                TaskPhase::Failed | TaskPhase::TimedOut => s.tasks_failed += 1,
                _ => {}
            }
            if st.phase.is_terminal() && !ts.phase.is_terminal() {
                s.tasks_lost += 1;
            }
            let k = (job.key.as_str(), t.id.as_str());
            if let Some(&assigned) = first_assigned.get(&k) {
                let ready = parents[i]
                    .iter()
                    .filter_map(|&p| {
                        succeeded_at
                            .get(&(job.key.as_str(), spec.tasks[p].id.as_str()))
                            .copied()
                    })
                    .max()
                    .unwrap_or(row.submitted_ms)
                    .max(row.submitted_ms);
                waits.push(assigned.saturating_sub(ready) as f64 / 1000.0);
            }
            let line = format!(
                "{}/{} {:?} {} {}\n",
                job.key,
                ts.id,
                ts.phase,
                ts.attempt,
                ts.worker.as_deref().unwrap_or("-")
            );
            fnv(&mut digest, line.as_bytes());
            fnv(&mut digest, format!("{:?}\n", ts.finished_at).as_bytes());
        }
    }
    let jobs_by_key: BTreeMap<&str, &splai_scheduler::JobRecord> =
        snapshot.jobs.iter().map(|j| (j.key.as_str(), j)).collect();
    let spec_of = |job: &str, task: &str| {
        jobs_by_key
            .get(job)
            .and_then(|j| j.spec.tasks.iter().find(|t| t.id == task))
            .map(|t| t.resources.cpu_millis)
    };
    let mut cpu_cache: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let (mut warm, mut cold) = (0u64, 0u64);
    for a in &rec.attempts {
        if let Some(st) = a.started_ms {
            let cpu = *cpu_cache
                .entry((a.job.as_str(), a.task.as_str()))
                .or_insert_with(|| spec_of(&a.job, &a.task).unwrap_or(0));
            busy_cpu_ms += f64::from(cpu) * a.finished_ms.saturating_sub(st) as f64;
        }
        match a.cold_start {
            Some(true) => cold += 1,
            Some(false) => warm += 1,
            None => {}
        }
    }
    let (cap_cpu, cap_mem, cap_gpu) = sc.fleet.iter().fold((0f64, 0f64, 0f64), |acc, g| {
        let n = f64::from(g.count);
        (
            acc.0 + n * f64::from(g.capabilities.cpu_millis),
            acc.1 + n * f64::from(g.capabilities.memory_mib),
            acc.2 + n * f64::from(g.capabilities.gpus),
        )
    });
    let per = |work: f64, cap: f64| if cap > 0.0 { work / cap } else { 0.0 };
    let lb_ms = critical
        .max(per(cpu_work, cap_cpu))
        .max(per(mem_work, cap_mem))
        .max(per(gpu_work, cap_gpu));
    let makespan_ms = last_end - first_arrival;
    jcts.sort_by(f64::total_cmp);
    s.makespan_s = round(makespan_ms / 1000.0);
    s.lower_bound_s = round(lb_ms / 1000.0);
    if !jcts.is_empty() {
        s.jct_mean_s = round(jcts.iter().sum::<f64>() / jcts.len() as f64);
        s.jct_p50_s = round(pct(&jcts, 0.50));
        s.jct_p95_s = round(pct(&jcts, 0.95));
        s.jct_p99_s = round(pct(&jcts, 0.99));
    }
    if !waits.is_empty() {
        s.queue_wait_mean_s = round(waits.iter().sum::<f64>() / waits.len() as f64);
    }
    if makespan_ms > 0.0 && cap_cpu > 0.0 {
        s.utilization_mean = round(busy_cpu_ms / (cap_cpu * makespan_ms));
    }
    if warm + cold > 0 {
        s.warm_cache_hit_rate = round(warm as f64 / (warm + cold) as f64);
    }
    s.cold_starts = cold;
    s.output_digest = format!("{digest:016x}");
    s
}
