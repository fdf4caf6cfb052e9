//! The discrete-event engine: a virtual clock and a queue of events, no ticks. It drives the
//! core exactly as the operator does (events in, effects out) and simulates the agents: message
//! latency and loss, heartbeats, task execution with warm and cold models, and the scenario's
//! faults. It is the default engine, and the one for fleet-scale trace scenarios.
//!
//! Its agents behave as the real agent protocol does under the turmoil engine: an agent boots at
//! a random time within the first heartbeat interval, connects (one message latency), then
//! registers and heartbeats at once and every interval after; a restarted agent does the same
//! with its next incarnation. Every message takes `networkLatencyMs` one way. The control plane
//! handles what reaches it within one millisecond in a fixed order (job arrivals, its timers,
//! then messages by worker in fleet order, each worker's in the order sent) and sends its
//! answers at the end of that millisecond. So on a fault-free scenario both engines hand the core
//! the same events at the same times.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use splai_scheduler::api::AttemptRef;
use splai_scheduler::{Effect, Event, Scheduler, Strategy};

use crate::control::Control;
use crate::progress::Progress;
use crate::record::Recorder;
use crate::scenario::{FaultKind, Scenario};
use crate::worker::{self, AttemptSetup, Busy, SimWorker, TaskFailures};
use crate::workload::{Arrival, arrivals, unit};

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
    /// Report progress on standard error once a run has taken more than two seconds.
    pub progress: bool,
}

#[derive(Debug)]
enum Ev {
    Arrive(usize),
    /// A job submitted `submitLatencyMs` ago reaches the core.
    Admit(usize),
    /// A worker's agent process starts and dials the control plane.
    Boot {
        worker: usize,
        incarnation: u64,
    },
    /// The agent's connection is up (after one message latency): it registers and heartbeats
    /// at once.
    Connect {
        worker: usize,
        incarnation: u64,
    },
    Heartbeat {
        worker: usize,
        incarnation: u64,
    },
    /// A message from a worker reaches the control plane, as the core's event.
    ToCore {
        worker: usize,
        event: Box<Event>,
    },
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
    /// A thawed agent sends a report it held while frozen.
    Release {
        worker: usize,
        event: Box<Event>,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Wakeup,
    Sample,
}

/// An event due at `at`. Events due in the same millisecond run in the control plane's order
/// (see the module docs), then faults, then the agents' events, then the timeline sample; within
/// each, in the order they were queued.
#[derive(Debug)]
struct Queued {
    at: u64,
    rank: (u8, usize),
    seq: u64,
    ev: Ev,
}

impl Ev {
    fn rank(&self) -> (u8, usize) {
        match self {
            Ev::Arrive(_) | Ev::Admit(_) => (0, 0),
            Ev::Wakeup => (1, 0),
            Ev::ToCore { worker, .. } => (2, *worker),
            Ev::FaultStart(_) | Ev::FaultEnd(_) => (3, 0),
            Ev::Sample => (5, 0),
            _ => (4, 0),
        }
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.rank, self.seq).cmp(&(other.at, other.rank, other.seq))
    }
}

/// A simulated worker and the state of its agent.
struct Agent {
    sim: SimWorker,
    incarnation: u64,
    alive: bool,
    heartbeats_lost: u32,
    partitioned: u32,
    /// Stopped by `freeze` faults (SIGSTOP): while above 0, what reaches the agent waits in
    /// `held`, and what it would send waits in `held_reports`.
    frozen: u32,
    held: Vec<Ev>,
    held_reports: Vec<Event>,
}

impl Agent {
    /// The agent process of this incarnation is up.
    fn runs(&self, incarnation: u64) -> bool {
        self.alive && self.incarnation == incarnation
    }
}

pub struct Des<'a> {
    sc: &'a Scenario,
    seed: u64,
    show_progress: bool,
    ctl: Control,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    now: u64,
    /// Draws message losses; everything about an attempt has its own generator.
    rng: ChaCha8Rng,
    agents: Vec<Agent>,
    by_name: BTreeMap<String, usize>,
    boots: Vec<u64>,
    arrivals: Vec<Arrival>,
    arrival_of: BTreeMap<String, usize>,
    /// Each arrival's tasks, with its plan expanded the first time one of them starts.
    planned: Vec<Option<Vec<splai_scheduler::api::TaskSpec>>>,
    wakeup_at: Option<u64>,
    extra_latency: u64,
    loss_rate: f64,
    failures: TaskFailures,
}

impl<'a> Des<'a> {
    pub fn new(sc: &'a Scenario, opts: RunOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let arrivals = arrivals(sc, &mut rng);
        let fleet = SimWorker::fleet(sc);
        let boots = worker::boot_times(sc, fleet.len(), &mut rng);
        let by_name = worker::index(&fleet);
        let names = fleet.iter().map(|w| w.name.clone()).collect();
        let ctl = Control::new(sc, &opts, names, arrivals.len());
        let agents = fleet
            .into_iter()
            .map(|sim| Agent {
                sim,
                incarnation: 1,
                alive: true,
                heartbeats_lost: 0,
                partitioned: 0,
                frozen: 0,
                held: Vec::new(),
                held_reports: Vec::new(),
            })
            .collect();
        let arrival_of = arrivals
            .iter()
            .enumerate()
            .map(|(i, a)| (a.key.clone(), i))
            .collect();
        Des {
            sc,
            seed: opts.seed,
            show_progress: opts.progress,
            ctl,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng,
            agents,
            by_name,
            boots,
            planned: vec![None; arrivals.len()],
            arrivals,
            arrival_of,
            wakeup_at: None,
            extra_latency: 0,
            loss_rate: 0.0,
            failures: TaskFailures::default(),
        }
    }

    pub fn core(&self) -> &Scheduler {
        self.ctl.core()
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            rank: ev.rank(),
            seq: self.seq,
            ev,
        }));
    }

    /// Runs to the horizon, or until every job has arrived and ended.
    pub fn run(mut self) -> (Recorder, Scheduler, u64) {
        for w in 0..self.agents.len() {
            let boot = Ev::Boot {
                worker: w,
                incarnation: 1,
            };
            self.push(self.boots[w], boot);
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
        // Once every job has ended, the rest of that millisecond still runs.
        let mut finished_at = None;
        let mut progress = Progress::new(self.show_progress);
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > horizon || finished_at.is_some_and(|t| next.at > t) {
                break;
            }
            progress.tick(next.at, horizon, self.ctl.jobs_ended(), self.arrivals.len());
            let Some(Reverse(Queued { at, ev, .. })) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.step(ev);
            // Ended jobs need no spec or planned tasks any more.
            for key in std::mem::take(&mut self.ctl.ended) {
                if let Some(&i) = self.arrival_of.get(&key) {
                    self.planned[i] = None;
                    self.arrivals[i].spec = Default::default();
                    self.arrivals[i].durations_ms = Default::default();
                }
            }
            if finished_at.is_none() && self.ctl.finished() {
                finished_at = Some(at);
            }
        }
        drop(progress);
        self.now = finished_at.unwrap_or(horizon);
        self.sample();
        let end = self.now;
        let (rec, core) = self.ctl.into_parts();
        (rec, core, end)
    }

    fn step(&mut self, ev: Ev) {
        let ev = match self.hold_if_frozen(ev) {
            Some(ev) => ev,
            None => return,
        };
        match ev {
            Ev::Arrive(i) if self.sc.submit_latency_ms > 0 => {
                self.push(self.now + self.sc.submit_latency_ms, Ev::Admit(i));
            }
            Ev::Arrive(i) | Ev::Admit(i) => {
                let a = &self.arrivals[i];
                let effects = self.ctl.submit(a, a.at_ms, self.now);
                self.carry_out(effects);
            }
            // Events of an agent process that has since crashed are void.
            Ev::Boot {
                worker,
                incarnation,
            }
            | Ev::Connect {
                worker,
                incarnation,
            }
            | Ev::Heartbeat {
                worker,
                incarnation,
            } if !self.agents[worker].runs(incarnation) => {}
            Ev::Boot {
                worker: w,
                incarnation,
            } => {
                // Cut off, the agent cannot connect; it dials again later.
                let (at, ev) = if self.agents[w].partitioned > 0 {
                    let retry = self.sc.heartbeat_interval_ms.max(1);
                    (
                        self.now + retry,
                        Ev::Boot {
                            worker: w,
                            incarnation,
                        },
                    )
                } else {
                    let latency = self.sc.network_latency_ms + self.extra_latency;
                    (
                        self.now + latency,
                        Ev::Connect {
                            worker: w,
                            incarnation,
                        },
                    )
                };
                self.push(at, ev);
            }
            Ev::Connect {
                worker: w,
                incarnation,
            } => {
                let a = &self.agents[w].sim;
                let register = Event::WorkerRegistered {
                    name: a.name.clone(),
                    capabilities: a.caps.clone(),
                    incarnation,
                };
                self.send_to_core(w, register);
                self.heartbeat(w, incarnation);
            }
            Ev::Heartbeat {
                worker: w,
                incarnation,
            } => self.heartbeat(w, incarnation),
            Ev::ToCore { event, .. } => {
                let effects = self.ctl.deliver(*event, self.now);
                self.carry_out(effects);
            }
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
                self.agents[worker].sim.stop(&job, &task, attempt);
            }
            Ev::TaskEnd {
                worker,
                incarnation,
                job,
                task,
                attempt,
                ok,
            } => {
                let a = &mut self.agents[worker];
                if a.runs(incarnation) && a.sim.stop(&job, &task, attempt) {
                    let worker_name = a.sim.name.clone();
                    let attempt = AttemptRef { job, task, attempt };
                    let report = if ok {
                        let uri = worker::artifact_uri(&attempt);
                        Event::TaskSucceeded {
                            attempt,
                            worker: worker_name,
                            artifact_uri: Some(uri),
                        }
                    } else {
                        Event::TaskFailed {
                            attempt,
                            worker: worker_name,
                            error: worker::INJECTED_FAILURE.into(),
                            retryable: true,
                        }
                    };
                    if self.agents[worker].frozen > 0 {
                        // The work is done, but a stopped process cannot say so.
                        self.agents[worker].held_reports.push(report);
                    } else {
                        self.send_to_core(worker, report);
                    }
                }
            }
            Ev::Release { worker, event } => self.send_to_core(worker, *event),
            Ev::FaultStart(i) => self.fault(i, true),
            Ev::FaultEnd(i) => self.fault(i, false),
            Ev::Wakeup => {
                self.wakeup_at = None;
                let effects = self.ctl.deliver(Event::Tick, self.now);
                self.carry_out(effects);
            }
            Ev::Sample => {
                self.sample();
                let every = worker::sample_every_ms(self.sc);
                self.push(self.now + every, Ev::Sample);
            }
        }
    }

    /// Keeps what reaches a frozen agent (messages, its own timers) for when it thaws; a task's
    /// end goes through, since the work does not stop with the agent.
    fn hold_if_frozen(&mut self, ev: Ev) -> Option<Ev> {
        let w = match &ev {
            Ev::Boot { worker, .. }
            | Ev::Connect { worker, .. }
            | Ev::Heartbeat { worker, .. }
            | Ev::Assign { worker, .. }
            | Ev::Cancel { worker, .. } => *worker,
            _ => return Some(ev),
        };
        if self.agents[w].frozen == 0 {
            return Some(ev);
        }
        self.agents[w].held.push(ev);
        None
    }

    /// A thawed agent reads what reached it, then reports what finished, then heartbeats: the
    /// order in which the agent's loop takes what is ready.
    fn thaw(&mut self, w: usize) {
        let a = &mut self.agents[w];
        let held = std::mem::take(&mut a.held);
        let reports = std::mem::take(&mut a.held_reports);
        let (messages, timers): (Vec<Ev>, Vec<Ev>) = held
            .into_iter()
            .partition(|e| matches!(e, Ev::Assign { .. } | Ev::Cancel { .. }));
        for ev in messages {
            self.push(self.now, ev);
        }
        for event in reports {
            let event = Box::new(event);
            self.push(self.now, Ev::Release { worker: w, event });
        }
        for ev in timers {
            self.push(self.now, ev);
        }
    }

    /// Sends a heartbeat unless heartbeats are being lost, and queues the next one.
    fn heartbeat(&mut self, w: usize, incarnation: u64) {
        let a = &self.agents[w];
        if a.heartbeats_lost == 0 {
            let hb = Event::Heartbeat(a.sim.heartbeat(incarnation));
            self.send_to_core(w, hb);
        }
        let next = self.now + self.sc.heartbeat_interval_ms.max(1);
        self.push(
            next,
            Ev::Heartbeat {
                worker: w,
                incarnation,
            },
        );
    }

    /// Sends a message to the control plane, unless the network or a partition loses it.
    fn send_to_core(&mut self, w: usize, event: Event) {
        if self.lost(w) {
            return;
        }
        let at = self.now + self.sc.network_latency_ms + self.extra_latency;
        let event = Box::new(event);
        self.push(at, Ev::ToCore { worker: w, event });
    }

    /// Sends a message from the control plane, at the end of the millisecond it was decided in.
    fn send_to_worker(&mut self, w: usize, ev: Ev) {
        if self.lost(w) {
            return;
        }
        let at = self.now + 1 + self.sc.network_latency_ms + self.extra_latency;
        self.push(at, ev);
    }

    fn lost(&mut self, w: usize) -> bool {
        self.agents[w].partitioned > 0
            || (self.loss_rate > 0.0 && unit(&mut self.rng) < self.loss_rate)
    }

    /// Sends the core's assignments and cancellations on, and makes sure it is woken for its
    /// next timer.
    fn carry_out(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Assign(a) => {
                    if let Some(&w) = self.by_name.get(&*a.worker) {
                        let ev = Ev::Assign {
                            worker: w,
                            job: a.job.to_string(),
                            task: a.task.to_string(),
                            attempt: a.attempt,
                        };
                        self.send_to_worker(w, ev);
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
                        let ev = Ev::Cancel {
                            worker: w,
                            job: job.to_string(),
                            task: task.to_string(),
                            attempt,
                        };
                        self.send_to_worker(w, ev);
                    }
                }
                _ => {}
            }
        }
        if let Some(next) = self.ctl.next_wakeup_ms() {
            let at = next.max(self.now);
            if self.wakeup_at.is_none_or(|w| at < w) {
                self.wakeup_at = Some(at);
                self.push(at, Ev::Wakeup);
            }
        }
    }

    /// A worker starts an attempt and tells the control plane; it ends after its run time.
    fn start(&mut self, wi: usize, job: String, task: String, attempt: u32) {
        if !self.agents[wi].alive {
            return;
        }
        let Some(&arrival) = self.arrival_of.get(&job) else {
            return;
        };
        if self.ctl.core().job_phase(&job).is_none() {
            return;
        }
        let Some(spec) = self.planned_task(arrival, &task) else {
            return;
        };
        let setup = AttemptSetup {
            sc: self.sc,
            seed: self.seed,
            job: &job,
            durations_ms: Some(&self.arrivals[arrival].durations_ms),
            spec: &spec,
            attempt,
        };
        let a = &mut self.agents[wi];
        let plan = a.sim.start(&setup, &self.failures);
        let (name, incarnation) = (a.sim.name.clone(), a.incarnation);
        if let Some(cold) = plan.cold {
            self.ctl
                .rec
                .cold
                .insert((job.clone(), task.clone(), attempt), cold);
        }
        let started = Event::TaskStarted {
            attempt: AttemptRef {
                job: job.clone(),
                task: task.clone(),
                attempt,
            },
            worker: name,
        };
        self.send_to_core(wi, started);
        self.push(
            self.now + plan.run_ms,
            Ev::TaskEnd {
                worker: wi,
                incarnation,
                job,
                task,
                attempt,
                ok: plan.ok,
            },
        );
    }

    fn planned_task(
        &mut self,
        arrival: usize,
        task: &str,
    ) -> Option<splai_scheduler::api::TaskSpec> {
        let a = &self.arrivals[arrival];
        let tasks = self.planned[arrival].get_or_insert_with(|| match &a.spec.plan {
            Some(plan) if a.spec.tasks.is_empty() => {
                splai_scheduler::plan::expand(plan, usize::MAX)
                    .map(|(t, _)| t)
                    .unwrap_or_default()
            }
            _ => a.spec.tasks.clone(),
        });
        tasks.iter().find(|t| t.id == task).cloned()
    }

    fn fault(&mut self, i: usize, on: bool) {
        let f = &self.sc.faults[i];
        let count = |c: &mut u32| *c = if on { *c + 1 } else { c.saturating_sub(1) };
        match &f.kind {
            FaultKind::HeartbeatLoss { target } => {
                for w in worker::targets(self.sc, &self.by_name, target) {
                    count(&mut self.agents[w].heartbeats_lost);
                }
            }
            FaultKind::Partition { target } => {
                for w in worker::targets(self.sc, &self.by_name, target) {
                    count(&mut self.agents[w].partitioned);
                }
            }
            FaultKind::Freeze { target } => {
                for w in worker::targets(self.sc, &self.by_name, target) {
                    count(&mut self.agents[w].frozen);
                    if self.agents[w].frozen == 0 {
                        self.thaw(w);
                    }
                }
            }
            FaultKind::Crash { target } => {
                for w in worker::targets(self.sc, &self.by_name, target) {
                    let a = &mut self.agents[w];
                    if on {
                        a.alive = false;
                        a.sim.crash();
                        // A killed process is no longer stopped, and what it held is gone.
                        a.frozen = 0;
                        a.held.clear();
                        a.held_reports.clear();
                    } else if !a.alive {
                        a.alive = true;
                        a.incarnation += 1;
                        let ev = Ev::Boot {
                            worker: w,
                            incarnation: a.incarnation,
                        };
                        self.push(self.now, ev);
                    }
                }
            }
            FaultKind::Slow { target, factor } => {
                for w in worker::targets(self.sc, &self.by_name, target) {
                    self.agents[w].sim.slow = if on { *factor } else { 1.0 };
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
            } => self.failures.set(*task_kind, *probability, on),
        }
    }

    fn sample(&mut self) {
        let busy = self
            .agents
            .iter()
            .fold(Busy::default(), |b, a| b.plus(Busy::of(&a.sim)));
        self.ctl.sample(self.now, busy);
    }
}
