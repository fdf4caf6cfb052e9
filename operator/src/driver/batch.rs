//! A flush: every pending job and worker write gathered into one batch with the agent answers
//! that wait for it, and the batch settled once the flusher carried it out.

use splai_scheduler::api::Health;
use splai_scheduler::{Event, Timestamp};

use super::effects::health_label;
use super::{Driver, JobWrite, WorkerWrite};

/// One batch of writes, and the agent answers to send once all of them succeed.
#[derive(Clone, Debug, Default)]
pub struct Flush {
    pub jobs: Vec<JobWrite>,
    pub workers: Vec<WorkerWrite>,
    pub acks: Vec<(String, u64)>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.workers.is_empty() && self.acks.is_empty()
    }
}

/// What came of a flush: the writes that failed are handed back to be tried again.
#[derive(Debug, Default)]
pub struct Flushed {
    pub failed_jobs: Vec<JobWrite>,
    pub failed_workers: Vec<WorkerWrite>,
    /// Jobs whose object is gone (deleted meanwhile): nothing more to write for them.
    pub gone_jobs: Vec<String>,
    pub acks: Vec<(String, u64)>,
}

impl Driver {
    /// Takes every pending write, and the answers that wait for them; `None` when there is
    /// nothing to do.
    pub fn take_flush(&mut self, now: Timestamp) -> Option<Flush> {
        let (jobs, every_job) = self.jobs.take_writes(&self.core, now);
        let mut flush = Flush {
            jobs,
            workers: self.workers.take_writes(&self.core, now),
            ..Flush::default()
        };
        if every_job {
            // Everything received so far is in this flush: the answers can go once it lands.
            flush.acks = std::mem::take(&mut self.acks);
        }
        self.count_workers();
        (!flush.is_empty()).then_some(flush)
    }

    /// Sets the gauges of the fleet by health, and of the policies and routes in force.
    fn count_workers(&self) {
        let mut by_health = [0i64; 4];
        for h in self.core.worker_healths() {
            by_health[h as usize] += 1;
        }
        let (policies, routes) = self.core.policies_and_routes();
        self.metrics.policies.set(policies as i64);
        self.metrics.routes.set(routes as i64);
        for h in [
            Health::Unknown,
            Health::Healthy,
            Health::Stale,
            Health::Lost,
        ] {
            self.metrics
                .workers
                .get_or_create(&[("health", health_label(h))])
                .set(by_health[h as usize]);
        }
    }

    /// Settles a flush: failed writes are queued again, ended jobs whose last writes landed are
    /// dropped from memory, and the answers to send are returned (none if a job's write failed,
    /// so that no agent forgets a report the API does not hold yet). Agents' reports live in
    /// jobs' writes; a worker's status is derived from the core and written again at its next
    /// change, so its failure holds back no answer.
    pub fn flushed(&mut self, done: Flushed, now: Timestamp) -> Vec<(String, u64)> {
        let failed = !done.failed_jobs.is_empty();
        for key in done.gone_jobs {
            if self.core.job_phase(&key).is_some() {
                self.handle(Event::JobForgotten { key: key.clone() }, now);
            }
            self.jobs.remove(&key);
        }
        for w in done.failed_jobs {
            self.metrics
                .reconcile_errors
                .get_or_create(&[("controller", "job")])
                .inc();
            self.jobs.failed(w);
        }
        for w in done.failed_workers {
            self.metrics
                .reconcile_errors
                .get_or_create(&[("controller", "worker")])
                .inc();
            self.workers.failed(w);
        }
        for key in self.jobs.done() {
            self.handle(Event::JobForgotten { key: key.clone() }, now);
            self.jobs.forget(key);
        }
        if failed {
            let mut acks = done.acks;
            acks.append(&mut self.acks);
            self.acks = acks;
            Vec::new()
        } else {
            done.acks
        }
    }
}
