//! Running many seeds: `compare` (policies side by side) and `sweep` (invariants over seeds).

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use anyhow::Result;
use splai_scheduler::Strategy;

use crate::scenario::Scenario;
use crate::summary::Summary;
use crate::{Engine, Run};

/// Mean metrics per policy.
pub struct Table {
    pub rows: Vec<(Strategy, Vec<Summary>)>,
    /// Each policy's completed jobs' JCTs over every seed, in seconds, sorted (for the plot).
    pub jcts: Vec<Vec<f64>>,
}

/// Every metric of the CSV, by its `summary.json` name (`Summary::metric`); each cell is the
/// mean over the seeds, left empty where the runs have no value (goodput without deadlines).
const COLUMNS: [&str; 18] = [
    "jct_mean_s",
    "jct_p50_s",
    "jct_p95_s",
    "jct_p99_s",
    "slowdown_mean",
    "fairness_jain",
    "makespan_s",
    "lower_bound_s",
    "makespan_over_lower_bound",
    "queue_wait_mean_s",
    "utilization_mean",
    "gpu_utilization_mean",
    "warm_cache_hit_rate",
    "cold_starts",
    "deadline_misses",
    "goodput",
    "retries",
    "jobs_completed",
];

/// The columns `render` shows: header, metric, format.
const SHOWN: [(&str, &str, Shown); 8] = [
    ("jct mean s", "jct_mean_s", Shown::Seconds(1)),
    ("p95 s", "jct_p95_s", Shown::Seconds(1)),
    ("p99 s", "jct_p99_s", Shown::Seconds(1)),
    ("slowdown", "slowdown_mean", Shown::Seconds(2)),
    ("fairness", "fairness_jain", Shown::Seconds(3)),
    ("warm hits", "warm_cache_hit_rate", Shown::Percent),
    ("span/LB", "makespan_over_lower_bound", Shown::Seconds(3)),
    ("done", "jobs_completed", Shown::Count),
];

#[derive(Clone, Copy)]
enum Shown {
    /// With this many decimals.
    Seconds(usize),
    Percent,
    /// A mean of counts: whole numbers as such, a fraction (seeds that differ) with one decimal.
    Count,
}

impl Shown {
    fn format(self, x: f64) -> String {
        match self {
            Shown::Seconds(decimals) => format!("{x:.decimals$}"),
            Shown::Percent => format!("{:.1}%", x * 100.0),
            Shown::Count if x.fract() == 0.0 => format!("{x:.0}"),
            Shown::Count => format!("{x:.1}"),
        }
    }
}

/// A metric's mean over runs: NaN when a run lacks it.
fn mean(runs: &[Summary], name: &str) -> f64 {
    if runs.is_empty() {
        0.0
    } else {
        runs.iter()
            .map(|s| s.metric(name).unwrap_or(f64::NAN))
            .sum::<f64>()
            / runs.len() as f64
    }
}

impl Table {
    /// The table for a terminal, in under 100 columns: the metrics users weigh policies on
    /// (those the quality gate watches). The CSV has every column.
    pub fn render(&self) -> String {
        let mut cells = vec![
            std::iter::once("policy")
                .chain(SHOWN.iter().map(|c| c.0))
                .map(String::from)
                .collect::<Vec<_>>(),
        ];
        for (p, runs) in &self.rows {
            let row = SHOWN
                .iter()
                .map(|&(_, name, shown)| shown.format(mean(runs, name)));
            cells.push(std::iter::once(p.name().to_string()).chain(row).collect());
        }
        let widths: Vec<usize> = (0..=SHOWN.len())
            .map(|c| cells.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &cells {
            let _ = write!(out, "{:<w$}", row[0], w = widths[0]);
            for (cell, w) in row.iter().zip(&widths).skip(1) {
                let _ = write!(out, "  {cell:>w$}");
            }
            out.push('\n');
        }
        let seeds = self.rows.first().map_or(0, |r| r.1.len());
        let plural = if seeds == 1 { "" } else { "s" };
        let _ = writeln!(out, "(means over {seeds} seed{plural})");
        out
    }

    /// Every column, one row per policy: the means over the seeds.
    /// Every policy's JCT CDF over all its seeds, one line each.
    pub fn plot(&self) -> Result<String, crate::plot::PlotError> {
        let sets: Vec<(&str, Vec<f64>)> = self
            .rows
            .iter()
            .zip(&self.jcts)
            .map(|((p, _), j)| (p.name(), j.clone()))
            .collect();
        crate::plot::jct_cdf_svg(&sets)
    }

    pub fn csv(&self) -> String {
        let mut out = format!("policy,{}\n", COLUMNS.join(","));
        for (p, runs) in &self.rows {
            let cells: Vec<String> = COLUMNS
                .iter()
                .map(|&name| {
                    let x = mean(runs, name);
                    if x.is_nan() {
                        String::new()
                    } else {
                        format!("{x:.4}")
                    }
                })
                .collect();
            out += &format!("{},{}\n", p.name(), cells.join(","));
        }
        out
    }
}

pub fn compare(
    sc: &Scenario,
    policies: &[Strategy],
    seeds: RangeInclusive<u64>,
    engine: Engine,
) -> Result<Table> {
    let mut rows = Vec::new();
    let mut all_jcts = Vec::new();
    for &p in policies {
        let mut runs = Vec::new();
        let mut jcts = Vec::new();
        for seed in seeds.clone() {
            let run = Run {
                scenario: sc,
                seed,
                strategy: p,
                engine,
                check_invariants: false,
                explain: None,
            }
            .execute()?;
            jcts.extend(crate::plot::completed_jcts_s(&run.recorder));
            runs.push(run.summary);
        }
        jcts.sort_by(f64::total_cmp);
        rows.push((p, runs));
        all_jcts.push(jcts);
    }
    Ok(Table {
        rows,
        jcts: all_jcts,
    })
}

pub struct SweepReport {
    pub runs: u64,
    /// Seeds that failed, with what failed, in seed order.
    pub failures: Vec<(u64, Vec<String>)>,
}

impl SweepReport {
    pub fn line(&self) -> String {
        format!(
            "sweep: {} passed, {} failed",
            self.runs - self.failures.len() as u64,
            self.failures.len()
        )
    }
}

/// Runs every seed with invariant checks after every step, on `threads` threads.
pub fn sweep(
    sc: &Scenario,
    seeds: RangeInclusive<u64>,
    strategy: Strategy,
    engine: Engine,
    threads: usize,
) -> Result<SweepReport> {
    let seeds: Vec<u64> = seeds.collect();
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("sweep counter");
                        *n += 1;
                        *n - 1
                    };
                    let Some(&seed) = seeds.get(i) else { break };
                    let outcome = Run {
                        scenario: sc,
                        seed,
                        strategy,
                        engine,
                        check_invariants: true,
                        explain: None,
                    }
                    .execute()
                    .map(|r| r.check_failures())
                    .unwrap_or_else(|e| vec![format!("{e:#}")]);
                    results.lock().expect("sweep results").push((seed, outcome));
                }
            });
        }
    });
    let mut failures: Vec<(u64, Vec<String>)> = results
        .into_inner()
        .expect("sweep results")
        .into_iter()
        .filter(|r| !r.1.is_empty())
        .collect();
    failures.sort_by_key(|f| f.0);
    Ok(SweepReport {
        runs: seeds.len() as u64,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::Shown;

    #[test]
    fn a_mean_count_shows_as_a_whole_number_unless_the_seeds_differ() {
        assert_eq!(Shown::Count.format(120.0), "120");
        assert_eq!(Shown::Count.format(209.0 / 3.0), "69.7");
        assert_eq!(Shown::Percent.format(0.9234), "92.3%");
        assert_eq!(Shown::Seconds(2).format(0.017), "0.02");
    }
}
