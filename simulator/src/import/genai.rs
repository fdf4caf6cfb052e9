//! cluster-trace-v2026-GenAI: Stable Diffusion serving requests
//! (`gmt_create,predict_type,predict_status,exec_time_seconds,groupId,...,checkpoint_model_version_id,num_lora`).
//!
//! Each successful request becomes a one-task inference job for its base model, owned by its
//! user group as tenant. Workers come from the GPU fleet trace (v2023 node list), each keeping as
//! many models warm as it has GPUs. Model loads take one of the measured base-model load
//! latencies. Arrivals are compressed so the fleet sees the requested GPU load.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use splai_scheduler::Timestamp;
use splai_scheduler::api::{Capabilities, JobSpec, Resources, TaskKind, TaskSpec};

use super::{Report, records};
use crate::scenario::{Checks, ColdStart, JobArrival, Scenario, WorkerGroup, Workload};

pub struct Options<'a> {
    pub jobs: Option<usize>,
    pub fleet: Option<&'a Path>,
    pub cold_start: Option<&'a Path>,
    /// GPU nodes to take from the fleet file (at even steps through it).
    pub workers: u32,
    /// Offered GPU load to compress arrivals to.
    pub load: f64,
    /// The scenario's name.
    pub name: &'a str,
}

struct Request {
    at_s: u64,
    group: String,
    model: String,
    exec_ms: u64,
}

fn tenant_name(group: &str) -> String {
    let t: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

pub fn import(path: &Path, opts: &Options<'_>, command: &str) -> Result<(Scenario, Report)> {
    let mut report = Report::default();
    let requests = read_requests(path, opts, &mut report)?;
    let fleet = match opts.fleet {
        Some(p) => gpu_fleet(p, opts.workers, &mut report)?,
        None => vec![WorkerGroup {
            group: "gpu".into(),
            count: opts.workers,
            capabilities: Capabilities {
                cpu_millis: 32_000,
                memory_mib: 131_072,
                gpus: 1,
                models: vec!["*".into()],
                ..Capabilities::default()
            },
            warm_models: Vec::new(),
            max_warm_models: 1,
        }],
    };
    import_onto(requests, opts, fleet, report, command)
}

/// The trace's successful requests, by arrival, the first `opts.jobs` of them.
fn read_requests(path: &Path, opts: &Options<'_>, report: &mut Report) -> Result<Vec<Request>> {
    let mut requests = Vec::new();
    let mut rdr = records(path, true)?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{} has no header row", path.display()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{} has no `{name}` column", path.display()))
    };
    let (c_time, c_status, c_exec, c_group, c_model) = (
        col("gmt_create")?,
        col("predict_status")?,
        col("exec_time_seconds")?,
        col("groupId")?,
        col("checkpoint_model_version_id")?,
    );
    for rec in rdr.records() {
        report.rows_read += 1;
        let Ok(rec) = rec else {
            report.skip("unreadable CSV row");
            continue;
        };
        let f = |i: usize| rec.get(i).unwrap_or("").trim();
        let parsed = (|| {
            if f(c_status) != "SUCCEED" {
                return Err("request that did not succeed (FAILED or PENDING)");
            }
            let at = Timestamp::parse_rfc3339(&format!("{}Z", f(c_time)))
                .map_err(|_| "bad gmt_create")?;
            let exec: f64 = f(c_exec).parse().map_err(|_| "bad exec_time_seconds")?;
            if !(exec.is_finite() && exec > 0.0) {
                return Err("zero or negative exec_time_seconds");
            }
            if f(c_model).is_empty() {
                return Err("request without a model");
            }
            Ok(Request {
                at_s: at.millis() / 1000,
                group: f(c_group).to_owned(),
                model: f(c_model).to_owned(),
                exec_ms: (exec * 1000.0) as u64,
            })
        })();
        match parsed {
            Ok(r) => requests.push(r),
            Err(why) => report.skip(why),
        }
    }
    requests.sort_by(|a, b| a.at_s.cmp(&b.at_s).then_with(|| a.model.cmp(&b.model)));
    if let Some(k) = opts.jobs {
        requests.truncate(k);
    }
    if requests.is_empty() {
        bail!("{}: no usable request rows", path.display());
    }
    Ok(requests)
}

/// The requests of the trace as a scenario on a given fleet (`mixed` shares it with batch jobs).
pub(crate) fn import_trace_onto(
    path: &Path,
    opts: &Options<'_>,
    fleet: Vec<WorkerGroup>,
    command: &str,
) -> Result<(Scenario, Report)> {
    let mut report = Report::default();
    let requests = read_requests(path, opts, &mut report)?;
    import_onto(requests, opts, fleet, report, command)
}

/// Turns the requests into a scenario on a given fleet (`mixed` shares it with batch jobs).
fn import_onto(
    requests: Vec<Request>,
    opts: &Options<'_>,
    fleet: Vec<WorkerGroup>,
    mut report: Report,
    command: &str,
) -> Result<(Scenario, Report)> {
    let gpus: u64 = fleet
        .iter()
        .map(|g| u64::from(g.count) * u64::from(g.capabilities.gpus))
        .sum();
    // GPUs weighted by speed: a request runs its trace time divided by its node's speed.
    let capacity: f64 = fleet
        .iter()
        .map(|g| f64::from(g.count) * f64::from(g.capabilities.gpus) * g.capabilities.speed_factor)
        .sum();
    let first = requests[0].at_s;
    let span_ms = ((requests.last().expect("not empty").at_s - first) * 1000).max(1) as f64;
    let work: f64 = requests.iter().map(|r| r.exec_ms as f64).sum();
    if !(opts.load > 0.0 && opts.load.is_finite()) {
        bail!(
            "--load must be a positive number, such as 0.7 (got {})",
            opts.load
        );
    }
    let squeeze = work / (opts.load * capacity * span_ms);
    report.notes.push(format!(
        "{gpus} GPUs on {} nodes ({capacity:.1} P100-equivalents by speed factor); arrivals compressed {:.1}x to an offered GPU load of {:.2} (--load)",
        fleet.iter().map(|g| g.count).sum::<u32>(),
        1.0 / squeeze,
        opts.load
    ));
    let mut jobs = Vec::new();
    let mut models: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, r) in requests.iter().enumerate() {
        *models.entry(&r.model).or_default() += 1;
        let task = TaskSpec {
            id: "generate".into(),
            kind: TaskKind::Inference,
            model: Some(r.model.clone()),
            resources: Resources {
                cpu_millis: 4_000,
                memory_mib: 16_384,
                gpus: 1,
            },
            expected_duration_ms: Some(r.exec_ms),
            ..TaskSpec::default()
        };
        let at_ms = (((r.at_s - first) * 1000) as f64 * squeeze) as u64;
        jobs.push(JobArrival {
            name: format!("req-{i}"),
            at_ms,
            spec: JobSpec {
                tenant: tenant_name(&r.group),
                tasks: vec![task],
                ..JobSpec::default()
            },
            durations_ms: Default::default(),
        });
    }
    report.jobs_kept = jobs.len() as u64;
    report.tasks_kept = jobs.len() as u64;
    report.notes.push(format!(
        "{} models; the most requested has {} requests",
        models.len(),
        models.values().max().unwrap_or(&0)
    ));
    let cold_start = match opts.cold_start {
        Some(p) => load_latencies(p, &mut report)?,
        None => ColdStart::default(),
    };
    let last = jobs.last().map_or(0, |j| j.at_ms);
    // The scheduler's estimate of a model load: the measured median.
    let settings = splai_scheduler::Settings {
        model_load_ms: cold_start.fixed_ms,
        ..Default::default()
    };
    let scenario = Scenario {
        name: opts.name.to_owned(),
        description: format!(
            "Generated from Alibaba cluster-trace-v2026-GenAI and cluster-trace-gpu-v2023 by: {command}"
        ),
        seed: 1,
        horizon_seconds: last / 1000 * 3 + 86_400,
        heartbeat_interval_ms: 10_000,
        network_latency_ms: 5,
        submit_latency_ms: 0,
        settings,
        fleet,
        workload: Workload {
            jobs,
            generators: Vec::new(),
        },
        cold_start,
        duration_noise: 0.0,
        policies: Default::default(),
        routes: Default::default(),
        faults: Vec::new(),
        checks: Checks::default(),
    };
    Ok((scenario, report))
}

/// How fast a GPU model runs the trace's requests, against a P100: the ratio of their peak FP32
/// throughput on NVIDIA's datasheets (P100 PCIe 9.3 TFLOPS, V100 PCIe 14, T4 8.1, A10 31.2).
/// G2 and G3 are anonymised in the trace, so they count as a P100; the trace's run times are
/// taken as a P100's.
fn gpu_speed(model: &str) -> f64 {
    match model {
        "V100M16" | "V100M32" => 14.0 / 9.3,
        "T4" => 8.1 / 9.3,
        "A10" => 31.2 / 9.3,
        _ => 1.0,
    }
}

/// `n` GPU nodes of a v2023 node list, taken at even steps through it so the mix of GPU models
/// follows the list's, grouped by identical shape.
pub(crate) fn gpu_fleet(path: &Path, n: u32, report: &mut Report) -> Result<Vec<WorkerGroup>> {
    let mut nodes: Vec<(u32, u32, u32, String)> = Vec::new();
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
        if gpus > 0 && cpu > 0 && mem > 0 {
            nodes.push((cpu, mem, gpus, f(4).to_owned()));
        }
    }
    if nodes.is_empty() {
        bail!("{}: no GPU nodes found", path.display());
    }
    let n = n.max(1) as usize;
    let mut groups: Vec<((u32, u32, u32, String), u32)> = Vec::new();
    for i in 0..n {
        let shape = &nodes[i * nodes.len() / n % nodes.len()];
        match groups.iter_mut().find(|g| &g.0 == shape) {
            Some(g) => g.1 += 1,
            None => groups.push((shape.clone(), 1)),
        }
    }
    Ok(groups
        .into_iter()
        .map(|((cpu, mem, gpus, model), count)| WorkerGroup {
            group: format!(
                "{}-{gpus}g-{}c",
                if model.is_empty() {
                    "gpu".into()
                } else {
                    model.to_lowercase()
                },
                cpu / 1000
            ),
            count,
            capabilities: Capabilities {
                cpu_millis: cpu,
                memory_mib: mem,
                gpus,
                speed_factor: gpu_speed(&model),
                gpu_model: (!model.is_empty()).then_some(model),
                models: vec!["*".into()],
                ..Capabilities::default()
            },
            warm_models: Vec::new(),
            max_warm_models: gpus,
        })
        .collect())
}

/// Measured model load latencies (ms), thinned to at most 256 evenly spaced quantiles.
fn load_latencies(path: &Path, report: &mut Report) -> Result<ColdStart> {
    let mut rdr = records(path, true)?;
    let mut v: Vec<u64> = Vec::new();
    for rec in rdr.records() {
        match rec
            .ok()
            .and_then(|r| r.get(1).and_then(|x| x.trim().parse::<f64>().ok()))
        {
            Some(ms) if ms.is_finite() && ms > 0.0 => v.push(ms as u64),
            _ => report.skip("latency row without a positive value"),
        }
    }
    if v.is_empty() {
        bail!("{}: no usable latency values", path.display());
    }
    v.sort_unstable();
    let k = v.len().min(256);
    let samples: Vec<u64> = (0..k)
        .map(|i| v[i * (v.len() - 1) / (k - 1).max(1)])
        .collect();
    report.notes.push(format!(
        "model load latency: median {} ms, p95 {} ms, from {} measurements",
        v[v.len() / 2],
        v[v.len() * 95 / 100],
        v.len()
    ));
    Ok(ColdStart {
        fixed_ms: v[v.len() / 2],
        samples_ms: samples,
    })
}
