//! HEFT: Heterogeneous Earliest Finish Time list scheduling.
//!
//! Modelled on Topcuoglu, Hariri and Wu, "Performance-effective and low-complexity task
//! scheduling for heterogeneous computing" (IEEE TPDS 13(3), 2002), section 4.1:
//! - order: tasks by decreasing upward rank, `rank_u(t) = w(t) + max over children of
//!   rank_u(child)`, with `w` the task's duration hint (the core computes it when a job is
//!   admitted); across jobs, the larger rank first, then the older job.
//! - placement: the processor with the earliest finish time for the task, `EFT = start +
//!   w / speed` (plus a model load where the model is not warm), among the workers with room
//!   now; ties to the core's stable worker order.
//!
//! Left out: communication costs (SPLAI tasks pass artifacts by reference), and the insertion
//! policy: HEFT plans a whole static DAG and may queue a task behind a busy, faster
//! processor; online, the model only places tasks on workers that can start them now.

use super::{Node, Pod};

/// The predicted finish time, from now, of the task on the node.
pub(crate) fn finish_ms(n: &Node, pod: &Pod) -> f64 {
    pod.hint_ms as f64 / n.speed.max(0.01)
        + if pod.inference && !n.warm {
            pod.model_load_ms as f64
        } else {
            0.0
        }
}

pub(crate) fn pick(nodes: &[Node], pod: &Pod) -> Option<usize> {
    (0..nodes.len()).min_by(|&a, &b| {
        finish_ms(&nodes[a], pod)
            .total_cmp(&finish_ms(&nodes[b], pod))
            .then(nodes[a].tie.cmp(&nodes[b].tie))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::test_nodes::node;

    #[test]
    fn heft_places_a_task_on_the_fastest_worker_even_when_it_is_the_busiest() {
        let nodes = [
            node(0, 8000, 32768),
            node(1, 8000, 32768).using(6000, 0, 3).speed(2.0),
        ];
        let pod = Pod {
            cpu: 1000,
            hint_ms: 10_000,
            ..Pod::default()
        };
        assert_eq!(pick(&nodes, &pod), Some(1));
    }

    #[test]
    fn heft_counts_a_model_load_into_the_finish_time() {
        let nodes = [
            node(0, 8000, 32768).speed(2.0).warm_with(1, false),
            node(1, 8000, 32768).warm_with(1, true),
        ];
        let pod = Pod {
            inference: true,
            hint_ms: 10_000,
            model_load_ms: 30_000,
            ..Pod::default()
        };
        assert_eq!(pick(&nodes, &pod), Some(1));
    }
}
