//! Ray Serve's model multiplexing, and Ray's default task placement for everything else.
//!
//! Modelled on ray-project/ray:
//! - inference tasks (`python/ray/serve/_private/request_router/request_router.py`
//!   `MultiplexMixin.apply_multiplex_routing` and `pow_2_router.py`
//!   `PowerOfTwoChoicesRequestRouter.choose_replicas`): the candidates are the replicas that
//!   have the request's model loaded; when none has, the replicas with the fewest models
//!   loaded. Of the candidates, two are drawn at random and the one with the shorter queue
//!   wins (the first drawn on a tie). Requests are routed first in, first out.
//! - the replica's model cache (`python/ray/serve/multiplex.py` `_ModelMultiplexWrapper`) is
//!   LRU with a per-replica limit. The simulated workers already keep an LRU cache of
//!   `maxWarmModels` models, which stands for `max_num_models_per_replica` (Ray's default is
//!   3; the scenario's limit applies).
//! - other tasks: Ray core's default hybrid scheduling policy
//!   (`src/ray/raylet/scheduling/policy/hybrid_scheduling_policy.cc` `ScheduleImpl` and
//!   `GetBestNode`): a task without GPUs tries the nodes without GPUs first
//!   (`avoid_gpu_nodes`); each available node scores its critical resource utilization, the
//!   highest share of any resource in use, counted as 0 below `scheduler_spread_threshold`
//!   (0.5), so lightly used nodes tie and the task packs; the task goes to one of the
//!   `max(1, 0.2 × nodes)` best nodes (`scheduler_top_k_fraction`), uniformly at random, in
//!   node order among ties.
//!
//! Left out: the 1 s `multiplexed_model_id` matching timeout (routing here is one decision;
//! the model falls back at once), queue-length probing and its backoff, and the preference for
//! the submitting (local) node, since SPLAI's jobs are not submitted from a fleet node.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

use super::{Node, Pod};

const SPREAD_THRESHOLD: f64 = 0.5;
const TOP_K_FRACTION: f64 = 0.2;

/// Power of two choices among `candidates` (indices into `nodes`): the shorter queue of two
/// drawn at random.
fn two_choices(nodes: &[Node], candidates: &[usize], rng: &mut ChaCha8Rng) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = (rng.next_u64() % n as u64) as usize;
            let mut b = (rng.next_u64() % (n as u64 - 1)) as usize;
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            Some(if nodes[b].depth < nodes[a].depth {
                b
            } else {
                a
            })
        }
    }
}

/// The replica for a request of a multiplexed model.
pub(crate) fn pick_replica(nodes: &[Node], rng: &mut ChaCha8Rng) -> Option<usize> {
    let warm: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].warm).collect();
    if !warm.is_empty() {
        return two_choices(nodes, &warm, rng);
    }
    let fewest = nodes.iter().map(|n| n.models).min()?;
    let candidates: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].models == fewest)
        .collect();
    two_choices(nodes, &candidates, rng)
}

/// The highest share of any resource the node has in use, 0 below the spread threshold.
fn hybrid_score(n: &Node) -> f64 {
    let share = |total: u32, free: u32| {
        if total == 0 {
            0.0
        } else {
            f64::from(total - free) / f64::from(total)
        }
    };
    let critical = share(n.cpu, n.free_cpu)
        .max(share(n.mem, n.free_mem))
        .max(share(n.gpus, n.free_gpus));
    if critical < SPREAD_THRESHOLD {
        0.0
    } else {
        critical
    }
}

/// Ray core's hybrid policy for a task. `nodes` are in the fleet's fixed order; `fleet_size`
/// counts every node of the cluster, as the top-k does.
pub(crate) fn pick_hybrid(
    nodes: &[Node],
    pod: &Pod,
    fleet_size: usize,
    rng: &mut ChaCha8Rng,
) -> Option<usize> {
    let cpu_only: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].gpus == 0).collect();
    let mut candidates = if pod.gpus == 0 && !cpu_only.is_empty() {
        cpu_only
    } else {
        (0..nodes.len()).collect()
    };
    candidates.sort_by(|&a, &b| hybrid_score(&nodes[a]).total_cmp(&hybrid_score(&nodes[b])));
    let k = ((fleet_size as f64 * TOP_K_FRACTION) as usize).clamp(1, candidates.len().max(1));
    (!candidates.is_empty()).then(|| candidates[(rng.next_u64() % k as u64) as usize])
}

pub(crate) fn pick(
    nodes: &[Node],
    pod: &Pod,
    fleet_size: usize,
    rng: &mut ChaCha8Rng,
) -> Option<usize> {
    if pod.inference {
        pick_replica(nodes, rng)
    } else {
        pick_hybrid(nodes, pod, fleet_size, rng)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::peers::test_nodes::node;

    #[test]
    fn ray_serve_loads_a_new_model_on_the_replica_with_the_fewest_models_not_the_idlest() {
        let nodes = [
            node(0, 16000, 65536).warm_with(3, false),
            node(1, 16000, 65536).using(0, 0, 2).warm_with(1, false),
            node(2, 16000, 65536).warm_with(2, false),
        ];
        for seed in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            assert_eq!(pick_replica(&nodes, &mut rng), Some(1));
        }
    }

    #[test]
    fn ray_serve_routes_only_to_replicas_with_the_model_loaded_when_there_are_any() {
        let nodes = [
            node(0, 16000, 65536).warm_with(1, false),
            node(1, 16000, 65536).using(0, 0, 3).warm_with(2, true),
            node(2, 16000, 65536).using(0, 0, 1).warm_with(2, true),
        ];
        for seed in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            assert_eq!(pick_replica(&nodes, &mut rng), Some(2));
        }
    }

    #[test]
    fn ray_packs_tasks_onto_lightly_used_nodes_and_keeps_tasks_without_gpus_off_gpu_nodes() {
        let pod = Pod {
            cpu: 1000,
            mem: 1024,
            ..Pod::default()
        };
        // Below half use every node scores 0: the first in node order takes the task.
        let light = [node(0, 8000, 32768).using(2000, 0, 1), node(1, 8000, 32768)];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(pick_hybrid(&light, &pod, 2, &mut rng), Some(0));
        // Above it the less used node wins.
        let busy = [node(0, 8000, 32768).using(5000, 0, 2), node(1, 8000, 32768)];
        assert_eq!(pick_hybrid(&busy, &pod, 2, &mut rng), Some(1));
        // An idle GPU node is passed over for a busier CPU node.
        let gpu = [
            node(0, 8000, 32768).gpus(1, 1),
            node(1, 8000, 32768).using(6000, 0, 3),
        ];
        assert_eq!(pick_hybrid(&gpu, &pod, 2, &mut rng), Some(1));
    }
}
