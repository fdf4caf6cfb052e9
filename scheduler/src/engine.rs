//! The scheduler: one synchronous state machine, `handle(event, now) -> effects`, that both the
//! operator and the simulator drive.
//!
//! Every call first fires the timers due by `now` (backoffs, task and job timeouts, worker
//! health checks), then applies the event, then runs a scheduling pass if anything changed.
//! So the outcome depends on the events and their times, never on how often a driver ticks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::api::{
    AttemptRef, Capabilities, Health, JobPhase, JobSpec, ModelRouteSpec, Outcome, PolicySpec,
    Progress, Quotas, ResolvedRoute, RetryPolicy, TaskKind, TaskPhase,
};
use crate::dag::Dag;
use crate::event::{Assignment, CancelReason, Effect, Event, Heartbeat, Ignored};
use crate::fleet::{Fleet, WorkerId};
use crate::intern::{BitSet, Interner, stable_hash};
use crate::place::{PendingReason, Placer, Request, Shape, Shapes};
use crate::policy::{self, Usage};
use crate::queue::{PassKey, Queued, ReadyQueue};
use crate::route::{self, RouteQuery};
use crate::score::{Explanation, Strategy};
use crate::settings::Settings;
use crate::time::Timestamp;

/// The state of one task, each state holding its own data.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TaskState {
    Waiting,
    Ready,
    Retrying {
        not_before: Timestamp,
    },
    Assigned {
        worker: WorkerId,
        at: Timestamp,
        cold: bool,
    },
    Running {
        worker: WorkerId,
        at: Timestamp,
        started: Timestamp,
        cold: bool,
    },
    Succeeded {
        at: Timestamp,
        artifact: Option<Box<str>>,
    },
    Failed {
        at: Timestamp,
    },
    TimedOut {
        at: Timestamp,
    },
    Canceled {
        at: Timestamp,
    },
    Skipped {
        at: Timestamp,
    },
}

impl TaskState {
    pub fn phase(&self) -> TaskPhase {
        match self {
            TaskState::Waiting => TaskPhase::Waiting,
            TaskState::Ready => TaskPhase::Ready,
            TaskState::Retrying { .. } => TaskPhase::Retrying,
            TaskState::Assigned { .. } => TaskPhase::Assigned,
            TaskState::Running { .. } => TaskPhase::Running,
            TaskState::Succeeded { .. } => TaskPhase::Succeeded,
            TaskState::Failed { .. } => TaskPhase::Failed,
            TaskState::TimedOut { .. } => TaskPhase::TimedOut,
            TaskState::Canceled { .. } => TaskPhase::Canceled,
            TaskState::Skipped { .. } => TaskPhase::Skipped,
        }
    }

    /// The worker, assignment time, start time and coldness of the attempt in flight.
    pub fn active(&self) -> Option<(WorkerId, Timestamp, Option<Timestamp>, bool)> {
        match *self {
            TaskState::Assigned { worker, at, cold } => Some((worker, at, None, cold)),
            TaskState::Running {
                worker,
                at,
                started,
                cold,
            } => Some((worker, at, Some(started), cold)),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct TaskRt {
    pub id: Arc<str>,
    pub state: TaskState,
    /// The current or last attempt, from 1; 0 before the first.
    pub attempt: u32,
    /// Parents that have not succeeded.
    pub unmet: u32,
    pub bucket: u32,
    pub cpu: u32,
    pub mem: u32,
    pub gpus: u32,
    pub model: Option<u32>,
    pub hint_ms: u64,
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    pub error: Option<Box<str>>,
    pub route: Option<Box<ResolvedRoute>>,
}

#[derive(Debug)]
pub(crate) struct JobRt {
    pub key: Arc<str>,
    pub seq: u64,
    pub tenant: u32,
    pub priority: i32,
    pub phase: JobPhase,
    pub reason: Option<&'static str>,
    pub message: Option<String>,
    pub submitted: Timestamp,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub timeout_ms: Option<u64>,
    pub dag: Dag,
    pub tasks: Vec<TaskRt>,
    pub task_ids: FxHashMap<Arc<str>, u32>,
    pub progress: Progress,
    pub trace_id: Arc<str>,
    pub cancel_requested: bool,
    /// The spec as admitted, with the planner's tasks.
    pub spec: Arc<JobSpec>,
}

#[derive(Debug, Default)]
pub(crate) struct TenantRt {
    pub name: Arc<str>,
    pub usage: Usage,
    pub quotas: Quotas,
    pub zones: Option<BitSet>,
    /// Jobs waiting for the running-jobs quota: highest priority, then oldest, first.
    pub admission: BTreeSet<(Reverse<i32>, Timestamp, u64, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Backoff { job: u32, task: u32, attempt: u32 },
    TaskTimeout { job: u32, task: u32, attempt: u32 },
    JobTimeout { job: u32 },
    WorkerCheck { worker: u32 },
}

/// Counters a driver may report as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub decisions: u64,
    pub passes: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub ignored_reports: u64,
    pub cold_starts: u64,
    pub warm_starts: u64,
}

use serde::Serialize;

/// The scheduling core. See the crate docs for the model.
pub struct Scheduler {
    pub(crate) settings: Settings,
    pub(crate) strategy: Strategy,
    pub(crate) seed: u64,
    pub(crate) now: Timestamp,
    pub(crate) jobs: Vec<Option<JobRt>>,
    pub(crate) job_ids: FxHashMap<Arc<str>, u32>,
    pub(crate) next_job_seq: u64,
    pub(crate) fleet: Fleet,
    pub(crate) shapes: Shapes,
    pub(crate) queue: ReadyQueue,
    pub(crate) timers: BinaryHeap<Reverse<(Timestamp, u64, Timer)>>,
    pub(crate) timer_seq: u64,
    pub(crate) tenants: Vec<TenantRt>,
    pub(crate) tenant_ids: Interner,
    pub(crate) policies: BTreeMap<String, PolicySpec>,
    pub(crate) routes: BTreeMap<String, ModelRouteSpec>,
    pub(crate) dirty: bool,
    pub(crate) rr_cursor: usize,
    pub(crate) stats: Stats,
}

impl Scheduler {
    /// A scheduler with no jobs or workers. `seed` drives every random choice it makes.
    pub fn new(settings: Settings, strategy: Strategy, seed: u64) -> Self {
        Scheduler {
            settings,
            strategy,
            seed,
            now: Timestamp::ZERO,
            jobs: Vec::new(),
            job_ids: FxHashMap::default(),
            next_job_seq: 0,
            fleet: Fleet::default(),
            shapes: Shapes::default(),
            queue: ReadyQueue::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            tenants: Vec::new(),
            tenant_ids: Interner::default(),
            policies: BTreeMap::new(),
            routes: BTreeMap::new(),
            dirty: false,
            rr_cursor: 0,
            stats: Stats::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Ready tasks waiting for a worker.
    pub fn queue_len(&self) -> usize {
        self.queue.len
    }

    /// When the next timer fires; a discrete-event driver sleeps until then.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Applies one event at time `now` and returns what the drivers must do.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Vec<Effect> {
        let mut out = Vec::new();
        self.now = self.now.max(now);
        let now = self.now;
        self.fire_timers(now, &mut out);
        match event {
            Event::JobSubmitted {
                key,
                spec,
                trace_id,
            } => self.submit(&key, spec, trace_id, now, &mut out),
            Event::JobCanceled { key } => match self.job_ids.get(key.as_str()) {
                Some(&j) => {
                    self.job_mut(j).cancel_requested = true;
                    self.terminate(
                        j,
                        JobPhase::Canceled,
                        "Canceled",
                        "the job was canceled".into(),
                        now,
                        &mut out,
                    )
                }
                None => out.push(Effect::Ignored(Ignored::UnknownJob { job: key })),
            },
            Event::JobForgotten { key } => self.forget(&key, &mut out),
            Event::WorkerRegistered {
                name,
                capabilities,
                incarnation,
            } => self.register(&name, capabilities, incarnation, now, &mut out),
            Event::WorkerRemoved { name } => match self.fleet.id(&name) {
                Some(w) => {
                    self.lose_attempts(w, format!("worker {name} was removed"), now, &mut out);
                    self.fleet.deregister(w);
                }
                None => out.push(Effect::Ignored(Ignored::UnknownWorker { worker: name })),
            },
            Event::Heartbeat(hb) => self.heartbeat(hb, now, &mut out),
            Event::TaskStarted { attempt, worker } => self.started(attempt, &worker, now, &mut out),
            Event::TaskSucceeded {
                attempt,
                worker,
                artifact_uri,
            } => {
                if let Some((j, t)) = self.fence(&attempt, &worker, &mut out) {
                    self.mark_running(j, now, &mut out);
                    self.finish_attempt(
                        j,
                        t,
                        now,
                        Outcome::Succeeded,
                        None,
                        artifact_uri,
                        true,
                        &mut out,
                    );
                }
            }
            Event::TaskFailed {
                attempt,
                worker,
                error,
                retryable,
            } => {
                if let Some((j, t)) = self.fence(&attempt, &worker, &mut out) {
                    self.mark_running(j, now, &mut out);
                    self.finish_attempt(
                        j,
                        t,
                        now,
                        Outcome::Failed,
                        Some(error),
                        None,
                        retryable,
                        &mut out,
                    );
                }
            }
            Event::PolicyUpserted { name, spec } => {
                self.policies.insert(name, spec);
                self.refresh_tenants(now, &mut out);
            }
            Event::PolicyRemoved { name } => {
                if self.policies.remove(&name).is_none() {
                    out.push(Effect::Ignored(Ignored::UnknownPolicy { name }));
                }
                self.refresh_tenants(now, &mut out);
            }
            Event::RouteUpserted { name, spec } => {
                self.routes.insert(name, spec);
            }
            Event::RouteRemoved { name } => {
                if self.routes.remove(&name).is_none() {
                    out.push(Effect::Ignored(Ignored::UnknownRoute { name }));
                }
            }
            Event::Tick => {}
        }
        self.schedule(now, &mut out);
        out
    }

    pub(crate) fn job(&self, j: u32) -> &JobRt {
        self.jobs[j as usize].as_ref().expect("live job index")
    }

    pub(crate) fn job_mut(&mut self, j: u32) -> &mut JobRt {
        self.jobs[j as usize].as_mut().expect("live job index")
    }

    fn live(&self, j: u32) -> bool {
        self.jobs.get(j as usize).is_some_and(Option::is_some)
    }

    pub(crate) fn arm(&mut self, at: Timestamp, timer: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, timer)));
    }

    fn fire_timers(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        while let Some(&Reverse((at, _, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            // Timers are never removed when their reason goes away: each checks that it still applies.
            match timer {
                Timer::Backoff { job, task, attempt } => {
                    if self.live(job) {
                        let t = &self.job(job).tasks[task as usize];
                        if t.attempt == attempt && matches!(t.state, TaskState::Retrying { .. }) {
                            self.make_ready(job, task);
                        }
                    }
                }
                Timer::TaskTimeout { job, task, attempt } => {
                    if !self.live(job) {
                        continue;
                    }
                    let t = &self.job(job).tasks[task as usize];
                    if t.attempt != attempt {
                        continue;
                    }
                    let Some((w, _, _, _)) = t.state.active() else {
                        continue;
                    };
                    let limit = t.timeout_ms.unwrap_or(0);
                    let (jk, tk, wk) = (
                        self.job(job).key.clone(),
                        t.id.clone(),
                        self.fleet.workers[w as usize].name.clone(),
                    );
                    out.push(Effect::Cancel {
                        job: jk.clone(),
                        task: tk.clone(),
                        attempt,
                        worker: wk.clone(),
                        reason: CancelReason::TaskTimedOut,
                    });
                    out.push(Effect::TaskTimedOut {
                        job: jk,
                        task: tk,
                        attempt,
                        worker: wk,
                    });
                    self.stats.timeouts += 1;
                    let error = format!(
                        "attempt {attempt} ran past its timeout of {}s",
                        limit / 1000
                    );
                    self.finish_attempt(
                        job,
                        task,
                        at,
                        Outcome::TimedOut,
                        Some(error),
                        None,
                        true,
                        out,
                    );
                }
                Timer::JobTimeout { job } => {
                    if self.live(job) && !self.job(job).phase.is_terminal() {
                        let secs = self.job(job).timeout_ms.unwrap_or(0) / 1000;
                        let msg = format!(
                            "the job ran past its timeout of {secs}s; its unfinished tasks were canceled"
                        );
                        self.terminate(job, JobPhase::Failed, "JobTimedOut", msg, at, out);
                    }
                }
                Timer::WorkerCheck { worker } => {
                    if self.fleet.workers[worker as usize].check_at == Some(at) {
                        self.check_worker(worker, at, out);
                    }
                }
            }
        }
    }

    // ----- jobs -----

    pub(crate) fn tenant_id(&mut self, name: &str) -> u32 {
        let id = self.tenant_ids.intern(name);
        if id as usize == self.tenants.len() {
            self.tenants.push(TenantRt {
                name: name.into(),
                ..TenantRt::default()
            });
            self.refresh_tenant(id);
        }
        id
    }

    /// The policy that governs a tenant's quotas and placement: its own, else the `*` policy.
    fn tenant_policy(&self, tenant: &str) -> Option<(&String, &PolicySpec)> {
        self.policies
            .iter()
            .find(|(_, p)| p.tenant == tenant)
            .or_else(|| self.policies.iter().find(|(_, p)| p.tenant == "*"))
    }

    pub(crate) fn refresh_tenant(&mut self, id: u32) {
        let name = self.tenants[id as usize].name.clone();
        let (quotas, zones) = match self.tenant_policy(&name) {
            Some((_, p)) => (
                p.quotas,
                (!p.allowed_localities.is_empty()).then(|| p.allowed_localities.clone()),
            ),
            None => (Quotas::default(), None),
        };
        let zones = zones.map(|z| {
            BitSet::from_ids(
                z.iter()
                    .map(|z| self.fleet.zones.intern(z))
                    .collect::<Vec<_>>(),
            )
        });
        let t = &mut self.tenants[id as usize];
        t.quotas = quotas;
        t.zones = zones;
    }

    fn refresh_tenants(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        for id in 0..self.tenants.len() as u32 {
            self.refresh_tenant(id);
            self.admit_waiting(id, now, out);
        }
        self.dirty = true;
    }

    fn submit(
        &mut self,
        key: &str,
        mut spec: JobSpec,
        trace_id: Option<String>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        if self.job_ids.contains_key(key) {
            out.push(Effect::Ignored(Ignored::DuplicateJob {
                job: key.to_owned(),
            }));
            return;
        }
        let key: Arc<str> = key.into();
        let seq = self.next_job_seq;
        self.next_job_seq += 1;
        let tenant = self.tenant_id(&spec.tenant);
        let trace_id: Arc<str> = match trace_id {
            Some(t) => t.into(),
            None => derive_trace_id(&key, now).into(),
        };
        let mut job = JobRt {
            key: key.clone(),
            seq,
            tenant,
            priority: spec.priority,
            phase: JobPhase::Queued,
            reason: None,
            message: None,
            submitted: now,
            started: None,
            finished: None,
            timeout_ms: spec.timeout_seconds.map(|s| s.saturating_mul(1000)),
            dag: Dag::default(),
            tasks: Vec::new(),
            task_ids: FxHashMap::default(),
            progress: Progress::default(),
            trace_id,
            cancel_requested: spec.cancel,
            spec: Arc::new(JobSpec::default()),
        };
        let j = self.jobs.len() as u32;
        match self.prepare(&mut spec) {
            Ok((dag, planned, routes)) => {
                if planned {
                    out.push(Effect::JobPlanned {
                        job: key.clone(),
                        tasks: spec.tasks.clone(),
                        dependencies: spec.dependencies.clone(),
                    });
                }
                job.dag = dag;
                self.build_tasks(&mut job, &spec, Some(routes));
                let canceled = spec.cancel;
                job.spec = Arc::new(spec);
                self.jobs.push(Some(job));
                self.job_ids.insert(key, j);
                if canceled {
                    self.terminate(
                        j,
                        JobPhase::Canceled,
                        "Canceled",
                        "the job was submitted canceled".into(),
                        now,
                        out,
                    );
                } else {
                    self.enqueue_admission(j);
                    self.admit_waiting(tenant, now, out);
                }
            }
            Err((reason, message)) => {
                job.spec = Arc::new(spec);
                job.phase = JobPhase::Failed;
                job.reason = Some(reason);
                job.message = Some(message.clone());
                job.finished = Some(now);
                self.jobs.push(Some(job));
                self.job_ids.insert(key.clone(), j);
                out.push(Effect::JobPhaseChanged {
                    job: key,
                    from: JobPhase::Queued,
                    to: JobPhase::Failed,
                    reason,
                    message: Some(message),
                });
            }
        }
    }

    /// Plans, validates and checks a spec against policy, and routes its inference tasks.
    /// Errors are (reason, message).
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        spec: &mut JobSpec,
    ) -> Result<(Dag, bool, Vec<Option<ResolvedRoute>>), (&'static str, String)> {
        let planned = crate::plan::expand_into(spec, self.settings.limits.max_tasks_per_job)
            .map_err(|e| ("ValidationFailed", e.to_string()))?;
        let dag = crate::dag::validate(spec, &self.settings.limits)
            .map_err(|e| ("ValidationFailed", e.to_string()))?;
        let policy = match &spec.policy_ref {
            Some(name) => match self.policies.get(name) {
                Some(p) if p.tenant == spec.tenant || p.tenant == "*" => Some((name, p)),
                Some(p) => {
                    return Err((
                        "PolicyDenied",
                        format!(
                            "policy `{name}` governs tenant `{}`, not `{}`: reference a policy of your own tenant",
                            p.tenant, spec.tenant
                        ),
                    ));
                }
                None => {
                    return Err((
                        "PolicyNotFound",
                        format!("policy `{name}` does not exist: create it or drop spec.policyRef"),
                    ));
                }
            },
            None => self.tenant_policy(&spec.tenant),
        };
        if let Some((name, p)) = policy {
            let denials = policy::check_job(name, p, spec);
            if !denials.is_empty() {
                return Err(("PolicyDenied", denials.join("; ")));
            }
        }
        let mut routes = Vec::with_capacity(spec.tasks.len());
        let mut unrouted = Vec::new();
        for t in &spec.tasks {
            if self.routes.is_empty() || t.kind != TaskKind::Inference {
                routes.push(None);
                continue;
            }
            let q = RouteQuery {
                tenant: &spec.tenant,
                model: t.model.as_deref().unwrap_or_default(),
                interaction_class: t.interaction_class,
                reasoning_required: t.reasoning_required,
                classification: t.classification.as_deref(),
            };
            match route::resolve(self.routes.iter().map(|(n, r)| (n.as_str(), r)), &q) {
                Ok(r) => routes.push(Some(r)),
                Err(e) => {
                    routes.push(None);
                    unrouted.push(format!("task `{}`: {e}", t.id));
                }
            }
        }
        if !unrouted.is_empty() {
            return Err(("NoModelRoute", unrouted.join("; ")));
        }
        Ok((dag, planned, routes))
    }

    pub(crate) fn build_tasks(
        &mut self,
        job: &mut JobRt,
        spec: &JobSpec,
        routes: Option<Vec<Option<ResolvedRoute>>>,
    ) {
        let mut routes = routes.map(Vec::into_iter);
        job.tasks.reserve_exact(spec.tasks.len());
        for (i, t) in spec.tasks.iter().enumerate() {
            let f = &mut self.fleet;
            let shape = Shape {
                cpu: t.resources.cpu_millis,
                mem: t.resources.memory_mib,
                gpus: t.resources.gpus,
                model: t.model.as_deref().map(|m| f.models.intern(m)),
                tools: BitSet::from_ids(
                    t.tools
                        .iter()
                        .map(|x| f.tools.intern(x))
                        .collect::<Vec<_>>(),
                ),
                locality: t.locality.as_deref().map(|z| f.zones.intern(z)),
                classification: t
                    .classification
                    .as_deref()
                    .map(|c| f.classifications.intern(c)),
            };
            let model = shape.model;
            let shape = self.shapes.intern(shape);
            let bucket = self.queue.bucket_of(job.priority, job.tenant, shape);
            let route = routes
                .as_mut()
                .and_then(Iterator::next)
                .flatten()
                .map(Box::new);
            let id: Arc<str> = t.id.as_str().into();
            job.task_ids.insert(id.clone(), i as u32);
            job.tasks.push(TaskRt {
                id,
                state: TaskState::Waiting,
                attempt: 0,
                unmet: job.dag.parents(i as u32).len() as u32,
                bucket,
                cpu: t.resources.cpu_millis,
                mem: t.resources.memory_mib,
                gpus: t.resources.gpus,
                model,
                hint_ms: t
                    .expected_duration_ms
                    .unwrap_or(self.settings.default_duration_ms),
                timeout_ms: t.timeout_seconds.map(|s| s.saturating_mul(1000)),
                retry: t.retry,
                error: None,
                route,
            });
        }
        job.progress = Progress {
            total: spec.tasks.len() as u32,
            waiting: spec.tasks.len() as u32,
            ..Progress::default()
        };
    }

    pub(crate) fn enqueue_admission(&mut self, j: u32) {
        let job = self.job(j);
        let entry = (Reverse(job.priority), job.submitted, job.seq, j);
        let tenant = job.tenant;
        self.tenants[tenant as usize].admission.insert(entry);
    }

    /// Admits the tenant's queued jobs while its running-jobs quota allows.
    pub(crate) fn admit_waiting(&mut self, tenant: u32, now: Timestamp, out: &mut Vec<Effect>) {
        loop {
            let t = &self.tenants[tenant as usize];
            let Some(&first) = t.admission.first() else {
                return;
            };
            if let Err(block) = policy::job_fits(&t.quotas, &t.usage) {
                let waiting: Vec<u32> = t.admission.iter().map(|e| e.3).collect();
                for (pos, j) in waiting.into_iter().enumerate() {
                    let msg = format!("{block}; position {} in the tenant's queue", pos + 1);
                    let job = self.job_mut(j);
                    if job.message.as_deref() != Some(msg.as_str()) {
                        job.reason = Some("QuotaExceeded");
                        job.message = Some(msg);
                    }
                }
                return;
            }
            self.tenants[tenant as usize].admission.remove(&first);
            self.admit(first.3, now, out);
        }
    }

    fn admit(&mut self, j: u32, now: Timestamp, out: &mut Vec<Effect>) {
        let tenant = self.job(j).tenant;
        self.tenants[tenant as usize].usage.running_jobs += 1;
        self.set_phase(j, JobPhase::Planning, "Admitted", None, out);
        self.set_phase(j, JobPhase::Scheduled, "Planned", None, out);
        let job = self.job_mut(j);
        job.started = Some(now);
        if let Some(ms) = job.timeout_ms {
            self.arm(now.plus_ms(ms), Timer::JobTimeout { job: j });
        }
        let roots: Vec<u32> = (0..self.job(j).tasks.len() as u32)
            .filter(|&t| self.job(j).tasks[t as usize].unmet == 0)
            .collect();
        for t in roots {
            self.make_ready(j, t);
        }
    }

    pub(crate) fn set_phase(
        &mut self,
        j: u32,
        to: JobPhase,
        reason: &'static str,
        message: Option<String>,
        out: &mut Vec<Effect>,
    ) {
        let job = self.job_mut(j);
        let from = job.phase;
        if from == to {
            return;
        }
        job.phase = to;
        job.reason = Some(reason);
        job.message = message.clone();
        out.push(Effect::JobPhaseChanged {
            job: job.key.clone(),
            from,
            to,
            reason,
            message,
        });
    }

    fn mark_running(&mut self, j: u32, _now: Timestamp, out: &mut Vec<Effect>) {
        if self.job(j).phase == JobPhase::Scheduled {
            self.set_phase(j, JobPhase::Running, "TaskStarted", None, out);
        }
    }

    pub(crate) fn set_state(&mut self, j: u32, t: u32, state: TaskState) {
        let job = self.job_mut(j);
        let task = &mut job.tasks[t as usize];
        let (old, new) = (task.state.phase(), state.phase());
        task.state = state;
        if old != new {
            *job.progress.slot(old) -= 1;
            *job.progress.slot(new) += 1;
        }
    }

    pub(crate) fn queued(&self, j: u32, t: u32) -> (u32, Queued) {
        let job = self.job(j);
        (
            job.tasks[t as usize].bucket,
            Queued {
                submitted: job.submitted,
                job_seq: job.seq,
                job: j,
                task: t,
            },
        )
    }

    pub(crate) fn make_ready(&mut self, j: u32, t: u32) {
        self.set_state(j, t, TaskState::Ready);
        let (bucket, q) = self.queued(j, t);
        self.queue.push(bucket, q);
        self.dirty = true;
    }

    /// Ends the attempt in flight, records it, and moves the task on.
    #[allow(clippy::too_many_arguments)]
    fn finish_attempt(
        &mut self,
        j: u32,
        t: u32,
        now: Timestamp,
        outcome: Outcome,
        error: Option<String>,
        artifact: Option<String>,
        retryable: bool,
        out: &mut Vec<Effect>,
    ) {
        let job = self.job(j);
        let task = &job.tasks[t as usize];
        let Some((w, at, started, cold)) = task.state.active() else {
            return;
        };
        let (cpu, mem, gpus, attempt, hint) =
            (task.cpu, task.mem, task.gpus, task.attempt, task.hint_ms);
        let traceparent = traceparent(&job.trace_id, &job.key, &task.id, attempt);
        let record = crate::api::ExecutionRecord {
            job: job.key.to_string(),
            task: task.id.to_string(),
            attempt,
            worker: self.fleet.workers[w as usize].name.to_string(),
            assigned_at: at,
            started_at: started,
            finished_at: now,
            outcome,
            error: error.clone(),
            artifact_uri: artifact.clone(),
            traceparent,
        };
        let tenant = job.tenant as usize;
        self.fleet.release(w, (j, t), cpu, mem, gpus);
        let usage = &mut self.tenants[tenant].usage;
        usage.running_tasks -= 1;
        usage.cpu_millis -= u64::from(cpu);
        usage.memory_mib -= u64::from(mem);
        usage.gpus -= gpus;
        out.push(Effect::AttemptEnded(Box::new(record)));
        self.dirty = true;
        match outcome {
            Outcome::Succeeded => {
                if let (Some(s), false) = (started, cold) {
                    let ran = now.since(s).max(1);
                    let smoothing = self.settings.speed_smoothing;
                    self.fleet
                        .observe_speed(w, hint as f64 / ran as f64, smoothing);
                }
                self.set_state(
                    j,
                    t,
                    TaskState::Succeeded {
                        at: now,
                        artifact: artifact.map(Into::into),
                    },
                );
                let children: Vec<u32> = self.job(j).dag.children(t).to_vec();
                for c in children {
                    let child = &mut self.job_mut(j).tasks[c as usize];
                    child.unmet -= 1;
                    if child.unmet == 0
                        && child.state == TaskState::Waiting
                        && !self.job(j).phase.is_terminal()
                    {
                        self.make_ready(j, c);
                    }
                }
                self.maybe_finish(j, now, out);
            }
            Outcome::Canceled => self.set_state(j, t, TaskState::Canceled { at: now }),
            Outcome::Failed | Outcome::TimedOut | Outcome::WorkerLost => {
                let error = error.unwrap_or_else(|| "attempt failed".into());
                self.job_mut(j).tasks[t as usize].error = Some(error.as_str().into());
                let task = &self.job(j).tasks[t as usize];
                if retryable && attempt <= task.retry.limit && !self.job(j).phase.is_terminal() {
                    let not_before = now.plus_ms(task.retry.backoff_before(attempt + 1));
                    let (jk, tk) = (self.job(j).key.clone(), task.id.clone());
                    self.set_state(j, t, TaskState::Retrying { not_before });
                    self.arm(
                        not_before,
                        Timer::Backoff {
                            job: j,
                            task: t,
                            attempt,
                        },
                    );
                    self.stats.retries += 1;
                    out.push(Effect::Requeue {
                        job: jk,
                        task: tk,
                        failed_attempt: attempt,
                        not_before,
                        error,
                    });
                } else {
                    let end = if outcome == Outcome::TimedOut {
                        TaskState::TimedOut { at: now }
                    } else {
                        TaskState::Failed { at: now }
                    };
                    self.set_state(j, t, end);
                    self.skip_descendants(j, t, now);
                    self.maybe_finish(j, now, out);
                }
            }
        }
    }

    pub(crate) fn skip_descendants(&mut self, j: u32, t: u32, now: Timestamp) {
        let mut stack: Vec<u32> = self.job(j).dag.children(t).to_vec();
        while let Some(c) = stack.pop() {
            if self.job(j).tasks[c as usize].state == TaskState::Waiting {
                self.set_state(j, c, TaskState::Skipped { at: now });
                stack.extend_from_slice(self.job(j).dag.children(c));
            }
        }
    }

    /// Ends the job once every task has ended.
    pub(crate) fn maybe_finish(&mut self, j: u32, now: Timestamp, out: &mut Vec<Effect>) {
        let job = self.job(j);
        if job.phase.is_terminal() || job.progress.finished() < job.progress.total {
            return;
        }
        let p = job.progress;
        let (phase, reason, message) = if p.failed + p.timed_out + p.skipped > 0 {
            let first = job.tasks.iter().find(|t| {
                matches!(
                    t.state,
                    TaskState::Failed { .. } | TaskState::TimedOut { .. }
                )
            });
            let msg = first.map(|t| {
                format!(
                    "task `{}` {} after {} attempt(s): {}; {} downstream task(s) skipped",
                    t.id,
                    if matches!(t.state, TaskState::TimedOut { .. }) {
                        "timed out"
                    } else {
                        "failed"
                    },
                    t.attempt,
                    t.error.as_deref().unwrap_or("no error message"),
                    p.skipped
                )
            });
            (JobPhase::Failed, "TaskFailed", msg)
        } else if p.canceled > 0 {
            (JobPhase::Canceled, "Canceled", None)
        } else {
            (JobPhase::Completed, "Completed", None)
        };
        self.close_job(j, phase, reason, message, now, out);
    }

    fn close_job(
        &mut self,
        j: u32,
        phase: JobPhase,
        reason: &'static str,
        message: Option<String>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let was_admitted = self.job(j).started.is_some();
        self.set_phase(j, phase, reason, message, out);
        let job = self.job_mut(j);
        job.finished = Some(now);
        let tenant = job.tenant;
        if was_admitted {
            self.tenants[tenant as usize].usage.running_jobs -= 1;
            self.admit_waiting(tenant, now, out);
        }
    }

    /// Cancels every unfinished task and ends the job in `phase`.
    fn terminate(
        &mut self,
        j: u32,
        phase: JobPhase,
        reason: &'static str,
        message: String,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        if self.job(j).phase.is_terminal() {
            return;
        }
        let (tenant, entry) = {
            let job = self.job(j);
            (
                job.tenant,
                (Reverse(job.priority), job.submitted, job.seq, j),
            )
        };
        self.tenants[tenant as usize].admission.remove(&entry);
        let cancel_reason = if phase == JobPhase::Canceled {
            CancelReason::JobCanceled
        } else {
            CancelReason::JobTimedOut
        };
        for t in 0..self.job(j).tasks.len() as u32 {
            let task = &self.job(j).tasks[t as usize];
            match task.state {
                TaskState::Assigned { worker, .. } | TaskState::Running { worker, .. } => {
                    out.push(Effect::Cancel {
                        job: self.job(j).key.clone(),
                        task: task.id.clone(),
                        attempt: task.attempt,
                        worker: self.fleet.workers[worker as usize].name.clone(),
                        reason: cancel_reason,
                    });
                    let msg = Some(message.clone());
                    self.finish_attempt(j, t, now, Outcome::Canceled, msg, None, false, out);
                }
                TaskState::Ready => {
                    let (bucket, q) = self.queued(j, t);
                    self.queue.remove(bucket, &q);
                    self.set_state(j, t, TaskState::Canceled { at: now });
                }
                TaskState::Waiting | TaskState::Retrying { .. } => {
                    self.set_state(j, t, TaskState::Canceled { at: now })
                }
                _ => {}
            }
        }
        self.close_job(j, phase, reason, Some(message), now, out);
    }

    fn forget(&mut self, key: &str, out: &mut Vec<Effect>) {
        match self.job_ids.get(key).copied() {
            Some(j) if self.job(j).phase.is_terminal() => {
                self.job_ids.remove(key);
                self.jobs[j as usize] = None;
            }
            Some(_) => {} // a live job is never dropped; cancel it first
            None => out.push(Effect::Ignored(Ignored::UnknownJob {
                job: key.to_owned(),
            })),
        }
    }

    // ----- reports from workers -----

    /// Finds the task of a report and checks that the report is for its current attempt, on the
    /// worker it was given to, while that attempt is in flight.
    fn fence(&mut self, a: &AttemptRef, worker: &str, out: &mut Vec<Effect>) -> Option<(u32, u32)> {
        let Some(&j) = self.job_ids.get(a.job.as_str()) else {
            out.push(Effect::Ignored(Ignored::UnknownJob { job: a.job.clone() }));
            self.stats.ignored_reports += 1;
            return None;
        };
        let Some(&t) = self.job(j).task_ids.get(a.task.as_str()) else {
            out.push(Effect::Ignored(Ignored::UnknownTask {
                job: a.job.clone(),
                task: a.task.clone(),
            }));
            self.stats.ignored_reports += 1;
            return None;
        };
        let task = &self.job(j).tasks[t as usize];
        let current = task
            .state
            .active()
            .is_some_and(|(w, ..)| *self.fleet.workers[w as usize].name == *worker);
        if current && task.attempt == a.attempt {
            return Some((j, t));
        }
        out.push(Effect::Ignored(Ignored::StaleReport {
            attempt: a.clone(),
            worker: worker.to_owned(),
            current_attempt: task.attempt,
        }));
        self.stats.ignored_reports += 1;
        None
    }

    fn started(&mut self, a: AttemptRef, worker: &str, now: Timestamp, out: &mut Vec<Effect>) {
        let Some((j, t)) = self.fence(&a, worker, out) else {
            return;
        };
        if let TaskState::Assigned { worker, at, cold } = self.job(j).tasks[t as usize].state {
            self.set_state(
                j,
                t,
                TaskState::Running {
                    worker,
                    at,
                    started: now,
                    cold,
                },
            );
        }
        self.mark_running(j, now, out);
    }

    // ----- workers -----

    fn register(
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
    fn alive(&mut self, w: WorkerId, now: Timestamp, out: &mut Vec<Effect>) {
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

    fn heartbeat(&mut self, hb: Heartbeat, now: Timestamp, out: &mut Vec<Effect>) {
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
        // Models being loaded for attempts in flight count as warm until the agent says otherwise.
        let mut warm = hb.warm_models;
        for &(j, t) in &self.fleet.workers[w as usize].active {
            if let Some(m) = self.job(j).tasks[t as usize].model {
                warm.push(self.fleet.models.name(m).to_string());
            }
        }
        self.fleet.set_warm(w, &warm);
        let wr = &mut self.fleet.workers[w as usize];
        wr.utilization = hb.utilization;
        wr.reported_queue = hb.queue_depth;
        self.alive(w, now, out);
        for a in hb.running {
            let current = self
                .job_ids
                .get(a.job.as_str())
                .and_then(|&j| {
                    self.job(j)
                        .task_ids
                        .get(a.task.as_str())
                        .map(|&t| &self.job(j).tasks[t as usize])
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

    fn check_worker(&mut self, w: WorkerId, now: Timestamp, out: &mut Vec<Effect>) {
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
    fn lose_attempts(&mut self, w: WorkerId, why: String, now: Timestamp, out: &mut Vec<Effect>) {
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

    // ----- scheduling -----

    fn pass_key(&self, bucket: u32, now: Timestamp) -> Option<PassKey> {
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

    fn set_reason(&mut self, bucket: u32, reason: PendingReason, out: &mut Vec<Effect>) {
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
    fn schedule(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
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

    fn assign(
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

/// A W3C trace id (32 hex digits) derived from the job key and submission time.
pub(crate) fn derive_trace_id(key: &str, now: Timestamp) -> String {
    let a = stable_hash(&[key.as_bytes(), &now.millis().to_le_bytes()]);
    let b = stable_hash(&[&a.to_le_bytes(), key.as_bytes()]);
    format!("{a:016x}{b:016x}")
}

/// The W3C `traceparent` of one attempt: the job's trace, a span per attempt.
pub(crate) fn traceparent(trace_id: &str, job: &str, task: &str, attempt: u32) -> String {
    let span = stable_hash(&[job.as_bytes(), task.as_bytes(), &attempt.to_le_bytes()]).max(1);
    format!("00-{trace_id}-{span:016x}-01")
}
