//! Workers: registration, heartbeats, and health going Healthy, Stale, Lost as they fall silent.

use crate::api::{Capabilities, Health, Outcome};
use crate::engine::{Scheduler, Timer};
use crate::event::{CancelReason, Effect, Heartbeat, Ignored};
use crate::fleet::WorkerId;
use crate::time::Timestamp;

impl Scheduler {
    // ----- workers -----

    pub(crate) fn register(
        &mut self,
        name: &str,
        caps: Capabilities,
        incarnation: u64,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let (w, new) = self.fleet.upsert(name, caps, now);
        if !new && self.fleet.workers[w as usize].incarnation != incarnation {
            self.lose_attempts(w, format!("worker {name} restarted"), now, out);
        }
        self.fleet.workers[w as usize].incarnation = incarnation;
        self.alive(w, now, out);
    }

    /// A sign of life: the worker is healthy again and its health check is re-armed.
    pub(crate) fn alive(&mut self, w: WorkerId, now: Timestamp, out: &mut Vec<Effect>) {
        self.fleet.workers[w as usize].last_heartbeat = now;
        let from = self.fleet.set_health(w, Health::Healthy);
        if from != Health::Healthy {
            out.push(Effect::WorkerHealthChanged {
                worker: self.fleet.workers[w as usize].name.clone(),
                from,
                to: Health::Healthy,
            });
            self.dirty = true;
        }
        let due = now.plus_ms(self.settings.stale_after_ms);
        if self.fleet.workers[w as usize]
            .check_at
            .is_none_or(|at| at > due)
        {
            self.arm_check(w, due);
        }
    }

    pub(crate) fn heartbeat(&mut self, hb: Heartbeat, now: Timestamp, out: &mut Vec<Effect>) {
        let Some(w) = self
            .fleet
            .id(&hb.worker)
            .filter(|&w| self.fleet.workers[w as usize].registered)
        else {
            out.push(Effect::Ignored(Ignored::UnknownWorker {
                worker: hb.worker,
            }));
            return;
        };
        if self.fleet.workers[w as usize].incarnation != hb.incarnation {
            self.lose_attempts(w, format!("worker {} restarted", hb.worker), now, out);
            self.fleet.workers[w as usize].incarnation = hb.incarnation;
        }
        let wr = &mut self.fleet.workers[w as usize];
        wr.slots_seen = wr.slots_seen.max(hb.warm_models.len() as u32);
        // Models being loaded for attempts in flight count as warm until the agent says otherwise.
        let mut warm = hb.warm_models;
        for &(j, t) in &self.fleet.workers[w as usize].active {
            if let Some(m) = self.job(j).tasks[t as usize].model {
                warm.push(self.fleet.models.name(m).to_string());
            }
        }
        self.fleet.set_warm(w, &warm);
        let wr = &mut self.fleet.workers[w as usize];
        wr.utilization = hb.utilization.clamped();
        wr.reported_queue = hb.queue_depth;
        self.alive(w, now, out);
        // Attempts the agent says it runs, as (job, task, attempt) indices.
        let mut listed = Vec::with_capacity(hb.running.len());
        for a in &hb.running {
            if let Some(&j) = self.job_ids.get(a.job.as_str())
                && let Some(t) = self.job(j).task_index(&a.task)
            {
                listed.push((j, t, a.attempt));
            }
        }
        // An attempt assigned here a while ago that the agent does not list never reached it, or
        // its report never came back: it is lost, and the task retries within its budget.
        let grace = self.settings.assignment_grace_ms;
        let missing: Vec<(u32, u32)> = self.fleet.workers[w as usize]
            .active
            .iter()
            .copied()
            .filter(|&(j, t)| {
                let task = &self.job(j).tasks[t as usize];
                task.state
                    .active()
                    .is_some_and(|(_, at, ..)| at.plus_ms(grace) <= now)
                    && !listed.contains(&(j, t, task.attempt))
            })
            .collect();
        for (j, t) in missing {
            let attempt = self.job(j).tasks[t as usize].attempt;
            let why = format!(
                "worker {} is not running attempt {attempt}: the assignment or its report was lost",
                hb.worker
            );
            self.finish_attempt(j, t, now, Outcome::WorkerLost, Some(why), None, true, out);
        }
        for a in hb.running {
            let current = self
                .job_ids
                .get(a.job.as_str())
                .and_then(|&j| {
                    self.job(j)
                        .task_index(&a.task)
                        .map(|t| &self.job(j).tasks[t as usize])
                })
                .is_some_and(|task| {
                    task.attempt == a.attempt && task.state.active().is_some_and(|(aw, ..)| aw == w)
                });
            if !current {
                out.push(Effect::Cancel {
                    job: a.job.as_str().into(),
                    task: a.task.as_str().into(),
                    attempt: a.attempt,
                    worker: self.fleet.workers[w as usize].name.clone(),
                    reason: CancelReason::Orphaned,
                });
            }
        }
    }

    pub(crate) fn arm_check(&mut self, w: WorkerId, at: Timestamp) {
        self.fleet.workers[w as usize].check_at = Some(at);
        self.arm(at, Timer::WorkerCheck { worker: w });
    }

    pub(crate) fn check_worker(&mut self, w: WorkerId, now: Timestamp, out: &mut Vec<Effect>) {
        let wr = &mut self.fleet.workers[w as usize];
        wr.check_at = None;
        if !wr.registered || wr.health == Health::Lost {
            return;
        }
        let silent = now.since(wr.last_heartbeat);
        let last = wr.last_heartbeat;
        let name = wr.name.clone();
        let health = wr.health;
        let (stale, lost) = (
            self.settings.stale_after_ms,
            self.settings
                .lost_after_ms
                .max(self.settings.stale_after_ms),
        );
        if silent >= lost {
            self.fleet.set_health(w, Health::Lost);
            out.push(Effect::WorkerHealthChanged {
                worker: name.clone(),
                from: health,
                to: Health::Lost,
            });
            self.lose_attempts(
                w,
                format!(
                    "worker {name} was lost: no heartbeat for {}s",
                    silent / 1000
                ),
                now,
                out,
            );
            self.dirty = true;
            return;
        }
        let next = if silent >= stale {
            if health == Health::Healthy {
                self.fleet.set_health(w, Health::Stale);
                out.push(Effect::WorkerHealthChanged {
                    worker: name,
                    from: health,
                    to: Health::Stale,
                });
            }
            last.plus_ms(lost)
        } else {
            last.plus_ms(stale)
        };
        self.arm_check(w, next);
    }

    /// Every attempt on the worker is over; each task retries within its budget.
    pub(crate) fn lose_attempts(
        &mut self,
        w: WorkerId,
        why: String,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let active = self.fleet.workers[w as usize].active.clone();
        for (j, t) in active {
            self.finish_attempt(
                j,
                t,
                now,
                Outcome::WorkerLost,
                Some(why.clone()),
                None,
                true,
                out,
            );
        }
    }
}
