//! The quality gate: quality metrics of committed scenarios against a committed baseline.
//!
//! A baseline lists, per scenario, the seeds and policy to run and each metric's value with its
//! direction and tolerance. A metric regresses when it is worse than the baseline by more than
//! the tolerance (relative, with a small absolute floor for values near zero).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use splai_scheduler::Strategy;

use crate::scenario::Scenario;
use crate::summary::Summary;
use crate::{Engine, Run};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub scenarios: BTreeMap<String, ScenarioBaseline>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioBaseline {
    pub seeds: Vec<u64>,
    pub policy: String,
    pub metrics: BTreeMap<String, Metric>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub value: f64,
    /// `lower` when smaller is better, `higher` when larger is better, `zero` when it must be 0.
    pub better: Better,
    /// Allowed relative worsening, e.g. 0.05 for 5%.
    pub tolerance: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    Zero,
}

/// The metrics the gate watches, and how.
const WATCHED: [(&str, Better, f64); 8] = [
    ("jct_mean_s", Better::Lower, 0.05),
    ("jct_p95_s", Better::Lower, 0.10),
    ("makespan_s", Better::Lower, 0.05),
    ("queue_wait_mean_s", Better::Lower, 0.10),
    ("warm_cache_hit_rate", Better::Higher, 0.02),
    ("jobs_completed", Better::Higher, 0.0),
    ("tasks_lost", Better::Zero, 0.0),
    ("duplicate_completions", Better::Zero, 0.0),
];

fn value(s: &[Summary], name: &str) -> f64 {
    let v: Vec<f64> = s
        .iter()
        .map(|s| match name {
            "jct_mean_s" => s.jct_mean_s,
            "jct_p95_s" => s.jct_p95_s,
            "makespan_s" => s.makespan_s,
            "queue_wait_mean_s" => s.queue_wait_mean_s,
            "warm_cache_hit_rate" => s.warm_cache_hit_rate,
            "jobs_completed" => s.jobs_completed as f64,
            "tasks_lost" => s.tasks_lost as f64,
            "duplicate_completions" => s.duplicate_completions as f64,
            _ => f64::NAN,
        })
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

const GATE_SEEDS: [u64; 3] = [1, 2, 3];

fn runs(sc: &Scenario, seeds: &[u64], policy: Strategy) -> Result<Vec<Summary>> {
    seeds
        .iter()
        .map(|&seed| {
            Ok(Run {
                scenario: sc,
                seed,
                strategy: policy,
                engine: Engine::Des,
                check_invariants: false,
                explain: None,
            }
            .execute()?
            .summary)
        })
        .collect()
}

/// Measures the scenarios to make a new baseline.
pub fn measure(scenarios: &[(String, Scenario)]) -> Result<Baseline> {
    let mut out = BTreeMap::new();
    for (file, sc) in scenarios {
        let s = runs(sc, &GATE_SEEDS, Strategy::Splai)?;
        let metrics = WATCHED
            .iter()
            .map(|&(name, better, tolerance)| {
                (
                    name.to_string(),
                    Metric {
                        value: (value(&s, name) * 1000.0).round() / 1000.0,
                        better,
                        tolerance,
                    },
                )
            })
            .collect();
        out.insert(
            file.clone(),
            ScenarioBaseline {
                seeds: GATE_SEEDS.to_vec(),
                policy: "splai".into(),
                metrics,
            },
        );
    }
    Ok(Baseline { scenarios: out })
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read baseline {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a baseline file (make one with --update)",
                path.display()
            )
        })
    }
}

pub struct Report {
    pub lines: Vec<(String, String, f64, f64, bool)>,
}

impl Report {
    pub fn regressions(&self) -> usize {
        self.lines.iter().filter(|l| l.4).count()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (sc, m, base, now, bad) in &self.lines {
            let _ = writeln!(
                out,
                "{} {sc} {m}: baseline {base}, now {now}",
                if *bad { "REGRESSED" } else { "ok       " }
            );
        }
        let _ = writeln!(
            out,
            "regress: {} passed, {} failed",
            self.lines.len() - self.regressions(),
            self.regressions()
        );
        out
    }
}

pub fn check(scenarios: &[(String, Scenario)], baseline: &Baseline) -> Result<Report> {
    let mut lines = Vec::new();
    for (file, sc) in scenarios {
        let b = baseline
            .scenarios
            .get(file)
            .with_context(|| format!("the baseline has no entry for {file}: run `splai-sim regress ... --update` and commit it"))?;
        let policy: Strategy = b.policy.parse().map_err(anyhow::Error::msg)?;
        let s = runs(sc, &b.seeds, policy)?;
        for (name, m) in &b.metrics {
            let now = (value(&s, name) * 1000.0).round() / 1000.0;
            let slack = (m.value.abs() * m.tolerance).max(1e-9);
            let bad = match m.better {
                Better::Lower => now > m.value + slack,
                Better::Higher => now < m.value - slack,
                Better::Zero => now != 0.0,
            };
            lines.push((file.clone(), name.clone(), m.value, now, bad));
        }
    }
    Ok(Report { lines })
}
