//! Writing a run's results: `summary.json`, CSV tables and two SVG plots (`crate::plot`).

use std::path::Path;

use anyhow::{Context, Result};

use crate::plot;
use crate::record::Recorder;
use crate::summary::Summary;

pub fn write_all(
    dir: &Path,
    summary: &Summary,
    rec: &Recorder,
    fleet_cpu_millis: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, body: String| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "summary.json",
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    write("tasks.csv", csv_of(&rec.attempts)?)?;
    write("jobs.csv", csv_of(&rec.jobs.values().collect::<Vec<_>>())?)?;
    write("timeline.csv", csv_of(&rec.timeline)?)?;
    write("workers.csv", workers_csv(rec)?)?;
    write(
        "utilization.svg",
        plot::utilization_svg(rec, fleet_cpu_millis)?,
    )?;
    write(
        "jct_cdf.svg",
        plot::jct_cdf_svg(&[("", plot::completed_jcts_s(rec))])?,
    )?;
    Ok(())
}

fn csv_of<T: serde::Serialize>(rows: &[T]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

fn workers_csv(rec: &Recorder) -> Result<String> {
    #[derive(serde::Serialize, Default)]
    struct Row {
        worker: String,
        attempts: u64,
        succeeded: u64,
        busy_ms: u64,
        cold_starts: u64,
    }
    let mut rows: std::collections::BTreeMap<&str, Row> = Default::default();
    for a in &rec.attempts {
        let r = rows.entry(&a.worker).or_insert_with(|| Row {
            worker: a.worker.clone(),
            ..Row::default()
        });
        r.attempts += 1;
        if a.outcome == splai_scheduler::api::Outcome::Succeeded {
            r.succeeded += 1;
        }
        r.busy_ms += a.started_ms.map_or(0, |s| a.finished_ms.saturating_sub(s));
        r.cold_starts += u64::from(a.cold_start == Some(true));
    }
    csv_of(&rows.into_values().collect::<Vec<_>>())
}
