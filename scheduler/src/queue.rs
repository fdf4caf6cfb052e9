//! The ready queue: tasks waiting for a worker, in buckets of (priority, tenant, shape).
//!
//! Inside a bucket, tasks are in job age order. A scheduling pass takes buckets from a heap
//! ordered by effective priority (priority plus aging), then the tenant's dominant resource
//! share (lowest first, for fairness between tenants of equal priority), then age. Tasks of one
//! bucket are interchangeable for placement, so when the head of a bucket cannot be placed, the
//! rest of the bucket is skipped for that pass.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use crate::place::PendingReason;
use crate::time::Timestamp;

/// A queued task, ordered by its job's due time, then its slack (see `Settings::queue_order`;
/// in arrival order the due time is the job's submission and the slack 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Queued {
    pub due: Timestamp,
    pub slack: u64,
    pub job_seq: u64,
    pub job: u32,
    pub task: u32,
}

#[derive(Debug)]
pub(crate) struct Bucket {
    pub priority: i32,
    pub tenant: u32,
    pub shape: u32,
    /// The model the bucket's tasks need, if any.
    pub model: Option<u32>,
    /// The cpu and GPUs each task asks for, for tasks without a model (those that pack).
    pub size: Option<(u32, u32)>,
    /// Its head found every suitable worker too full, and nothing has been placed from it
    /// since: its size counts in `ReadyQueue::larger_waits`.
    pub blocked: bool,
    pub tasks: BTreeSet<Queued>,
    pub reason: Option<PendingReason>,
    /// Found no worker (or chose to wait) at this fleet epoch; skip it until the epoch moves or,
    /// for a wait, until the given time.
    pub parked: Option<(u64, Option<Timestamp>)>,
}

#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    pub buckets: Vec<Bucket>,
    ids: FxHashMap<(i32, u32, u32), u32>,
    /// Buckets that hold tasks, kept so a pass need not look at empty ones.
    pub nonempty: BTreeSet<u32>,
    pub len: usize,
    /// Queued tasks per model id: the demand a model load would serve or an eviction would hurt.
    pub demand: Vec<u32>,
    /// Attempts in flight per model id: with `demand`, how much work each model has.
    pub running: Vec<u32>,
    /// Blocked buckets of tasks without a model, counted by the cpu and by the GPUs each task
    /// asks for: whether larger tasks wait for room, which smaller ones should leave them.
    waiting_cpu: BTreeMap<u32, u32>,
    waiting_gpus: BTreeMap<u32, u32>,
}

fn count(map: &mut BTreeMap<u32, u32>, key: u32, add: bool) {
    if add {
        *map.entry(key).or_default() += 1;
    } else if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl ReadyQueue {
    pub fn bucket_of(
        &mut self,
        priority: i32,
        tenant: u32,
        shape: u32,
        model: Option<u32>,
        size: Option<(u32, u32)>,
    ) -> u32 {
        *self
            .ids
            .entry((priority, tenant, shape))
            .or_insert_with(|| {
                self.buckets.push(Bucket {
                    priority,
                    tenant,
                    shape,
                    model,
                    size,
                    blocked: false,
                    tasks: BTreeSet::new(),
                    reason: None,
                    parked: None,
                });
                (self.buckets.len() - 1) as u32
            })
    }

    pub fn push(&mut self, bucket: u32, q: Queued) {
        if self.buckets[bucket as usize].tasks.insert(q) {
            self.len += 1;
            if let Some(m) = self.buckets[bucket as usize].model {
                let m = m as usize;
                if self.demand.len() <= m {
                    self.demand.resize(m + 1, 0);
                }
                self.demand[m] += 1;
            }
            self.nonempty.insert(bucket);
        }
    }

    pub fn remove(&mut self, bucket: u32, q: &Queued) -> bool {
        let b = &mut self.buckets[bucket as usize];
        let removed = b.tasks.remove(q);
        if removed {
            self.len -= 1;
            if let Some(m) = b.model {
                self.demand[m as usize] -= 1;
            }
            if b.tasks.is_empty() {
                b.reason = None;
                self.nonempty.remove(&bucket);
                self.set_blocked(bucket, false);
            }
        }
        removed
    }

    /// An attempt of a task with this model started (`+1`) or ended (`-1`).
    pub fn count_running(&mut self, model: u32, started: bool) {
        let m = model as usize;
        if self.running.len() <= m {
            self.running.resize(m + 1, 0);
        }
        if started {
            self.running[m] += 1;
        } else {
            self.running[m] = self.running[m].saturating_sub(1);
        }
    }

    /// A model's work (queued and running tasks) and that of all models.
    pub fn model_work(&self, model: u32) -> (u64, u64) {
        let m = model as usize;
        let of = |v: &[u32]| u64::from(v.get(m).copied().unwrap_or(0));
        let all = |v: &[u32]| v.iter().map(|&x| u64::from(x)).sum::<u64>();
        (
            of(&self.demand) + of(&self.running),
            all(&self.demand) + all(&self.running),
        )
    }

    /// Marks a bucket as waiting for room (its head fits no worker's free capacity) or not.
    pub fn set_blocked(&mut self, bucket: u32, blocked: bool) {
        let b = &mut self.buckets[bucket as usize];
        if b.blocked == blocked {
            return;
        }
        b.blocked = blocked;
        if let Some((cpu, gpus)) = b.size {
            count(&mut self.waiting_cpu, cpu, blocked);
            count(&mut self.waiting_gpus, gpus, blocked);
        }
    }

    /// Whether the counts of blocked sizes match the blocked buckets, and no empty bucket is
    /// blocked.
    pub fn check_blocked(&self) -> Result<(), String> {
        let (mut cpu, mut gpus) = (BTreeMap::new(), BTreeMap::new());
        for (i, b) in self.buckets.iter().enumerate() {
            if b.blocked && b.tasks.is_empty() {
                return Err(format!(
                    "bucket {i} is empty but counted as waiting for room"
                ));
            }
            if let (true, Some((c, g))) = (b.blocked, b.size) {
                count(&mut cpu, c, true);
                count(&mut gpus, g, true);
            }
        }
        if cpu != self.waiting_cpu || gpus != self.waiting_gpus {
            return Err(
                "the sizes of tasks waiting for room do not match the blocked buckets".into(),
            );
        }
        Ok(())
    }

    /// Whether tasks without a model that ask for more cpu or more GPUs than this wait for room.
    pub fn larger_waits(&self, cpu: u32, gpus: u32) -> bool {
        self.waiting_cpu
            .last_key_value()
            .is_some_and(|(&c, _)| c > cpu)
            || self
                .waiting_gpus
                .last_key_value()
                .is_some_and(|(&g, _)| g > gpus)
    }

    pub fn head(&self, bucket: u32) -> Option<&Queued> {
        self.buckets[bucket as usize].tasks.first()
    }
}

/// A bucket's place in one pass. Larger sorts first in a max-heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PassKey {
    pub effective_priority: i64,
    /// `u64::MAX - share`: a smaller share sorts first.
    pub inverse_share: u64,
    /// A peer policy's own order after the first two (see `crate::peers::pass_key`); 0 for
    /// SPLAI and the simple baselines.
    pub then: i64,
    /// Older heads sort first.
    pub inverse_age: std::cmp::Reverse<(Timestamp, u64, u64)>,
    pub bucket: std::cmp::Reverse<u32>,
}
