//! Batch and serving on one GPU fleet: cluster-trace-v2018 DAG jobs as tenant `batch` and
//! cluster-trace-v2026-GenAI requests as tenant `serving`, on GPU nodes of a
//! cluster-trace-gpu-v2023 node list that both share (the DAG tasks use the nodes' cores, the
//! requests a GPU and four cores each).
//!
//! Each part is imported as its own importer does (see `v2018` and `genai`), onto the same
//! fleet, each scaled to its own offered load: `batch` to `cpu_load` of the fleet's cores,
//! `serving` to `gpu_load` of its GPUs. The two tenants have quotas: `batch` may hold at most
//! `batch_cpu_share` of the cores, so requests find cores beside their GPUs, and `serving` at
//! most `serving_gpu_share` of the GPUs.

use std::path::Path;

use anyhow::{Result, bail};
use splai_scheduler::api::{PolicySpec, Quotas};

use super::{Report, genai, v2018};
use crate::scenario::Scenario;

pub struct Options<'a> {
    pub dag_csv: &'a Path,
    pub genai_csv: &'a Path,
    pub fleet: &'a Path,
    pub cold_start: Option<&'a Path>,
    pub workers: u32,
    pub dag_jobs: Option<usize>,
    pub requests: Option<usize>,
    pub cpu_load: f64,
    pub gpu_load: f64,
    pub batch_cpu_share: f64,
    pub serving_gpu_share: f64,
    pub name: &'a str,
}

pub fn import(opts: &Options<'_>, command: &str) -> Result<(Scenario, Report)> {
    for (flag, share) in [
        ("--batch-cpu-share", opts.batch_cpu_share),
        ("--serving-gpu-share", opts.serving_gpu_share),
    ] {
        if !(share > 0.0 && share <= 1.0) {
            bail!("{flag} must be in (0, 1], such as 0.6 (got {share})");
        }
    }
    for (flag, load) in [("--cpu-load", opts.cpu_load), ("--gpu-load", opts.gpu_load)] {
        if !(load > 0.0 && load.is_finite()) {
            bail!("{flag} must be a positive number, such as 0.7 (got {load})");
        }
    }
    let mut report = Report::default();
    let fleet = genai::gpu_fleet(opts.fleet, opts.workers, &mut report)?;
    let (mut sc, dag) = v2018::import_onto(
        opts.dag_csv,
        &v2018::Options {
            jobs: opts.dag_jobs,
            fleet: None,
            workers: opts.workers,
            machine_cores: 96,
            load: Some(opts.cpu_load),
            max_instances: 8,
            max_task_seconds: 1800,
            deadline_factor: None,
            name: opts.name,
        },
        fleet.clone(),
        Report::default(),
        command,
    )?;
    let (serving, requests) = genai::import_trace_onto(
        opts.genai_csv,
        &genai::Options {
            jobs: opts.requests,
            fleet: None,
            cold_start: opts.cold_start,
            workers: opts.workers,
            load: opts.gpu_load,
            name: opts.name,
        },
        fleet.clone(),
        command,
    )?;
    for (part, r) in [("batch", dag), ("serving", requests)] {
        report.rows_read += r.rows_read;
        report.jobs_kept += r.jobs_kept;
        report.tasks_kept += r.tasks_kept;
        for (why, n) in r.skipped {
            *report.skipped.entry(why).or_default() += n;
        }
        // The parts' notes name their importers' flags; here the loads have flags of their own.
        let flag = if part == "batch" {
            "--cpu-load"
        } else {
            "--gpu-load"
        };
        report.notes.extend(r.notes.into_iter().map(|n| {
            let n = n
                .replace("(--load; --keep-times keeps the trace's times)", "(--load)")
                .replace("(--load)", &format!("({flag})"));
            format!("{part}: {n}")
        }));
    }
    let span = |sc: &Scenario| sc.workload.jobs.iter().map(|j| j.at_ms).max().unwrap_or(0);
    report.notes.push(format!(
        "arrivals: batch over {:.0} s, serving over {:.0} s",
        span(&sc) as f64 / 1000.0,
        span(&serving) as f64 / 1000.0
    ));
    let mut jobs = std::mem::take(&mut sc.workload.jobs);
    for j in &mut jobs {
        j.spec.tenant = "batch".into();
    }
    jobs.extend(serving.workload.jobs.into_iter().map(|mut j| {
        j.spec.tenant = "serving".into();
        j
    }));
    jobs.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.name.cmp(&b.name)));
    sc.workload.jobs = jobs;
    let cores: u64 = fleet
        .iter()
        .map(|g| u64::from(g.count) * u64::from(g.capabilities.cpu_millis))
        .sum();
    let gpus: u64 = fleet
        .iter()
        .map(|g| u64::from(g.count) * u64::from(g.capabilities.gpus))
        .sum();
    let quota = |tenant: &str, quotas: Quotas| {
        (
            tenant.to_owned(),
            PolicySpec {
                tenant: tenant.into(),
                quotas,
                ..PolicySpec::default()
            },
        )
    };
    sc.policies = [
        quota(
            "batch",
            Quotas {
                max_cpu_millis: Some((cores as f64 * opts.batch_cpu_share) as u64),
                ..Quotas::default()
            },
        ),
        quota(
            "serving",
            Quotas {
                max_gpus: Some(((gpus as f64 * opts.serving_gpu_share) as u32).max(1)),
                ..Quotas::default()
            },
        ),
    ]
    .into_iter()
    .collect();
    report.notes.push(format!(
        "quotas: batch at most {:.0} of {:.0} cores, serving at most {} of {gpus} GPUs",
        cores as f64 * opts.batch_cpu_share / 1000.0,
        cores as f64 / 1000.0,
        ((gpus as f64 * opts.serving_gpu_share) as u32).max(1)
    ));
    sc.settings = serving.settings;
    sc.cold_start = serving.cold_start;
    sc.horizon_seconds = sc.horizon_seconds.max(serving.horizon_seconds);
    sc.description = format!(
        "Generated from Alibaba cluster-trace-v2018, cluster-trace-v2026-GenAI and cluster-trace-gpu-v2023 by: {command}"
    );
    Ok((sc, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_loads_and_shares_are_refused_by_their_own_flag_names() {
        let p = Path::new("/nonexistent");
        let opts = |cpu_load, batch_cpu_share| Options {
            dag_csv: p,
            genai_csv: p,
            fleet: p,
            cold_start: None,
            workers: 1,
            dag_jobs: None,
            requests: None,
            cpu_load,
            gpu_load: 0.7,
            batch_cpu_share,
            serving_gpu_share: 0.9,
            name: "t",
        };
        let err = |o: &Options<'_>| import(o, "test").err().unwrap().to_string();
        assert!(err(&opts(0.0, 0.7)).contains("--cpu-load"));
        assert!(err(&opts(f64::NAN, 0.7)).contains("--cpu-load"));
        assert!(err(&opts(0.6, 1.5)).contains("--batch-cpu-share"));
    }
}
