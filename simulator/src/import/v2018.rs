//! cluster-trace-v2018 batch DAG jobs (`batch_task.csv`, no header):
//! `task_name,instance_num,job_name,task_type,status,start_time,end_time,plan_cpu,plan_mem`.
//!
//! The DAG is rebuilt from the task names: only the numbers count (`M1` has no parents, `R2_1`
//! depends on task 1, `J5_3_4` on tasks 3 and 4); names not of that form are independent tasks.
//! A task's `instance_num` parallel instances become one task holding `min(instances,
//! maxInstances)` times the per-instance cpu and memory, for the task's measured duration.
//! A job is kept only if all its rows are clean and `Terminated`. Arrival times keep their
//! order and spacing, scaled so the fleet sees the requested cpu load.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use splai_scheduler::api::{Capabilities, Dependency, JobSpec, Resources, TaskKind, TaskSpec};

use super::{Report, records};
use crate::scenario::{Checks, ColdStart, JobArrival, Scenario, WorkerGroup, Workload};

pub struct Options {
    pub jobs: Option<usize>,
    pub workers: u32,
    /// Offered cpu load: arrivals are compressed (or stretched) to reach it on `workers`.
    pub load: f64,
    pub max_instances: u32,
    /// Jobs with a task longer than this are dropped (and counted): a handful of hours-long tasks
    /// would otherwise dominate every makespan after arrivals are compressed.
    pub max_task_seconds: u64,
}

/// Machines of the trace: 96 cores and (normalised) memory 100, taken as 96 GiB.
const MACHINE_CPU: u32 = 96_000;
const MACHINE_MEM: u32 = 98_304;

struct Row {
    name: String,
    instances: u32,
    start: u64,
    end: u64,
    cpu: f64,
    mem: f64,
}

/// The task number and parent numbers encoded in a name, or `None` for an independent task.
fn parse_name(name: &str) -> Option<(u32, Vec<u32>)> {
    let rest = name.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    if rest.len() == name.len() || rest.is_empty() {
        return None;
    }
    let mut nums = rest.split('_').map(|p| p.parse::<u32>());
    let id = nums.next()?.ok()?;
    let parents: Option<Vec<u32>> = nums.map(Result::ok).collect();
    Some((id, parents?))
}

pub fn import(path: &Path, opts: &Options, command: &str) -> Result<(Scenario, Report)> {
    let mut report = Report::default();
    let mut jobs: BTreeMap<String, (bool, Vec<Row>)> = BTreeMap::new();
    for rec in records(path, false)?.records() {
        report.rows_read += 1;
        let Ok(rec) = rec else {
            report.skip("unreadable CSV row");
            continue;
        };
        let field = |i: usize| rec.get(i).unwrap_or("").trim();
        let job = field(2);
        if job.is_empty() {
            report.skip("row without a job name");
            continue;
        }
        let entry = jobs.entry(job.to_owned()).or_insert((true, Vec::new()));
        let parsed = (|| {
            if field(4) != "Terminated" {
                return Err("job has a task that did not terminate (Waiting, Running or Failed)");
            }
            let start: u64 = field(5).parse().map_err(|_| "bad start_time")?;
            let end: u64 = field(6).parse().map_err(|_| "bad end_time")?;
            if end < start {
                return Err("end_time before start_time");
            }
            let cpu: f64 = field(7).parse().map_err(|_| "bad plan_cpu")?;
            let mem: f64 = field(8).parse().map_err(|_| "bad plan_mem")?;
            let instances: u32 = field(1).parse().map_err(|_| "bad instance_num")?;
            if !(cpu > 0.0 && mem > 0.0 && instances > 0) {
                return Err("zero or negative cpu, memory or instances");
            }
            Ok(Row {
                name: field(0).to_owned(),
                instances,
                start,
                end,
                cpu,
                mem,
            })
        })();
        match parsed {
            Ok(row) => entry.1.push(row),
            Err(why) => {
                report.skip(why);
                entry.0 = false;
            }
        }
    }
    let mut kept: Vec<(u64, String, Vec<Row>)> = Vec::new();
    for (name, (clean, rows)) in jobs {
        if !clean || rows.is_empty() {
            report.skip("job dropped because one of its rows was unusable");
            continue;
        }
        if rows.iter().any(|r| r.end - r.start > opts.max_task_seconds) {
            report.skip("job with a task longer than --max-task-seconds");
            continue;
        }
        let arrival = rows.iter().map(|r| r.start).min().unwrap_or(0);
        kept.push((arrival, name, rows));
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    if let Some(k) = opts.jobs {
        kept.truncate(k);
    }
    let first = kept.first().map_or(0, |j| j.0);
    let mut arrivals = Vec::new();
    let mut cpu_work = 0f64;
    let mut last_arrival = 0u64;
    for (arrival, name, rows) in kept {
        let mut tasks = Vec::new();
        let mut durations = BTreeMap::new();
        let mut deps = Vec::new();
        let mut ids: BTreeMap<u32, String> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let (id, parents) = match parse_name(&r.name) {
                Some((n, p)) => (format!("t{n}"), p),
                None => (format!("x{i}"), Vec::new()),
            };
            if let Some((n, _)) = parse_name(&r.name) {
                ids.insert(n, id.clone());
            }
            let scale = f64::from(r.instances.min(opts.max_instances.max(1)));
            let cpu = ((r.cpu * 10.0 * scale) as u32).clamp(1, MACHINE_CPU);
            let mem =
                ((r.mem / 100.0 * f64::from(MACHINE_MEM) * scale) as u32).clamp(1, MACHINE_MEM);
            let ms = ((r.end - r.start) * 1000).max(1000);
            cpu_work += f64::from(cpu) * ms as f64;
            durations.insert(id.clone(), ms);
            tasks.push(TaskSpec {
                id: id.clone(),
                kind: TaskKind::Command,
                resources: Resources {
                    cpu_millis: cpu,
                    memory_mib: mem,
                    gpus: 0,
                },
                expected_duration_ms: Some(ms),
                ..TaskSpec::default()
            });
            if !parents.is_empty() {
                deps.push((id, parents));
            }
        }
        let mut dropped = false;
        let mut dependencies = Vec::new();
        for (id, parents) in deps {
            let mut on = Vec::new();
            for p in parents {
                match ids.get(&p) {
                    Some(pid) if *pid != id => on.push(pid.clone()),
                    _ => dropped = true,
                }
            }
            if !on.is_empty() {
                dependencies.push(Dependency {
                    task: id,
                    depends_on: on,
                });
            }
        }
        if dropped {
            report.notes.push(format!(
                "{name}: dependencies on tasks missing from the trace were dropped"
            ));
        }
        let spec = JobSpec {
            tenant: "batch".into(),
            tasks,
            dependencies,
            ..JobSpec::default()
        };
        if let Err(e) = splai_scheduler::dag::validate(&spec, &Default::default()) {
            report.skip("job whose rebuilt DAG is invalid");
            report.notes.push(format!("{name}: {e}"));
            continue;
        }
        report.jobs_kept += 1;
        report.tasks_kept += spec.tasks.len() as u64;
        let at_ms = (arrival - first) * 1000;
        last_arrival = last_arrival.max(at_ms);
        arrivals.push(JobArrival {
            name: name.replace('_', "-"),
            at_ms,
            spec,
            durations_ms: durations,
        });
    }
    let span_ms = (last_arrival as f64).max(1.0);
    let workers = opts.workers.max(1);
    let squeeze = cpu_work / (opts.load * f64::from(workers) * f64::from(MACHINE_CPU) * span_ms);
    for a in &mut arrivals {
        a.at_ms = (a.at_ms as f64 * squeeze) as u64;
    }
    let last_arrival = (last_arrival as f64 * squeeze) as u64;
    report.notes.push(format!(
        "fleet: {workers} machines of 96 cores; arrivals compressed {:.1}x to an offered cpu load of {:.2}",
        1.0 / squeeze,
        opts.load
    ));
    let horizon = (last_arrival / 1000) * 3 + 86_400;
    let scenario = Scenario {
        name: "alibaba-v2018-dag".into(),
        description: format!("Generated from Alibaba cluster-trace-v2018 batch DAGs by: {command}"),
        seed: 1,
        horizon_seconds: horizon,
        heartbeat_interval_ms: 10_000,
        network_latency_ms: 5,
        settings: Default::default(),
        fleet: vec![WorkerGroup {
            group: "machine".into(),
            count: workers,
            capabilities: Capabilities {
                cpu_millis: MACHINE_CPU,
                memory_mib: MACHINE_MEM,
                ..Capabilities::default()
            },
            warm_models: Vec::new(),
            max_warm_models: 1,
        }],
        workload: Workload {
            jobs: arrivals,
            generators: Vec::new(),
        },
        cold_start: ColdStart::default(),
        duration_noise: 0.0,
        policies: Default::default(),
        routes: Default::default(),
        faults: Vec::new(),
        checks: Checks::default(),
    };
    Ok((scenario, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_encode_the_dag() {
        assert_eq!(parse_name("M1"), Some((1, vec![])));
        assert_eq!(parse_name("R2_1"), Some((2, vec![1])));
        assert_eq!(parse_name("J5_3_4"), Some((5, vec![3, 4])));
        assert_eq!(parse_name("task_LTg0MTUwNTA5Mjg4MDQ2NjMxMw=="), None);
        assert_eq!(parse_name("MergeTask"), None);
        assert_eq!(parse_name("M1_x"), None);
    }
}
