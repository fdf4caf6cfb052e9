//! Turns a scenario's workload into concrete job arrivals, deterministically from the seed.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;
use splai_scheduler::api::{JobSpec, TaskKind};

use crate::scenario::Scenario;

/// One job as it will arrive.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at_ms: u64,
    pub key: String,
    pub spec: JobSpec,
    /// How long each task runs at speed 1, by task id.
    pub durations_ms: BTreeMap<String, u64>,
}

/// Uniform in `0..n`.
pub fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    if n == 0 { 0 } else { rng.next_u64() % n }
}

/// Uniform in [0, 1).
pub fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Every job of the scenario, sorted by arrival time then name.
pub fn arrivals(sc: &Scenario, rng: &mut ChaCha8Rng) -> Vec<Arrival> {
    let mut out: Vec<Arrival> = sc
        .workload
        .jobs
        .iter()
        .map(|j| Arrival {
            at_ms: j.at_ms,
            key: j.name.clone(),
            spec: j.spec.clone(),
            durations_ms: j.durations_ms.clone(),
        })
        .collect();
    for g in &sc.workload.generators {
        let total_weight: u64 = g.models.iter().map(|m| u64::from(m.weight)).sum();
        for i in 0..g.count {
            let slot = g.start_ms + u64::from(i) * g.interval_ms;
            let at = if g.jitter_ms > 0 {
                (slot + below(rng, 2 * g.jitter_ms + 1)).saturating_sub(g.jitter_ms)
            } else {
                slot
            };
            let mut spec = g.template.clone();
            if !g.tenants.is_empty() {
                spec.tenant = g.tenants[i as usize % g.tenants.len()].clone();
            }
            if !g.priorities.is_empty() {
                spec.priority = g.priorities[i as usize % g.priorities.len()];
            }
            if total_weight > 0 {
                let mut pick = || {
                    let mut x = below(rng, total_weight);
                    for m in &g.models {
                        if x < u64::from(m.weight) {
                            return m.model.clone();
                        }
                        x -= u64::from(m.weight);
                    }
                    g.models[0].model.clone()
                };
                for t in spec
                    .tasks
                    .iter_mut()
                    .filter(|t| t.kind == TaskKind::Inference)
                {
                    t.model = Some(pick());
                }
                if let Some(p) = spec.plan.as_mut()
                    && p.template.kind == TaskKind::Inference
                {
                    p.template.model = Some(pick());
                }
            }
            out.push(Arrival {
                at_ms: at,
                key: format!("{}-{i}", g.name),
                spec,
                durations_ms: BTreeMap::new(),
            });
        }
    }
    out.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.key.cmp(&b.key)));
    out
}
