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
}

const COLUMNS: [&str; 9] = [
    "policy",
    "jct_mean_s",
    "jct_p95_s",
    "makespan_s",
    "queue_wait_mean_s",
    "utilization_mean",
    "warm_cache_hit_rate",
    "cold_starts",
    "jobs_completed",
];

fn mean(runs: &[Summary], f: impl Fn(&Summary) -> f64) -> f64 {
    if runs.is_empty() {
        0.0
    } else {
        runs.iter().map(f).sum::<f64>() / runs.len() as f64
    }
}

impl Table {
    fn values(runs: &[Summary]) -> [f64; 8] {
        [
            mean(runs, |s| s.jct_mean_s),
            mean(runs, |s| s.jct_p95_s),
            mean(runs, |s| s.makespan_s),
            mean(runs, |s| s.queue_wait_mean_s),
            mean(runs, |s| s.utilization_mean),
            mean(runs, |s| s.warm_cache_hit_rate),
            mean(runs, |s| s.cold_starts as f64),
            mean(runs, |s| s.jobs_completed as f64),
        ]
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<14}{}",
            COLUMNS[0],
            COLUMNS[1..]
                .iter()
                .map(|c| format!("{c:>21}"))
                .collect::<String>()
        );
        for (p, runs) in &self.rows {
            let v = Self::values(runs);
            let _ = writeln!(
                out,
                "{:<14}{}",
                p.name(),
                v.iter().map(|x| format!("{x:>21.3}")).collect::<String>()
            );
        }
        let seeds = self.rows.first().map_or(0, |r| r.1.len());
        let _ = writeln!(out, "(means over {seeds} seeds)");
        out
    }

    pub fn csv(&self) -> String {
        let mut out = COLUMNS.join(",") + "\n";
        for (p, runs) in &self.rows {
            let v = Self::values(runs);
            out += &format!(
                "{},{}\n",
                p.name(),
                v.iter()
                    .map(|x| format!("{x:.4}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
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
    for &p in policies {
        let mut runs = Vec::new();
        for seed in seeds.clone() {
            runs.push(
                Run {
                    scenario: sc,
                    seed,
                    strategy: p,
                    engine,
                    check_invariants: false,
                    explain: None,
                }
                .execute()?
                .summary,
            );
        }
        rows.push((p, runs));
    }
    Ok(Table { rows })
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
