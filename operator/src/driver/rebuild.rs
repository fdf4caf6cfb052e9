//! Rebuild after a restart: a driver, and the core inside it, made from the resources as listed
//! and the records of the jobs still running.

use std::collections::HashMap;
use std::sync::Arc;

use splai_scheduler::api::ExecutionRecord;
use splai_scheduler::{
    JobRecord, Scheduler, Settings, Snapshot, Strategy, Timestamp, WorkerRecord,
};

use super::effects::phase_label;
use super::jobs::{JobEntry, Jobs, Placed};
use super::object::{has_finalizer, key_and_dir, was_seen};
use super::workers::Workers;
use super::{Driver, DriverConfig, Input};
use crate::artifacts::{Decision, JobDir};
use crate::metrics::Metrics;
use crate::resources::{SPLAIJob, SPLAIModelRoute, SPLAIPolicy, SPLAIWorker};
use crate::view;

/// What [`Driver::rebuild`] starts from: the four resources as listed, and the records written
/// for jobs still running, by job key.
#[derive(Default)]
pub struct Listed {
    pub jobs: Vec<SPLAIJob>,
    pub workers: Vec<SPLAIWorker>,
    pub policies: Vec<SPLAIPolicy>,
    pub routes: Vec<SPLAIModelRoute>,
    pub records: HashMap<String, Vec<ExecutionRecord>>,
}

impl Listed {
    /// The jobs whose records a rebuild needs: seen before and not ended.
    pub fn running_jobs(jobs: &[SPLAIJob]) -> Vec<(String, JobDir)> {
        jobs.iter()
            .filter(|j| was_seen(j))
            .filter(|j| !j.status.as_ref().is_some_and(|s| s.job.phase.is_terminal()))
            .map(key_and_dir)
            .collect()
    }
}

impl Driver {
    /// A driver whose core is rebuilt from `listed`, as after a restart (or the first start,
    /// with nothing listed). Jobs never seen before are submitted as new.
    pub fn rebuild(
        cfg: DriverConfig,
        settings: Settings,
        metrics: Arc<Metrics>,
        listed: Listed,
        now: Timestamp,
    ) -> Self {
        let mut snapshot = Snapshot::default();
        for p in &listed.policies {
            if let Some(name) = &p.metadata.name {
                snapshot.policies.insert(name.clone(), p.spec.0.clone());
            }
        }
        for r in &listed.routes {
            if let Some(name) = &r.metadata.name {
                snapshot.routes.insert(name.clone(), r.spec.0.clone());
            }
        }
        let mut workers = Workers::new(cfg.worker_namespace, cfg.worker_refresh_ms);
        for w in &listed.workers {
            let Some(name) = w.metadata.name.clone() else {
                continue;
            };
            let record = WorkerRecord {
                name: name.clone(),
                spec: w.spec.0.clone(),
                status: w.status.clone().unwrap_or_default().worker,
            };
            // What the core makes of it (a worker that was alive is Stale until its agent
            // heartbeats here) counts as written, so that its first heartbeat, which makes it
            // Healthy again, is written like any change of health.
            workers.restored(name, record.clone().restored(now).status, now);
            snapshot.workers.push(record);
        }
        let mut fresh = Vec::new();
        let mut ended = Vec::new();
        let mut restored = Jobs::default();
        for mut job in listed.jobs {
            let (key, d) = key_and_dir(&job);
            if !was_seen(&job) {
                fresh.push(job);
            } else if job
                .status
                .as_ref()
                .is_some_and(|s| s.job.phase.is_terminal())
            {
                ended.push(job);
            } else {
                // The spec and status move into the core's snapshot; what stays of the object
                // is what its watch event below is read for (deletion, finalizer, `cancel`), so
                // that a restart with many jobs does not hold each one twice. (The core restores
                // every job it is given, so the object's spec is not needed again.)
                let stored = job.status.take().unwrap_or_default();
                let cancel = job.spec.0.cancel;
                let spec = std::mem::take(&mut job.spec.0);
                job.spec.0.cancel = cancel;
                let records = listed.records.get(&key).map_or(&[][..], Vec::as_slice);
                let status = view::expand(&stored, &spec, records);
                // The previous leader's decisions survive only as the status's text.
                let placed = stored
                    .job
                    .tasks
                    .iter()
                    .filter_map(|t| {
                        let decision = Decision {
                            score: t.score.clone()?,
                            placement: None,
                            waited: None,
                        };
                        let attempt = t.attempt;
                        Some((t.id.clone(), Placed { attempt, decision }))
                    })
                    .collect();
                snapshot.jobs.push(JobRecord {
                    key: key.clone(),
                    spec,
                    status,
                });
                // Past every chunk written before, whatever their numbers.
                let next_chunk = now.millis().max(records.len() as u64 + 1);
                let entry = JobEntry {
                    placed,
                    conditions: stored.conditions.clone(),
                    has_finalizer: has_finalizer(&job),
                    ..JobEntry::new(d, job.metadata.generation, next_chunk)
                };
                restored.insert(key, entry);
                // Cancellations and deletions that came while nobody led are applied below.
                fresh.push(job);
            }
        }
        let (core, effects) = Scheduler::rebuild(settings, Strategy::Splai, 0, snapshot, now);
        let mut d = Driver {
            core,
            metrics,
            jobs: restored,
            workers,
            acks: Vec::new(),
            assigned: 0,
            outbox: Vec::new(),
        };
        for key in d.jobs.keys() {
            if let Some(p) = d.core.job_phase(key) {
                d.metrics
                    .jobs
                    .get_or_create(&[("phase", phase_label(p))])
                    .inc();
            }
        }
        for job in &ended {
            let p = job.status.as_ref().map(|s| s.job.phase).unwrap_or_default();
            d.metrics
                .jobs
                .get_or_create(&[("phase", phase_label(p))])
                .inc();
        }
        d.apply(effects);
        for job in ended.into_iter().chain(fresh) {
            d.input(Input::JobApplied(Box::new(job)), now);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use splai_protocol::ControlMessage;
    use splai_scheduler::api::{Capabilities, Health, WorkerSpec, WorkerStatus};

    use super::*;
    use crate::driver::test_support::{config, heartbeat, job};
    use crate::{SPLAIWorkerSpec, SPLAIWorkerStatus};

    #[test]
    fn after_a_restart_no_task_goes_to_a_worker_until_its_agent_heartbeats_to_the_new_leader() {
        let mut worker = SPLAIWorker::new(
            "w1",
            SPLAIWorkerSpec(WorkerSpec {
                capabilities: Capabilities {
                    cpu_millis: 1000,
                    memory_mib: 1024,
                    ..Capabilities::default()
                },
            }),
        );
        worker.metadata.namespace = Some("sys".into());
        worker.status = Some(SPLAIWorkerStatus {
            worker: WorkerStatus {
                health: Health::Healthy,
                last_heartbeat: Some(Timestamp(500)),
                incarnation: 1,
                ..WorkerStatus::default()
            },
            ..Default::default()
        });
        let listed = Listed {
            workers: vec![worker],
            ..Listed::default()
        };
        let mut d = Driver::rebuild(
            config(),
            Settings::default(),
            Arc::new(Metrics::default()),
            listed,
            Timestamp(1_000),
        );
        assert_eq!(d.core().worker_health("w1"), Some(Health::Stale));
        d.input(Input::JobApplied(Box::new(job(1))), Timestamp(1_500));
        let assigned = |d: &Driver| {
            d.outbox
                .iter()
                .any(|(_, m)| matches!(m, ControlMessage::Assign(_)))
        };
        assert!(!assigned(&d), "assigned before the agent was heard from");
        heartbeat(&mut d, 1);
        assert_eq!(d.core().worker_health("w1"), Some(Health::Healthy));
        assert!(
            assigned(&d),
            "the heartbeat makes the worker placeable again"
        );
        // The change back to Healthy is written, with the time it was heard from.
        let flush = d.take_flush(Timestamp(2_000)).expect("the worker's status");
        let status = flush.workers[0].status.as_ref().expect("a status write");
        assert_eq!(status.worker.health, Health::Healthy);
    }
}
