//! The control plane's side of a run, the same in both engines: it hands events to the core at
//! their times and records what the core does (attempts, job phases, explanations, invariant
//! violations, timeline samples). The engines only carry effects to agents and back.

use splai_scheduler::api::Health;
use splai_scheduler::{Effect, Event, Scheduler, Timestamp};

use crate::des::{EPOCH_MS, RunOptions};
use crate::record::{Recorder, TimelineRow};
use crate::scenario::Scenario;
use crate::worker::Busy;
use crate::workload::Arrival;

pub struct Control {
    core: Scheduler,
    settings: splai_scheduler::Settings,
    /// Hand ended jobs to the summary and drop them from the core, to bound memory.
    forget_ended: bool,
    /// Jobs ended since the engine last asked, so it can drop its own copies.
    pub ended: Vec<String>,
    pub rec: Recorder,
    check_invariants: bool,
    workers: Vec<String>,
    jobs_total: usize,
    arrived: usize,
    open_jobs: usize,
}

impl Control {
    /// A core with the scenario's policies and routes in place at time 0.
    pub fn new(sc: &Scenario, opts: &RunOptions, workers: Vec<String>, jobs_total: usize) -> Self {
        let mut rec = Recorder::for_scenario(sc);
        if let Some((j, t)) = &opts.explain {
            rec.explain = Some((j.clone(), t.clone(), Vec::new()));
        }
        let mut control = Control {
            core: Scheduler::new(sc.settings.clone(), opts.strategy, opts.seed),
            settings: sc.settings.clone(),
            forget_ended: opts.explain.is_none(),
            ended: Vec::new(),
            rec,
            check_invariants: opts.check_invariants,
            workers,
            jobs_total,
            arrived: 0,
            open_jobs: 0,
        };
        for (name, spec) in &sc.policies {
            let event = Event::PolicyUpserted {
                name: name.clone(),
                spec: spec.clone(),
            };
            control.deliver(event, 0);
        }
        for (name, spec) in &sc.routes {
            let event = Event::RouteUpserted {
                name: name.clone(),
                spec: spec.clone(),
            };
            control.deliver(event, 0);
        }
        control
    }

    pub fn core(&self) -> &Scheduler {
        &self.core
    }

    pub fn into_parts(self) -> (Recorder, Scheduler) {
        (self.rec, self.core)
    }

    /// How many jobs have ended so far.
    pub fn jobs_ended(&self) -> usize {
        self.arrived - self.open_jobs
    }

    /// Every job has arrived and ended.
    pub fn finished(&self) -> bool {
        self.arrived == self.jobs_total && self.open_jobs == 0
    }

    /// When the core's next timer is due, in ms since the start of the run.
    pub fn next_wakeup_ms(&self) -> Option<u64> {
        self.core
            .next_wakeup()
            .map(|t| t.millis().saturating_sub(EPOCH_MS))
    }

    /// A job of the workload, submitted at `submitted`, reaches the core at `now` (later by the
    /// scenario's `submitLatencyMs`).
    pub fn submit(&mut self, a: &Arrival, submitted: u64, now: u64) -> Vec<Effect> {
        self.arrived += 1;
        self.open_jobs += 1;
        self.rec
            .job_arrived(&a.key, &a.spec, &a.durations_ms, submitted);
        let event = Event::JobSubmitted {
            key: a.key.clone(),
            spec: a.spec.clone(),
            trace_id: None,
        };
        self.deliver(event, now)
    }

    /// Hands one event to the core at `now` (ms since the start) and records its effects, which
    /// it returns for the engine to carry out.
    pub fn deliver(&mut self, event: Event, now: u64) -> Vec<Effect> {
        let effects = self.core.handle(event, Timestamp(EPOCH_MS + now));
        if self.check_invariants
            && let Err(e) = self.core.check_invariants()
        {
            self.rec.violations.push(format!("t={now}ms: {e}"));
        }
        let mut ended = Vec::new();
        for e in &effects {
            self.record(e, now, &mut ended);
        }
        for key in ended {
            self.hand_over(&key);
        }
        if let Some((j, t, log)) = self.rec.explain.as_mut()
            && let Some(st) = self.core.job_status(j)
            && let Some(ts) = st.tasks.iter().find(|x| &x.id == t)
            && let Some(r) = &ts.pending_reason
        {
            let line = format!("t={:.3}s  waiting: {r}", now as f64 / 1000.0);
            if log.last().is_none_or(|l| !l.ends_with(r.as_str())) {
                log.push(line);
            }
        }
        effects
    }

    /// Adds an ended job to the summary's totals and drops it from the core.
    fn hand_over(&mut self, key: &str) {
        if !self.forget_ended {
            return;
        }
        let (Some(spec), Some(status), Some(row)) = (
            self.core.job_spec(key),
            self.core.job_status(key),
            self.rec.jobs.get(key),
        ) else {
            return;
        };
        let seen = self.rec.seen.remove(key).unwrap_or_default();
        self.rec
            .tally
            .add_job(&self.settings, key, &spec, &status, row, &seen);
        // Forgetting a terminal job changes no decision: its timers are void and its tasks ended.
        let effects = self.core.handle(
            Event::JobForgotten {
                key: key.to_owned(),
            },
            self.core_now(),
        );
        debug_assert!(
            effects.is_empty(),
            "forgetting an ended job has no effects: {effects:?}"
        );
        self.ended.push(key.to_owned());
    }

    fn core_now(&self) -> Timestamp {
        // Forgetting happens at the time of the event that ended the job; the core's clock
        // never goes back, so its own latest time is the right one.
        self.core.now()
    }

    fn record(&mut self, e: &Effect, now: u64, ended: &mut Vec<String>) {
        match e {
            Effect::Assign(a) => {
                if let Some((j, t, log)) = self.rec.explain.as_mut()
                    && *j == *a.job
                    && *t == *a.task
                {
                    log.push(format!(
                        "t={:.3}s  attempt {}: {}",
                        now as f64 / 1000.0,
                        a.attempt,
                        a.explanation
                    ));
                }
            }
            Effect::AttemptEnded(r) => {
                let (cpu, gpus) = self
                    .core
                    .task_spec(&r.job, &r.task)
                    .map_or((0, 0), |t| (t.resources.cpu_millis, t.resources.gpus));
                self.rec.attempt_ended(r, EPOCH_MS, cpu, gpus);
            }
            Effect::JobPlanned { job, tasks, .. } => {
                if let Some(row) = self.rec.jobs.get_mut(&**job) {
                    row.tasks = tasks.len();
                }
            }
            Effect::JobPhaseChanged { job, to, .. } => {
                if let Some(row) = self.rec.jobs.get_mut(&**job) {
                    row.phase = *to;
                    if to.is_terminal() {
                        row.finished_ms = Some(now);
                        self.open_jobs -= 1;
                        ended.push(job.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    /// One timeline row: what the workers run (`busy`) and what the core sees.
    pub fn sample(&mut self, now: u64, busy: Busy) {
        let healthy = self
            .workers
            .iter()
            .filter(|w| self.core.worker_health(w) == Some(Health::Healthy))
            .count() as u64;
        self.rec.timeline.push(TimelineRow {
            t_ms: now,
            running_tasks: busy.running,
            busy_cpu_millis: busy.cpu_millis,
            busy_gpus: busy.gpus,
            queued_tasks: self.core.queue_len() as u64,
            healthy_workers: healthy,
        });
    }
}
