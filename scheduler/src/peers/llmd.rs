//! The Gateway API Inference Extension's endpoint picker (EPP), as llm-d deploys it.
//!
//! Modelled on kubernetes-sigs/gateway-api-inference-extension, the default
//! `EndpointPickerConfig` of its InferencePool chart: one `default` profile with
//! `queue-scorer` (weight 1), `kv-cache-scorer` (weight 1), `prefix-cache-scorer` (weight 3)
//! and `max-score-picker`. The scorers, each in [0, 1]
//! (`pkg/epp/scheduling/framework/plugins/scorer/`):
//! - queue (`queue.go`): `(max - q) / (max - min)` over the candidates' waiting requests,
//!   1 for all when they are equal. Here: the worker's attempts in flight.
//! - KV cache (`kvcache_utilization.go`): `1 - KVCacheUsagePercent`. Here: the share of the
//!   worker's GPUs (memory on a CPU worker) not in use.
//! - prefix cache (`multi/prefix/plugin.go`): the share of the request's prefix blocks the
//!   server is believed to hold. Here a request's reusable prefix is its model (or LoRA
//!   adapter): 1 when the worker has it loaded, else 0 — the model/LoRA affinity of the EPP.
//! - pick (`picker/max_score_picker.go`): the highest weighted sum, ties at random.
//!
//! The EPP routes inference requests only; every other task is placed by the kube-scheduler
//! model ([`crate::peers::kube`]), as it would be in the same cluster.
//!
//! Left out: the saturation detector and flow control (the core only offers workers with
//! room), prefill/decode disaggregation, and token-level prefix matching (a request either
//! shares its model's prefix or not).

use rand_chacha::ChaCha8Rng;

use super::{Node, argmax_random_tie};

const WEIGHT_QUEUE: f64 = 1.0;
const WEIGHT_KV_CACHE: f64 = 1.0;
const WEIGHT_PREFIX: f64 = 3.0;

fn kv_free(n: &Node) -> f64 {
    if n.gpus > 0 {
        f64::from(n.free_gpus) / f64::from(n.gpus)
    } else if n.mem > 0 {
        f64::from(n.free_mem) / f64::from(n.mem)
    } else {
        0.0
    }
}

pub(crate) fn scores(nodes: &[Node]) -> Vec<f64> {
    let max = nodes.iter().map(|n| n.depth).max().unwrap_or(0);
    let min = nodes.iter().map(|n| n.depth).min().unwrap_or(0);
    nodes
        .iter()
        .map(|n| {
            let queue = if max == min {
                1.0
            } else {
                f64::from(max - n.depth) / f64::from(max - min)
            };
            let prefix = if n.warm { 1.0 } else { 0.0 };
            WEIGHT_QUEUE * queue + WEIGHT_KV_CACHE * kv_free(n) + WEIGHT_PREFIX * prefix
        })
        .collect()
}

/// The endpoint the EPP picks for an inference request.
pub(crate) fn pick(nodes: &[Node], rng: &mut ChaCha8Rng) -> Option<usize> {
    argmax_random_tie(&scores(nodes), rng)
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::peers::test_nodes::node;

    #[test]
    fn llm_d_sends_a_request_to_a_busy_server_with_its_model_rather_than_an_idle_cold_one() {
        let nodes = [
            node(0, 16000, 65536).gpus(4, 4).warm_with(1, false),
            node(1, 16000, 65536)
                .gpus(4, 1)
                .using(0, 0, 3)
                .warm_with(1, true),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Queue and KV cache favour node 0 (2 against 0.25); the prefix scorer's weight of 3 wins.
        assert_eq!(pick(&nodes, &mut rng), Some(1));
    }

    #[test]
    fn llm_d_prefers_the_shorter_queue_among_servers_with_the_model() {
        let nodes = [
            node(0, 16000, 65536)
                .gpus(4, 2)
                .using(0, 0, 2)
                .warm_with(2, true),
            node(1, 16000, 65536)
                .gpus(4, 3)
                .using(0, 0, 1)
                .warm_with(3, true),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(pick(&nodes, &mut rng), Some(1));
    }
}
