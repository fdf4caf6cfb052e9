//! The core's effects, carried into the driver's state: messages for agents, what each job and
//! worker now has to write, and the metrics and spans that follow them.

use splai_protocol::{ControlMessage, TaskAssignment};
use splai_scheduler::Effect;
use splai_scheduler::api::{ExecutionRecord, Health, JobPhase};

use super::jobs::Placed;
use super::{Driver, Note};
use crate::artifacts::{AttemptRecord, Decision};

pub(super) fn phase_label(p: JobPhase) -> &'static str {
    match p {
        JobPhase::Queued => "Queued",
        JobPhase::Planning => "Planning",
        JobPhase::Scheduled => "Scheduled",
        JobPhase::Running => "Running",
        JobPhase::Completed => "Completed",
        JobPhase::Failed => "Failed",
        JobPhase::Canceled => "Canceled",
    }
}

pub(super) fn health_label(h: Health) -> &'static str {
    match h {
        Health::Unknown => "Unknown",
        Health::Healthy => "Healthy",
        Health::Stale => "Stale",
        Health::Lost => "Lost",
    }
}

/// The span of one attempt, from its assignment to its end, in its job's trace (exported only
/// when OTLP export is on).
fn attempt_span(r: &ExecutionRecord) {
    if !splai_telemetry::exporting() {
        return;
    }
    let mut attributes = vec![
        ("splai.job", r.job.clone()),
        ("splai.task", r.task.clone()),
        ("splai.attempt", r.attempt.to_string()),
        ("splai.worker", r.worker.clone()),
        ("splai.outcome", format!("{:?}", r.outcome)),
    ];
    if let Some(error) = &r.error {
        attributes.push(("splai.error", error.clone()));
    }
    splai_telemetry::record_span(
        "task.attempt",
        &r.traceparent,
        r.assigned_at.millis(),
        r.finished_at.millis(),
        attributes,
    );
}

impl Driver {
    pub(super) fn apply(&mut self, effects: Vec<Effect>) {
        let assigned = effects
            .iter()
            .filter(|e| matches!(e, Effect::Assign(_)))
            .count() as u64;
        if assigned > 0 {
            self.assigned += assigned;
            self.metrics.assignments.inc_by(assigned);
        }
        for effect in effects {
            if let Some((worker, message)) = ControlMessage::from_effect(&effect) {
                let message = match message {
                    ControlMessage::Assign(a) => {
                        let spec = self.core.task_spec(&a.job, &a.task);
                        let a: TaskAssignment = *a;
                        ControlMessage::Assign(Box::new(match spec {
                            Some(spec) => a.with_task_spec(spec),
                            None => a,
                        }))
                    }
                    other => other,
                };
                self.workers.touch(&worker);
                self.outbox.push((worker, message));
            }
            match effect {
                Effect::JobPhaseChanged {
                    job,
                    from,
                    to,
                    reason,
                    message,
                } => {
                    self.metrics
                        .jobs
                        .get_or_create(&[("phase", phase_label(from))])
                        .dec();
                    self.metrics
                        .jobs
                        .get_or_create(&[("phase", phase_label(to))])
                        .inc();
                    if to.is_terminal()
                        && let Some((trace, submitted)) = self.core.job_trace(&job)
                    {
                        splai_telemetry::record_span(
                            "job",
                            trace,
                            submitted.millis(),
                            self.core.now().millis(),
                            vec![
                                ("splai.job", job.to_string()),
                                ("splai.phase", phase_label(to).to_owned()),
                            ],
                        );
                    }
                    if let Some(e) = self.jobs.get_mut(&job) {
                        e.changed();
                        if to.is_terminal() {
                            e.ended();
                        }
                        if is_milestone(to) {
                            let warning = matches!(to, JobPhase::Failed);
                            let message = message.unwrap_or_else(|| {
                                format!("{} -> {}", phase_label(from), phase_label(to))
                            });
                            e.notes.push(Note {
                                warning,
                                reason: reason.to_owned(),
                                message,
                            });
                        }
                    }
                }
                Effect::JobPlanned {
                    job,
                    tasks,
                    dependencies,
                } => {
                    if let Some(e) = self.jobs.get_mut(&job) {
                        e.planned = Some((tasks, dependencies));
                        e.changed();
                    }
                }
                Effect::Assign(a) => {
                    if let Some(e) = self.jobs.get_mut(&a.job) {
                        let waited = e.waited.remove(&*a.task);
                        let decision = Decision::placed(a.explanation, waited);
                        let attempt = a.attempt;
                        e.placed
                            .insert(a.task.to_string(), Placed { attempt, decision });
                        e.changed();
                    }
                }
                Effect::TaskTimedOut {
                    job,
                    task,
                    attempt,
                    worker,
                } => {
                    if let Some(e) = self.jobs.get_mut(&job) {
                        e.changed();
                        e.notes.push(Note {
                            warning: true,
                            reason: "TaskTimedOut".into(),
                            message: format!(
                                "task {task} attempt {attempt} ran past its timeout on {worker}"
                            ),
                        });
                    }
                }
                Effect::AttemptEnded(r) => {
                    attempt_span(&r);
                    if let Some(e) = self.jobs.get_mut(r.job.as_str()) {
                        e.changed();
                        // Only this attempt's decision: a later one may already be placed.
                        let decision = match e.placed.get(&r.task) {
                            Some(p) if p.attempt == r.attempt => {
                                e.placed.remove(&r.task).map(|p| p.decision)
                            }
                            _ => None,
                        };
                        e.records.push(AttemptRecord {
                            record: *r,
                            decision,
                        });
                    }
                }
                Effect::WorkerHealthChanged { worker, from, to } => {
                    let note = Note {
                        warning: matches!(to, Health::Stale | Health::Lost),
                        reason: health_label(to).into(),
                        message: format!(
                            "worker {worker} went from {} to {}",
                            health_label(from),
                            health_label(to)
                        ),
                    };
                    self.workers.note(&worker, note);
                }
                Effect::Cancel { job, reason, .. } => {
                    self.metrics
                        .cancels
                        .get_or_create(&[("reason", reason.label())])
                        .inc();
                    self.jobs.changed(&job);
                }
                Effect::Pending { job, task, reason } => {
                    if let Some(e) = self.jobs.get_mut(&job) {
                        e.changed();
                        e.waited.insert(task.to_string(), reason);
                    }
                }
                Effect::Requeue { job, .. } => self.jobs.changed(&job),
                Effect::Ignored(why) => {
                    tracing::debug!(?why, "ignored");
                    self.metrics
                        .ignored
                        .get_or_create(&[("reason", why.reason())])
                        .inc();
                }
            }
        }
    }
}

/// The phase changes that get an Event: the admission decision and the end. The steps between
/// (Planning to Scheduled to Running) show in the status's phase and conditions, with their
/// times, and an Event each would double the API writes of a short job.
fn is_milestone(to: JobPhase) -> bool {
    to == JobPhase::Planning || to.is_terminal()
}

#[cfg(test)]
mod tests {
    use splai_scheduler::api::{AttemptRef, Capabilities};
    use splai_scheduler::{Event, Timestamp};

    use crate::driver::Input;
    use crate::driver::test_support::{driver, from_agent, heartbeat, job};

    #[test]
    fn an_attempts_record_keeps_its_decision_and_why_the_task_waited_and_only_milestones_are_events()
     {
        let mut d = driver();
        d.input(Input::JobApplied(Box::new(job(1))), Timestamp(2_000));
        // No worker yet: the task waits, and the core says why.
        let capabilities = Capabilities {
            cpu_millis: 1000,
            memory_mib: 1024,
            ..Capabilities::default()
        };
        let registered = Event::WorkerRegistered {
            name: "w1".into(),
            capabilities,
            incarnation: 1,
        };
        from_agent(&mut d, registered, 2_100);
        heartbeat(&mut d, 1);
        let attempt = AttemptRef {
            job: "ns/job-0001".into(),
            task: "only".into(),
            attempt: 1,
        };
        let succeeded = Event::TaskSucceeded {
            attempt,
            worker: "w1".into(),
            artifact_uri: None,
        };
        from_agent(&mut d, succeeded, 2_500);
        let flush = d.take_flush(Timestamp(3_000)).unwrap();
        let (_, records) = flush.jobs[0].chunk.clone().expect("the attempt's record");
        let decision = records[0].decision.clone().expect("its decision");
        assert_eq!(records[0].record.worker, "w1");
        let placement = decision.placement.expect("the explanation in numbers");
        assert_eq!(&*placement.worker, "w1");
        assert!(
            decision.score.starts_with("splai chose w1 (score"),
            "{}",
            decision.score
        );
        let waited = decision.waited.expect("why it waited");
        assert!(!waited.is_empty());
        // Four phase changes (Planning, Scheduled, Running, Completed), two Events: the
        // admission and the end.
        let reasons: Vec<_> = flush.jobs[0].notes.iter().map(|n| &n.reason).collect();
        assert_eq!(reasons, ["Admitted", "Completed"]);
    }
}
