//! The SPLAI score and its explanation.
//!
//! `score = capability_match + model_warm_cache + locality_score + packing - queue_penalty - latency_prediction`,
//! each term in [0, 1] and multiplied by its weight:
//!
//! - `capability_match`: how well the worker's special hardware fits. A GPU task scores
//!   `gpus requested / gpus on the worker` (tight fits keep large GPU nodes free for large tasks);
//!   a CPU task scores 1 on a CPU-only worker and 0 on a GPU worker, so GPUs are not spent on it.
//! - `model_warm_cache`: 1 when the task's model is already loaded on the worker. A cold load
//!   scores 0.25 when the worker's cache has room (as far as its heartbeats have shown) or would
//!   evict a model nobody waits for, falling towards 0 as the evicted model has more queued tasks.
//! - `locality_score`: 1 when the worker is in the task's preferred locality.
//! - `packing`: while tasks without a model that ask for more cpu or GPUs than this one wait for
//!   room (every suitable worker was too full for them), the worker's largest share of cpu,
//!   memory or GPUs in use once this task is placed. Filling busy workers first keeps whole workers free for the larger tasks, where
//!   spreading would strand capacity none of them can use (fragmentation). Otherwise 0: with
//!   no larger task waiting, spreading costs nothing and keeps more workers' speed in view, and
//!   inference tasks follow warm caches and queues, which packing would only disturb.
//! - `queue_penalty`: `depth / (depth + queueHalfDepth)` over the worker's active attempts.
//! - `latency_prediction`: `p / (p + latencyHalfMs)`, where `p` is the predicted run time: the
//!   task's duration hint divided by the worker's observed speed, plus a model load when cold.

use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Weights {
    pub capability_match: f64,
    pub model_warm_cache: f64,
    pub locality_score: f64,
    pub packing: f64,
    pub queue_penalty: f64,
    pub latency_prediction: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            capability_match: 1.0,
            model_warm_cache: 1.0,
            locality_score: 0.5,
            packing: 1.0,
            queue_penalty: 0.5,
            latency_prediction: 1.0,
        }
    }
}

/// The unweighted terms of one worker's score for one task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreTerms {
    pub capability_match: f64,
    pub model_warm_cache: f64,
    pub locality_score: f64,
    /// Absent from explanations written before the term existed.
    #[serde(default)]
    pub packing: f64,
    pub queue_penalty: f64,
    pub latency_prediction: f64,
}

impl ScoreTerms {
    pub fn total(&self, w: &Weights) -> f64 {
        w.capability_match * self.capability_match
            + w.model_warm_cache * self.model_warm_cache
            + w.locality_score * self.locality_score
            + w.packing * self.packing
            - w.queue_penalty * self.queue_penalty
            - w.latency_prediction * self.latency_prediction
    }

    /// Each term's signed, weighted contribution, named as in the formula.
    pub fn contributions(&self, w: &Weights) -> [(Term, f64); 6] {
        [
            (
                Term::CapabilityMatch,
                w.capability_match * self.capability_match,
            ),
            (
                Term::ModelWarmCache,
                w.model_warm_cache * self.model_warm_cache,
            ),
            (Term::LocalityScore, w.locality_score * self.locality_score),
            (Term::Packing, w.packing * self.packing),
            (Term::QueuePenalty, -w.queue_penalty * self.queue_penalty),
            (
                Term::LatencyPrediction,
                -w.latency_prediction * self.latency_prediction,
            ),
        ]
    }
}

/// A term of the score, named as in the formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    CapabilityMatch,
    ModelWarmCache,
    LocalityScore,
    Packing,
    QueuePenalty,
    LatencyPrediction,
    /// Equal scores: the tie is broken by a stable hash of the worker names, which spreads
    /// equal work over equal workers and does not depend on registration order.
    TieBreak,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Term::CapabilityMatch => "capability_match",
            Term::ModelWarmCache => "model_warm_cache",
            Term::LocalityScore => "locality_score",
            Term::Packing => "packing",
            Term::QueuePenalty => "queue_penalty",
            Term::LatencyPrediction => "latency_prediction",
            Term::TieBreak => "tie-break",
        })
    }
}

/// How work is ordered and a worker chosen. `splai` is the scored policy. The simple baselines
/// (`least-loaded`, `round-robin`, `random`, `first-fit`) and the models of peer schedulers
/// (see `crate::peers`) are there to compare with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    Splai,
    LeastLoaded,
    RoundRobin,
    /// Uniform over feasible workers, seeded: the same seed and inputs give the same choices.
    Random,
    FirstFit,
    /// Kubernetes' default scheduler profile (`crate::peers::kube`).
    KubeScheduler,
    /// Volcano's default `volcano-scheduler.conf` (`crate::peers::volcano`).
    Volcano,
    /// Kueue quota admission in front of kube-scheduler (`crate::peers::kueue`).
    Kueue,
    /// The Gateway API Inference Extension endpoint picker, as llm-d deploys it
    /// (`crate::peers::llmd`).
    #[serde(rename = "llm-d")]
    LlmD,
    /// Ray Serve's multiplexed-model routing (`crate::peers::ray_serve`).
    RayServe,
    /// Heterogeneous Earliest Finish Time list scheduling (`crate::peers::heft`).
    Heft,
    /// Earliest deadline first, as in the ERDOS scheduling simulator (`crate::peers::deadline`).
    Edf,
    /// Least slack first, as in the ERDOS scheduling simulator (`crate::peers::deadline`).
    Lsf,
}

impl Strategy {
    pub const ALL: [Strategy; 13] = [
        Strategy::Splai,
        Strategy::LeastLoaded,
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::FirstFit,
        Strategy::KubeScheduler,
        Strategy::Volcano,
        Strategy::Kueue,
        Strategy::LlmD,
        Strategy::RayServe,
        Strategy::Heft,
        Strategy::Edf,
        Strategy::Lsf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Splai => "splai",
            Strategy::LeastLoaded => "least-loaded",
            Strategy::RoundRobin => "round-robin",
            Strategy::Random => "random",
            Strategy::FirstFit => "first-fit",
            Strategy::KubeScheduler => "kube-scheduler",
            Strategy::Volcano => "volcano",
            Strategy::Kueue => "kueue",
            Strategy::LlmD => "llm-d",
            Strategy::RayServe => "ray-serve",
            Strategy::Heft => "heft",
            Strategy::Edf => "edf",
            Strategy::Lsf => "lsf",
        }
    }

    /// Whether this is a model of a peer scheduler, which brings its own queue order.
    pub fn is_peer(self) -> bool {
        !matches!(
            self,
            Strategy::Splai
                | Strategy::LeastLoaded
                | Strategy::RoundRobin
                | Strategy::Random
                | Strategy::FirstFit
        )
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Strategy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Strategy::ALL.iter().map(|p| p.name()).collect();
                format!("unknown policy `{s}`: choose one of {}", names.join(", "))
            })
    }
}

/// Why a task went to its worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub strategy: Strategy,
    pub worker: Arc<str>,
    pub score: f64,
    pub terms: ScoreTerms,
    /// Predicted run time on this worker, including a model load when cold.
    pub predicted_ms: u64,
    pub cold_start: bool,
    /// Workers scored for this decision.
    pub candidates: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_up: Option<RunnerUp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerUp {
    pub worker: Arc<str>,
    pub score: f64,
    pub terms: ScoreTerms,
    /// The term on which the runner-up lost the most.
    pub lost_on: Term,
    /// How much that term cost it, weighted.
    pub lost_by: f64,
}

impl RunnerUp {
    pub(crate) fn new(
        worker: Arc<str>,
        score: f64,
        terms: ScoreTerms,
        winner: &ScoreTerms,
        w: &Weights,
    ) -> Self {
        let ours = terms.contributions(w);
        let theirs = winner.contributions(w);
        let (lost_on, lost_by) = ours
            .iter()
            .zip(theirs.iter())
            .map(|(&(name, a), &(_, b))| (name, b - a))
            .fold((Term::TieBreak, 0.0), |best, cur| {
                if cur.1 > best.1 + 1e-12 { cur } else { best }
            });
        RunnerUp {
            worker,
            score,
            terms,
            lost_on,
            lost_by,
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.terms;
        write!(
            f,
            "{} chose {} (score {:.3}: capability_match {:.2}, model_warm_cache {:.2}, locality_score {:.2}, \
             packing {:.2}, queue_penalty {:.2}, latency_prediction {:.2}; predicted {} ms{}; {} candidates)",
            self.strategy.name(),
            self.worker,
            self.score,
            t.capability_match,
            t.model_warm_cache,
            t.locality_score,
            t.packing,
            t.queue_penalty,
            t.latency_prediction,
            self.predicted_ms,
            if self.cold_start {
                ", cold model load"
            } else {
                ""
            },
            self.candidates,
        )?;
        if let Some(r) = &self.runner_up {
            write!(
                f,
                "; runner-up {} scored {:.3}, losing {:.3} on {}",
                r.worker, r.score, r.lost_by, r.lost_on
            )?;
        }
        Ok(())
    }
}
