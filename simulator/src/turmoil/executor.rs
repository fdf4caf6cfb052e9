//! The executor the simulated agents run: it sleeps (in turmoil's virtual time) for as long as
//! the shared worker model says the attempt takes, and reports the model's warm cache and load.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use splai_protocol::{Executor, Load, Outcome, TaskAssignment};

use crate::scenario::Scenario;
use crate::worker::{self, AttemptSetup, SimWorker, TaskFailures};

/// One attempt: (job, task, attempt).
pub(super) type AttemptKey = (String, String, u32);

/// What every executor of a run shares.
pub(super) struct World {
    pub sc: Scenario,
    pub seed: u64,
    /// The scenario's `durationsMs`, by job.
    pub durations: BTreeMap<String, BTreeMap<String, u64>>,
    /// Set by `taskFailures` faults.
    pub failures: Mutex<TaskFailures>,
    /// Whether each attempt of a task with a model loaded it, as workers start them; the
    /// control plane moves these into the recorder before it next hands the core an event.
    pub cold: Mutex<Vec<(AttemptKey, bool)>>,
}

/// The simulated state is plain data behind locks that no holder panics under.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) struct SimExecutor {
    pub world: Arc<World>,
    pub worker: Arc<Mutex<SimWorker>>,
}

/// Takes an attempt off the worker when it ends, is cancelled, or dies with its agent.
struct RunningGuard<'a> {
    worker: &'a Mutex<SimWorker>,
    task: &'a TaskAssignment,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let t = self.task;
        lock(self.worker).stop(&t.job, &t.task, t.attempt);
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
        let setup = AttemptSetup {
            sc: &self.world.sc,
            seed: self.world.seed,
            job: &task.job,
            durations_ms: self.world.durations.get(&task.job),
            spec,
            attempt: task.attempt,
        };
        let plan = {
            let failures = lock(&self.world.failures);
            lock(&self.worker).start(&setup, &failures)
        };
        if let Some(cold) = plan.cold {
            let key = (task.job.clone(), task.task.clone(), task.attempt);
            lock(&self.world.cold).push((key, cold));
        }
        let running = RunningGuard {
            worker: &self.worker,
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
