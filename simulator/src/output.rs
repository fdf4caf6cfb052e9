//! Writing a run's results: `summary.json`, CSV tables and two SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

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
    write("utilization.svg", utilization_svg(rec, fleet_cpu_millis))?;
    write("jct_cdf.svg", jct_cdf_svg(&[("", rec)]))?;
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

const W: f64 = 640.0;
const H: f64 = 320.0;
const M: f64 = 48.0;

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{M}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{M}\" y1=\"{M}\" x2=\"{M}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{y_label}</text>\n",
        W / 2.0,
        H - M,
        W - M,
        H - M,
        H - M,
        W / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    )
}

fn polyline(points: &[(f64, f64)], x_max: f64, y_max: f64, color: &str) -> String {
    let mut s =
        format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"");
    for &(x, y) in points {
        let px = M + (W - 2.0 * M) * if x_max > 0.0 { x / x_max } else { 0.0 };
        let py = (H - M) - (H - 2.0 * M) * if y_max > 0.0 { y / y_max } else { 0.0 };
        let _ = write!(s, "{px:.1},{py:.1} ");
    }
    s.push_str("\"/>\n");
    s
}

fn utilization_svg(rec: &Recorder, fleet_cpu: u64) -> String {
    let pts: Vec<(f64, f64)> = rec
        .timeline
        .iter()
        .map(|r| {
            (
                r.t_ms as f64 / 1000.0,
                if fleet_cpu > 0 {
                    r.busy_cpu_millis as f64 / fleet_cpu as f64
                } else {
                    0.0
                },
            )
        })
        .collect();
    let x_max = pts.last().map_or(1.0, |p| p.0.max(1.0));
    let mut s = frame(
        "CPU utilization over time",
        &format!("time (s, 0 to {x_max:.0})"),
        "busy cpu / fleet cpu (0 to 1)",
    );
    s += &polyline(&pts, x_max, 1.0, "#1f77b4");
    s + "</svg>\n"
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The JCT CDF of one run or several (each a labelled series, with a legend when more than one).
pub fn jct_cdf_svg(series: &[(&str, &Recorder)]) -> String {
    const COLOURS: [&str; 6] = [
        "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let cdfs: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, rec)| {
            let mut jcts: Vec<f64> = rec
                .jobs
                .values()
                .filter(|j| j.phase == splai_scheduler::api::JobPhase::Completed)
                .filter_map(|j| j.finished_ms.map(|f| (f - j.submitted_ms) as f64 / 1000.0))
                .collect();
            jcts.sort_by(f64::total_cmp);
            jcts
        })
        .collect();
    let x_max = cdfs
        .iter()
        .filter_map(|c| c.last().copied())
        .reduce(f64::max)
        .unwrap_or(1.0)
        .max(1e-3);
    let mut s = frame(
        "Job completion time CDF",
        &format!("JCT (s, 0 to {x_max:.1})"),
        "fraction of completed jobs",
    );
    for (i, jcts) in cdfs.iter().enumerate() {
        let n = jcts.len().max(1) as f64;
        let pts: Vec<(f64, f64)> = jcts
            .iter()
            .enumerate()
            .map(|(k, &x)| (x, (k + 1) as f64 / n))
            .collect();
        let colour = COLOURS[i % COLOURS.len()];
        s += &polyline(&pts, x_max, 1.0, colour);
        if series.len() > 1 {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
                W - M - 120.0,
                H - M - 12.0 - 16.0 * i as f64,
                xml_escape(series[i].0)
            );
        }
    }
    s + "</svg>\n"
}
