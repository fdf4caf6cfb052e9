//! Builders and a driver for the core's tests, named after the scenarios they set up.
#![allow(dead_code)]

use splai_scheduler::api::*;
use splai_scheduler::{
    Assignment, Effect, Event, Heartbeat, Scheduler, Settings, Strategy, Timestamp,
};

pub fn task(id: &str) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        retry: RetryPolicy {
            limit: 0,
            ..RetryPolicy::default()
        },
        ..TaskSpec::default()
    }
}

pub fn inference(id: &str, model: &str) -> TaskSpec {
    TaskSpec {
        kind: TaskKind::Inference,
        model: Some(model.into()),
        ..task(id)
    }
}

/// A job spec built step by step: `JobBuilder::new("acme").chain(3)`.
#[derive(Clone)]
pub struct JobBuilder(pub JobSpec);

impl JobBuilder {
    pub fn new(tenant: &str) -> Self {
        JobBuilder(JobSpec {
            tenant: tenant.into(),
            ..JobSpec::default()
        })
    }

    pub fn task(mut self, t: TaskSpec) -> Self {
        self.0.tasks.push(t);
        self
    }

    pub fn dep(mut self, child: &str, parents: &[&str]) -> Self {
        self.0.dependencies.push(Dependency {
            task: child.into(),
            depends_on: parents.iter().map(|p| p.to_string()).collect(),
        });
        self
    }

    /// Tasks `s1 -> s2 -> ... -> sn`.
    pub fn chain(mut self, n: usize) -> Self {
        for i in 1..=n {
            self = self.task(task(&format!("s{i}")));
            if i > 1 {
                self = self.dep(&format!("s{i}"), &[&format!("s{}", i - 1)]);
            }
        }
        self
    }

    pub fn priority(mut self, p: i32) -> Self {
        self.0.priority = p;
        self
    }

    pub fn timeout(mut self, secs: u64) -> Self {
        self.0.timeout_seconds = Some(secs);
        self
    }

    pub fn retries(mut self, limit: u32) -> Self {
        for t in &mut self.0.tasks {
            t.retry.limit = limit;
        }
        self
    }

    pub fn build(self) -> JobSpec {
        self.0
    }
}

pub fn caps(cpu: u32, mem: u32) -> Capabilities {
    Capabilities {
        cpu_millis: cpu,
        memory_mib: mem,
        ..Capabilities::default()
    }
}

/// Drives a scheduler and keeps every effect it returned.
pub struct Sim {
    pub s: Scheduler,
    pub now: u64,
    pub effects: Vec<Effect>,
}

impl Sim {
    pub fn new() -> Self {
        Sim::with(Settings::default(), Strategy::Splai)
    }

    pub fn with(settings: Settings, strategy: Strategy) -> Self {
        Sim {
            s: Scheduler::new(settings, strategy, 7),
            now: 1_000_000,
            effects: Vec::new(),
        }
    }

    pub fn send(&mut self, e: Event) -> Vec<Effect> {
        let out = self.s.handle(e, Timestamp(self.now));
        self.effects.extend(out.iter().cloned());
        if let Err(e) = self.s.check_invariants() {
            panic!("invariant broken: {e}");
        }
        out
    }

    pub fn advance(&mut self, ms: u64) -> Vec<Effect> {
        self.now += ms;
        self.send(Event::Tick)
    }

    pub fn worker(&mut self, name: &str, c: Capabilities) -> Vec<Effect> {
        self.send(Event::WorkerRegistered {
            name: name.into(),
            capabilities: c,
            incarnation: 1,
        })
    }

    /// A heartbeat from a healthy agent: it lists every attempt the core has given it.
    pub fn heartbeat(&mut self, name: &str, warm: &[&str]) -> Vec<Effect> {
        let running = self
            .s
            .worker_status(name)
            .map(|w| w.running_tasks)
            .unwrap_or_default();
        self.send(Event::Heartbeat(Heartbeat {
            worker: name.into(),
            incarnation: 1,
            warm_models: warm.iter().map(|m| m.to_string()).collect(),
            running,
            ..Heartbeat::default()
        }))
    }

    pub fn submit(&mut self, key: &str, spec: JobSpec) -> Vec<Effect> {
        self.send(Event::JobSubmitted {
            key: key.into(),
            spec,
            trace_id: None,
        })
    }

    pub fn assignments(&self) -> Vec<&Assignment> {
        self.effects
            .iter()
            .filter_map(|e| {
                if let Effect::Assign(a) = e {
                    Some(&**a)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The latest assignment of `job/task`.
    pub fn assigned(&self, job: &str, t: &str) -> Option<&Assignment> {
        self.assignments()
            .into_iter()
            .rev()
            .find(|a| &*a.job == job && &*a.task == t)
    }

    fn current(&self, job: &str, t: &str) -> (AttemptRef, String) {
        let a = self
            .assigned(job, t)
            .unwrap_or_else(|| panic!("{job}/{t} was never assigned"));
        (
            AttemptRef {
                job: job.into(),
                task: t.into(),
                attempt: a.attempt,
            },
            a.worker.to_string(),
        )
    }

    pub fn start(&mut self, job: &str, t: &str) -> Vec<Effect> {
        let (attempt, worker) = self.current(job, t);
        self.send(Event::TaskStarted { attempt, worker })
    }

    pub fn succeed(&mut self, job: &str, t: &str) -> Vec<Effect> {
        let (attempt, worker) = self.current(job, t);
        let uri = format!("file:///artifacts/{job}/{t}/{}", attempt.attempt);
        self.send(Event::TaskSucceeded {
            attempt,
            worker,
            artifact_uri: Some(uri),
        })
    }

    pub fn fail(&mut self, job: &str, t: &str, error: &str) -> Vec<Effect> {
        let (attempt, worker) = self.current(job, t);
        self.send(Event::TaskFailed {
            attempt,
            worker,
            error: error.into(),
            retryable: true,
        })
    }

    pub fn status(&self, job: &str) -> JobStatus {
        self.s.job_status(job).expect("known job")
    }

    pub fn phase(&self, job: &str) -> JobPhase {
        self.status(job).phase
    }

    pub fn task(&self, job: &str, t: &str) -> TaskStatus {
        self.status(job)
            .tasks
            .into_iter()
            .find(|s| s.id == t)
            .expect("known task")
    }
}
