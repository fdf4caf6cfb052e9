//! The discrete-event engine: a virtual clock and a queue of events, no ticks. It drives the
//! core exactly as the operator does (events in, effects out) and simulates the agents: message
//! latency and loss, heartbeats, task execution with warm and cold models, and the scenario's
//! faults. It is the default engine, and the one for fleet-scale trace scenarios.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use splai_scheduler::api::{AttemptRef, Capabilities, JobPhase, TaskKind, Utilization};
use splai_scheduler::{Effect, Event, Heartbeat, Scheduler, Strategy, Timestamp};

use crate::record::{AttemptRow, JobRow, Recorder, TimelineRow};
use crate::scenario::{FaultKind, Scenario};
use crate::workload::{Arrival, arrivals, below, unit};

/// The simulated clock starts at 2026-01-01T00:00:00Z, so timestamps read like real ones.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// Knobs of one run that are not part of the scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    pub strategy: Strategy,
    /// Check the core's invariants after every event.
    pub check_invariants: bool,
    /// `job/task` whose every decision is logged.
    pub explain: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(usize),
    Heartbeat(usize),
    /// A message reaches the control plane.
    ToCore(Box<Msg>),
    /// An assignment reaches a worker.
    Assign {
        worker: usize,
        job: String,
        task: String,
        attempt: u32,
    },
    Cancel {
        worker: usize,
        job: String,
        task: String,
        attempt: u32,
    },
    TaskEnd {
        worker: usize,
        incarnation: u64,
        job: String,
        task: String,
        attempt: u32,
        ok: bool,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Wakeup,
    Sample,
}

/// What an agent says to the control plane.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Msg {
    Register {
        worker: usize,
        incarnation: u64,
    },
    Heartbeat {
        worker: usize,
    },
    Started {
        worker: usize,
        job: String,
        task: String,
        attempt: u32,
    },
    Done {
        worker: usize,
        job: String,
        task: String,
        attempt: u32,
        ok: bool,
        error: Option<String>,
    },
}

struct SimWorker {
    name: String,
    caps: Capabilities,
    incarnation: u64,
    alive: bool,
    heartbeats_lost: u32,
    partitioned: u32,
    slow: f64,
    /// Loaded models, least recently used first.
    warm: Vec<String>,
    max_warm: usize,
    /// Attempts running here: (job, task) -> (attempt, cpu, gpus).
    running: BTreeMap<(String, String), (u32, u32, u32)>,
}

pub struct Des<'a> {
    sc: &'a Scenario,
    opts: RunOptions,
    core: Scheduler,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    now: u64,
    rng: ChaCha8Rng,
    workers: Vec<SimWorker>,
    by_name: BTreeMap<String, usize>,
    arrivals: Vec<Arrival>,
    arrived: usize,
    open_jobs: usize,
    wakeup_at: Option<u64>,
    extra_latency: u64,
    loss_rate: f64,
    failure_rate: BTreeMap<Option<TaskKind>, f64>,
    pub rec: Recorder,
}

impl<'a> Des<'a> {
    pub fn new(sc: &'a Scenario, opts: RunOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let arrivals = arrivals(sc, &mut rng);
        let core = Scheduler::new(sc.settings.clone(), opts.strategy, opts.seed);
        let mut workers = Vec::new();
        for g in &sc.fleet {
            for i in 0..g.count {
                workers.push(SimWorker {
                    name: format!("{}-{i}", g.group),
                    caps: g.capabilities.clone(),
                    incarnation: 1,
                    alive: true,
                    heartbeats_lost: 0,
                    partitioned: 0,
                    slow: 1.0,
                    warm: g.warm_models.clone(),
                    max_warm: g.max_warm_models.max(1) as usize,
                    running: BTreeMap::new(),
                });
            }
        }
        let by_name = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.name.clone(), i))
            .collect();
        let mut rec = Recorder::default();
        if let Some((j, t)) = &opts.explain {
            rec.explain = Some((j.clone(), t.clone(), Vec::new()));
        }
        Des {
            sc,
            opts,
            core,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng,
            workers,
            by_name,
            arrivals,
            arrived: 0,
            open_jobs: 0,
            wakeup_at: None,
            extra_latency: 0,
            loss_rate: 0.0,
            failure_rate: BTreeMap::new(),
            rec,
        }
    }

    pub fn core(&self) -> &Scheduler {
        &self.core
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Runs to the horizon, or until every job has arrived and ended.
    pub fn run(mut self) -> (Recorder, Scheduler, u64) {
        for (name, spec) in &self.sc.policies {
            self.deliver(Event::PolicyUpserted {
                name: name.clone(),
                spec: spec.clone(),
            });
        }
        for (name, spec) in &self.sc.routes {
            self.deliver(Event::RouteUpserted {
                name: name.clone(),
                spec: spec.clone(),
            });
        }
        for w in 0..self.workers.len() {
            self.send_to_core(
                w,
                Msg::Register {
                    worker: w,
                    incarnation: 1,
                },
                0,
            );
            let first = below(&mut self.rng, self.sc.heartbeat_interval_ms.max(1));
            self.push(first, Ev::Heartbeat(w));
        }
        for i in 0..self.arrivals.len() {
            self.push(self.arrivals[i].at_ms, Ev::Arrive(i));
        }
        for (i, f) in self.sc.faults.iter().enumerate() {
            self.push(f.at_ms, Ev::FaultStart(i));
            if let Some(d) = f.duration_ms {
                self.push(f.at_ms + d, Ev::FaultEnd(i));
            }
        }
        self.push(0, Ev::Sample);
        let horizon = self.sc.horizon_seconds.saturating_mul(1000);
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if t > horizon {
                break;
            }
            self.now = t;
            self.step(ev);
            if self.arrived == self.arrivals.len() && self.open_jobs == 0 {
                break;
            }
        }
        self.sample();
        let end = self.now;
        (self.rec, self.core, end)
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(i) => {
                let a = &self.arrivals[i];
                let (key, spec) = (a.key.clone(), a.spec.clone());
                self.arrived += 1;
                self.open_jobs += 1;
                self.rec.jobs.insert(
                    key.clone(),
                    JobRow {
                        job: key.clone(),
                        tenant: spec.tenant.clone(),
                        priority: spec.priority,
                        tasks: spec.tasks.len(),
                        submitted_ms: self.now,
                        finished_ms: None,
                        phase: JobPhase::Queued,
                    },
                );
                self.deliver(Event::JobSubmitted {
                    key,
                    spec,
                    trace_id: None,
                });
            }
            Ev::Heartbeat(w) => {
                let wk = &self.workers[w];
                if wk.alive {
                    if wk.heartbeats_lost == 0 {
                        self.send_to_core(
                            w,
                            Msg::Heartbeat { worker: w },
                            self.sc.network_latency_ms,
                        );
                    }
                    self.push(
                        self.now + self.sc.heartbeat_interval_ms.max(1),
                        Ev::Heartbeat(w),
                    );
                }
            }
            Ev::ToCore(msg) => self.receive(*msg),
            Ev::Assign {
                worker,
                job,
                task,
                attempt,
            } => self.start(worker, job, task, attempt),
            Ev::Cancel {
                worker,
                job,
                task,
                attempt,
            } => {
                let w = &mut self.workers[worker];
                if w.running
                    .get(&(job.clone(), task.clone()))
                    .is_some_and(|r| r.0 == attempt)
                {
                    w.running.remove(&(job, task));
                }
            }
            Ev::TaskEnd {
                worker,
                incarnation,
                job,
                task,
                attempt,
                ok,
            } => {
                let w = &mut self.workers[worker];
                let key = (job.clone(), task.clone());
                if w.alive
                    && w.incarnation == incarnation
                    && w.running.get(&key).is_some_and(|r| r.0 == attempt)
                {
                    w.running.remove(&key);
                    let error = (!ok)
                        .then(|| "the task exited with an error (injected failure)".to_string());
                    self.send_to_core(
                        worker,
                        Msg::Done {
                            worker,
                            job,
                            task,
                            attempt,
                            ok,
                            error,
                        },
                        self.sc.network_latency_ms,
                    );
                }
            }
            Ev::FaultStart(i) => self.fault(i, true),
            Ev::FaultEnd(i) => self.fault(i, false),
            Ev::Wakeup => {
                self.wakeup_at = None;
                self.deliver(Event::Tick);
            }
            Ev::Sample => {
                self.sample();
                let every = (self.sc.horizon_seconds * 1000 / 500).max(1_000);
                self.push(self.now + every, Ev::Sample);
            }
        }
    }

    /// Sends a message to the control plane, unless the network or a partition loses it.
    fn send_to_core(&mut self, w: usize, msg: Msg, latency: u64) {
        if self.workers[w].partitioned > 0
            || (self.loss_rate > 0.0 && unit(&mut self.rng) < self.loss_rate)
        {
            return;
        }
        let at = self.now + latency + self.extra_latency;
        self.push(at, Ev::ToCore(Box::new(msg)));
    }

    fn send_to_worker(&mut self, w: usize, ev: Ev) {
        if self.workers[w].partitioned > 0
            || (self.loss_rate > 0.0 && unit(&mut self.rng) < self.loss_rate)
        {
            return;
        }
        let at = self.now + self.sc.network_latency_ms + self.extra_latency;
        self.push(at, ev);
    }

    fn receive(&mut self, msg: Msg) {
        match msg {
            Msg::Register {
                worker,
                incarnation,
            } => {
                let w = &self.workers[worker];
                self.deliver(Event::WorkerRegistered {
                    name: w.name.clone(),
                    capabilities: w.caps.clone(),
                    incarnation,
                });
            }
            Msg::Heartbeat { worker } => {
                let w = &self.workers[worker];
                let used: u32 = w.running.values().map(|r| r.1).sum();
                let used_gpus: u32 = w.running.values().map(|r| r.2).sum();
                let hb = Heartbeat {
                    worker: w.name.clone(),
                    incarnation: w.incarnation,
                    utilization: Utilization {
                        cpu: f64::from(used) / f64::from(w.caps.cpu_millis.max(1)),
                        memory: 0.0,
                        gpu: if w.caps.gpus == 0 {
                            0.0
                        } else {
                            f64::from(used_gpus) / f64::from(w.caps.gpus)
                        },
                    },
                    queue_depth: w.running.len() as u32,
                    warm_models: w.warm.clone(),
                    running: w
                        .running
                        .iter()
                        .map(|((job, task), r)| AttemptRef {
                            job: job.clone(),
                            task: task.clone(),
                            attempt: r.0,
                        })
                        .collect(),
                };
                self.deliver(Event::Heartbeat(hb));
            }
            Msg::Started {
                worker,
                job,
                task,
                attempt,
            } => {
                let worker = self.workers[worker].name.clone();
                self.deliver(Event::TaskStarted {
                    attempt: AttemptRef { job, task, attempt },
                    worker,
                });
            }
            Msg::Done {
                worker,
                job,
                task,
                attempt,
                ok,
                error,
            } => {
                let worker = self.workers[worker].name.clone();
                let attempt = AttemptRef { job, task, attempt };
                let event = if ok {
                    let uri = format!(
                        "sim://artifacts/{}/{}/{}",
                        attempt.job, attempt.task, attempt.attempt
                    );
                    Event::TaskSucceeded {
                        attempt,
                        worker,
                        artifact_uri: Some(uri),
                    }
                } else {
                    Event::TaskFailed {
                        attempt,
                        worker,
                        error: error.unwrap_or_default(),
                        retryable: true,
                    }
                };
                self.deliver(event);
            }
        }
    }

    /// A worker starts an attempt: picks its run time, loads its model if cold, may fail.
    fn start(&mut self, wi: usize, job: String, task: String, attempt: u32) {
        if !self.workers[wi].alive {
            return;
        }
        let Some(arrival) = self.arrivals.iter().position(|a| a.key == job) else {
            return;
        };
        let a = &self.arrivals[arrival];
        let status = self.core.job_status(&job);
        let spec = status
            .as_ref()
            .and_then(|_| self.planned_task(arrival, &task));
        let Some(spec) = spec else { return };
        let base = a
            .durations_ms
            .get(&task)
            .copied()
            .or(spec.expected_duration_ms)
            .unwrap_or(self.sc.settings.default_duration_ms);
        let noise = if self.sc.duration_noise > 0.0 {
            1.0 + self.sc.duration_noise * (2.0 * unit(&mut self.rng) - 1.0)
        } else {
            1.0
        };
        let w = &self.workers[wi];
        let mut run =
            (base as f64 * noise / w.caps.speed_factor.max(0.01) * w.slow).max(1.0) as u64;
        let mut cold = None;
        if let Some(m) = &spec.model {
            let hit = w.warm.iter().any(|x| x == m);
            cold = Some(!hit);
            if !hit {
                run += self.load_time();
            }
            let w = &mut self.workers[wi];
            w.warm.retain(|x| x != m);
            w.warm.push(m.clone());
            if w.warm.len() > w.max_warm {
                w.warm.remove(0);
            }
        }
        if let Some(c) = cold {
            self.rec
                .cold
                .insert((job.clone(), task.clone(), attempt), c);
        }
        let p = self
            .failure_rate
            .get(&Some(spec.kind))
            .or(self.failure_rate.get(&None))
            .copied()
            .unwrap_or(0.0);
        let ok = !(p > 0.0 && unit(&mut self.rng) < p);
        if !ok {
            run = (run as f64 * unit(&mut self.rng)).max(1.0) as u64;
        }
        let w = &mut self.workers[wi];
        w.running.insert(
            (job.clone(), task.clone()),
            (attempt, spec.resources.cpu_millis, spec.resources.gpus),
        );
        let incarnation = w.incarnation;
        self.send_to_core(
            wi,
            Msg::Started {
                worker: wi,
                job: job.clone(),
                task: task.clone(),
                attempt,
            },
            self.sc.network_latency_ms,
        );
        self.push(
            self.now + run,
            Ev::TaskEnd {
                worker: wi,
                incarnation,
                job,
                task,
                attempt,
                ok,
            },
        );
    }

    fn planned_task(&self, arrival: usize, task: &str) -> Option<splai_scheduler::api::TaskSpec> {
        let a = &self.arrivals[arrival];
        if let Some(t) = a.spec.tasks.iter().find(|t| t.id == task) {
            return Some(t.clone());
        }
        let plan = a.spec.plan.as_ref()?;
        let (tasks, _) = splai_scheduler::plan::expand(plan, usize::MAX).ok()?;
        tasks.into_iter().find(|t| t.id == task)
    }

    fn load_time(&mut self) -> u64 {
        let c = &self.sc.cold_start;
        if c.samples_ms.is_empty() {
            c.fixed_ms
        } else {
            let i = below(&mut self.rng, c.samples_ms.len() as u64) as usize;
            self.sc.cold_start.samples_ms[i]
        }
    }

    fn fault(&mut self, i: usize, on: bool) {
        let f = &self.sc.faults[i];
        let targets = |t| {
            self.sc
                .workers_of(t)
                .into_iter()
                .filter_map(|n| self.by_name.get(&n).copied())
                .collect::<Vec<_>>()
        };
        match &f.kind {
            FaultKind::HeartbeatLoss { target } => {
                for w in targets(target) {
                    let c = &mut self.workers[w].heartbeats_lost;
                    *c = if on { *c + 1 } else { c.saturating_sub(1) };
                }
            }
            FaultKind::Partition { target } => {
                for w in targets(target) {
                    let c = &mut self.workers[w].partitioned;
                    *c = if on { *c + 1 } else { c.saturating_sub(1) };
                }
            }
            FaultKind::Crash { target } => {
                for w in targets(target) {
                    let wk = &mut self.workers[w];
                    if on {
                        wk.alive = false;
                        wk.running.clear();
                        wk.warm.clear();
                    } else if !wk.alive {
                        wk.alive = true;
                        wk.incarnation += 1;
                        let inc = wk.incarnation;
                        self.send_to_core(
                            w,
                            Msg::Register {
                                worker: w,
                                incarnation: inc,
                            },
                            self.sc.network_latency_ms,
                        );
                        self.push(self.now + self.sc.heartbeat_interval_ms, Ev::Heartbeat(w));
                    }
                }
            }
            FaultKind::Slow { target, factor } => {
                for w in targets(target) {
                    self.workers[w].slow = if on { *factor } else { 1.0 };
                }
            }
            FaultKind::Network {
                extra_latency_ms,
                loss_rate,
            } => {
                self.extra_latency = if on { *extra_latency_ms } else { 0 };
                self.loss_rate = if on { *loss_rate } else { 0.0 };
            }
            FaultKind::TaskFailures {
                task_kind,
                probability,
            } => {
                if on {
                    self.failure_rate.insert(*task_kind, *probability);
                } else {
                    self.failure_rate.remove(task_kind);
                }
            }
        }
    }

    /// Hands one event to the core and carries out its effects.
    fn deliver(&mut self, event: Event) {
        let effects = self.core.handle(event, Timestamp(EPOCH_MS + self.now));
        if self.opts.check_invariants
            && let Err(e) = self.core.check_invariants()
        {
            self.rec.violations.push(format!("t={}ms: {e}", self.now));
        }
        for e in effects {
            self.effect(e);
        }
        if let Some((j, t, log)) = self.rec.explain.as_mut()
            && let Some(st) = self.core.job_status(j)
            && let Some(ts) = st.tasks.iter().find(|x| &x.id == t)
            && let Some(r) = &ts.pending_reason
        {
            let line = format!("t={:.3}s  waiting: {r}", self.now as f64 / 1000.0);
            if log.last().is_none_or(|l| !l.ends_with(r.as_str())) {
                log.push(line);
            }
        }
        if let Some(next) = self.core.next_wakeup() {
            let at = next.millis().saturating_sub(EPOCH_MS).max(self.now);
            if self.wakeup_at.is_none_or(|w| at < w) {
                self.wakeup_at = Some(at);
                self.push(at, Ev::Wakeup);
            }
        }
    }

    fn effect(&mut self, e: Effect) {
        match e {
            Effect::Assign(a) => {
                if let Some((j, t, log)) = self.rec.explain.as_mut()
                    && *j == *a.job
                    && *t == *a.task
                {
                    log.push(format!(
                        "t={:.3}s  attempt {}: {}",
                        self.now as f64 / 1000.0,
                        a.attempt,
                        a.explanation
                    ));
                }
                if let Some(&w) = self.by_name.get(&*a.worker) {
                    self.send_to_worker(
                        w,
                        Ev::Assign {
                            worker: w,
                            job: a.job.to_string(),
                            task: a.task.to_string(),
                            attempt: a.attempt,
                        },
                    );
                }
            }
            Effect::Cancel {
                job,
                task,
                attempt,
                worker,
                ..
            } => {
                if let Some(&w) = self.by_name.get(&*worker) {
                    self.send_to_worker(
                        w,
                        Ev::Cancel {
                            worker: w,
                            job: job.to_string(),
                            task: task.to_string(),
                            attempt,
                        },
                    );
                }
            }
            Effect::AttemptEnded(r) => {
                let since = |t: Timestamp| t.millis().saturating_sub(EPOCH_MS);
                let cold = self
                    .rec
                    .cold
                    .get(&(r.job.clone(), r.task.clone(), r.attempt))
                    .copied();
                self.rec.attempts.push(AttemptRow {
                    job: r.job,
                    task: r.task,
                    attempt: r.attempt,
                    worker: r.worker,
                    assigned_ms: since(r.assigned_at),
                    started_ms: r.started_at.map(since),
                    finished_ms: since(r.finished_at),
                    outcome: r.outcome,
                    cold_start: cold,
                    error: r.error,
                });
            }
            Effect::JobPlanned { job, tasks, .. } => {
                if let Some(row) = self.rec.jobs.get_mut(&*job) {
                    row.tasks = tasks.len();
                }
            }
            Effect::JobPhaseChanged { job, to, .. } => {
                if let Some(row) = self.rec.jobs.get_mut(&*job) {
                    row.phase = to;
                    if to.is_terminal() {
                        row.finished_ms = Some(self.now);
                        self.open_jobs -= 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn sample(&mut self) {
        let (mut running, mut cpu, mut gpus) = (0u64, 0u64, 0u64);
        for w in &self.workers {
            running += w.running.len() as u64;
            cpu += w.running.values().map(|r| u64::from(r.1)).sum::<u64>();
            gpus += w.running.values().map(|r| u64::from(r.2)).sum::<u64>();
        }
        let healthy = self
            .workers
            .iter()
            .filter(|w| {
                self.core
                    .worker_status(&w.name)
                    .is_some_and(|s| s.health == splai_scheduler::api::Health::Healthy)
            })
            .count() as u64;
        self.rec.timeline.push(TimelineRow {
            t_ms: self.now,
            running_tasks: running,
            busy_cpu_millis: cpu,
            busy_gpus: gpus,
            queued_tasks: self.core.queue_len() as u64,
            healthy_workers: healthy,
        });
    }
}
