//! Snapshots and rebuilding: the core's whole state, as the resources' specs and statuses.
//!
//! The operator keeps no state of its own. After a restart it lists the four resources and calls
//! [`Scheduler::rebuild`]; attempts in flight keep their workers and attempt numbers, so reports
//! that arrive afterwards are fenced exactly as before the restart. Workers that were alive come
//! back Stale until their agents are heard from again ([`WorkerRecord::restored`]).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{
    Capabilities, Health, JobPhase, JobSpec, JobStatus, ModelRouteSpec, PolicySpec, Progress,
    TaskPhase, WorkerSpec, WorkerStatus,
};
use crate::engine::{JobRt, Scheduler, TaskState, Timer};
use crate::event::Effect;
use crate::score::Strategy;
use crate::settings::Settings;
use crate::time::Timestamp;

/// Every resource the core's state is made of.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub jobs: Vec<JobRecord>,
    pub workers: Vec<WorkerRecord>,
    pub policies: BTreeMap<String, PolicySpec>,
    pub routes: BTreeMap<String, ModelRouteSpec>,
}

/// The input of a rebuild; the same as a snapshot.
pub type RebuildInput = Snapshot;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub key: String,
    pub spec: JobSpec,
    pub status: JobStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    pub name: String,
    pub spec: WorkerSpec,
    pub status: WorkerStatus,
}

impl WorkerRecord {
    /// The worker as a rebuilt core holds it. Every worker that was alive gets a full window to
    /// reconnect to the new control plane, rather than being judged on a heartbeat the old one
    /// heard a while ago. Until its agent heartbeats to the new one it is Stale: nobody there has
    /// heard from it, and an assignment sent now would go nowhere (its agent may be reconnecting,
    /// or gone with the old incarnation) and cost the task a retry. Its first heartbeat makes it
    /// Healthy; silence makes it Lost after `lost_after_ms`, as for any Stale worker.
    pub fn restored(mut self, now: Timestamp) -> Self {
        if matches!(self.status.health, Health::Healthy | Health::Stale) {
            self.status.last_heartbeat = Some(now);
            self.status.health = Health::Stale;
        }
        self
    }
}

impl Scheduler {
    /// The whole state, as specs and statuses.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            jobs: self
                .jobs_by_age()
                .map(|j| JobRecord {
                    key: j.key.to_string(),
                    spec: self.spec_of(j),
                    status: self.job_status(&j.key).expect("listed job"),
                })
                .collect(),
            workers: self
                .fleet
                .workers
                .iter()
                .filter(|w| w.registered)
                .map(|w| WorkerRecord {
                    name: w.name.to_string(),
                    spec: WorkerSpec {
                        capabilities: w.caps.clone(),
                    },
                    status: self.worker_status(&w.name).expect("listed worker"),
                })
                .collect(),
            policies: self.policies.clone(),
            routes: self.routes.clone(),
        }
    }

    /// Rebuilds the state from resources, as after an operator restart, and returns the effects
    /// of catching up to `now` (timers that fell due while nobody was watching). Workers that
    /// were alive are Stale until they heartbeat ([`WorkerRecord::restored`]), so nothing is
    /// placed on them before.
    pub fn rebuild(
        settings: Settings,
        strategy: Strategy,
        seed: u64,
        input: Snapshot,
        now: Timestamp,
    ) -> (Self, Vec<Effect>) {
        let mut s = Scheduler::new(settings, strategy, seed);
        s.policies = input.policies;
        s.routes = input.routes;
        for w in input.workers {
            let w = w.restored(now);
            s.restore_worker(&w.name, w.spec.capabilities, &w.status);
        }
        let mut jobs = input.jobs;
        jobs.sort_by_key(|j| j.status.submitted_at.unwrap_or(Timestamp::ZERO));
        let mut failed = Vec::new();
        for j in jobs {
            failed.extend(s.restore_job(j, now));
        }
        s.now = now;
        let mut out = Vec::new();
        for (j, t) in failed {
            s.skip_descendants(j, t, now);
            s.maybe_finish(j, now, &mut out);
        }
        // A job whose every task ended, though its stored phase had not caught up, ends now.
        for j in 0..s.jobs.len() as u32 {
            if s.jobs[j as usize].is_some() {
                s.maybe_finish(j, now, &mut out);
            }
        }
        for t in 0..s.tenants.len() as u32 {
            s.refresh_tenant(t);
            s.admit_waiting(t, now, &mut out);
        }
        s.dirty = true;
        out.extend(s.handle(crate::event::Event::Tick, now));
        (s, out)
    }

    fn restore_worker(&mut self, name: &str, caps: Capabilities, status: &WorkerStatus) {
        let last = status.last_heartbeat.unwrap_or(Timestamp::ZERO);
        let (w, _) = self.fleet.upsert(name, caps, last);
        self.fleet.set_warm(w, &status.warm_models);
        self.fleet.workers[w as usize].slots_seen = status.warm_models.len() as u32;
        let wr = &mut self.fleet.workers[w as usize];
        wr.incarnation = status.incarnation;
        wr.last_heartbeat = last;
        wr.utilization = status.utilization;
        if let Some(speed) = status.observed_speed {
            wr.speed = speed.max(0.01);
        }
        self.fleet.set_health(w, status.health);
        if status.health != Health::Lost {
            let due = match status.health {
                Health::Stale => last.plus_ms(
                    self.settings
                        .lost_after_ms
                        .max(self.settings.stale_after_ms),
                ),
                _ => last.plus_ms(self.settings.stale_after_ms),
            };
            self.arm_check(w, due);
        }
    }

    /// Restores one job. Returns the tasks that failed because their worker vanished and no
    /// retry was left; the caller settles their dependents.
    fn restore_job(&mut self, rec: crate::rebuild::JobRecord, now: Timestamp) -> Vec<(u32, u32)> {
        let mut failed = Vec::new();
        let JobRecord {
            key,
            mut spec,
            status,
        } = rec;
        let j = self.job_slot();
        let tenant = self.tenant_id(&spec.tenant);
        let key: std::sync::Arc<str> = key.as_str().into();
        let submitted = status.submitted_at.unwrap_or(Timestamp::ZERO);
        let dag = crate::dag::validate(&spec, &self.settings.limits).unwrap_or_default();
        let mut job = JobRt {
            key: key.clone(),
            seq: self.next_job_seq,
            tenant,
            priority: spec.priority,
            phase: status.phase,
            reason: status.reason.as_deref().map(intern_reason),
            message: status.message.clone(),
            submitted,
            started: status.started_at,
            finished: status.finished_at,
            timeout_ms: spec.timeout_seconds.map(|s| s.saturating_mul(1000)),
            dag,
            tasks: Vec::new(),
            task_ids: FxHashMap::default(),
            progress: Progress::default(),
            critical_ms: 0,
            trace_id: status
                .trace_id
                .clone()
                .unwrap_or_else(|| crate::engine::derive_trace_id(&key, submitted))
                .into(),
            spec: Box::default(),
        };
        self.next_job_seq += 1;
        if job.dag.len() == spec.tasks.len() && !spec.tasks.is_empty() {
            self.build_tasks(&mut job, &mut spec, None);
        }
        job.spec = Box::new(spec);
        self.put_job(j, job);
        self.job_ids.insert(key, j);

        let by_id: FxHashMap<&str, &crate::api::TaskStatus> =
            status.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let admitted = status.started_at.is_some();
        let terminal = status.phase.is_terminal();
        for t in 0..self.job(j).tasks.len() as u32 {
            let id = self.job(j).tasks[t as usize].id.clone();
            let Some(ts) = by_id.get(&*id) else { continue };
            let task = &mut self.job_mut(j).tasks[t as usize];
            task.attempt = ts.attempt;
            task.error = ts.error.as_deref().map(Into::into);
            if ts.route.is_some() {
                task.route = ts.route.clone().map(Box::new);
            }
            let at = ts.finished_at.unwrap_or(submitted);
            let state = if terminal && !ts.phase.is_terminal() {
                // An ended job whose stored status still shows this task in flight (its last
                // write raced the end): nothing may run it again or hold a worker for it.
                TaskState::Canceled {
                    at: status.finished_at.unwrap_or(now),
                }
            } else {
                match ts.phase {
                    TaskPhase::Waiting => TaskState::Waiting,
                    TaskPhase::Ready => TaskState::Ready,
                    TaskPhase::Retrying => TaskState::Retrying {
                        not_before: ts.not_before.unwrap_or(submitted),
                    },
                    TaskPhase::Assigned | TaskPhase::Running => {
                        let worker =
                            ts.worker
                                .as_deref()
                                .and_then(|w| self.fleet.id(w))
                                .filter(|&w| {
                                    let wr = &self.fleet.workers[w as usize];
                                    wr.registered && wr.health != Health::Lost
                                });
                        match worker {
                            Some(w) => {
                                let at = ts.assigned_at.unwrap_or(submitted);
                                match ts.started_at {
                                    Some(started) => TaskState::Running {
                                        worker: w,
                                        at,
                                        started,
                                        cold: false,
                                    },
                                    None => TaskState::Assigned {
                                        worker: w,
                                        at,
                                        cold: false,
                                    },
                                }
                            }
                            // Its worker is gone: the attempt is lost, and the task runs again if it may.
                            None => {
                                let gone = ts.worker.as_deref().unwrap_or("unknown");
                                let task = &mut self.job_mut(j).tasks[t as usize];
                                task.error =
                                    Some(format!("worker {gone} was gone after a restart").into());
                                if ts.attempt <= task.retry.limit {
                                    TaskState::Retrying { not_before: now }
                                } else {
                                    failed.push((j, t));
                                    TaskState::Failed { at: now }
                                }
                            }
                        }
                    }
                    TaskPhase::Succeeded => TaskState::Succeeded {
                        at,
                        artifact: ts.artifact_uri.as_deref().map(Into::into),
                    },
                    TaskPhase::Failed => TaskState::Failed { at },
                    TaskPhase::TimedOut => TaskState::TimedOut { at },
                    TaskPhase::Canceled => TaskState::Canceled { at },
                    TaskPhase::Skipped => TaskState::Skipped { at },
                }
            };
            self.set_state(j, t, state);
        }
        // Counters and indices follow from the task states.
        for t in 0..self.job(j).tasks.len() as u32 {
            let unmet = {
                let job = self.job(j);
                job.dag
                    .parents(t)
                    .iter()
                    .filter(|&&p| {
                        !matches!(job.tasks[p as usize].state, TaskState::Succeeded { .. })
                    })
                    .count() as u32
            };
            self.job_mut(j).tasks[t as usize].unmet = unmet;
            // A task whose parents all succeeded is ready, whatever the stored status said (a
            // driver may learn of a success from its records before its status caught up).
            if unmet == 0
                && admitted
                && !terminal
                && self.job(j).tasks[t as usize].state == TaskState::Waiting
            {
                self.set_state(j, t, TaskState::Ready);
            }
            let task = &self.job(j).tasks[t as usize];
            match task.state.clone() {
                TaskState::Ready if admitted && !terminal => {
                    self.job_mut(j).tasks[t as usize].ready_at = now;
                    let (bucket, q) = self.queued(j, t);
                    self.queue.push(bucket, q);
                }
                TaskState::Retrying { not_before } => {
                    let attempt = task.attempt;
                    self.arm(
                        not_before,
                        Timer::Backoff {
                            job: j,
                            task: t,
                            attempt,
                        },
                    );
                }
                TaskState::Assigned { worker, at, .. } | TaskState::Running { worker, at, .. } => {
                    self.hold(j, t, worker, at);
                }
                _ => {}
            }
        }
        let job = self.job(j);
        if !terminal {
            if admitted {
                let (tenant, started, timeout) = (job.tenant, job.started, job.timeout_ms);
                self.tenants[tenant as usize].usage.running_jobs += 1;
                if let (Some(s), Some(ms)) = (started, timeout) {
                    self.arm(s.plus_ms(ms), Timer::JobTimeout { job: j });
                }
            } else if status.phase == JobPhase::Queued {
                let (entry, tenant) = (
                    (Reverse(job.priority), job.submitted, job.seq, j),
                    job.tenant,
                );
                self.tenants[tenant as usize].admission.insert(entry);
            }
        }
        failed
    }
}

/// Job reasons are a small fixed vocabulary; an unknown one from an older version reads as `Restored`.
fn intern_reason(r: &str) -> &'static str {
    const KNOWN: [&str; 13] = [
        "Admitted",
        "Planned",
        "TaskStarted",
        "Completed",
        "TaskFailed",
        "Canceled",
        "JobTimedOut",
        "ValidationFailed",
        "PolicyDenied",
        "PolicyNotFound",
        "NoModelRoute",
        "QuotaExceeded",
        "Restored",
    ];
    KNOWN.into_iter().find(|k| *k == r).unwrap_or("Restored")
}
