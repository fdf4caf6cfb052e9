//! The operator's driver of the core: synchronous, with no I/O.
//!
//! It turns watch events and agent messages into the core's events, and the core's effects into
//! messages for agents and into [`Flush`]es: batches of writes (job statuses, planned specs,
//! finalizers, worker statuses, execution records, Kubernetes Events) that [`crate::flush`]
//! carries out. Agents' heartbeats are answered only once a flush that includes them succeeded,
//! so a report the operator loses in a crash is sent again by its agent.
//!
//! Heartbeats change only the core's memory. A worker's status is written when something a
//! person or a restart needs changed (health, running tasks, queue depth, warm models), and
//! otherwise at most every `worker_refresh_ms`: a thousand workers beating every second cause
//! a handful of writes per second, not a thousand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use splai_protocol::{ControlMessage, Inbound, TaskAssignment};
use splai_scheduler::api::{
    Capabilities, Dependency, ExecutionRecord, Health, JobPhase, TaskSpec, WorkerStatus,
};
use splai_scheduler::{Effect, Event, JobRecord, Scheduler, Settings, Snapshot, Strategy};
use splai_scheduler::{Timestamp, WorkerRecord};

use crate::artifacts::{AttemptRecord, Decision, JobDir};
use crate::condition::{ConditionStatus, set_condition};
use crate::metrics::Metrics;
use crate::resources::{
    SPLAIJob, SPLAIJobStatus, SPLAIModelRoute, SPLAIPolicy, SPLAIWorker, SPLAIWorkerStatus,
};
use crate::view;

/// Jobs written per flush at most; the rest wait for the next flush.
pub const MAX_JOBS_PER_FLUSH: usize = 256;

/// The finalizer that lets the operator stop a deleted job's tasks before the job goes away.
pub const FINALIZER: &str = "splai.io/stop-tasks";
/// The annotation that carries a job's W3C trace ID; set it at creation to join a caller's trace.
pub const TRACE_ANNOTATION: &str = "splai.io/trace-id";

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

/// The finalizer and trace annotation a job should carry.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaWrite {
    pub add_finalizer: bool,
    pub trace_id: Option<String>,
}

/// Everything to write for one job, in the order the flusher writes it.
#[derive(Clone, Debug)]
pub struct JobWrite {
    pub key: String,
    pub dir: JobDir,
    pub meta: Option<MetaWrite>,
    pub planned: Option<(Vec<TaskSpec>, Vec<Dependency>)>,
    pub chunk: Option<(u64, Vec<AttemptRecord>)>,
    pub status: Option<SPLAIJobStatus>,
    /// The job ended: gather its records into one artifact (and its results, if many) first.
    pub finish: bool,
    pub remove_finalizer: bool,
    pub notes: Vec<Note>,
}

#[derive(Clone, Debug)]
pub struct WorkerWrite {
    pub name: String,
    pub namespace: String,
    /// Create the object first, with these capabilities.
    pub create: Option<Capabilities>,
    pub status: Option<SPLAIWorkerStatus>,
    pub notes: Vec<Note>,
}

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

#[derive(Debug)]
struct JobEntry {
    dir: JobDir,
    generation: Option<i64>,
    meta: Option<MetaWrite>,
    status_dirty: bool,
    planned: Option<(Vec<TaskSpec>, Vec<Dependency>)>,
    records: Vec<AttemptRecord>,
    next_chunk: u64,
    notes: Vec<Note>,
    /// The decision behind each task's attempt in flight, by task id: shown in the status while
    /// it runs, then kept in its record.
    placed: HashMap<String, Placed>,
    /// The last reason the core gave for a task's wait, by task id, until it is placed.
    waited: HashMap<String, String>,
    conditions: Vec<crate::Condition>,
    deleting: bool,
    has_finalizer: bool,
    ended: bool,
    /// The final status (with the records URI) is written or being written; nothing about the
    /// job changes after that, so nothing more is written but its finalizer's removal.
    final_sent: bool,
}

#[derive(Debug, Default)]
struct WorkerEntry {
    /// The `SPLAIWorker` object exists (or its creation is under way).
    exists: bool,
    create: Option<Capabilities>,
    written: Option<WorkerStatus>,
    written_at: u64,
    touched: bool,
    notes: Vec<Note>,
}

pub struct Driver {
    core: Scheduler,
    cfg: DriverConfig,
    metrics: Arc<Metrics>,
    jobs: BTreeMap<String, JobEntry>,
    workers: BTreeMap<String, WorkerEntry>,
    /// Deleted jobs that ended before, whose finalizer still has to go.
    release: Vec<JobWrite>,
    /// Ended jobs dropped from memory, by key, with their uid: a late watch event that shows an
    /// older status of one must not start it again.
    forgotten: HashMap<String, String>,
    acks: Vec<(String, u64)>,
    /// The last job of a flush that could not take every dirty job; the next starts after it.
    flush_cursor: Option<String>,
    /// Messages for agents, to send now.
    pub outbox: Vec<(Arc<str>, ControlMessage)>,
}

/// The decision behind one attempt in flight.
#[derive(Debug)]
struct Placed {
    attempt: u32,
    decision: Decision,
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn job_dir(job: &SPLAIJob) -> JobDir {
    JobDir {
        namespace: job.metadata.namespace.clone().unwrap_or_default(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The span of one attempt, from its assignment to its end, in its job's trace (exported only
/// when OTLP export is on).
fn attempt_span(r: &ExecutionRecord) {
    if !splai_telemetry::exporting() {
        return;
    }
    let mut attributes = vec![
        ("splai.job", r.job.clone()),
        ("splai.task", r.task.clone()),
        ("splai.attempt", r.attempt.to_string()),
        ("splai.worker", r.worker.clone()),
        ("splai.outcome", format!("{:?}", r.outcome)),
    ];
    if let Some(error) = &r.error {
        attributes.push(("splai.error", error.clone()));
    }
    splai_telemetry::record_span(
        "task.attempt",
        &r.traceparent,
        r.assigned_at.millis(),
        r.finished_at.millis(),
        attributes,
    );
}

/// A job's trace ID: its annotation when the caller set one, else its uid, which is already 32
/// hex digits once the dashes are gone.
pub fn trace_id_of(job: &SPLAIJob) -> String {
    if let Some(t) = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRACE_ANNOTATION))
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return t.to_ascii_lowercase();
    }
    let hex: String = job
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 32 && hex.bytes().any(|b| b != b'0') {
        hex
    } else {
        // An object without a proper uid (never from a real API server): a stable stand-in.
        let d = job_dir(job);
        let key = key_of(&d.namespace, &d.name);
        format!("{:016x}{:016x}", fnv(&key), fnv(&format!("{key}/trace")))
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn has_finalizer(job: &SPLAIJob) -> bool {
    job.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn phase_label(p: JobPhase) -> &'static str {
    match p {
        JobPhase::Queued => "Queued",
        JobPhase::Planning => "Planning",
        JobPhase::Scheduled => "Scheduled",
        JobPhase::Running => "Running",
        JobPhase::Completed => "Completed",
        JobPhase::Failed => "Failed",
        JobPhase::Canceled => "Canceled",
    }
}

fn health_label(h: Health) -> &'static str {
    match h {
        Health::Unknown => "Unknown",
        Health::Healthy => "Healthy",
        Health::Stale => "Stale",
        Health::Lost => "Lost",
    }
}

/// Whether the job object was seen by an operator before (its status was written).
fn was_seen(job: &SPLAIJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.job.submitted_at.is_some())
}

/// What [`Driver::rebuild`] starts from: the four resources as listed, and the records written
/// for jobs still running, by job key.
#[derive(Default)]
pub struct Listed {
    pub jobs: Vec<SPLAIJob>,
    pub workers: Vec<SPLAIWorker>,
    pub policies: Vec<SPLAIPolicy>,
    pub routes: Vec<SPLAIModelRoute>,
    pub records: HashMap<String, Vec<ExecutionRecord>>,
}

impl Listed {
    /// The jobs whose records a rebuild needs: seen before and not ended.
    pub fn running_jobs(jobs: &[SPLAIJob]) -> Vec<(String, JobDir)> {
        jobs.iter()
            .filter(|j| was_seen(j))
            .filter(|j| !j.status.as_ref().is_some_and(|s| s.job.phase.is_terminal()))
            .map(|j| {
                let d = job_dir(j);
                (key_of(&d.namespace, &d.name), d)
            })
            .collect()
    }
}

impl Driver {
    /// A driver whose core is rebuilt from `listed`, as after a restart (or the first start,
    /// with nothing listed). Jobs never seen before are submitted as new.
    pub fn rebuild(
        cfg: DriverConfig,
        settings: Settings,
        metrics: Arc<Metrics>,
        listed: Listed,
        now: Timestamp,
    ) -> Self {
        let mut snapshot = Snapshot::default();
        for p in &listed.policies {
            if let Some(name) = &p.metadata.name {
                snapshot.policies.insert(name.clone(), p.spec.0.clone());
            }
        }
        for r in &listed.routes {
            if let Some(name) = &r.metadata.name {
                snapshot.routes.insert(name.clone(), r.spec.0.clone());
            }
        }
        let mut workers = BTreeMap::new();
        for w in &listed.workers {
            let Some(name) = w.metadata.name.clone() else {
                continue;
            };
            let mut status = w.status.clone().unwrap_or_default().worker;
            // Every worker that was alive gets a full window to reconnect to the new leader,
            // rather than being judged on a heartbeat the old one wrote a while ago. Until its
            // agent heartbeats here it is Stale: this leader has not heard from it, and an
            // assignment sent now would go nowhere (its agent may be reconnecting, or gone with
            // the old incarnation) and cost the task a retry. Its first heartbeat makes it
            // Healthy; silence makes it Lost after `lostAfterMs`, as before.
            if matches!(status.health, Health::Healthy | Health::Stale) {
                status.last_heartbeat = Some(now);
                status.health = Health::Stale;
            }
            snapshot.workers.push(WorkerRecord {
                name: name.clone(),
                spec: w.spec.0.clone(),
                status: status.clone(),
            });
            workers.insert(
                name,
                WorkerEntry {
                    exists: true,
                    written: Some(status),
                    written_at: now.millis(),
                    ..WorkerEntry::default()
                },
            );
        }
        let mut fresh = Vec::new();
        let mut ended = Vec::new();
        let mut restored = BTreeMap::new();
        for job in listed.jobs {
            let d = job_dir(&job);
            let key = key_of(&d.namespace, &d.name);
            let stored = job.status.clone().unwrap_or_default();
            if !was_seen(&job) {
                fresh.push(job);
            } else if stored.job.phase.is_terminal() {
                ended.push(job);
            } else {
                let records = listed.records.get(&key).map_or(&[][..], Vec::as_slice);
                let status = view::expand(&stored, &job.spec.0, records);
                // The previous leader's decisions survive only as the status's text.
                let placed = stored
                    .job
                    .tasks
                    .iter()
                    .filter_map(|t| {
                        let decision = Decision {
                            score: t.score.clone()?,
                            placement: None,
                            waited: None,
                        };
                        let attempt = t.attempt;
                        Some((t.id.clone(), Placed { attempt, decision }))
                    })
                    .collect();
                snapshot.jobs.push(JobRecord {
                    key: key.clone(),
                    spec: job.spec.0.clone(),
                    status,
                });
                let next_chunk = records.len() as u64 + 1;
                restored.insert(
                    key,
                    JobEntry {
                        dir: d,
                        generation: job.metadata.generation,
                        meta: None,
                        status_dirty: true,
                        planned: None,
                        records: Vec::new(),
                        // Past every chunk written before, whatever their numbers.
                        next_chunk: now.millis().max(next_chunk),
                        notes: Vec::new(),
                        placed,
                        waited: HashMap::new(),
                        conditions: stored.conditions.clone(),
                        deleting: false,
                        has_finalizer: has_finalizer(&job),
                        ended: false,
                        final_sent: false,
                    },
                );
                // Cancellations and deletions that came while nobody led are applied below.
                fresh.push(job);
            }
        }
        let (core, effects) = Scheduler::rebuild(settings, Strategy::Splai, 0, snapshot, now);
        let mut d = Driver {
            core,
            cfg,
            metrics,
            jobs: restored,
            workers,
            release: Vec::new(),
            forgotten: HashMap::new(),
            acks: Vec::new(),
            flush_cursor: None,
            outbox: Vec::new(),
        };
        for key in d.jobs.keys() {
            if let Some(p) = d.core.job_phase(key) {
                d.metrics
                    .jobs
                    .get_or_create(&[("phase", phase_label(p))])
                    .inc();
            }
        }
        for job in &ended {
            let p = job.status.as_ref().map(|s| s.job.phase).unwrap_or_default();
            d.metrics
                .jobs
                .get_or_create(&[("phase", phase_label(p))])
                .inc();
        }
        d.apply(effects, None);
        for job in ended.into_iter().chain(fresh) {
            d.input(Input::JobApplied(Box::new(job)), now);
        }
        d
    }

    pub fn core(&self) -> &Scheduler {
        &self.core
    }

    /// When the core next needs time to pass.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.core.next_wakeup()
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
                if let Some(name) = &w.metadata.name
                    && w.metadata.namespace.as_deref() == Some(&self.cfg.worker_namespace)
                {
                    self.workers.entry(name.clone()).or_default().exists = true;
                }
            }
            Input::WorkerDeleted(w) => {
                self.count("worker");
                if let Some(name) = w.metadata.name.clone()
                    && w.metadata.namespace.as_deref() == Some(&self.cfg.worker_namespace)
                {
                    self.workers.remove(&name);
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
}

impl Driver {
    fn job_applied(&mut self, job: SPLAIJob, now: Timestamp) {
        let dir = job_dir(&job);
        let key = key_of(&dir.namespace, &dir.name);
        let deleting = job.metadata.deletion_timestamp.is_some();
        if let Some(phase) = self.core.job_phase(&key) {
            let Some(entry) = self.jobs.get_mut(&key) else {
                return;
            };
            entry.generation = job.metadata.generation;
            entry.has_finalizer = has_finalizer(&job);
            if deleting && !entry.deleting {
                entry.deleting = true;
                entry.status_dirty = true;
                if !phase.is_terminal() {
                    self.handle(Event::JobCanceled { key: key.clone() }, now);
                }
            } else if job.spec.0.cancel && !phase.is_terminal() {
                self.handle(Event::JobCanceled { key: key.clone() }, now);
            }
            return;
        }
        if self.jobs.contains_key(&key) {
            // Its final writes are under way; it is forgotten once they land.
            return;
        }
        if self.forgotten.get(&key) == Some(&dir.uid) && !deleting {
            return;
        }
        let stored_terminal = job
            .status
            .as_ref()
            .is_some_and(|s| was_seen(&job) && s.job.phase.is_terminal());
        if stored_terminal || (deleting && !was_seen(&job)) {
            if deleting && has_finalizer(&job) {
                self.release.push(JobWrite {
                    key,
                    dir,
                    meta: None,
                    planned: None,
                    chunk: None,
                    status: None,
                    finish: false,
                    remove_finalizer: true,
                    notes: Vec::new(),
                });
            }
            return;
        }
        // A new job, or one that a previous leader saw but this one could not restore.
        let trace_id = trace_id_of(&job);
        let annotated = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRACE_ANNOTATION))
            .is_some_and(|t| *t == trace_id);
        let meta = (!has_finalizer(&job) || !annotated).then(|| MetaWrite {
            add_finalizer: !has_finalizer(&job),
            trace_id: (!annotated).then(|| trace_id.clone()),
        });
        self.jobs.insert(
            key.clone(),
            JobEntry {
                dir,
                generation: job.metadata.generation,
                meta,
                status_dirty: true,
                planned: None,
                records: Vec::new(),
                next_chunk: now.millis(),
                notes: Vec::new(),
                placed: HashMap::new(),
                waited: HashMap::new(),
                conditions: job.status.map(|s| s.conditions).unwrap_or_default(),
                deleting,
                has_finalizer: true,
                ended: false,
                final_sent: false,
            },
        );
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
        let dir = job_dir(job);
        let key = key_of(&dir.namespace, &dir.name);
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
        self.jobs.remove(&key);
        self.forgotten.remove(&key);
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
                let entry = self.workers.entry(worker.clone()).or_default();
                if !entry.exists {
                    entry.exists = true;
                    entry.create = Some(capabilities.clone());
                }
                None
            }
            Event::TaskStarted { attempt, .. }
            | Event::TaskSucceeded { attempt, .. }
            | Event::TaskFailed { attempt, .. } => Some(attempt.job.clone()),
            _ => None,
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            w.touched = true;
        }
        if let Some(job) = job
            && let Some(entry) = self.jobs.get_mut(&job)
        {
            entry.status_dirty = true;
        }
        self.handle(event, now);
    }

    fn handle(&mut self, event: Event, now: Timestamp) {
        let started = Instant::now();
        let effects = self.core.handle(event, now);
        self.apply(effects, Some(started));
    }

    fn apply(&mut self, effects: Vec<Effect>, started: Option<Instant>) {
        let assigned = effects
            .iter()
            .filter(|e| matches!(e, Effect::Assign(_)))
            .count();
        if assigned > 0
            && let Some(started) = started
        {
            let per = started.elapsed().as_secs_f64() / assigned as f64;
            for _ in 0..assigned {
                self.metrics.decision_seconds.observe(per);
            }
            self.metrics.assignments.inc_by(assigned as u64);
        }
        for effect in effects {
            if let Some((worker, message)) = ControlMessage::from_effect(&effect) {
                let message = match message {
                    ControlMessage::Assign(a) => {
                        let spec = self.core.task_spec(&a.job, &a.task);
                        let a: TaskAssignment = *a;
                        ControlMessage::Assign(Box::new(match spec {
                            Some(spec) => a.with_task_spec(spec),
                            None => a,
                        }))
                    }
                    other => other,
                };
                if let Some(w) = self.workers.get_mut(&*worker) {
                    w.touched = true;
                }
                self.outbox.push((worker, message));
            }
            match effect {
                Effect::JobPhaseChanged {
                    job,
                    from,
                    to,
                    reason,
                    message,
                } => {
                    self.metrics
                        .jobs
                        .get_or_create(&[("phase", phase_label(from))])
                        .dec();
                    self.metrics
                        .jobs
                        .get_or_create(&[("phase", phase_label(to))])
                        .inc();
                    if to.is_terminal()
                        && let Some((trace, submitted)) = self.core.job_trace(&job)
                    {
                        splai_telemetry::record_span(
                            "job",
                            trace,
                            submitted.millis(),
                            self.core.now().millis(),
                            vec![
                                ("splai.job", job.to_string()),
                                ("splai.phase", phase_label(to).to_owned()),
                            ],
                        );
                    }
                    if let Some(e) = self.jobs.get_mut(&*job) {
                        e.status_dirty = true;
                        e.ended |= to.is_terminal();
                        let warning = matches!(to, JobPhase::Failed);
                        let message = message.unwrap_or_else(|| {
                            format!("{} -> {}", phase_label(from), phase_label(to))
                        });
                        e.notes.push(Note {
                            warning,
                            reason: reason.to_owned(),
                            message,
                        });
                    }
                }
                Effect::JobPlanned {
                    job,
                    tasks,
                    dependencies,
                } => {
                    if let Some(e) = self.jobs.get_mut(&*job) {
                        e.planned = Some((tasks, dependencies));
                        e.status_dirty = true;
                    }
                }
                Effect::Assign(a) => {
                    if let Some(e) = self.jobs.get_mut(&*a.job) {
                        let waited = e.waited.remove(&*a.task);
                        let decision = Decision::placed(a.explanation, waited);
                        let attempt = a.attempt;
                        e.placed
                            .insert(a.task.to_string(), Placed { attempt, decision });
                        e.status_dirty = true;
                    }
                }
                Effect::TaskTimedOut {
                    job,
                    task,
                    attempt,
                    worker,
                } => {
                    if let Some(e) = self.jobs.get_mut(&*job) {
                        e.status_dirty = true;
                        e.notes.push(Note {
                            warning: true,
                            reason: "TaskTimedOut".into(),
                            message: format!(
                                "task {task} attempt {attempt} ran past its timeout on {worker}"
                            ),
                        });
                    }
                }
                Effect::AttemptEnded(r) => {
                    attempt_span(&r);
                    if let Some(e) = self.jobs.get_mut(r.job.as_str()) {
                        e.status_dirty = true;
                        // Only this attempt's decision: a later one may already be placed.
                        let decision = match e.placed.get(&r.task) {
                            Some(p) if p.attempt == r.attempt => {
                                e.placed.remove(&r.task).map(|p| p.decision)
                            }
                            _ => None,
                        };
                        e.records.push(AttemptRecord {
                            record: *r,
                            decision,
                        });
                    }
                }
                Effect::WorkerHealthChanged { worker, from, to } => {
                    if let Some(w) = self.workers.get_mut(&*worker) {
                        w.touched = true;
                        w.notes.push(Note {
                            warning: matches!(to, Health::Stale | Health::Lost),
                            reason: health_label(to).into(),
                            message: format!(
                                "worker {worker} went from {} to {}",
                                health_label(from),
                                health_label(to)
                            ),
                        });
                    }
                }
                Effect::Cancel { job, reason, .. } => {
                    self.metrics
                        .cancels
                        .get_or_create(&[("reason", reason.label())])
                        .inc();
                    if let Some(e) = self.jobs.get_mut(&*job) {
                        e.status_dirty = true;
                    }
                }
                Effect::Pending { job, task, reason } => {
                    if let Some(e) = self.jobs.get_mut(&*job) {
                        e.status_dirty = true;
                        e.waited.insert(task.to_string(), reason);
                    }
                }
                Effect::Requeue { job, .. } => {
                    if let Some(e) = self.jobs.get_mut(&*job) {
                        e.status_dirty = true;
                    }
                }
                Effect::Ignored(why) => {
                    tracing::debug!(?why, "ignored");
                    self.metrics
                        .ignored
                        .get_or_create(&[("reason", why.reason())])
                        .inc();
                }
            }
        }
    }

    /// Takes every pending write, and the answers that wait for them; `None` when there is
    /// nothing to do.
    pub fn take_flush(&mut self, now: Timestamp) -> Option<Flush> {
        let mut flush = Flush {
            jobs: std::mem::take(&mut self.release),
            ..Flush::default()
        };
        let mut dirty: Vec<String> = Vec::new();
        for (key, e) in &mut self.jobs {
            if e.final_sent {
                // Late reports for an ended job change nothing worth writing.
                e.status_dirty = false;
                e.records.clear();
                e.notes.clear();
            }
            if e.status_dirty
                || (e.ended && e.deleting && e.has_finalizer)
                || e.meta.is_some()
                || e.planned.is_some()
                || !e.records.is_empty()
                || !e.notes.is_empty()
            {
                dirty.push(key.clone());
            }
        }
        // At most MAX_JOBS_PER_FLUSH jobs per flush, taking turns from where the last one
        // stopped: a burst of submissions then costs bounded memory and no job waits forever.
        if let Some(cursor) = self.flush_cursor.take() {
            let start = dirty.partition_point(|k| *k <= cursor);
            dirty.rotate_left(start);
        }
        let capped = dirty.len() > MAX_JOBS_PER_FLUSH;
        dirty.truncate(MAX_JOBS_PER_FLUSH);
        if capped {
            self.flush_cursor = dirty.last().cloned();
        } else {
            // Everything received so far is in this flush: the answers can go once it lands.
            flush.acks = std::mem::take(&mut self.acks);
        }
        for key in dirty {
            let Some(e) = self.jobs.get_mut(&key) else {
                continue;
            };
            let key = &key;
            let release = e.ended && e.deleting && e.has_finalizer;
            let status = if e.status_dirty {
                self.core.job_status(key).map(|full| {
                    let phase = full.phase;
                    set_job_conditions(&mut e.conditions, &full, e.generation, now);
                    let placed = &e.placed;
                    let score = |task: &str| Some(placed.get(task)?.decision.score.clone());
                    let mut s = view::compact(full, score, e.generation);
                    s.conditions = e.conditions.clone();
                    debug_assert_eq!(s.job.phase, phase);
                    s
                })
            } else {
                None
            };
            let chunk = (!e.records.is_empty()).then(|| {
                e.next_chunk += 1;
                (e.next_chunk, std::mem::take(&mut e.records))
            });
            let finish = e.ended && e.status_dirty;
            e.final_sent |= finish;
            e.has_finalizer &= !release;
            flush.jobs.push(JobWrite {
                key: key.clone(),
                dir: e.dir.clone(),
                meta: e.meta.take(),
                planned: e.planned.take(),
                chunk,
                status,
                finish,
                remove_finalizer: release,
                notes: std::mem::take(&mut e.notes),
            });
            e.status_dirty = false;
        }
        for (name, w) in &mut self.workers {
            if !w.touched && w.create.is_none() && w.notes.is_empty() {
                continue;
            }
            w.touched = false;
            let Some(status) = self.core.worker_status(name) else {
                continue;
            };
            let material = w.written.as_ref().is_none_or(|old| {
                old.health != status.health
                    || old.running_tasks != status.running_tasks
                    || old.queue_depth != status.queue_depth
                    || old.warm_models != status.warm_models
                    || old.incarnation != status.incarnation
            });
            let due = now.millis().saturating_sub(w.written_at) >= self.cfg.worker_refresh_ms;
            let write_status = material || due || w.create.is_some();
            if !write_status && w.notes.is_empty() {
                continue;
            }
            if write_status {
                w.written = Some(status.clone());
                w.written_at = now.millis();
            }
            flush.workers.push(WorkerWrite {
                name: name.clone(),
                namespace: self.cfg.worker_namespace.clone(),
                create: w.create.take(),
                status: write_status.then(|| SPLAIWorkerStatus::new(status, None)),
                notes: std::mem::take(&mut w.notes),
            });
        }
        self.count_workers();
        (!flush.is_empty()).then_some(flush)
    }

    fn count_workers(&self) {
        let mut by_health = [0i64; 4];
        for name in self.core.worker_names() {
            if let Some(h) = self.core.worker_health(&name) {
                by_health[h as usize] += 1;
            }
        }
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
    /// dropped from memory, and the answers to send are returned (none if anything failed, so
    /// that no agent forgets a report the API does not hold yet).
    pub fn flushed(&mut self, done: Flushed, now: Timestamp) -> Vec<(String, u64)> {
        let failed = !done.failed_jobs.is_empty() || !done.failed_workers.is_empty();
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
            let Some(e) = self.jobs.get_mut(&w.key) else {
                if w.remove_finalizer {
                    self.release.push(w);
                }
                continue;
            };
            e.status_dirty |= w.status.is_some() || w.remove_finalizer || w.finish;
            if w.finish {
                e.final_sent = false;
            }
            e.has_finalizer |= w.remove_finalizer;
            if e.meta.is_none() {
                e.meta = w.meta;
            }
            if e.planned.is_none() {
                e.planned = w.planned;
            }
            if let Some((_, mut records)) = w.chunk {
                records.append(&mut e.records);
                e.records = records;
            }
        }
        for w in done.failed_workers {
            self.metrics
                .reconcile_errors
                .get_or_create(&[("controller", "worker")])
                .inc();
            if let Some(e) = self.workers.get_mut(&w.name) {
                e.touched = true;
                e.written = None;
                if w.create.is_some() {
                    e.create = w.create;
                }
            }
        }
        // Ended jobs whose final status is stored leave memory; a job being deleted stays until
        // its object is gone.
        let finished: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, e)| {
                e.ended
                    && !e.status_dirty
                    && e.records.is_empty()
                    && e.meta.is_none()
                    && e.planned.is_none()
                    && !e.deleting
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in finished {
            self.handle(Event::JobForgotten { key: key.clone() }, now);
            if let Some(e) = self.jobs.remove(&key) {
                self.forgotten.insert(key, e.dir.uid);
            }
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

fn set_job_conditions(
    conditions: &mut Vec<crate::Condition>,
    status: &splai_scheduler::api::JobStatus,
    generation: Option<i64>,
    now: Timestamp,
) {
    let reason = status.reason.clone().unwrap_or_else(|| "Submitted".into());
    let message = status.message.clone().unwrap_or_default();
    let admitted = status.started_at.is_some();
    let refused = !admitted && status.phase.is_terminal();
    let (a_status, a_reason) = match (admitted, refused) {
        (true, _) => (ConditionStatus::True, "Admitted".to_owned()),
        (false, true) => (ConditionStatus::False, reason.clone()),
        (false, false) => (ConditionStatus::False, "Queued".to_owned()),
    };
    set_condition(
        conditions, "Admitted", a_status, &a_reason, &message, generation, now,
    );
    let running = matches!(status.phase, JobPhase::Scheduled | JobPhase::Running);
    set_condition(
        conditions,
        "Running",
        if running {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if running {
            "TasksRunning"
        } else {
            "NotRunning"
        },
        "",
        generation,
        now,
    );
    let done = status.phase.is_terminal();
    set_condition(
        conditions,
        "Finished",
        if done {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if done { &reason } else { "InProgress" },
        if done { &message } else { "" },
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use splai_protocol::Inbound;
    use splai_scheduler::Heartbeat;
    use splai_scheduler::api::{JobSpec, Resources, TaskSpec};

    use super::*;
    use crate::resources::SPLAIJobSpec;

    fn driver() -> Driver {
        let cfg = DriverConfig {
            worker_namespace: "sys".into(),
            worker_refresh_ms: 30_000,
        };
        let metrics = Arc::new(Metrics::default());
        Driver::rebuild(
            cfg,
            Settings::default(),
            metrics,
            Listed::default(),
            Timestamp(1_000),
        )
    }

    fn job(i: usize) -> SPLAIJob {
        let spec = JobSpec {
            tenant: "t".into(),
            tasks: vec![TaskSpec {
                id: "only".into(),
                resources: Resources {
                    cpu_millis: 100,
                    memory_mib: 64,
                    gpus: 0,
                },
                ..TaskSpec::default()
            }],
            ..JobSpec::default()
        };
        let mut job = SPLAIJob::new(&format!("job-{i:04}"), SPLAIJobSpec(spec));
        job.metadata.namespace = Some("ns".into());
        job.metadata.uid = Some(format!("0f2504e0-4f89-11d3-9a0c-{i:012}"));
        job
    }

    fn heartbeat(d: &mut Driver, connection: u64) {
        let event = Event::Heartbeat(Heartbeat {
            worker: "w1".into(),
            incarnation: 1,
            ..Heartbeat::default()
        });
        d.input(
            Input::Agent(Inbound::Event {
                worker: "w1".into(),
                event,
                connection,
                asks: true,
            }),
            Timestamp(2_000),
        );
    }

    #[test]
    fn a_burst_is_written_in_bounded_flushes_and_answers_wait_for_the_last_of_them() {
        let mut d = driver();
        let n = MAX_JOBS_PER_FLUSH * 2 + 10;
        for i in 0..n {
            d.input(Input::JobApplied(Box::new(job(i))), Timestamp(2_000));
        }
        heartbeat(&mut d, 7);
        let mut written = std::collections::BTreeSet::new();
        let mut answered = Vec::new();
        for round in 0..3 {
            let flush = d.take_flush(Timestamp(3_000)).expect("work to flush");
            assert!(flush.jobs.len() <= MAX_JOBS_PER_FLUSH);
            assert_eq!(flush.acks.is_empty(), round < 2, "round {round}");
            for w in &flush.jobs {
                assert!(written.insert(w.key.clone()), "{} written twice", w.key);
                // Every new job gets its finalizer and trace annotation with its first status.
                assert!(w.meta.as_ref().is_some_and(|m| m.add_finalizer));
                assert!(w.status.is_some());
            }
            let acks = flush.acks.clone();
            answered.extend(d.flushed(
                Flushed {
                    acks,
                    ..Flushed::default()
                },
                Timestamp(3_000),
            ));
        }
        assert_eq!(written.len(), n);
        assert_eq!(answered, [("w1".to_owned(), 7)]);
    }

    #[test]
    fn a_failed_write_is_queued_again_and_holds_the_answers_back() {
        let mut d = driver();
        d.input(Input::JobApplied(Box::new(job(1))), Timestamp(2_000));
        heartbeat(&mut d, 3);
        let flush = d.take_flush(Timestamp(3_000)).unwrap();
        let done = Flushed {
            failed_jobs: flush.jobs.clone(),
            acks: flush.acks.clone(),
            ..Flushed::default()
        };
        assert!(d.flushed(done, Timestamp(3_000)).is_empty());
        let again = d.take_flush(Timestamp(3_100)).unwrap();
        assert_eq!(again.jobs.len(), 1);
        assert!(again.jobs[0].status.is_some());
        assert!(again.jobs[0].meta.is_some());
        assert_eq!(again.acks, [("w1".to_owned(), 3)]);
    }

    #[test]
    fn after_a_restart_no_task_goes_to_a_worker_until_its_agent_heartbeats_to_the_new_leader() {
        let mut worker = SPLAIWorker::new(
            "w1",
            crate::SPLAIWorkerSpec(splai_scheduler::api::WorkerSpec {
                capabilities: Capabilities {
                    cpu_millis: 1000,
                    memory_mib: 1024,
                    ..Capabilities::default()
                },
            }),
        );
        worker.metadata.namespace = Some("sys".into());
        worker.status = Some(crate::SPLAIWorkerStatus {
            worker: WorkerStatus {
                health: Health::Healthy,
                last_heartbeat: Some(Timestamp(500)),
                incarnation: 1,
                ..WorkerStatus::default()
            },
            ..Default::default()
        });
        let listed = Listed {
            workers: vec![worker],
            ..Listed::default()
        };
        let cfg = DriverConfig {
            worker_namespace: "sys".into(),
            worker_refresh_ms: 30_000,
        };
        let mut d = Driver::rebuild(
            cfg,
            Settings::default(),
            Arc::new(Metrics::default()),
            listed,
            Timestamp(1_000),
        );
        assert_eq!(d.core().worker_health("w1"), Some(Health::Stale));
        d.input(Input::JobApplied(Box::new(job(1))), Timestamp(1_500));
        let assigned = |d: &Driver| {
            d.outbox
                .iter()
                .any(|(_, m)| matches!(m, ControlMessage::Assign(_)))
        };
        assert!(!assigned(&d), "assigned before the agent was heard from");
        heartbeat(&mut d, 1);
        assert_eq!(d.core().worker_health("w1"), Some(Health::Healthy));
        assert!(
            assigned(&d),
            "the heartbeat makes the worker placeable again"
        );
    }

    #[test]
    fn a_job_without_a_caller_trace_id_takes_its_uid_as_the_trace_id() {
        let j = job(5);
        assert_eq!(trace_id_of(&j), "0f2504e04f8911d39a0c000000000005");
        let mut annotated = job(6);
        annotated.metadata.annotations = Some(
            [(TRACE_ANNOTATION.to_owned(), "AB".repeat(16))]
                .into_iter()
                .collect(),
        );
        assert_eq!(trace_id_of(&annotated), "ab".repeat(16));
    }

    fn from_agent(d: &mut Driver, event: Event, now: u64) {
        let input = Input::Agent(Inbound::Event {
            worker: "w1".into(),
            event,
            connection: 1,
            asks: false,
        });
        d.input(input, Timestamp(now));
    }

    #[test]
    fn an_attempts_record_keeps_the_decision_that_placed_it_and_why_the_task_waited() {
        let mut d = driver();
        d.input(Input::JobApplied(Box::new(job(1))), Timestamp(2_000));
        // No worker yet: the task waits, and the core says why.
        let capabilities = Capabilities {
            cpu_millis: 1000,
            memory_mib: 1024,
            ..Capabilities::default()
        };
        let registered = Event::WorkerRegistered {
            name: "w1".into(),
            capabilities,
            incarnation: 1,
        };
        from_agent(&mut d, registered, 2_100);
        heartbeat(&mut d, 1);
        let attempt = splai_scheduler::api::AttemptRef {
            job: "ns/job-0001".into(),
            task: "only".into(),
            attempt: 1,
        };
        let succeeded = Event::TaskSucceeded {
            attempt,
            worker: "w1".into(),
            artifact_uri: None,
        };
        from_agent(&mut d, succeeded, 2_500);
        let flush = d.take_flush(Timestamp(3_000)).unwrap();
        let (_, records) = flush.jobs[0].chunk.clone().expect("the attempt's record");
        let decision = records[0].decision.clone().expect("its decision");
        assert_eq!(records[0].record.worker, "w1");
        let placement = decision.placement.expect("the explanation in numbers");
        assert_eq!(&*placement.worker, "w1");
        assert!(
            decision.score.starts_with("splai chose w1 (score"),
            "{}",
            decision.score
        );
        let waited = decision.waited.expect("why it waited");
        assert!(!waited.is_empty());
    }
}
