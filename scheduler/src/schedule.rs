//! The scheduling pass: ready buckets in priority, fairness and age order, each placed or
//! given the reason it waits.

use crate::Strategy;
use crate::engine::{Scheduler, TaskRt, TaskState, Timer, traceparent};
use crate::event::{Assignment, Effect};
use crate::fleet::WorkerId;
use crate::intern::{BitSet, stable_hash};
use crate::place::{PendingReason, Placer, Request};
use crate::policy::{self};
use crate::queue::PassKey;
use crate::queue::Queued;
use crate::score::Explanation;
use crate::time::Timestamp;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

impl Scheduler {
    // ----- scheduling -----

    pub(crate) fn pass_key(&self, bucket: u32, now: Timestamp) -> Option<PassKey> {
        let b = &self.queue.buckets[bucket as usize];
        let head = b.tasks.first()?;
        if self.strategy.is_peer() {
            return Some(crate::peers::pass_key(
                self.strategy,
                bucket,
                b.priority,
                self.dominant_share(b.tenant),
                head.due,
                head.slack,
                head.job_seq,
            ));
        }
        let aging = self.settings.aging_interval_ms.max(1);
        // Waiting work gains a level per interval past its due time (its job's submission in
        // arrival order, the end of its critical path otherwise), so lower priorities never
        // starve. Counting from the due time keeps the boost monotone in the queue order: inside
        // a level, a job that is due later never overtakes one due earlier by having waited
        // longer, which counting from submission did (a long job aged past short ones).
        let boost = (now.since(head.due) / aging) as i64;
        let dominant = self.dominant_share(b.tenant);
        Some(PassKey {
            effective_priority: i64::from(b.priority) + boost,
            inverse_share: u64::MAX - (dominant.clamp(0.0, 1e6) * 1e9) as u64,
            then: 0,
            inverse_age: Reverse((head.due, head.slack, head.job_seq)),
            bucket: Reverse(bucket),
        })
    }

    /// What the placer is asked for one task of job `j`; `rng_key` seeds the random choices of
    /// this one decision, so the same inputs give the same choice.
    fn request<'a>(
        &self,
        j: u32,
        task: &TaskRt,
        shape: u32,
        allowed_zones: Option<&'a BitSet>,
    ) -> Request<'a> {
        let packs = self.strategy == Strategy::Splai
            && task.model.is_none()
            && self.queue.larger_waits(task.cpu, task.gpus);
        Request {
            shape,
            job: j,
            hint_ms: task.hint_ms,
            allowed_zones,
            strategy: self.strategy,
            packs,
            rng_key: stable_hash(&[
                &self.seed.to_le_bytes(),
                self.job(j).key.as_bytes(),
                task.id.as_bytes(),
                &task.attempt.to_le_bytes(),
            ]),
        }
    }

    /// The tenant's largest share of the fleet's cpu, memory or GPUs in use.
    fn dominant_share(&self, tenant: u32) -> f64 {
        let u = &self.tenants[tenant as usize].usage;
        let f = &self.fleet;
        let share = |used: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                used as f64 / total as f64
            }
        };
        share(u.cpu_millis, f.total_cpu)
            .max(share(u.memory_mib, f.total_mem))
            .max(share(u64::from(u.gpus), f.total_gpus))
    }

    /// Records why a bucket waits; one that waits for room (every suitable worker too full)
    /// counts as a larger task waiting, for which smaller ones pack (`ScoreTerms::packing`).
    pub(crate) fn set_reason(&mut self, bucket: u32, reason: PendingReason, out: &mut Vec<Effect>) {
        self.queue
            .set_blocked(bucket, matches!(reason, PendingReason::AllBusy { .. }));
        let b = &mut self.queue.buckets[bucket as usize];
        if b.reason.as_ref() == Some(&reason) {
            return;
        }
        let Some(head) = b.tasks.first().copied() else {
            return;
        };
        let text = reason.to_string();
        b.reason = Some(reason);
        let job = self.job(head.job);
        out.push(Effect::Pending {
            job: job.key.clone(),
            task: job.tasks[head.task as usize].id.clone(),
            reason: text,
        });
    }

    /// One scheduling pass over the ready queue.
    pub(crate) fn schedule(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        if !self.dirty || self.queue.len == 0 {
            return;
        }
        self.dirty = false;
        self.stats.passes += 1;
        let mut heap: BinaryHeap<PassKey> = self
            .queue
            .nonempty
            .iter()
            .filter_map(|&b| self.pass_key(b, now))
            .collect();
        // Shapes that found no worker in this pass, with the zones they were limited to.
        let mut failed: FxHashMap<(u32, Option<u32>), (PendingReason, Option<Timestamp>)> =
            FxHashMap::default();
        let epoch = self.fleet.epoch;
        // Volcano: the jobs looked at in this pass, and whether their gang was allocated.
        let mut gangs: FxHashMap<u32, bool> = FxHashMap::default();
        while let Some(key) = heap.pop() {
            let bucket = key.bucket.0;
            let Some(&head) = self.queue.head(bucket) else {
                continue;
            };
            let (tenant, shape, parked) = {
                let b = &self.queue.buckets[bucket as usize];
                (b.tenant, b.shape, b.parked)
            };
            // Nothing that could place this bucket has changed since it last found no worker.
            if let Some((e, until)) = parked
                && e == epoch
                && until.is_none_or(|u| now < u)
            {
                continue;
            }
            let task = &self.job(head.job).tasks[head.task as usize];
            let tr = &self.tenants[tenant as usize];
            if let Err(block) = policy::task_fits(&tr.quotas, &tr.usage, task.cpu, task.gpus) {
                self.park(bucket, epoch, None);
                self.set_reason(bucket, PendingReason::Quota(block), out);
                continue;
            }
            let zone_key = tr.zones.as_ref().map(|_| tenant);
            if self.strategy == Strategy::Volcano {
                // Jobs in queue order; one whose gang does not fit does not hold back the jobs
                // behind it, and a job is allocated at most once per pass.
                let mut jobs: Vec<u32> = Vec::new();
                for q in &self.queue.buckets[bucket as usize].tasks {
                    if !gangs.contains_key(&q.job) && !jobs.contains(&q.job) {
                        jobs.push(q.job);
                    }
                }
                let mut blocked = None;
                for j in jobs {
                    if !self.gang_fits(j, tenant) {
                        gangs.insert(j, false);
                        blocked.get_or_insert(j);
                        continue;
                    }
                    gangs.insert(j, true);
                    // Volcano allocates a job's tasks together, before the next job.
                    for b in self.allocate_gang(j, now, out).into_iter().chain([bucket]) {
                        if let Some(k) = self.pass_key(b, now) {
                            heap.push(k);
                        }
                    }
                    blocked = None;
                    break;
                }
                if let Some(j) = blocked {
                    let ready = self.ready_tasks(j).len() as u32;
                    self.park(bucket, epoch, None);
                    self.set_reason(bucket, PendingReason::Gang { ready }, out);
                }
                continue;
            }
            if let Some((reason, until)) = failed.get(&(shape, zone_key)) {
                let (reason, until) = (reason.clone(), *until);
                self.park(bucket, epoch, until);
                self.set_reason(bucket, reason, out);
                continue;
            }
            let req = self.request(head.job, task, shape, tr.zones.as_ref());
            let placer = Placer {
                fleet: &self.fleet,
                settings: &self.settings,
                demand: &self.queue.demand,
            };
            match placer.place(&mut self.shapes, &req, &mut self.rr_cursor) {
                Ok((worker, explanation)) => {
                    let splai_cold = explanation.cold_start && self.strategy == Strategy::Splai;
                    if splai_cold
                        && let Some(reason) = self.warm_share_suffices(head, shape, tenant)
                    {
                        failed.insert((shape, zone_key), (reason.clone(), None));
                        self.park(bucket, epoch, None);
                        self.set_reason(bucket, reason, out);
                        continue;
                    }
                    let wait = splai_cold
                        .then(|| self.worth_waiting_for_warm(head, shape, tenant, now))
                        .flatten();
                    if let Some((reason, until)) = wait {
                        failed.insert((shape, zone_key), (reason.clone(), Some(until)));
                        self.park(bucket, epoch, Some(until));
                        self.set_reason(bucket, reason, out);
                        continue;
                    }
                    self.queue.buckets[bucket as usize].parked = None;
                    self.queue.set_blocked(bucket, false);
                    self.queue.remove(bucket, &head);
                    self.assign(head.job, head.task, worker, explanation, now, out);
                    if let Some(k) = self.pass_key(bucket, now) {
                        heap.push(k);
                    }
                }
                Err(reason) => {
                    failed.insert((shape, zone_key), (reason.clone(), None));
                    self.park(bucket, epoch, None);
                    self.set_reason(bucket, reason, out);
                }
            }
        }
    }

    /// The job's tasks in the ready queue, in queue order, with their buckets.
    fn ready_tasks(&self, j: u32) -> Vec<(u32, Queued)> {
        let mut ready: Vec<(u32, Queued)> = (0..self.job(j).tasks.len() as u32)
            .filter(|&t| self.job(j).tasks[t as usize].state == TaskState::Ready)
            .map(|t| self.queued(j, t))
            .collect();
        ready.sort_by_key(|&(_, q)| q);
        ready
    }

    /// Volcano's gang check: whether the job's ready tasks (as many as the fleet could ever hold
    /// at once) fit the free capacity of the healthy workers in the tenant's zones.
    fn gang_fits(&self, j: u32, tenant: u32) -> bool {
        let zones = self.tenants[tenant as usize].zones.as_ref();
        let nodes: Vec<&crate::fleet::WorkerRt> = self
            .fleet
            .workers
            .iter()
            .filter(|w| {
                w.eligible()
                    && zones.is_none_or(|z| {
                        self.fleet.classes[w.class as usize]
                            .sig()
                            .zone
                            .is_some_and(|id| z.contains(id))
                    })
            })
            .collect();
        let capacity: Vec<(u32, u32, u32)> = nodes
            .iter()
            .map(|w| (w.caps.cpu_millis, w.caps.memory_mib, w.caps.gpus))
            .collect();
        let free: Vec<(u32, u32, u32)> = nodes
            .iter()
            .map(|w| (w.free_cpu, w.free_mem, w.free_gpus))
            .collect();
        let tasks: Vec<(u32, u32, u32)> = self
            .ready_tasks(j)
            .iter()
            .map(|&(_, q)| {
                let t = &self.job(j).tasks[q.task as usize];
                (t.cpu, t.mem, t.gpus)
            })
            .collect();
        crate::peers::volcano::gang_ready(&capacity, &free, &tasks)
    }

    /// Places the job's ready tasks one after another, as Volcano's `allocate` does with the
    /// job it pops, stopping at the first that finds no worker or quota. Returns the buckets
    /// it took tasks from.
    fn allocate_gang(&mut self, j: u32, now: Timestamp, out: &mut Vec<Effect>) -> Vec<u32> {
        let mut touched = Vec::new();
        for (bucket, q) in self.ready_tasks(j) {
            let task = &self.job(j).tasks[q.task as usize];
            let (tenant, shape) = {
                let b = &self.queue.buckets[bucket as usize];
                (b.tenant, b.shape)
            };
            let tr = &self.tenants[tenant as usize];
            if let Err(block) = policy::task_fits(&tr.quotas, &tr.usage, task.cpu, task.gpus) {
                self.set_reason(bucket, PendingReason::Quota(block), out);
                break;
            }
            let req = self.request(j, task, shape, tr.zones.as_ref());
            let placer = Placer {
                fleet: &self.fleet,
                settings: &self.settings,
                demand: &self.queue.demand,
            };
            match placer.place(&mut self.shapes, &req, &mut self.rr_cursor) {
                Ok((worker, explanation)) => {
                    self.queue.buckets[bucket as usize].parked = None;
                    self.queue.remove(bucket, &q);
                    self.assign(j, q.task, worker, explanation, now, out);
                    touched.push(bucket);
                }
                Err(reason) => {
                    self.set_reason(bucket, reason, out);
                    break;
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// Whether a task whose best free worker would load its model cold should rather wait for
    /// the workers that have its model warm, because the model already holds its share of the
    /// warm capacity: its share of the task slots, on the workers able to run the task, that
    /// have it warm is at least its share of the work (queued and running tasks) of all models.
    /// A worker with several models warm counts its slots in equal parts to each. A model below
    /// its share is loaded cold, which adds a replica where the demand is; one at its share is
    /// served by the replicas it has, and a cold load would only evict another model's.
    fn warm_share_suffices(&self, head: Queued, shape: u32, tenant: u32) -> Option<PendingReason> {
        let model = self.job(head.job).tasks[head.task as usize].model?;
        let zones = self.tenants[tenant as usize].zones.as_ref();
        let s = &self.shapes.list[shape as usize];
        // How many such tasks fit on an empty worker of a class: by GPUs for a GPU task.
        let slots = |sig: &crate::fleet::ClassSig| -> u32 {
            sig.gpus
                .checked_div(s.gpus)
                .unwrap_or_else(|| (sig.cpu / s.cpu.max(1)).min(sig.mem / s.mem.max(1)))
        };
        let classes = || {
            self.shapes.ranked(shape).iter().filter_map(|&(_, c)| {
                let class = &self.fleet.classes[c as usize];
                let in_zone =
                    zones.is_none_or(|z| class.sig().zone.is_some_and(|id| z.contains(id)));
                in_zone.then(|| (class, f64::from(slots(class.sig()))))
            })
        };
        let (work, all) = self.queue.model_work(model);
        let (work, all) = (work as f64, all as f64);
        // Counting every warm worker's slots whole bounds the share from above: most decisions
        // end here without visiting the warm workers one by one.
        let (mut total, mut bound) = (0f64, 0f64);
        for (class, per) in classes() {
            total += per * class.by_load.len() as f64;
            bound += per * class.warm.get(&model).map_or(0, |s| s.len()) as f64;
        }
        if bound <= 0.0 || bound * all < work * total {
            return None;
        }
        let mut warm = 0f64;
        let mut named: Option<WorkerId> = None;
        for (class, per) in classes() {
            for &(_, _, w) in class.warm.get(&model).into_iter().flatten() {
                let models = self.fleet.workers[w as usize].warm.len().max(1);
                warm += per / models as f64;
                named.get_or_insert(w);
            }
        }
        let w = named?;
        if warm * all < work * total {
            return None;
        }
        Some(PendingReason::WarmShareHeld {
            model: self.fleet.models.name(model).clone(),
            worker: self.fleet.workers[w as usize].name.clone(),
            share: warm / total,
            demand: work / all.max(1.0),
        })
    }

    /// Whether a task whose best free worker would load its model cold should rather wait for
    /// a busy worker that has the model warm. It waits when that worker is expected to free up
    /// within `warmWaitFraction` of the load time still unspent, and for no longer in total than
    /// one model load; a timer makes sure the pass runs again when the wait should end.
    fn worth_waiting_for_warm(
        &mut self,
        head: Queued,
        shape: u32,
        tenant: u32,
        now: Timestamp,
    ) -> Option<(PendingReason, Timestamp)> {
        let load = self.settings.model_load_ms;
        let task = &self.job(head.job).tasks[head.task as usize];
        let model = task.model?;
        // The wait budget starts when the task first chose to wait, not when it became ready:
        // time spent queued behind other work is no reason to load a model cold.
        let since = task.warm_wait_since.unwrap_or(now);
        let waited = now.since(since);
        if waited >= load {
            return None;
        }
        let zones = self.tenants[tenant as usize].zones.as_ref();
        let s = &self.shapes.list[shape as usize];
        let mut best: Option<(Timestamp, WorkerId)> = None;
        // Only the classes that meet the shape's hard constraints, as placement ranked them.
        for &(_, c) in self.shapes.ranked(shape) {
            let class = &self.fleet.classes[c as usize];
            if zones.is_some_and(|z| class.sig().zone.is_none_or(|id| !z.contains(id))) {
                continue;
            }
            let Some(warm) = class.warm.get(&model) else {
                continue;
            };
            for &(_, _, w) in warm.iter().take(16) {
                let wr = &self.fleet.workers[w as usize];
                // When this worker is expected to have room for the task: its attempts' expected
                // ends, earliest first, until what they free makes the task fit. The first end
                // alone is not enough: on a worker shared with other work, the attempt that ends
                // first may free too little.
                let mut ends: Vec<(Timestamp, u32, u32, u32)> = wr
                    .active
                    .iter()
                    .filter_map(|&(j, t)| {
                        let a = &self.job(j).tasks[t as usize];
                        let (_, at, _, cold) = a.state.active()?;
                        let run =
                            (a.hint_ms as f64 / wr.speed) as u64 + if cold { load } else { 0 };
                        Some((at.plus_ms(run).max(now), a.cpu, a.mem, a.gpus))
                    })
                    .collect();
                ends.sort_unstable();
                let (mut cpu, mut mem, mut gpus) = (wr.free_cpu, wr.free_mem, wr.free_gpus);
                let free_at = ends.into_iter().find_map(|(at, c, m, g)| {
                    cpu += c;
                    mem += m;
                    gpus += g;
                    (cpu >= s.cpu && mem >= s.mem && gpus >= s.gpus).then_some(at)
                });
                if let Some(at) = free_at
                    && best.is_none_or(|b| at < b.0)
                {
                    best = Some((at, w));
                }
            }
        }
        let (free_at, w) = best?;
        if free_at.since(now) as f64 >= (load - waited) as f64 * self.settings.warm_wait_fraction {
            return None;
        }
        let give_up = since.plus_ms(load);
        // Look again when the warm worker should be free; if it has overrun its estimate, when
        // the wait runs out.
        let recheck = if free_at > now {
            free_at.min(give_up)
        } else {
            give_up
        };
        self.arm(recheck, Timer::Recheck);
        self.job_mut(head.job).tasks[head.task as usize].warm_wait_since = Some(since);
        Some((
            PendingReason::WaitingForWarmWorker {
                worker: self.fleet.workers[w as usize].name.clone(),
                model: self.fleet.models.name(model).clone(),
                in_ms: free_at.since(now),
            },
            recheck,
        ))
    }

    fn park(&mut self, bucket: u32, epoch: u64, until: Option<Timestamp>) {
        self.queue.buckets[bucket as usize].parked = Some((epoch, until));
    }

    pub(crate) fn assign(
        &mut self,
        j: u32,
        t: u32,
        w: WorkerId,
        explanation: Explanation,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let cold = explanation.cold_start;
        self.job_mut(j).tasks[t as usize].attempt += 1;
        let (attempt, model) = {
            let task = &self.job(j).tasks[t as usize];
            (task.attempt, task.model)
        };
        self.hold(j, t, w, now);
        self.set_state(
            j,
            t,
            TaskState::Assigned {
                worker: w,
                at: now,
                cold,
            },
        );
        if model.is_some() {
            if cold {
                self.stats.cold_starts += 1
            } else {
                self.stats.warm_starts += 1
            }
        }
        self.stats.decisions += 1;
        let job = self.job(j);
        let task = &job.tasks[t as usize];
        out.push(Effect::Assign(Box::new(Assignment {
            job: job.key.clone(),
            task: task.id.clone(),
            attempt,
            worker: explanation.worker.clone(),
            traceparent: traceparent(&job.trace_id, &job.key, &task.id, attempt),
            route: task.route.as_deref().cloned(),
            explanation,
        })));
    }
}
