//! cluster-trace-v2018 batch DAG jobs (`batch_task.csv`, no header):
//! `task_name,instance_num,job_name,task_type,status,start_time,end_time,plan_cpu,plan_mem`.
//!
//! The DAG is rebuilt from the task names: only the numbers count (`M1` has no parents, `R2_1`
//! depends on task 1, `J5_3_4` on tasks 3 and 4); names not of that form are independent tasks.
//! A task's `instance_num` parallel instances become one task holding `min(instances,
//! maxInstances)` times the per-instance cpu and memory, for the task's measured duration.
//! A job is kept only if all its rows are clean and `Terminated`.
//!
//! The fleet is either `workers` machines of `machine_cores` cores (the trace's own machines have
//! 96) with 1 GiB per core, or, with a cluster-trace-gpu-v2023 node list, `workers` of its CPU-only
//! nodes taken at even steps through the list, so the mix of node shapes follows the list's.
//!
//! Arrival times keep their order and spacing: as in the trace (`load: None`), or scaled so that
//! the fleet is loaded to `load` while jobs arrive: if every task started as soon as its parents finished, the cpu in use
//! would average `load` of the fleet's between the first and the last arrival. Counting each
//! job's work as spread over the arrival span instead misjudges the load badly, because most of
//! the work belongs to jobs whose critical paths are longer than that span.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use splai_scheduler::api::{Capabilities, Dependency, JobSpec, Resources, TaskKind, TaskSpec};

use super::{Report, records};
use crate::scenario::{Checks, ColdStart, JobArrival, Scenario, WorkerGroup, Workload};

pub struct Options<'a> {
    pub jobs: Option<usize>,
    /// A cluster-trace-gpu-v2023 node list to take CPU-only nodes from.
    pub fleet: Option<&'a Path>,
    pub workers: u32,
    /// Cores of each machine when there is no node list.
    pub machine_cores: u32,
    /// Offered cpu load: arrivals are compressed (or stretched) to reach it on the fleet. `None`
    /// keeps the trace's own arrival times.
    pub load: Option<f64>,
    pub max_instances: u32,
    /// Jobs with a task longer than this are dropped (and counted): a handful of hours-long tasks
    /// would otherwise dominate every makespan after arrivals are compressed.
    pub max_task_seconds: u64,
    /// Gives each job `deadlineSeconds` of this many times its critical path (by the trace's
    /// durations, rounded up to a second), as the ERDOS simulator's deadlines are; none without.
    pub deadline_factor: Option<f64>,
    /// The scenario's name.
    pub name: &'a str,
}

/// Machines of the trace: 96 cores and (normalised) memory 100, taken as 96 GiB. Task sizes are
/// read against these, whatever the fleet.
const MACHINE_CPU: u32 = 96_000;
const MACHINE_MEM: u32 = 98_304;

/// One imported job before its arrival is scaled: per task, its earliest start after the
/// job's arrival (every parent done) and its run time and cpu.
struct Profile {
    tasks: Vec<(u64, u64, u32)>,
}

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

pub fn import(path: &Path, opts: &Options<'_>, command: &str) -> Result<(Scenario, Report)> {
    if let Some(f) = opts.deadline_factor
        && !(f > 0.0 && f.is_finite())
    {
        bail!("--deadline-factor must be a positive number, such as 1.5 (got {f})");
    }
    if let Some(l) = opts.load
        && !(l > 0.0 && l.is_finite())
    {
        bail!(
            "--load must be a positive number, such as 0.9 (got {l}); --keep-times keeps the trace's arrival times"
        );
    }
    if opts.machine_cores == 0 {
        bail!("--machine-cores must be at least 1");
    }
    let mut report = Report::default();
    let fleet = match opts.fleet {
        Some(p) => cpu_fleet(p, opts.workers, &mut report)?,
        None => vec![WorkerGroup {
            group: "machine".into(),
            count: opts.workers.max(1),
            capabilities: Capabilities {
                cpu_millis: opts.machine_cores.saturating_mul(1000),
                memory_mib: opts.machine_cores.saturating_mul(1024),
                ..Capabilities::default()
            },
            warm_models: Vec::new(),
            max_warm_models: 1,
        }],
    };
    import_onto(path, opts, fleet, report, command)
}

/// Imports the jobs onto a given fleet (`mixed` puts them on GPU nodes).
pub(crate) fn import_onto(
    path: &Path,
    opts: &Options<'_>,
    fleet: Vec<WorkerGroup>,
    mut report: Report,
    command: &str,
) -> Result<(Scenario, Report)> {
    // No task may be larger than the largest node, or its job could never finish.
    let max_cpu = fleet
        .iter()
        .map(|g| g.capabilities.cpu_millis)
        .max()
        .unwrap_or(1);
    let max_mem = fleet
        .iter()
        .map(|g| g.capabilities.memory_mib)
        .max()
        .unwrap_or(1);
    let capacity: f64 = fleet
        .iter()
        .map(|g| f64::from(g.count) * f64::from(g.capabilities.cpu_millis))
        .sum();
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
    let mut profiles = Vec::new();
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
            let cpu = ((r.cpu * 10.0 * scale) as u32).clamp(1, MACHINE_CPU.min(max_cpu));
            let mem = ((r.mem / 100.0 * f64::from(MACHINE_MEM) * scale) as u32)
                .clamp(1, MACHINE_MEM.min(max_mem));
            let ms = ((r.end - r.start) * 1000).max(1000);
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
        let mut spec = JobSpec {
            tenant: "batch".into(),
            tasks,
            dependencies,
            ..JobSpec::default()
        };
        let dag = match splai_scheduler::dag::validate(&spec, &Default::default()) {
            Ok(dag) => dag,
            Err(e) => {
                report.skip("job whose rebuilt DAG is invalid");
                report.notes.push(format!("{name}: {e}"));
                continue;
            }
        };
        let run = |t: u32| durations[&spec.tasks[t as usize].id];
        let mut earliest = vec![0u64; spec.tasks.len()];
        for &t in dag.topological_order() {
            earliest[t as usize] = dag
                .parents(t)
                .iter()
                .map(|&p| earliest[p as usize] + run(p))
                .max()
                .unwrap_or(0);
        }
        let critical_ms = (0..spec.tasks.len() as u32)
            .map(|t| earliest[t as usize] + run(t))
            .max()
            .unwrap_or(0);
        profiles.push(Profile {
            tasks: (0..spec.tasks.len() as u32)
                .map(|t| {
                    let cpu = spec.tasks[t as usize].resources.cpu_millis;
                    (earliest[t as usize], run(t), cpu)
                })
                .collect(),
        });
        report.jobs_kept += 1;
        report.tasks_kept += spec.tasks.len() as u64;
        if let Some(f) = opts.deadline_factor {
            spec.deadline_seconds = Some((critical_ms as f64 * f / 1000.0).ceil().max(1.0) as u64);
        }
        let at_ms = (arrival - first) * 1000;
        last_arrival = last_arrival.max(at_ms);
        arrivals.push(JobArrival {
            name: name.replace('_', "-"),
            at_ms,
            spec,
            durations_ms: durations,
        });
    }
    let at: Vec<f64> = arrivals.iter().map(|a| a.at_ms as f64).collect();
    let nodes = fleet.iter().map(|g| g.count).sum::<u32>();
    let squeeze = match opts.load {
        None => 1.0,
        Some(load) => {
            // Even all at once, the jobs may not keep the fleet that busy.
            let most = offered_load(&at, &profiles, capacity, 1e-6);
            if at.iter().any(|&a| a > 0.0) && most < load {
                bail!(
                    "an offered cpu load of {load} is out of reach: {} jobs on {nodes} nodes ({:.0} cores) give at most {most:.2} even if they all arrive at once. \
                     Use fewer workers, more jobs, a lower load, or the trace's own times (--keep-times)",
                    arrivals.len(),
                    capacity / 1000.0
                );
            }
            squeeze_for_load(&at, &profiles, capacity, load)
        }
    };
    for a in &mut arrivals {
        a.at_ms = (a.at_ms as f64 * squeeze) as u64;
    }
    let last_arrival = (last_arrival as f64 * squeeze) as u64;
    let offered = offered_load(&at, &profiles, capacity, squeeze);
    report.notes.push(format!(
        "fleet: {nodes} nodes, {:.0} cores",
        capacity / 1000.0
    ));
    report.notes.push(match opts.load {
        Some(_) => format!(
            "arrivals: the trace's spacing compressed {:.1}x, for an offered cpu load of {offered:.2} while jobs arrive (--load; --keep-times keeps the trace's times)",
            1.0 / squeeze
        ),
        None => format!(
            "arrivals: the trace's own times (--keep-times), an offered cpu load of {offered:.2} while jobs arrive"
        ),
    });
    report.notes.push(format!(
        "tasks: cpu and memory are the trace's per-instance plan times min(instances, --max-instances {}), capped at the largest node; run time is end_time - start_time (at least 1 s)",
        opts.max_instances.max(1)
    ));
    let horizon = (last_arrival / 1000) * 3 + 86_400;
    let scenario = Scenario {
        name: opts.name.to_owned(),
        description: format!("Generated from Alibaba cluster-trace-v2018 batch DAGs by: {command}"),
        seed: 1,
        horizon_seconds: horizon,
        heartbeat_interval_ms: 10_000,
        network_latency_ms: 5,
        submit_latency_ms: 0,
        settings: Default::default(),
        fleet,
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

/// The cpu in use, as a share of `capacity`, averaged from the first to the last arrival, when
/// arrivals are scaled by `squeeze` and every task starts as soon as its job allows.
fn offered_load(at: &[f64], profiles: &[Profile], capacity: f64, squeeze: f64) -> f64 {
    let end = at.iter().copied().fold(0.0, f64::max) * squeeze;
    if end <= 0.0 || capacity <= 0.0 {
        return 0.0;
    }
    let mut busy = 0.0;
    for (a, p) in at.iter().zip(profiles) {
        for &(start, run, cpu) in &p.tasks {
            let from = a * squeeze + start as f64;
            let to = (from + run as f64).min(end);
            if to > from {
                busy += f64::from(cpu) * (to - from);
            }
        }
    }
    busy / (capacity * end)
}

/// The factor on arrival times that gives the requested offered load: found by bisection,
/// since the load falls as arrivals spread out. 1 when every job arrives at once.
fn squeeze_for_load(at: &[f64], profiles: &[Profile], capacity: f64, load: f64) -> f64 {
    if at.iter().all(|&a| a <= 0.0) || !load.is_finite() || load <= 0.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (1e-6f64, 1e6f64);
    for _ in 0..100 {
        let mid = (lo * hi).sqrt();
        if offered_load(at, profiles, capacity, mid) > load {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo * hi).sqrt()
}

/// `n` CPU-only nodes of a v2023 node list, taken at even steps through it and grouped by shape.
fn cpu_fleet(path: &Path, n: u32, report: &mut Report) -> Result<Vec<WorkerGroup>> {
    let mut nodes: Vec<(u32, u32)> = Vec::new();
    for rec in records(path, true)?.records() {
        let Ok(rec) = rec else {
            report.skip("unreadable node row");
            continue;
        };
        let f = |i: usize| rec.get(i).unwrap_or("").trim();
        let (Ok(cpu), Ok(mem), Ok(gpus)) = (
            f(1).parse::<u32>(),
            f(2).parse::<u32>(),
            f(3).parse::<u32>(),
        ) else {
            report.skip("node row with a bad number");
            continue;
        };
        if gpus == 0 && cpu > 0 && mem > 0 {
            nodes.push((cpu, mem));
        }
    }
    if nodes.is_empty() {
        bail!("{}: no CPU-only nodes found", path.display());
    }
    let n = n.max(1) as usize;
    let mut groups: Vec<((u32, u32), u32)> = Vec::new();
    for i in 0..n {
        let shape = nodes[i * nodes.len() / n % nodes.len()];
        match groups.iter_mut().find(|g| g.0 == shape) {
            Some(g) => g.1 += 1,
            None => groups.push((shape, 1)),
        }
    }
    Ok(groups
        .into_iter()
        .map(|((cpu, mem), count)| WorkerGroup {
            group: format!("cpu-{}c-{}g", cpu / 1000, mem / 1024),
            count,
            capabilities: Capabilities {
                cpu_millis: cpu,
                memory_mib: mem,
                ..Capabilities::default()
            },
            warm_models: Vec::new(),
            max_warm_models: 1,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two one-task jobs 1,000 s apart in the trace, each 2 cores for 100 s.
    fn two_jobs(dir: &Path) -> std::path::PathBuf {
        let csv = dir.join("batch_task.csv");
        std::fs::write(
            &csv,
            "M1,1,j_1,1,Terminated,1000,1100,200,0.5\nM1,1,j_2,1,Terminated,2000,2100,200,0.5\n",
        )
        .unwrap();
        csv
    }

    fn options(load: Option<f64>, workers: u32, machine_cores: u32) -> Options<'static> {
        Options {
            jobs: None,
            fleet: None,
            workers,
            machine_cores,
            load,
            max_instances: 8,
            max_task_seconds: 1800,
            deadline_factor: None,
            name: "t",
        }
    }

    #[test]
    fn keep_times_keeps_the_traces_arrivals_and_a_pool_has_machines_of_the_given_size() {
        let dir = tempfile::tempdir().unwrap();
        let csv = two_jobs(dir.path());
        let (sc, report) = import(&csv, &options(None, 5, 14), "test").unwrap();
        let at: Vec<u64> = sc.workload.jobs.iter().map(|j| j.at_ms).collect();
        assert_eq!(at, [0, 1_000_000]);
        assert_eq!(sc.fleet.len(), 1);
        assert_eq!(sc.fleet[0].count, 5);
        assert_eq!(sc.fleet[0].capabilities.cpu_millis, 14_000);
        assert_eq!(sc.fleet[0].capabilities.memory_mib, 14 * 1024);
        let text = report.to_string();
        assert!(text.contains("the trace's own times"), "{text}");
        assert!(text.contains("min(instances, --max-instances 8)"), "{text}");
    }

    #[test]
    fn a_load_the_jobs_cannot_reach_is_an_error_that_says_what_to_change() {
        let dir = tempfile::tempdir().unwrap();
        let csv = two_jobs(dir.path());
        // Even arriving together, 4 cores of work cannot keep 96 cores 90% busy.
        let e = import(&csv, &options(Some(0.9), 1, 96), "test")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("out of reach") && e.contains("--keep-times"),
            "{e}"
        );
        assert!(import(&csv, &options(Some(0.0), 1, 96), "test").is_err());
        assert!(import(&csv, &options(None, 1, 0), "test").is_err());
        // One 2-core machine: 90% is reachable, and the note says how much it compressed.
        let (sc, report) = import(&csv, &options(Some(0.9), 1, 2), "test").unwrap();
        assert!(sc.workload.jobs[1].at_ms < 1_000_000);
        assert!(report.to_string().contains("compressed"), "{report}");
    }

    #[test]
    fn a_deadline_factor_gives_each_job_that_multiple_of_its_critical_path() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("batch_task.csv");
        // M1 (100 s) then R2_1 (50 s): a critical path of 150 s.
        std::fs::write(
            &csv,
            "M1,1,j_1,1,Terminated,1000,1100,100,0.5\nR2_1,1,j_1,1,Terminated,1100,1150,100,0.5\n",
        )
        .unwrap();
        let opts = |deadline_factor| Options {
            jobs: None,
            fleet: None,
            workers: 1,
            machine_cores: 96,
            load: None,
            max_instances: 8,
            max_task_seconds: 1800,
            deadline_factor,
            name: "t",
        };
        let (sc, _) = import(&csv, &opts(Some(1.5)), "test").unwrap();
        assert_eq!(sc.workload.jobs[0].spec.deadline_seconds, Some(225));
        let (sc, _) = import(&csv, &opts(None), "test").unwrap();
        assert_eq!(sc.workload.jobs[0].spec.deadline_seconds, None);
        assert!(import(&csv, &opts(Some(0.0)), "test").is_err());
    }

    #[test]
    fn task_names_encode_the_dag() {
        assert_eq!(parse_name("M1"), Some((1, vec![])));
        assert_eq!(parse_name("R2_1"), Some((2, vec![1])));
        assert_eq!(parse_name("J5_3_4"), Some((5, vec![3, 4])));
        assert_eq!(parse_name("task_LTg0MTUwNTA5Mjg4MDQ2NjMxMw=="), None);
        assert_eq!(parse_name("MergeTask"), None);
        assert_eq!(parse_name("M1_x"), None);
    }

    fn chain(runs: &[(u64, u32)]) -> Profile {
        let mut start = 0;
        Profile {
            tasks: runs
                .iter()
                .map(|&(run, cpu)| {
                    let t = (start, run, cpu);
                    start += run;
                    t
                })
                .collect(),
        }
    }

    #[test]
    fn offered_load_counts_only_the_work_done_while_jobs_arrive() {
        // Two jobs 100 s apart, each one cpu for 100 s, then one cpu for 1,000 s: of the second
        // job nothing runs before the last arrival.
        let p = [
            chain(&[(100_000, 1000), (1_000_000, 1000)]),
            chain(&[(100_000, 1000), (1_000_000, 1000)]),
        ];
        let load = offered_load(&[0.0, 100_000.0], &p, 2000.0, 1.0);
        assert!((load - 0.5).abs() < 1e-9, "{load}");
    }

    #[test]
    fn arrivals_are_squeezed_until_the_fleet_sees_the_requested_load() {
        let p: Vec<Profile> = (0..50)
            .map(|_| chain(&[(60_000, 2000), (30_000, 1000)]))
            .collect();
        let at: Vec<f64> = (0..50).map(|i| f64::from(i) * 60_000.0).collect();
        let s = squeeze_for_load(&at, &p, 4000.0, 0.7);
        assert!((offered_load(&at, &p, 4000.0, s) - 0.7).abs() < 1e-3);
        assert!(
            s < 1.0,
            "a lighter load than requested compresses arrivals: {s}"
        );
    }
}
