//! The quality gate: quality metrics of committed scenarios against a committed baseline, stated
//! targets, and the peer policies.
//!
//! Three kinds of check, all from this file, never from the baseline file alone:
//! - **Regression**: each watched metric (`WATCHED`) of the SPLAI policy against its value in the
//!   baseline, worse by no more than its tolerance. The simulator is deterministic, so the same
//!   code gives the same values to the digit; tolerances only let a deliberate change of
//!   behaviour move a metric a little without rewriting the baseline. A watched metric missing
//!   from the baseline, or a value that is not a number, fails.
//! - **Targets** (`TARGETS`): floors and ceilings stated in BENCHMARKS.md, checked as absolute
//!   values, so a run cannot pass by being close to a poor baseline.
//! - **Peers**: on trace scenarios (those the importers write, named `alibaba-*`), every model of
//!   a peer scheduler runs on the same seeds. SPLAI fails when its mean or p95 JCT is worse
//!   than the best peer's by more than `PEER_TOLERANCE` (1% and 1.5%), or its warm-cache hit
//!   rate is below the best peer's.
//!
//! `--update` writes a new baseline only when the current run passes against the old one, unless
//! the regressions are accepted by name (see `update`), so a baseline never ratchets down
//! silently.

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

/// A metric's value in the baseline. The direction and tolerance are written for the reader;
/// the gate takes both from `WATCHED`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub value: f64,
    pub better: Better,
    pub tolerance: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    Zero,
}

/// The metrics the gate watches: name, direction, allowed relative worsening. Means move least
/// between deliberate changes, tail percentiles and small waits more.
pub const WATCHED: [(&str, Better, f64); 11] = [
    ("jct_mean_s", Better::Lower, 0.01),
    ("jct_p95_s", Better::Lower, 0.02),
    ("jct_p99_s", Better::Lower, 0.03),
    ("slowdown_mean", Better::Lower, 0.01),
    ("makespan_s", Better::Lower, 0.01),
    ("queue_wait_mean_s", Better::Lower, 0.05),
    ("fairness_jain", Better::Higher, 0.01),
    ("warm_cache_hit_rate", Better::Higher, 0.005),
    ("jobs_completed", Better::Higher, 0.0),
    ("tasks_lost", Better::Zero, 0.0),
    ("duplicate_completions", Better::Zero, 0.0),
];

/// Stated targets (BENCHMARKS.md): scenario name, metric, direction, bound.
pub const TARGETS: [(&str, &str, Better, f64); 2] = [
    ("alibaba-genai", "warm_cache_hit_rate", Better::Higher, 0.90),
    (
        "alibaba-v2018-dag",
        "makespan_over_lower_bound",
        Better::Lower,
        1.15,
    ),
];

/// How far SPLAI may trail the best peer on mean JCT (1%) and on p95 JCT (1.5%). A p95 over
/// 1,000 jobs falls on a handful of long jobs and moves with changes that have nothing to do
/// with the tail: on alibaba-v2018-dag, choosing when to pack (while larger tasks are queued, or
/// only once they have found no room) moved SPLAI's p95 from 875.9 s to 880.4 s (0.5%) and its
/// mean by 0.02%. SPLAI trails lsf's p95 there by 1.2% (BENCHMARKS.md says why).
pub const PEER_TOLERANCE: (f64, f64) = (0.01, 0.015);

const GATE_SEEDS: [u64; 3] = [1, 2, 3];

/// The mean of a metric over runs; NaN when a run lacks it.
fn value(s: &[Summary], name: &str) -> f64 {
    let v: Vec<f64> = s
        .iter()
        .map(|s| s.metric(name).unwrap_or(f64::NAN))
        .collect();
    round(v.iter().sum::<f64>() / v.len().max(1) as f64)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Whether `now` is worse than `reference` by more than `tolerance` (relative, with a small
/// absolute floor for values near zero). Not a number is always worse.
fn worse(better: Better, reference: f64, now: f64, tolerance: f64) -> bool {
    if !now.is_finite() || !reference.is_finite() {
        return true;
    }
    let slack = (reference.abs() * tolerance).max(1e-9);
    match better {
        Better::Lower => now > reference + slack,
        Better::Higher => now < reference - slack,
        Better::Zero => now != 0.0,
    }
}

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

/// Whether the gate holds SPLAI to the peers on this scenario: the importers name trace
/// scenarios after their trace.
pub fn is_trace_scenario(sc: &Scenario) -> bool {
    sc.name.starts_with("alibaba-")
}

/// Measures the scenarios to make a new baseline.
pub fn measure(scenarios: &[(String, Scenario)]) -> Result<Baseline> {
    let mut out = BTreeMap::new();
    for (file, sc) in scenarios {
        let s = runs(sc, &GATE_SEEDS, Strategy::Splai)?;
        let metrics = WATCHED
            .iter()
            .map(|&(name, better, tolerance)| {
                let value = value(&s, name);
                (
                    name.to_string(),
                    Metric {
                        value,
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

/// One check of the gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub scenario: String,
    /// What was checked: the metric, with `@target` or `@best-peer` where it is not the
    /// baseline.
    pub check: String,
    /// What it was held to, in words.
    pub against: String,
    pub now: f64,
    pub failed: bool,
    /// The check failed only because the baseline lacks the metric (a newly watched one): the
    /// one failure `--update` fixes without being told to accept it.
    pub missing: bool,
}

pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    pub fn regressions(&self) -> usize {
        self.lines.iter().filter(|l| l.failed).count()
    }

    /// The failed checks as `scenario:check`, the names `--accept` takes, but for metrics the
    /// baseline does not have yet.
    pub fn failed_names(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.failed && !l.missing)
            .map(|l| format!("{}:{}", l.scenario, l.check))
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let _ = writeln!(
                out,
                "{} {} {}: {}, now {}",
                if l.failed { "REGRESSED" } else { "ok       " },
                l.scenario,
                l.check,
                l.against,
                l.now
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
        let mut line = |check: String, against: String, now: f64, failed: bool, missing: bool| {
            lines.push(Line {
                scenario: file.clone(),
                check,
                against,
                now,
                failed,
                missing,
            })
        };
        for &(name, better, tolerance) in &WATCHED {
            let now = value(&s, name);
            match b.metrics.get(name) {
                Some(m) => line(
                    name.into(),
                    format!("baseline {}", m.value),
                    now,
                    worse(better, m.value, now, tolerance),
                    false,
                ),
                None => line(
                    name.into(),
                    "missing from the baseline (run --update and commit it)".into(),
                    now,
                    true,
                    true,
                ),
            }
        }
        for &(scenario, name, better, bound) in &TARGETS {
            if sc.name == scenario {
                let now = value(&s, name);
                line(
                    format!("{name}@target"),
                    format!(
                        "{} {bound}",
                        if better == Better::Lower {
                            "at most"
                        } else {
                            "at least"
                        }
                    ),
                    now,
                    worse(better, bound, now, 0.0),
                    false,
                );
            }
        }
        if is_trace_scenario(sc) {
            for (check, against, now, failed) in against_peers(sc, &b.seeds, &s)? {
                line(check, against, now, failed, false);
            }
        }
    }
    Ok(Report { lines })
}

/// SPLAI's mean and p95 JCT and warm-cache hit rate against the best peer's on the same seeds.
fn against_peers(
    sc: &Scenario,
    seeds: &[u64],
    splai: &[Summary],
) -> Result<Vec<(String, String, f64, bool)>> {
    let mut peers = Vec::new();
    for p in Strategy::ALL.into_iter().filter(|p| p.is_peer()) {
        peers.push((p, runs(sc, seeds, p)?));
    }
    let mut out = Vec::new();
    for (name, better, tolerance) in [
        ("jct_mean_s", Better::Lower, PEER_TOLERANCE.0),
        ("jct_p95_s", Better::Lower, PEER_TOLERANCE.1),
        ("warm_cache_hit_rate", Better::Higher, 0.0),
    ] {
        let best = peers
            .iter()
            .map(|(p, s)| (*p, value(s, name)))
            .reduce(|a, b| {
                let b_better = match better {
                    Better::Higher => b.1 > a.1,
                    _ => b.1 < a.1,
                };
                if b_better { b } else { a }
            });
        let Some((peer, reference)) = best else {
            continue;
        };
        // Scenarios without inference have no hit rate to hold anyone to.
        if name == "warm_cache_hit_rate" && reference == 0.0 {
            continue;
        }
        let now = value(splai, name);
        out.push((
            format!("{name}@best-peer"),
            format!("{} {reference}", peer.name()),
            now,
            worse(better, reference, now, tolerance),
        ));
    }
    Ok(out)
}

/// The new baseline, refused when the current run fails checks of the old one that `accept`
/// does not name (`scenario:check`, as the report prints them).
pub fn update(
    scenarios: &[(String, Scenario)],
    old: Option<&Baseline>,
    accept: &[String],
) -> Result<Baseline> {
    if let Some(old) = old {
        let known: Vec<(String, Scenario)> = scenarios
            .iter()
            .filter(|(file, _)| old.scenarios.contains_key(file))
            .cloned()
            .collect();
        let report = check(&known, old)?;
        let refused: Vec<String> = report
            .failed_names()
            .into_iter()
            .filter(|n| !accept.contains(n))
            .collect();
        if !refused.is_empty() {
            anyhow::bail!(
                "not updating the baseline: the current run fails {} check(s) of the committed one:\n{}\n\
                 Fix the cause, or accept each deliberately with --accept NAME (repeatable) and say why in the commit.",
                refused.len(),
                refused.join("\n")
            );
        }
    }
    measure(scenarios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_is_not_a_number_always_fails() {
        assert!(worse(Better::Lower, 10.0, f64::NAN, 1.0));
        assert!(worse(Better::Higher, f64::NAN, 1.0, 1.0));
        assert!(!worse(Better::Lower, 10.0, 10.09, 0.01));
        assert!(worse(Better::Lower, 10.0, 10.2, 0.01));
        assert!(worse(Better::Higher, 0.9, 0.898, 0.0));
    }

    #[test]
    fn every_target_names_a_committed_scenario_and_every_trace_scenario_is_in_the_baseline() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let text = std::fs::read_to_string(dir.join("baseline.json")).unwrap();
        let baseline: Baseline = serde_json::from_str(&text).unwrap();
        let names: Vec<String> = baseline
            .scenarios
            .keys()
            .map(|file| {
                Scenario::load(&dir.join("..").join(file))
                    .unwrap_or_else(|e| panic!("{e}"))
                    .name
            })
            .collect();
        for (scenario, ..) in TARGETS {
            assert!(
                names.iter().any(|n| n == scenario),
                "{scenario} is not committed"
            );
        }
        for trace in ["alibaba-v2018-dag", "alibaba-genai", "alibaba-mixed"] {
            assert!(names.iter().any(|n| n == trace), "{trace} left the gate");
        }
    }

    #[test]
    fn every_watched_and_target_metric_is_a_metric_of_the_summary() {
        let s = Summary::default();
        for (name, _, _) in WATCHED {
            assert!(s.metric(name).is_some(), "{name}");
        }
        for (_, name, _, _) in TARGETS {
            assert!(s.metric(name).is_some(), "{name}");
        }
        assert_eq!(s.metric("jct_mean"), None, "a misspelt name is no metric");
        assert!(value(&[s], "jct_mean").is_nan());
    }
}
