//! The fidelity report: the simulator's prediction and the real run side by side, per metric,
//! with the ratio and whether it is within tolerance.
//!
//! Times are reported in the scenario's own seconds: both runs ran the time-scaled scenario, so
//! their times are divided by the time scale. Two figures compare the runs task by task rather
//! than in aggregate: the share of tasks that succeeded on the same worker in both, and the rank
//! correlation (Spearman's) of the order in which jobs completed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use splai_scheduler::api::{JobPhase, Outcome};
use splai_sim::calibrate::Delays;
use splai_sim::record::{AttemptRow, Recorder};
use splai_sim::summary::Summary;

/// How far the real run may be from the prediction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerances {
    /// On makespan and mean JCT: |real / simulated - 1|.
    pub time: f64,
    /// On the warm-cache hit rate, in percentage points.
    pub hit_rate_points: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            time: 0.10,
            hit_rate_points: 5.0,
        }
    }
}

/// One run, as the simulator's outputs describe it.
pub struct Side<'a> {
    pub summary: &'a Summary,
    pub rec: &'a Recorder,
    /// Mean ms from a job's submission to the control plane taking it in: the simulator's
    /// `submitLatencyMs`, or what the real run measured.
    pub admission_delay_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub metric: String,
    pub simulated: f64,
    pub real: f64,
    /// real / simulated, when the prediction is not 0.
    pub ratio: Option<f64>,
    /// The bound this metric is held to, as text (`±10%`, `±5 points`), if any.
    pub tolerance: Option<String>,
    pub ok: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub time_scale: f64,
    pub rows: Vec<Row>,
    /// Of the tasks that succeeded in both runs, the share that ran on the same worker.
    pub same_worker_share: f64,
    /// Spearman's rank correlation of the completion order of the jobs completed in both.
    pub finish_order_correlation: f64,
    pub tolerances: Tolerances,
    /// The control plane's delays the simulated run was given, in real ms, and where they came
    /// from.
    pub delays: Delays,
    pub delays_from: String,
    pub pass: bool,
    pub real_wall_s: f64,
    /// How late the real run sent the create of its latest job, against its arrival time
    /// (scenario seconds): a run that could not keep up with the arrivals would hide their waits.
    pub real_arrival_lag_max_s: f64,
}

/// Attempts that failed, timed out or lost their worker and were followed by another attempt
/// of the same task: what the core counts as retries, counted alike on both sides.
pub fn retries(attempts: &[AttemptRow]) -> u64 {
    let mut last: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for a in attempts {
        let e = last.entry((a.job.as_str(), a.task.as_str())).or_insert(0);
        *e = (*e).max(a.attempt);
    }
    attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                Outcome::Failed | Outcome::TimedOut | Outcome::WorkerLost
            ) && last[&(a.job.as_str(), a.task.as_str())] > a.attempt
        })
        .count() as u64
}

/// Mean seconds from an attempt's assignment to its start, as the control plane saw them: the
/// round trip the simulator models as twice `networkLatencyMs`, measured.
pub fn dispatch_delay_s(attempts: &[AttemptRow]) -> f64 {
    let delays: Vec<u64> = attempts
        .iter()
        .filter_map(|a| a.started_ms.map(|s| s.saturating_sub(a.assigned_ms)))
        .collect();
    if delays.is_empty() {
        0.0
    } else {
        delays.iter().sum::<u64>() as f64 / delays.len() as f64 / 1000.0
    }
}

/// How far a metric of the real run may be from the prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// |real / simulated - 1| at most this.
    Relative(f64),
    /// |real - simulated| at most this many percentage points (for rates in [0, 1]).
    Points(f64),
}

/// real / simulated, when the prediction is not 0.
fn ratio(s: f64, r: f64) -> Option<f64> {
    (s != 0.0).then(|| r / s)
}

/// The bound as text and whether `r` keeps to it.
fn judge(bound: Option<Bound>, s: f64, r: f64) -> (Option<String>, bool) {
    match bound {
        Some(Bound::Points(t)) => (
            Some(format!("±{t:.0} points")),
            (100.0 * (r - s)).abs() <= t + 1e-9,
        ),
        Some(Bound::Relative(t)) => (
            Some(format!("±{:.0}%", 100.0 * t)),
            ratio(s, r).map_or(r == 0.0, |q| (q - 1.0).abs() <= t + 1e-9),
        ),
        None => (None, true),
    }
}

/// The bound each held metric is held to.
fn bound_of(metric: &str, tol: Tolerances) -> Option<Bound> {
    match metric {
        "makespan_s" | "jct_mean_s" => Some(Bound::Relative(tol.time)),
        "warm_cache_hit_rate" => Some(Bound::Points(tol.hit_rate_points)),
        _ => None,
    }
}

/// The simulator's delays in a report: their values and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct DelaysUsed {
    pub delays: Delays,
    pub from: String,
}

pub fn compare(
    sim: &Side<'_>,
    real: &Side<'_>,
    time_scale: f64,
    tol: Tolerances,
    used: DelaysUsed,
) -> Report {
    let mut rows = Vec::new();
    let mut row = |metric: &str, s: f64, r: f64| {
        let (tolerance, ok) = judge(bound_of(metric, tol), s, r);
        rows.push(Row {
            metric: metric.to_owned(),
            simulated: s,
            real: r,
            ratio: ratio(s, r),
            tolerance,
            ok,
        });
    };
    let (a, b) = (sim.summary, real.summary);
    let t = |x: f64| round(x / time_scale);
    row("makespan_s", t(a.makespan_s), t(b.makespan_s));
    row("jct_mean_s", t(a.jct_mean_s), t(b.jct_mean_s));
    row("jct_p50_s", t(a.jct_p50_s), t(b.jct_p50_s));
    row("jct_p95_s", t(a.jct_p95_s), t(b.jct_p95_s));
    row(
        "queue_wait_mean_s",
        t(a.queue_wait_mean_s),
        t(b.queue_wait_mean_s),
    );
    row(
        "warm_cache_hit_rate",
        a.warm_cache_hit_rate,
        b.warm_cache_hit_rate,
    );
    row("cold_starts", a.cold_starts as f64, b.cold_starts as f64);
    row(
        "retries",
        retries(&sim.rec.attempts) as f64,
        retries(&real.rec.attempts) as f64,
    );
    row(
        "dispatch_delay_mean_ms",
        t(1000.0 * dispatch_delay_s(&sim.rec.attempts)),
        t(1000.0 * dispatch_delay_s(&real.rec.attempts)),
    );
    row(
        "admission_delay_mean_ms",
        t(sim.admission_delay_ms),
        t(real.admission_delay_ms),
    );
    row(
        "jobs_completed",
        a.jobs_completed as f64,
        b.jobs_completed as f64,
    );
    let pass = rows.iter().all(|r| r.ok);
    Report {
        scenario: a.scenario.clone(),
        seed: a.seed,
        time_scale,
        rows,
        same_worker_share: round(same_worker_share(sim.rec, real.rec)),
        finish_order_correlation: round(finish_order_correlation(sim.rec, real.rec)),
        tolerances: tol,
        delays: used.delays,
        delays_from: used.from,
        pass,
        real_wall_s: b.wall_s,
        real_arrival_lag_max_s: t(arrival_lag_max_ms(sim.rec, real.rec) as f64 / 1000.0),
    }
}

/// The largest delay of a job's submission in `b` against its arrival in `a`, in ms.
fn arrival_lag_max_ms(a: &Recorder, b: &Recorder) -> u64 {
    a.jobs
        .values()
        .filter_map(|j| {
            let k = b.jobs.get(&j.job)?;
            Some(k.submitted_ms.saturating_sub(j.submitted_ms))
        })
        .max()
        .unwrap_or(0)
}

/// Of the tasks that succeeded in both runs, the share whose successful attempt ran on the same
/// worker (1 when none succeeded in both).
pub fn same_worker_share(a: &Recorder, b: &Recorder) -> f64 {
    let winners = |rec: &Recorder| -> BTreeMap<(String, String), String> {
        rec.attempts
            .iter()
            .filter(|x| x.outcome == Outcome::Succeeded)
            .map(|x| ((x.job.clone(), x.task.clone()), x.worker.clone()))
            .collect()
    };
    let (wa, wb) = (winners(a), winners(b));
    let (mut both, mut same) = (0u64, 0u64);
    for (k, w) in &wa {
        if let Some(v) = wb.get(k) {
            both += 1;
            same += u64::from(w == v);
        }
    }
    if both == 0 {
        1.0
    } else {
        same as f64 / both as f64
    }
}

/// Spearman's rank correlation of when the jobs completed in both runs completed (ties get
/// their average rank); 1 when fewer than two jobs completed in both.
pub fn finish_order_correlation(a: &Recorder, b: &Recorder) -> f64 {
    let done = |rec: &Recorder| -> BTreeMap<String, u64> {
        rec.jobs
            .values()
            .filter(|j| j.phase == JobPhase::Completed)
            .filter_map(|j| j.finished_ms.map(|f| (j.job.clone(), f)))
            .collect()
    };
    let (da, db) = (done(a), done(b));
    let common: Vec<&String> = da.keys().filter(|k| db.contains_key(*k)).collect();
    if common.len() < 2 {
        return 1.0;
    }
    let ra = ranks(&common.iter().map(|k| da[*k]).collect::<Vec<_>>());
    let rb = ranks(&common.iter().map(|k| db[*k]).collect::<Vec<_>>());
    pearson(&ra, &rb)
}

/// Ranks from 1, ties given the mean of the ranks they span.
fn ranks(xs: &[u64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by_key(|&i| xs[i]);
    let mut out = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        1.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

fn csv_of<T: Serialize>(rows: &[T]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "within tolerance"
    } else {
        "OUT OF TOLERANCE"
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fidelity: {} seed {} at time scale {} (times in the scenario's seconds; the real run took {:.1} s)",
            self.scenario, self.seed, self.time_scale, self.real_wall_s
        );
        let _ = writeln!(
            s,
            "{:<22} {:>12} {:>12} {:>8}  {:<12} ",
            "metric", "simulated", "real", "ratio", "tolerance"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<22} {:>12.3} {:>12.3} {:>8}  {:<12} {}",
                r.metric,
                r.simulated,
                r.real,
                r.ratio.map_or("-".into(), |q| format!("{q:.3}")),
                r.tolerance.as_deref().unwrap_or("-"),
                if r.ok { "" } else { "OUT OF TOLERANCE" }
            );
        }
        let _ = writeln!(
            s,
            "same worker for {:.1}% of the tasks that succeeded in both; completion order rank correlation {:.3}",
            100.0 * self.same_worker_share,
            self.finish_order_correlation
        );
        let _ = writeln!(
            s,
            "the real run sent the create of every job within {:.3} s of its arrival time",
            self.real_arrival_lag_max_s
        );
        let _ = writeln!(
            s,
            "the simulator was given networkLatencyMs {} and submitLatencyMs {} (real ms), {}",
            self.delays.network_latency_ms, self.delays.submit_latency_ms, self.delays_from
        );
        let _ = writeln!(s, "fidelity: {}", verdict(self.pass));
        s
    }

    /// One CSV row per metric.
    pub fn csv(&self) -> Result<String, csv::Error> {
        csv_of(&self.rows)
    }
}

/// One scenario over several seeds: each metric's mean over the seeds on both sides, the ratio
/// of the means, and the range of the seeds' own ratios. Where jobs queue, which job waits
/// moves with every small difference in timing, so one seed's mean JCT is a noisy figure; the
/// mean over seeds is what is held to the tolerance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedsReport {
    pub scenario: String,
    pub seeds: Vec<u64>,
    pub time_scale: f64,
    pub rows: Vec<SeedsRow>,
    pub tolerances: Tolerances,
    pub pass: bool,
    /// The seeds whose own report was out of tolerance.
    pub seeds_out_of_tolerance: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedsRow {
    pub metric: String,
    /// Means over the seeds.
    pub simulated: f64,
    pub real: f64,
    /// Of the means.
    pub ratio: Option<f64>,
    /// The lowest and highest of the seeds' own ratios.
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    pub tolerance: Option<String>,
    pub ok: bool,
}

/// The reports of one scenario on several seeds, taken together. `reports` is not empty and
/// every report lists the same metrics.
pub fn over_seeds(reports: &[Report]) -> SeedsReport {
    let first = &reports[0];
    let n = reports.len() as f64;
    let rows: Vec<SeedsRow> = first
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mean =
                |f: fn(&Row) -> f64| round(reports.iter().map(|x| f(&x.rows[i])).sum::<f64>() / n);
            let (sim, real) = (mean(|r| r.simulated), mean(|r| r.real));
            let ratios = reports.iter().filter_map(|x| x.rows[i].ratio);
            let (tolerance, ok) = judge(bound_of(&r.metric, first.tolerances), sim, real);
            SeedsRow {
                metric: r.metric.clone(),
                simulated: sim,
                real,
                ratio: ratio(sim, real),
                ratio_min: ratios.clone().reduce(f64::min),
                ratio_max: ratios.reduce(f64::max),
                tolerance,
                ok,
            }
        })
        .collect();
    SeedsReport {
        scenario: first.scenario.clone(),
        seeds: reports.iter().map(|r| r.seed).collect(),
        time_scale: first.time_scale,
        pass: rows.iter().all(|r| r.ok),
        rows,
        tolerances: first.tolerances,
        seeds_out_of_tolerance: reports.iter().filter(|r| !r.pass).map(|r| r.seed).collect(),
    }
}

impl SeedsReport {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fidelity: {} over seeds {} at time scale {} (means; times in the scenario's seconds)",
            self.scenario,
            seeds.join(","),
            self.time_scale
        );
        let _ = writeln!(
            s,
            "{:<24} {:>11} {:>11} {:>7}  {:<15} {:<12}",
            "metric", "simulated", "real", "ratio", "seeds' ratios", "tolerance"
        );
        let q = |x: Option<f64>| x.map_or("-".into(), |q| format!("{q:.3}"));
        for r in &self.rows {
            let range = match (r.ratio_min, r.ratio_max) {
                (Some(a), Some(b)) => format!("{a:.3}-{b:.3}"),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<24} {:>11.3} {:>11.3} {:>7}  {:<15} {:<12} {}",
                r.metric,
                r.simulated,
                r.real,
                q(r.ratio),
                range,
                r.tolerance.as_deref().unwrap_or("-"),
                if r.ok { "" } else { "OUT OF TOLERANCE" }
            );
        }
        if !self.seeds_out_of_tolerance.is_empty() {
            let out: Vec<String> = self
                .seeds_out_of_tolerance
                .iter()
                .map(u64::to_string)
                .collect();
            let _ = writeln!(s, "seeds out of tolerance on their own: {}", out.join(","));
        }
        let _ = writeln!(s, "fidelity over seeds: {}", verdict(self.pass));
        s
    }

    /// One CSV row per metric.
    pub fn csv(&self) -> Result<String, csv::Error> {
        csv_of(&self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties_and_spearman_is_one_for_the_same_order_and_minus_one_reversed() {
        assert_eq!(ranks(&[30, 10, 20, 10]), vec![4.0, 1.5, 3.0, 1.5]);
        let a = ranks(&[1, 2, 3, 4]);
        assert!((pearson(&a, &ranks(&[10, 20, 30, 40])) - 1.0).abs() < 1e-12);
        assert!((pearson(&a, &ranks(&[40, 30, 20, 10])) + 1.0).abs() < 1e-12);
    }

    fn report(seed: u64, jct: (f64, f64), hits: (f64, f64)) -> Report {
        let tol = Tolerances::default();
        let rows = [("jct_mean_s", jct), ("warm_cache_hit_rate", hits)]
            .into_iter()
            .map(|(metric, (s, r))| {
                let (tolerance, ok) = judge(bound_of(metric, tol), s, r);
                Row {
                    metric: metric.into(),
                    simulated: s,
                    real: r,
                    ratio: ratio(s, r),
                    tolerance,
                    ok,
                }
            })
            .collect::<Vec<_>>();
        Report {
            scenario: "s".into(),
            seed,
            time_scale: 0.05,
            pass: rows.iter().all(|r| r.ok),
            rows,
            same_worker_share: 0.5,
            finish_order_correlation: 0.9,
            tolerances: tol,
            delays: Delays {
                network_latency_ms: 1,
                submit_latency_ms: 0,
            },
            delays_from: "as given".into(),
            real_wall_s: 1.0,
            real_arrival_lag_max_s: 0.0,
        }
    }

    #[test]
    fn over_seeds_holds_the_means_to_the_tolerance_and_names_the_seeds_out_on_their_own() {
        // Seed 1 is 20% over on mean JCT, seed 2 15% under: their means are 2.5% apart.
        let over = over_seeds(&[
            report(1, (50.0, 60.0), (0.9, 0.9)),
            report(2, (50.0, 42.5), (0.9, 0.88)),
        ]);
        assert_eq!(over.seeds, vec![1, 2]);
        assert_eq!(over.seeds_out_of_tolerance, vec![1, 2]);
        let jct = &over.rows[0];
        assert_eq!((jct.simulated, jct.real), (50.0, 51.25));
        assert_eq!((jct.ratio_min, jct.ratio_max), (Some(0.85), Some(1.2)));
        assert!(jct.ok && over.pass);
        assert!(over.table().contains("0.850-1.200"), "{}", over.table());
        // A bias that every seed shares is not averaged away.
        let biased = over_seeds(&[
            report(1, (50.0, 56.0), (0.9, 0.9)),
            report(2, (50.0, 57.0), (0.9, 0.9)),
        ]);
        assert!(!biased.pass);
        assert!(biased.table().contains("OUT OF TOLERANCE"));
    }
}
