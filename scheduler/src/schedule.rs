//! The scheduling pass: ready buckets in priority, fairness and age order, each placed or
//! given the reason it waits.

use crate::engine::{Scheduler, TaskState, Timer, traceparent};
use crate::event::{Assignment, Effect};
use crate::fleet::WorkerId;
use crate::intern::stable_hash;
use crate::place::{PendingReason, Placer, Request};
use crate::policy::{self};
use crate::queue::PassKey;
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
        let aging = self.settings.aging_interval_ms.max(1);
        let boost = (now.since(head.submitted) / aging) as i64;
        let u = &self.tenants[b.tenant as usize].usage;
        let f = &self.fleet;
        let share = |used: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                used as f64 / total as f64
            }
        };
        let dominant = share(u.cpu_millis, f.total_cpu)
            .max(share(u.memory_mib, f.total_mem))
            .max(share(u64::from(u.gpus), f.total_gpus));
        Some(PassKey {
            effective_priority: i64::from(b.priority) + boost,
            inverse_share: u64::MAX - (dominant.clamp(0.0, 1e6) * 1e9) as u64,
            inverse_age: Reverse((head.submitted, head.job_seq)),
            bucket: Reverse(bucket),
        })
    }

    pub(crate) fn set_reason(&mut self, bucket: u32, reason: PendingReason, out: &mut Vec<Effect>) {
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
        let mut failed: FxHashMap<(u32, Option<u32>), PendingReason> = FxHashMap::default();
        while let Some(key) = heap.pop() {
            let bucket = key.bucket.0;
            let Some(&head) = self.queue.head(bucket) else {
                continue;
            };
            let (tenant, shape) = (
                self.queue.buckets[bucket as usize].tenant,
                self.queue.buckets[bucket as usize].shape,
            );
            let task = &self.job(head.job).tasks[head.task as usize];
            let tr = &self.tenants[tenant as usize];
            if let Err(block) = policy::task_fits(&tr.quotas, &tr.usage, task.cpu, task.gpus) {
                self.set_reason(bucket, PendingReason::Quota(block), out);
                continue;
            }
            let zone_key = tr.zones.as_ref().map(|_| tenant);
            if let Some(reason) = failed.get(&(shape, zone_key)) {
                let reason = reason.clone();
                self.set_reason(bucket, reason, out);
                continue;
            }
            let job = self.job(head.job);
            let req = Request {
                shape,
                hint_ms: task.hint_ms,
                allowed_zones: tr.zones.as_ref(),
                strategy: self.strategy,
                rng_key: stable_hash(&[
                    &self.seed.to_le_bytes(),
                    job.key.as_bytes(),
                    task.id.as_bytes(),
                    &task.attempt.to_le_bytes(),
                ]),
            };
            let placer = Placer {
                fleet: &self.fleet,
                settings: &self.settings,
            };
            match placer.place(&mut self.shapes, &req, &mut self.rr_cursor) {
                Ok((worker, explanation)) => {
                    self.queue.remove(bucket, &head);
                    self.assign(head.job, head.task, worker, explanation, now, out);
                    if let Some(k) = self.pass_key(bucket, now) {
                        heap.push(k);
                    }
                }
                Err(reason) => {
                    failed.insert((shape, zone_key), reason.clone());
                    self.set_reason(bucket, reason, out);
                }
            }
        }
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
        let job = self.job_mut(j);
        let task = &mut job.tasks[t as usize];
        task.attempt += 1;
        let (attempt, cpu, mem, gpus, model, timeout) = (
            task.attempt,
            task.cpu,
            task.mem,
            task.gpus,
            task.model,
            task.timeout_ms,
        );
        self.fleet.reserve(w, (j, t), cpu, mem, gpus, model);
        let tenant = self.job(j).tenant as usize;
        let usage = &mut self.tenants[tenant].usage;
        usage.running_tasks += 1;
        usage.cpu_millis += u64::from(cpu);
        usage.memory_mib += u64::from(mem);
        usage.gpus += gpus;
        self.set_state(
            j,
            t,
            TaskState::Assigned {
                worker: w,
                at: now,
                cold,
            },
        );
        if let Some(ms) = timeout {
            self.arm(
                now.plus_ms(ms),
                Timer::TaskTimeout {
                    job: j,
                    task: t,
                    attempt,
                },
            );
        }
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
