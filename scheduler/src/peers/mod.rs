//! Models of the schedulers a user would pick instead of SPLAI, so that `compare` measures
//! SPLAI against them rather than against strawmen.
//!
//! Each model lives in its own module, which names the peer's source it follows, its default
//! weights, and what it leaves out. A model decides only what its peer decides: the order of
//! ready work ([`queue_position`], [`pass_key`]), admission (`kueue`), all-or-nothing placement
//! of a job's ready tasks (`volcano`), and the choice of a worker among those that can run the
//! task now ([`Node`]). Everything else (task lifecycle, retries, quotas on running work, fleet
//! health) is the core's, the same for every policy, so differences in results come from the
//! decision rules alone.
//!
//! Like the rest of the core, the models are pure: the state they read is passed in, and the
//! random choices some peers make come from a seed per decision.

pub(crate) mod deadline;
pub(crate) mod heft;
pub(crate) mod kube;
pub(crate) mod kueue;
pub(crate) mod llmd;
pub(crate) mod ray_serve;
pub(crate) mod volcano;

use std::cmp::Reverse;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

use crate::fleet::WorkerId;
use crate::queue::PassKey;
use crate::score::Strategy;
use crate::time::Timestamp;

/// A worker that can run the task now, as the peers see it: capacity, what is in use, and the
/// little state each peer reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Node {
    pub id: WorkerId,
    pub cpu: u32,
    pub mem: u32,
    pub gpus: u32,
    pub free_cpu: u32,
    pub free_mem: u32,
    pub free_gpus: u32,
    /// The worker's zone, if it has one.
    pub zone: Option<u32>,
    /// Attempts in flight on the worker: its queue depth.
    pub depth: u32,
    /// Attempts of the task's own job on the worker.
    pub same_job: u32,
    /// Attempts of the task's own job in the worker's zone, on any worker.
    pub same_job_in_zone: u32,
    /// Whether the task's model is loaded here.
    pub warm: bool,
    /// How many models are loaded here.
    pub models: u32,
    pub speed: f64,
    /// The core's stable tie-break key (a hash of the worker's name).
    pub tie: u64,
}

/// What the peers know of the task being placed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Pod {
    pub cpu: u32,
    pub mem: u32,
    pub gpus: u32,
    pub inference: bool,
    pub hint_ms: u64,
    pub model_load_ms: u64,
}

/// Where a peer puts a ready task inside its bucket: `(due, slack)` of [`crate::queue::Queued`].
/// `ready_at` is when the task became ready, `rank` its upward rank (the longest path from it
/// to the end of its job, by duration hints).
pub(crate) fn queue_position(
    strategy: Strategy,
    job: &JobFacts,
    ready_at: Timestamp,
    rank: u64,
    hint_ms: u64,
) -> (Timestamp, u64) {
    match strategy {
        // A pod enters the scheduling queue when it is created, which for a DAG is when its
        // task becomes ready; Ray Serve's router queues requests first in, first out.
        Strategy::KubeScheduler | Strategy::Kueue | Strategy::LlmD | Strategy::RayServe => {
            (ready_at, 0)
        }
        Strategy::Volcano => (job.submitted, 0),
        Strategy::Heft => (Timestamp::ZERO, u64::MAX - rank),
        Strategy::Edf => (deadline::absolute(job), 0),
        Strategy::Lsf => (deadline::latest_start(job, hint_ms), 0),
        Strategy::Splai
        | Strategy::LeastLoaded
        | Strategy::RoundRobin
        | Strategy::Random
        | Strategy::FirstFit => (job.submitted, 0),
    }
}

/// The job-level facts a queue order may read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct JobFacts {
    pub submitted: Timestamp,
    pub critical_ms: u64,
    pub deadline_ms: Option<u64>,
}

/// The order of buckets in a pass, for a peer: `priority` is the bucket's, `share` the tenant's
/// dominant resource share, `due` and `slack` those of the bucket's head.
pub(crate) fn pass_key(
    strategy: Strategy,
    bucket: u32,
    priority: i32,
    share: f64,
    due: Timestamp,
    slack: u64,
    job_seq: u64,
) -> PassKey {
    let priority = i64::from(priority);
    let inverse_share = u64::MAX - (share.clamp(0.0, 1e6) * 1e9) as u64;
    // (effective priority, inverse share, then): larger sorts first.
    let (first, second, then) = match strategy {
        // PrioritySort: priority, then the time the pod entered the queue. No aging, no
        // fairness between tenants.
        Strategy::KubeScheduler | Strategy::Kueue | Strategy::LlmD => (priority, u64::MAX, 0),
        // Queues (tenants) by share first, then jobs by priority (volcano's proportion, then
        // priority plugins).
        Strategy::Volcano => (0, inverse_share, priority),
        // Neither knows priorities: first in, first out; HEFT by upward rank, the deadline
        // policies by deadline.
        Strategy::RayServe | Strategy::Edf | Strategy::Lsf => (0, u64::MAX, 0),
        Strategy::Heft => (0, u64::MAX, (u64::MAX - slack).min(i64::MAX as u64) as i64),
        Strategy::Splai
        | Strategy::LeastLoaded
        | Strategy::RoundRobin
        | Strategy::Random
        | Strategy::FirstFit => unreachable!("only peers have their own pass order"),
    };
    PassKey {
        effective_priority: first,
        inverse_share: second,
        then,
        inverse_age: Reverse((due, 0, job_seq)),
        bucket: Reverse(bucket),
    }
}

/// The index of the best of `scores` (larger is better), ties broken uniformly at random as
/// kube-scheduler's `selectHost` and the endpoint picker's max-score picker do: one pass,
/// keeping the k-th tie seen with probability 1/k.
pub(crate) fn argmax_random_tie<T: PartialOrd + Copy>(
    scores: &[T],
    rng: &mut ChaCha8Rng,
) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    let mut ties = 0u64;
    for (i, &s) in scores.iter().enumerate() {
        match best {
            Some((_, b)) if s < b => {}
            Some((_, b)) if s == b => {
                ties += 1;
                if rng.next_u64().is_multiple_of(ties) {
                    best = Some((i, s));
                }
            }
            _ => {
                best = Some((i, s));
                ties = 1;
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
pub(crate) mod test_nodes {
    use super::Node;

    /// An idle worker with this much capacity, in no zone.
    pub fn node(id: u32, cpu: u32, mem: u32) -> Node {
        Node {
            id,
            cpu,
            mem,
            free_cpu: cpu,
            free_mem: mem,
            speed: 1.0,
            tie: u64::from(id),
            ..Node::default()
        }
    }

    impl Node {
        /// The worker with this much of its capacity in use by `tasks` attempts.
        pub fn using(mut self, cpu: u32, mem: u32, tasks: u32) -> Node {
            self.free_cpu -= cpu;
            self.free_mem -= mem;
            self.depth += tasks;
            self
        }

        pub fn in_zone(mut self, zone: u32) -> Node {
            self.zone = Some(zone);
            self
        }

        pub fn gpus(mut self, total: u32, free: u32) -> Node {
            self.gpus = total;
            self.free_gpus = free;
            self
        }

        pub fn warm_with(mut self, models: u32, warm: bool) -> Node {
            self.models = models;
            self.warm = warm;
            self
        }

        pub fn speed(mut self, speed: f64) -> Node {
            self.speed = speed;
            self
        }

        pub fn with_job_tasks(mut self, here: u32, in_zone: u32) -> Node {
            self.same_job = here;
            self.same_job_in_zone = in_zone;
            self
        }
    }
}
