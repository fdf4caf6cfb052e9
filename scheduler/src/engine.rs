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
use serde::Serialize;

use crate::api::{
    InteractionClass, JobPhase, JobSpec, ModelRouteSpec, Outcome, PolicySpec, Progress, Quotas,
    ResolvedRoute, RetryPolicy, TaskKind, TaskPhase,
};
use crate::dag::Dag;
use crate::event::{CancelReason, Effect, Event, Ignored};
use crate::fleet::{Fleet, WorkerId};
use crate::intern::{BitSet, Interner, stable_hash};
use crate::place::Shapes;
use crate::policy::Usage;
use crate::queue::ReadyQueue;
use crate::score::Strategy;
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
    /// Whether `hint_ms` came from the spec's `expectedDurationMs` rather than the default.
    pub hinted: bool,
    pub kind: TaskKind,
    pub interaction: InteractionClass,
    pub reasoning: bool,
    pub timeout_s: Option<u64>,
    pub retry: RetryPolicy,
    pub error: Option<Box<str>>,
    pub route: Option<Box<ResolvedRoute>>,
    /// When the task, ready, first chose to wait for a busy worker with its model warm.
    pub warm_wait_since: Option<Timestamp>,
    /// When the task last became ready: where peer policies that queue in arrival order put
    /// it.
    pub ready_at: Timestamp,
    /// The latest start, counted from the job's submission, that still lets the job finish
    /// within its critical path: the critical path minus the longest path from this task to
    /// the end (both by duration hints). 0 on the critical path.
    pub slack_ms: u64,
    /// The parts of the task's spec that scheduling never reads, kept to hand the task to its
    /// worker and for snapshots; `None` when all of them are empty.
    pub payload: Option<Box<TaskPayload>>,
}

/// What a `TaskSpec` holds beyond the fields `TaskRt` already keeps in its own form. Together
/// they give the spec back field for field (`Scheduler::task_spec`), so the core keeps one copy
/// of each task instead of two.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TaskPayload {
    pub tools: Vec<String>,
    pub locality: Option<String>,
    pub classification: Option<String>,
    pub command: Vec<String>,
    pub input: Option<String>,
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
    /// Task ids to indices, for jobs of more than `JobRt::SCAN_UP_TO` tasks; smaller jobs are
    /// scanned (see `task_index`), which saves a map per job.
    pub task_ids: FxHashMap<Arc<str>, u32>,
    pub progress: Progress,
    pub trace_id: Arc<str>,
    /// The job's critical path by duration hints: how long it takes when nothing waits.
    pub critical_ms: u64,
    /// The spec as admitted. Once `tasks` is built, its task list is empty here: each task's
    /// spec lives in its `TaskRt` (see `Scheduler::spec_of`).
    pub spec: Box<JobSpec>,
}

impl JobRt {
    pub(crate) const SCAN_UP_TO: usize = 16;

    /// The index of the task with this id.
    pub(crate) fn task_index(&self, id: &str) -> Option<u32> {
        if self.tasks.len() <= Self::SCAN_UP_TO {
            let t = self.tasks.iter().position(|t| &*t.id == id)?;
            Some(t as u32)
        } else {
            self.task_ids.get(id).copied()
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TenantRt {
    pub name: Arc<str>,
    pub usage: Usage,
    pub quotas: Quotas,
    pub zones: Option<BitSet>,
    /// What the `kueue` policy's admitted jobs hold of the tenant's quota.
    pub reserved: Usage,
    /// Jobs waiting for the running-jobs quota: highest priority, then oldest, first.
    pub admission: BTreeSet<(Reverse<i32>, Timestamp, u64, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Backoff {
        job: u32,
        task: u32,
        attempt: u32,
    },
    TaskTimeout {
        job: u32,
        task: u32,
        attempt: u32,
    },
    JobTimeout {
        job: u32,
    },
    WorkerCheck {
        worker: u32,
    },
    /// Run a scheduling pass: a task chose to wait, and its wait may be over.
    Recheck,
}

impl Timer {
    /// The job slot the timer names, if any.
    fn job(&self) -> Option<u32> {
        match *self {
            Timer::Backoff { job, .. }
            | Timer::TaskTimeout { job, .. }
            | Timer::JobTimeout { job } => Some(job),
            Timer::WorkerCheck { .. } | Timer::Recheck => None,
        }
    }
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

/// The scheduling core. See the crate docs for the model.
pub struct Scheduler {
    pub(crate) settings: Settings,
    pub(crate) strategy: Strategy,
    pub(crate) seed: u64,
    pub(crate) now: Timestamp,
    pub(crate) jobs: Vec<Option<JobRt>>,
    /// Slots of forgotten jobs that a new job may take: no timer names them any more.
    pub(crate) free_jobs: Vec<u32>,
    /// Slots of forgotten jobs that stale timers may still name; freed in batches.
    pub(crate) forgotten_jobs: Vec<u32>,
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
            free_jobs: Vec::new(),
            forgotten_jobs: Vec::new(),
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

    /// The latest time the core has seen.
    pub fn now(&self) -> Timestamp {
        self.now
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
                Some(&j) => self.terminate(
                    j,
                    JobPhase::Canceled,
                    "Canceled",
                    "the job was canceled".into(),
                    now,
                    &mut out,
                ),
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

    /// The slot a new job takes: a freed one if there is one, else a new one at the end. Pass
    /// it to `put_job` before asking for another.
    pub(crate) fn job_slot(&mut self) -> u32 {
        self.free_jobs.pop().unwrap_or(self.jobs.len() as u32)
    }

    pub(crate) fn put_job(&mut self, j: u32, job: JobRt) {
        if j as usize == self.jobs.len() {
            self.jobs.push(Some(job));
        } else {
            debug_assert!(self.jobs[j as usize].is_none(), "slot {j} is free");
            self.jobs[j as usize] = Some(job);
        }
    }

    /// Drops an ended job's state. Its slot is reused once no timer can name it: stale timers
    /// of forgotten jobs are swept out in batches, so the sweep costs each forget little and a
    /// long-running driver's memory follows its live jobs, not every job it ever saw.
    pub(crate) fn drop_job(&mut self, j: u32) {
        self.jobs[j as usize] = None;
        self.forgotten_jobs.push(j);
        if self.forgotten_jobs.len() >= 64.max(self.timers.len() / 64) {
            let mut gone = std::mem::take(&mut self.forgotten_jobs);
            gone.sort_unstable();
            self.timers.retain(|Reverse((_, _, timer))| {
                timer.job().is_none_or(|j| gone.binary_search(&j).is_err())
            });
            self.free_jobs.append(&mut gone);
        }
    }

    fn live(&self, j: u32) -> bool {
        self.jobs.get(j as usize).is_some_and(Option::is_some)
    }

    /// Holds an attempt's resources on its worker and in its tenant's usage, and arms its
    /// timeout from the time it was assigned.
    pub(crate) fn hold(&mut self, j: u32, t: u32, w: WorkerId, assigned_at: Timestamp) {
        let tenant = self.job(j).tenant as usize;
        let task = &self.job(j).tasks[t as usize];
        let (cpu, mem, gpus, model, attempt, timeout) = (
            task.cpu,
            task.mem,
            task.gpus,
            task.model,
            task.attempt,
            task.timeout_s.map(|s| s.saturating_mul(1000)),
        );
        self.fleet.reserve(w, (j, t), cpu, mem, gpus, model);
        if let Some(m) = model {
            self.queue.count_running(m, true);
        }
        self.tenants[tenant].usage.take(cpu, mem, gpus);
        if let Some(ms) = timeout {
            self.arm(
                assigned_at.plus_ms(ms),
                Timer::TaskTimeout {
                    job: j,
                    task: t,
                    attempt,
                },
            );
        }
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
                    let limit = t.timeout_s.map_or(0, |s| s.saturating_mul(1000));
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
                Timer::Recheck => self.dirty = true,
                Timer::WorkerCheck { worker } => {
                    if self.fleet.workers[worker as usize].check_at == Some(at) {
                        self.check_worker(worker, at, out);
                    }
                }
            }
        }
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
