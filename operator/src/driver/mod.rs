//! The operator's driver of the core: synchronous, with no I/O and no clock.
//!
//! It turns watch events and agent messages into the core's events, and the core's effects into
//! messages for agents and into [`Flush`]es: batches of writes (job statuses, planned specs,
//! finalizers, worker statuses, execution records, Kubernetes Events) that [`crate::flush`]
//! carries out. Agents' heartbeats are answered only once a flush that includes them succeeded,
//! so a report the operator loses in a crash is sent again by its agent. Time comes in as the
//! `now` of each call, as it comes to the core; [`crate::run`] times each call for the
//! decision-latency metric.
//!
//! This module holds the driver and its inputs; the rest is split by what it owns:
//! - [`effects`]: the core's effects, carried into messages, pending writes, metrics and spans;
//! - [`jobs`]: each job's pending writes and write stage;
//! - [`workers`]: worker creations and coalesced status writes;
//! - [`batch`]: gathering the pending writes into a flush, and settling it;
//! - [`rebuild`]: a driver rebuilt from the listed resources after a restart;
//! - [`object`]: what the driver reads off a `SPLAIJob` (key, finalizer, trace ID).

mod batch;
mod effects;
mod jobs;
mod object;
mod rebuild;
#[cfg(test)]
mod test_support;
mod workers;

use std::sync::Arc;

use splai_protocol::{ControlMessage, Inbound};
use splai_scheduler::{Event, Scheduler, Timestamp};

pub use batch::{Flush, Flushed};
pub use jobs::{AddFinalizer, JobWrite, MAX_JOBS_PER_FLUSH, SeenMeta};
pub use object::{FINALIZER, TRACE_ANNOTATION, trace_id_of};
pub use rebuild::Listed;
pub use workers::WorkerWrite;

use effects::phase_label;
use jobs::{JobEntry, Jobs};
use object::{has_finalizer, key_and_dir, was_seen};
use workers::Workers;

use crate::metrics::Metrics;
use crate::resources::{SPLAIJob, SPLAIModelRoute, SPLAIPolicy, SPLAIWorker};

#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Where agents' `SPLAIWorker`s live.
    pub worker_namespace: String,
    /// A worker's status is rewritten at least this often while it heartbeats, even when
    /// nothing else changed, so that `lastHeartbeat` stays roughly current.
    pub worker_refresh_ms: u64,
}

/// What the driver is told. Agent messages are the common case, so they stay unboxed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    JobApplied(Box<SPLAIJob>),
    JobDeleted(Box<SPLAIJob>),
    WorkerApplied(Box<SPLAIWorker>),
    WorkerDeleted(Box<SPLAIWorker>),
    PolicyApplied(Box<SPLAIPolicy>),
    PolicyDeleted(Box<SPLAIPolicy>),
    RouteApplied(Box<SPLAIModelRoute>),
    RouteDeleted(Box<SPLAIModelRoute>),
    Agent(Inbound),
}

/// A Kubernetes Event to record on an object.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

pub struct Driver {
    core: Scheduler,
    metrics: Arc<Metrics>,
    jobs: Jobs,
    workers: Workers,
    /// Heartbeats to answer, by worker and connection, once the writes they caused are stored.
    acks: Vec<(String, u64)>,
    /// Tasks assigned since [`Driver::take_assigned`] last counted them.
    assigned: u64,
    /// Messages for agents, to send now.
    pub outbox: Vec<(Arc<str>, ControlMessage)>,
}

impl Driver {
    pub fn core(&self) -> &Scheduler {
        &self.core
    }

    /// When the core next needs time to pass.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.core.next_wakeup()
    }

    /// How many tasks were assigned since the last call: the caller, which keeps the clock,
    /// times the calls that assigned them.
    pub fn take_assigned(&mut self) -> u64 {
        std::mem::take(&mut self.assigned)
    }

    pub fn input(&mut self, input: Input, now: Timestamp) {
        match input {
            Input::JobApplied(job) => {
                self.count("job");
                self.job_applied(*job, now);
            }
            Input::JobDeleted(job) => {
                self.count("job");
                self.job_deleted(&job, now);
            }
            Input::WorkerApplied(w) => {
                self.count("worker");
                self.workers.applied(&w);
            }
            Input::WorkerDeleted(w) => {
                self.count("worker");
                if let Some(name) = self.workers.deleted(&w) {
                    self.handle(Event::WorkerRemoved { name }, now);
                }
            }
            Input::PolicyApplied(p) => {
                self.count("policy");
                if let Some(name) = p.metadata.name.clone() {
                    let spec = p.spec.0;
                    self.handle(Event::PolicyUpserted { name, spec }, now);
                }
            }
            Input::PolicyDeleted(p) => {
                self.count("policy");
                if let Some(name) = p.metadata.name.clone() {
                    self.handle(Event::PolicyRemoved { name }, now);
                }
            }
            Input::RouteApplied(r) => {
                self.count("route");
                if let Some(name) = r.metadata.name.clone() {
                    let spec = r.spec.0;
                    self.handle(Event::RouteUpserted { name, spec }, now);
                }
            }
            Input::RouteDeleted(r) => {
                self.count("route");
                if let Some(name) = r.metadata.name.clone() {
                    self.handle(Event::RouteRemoved { name }, now);
                }
            }
            Input::Agent(Inbound::Event {
                worker,
                event,
                connection,
                asks,
            }) => {
                self.count("agent");
                let ack = asks.then(|| (worker.clone(), connection));
                self.agent_event(worker, event, now);
                self.acks.extend(ack);
            }
            Input::Agent(Inbound::Disconnected {
                worker,
                peer,
                reason,
            }) => {
                tracing::info!(worker = worker.as_deref().unwrap_or("-"), %peer, %reason, "agent disconnected");
            }
        }
        self.metrics.queue_depth.set(self.core.queue_len() as i64);
    }

    /// Time passed: the core's timers fire.
    pub fn tick(&mut self, now: Timestamp) {
        self.handle(Event::Tick, now);
        self.metrics.queue_depth.set(self.core.queue_len() as i64);
    }

    fn count(&self, controller: &'static str) {
        self.metrics
            .reconciles
            .get_or_create(&[("controller", controller)])
            .inc();
    }

    fn handle(&mut self, event: Event, now: Timestamp) {
        let effects = self.core.handle(event, now);
        self.apply(effects);
    }

    fn job_applied(&mut self, job: SPLAIJob, now: Timestamp) {
        let (key, dir) = key_and_dir(&job);
        let deleting = job.metadata.deletion_timestamp.is_some();
        if let Some(phase) = self.core.job_phase(&key) {
            let Some(entry) = self.jobs.get_mut(&key) else {
                return;
            };
            entry.generation = job.metadata.generation;
            entry.has_finalizer = has_finalizer(&job);
            if deleting && !entry.deleting {
                entry.deleting = true;
                entry.changed();
                if !phase.is_terminal() {
                    self.handle(Event::JobCanceled { key: key.clone() }, now);
                }
            } else if job.spec.0.cancel && !phase.is_terminal() {
                self.handle(Event::JobCanceled { key: key.clone() }, now);
            }
            return;
        }
        if self.jobs.contains(&key) {
            // Its final writes are under way; it is forgotten once they land.
            return;
        }
        if self.jobs.was_forgotten(&key, &dir.uid) && !deleting {
            return;
        }
        let stored_terminal = job
            .status
            .as_ref()
            .is_some_and(|s| was_seen(&job) && s.job.phase.is_terminal());
        if stored_terminal || (deleting && !was_seen(&job)) {
            if deleting && has_finalizer(&job) {
                self.jobs.release(key, dir);
            }
            return;
        }
        // A new job, or one that a previous leader saw but this one could not restore. Its
        // trace ID is shown in its status (`traceId`), so only a missing finalizer is written
        // to the object itself.
        let trace_id = trace_id_of(&job);
        let finalizer = (!has_finalizer(&job)).then(|| AddFinalizer {
            seen: job.metadata.resource_version.clone().map(|v| SeenMeta {
                resource_version: v,
                finalizers: job.metadata.finalizers.clone().unwrap_or_default(),
            }),
        });
        let entry = JobEntry {
            finalizer,
            conditions: job.status.map(|s| s.conditions).unwrap_or_default(),
            deleting,
            ..JobEntry::new(dir, job.metadata.generation, now.millis())
        };
        self.jobs.insert(key.clone(), entry);
        self.metrics
            .jobs
            .get_or_create(&[("phase", "Queued")])
            .inc();
        let cancel = job.spec.0.cancel || deleting;
        let event = Event::JobSubmitted {
            key: key.clone(),
            spec: job.spec.0,
            trace_id: Some(trace_id),
        };
        self.handle(event, now);
        if cancel {
            self.handle(Event::JobCanceled { key }, now);
        }
    }

    fn job_deleted(&mut self, job: &SPLAIJob, now: Timestamp) {
        let (key, _) = key_and_dir(job);
        let phase = match self.core.job_phase(&key) {
            Some(p) => {
                if !p.is_terminal() {
                    self.handle(Event::JobCanceled { key: key.clone() }, now);
                }
                let p = self.core.job_phase(&key).unwrap_or(p);
                self.handle(Event::JobForgotten { key: key.clone() }, now);
                p
            }
            None => job.status.as_ref().map(|s| s.job.phase).unwrap_or_default(),
        };
        self.jobs.deleted(&key);
        self.metrics
            .jobs
            .get_or_create(&[("phase", phase_label(phase))])
            .dec();
    }

    fn agent_event(&mut self, worker: String, event: Event, now: Timestamp) {
        let job = match &event {
            Event::Heartbeat(_) => {
                self.metrics.heartbeats.inc();
                None
            }
            Event::WorkerRegistered { capabilities, .. } => {
                self.workers.registered(&worker, capabilities);
                None
            }
            Event::TaskStarted { attempt, .. }
            | Event::TaskSucceeded { attempt, .. }
            | Event::TaskFailed { attempt, .. } => Some(attempt.job.clone()),
            _ => None,
        };
        self.workers.touch(&worker);
        if let Some(job) = job {
            self.jobs.changed(&job);
        }
        self.handle(event, now);
    }
}
