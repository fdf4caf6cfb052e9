//! The executor of the simulated agents: it sleeps for as long as the shared worker model
//! (`crate::worker`) says the attempt takes, and reports the model's warm cache and load.
//!
//! It sleeps with tokio's clock, so the same executor serves two drivers: the turmoil engine,
//! where that clock is turmoil's virtual time, and real runs of a scenario (`splai-fidelity`),
//! where real agents run it against the real operator in real time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use splai_protocol::{AgentConfig, AgentHandle, Backoff, Executor, Load, Outcome, TaskAssignment};
use splai_scheduler::api::Capabilities;

use crate::scenario::{FaultKind, Scenario};
use crate::worker::{self, AttemptSetup, SimWorker, TaskFailures};

/// One attempt: (job, task, attempt).
pub type AttemptKey = (String, String, u32);

/// What every executor of a run shares.
pub struct World {
    pub sc: Scenario,
    pub seed: u64,
    /// The scenario's `durationsMs`, by job.
    pub durations: BTreeMap<String, BTreeMap<String, u64>>,
    /// Set by `taskFailures` faults.
    pub failures: Mutex<TaskFailures>,
    /// Whether each attempt of a task with a model loaded it, as workers start them; the
    /// control plane moves these into the recorder before it next hands the core an event.
    pub cold: Mutex<Vec<(AttemptKey, bool)>>,
    /// What the control plane puts before a scenario's job name in its job keys: nothing in the
    /// simulator, `<namespace>/` for the operator. Draws and durations go by the scenario's name.
    pub key_prefix: String,
    /// Told of each model load as `cold` is: an agent in a process of its own writes them where
    /// its driver reads them, since a killed process cannot hand over its memory.
    pub on_cold: Option<ColdHook>,
}

/// See [`World::on_cold`].
pub type ColdHook = Box<dyn Fn(&AttemptKey, bool) + Send + Sync>;

impl World {
    pub fn new(sc: &Scenario, seed: u64, arrivals: &[crate::workload::Arrival]) -> World {
        World {
            sc: sc.clone(),
            seed,
            durations: arrivals
                .iter()
                .filter(|a| !a.durations_ms.is_empty())
                .map(|a| (a.key.clone(), a.durations_ms.clone()))
                .collect(),
            failures: Mutex::default(),
            cold: Mutex::default(),
            key_prefix: String::new(),
            on_cold: None,
        }
    }
}

/// The simulated state is plain data behind locks that no holder panics under.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct SimExecutor {
    pub world: Arc<World>,
    pub worker: Arc<Mutex<SimWorker>>,
}

/// Takes an attempt off the worker when it ends, is cancelled, or dies with its agent.
struct RunningGuard<'a> {
    worker: &'a Mutex<SimWorker>,
    /// The scenario's name of the job (the key the worker model runs the attempt under).
    job: &'a str,
    task: &'a TaskAssignment,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let t = self.task;
        lock(self.worker).stop(self.job, &t.task, t.attempt);
    }
}

impl Executor for SimExecutor {
    async fn run(&self, task: TaskAssignment) -> Outcome {
        let Some(spec) = &task.task_spec else {
            return Outcome::Failed {
                error: "the assignment came without its task spec".into(),
                retryable: false,
            };
        };
        let job = task
            .job
            .strip_prefix(self.world.key_prefix.as_str())
            .unwrap_or(&task.job);
        let setup = AttemptSetup {
            sc: &self.world.sc,
            seed: self.world.seed,
            job,
            durations_ms: self.world.durations.get(job),
            spec,
            attempt: task.attempt,
        };
        let plan = {
            let failures = lock(&self.world.failures);
            lock(&self.worker).start(&setup, &failures)
        };
        if let Some(cold) = plan.cold {
            let key = (job.to_owned(), task.task.clone(), task.attempt);
            if let Some(hook) = &self.world.on_cold {
                hook(&key, cold);
            }
            lock(&self.world.cold).push((key, cold));
        }
        let running = RunningGuard {
            worker: &self.worker,
            job,
            task: &task,
        };
        tokio::time::sleep(Duration::from_millis(plan.run_ms)).await;
        drop(running);
        if plan.ok {
            Outcome::Succeeded {
                artifact_uri: Some(worker::artifact_uri(&task.attempt_ref())),
            }
        } else {
            Outcome::Failed {
                error: worker::INJECTED_FAILURE.into(),
                retryable: true,
            }
        }
    }

    fn load(&self) -> Load {
        let w = lock(&self.worker);
        Load {
            utilization: w.utilization(),
            warm_models: w.warm.models().to_vec(),
        }
    }
}

/// How a simulated worker's agent is configured, whichever driver runs it: heartbeats every
/// `interval`, and timeouts that fit the scenario's latencies.
pub fn agent_config(
    sc: &Scenario,
    worker: &str,
    caps: Capabilities,
    interval: Duration,
    control_plane: String,
) -> AgentConfig {
    AgentConfig {
        heartbeat_interval: interval,
        // Three missed answers, as the protocol's defaults have it, and never less than a
        // round trip through the worst latency a `network` fault adds.
        dead_after: (interval * 3).max(Duration::from_millis(
            4 * (sc.network_latency_ms + max_extra_latency_ms(sc)) + 1,
        )),
        connect_timeout: interval.max(Duration::from_secs(1)),
        backoff: Backoff {
            initial: Duration::from_millis(250),
            max: interval.max(Duration::from_secs(1)) * 2,
        },
        ..AgentConfig::new(worker, control_plane, caps)
    }
}

fn max_extra_latency_ms(sc: &Scenario) -> u64 {
    sc.faults
        .iter()
        .filter_map(|f| match f.kind {
            FaultKind::Network {
                extra_latency_ms, ..
            } => Some(extra_latency_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The faults that act on agents and workers (`heartbeatLoss`, `freeze`, `crash`, `slow`,
/// `taskFailures`), applied through each agent's handle and the shared worker model, whichever
/// driver runs the agents. Link faults (`partition`, `network`) belong to the driver's network.
pub struct AgentFaults<'a> {
    sc: &'a Scenario,
    by_name: &'a BTreeMap<String, usize>,
    handles: &'a [AgentHandle],
    workers: &'a [Arc<Mutex<SimWorker>>],
    world: &'a World,
    horizon_ms: u64,
    /// Until when each agent's heartbeats are paused, and each crashed agent is down.
    paused_until: Vec<u64>,
    down_until: Vec<u64>,
}

impl<'a> AgentFaults<'a> {
    pub fn new(
        sc: &'a Scenario,
        by_name: &'a BTreeMap<String, usize>,
        handles: &'a [AgentHandle],
        workers: &'a [Arc<Mutex<SimWorker>>],
        world: &'a World,
    ) -> Self {
        AgentFaults {
            sc,
            by_name,
            handles,
            workers,
            world,
            horizon_ms: sc.horizon_seconds.saturating_mul(1000),
            paused_until: vec![0; handles.len()],
            down_until: vec![0; handles.len()],
        }
    }

    /// Starts (`on`) or ends fault `i` at `now`; false when it is a link fault, left to the
    /// caller.
    pub fn apply(&mut self, i: usize, on: bool, now: u64) -> bool {
        let f = &self.sc.faults[i];
        // A fault without a duration lasts past the end of the run.
        let until = f
            .duration_ms
            .map_or(self.horizon_ms + 1, |d| f.at_ms + d)
            .max(now);
        let targets = |t| worker::targets(self.sc, self.by_name, t);
        let ms = Duration::from_millis;
        match &f.kind {
            FaultKind::HeartbeatLoss { target } => {
                for w in targets(target) {
                    if on && until > self.paused_until[w] {
                        self.paused_until[w] = until;
                        // Fails only if the agent has stopped, and agents never stop mid-run.
                        let _ = self.handles[w].pause_heartbeats(ms(until - now));
                    }
                }
            }
            FaultKind::Freeze { target } => {
                for w in targets(target) {
                    if on {
                        let _ = self.handles[w].freeze(ms(until - now));
                    }
                }
            }
            FaultKind::Crash { target } => {
                for w in targets(target) {
                    if on && self.down_until[w] <= now {
                        self.down_until[w] = until;
                        lock(&self.workers[w]).crash();
                        let _ = self.handles[w].crash(ms(until - now));
                    }
                }
            }
            FaultKind::Slow { target, factor } => {
                for w in targets(target) {
                    lock(&self.workers[w]).slow = if on { *factor } else { 1.0 };
                }
            }
            FaultKind::TaskFailures {
                task_kind,
                probability,
            } => lock(&self.world.failures).set(*task_kind, *probability, on),
            FaultKind::Partition { .. } | FaultKind::Network { .. } => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attempt_leaves_the_worker_model_when_it_ends_whatever_prefix_its_job_key_has() {
        let sc = Scenario::parse(
            "t.yaml",
            "name: t\nhorizonSeconds: 10\n\
             fleet: [{ group: g, capabilities: { cpuMillis: 1000, memoryMib: 1024, gpus: 1 } }]\n\
             workload: { jobs: [{ name: a, durationsMs: { t: 1 }, spec: { tenant: x, tasks: [{ id: t, kind: command, resources: { gpus: 1 } }] } }] }\n",
        )
        .unwrap();
        let arrivals = crate::workload::arrivals(
            &sc,
            &mut <rand_chacha::ChaCha8Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(1),
        );
        let world = Arc::new(World {
            key_prefix: "ns/".into(),
            ..World::new(&sc, 1, &arrivals)
        });
        let worker = Arc::new(Mutex::new(SimWorker::fleet(&sc).remove(0)));
        let executor = SimExecutor {
            world,
            worker: Arc::clone(&worker),
        };
        let task = TaskAssignment {
            job: "ns/a".into(),
            task: "t".into(),
            attempt: 1,
            traceparent: String::new(),
            route: None,
            task_spec: Some(arrivals[0].spec.tasks[0].clone()),
        };
        let outcome = executor.run(task).await;
        assert!(matches!(outcome, Outcome::Succeeded { .. }));
        let w = lock(&worker);
        assert!(w.running.is_empty(), "still running: {:?}", w.running);
        assert_eq!(w.utilization().gpu, 0.0);
    }
}
