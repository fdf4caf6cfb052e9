//! The simulated worker that both engines share: how long an attempt runs, the worker's warm-model
//! cache, injected task failures, when each agent boots, and which workers a fault hits.
//!
//! Every random draw about one attempt comes from a generator seeded by the run's seed and the
//! attempt's identity (worker, job, task, attempt), never from a shared stream. An attempt
//! therefore takes the same time and has the same outcome whichever engine runs it and in
//! whatever order attempts happen to start.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use splai_scheduler::Heartbeat;
use splai_scheduler::api::{AttemptRef, Capabilities, TaskKind, TaskSpec, Utilization};

use crate::scenario::{Scenario, Target};
use crate::workload::{below, unit};

/// The error an injected failure reports.
pub const INJECTED_FAILURE: &str = "the task exited with an error (injected failure)";

/// Where a successful attempt leaves its output.
pub fn artifact_uri(a: &AttemptRef) -> String {
    format!("sim://artifacts/{}/{}/{}", a.job, a.task, a.attempt)
}

/// What a worker runs and holds. The engines keep their own agent state (incarnation,
/// connectivity) beside it.
#[derive(Clone, Debug)]
pub struct SimWorker {
    pub name: String,
    pub caps: Capabilities,
    /// The factor of an active `slow` fault; 1 when there is none.
    pub slow: f64,
    pub warm: WarmCache,
    /// Attempts running here, by `(job, task)`.
    pub running: BTreeMap<(String, String), Running>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    pub attempt: u32,
    pub cpu_millis: u32,
    pub gpus: u32,
}

/// How one attempt goes, decided when it starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttemptPlan {
    /// Until the attempt ends, model load included.
    pub run_ms: u64,
    pub ok: bool,
    /// For tasks with a model: whether it had to be loaded.
    pub cold: Option<bool>,
}

impl SimWorker {
    /// The scenario's fleet, in file order; workers are named `<group>-<index>`.
    pub fn fleet(sc: &Scenario) -> Vec<SimWorker> {
        sc.fleet
            .iter()
            .flat_map(|g| {
                (0..g.count).map(move |i| SimWorker {
                    name: format!("{}-{i}", g.group),
                    caps: g.capabilities.clone(),
                    slow: 1.0,
                    warm: WarmCache {
                        models: g.warm_models.clone(),
                        max: g.max_warm_models.max(1) as usize,
                    },
                    running: BTreeMap::new(),
                })
            })
            .collect()
    }

    /// Starts an attempt: draws its run time, loads its model if it is not warm, and decides
    /// whether it fails.
    pub fn start(&mut self, attempt: &AttemptSetup<'_>, failures: &TaskFailures) -> AttemptPlan {
        let AttemptSetup {
            sc,
            seed,
            job,
            durations_ms,
            spec,
            attempt,
        } = *attempt;
        let mut rng = attempt_rng(seed, &self.name, job, &spec.id, attempt);
        let base = durations_ms
            .and_then(|d| d.get(&spec.id).copied())
            .or(spec.expected_duration_ms)
            .unwrap_or(sc.settings.default_duration_ms);
        let noise = if sc.duration_noise > 0.0 {
            1.0 + sc.duration_noise * (2.0 * unit(&mut rng) - 1.0)
        } else {
            1.0
        };
        let mut run_ms =
            (base as f64 * noise / self.caps.speed_factor.max(0.01) * self.slow).max(1.0) as u64;
        let cold = spec.model.as_ref().map(|m| !self.warm.touch(m));
        if cold == Some(true) {
            let c = &sc.cold_start;
            run_ms += if c.samples_ms.is_empty() {
                c.fixed_ms
            } else {
                c.samples_ms[below(&mut rng, c.samples_ms.len() as u64) as usize]
            };
        }
        let p = failures.probability(spec.kind);
        let ok = !(p > 0.0 && unit(&mut rng) < p);
        if !ok {
            run_ms = (run_ms as f64 * unit(&mut rng)).max(1.0) as u64;
        }
        self.running.insert(
            (job.to_owned(), spec.id.clone()),
            Running {
                attempt,
                cpu_millis: spec.resources.cpu_millis,
                gpus: spec.resources.gpus,
            },
        );
        AttemptPlan { run_ms, ok, cold }
    }

    /// The attempt is no longer running here (it ended or was stopped). A newer attempt of the
    /// same task is left alone.
    pub fn stop(&mut self, job: &str, task: &str, attempt: u32) -> bool {
        let key = (job.to_owned(), task.to_owned());
        if self.running.get(&key).is_some_and(|r| r.attempt == attempt) {
            self.running.remove(&key);
            true
        } else {
            false
        }
    }

    /// A process restart loses the running attempts and the loaded models.
    pub fn crash(&mut self) {
        self.running.clear();
        self.warm.models.clear();
    }

    pub fn utilization(&self) -> Utilization {
        let busy = Busy::of(self);
        Utilization {
            cpu: busy.cpu_millis as f64 / f64::from(self.caps.cpu_millis.max(1)),
            memory: 0.0,
            gpu: if self.caps.gpus == 0 {
                0.0
            } else {
                busy.gpus as f64 / f64::from(self.caps.gpus)
            },
        }
    }

    /// The heartbeat the worker's agent would send now.
    pub fn heartbeat(&self, incarnation: u64) -> Heartbeat {
        Heartbeat {
            worker: self.name.clone(),
            incarnation,
            utilization: self.utilization(),
            queue_depth: self.running.len() as u32,
            warm_models: self.warm.models.clone(),
            running: self
                .running
                .iter()
                .map(|((job, task), r)| AttemptRef {
                    job: job.clone(),
                    task: task.clone(),
                    attempt: r.attempt,
                })
                .collect(),
        }
    }
}

/// Everything an attempt's plan depends on besides the worker and the failure rates.
#[derive(Clone, Copy)]
pub struct AttemptSetup<'a> {
    pub sc: &'a Scenario,
    pub seed: u64,
    pub job: &'a str,
    /// The scenario's `durationsMs` of the job, if it lists any.
    pub durations_ms: Option<&'a BTreeMap<String, u64>>,
    pub spec: &'a TaskSpec,
    pub attempt: u32,
}

/// Loaded models, least recently used first.
#[derive(Clone, Debug)]
pub struct WarmCache {
    models: Vec<String>,
    max: usize,
}

impl WarmCache {
    /// Uses `model`, loading it (and evicting the least recently used) if needed; whether it
    /// was already loaded.
    pub fn touch(&mut self, model: &str) -> bool {
        let hit = self.models.iter().any(|m| m == model);
        self.models.retain(|m| m != model);
        self.models.push(model.to_owned());
        if self.models.len() > self.max {
            self.models.remove(0);
        }
        hit
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }
}

/// Attempt failure probabilities of active `taskFailures` faults, by task kind (`None`: all).
#[derive(Clone, Debug, Default)]
pub struct TaskFailures(BTreeMap<Option<TaskKind>, f64>);

impl TaskFailures {
    pub fn set(&mut self, kind: Option<TaskKind>, probability: f64, on: bool) {
        if on {
            self.0.insert(kind, probability);
        } else {
            self.0.remove(&kind);
        }
    }

    pub fn probability(&self, kind: TaskKind) -> f64 {
        self.0
            .get(&Some(kind))
            .or(self.0.get(&None))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Running attempts and the resources they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Busy {
    pub running: u64,
    pub cpu_millis: u64,
    pub gpus: u64,
}

impl Busy {
    pub fn of(w: &SimWorker) -> Busy {
        w.running.values().fold(Busy::default(), |b, r| Busy {
            running: b.running + 1,
            cpu_millis: b.cpu_millis + u64::from(r.cpu_millis),
            gpus: b.gpus + u64::from(r.gpus),
        })
    }

    pub fn plus(self, o: Busy) -> Busy {
        Busy {
            running: self.running + o.running,
            cpu_millis: self.cpu_millis + o.cpu_millis,
            gpus: self.gpus + o.gpus,
        }
    }
}

/// When each worker's agent process starts, uniformly within the first heartbeat interval, so
/// that heartbeats are spread. Drawn from the run's generator right after the arrivals, in
/// fleet order, so both engines boot the same agent at the same time.
pub fn boot_times(sc: &Scenario, workers: usize, rng: &mut ChaCha8Rng) -> Vec<u64> {
    (0..workers)
        .map(|_| below(rng, sc.heartbeat_interval_ms.max(1)))
        .collect()
}

/// Worker indices by name.
pub fn index(workers: &[SimWorker]) -> BTreeMap<String, usize> {
    workers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name.clone(), i))
        .collect()
}

/// The indices of the workers a fault's target names.
pub fn targets(sc: &Scenario, index: &BTreeMap<String, usize>, target: &Target) -> Vec<usize> {
    sc.workers_of(target)
        .into_iter()
        .filter_map(|n| index.get(&n).copied())
        .collect()
}

/// How often the timeline is sampled: 500 samples over the horizon, at most one a second.
pub fn sample_every_ms(sc: &Scenario) -> u64 {
    (sc.horizon_seconds * 1000 / 500).max(1_000)
}

/// The generator for every draw about one attempt.
fn attempt_rng(seed: u64, worker: &str, job: &str, task: &str, attempt: u32) -> ChaCha8Rng {
    let h = splai_scheduler::hash::stable_hash(&[
        &seed.to_le_bytes(),
        worker.as_bytes(),
        job.as_bytes(),
        task.as_bytes(),
        &attempt.to_le_bytes(),
    ]);
    ChaCha8Rng::seed_from_u64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::parse(
            "t.yaml",
            "name: t\nhorizonSeconds: 60\ndurationNoise: 0.3\ncoldStart: { fixedMs: 1000 }\n\
             fleet: [{ group: g, count: 2, capabilities: { cpuMillis: 4000, memoryMib: 1, gpus: 1, models: ['*'] }, maxWarmModels: 2 }]\n\
             workload: { jobs: [{ name: j, spec: { tenant: a, tasks: [{ id: t, kind: inference, model: m1, expectedDurationMs: 5000 }] } }] }\n",
        )
        .unwrap()
    }

    fn spec(model: &str) -> TaskSpec {
        TaskSpec {
            id: "t".into(),
            kind: TaskKind::Inference,
            model: Some(model.into()),
            expected_duration_ms: Some(5_000),
            ..TaskSpec::default()
        }
    }

    fn plan(w: &mut SimWorker, sc: &Scenario, spec: &TaskSpec, attempt: u32) -> AttemptPlan {
        let setup = AttemptSetup {
            sc,
            seed: 7,
            job: "j",
            durations_ms: None,
            spec,
            attempt,
        };
        w.start(&setup, &TaskFailures::default())
    }

    #[test]
    fn an_attempt_draws_the_same_run_time_whatever_ran_before_it() {
        let sc = scenario();
        let mut a = SimWorker::fleet(&sc).remove(0);
        let mut b = a.clone();
        plan(&mut b, &sc, &spec("m1"), 1);
        plan(&mut b, &sc, &spec("m1"), 2);
        let (pa, pb) = (
            plan(&mut a, &sc, &spec("m1"), 3),
            plan(&mut b, &sc, &spec("m1"), 3),
        );
        // Only the model load differs: `a` loads m1 cold, `b` has it warm from before.
        assert_eq!(pa.run_ms, pb.run_ms + 1_000);
        assert_eq!((pa.cold, pb.cold), (Some(true), Some(false)));
        assert_ne!(plan(&mut a, &sc, &spec("m1"), 4).run_ms, pa.run_ms - 1_000);
    }

    #[test]
    fn the_warm_cache_evicts_the_least_recently_used_model() {
        let sc = scenario();
        let mut w = SimWorker::fleet(&sc).remove(0);
        for m in ["m1", "m2", "m1", "m3"] {
            plan(&mut w, &sc, &spec(m), 1);
        }
        assert_eq!(w.warm.models(), ["m1", "m3"]);
        w.crash();
        assert!(w.warm.models().is_empty() && w.running.is_empty());
    }

    #[test]
    fn failures_by_kind_override_failures_of_every_kind() {
        let mut f = TaskFailures::default();
        f.set(None, 0.5, true);
        f.set(Some(TaskKind::Inference), 0.1, true);
        assert_eq!(f.probability(TaskKind::Inference), 0.1);
        assert_eq!(f.probability(TaskKind::Command), 0.5);
        f.set(None, 0.5, false);
        assert_eq!(f.probability(TaskKind::Command), 0.0);
    }
}
