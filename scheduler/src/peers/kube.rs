//! kube-scheduler's default profile.
//!
//! Modelled on kubernetes/kubernetes `pkg/scheduler`:
//! - queue: `framework/plugins/queuesort/priority_sort.go` `PrioritySort.Less` — higher pod
//!   priority first, then the earlier time the pod entered the queue (here: its task became
//!   ready). No aging and no fairness between tenants.
//! - filter: `framework/plugins/noderesources/fit.go` `Fit.Filter` — the requests must fit the
//!   node's free capacity (here: the core's feasibility, which also checks models, tools,
//!   clearance and the tenant's zones).
//! - how many nodes are scored: `schedule_one.go` `numFeasibleNodesToFind` with the default
//!   adaptive `percentageOfNodesToScore` (all nodes below 100; else `50 - n/125` percent, at
//!   least 5% and 100 nodes), scanning from where the last cycle stopped.
//! - scores, with the weights of `apis/config/v1/default_plugins.go`:
//!   - `NodeResourcesFit` (weight 1), strategy `LeastAllocated` over cpu and memory, weight 1
//!     each (`least_allocated.go` `leastResourceScorer`): `(allocatable - requested) * 100 /
//!     allocatable`, averaged; requests of 0 count as 100m cpu and 200Mi memory
//!     (`util/pod_resources.go` non-zero defaults).
//!   - `NodeResourcesBalancedAllocation` (weight 1, `balanced_allocation.go`
//!     `balancedResourceScorer`): `(1 - std) * 100` of the cpu and memory fractions requested.
//!   - `PodTopologySpread` (weight 2, `podtopologyspread/scoring.go` `Score` and
//!     `NormalizeScore`) with the system default constraints (`plugin.go`
//!     `systemDefaultConstraints`: zone with maxSkew 5, hostname with maxSkew 3, both
//!     `ScheduleAnyway`): a node's raw score is, per constraint whose key it has, the matching
//!     pods in its domain times `ln(domains + 2)` plus `maxSkew - 1`; normalized as
//!     `100 * (max + min - s) / max`.
//! - pick: `schedule_one.go` `selectHost` — the best total, ties uniformly at random.
//!
//! Left out: the scores that are equal on every node of a SPLAI fleet (`TaintToleration`,
//! `NodeAffinity`, `InterPodAffinity`, and `ImageLocality`, since the model knows nothing of
//! model weights — no model awareness, as in a plain cluster), preemption, and the binding
//! cycle. The system default spread constraints only apply to pods that a Service, ReplicaSet
//! or StatefulSet selects; the model treats a job's tasks as such a set, which is the most
//! kube-scheduler could do for them. GPUs are filtered but not scored, as by default.

use rand_chacha::ChaCha8Rng;

use super::{Node, Pod, argmax_random_tie};

const MAX_NODE_SCORE: i64 = 100;
/// `DefaultMilliCPURequest` and `DefaultMemoryRequest` (200Mi) of `util/pod_resources.go`.
const NON_ZERO_CPU: u32 = 100;
const NON_ZERO_MEM_MIB: u32 = 200;
const ZONE_MAX_SKEW: i64 = 5;
const HOST_MAX_SKEW: i64 = 3;
const WEIGHT_FIT: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_SPREAD: i64 = 2;

/// How many feasible nodes kube-scheduler scores in a fleet of `all` nodes.
pub(crate) fn nodes_to_score(all: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if all < MIN_FEASIBLE {
        return all;
    }
    let percent = (50 - all as i64 / 125).max(5) as usize;
    (all * percent / 100).max(MIN_FEASIBLE)
}

fn non_zero(pod: &Pod) -> (u32, u32) {
    let cpu = if pod.cpu == 0 { NON_ZERO_CPU } else { pod.cpu };
    let mem = if pod.mem == 0 {
        NON_ZERO_MEM_MIB
    } else {
        pod.mem
    };
    (cpu, mem)
}

/// Requested (in use plus the pod) and allocatable, for cpu then memory.
fn requested(n: &Node, pod: &Pod) -> [(i64, i64); 2] {
    let (cpu, mem) = non_zero(pod);
    [
        (
            i64::from(n.cpu - n.free_cpu) + i64::from(cpu),
            i64::from(n.cpu),
        ),
        (
            i64::from(n.mem - n.free_mem) + i64::from(mem),
            i64::from(n.mem),
        ),
    ]
}

pub(crate) fn least_allocated(n: &Node, pod: &Pod) -> i64 {
    let r = requested(n, pod);
    let one = |(req, alloc): (i64, i64)| {
        if alloc == 0 || req > alloc {
            0
        } else {
            (alloc - req) * MAX_NODE_SCORE / alloc
        }
    };
    (one(r[0]) + one(r[1])) / 2
}

pub(crate) fn balanced_allocation(n: &Node, pod: &Pod) -> i64 {
    balanced_allocation_of(n, pod, false)
}

/// `NodeResourcesBalancedAllocation` over cpu and memory, and GPUs too when `gpus` is set and
/// the pod requests some (an extended resource the pod does not request is skipped).
pub(crate) fn balanced_allocation_of(n: &Node, pod: &Pod, gpus: bool) -> i64 {
    let r = requested(n, pod);
    let fraction = |(req, alloc): (i64, i64)| {
        if alloc == 0 {
            0.0
        } else {
            (req as f64 / alloc as f64).min(1.0)
        }
    };
    let mut f = vec![fraction(r[0]), fraction(r[1])];
    if gpus && pod.gpus > 0 {
        let used = i64::from(n.gpus - n.free_gpus) + i64::from(pod.gpus);
        f.push(fraction((used, i64::from(n.gpus))));
    }
    let mean = f.iter().sum::<f64>() / f.len() as f64;
    let std = (f.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f.len() as f64).sqrt();
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// `PodTopologySpread`'s normalized scores, one per node.
pub(crate) fn topology_spread(nodes: &[Node]) -> Vec<i64> {
    let mut zones: Vec<Option<u32>> = nodes.iter().map(|n| n.zone).collect();
    zones.sort_unstable();
    zones.dedup();
    let zone_weight = ((zones.len() + 2) as f64).ln();
    let host_weight = ((nodes.len() + 2) as f64).ln();
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            let mut s = f64::from(n.same_job) * host_weight + (HOST_MAX_SKEW - 1) as f64;
            if n.zone.is_some() {
                s += f64::from(n.same_job_in_zone) * zone_weight + (ZONE_MAX_SKEW - 1) as f64;
            }
            s.round() as i64
        })
        .collect();
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    raw.iter()
        .map(|&s| {
            if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s) / max
            }
        })
        .collect()
}

/// The weighted total of the default profile's scores, per node.
pub(crate) fn scores(nodes: &[Node], pod: &Pod) -> Vec<i64> {
    let spread = topology_spread(nodes);
    nodes
        .iter()
        .zip(spread)
        .map(|(n, s)| {
            WEIGHT_FIT * least_allocated(n, pod)
                + WEIGHT_BALANCED * balanced_allocation(n, pod)
                + WEIGHT_SPREAD * s
        })
        .collect()
}

/// The index of the node kube-scheduler binds the pod to. `nodes` are the feasible nodes it
/// found, at most [`nodes_to_score`] of the fleet.
pub(crate) fn pick(nodes: &[Node], pod: &Pod, rng: &mut ChaCha8Rng) -> Option<usize> {
    argmax_random_tie(&scores(nodes, pod), rng)
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::peers::test_nodes::node;

    fn pod(cpu: u32, mem: u32) -> Pod {
        Pod {
            cpu,
            mem,
            ..Pod::default()
        }
    }

    #[test]
    fn kube_scheduler_spreads_onto_the_emptier_node_where_a_packer_would_fill_the_busy_one() {
        let nodes = [
            node(0, 8000, 32768).using(4000, 16384, 1),
            node(1, 8000, 32768),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(pick(&nodes, &pod(2000, 8192), &mut rng), Some(1));
    }

    #[test]
    fn kube_scheduler_prefers_balanced_use_of_cpu_and_memory() {
        // Equal free cpu and memory in total, but node 0 would end up all cpu and no memory.
        let a = node(0, 8000, 32768).using(4000, 0, 1);
        let b = node(1, 8000, 32768).using(0, 16384, 1);
        assert_eq!(
            least_allocated(&a, &pod(2000, 0)),
            least_allocated(&b, &pod(2000, 0))
        );
        let p = pod(2000, 2000);
        assert!(balanced_allocation(&b, &p) > balanced_allocation(&a, &p));
    }

    #[test]
    fn kube_scheduler_spreads_a_jobs_tasks_across_zones() {
        // Both nodes are idle; the job already has two tasks in zone 0, on other nodes.
        let nodes = [
            node(0, 8000, 32768).in_zone(0).with_job_tasks(0, 2),
            node(1, 8000, 32768).in_zone(1),
        ];
        let spread = topology_spread(&nodes);
        assert!(spread[1] > spread[0], "{spread:?}");
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(pick(&nodes, &pod(1000, 1024), &mut rng), Some(1));
    }

    #[test]
    fn kube_scheduler_scores_a_sample_of_large_fleets() {
        assert_eq!(nodes_to_score(99), 99);
        assert_eq!(nodes_to_score(1000), 420);
        assert_eq!(nodes_to_score(5000), 500);
        assert_eq!(nodes_to_score(150), 100);
    }
}
