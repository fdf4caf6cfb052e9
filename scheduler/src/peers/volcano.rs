//! Volcano's default scheduler configuration.
//!
//! Modelled on volcano-sh/volcano, the default `volcano-scheduler.conf` of its installer
//! (`actions: "enqueue, allocate, backfill"`; tiers `priority, gang, conformance` and
//! `drf, predicates, proportion, nodeorder, binpack`):
//! - order (`pkg/scheduler/actions/allocate/allocate.go` `Execute`): queues first, by
//!   `proportion`'s `QueueOrderFn` (the lower share of what the queue deserves; with one queue
//!   per tenant and equal weights, the tenant's dominant resource share, as `drf` counts it);
//!   then jobs by `priority`'s `JobOrderFn` (higher first), then by creation time.
//! - gang (`pkg/scheduler/plugins/gang/gang.go` `JobValid`/`JobReady`): a job is allocated as a
//!   whole or not at all. Here the gang is the job's tasks that are ready now (a DAG's later
//!   tasks do not exist yet as pods), and its members are placed one after another in the
//!   same cycle, before any other job, as `allocate` does with one job popped from a queue.
//!   `minAvailable` is all of them, or, when they could not all run even on the empty fleet,
//!   as many (in queue order) as could: the setting a user would need for the job to run.
//! - predicates: the core's feasibility (fit, models, tools, clearance, zones).
//! - node order: `nodeorder` (`pkg/scheduler/plugins/nodeorder/nodeorder.go`
//!   `calculateWeight`, `OnSessionOpen`) with its default weights — `leastrequested.weight` 1
//!   (cpu and memory equally), `balancedresource.weight` 1 (cpu, memory and GPUs),
//!   `mostrequested.weight` 0, `podtopologyspread.weight` 2 with the system default
//!   constraints (scored as in [`crate::peers::kube`]) — plus `binpack` (`pkg/scheduler/plugins/binpack/binpack.go` `BinPackingScore`) with
//!   `binpack.weight` 1 and cpu and memory weights 1: per requested resource
//!   `(used + request) / allocatable` (0 when it would not fit), averaged and times 100.
//!   `leastrequested` and `binpack` nearly cancel (they sum to about 100 on cpu and memory),
//!   so balanced use of cpu and memory decides most choices, as it does in a default
//!   Volcano install.
//! - pick: `pkg/scheduler/util/scheduler_helper.go` `SelectBestNode` — the best score, ties
//!   uniformly at random.
//!
//! Left out: `enqueue`'s overcommit check, `backfill` (every SPLAI task requests resources),
//! `conformance`, preemption and reclaim (not in the default actions), DRF's ordering of jobs
//! inside a queue by their own share, hierarchical queues, and the scores that are equal on
//! every node of a SPLAI fleet.

use rand_chacha::ChaCha8Rng;

use super::kube::{balanced_allocation_of, least_allocated, topology_spread};
use super::{Node, Pod, argmax_random_tie};

const MAX_NODE_SCORE: f64 = 100.0;
const WEIGHT_LEAST_REQUESTED: f64 = 1.0;
const WEIGHT_BALANCED: f64 = 1.0;
const WEIGHT_BINPACK: f64 = 1.0;
const WEIGHT_SPREAD: f64 = 2.0;

/// `binpack`'s score of a node for a task: cpu and memory, weight 1 each.
pub(crate) fn binpack(n: &Node, pod: &Pod) -> f64 {
    let mut score = 0.0;
    let mut weights = 0.0;
    for (request, used, alloc) in [
        (pod.cpu, n.cpu - n.free_cpu, n.cpu),
        (pod.mem, n.mem - n.free_mem, n.mem),
    ] {
        if request == 0 {
            continue;
        }
        let total = f64::from(used) + f64::from(request);
        if alloc > 0 && total <= f64::from(alloc) {
            score += total / f64::from(alloc);
        }
        weights += 1.0;
    }
    if weights > 0.0 {
        score /= weights;
    }
    score * MAX_NODE_SCORE * WEIGHT_BINPACK
}

pub(crate) fn scores(nodes: &[Node], pod: &Pod) -> Vec<f64> {
    let spread = topology_spread(nodes);
    nodes
        .iter()
        .zip(spread)
        .map(|(n, s)| {
            WEIGHT_LEAST_REQUESTED * least_allocated(n, pod) as f64
                + WEIGHT_BALANCED * balanced_allocation_of(n, pod, true) as f64
                + binpack(n, pod)
                + WEIGHT_SPREAD * s as f64
        })
        .collect()
}

pub(crate) fn pick(nodes: &[Node], pod: &Pod, rng: &mut ChaCha8Rng) -> Option<usize> {
    argmax_random_tie(&scores(nodes, pod), rng)
}

/// The gang check: whether the job's `minAvailable` first `tasks` (cpu, mem, gpus) fit the free
/// capacity of the nodes at once. `capacity` and `free` are per node, in the same order;
/// `minAvailable` is the longest prefix of `tasks` that fits the empty nodes.
pub(crate) fn gang_ready(
    capacity: &[(u32, u32, u32)],
    free: &[(u32, u32, u32)],
    tasks: &[(u32, u32, u32)],
) -> bool {
    let mut room = capacity.to_vec();
    let min_available = tasks
        .iter()
        .take_while(|&&task| first_fit(&mut room, task))
        .count();
    gang_fits(free, &tasks[..min_available])
}

/// Whether all of `tasks` (cpu, mem, gpus) fit the free capacity of `nodes` at once. Largest
/// tasks first, each on the first node it fits, which finds a packing whenever the tasks are
/// of few shapes (as a job's ready tasks are).
pub(crate) fn gang_fits(nodes: &[(u32, u32, u32)], tasks: &[(u32, u32, u32)]) -> bool {
    let mut free = nodes.to_vec();
    let mut tasks = tasks.to_vec();
    tasks.sort_unstable_by(|a, b| b.cmp(a));
    tasks.iter().all(|&task| first_fit(&mut free, task))
}

/// Takes `(cpu, mem, gpus)` from the first node with room for it; false if none has.
fn first_fit(nodes: &mut [(u32, u32, u32)], (c, m, g): (u32, u32, u32)) -> bool {
    nodes
        .iter_mut()
        .find(|f| f.0 >= c && f.1 >= m && f.2 >= g)
        .map(|f| {
            f.0 -= c;
            f.1 -= m;
            f.2 -= g;
        })
        .is_some()
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::peers::test_nodes::node;

    #[test]
    fn volcano_holds_back_a_job_whose_ready_tasks_do_not_all_fit() {
        let free = [(4000, 16384, 0), (2000, 8192, 0)];
        assert!(gang_fits(
            &free,
            &[(2000, 8192, 0), (2000, 8192, 0), (2000, 8192, 0)]
        ));
        // kube-scheduler would start three of these four tasks; Volcano starts none.
        assert!(!gang_fits(&free, &[(2000, 8192, 0); 4]));
    }

    #[test]
    fn volcano_lowers_the_gang_to_what_the_empty_fleet_could_hold() {
        let capacity = [(4000, 16384, 0)];
        let three = [(2000, 8192, 0); 3];
        // Three tasks could never run at once: two form the gang.
        assert!(gang_ready(&capacity, &[(4000, 16384, 0)], &three));
        assert!(!gang_ready(&capacity, &[(2000, 8192, 0)], &three));
    }

    #[test]
    fn volcano_evens_out_cpu_and_memory_where_kube_scheduler_spreads() {
        // Node 0 is busier but would end up balanced; node 1 is emptier but lopsided.
        let nodes = [
            node(0, 8000, 32768).using(4000, 16384, 1),
            node(1, 8000, 32768).using(0, 8192, 1),
        ];
        let pod = Pod {
            cpu: 2000,
            mem: 8192,
            ..Pod::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(pick(&nodes, &pod, &mut rng), Some(0));
        assert_eq!(crate::peers::kube::pick(&nodes, &pod, &mut rng), Some(1));
    }
}
