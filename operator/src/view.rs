//! The job status as stored: compact enough for a job of thousands of tasks, and exact enough to
//! rebuild the core after a restart.
//!
//! [`compact`] keeps every task's phase as one letter and details only the tasks a person or a
//! restart needs: those in flight, retrying or failed, and the first few that wait for a worker.
//! Once a small job has ended it lists every task, and [`finished`] fills in each one's last
//! attempt from the records: its worker and why it went there.
//! [`expand`] turns it back into the core's per-task status, with the execution records filling
//! in what the letters leave out (attempt numbers and artifacts of finished tasks).

use std::collections::HashMap;

use splai_scheduler::api::{ExecutionRecord, JobSpec, JobStatus, Outcome, TaskPhase, TaskStatus};

use crate::artifacts::AttemptRecord;
use crate::condition::ConditionStatus;
use crate::resources::SPLAIJobStatus;

/// Ready tasks listed with their pending reason; the rest are only counted.
pub const READY_SHOWN: usize = 20;
/// Canceled tasks listed; the rest show only in `taskPhases`.
pub const CANCELED_SHOWN: usize = 20;
/// Result artifacts listed in the status; the manifest at `resultArtifactUri` lists them all.
pub const RESULTS_SHOWN: usize = 50;
/// An ended job of at most this many tasks lists each of them with its last attempt's worker and
/// score: some 600 bytes a task (a test holds it under 800), so at most about 60 KB of the
/// object's 1.5 MiB. A larger job lists none of its succeeded or skipped tasks, and its
/// `Finished` condition says where they are.
pub const FINISHED_SHOWN: usize = 100;

pub fn letter(phase: TaskPhase) -> char {
    match phase {
        TaskPhase::Waiting => 'W',
        TaskPhase::Ready => 'R',
        TaskPhase::Retrying => 'B',
        TaskPhase::Assigned => 'A',
        TaskPhase::Running => 'X',
        TaskPhase::Succeeded => 'S',
        TaskPhase::Failed => 'F',
        TaskPhase::TimedOut => 'T',
        TaskPhase::Canceled => 'C',
        TaskPhase::Skipped => 'K',
    }
}

fn phase_of(letter: char) -> Option<TaskPhase> {
    Some(match letter {
        'W' => TaskPhase::Waiting,
        'R' => TaskPhase::Ready,
        'B' => TaskPhase::Retrying,
        'A' => TaskPhase::Assigned,
        'X' => TaskPhase::Running,
        'S' => TaskPhase::Succeeded,
        'F' => TaskPhase::Failed,
        'T' => TaskPhase::TimedOut,
        'C' => TaskPhase::Canceled,
        'K' => TaskPhase::Skipped,
        _ => return None,
    })
}

/// The stored form of the core's status. `score` gives the explanation of a task's current
/// assignment, by task id.
pub fn compact(
    mut full: JobStatus,
    score: impl Fn(&str) -> Option<String>,
    generation: Option<i64>,
) -> SPLAIJobStatus {
    let phases: String = full.tasks.iter().map(|t| letter(t.phase)).collect();
    let (mut ready, mut canceled, mut not_shown) = (0, 0, 0u32);
    let every = full.phase.is_terminal() && full.tasks.len() <= FINISHED_SHOWN;
    let tasks = std::mem::take(&mut full.tasks);
    full.tasks = tasks
        .into_iter()
        .filter_map(|mut t| {
            let keep = every
                || match t.phase {
                    TaskPhase::Assigned
                    | TaskPhase::Running
                    | TaskPhase::Retrying
                    | TaskPhase::Failed
                    | TaskPhase::TimedOut => true,
                    TaskPhase::Ready => {
                        ready += 1;
                        if ready > READY_SHOWN {
                            not_shown += 1;
                        }
                        ready <= READY_SHOWN
                    }
                    TaskPhase::Canceled => {
                        canceled += 1;
                        canceled <= CANCELED_SHOWN
                    }
                    TaskPhase::Waiting | TaskPhase::Succeeded | TaskPhase::Skipped => false,
                };
            if matches!(t.phase, TaskPhase::Assigned | TaskPhase::Running) {
                t.score = score(&t.id);
            }
            keep.then_some(t)
        })
        .collect();
    let mut status = SPLAIJobStatus::new(full, generation);
    status.task_phases = Some(phases);
    status.tasks_not_shown = not_shown;
    status
}

/// Completes the final status of an ended job from its records, `name` being the job's name:
/// each listed task that ran gets its last attempt's worker, times and score. When the job has
/// more tasks than it lists, the `Finished` condition says where the rest are.
pub fn finished(status: &mut SPLAIJobStatus, attempts: &[AttemptRecord], name: &str) {
    let last: HashMap<(&str, u32), &AttemptRecord> = attempts
        .iter()
        .map(|a| ((a.record.task.as_str(), a.record.attempt), a))
        .collect();
    for t in &mut status.job.tasks {
        if !t.phase.is_terminal() || t.worker.is_some() {
            continue;
        }
        let Some(a) = last.get(&(t.id.as_str(), t.attempt)) else {
            continue;
        };
        let r = &a.record;
        t.worker = Some(r.worker.clone());
        t.assigned_at = Some(r.assigned_at);
        t.started_at = r.started_at;
        t.finished_at.get_or_insert(r.finished_at);
        t.score = a.decision.as_ref().map(|d| d.score.clone());
    }
    let total = status.job.progress.total as usize;
    let listed = status.job.tasks.len();
    if listed < total
        && let Some(c) = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == "Finished" && c.status == ConditionStatus::True)
    {
        let note = format!(
            "{} of {total} tasks are not listed in status.tasks (once a job of more than \
             {FINISHED_SHOWN} tasks ends, only its failed and first canceled ones are); every \
             attempt's worker, score and outcome is in status.recordsUri, and `splai explain \
             {name} TASK` shows one task's",
            total - listed
        );
        c.message = if c.message.is_empty() {
            note
        } else {
            format!("{}; {note}", c.message)
        };
    }
}

/// The core's status from the stored one, for a rebuild. Tasks the letters do not cover (an
/// older status, or none yet) start as `Waiting`, and the core works out which are ready.
pub fn expand(stored: &SPLAIJobStatus, spec: &JobSpec, records: &[ExecutionRecord]) -> JobStatus {
    let mut full = stored.job.clone();
    let letters: Vec<char> = stored
        .task_phases
        .as_deref()
        .unwrap_or_default()
        .chars()
        .collect();
    let shown: HashMap<&str, &TaskStatus> = stored
        .job
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t))
        .collect();
    // The latest record of each task, and its successful one.
    let mut last: HashMap<&str, &ExecutionRecord> = HashMap::new();
    let mut success: HashMap<&str, &ExecutionRecord> = HashMap::new();
    for r in records {
        let e = last.entry(r.task.as_str()).or_insert(r);
        if r.attempt > e.attempt {
            *e = r;
        }
        if r.outcome == Outcome::Succeeded {
            success.insert(r.task.as_str(), r);
        }
    }
    full.tasks = spec
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut s = match shown.get(t.id.as_str()) {
                Some(s) => (*s).clone(),
                None => TaskStatus {
                    id: t.id.clone(),
                    phase: letters
                        .get(i)
                        .and_then(|&c| phase_of(c))
                        .unwrap_or(TaskPhase::Waiting),
                    ..TaskStatus::default()
                },
            };
            if let Some(r) = success.get(t.id.as_str()) {
                // Records are written before the status that reflects them, so a success the
                // status has not caught up with is still a success: never run it again.
                s.phase = TaskPhase::Succeeded;
                s.attempt = r.attempt;
                s.finished_at = Some(r.finished_at);
                s.artifact_uri.clone_from(&r.artifact_uri);
                s.error = None;
                s.worker = None;
                s.score = None;
            } else if let Some(r) = last.get(t.id.as_str())
                && r.attempt >= s.attempt
            {
                // An attempt ended after the status was written: the next one gets a new
                // number, and it runs again if its retries allow, as the core would have had it.
                let in_flight = matches!(s.phase, TaskPhase::Assigned | TaskPhase::Running)
                    && r.attempt == s.attempt;
                s.attempt = r.attempt;
                s.error.clone_from(&r.error);
                if in_flight || matches!(s.phase, TaskPhase::Ready | TaskPhase::Retrying) {
                    if r.attempt <= t.retry.limit {
                        s.phase = TaskPhase::Retrying;
                        s.not_before = Some(r.finished_at);
                        s.worker = None;
                    } else {
                        // No retry left: restored in flight on its worker, which does not run
                        // it, so the core fails the task (and settles its dependents) when the
                        // worker's heartbeats leave it out.
                        s.phase = TaskPhase::Assigned;
                        s.worker = Some(r.worker.clone());
                        s.assigned_at = Some(r.assigned_at);
                        s.started_at = None;
                    }
                }
                if s.finished_at.is_none() && s.phase.is_terminal() {
                    s.finished_at = Some(r.finished_at);
                }
            }
            s
        })
        .collect();
    full
}

#[cfg(test)]
mod tests {
    use splai_scheduler::Timestamp;
    use splai_scheduler::api::TaskSpec;

    use super::*;

    fn spec(n: usize) -> JobSpec {
        JobSpec {
            tenant: "t".into(),
            tasks: (0..n)
                .map(|i| TaskSpec {
                    id: format!("t{i}"),
                    ..TaskSpec::default()
                })
                .collect(),
            ..JobSpec::default()
        }
    }

    fn task(i: usize, phase: TaskPhase) -> TaskStatus {
        TaskStatus {
            id: format!("t{i}"),
            phase,
            attempt: u32::from(phase != TaskPhase::Waiting),
            ..TaskStatus::default()
        }
    }

    #[test]
    fn a_large_job_keeps_phases_as_letters_and_details_only_what_matters() {
        let mut full = JobStatus::default();
        for i in 0..5000 {
            let phase = match i % 5 {
                0 => TaskPhase::Succeeded,
                1 => TaskPhase::Ready,
                2 => TaskPhase::Waiting,
                3 => TaskPhase::Skipped,
                _ => TaskPhase::Waiting,
            };
            full.tasks.push(task(i, phase));
        }
        full.tasks[4].phase = TaskPhase::Running;
        full.tasks[4].worker = Some("w1".into());
        let scores = HashMap::from([("t4".to_owned(), "splai chose w1".to_owned())]);
        let stored = compact(full, |t| scores.get(t).cloned(), Some(1));
        let phases = stored.task_phases.as_deref().unwrap();
        assert_eq!(phases.len(), 5000);
        assert!(phases.starts_with("SRWKX"));
        assert_eq!(stored.job.tasks.len(), 1 + READY_SHOWN);
        assert_eq!(stored.tasks_not_shown, 1000 - READY_SHOWN as u32);
        let running = stored.job.tasks.iter().find(|t| t.id == "t4").unwrap();
        assert_eq!(running.score.as_deref(), Some("splai chose w1"));
        let bytes = serde_json::to_vec(&stored).unwrap().len();
        assert!(bytes < 20_000, "{bytes} bytes");
    }

    #[test]
    fn expanding_a_stored_status_restores_phases_attempts_and_artifacts() {
        let mut full = JobStatus {
            tasks: vec![
                task(0, TaskPhase::Succeeded),
                task(1, TaskPhase::Running),
                task(2, TaskPhase::Waiting),
            ],
            ..JobStatus::default()
        };
        full.tasks[1].worker = Some("w2".into());
        let stored = compact(full, |_| None, None);
        let record = ExecutionRecord {
            job: "ns/j".into(),
            task: "t0".into(),
            attempt: 2,
            worker: "w1".into(),
            assigned_at: Timestamp(1),
            started_at: Some(Timestamp(2)),
            finished_at: Timestamp(3),
            outcome: Outcome::Succeeded,
            error: None,
            artifact_uri: Some("file:///a/t0/2".into()),
            traceparent: String::new(),
        };
        let back = expand(&stored, &spec(3), &[record]);
        let phases: Vec<TaskPhase> = back.tasks.iter().map(|t| t.phase).collect();
        assert_eq!(
            phases,
            [TaskPhase::Succeeded, TaskPhase::Running, TaskPhase::Waiting]
        );
        assert_eq!(back.tasks[0].attempt, 2);
        assert_eq!(
            back.tasks[0].artifact_uri.as_deref(),
            Some("file:///a/t0/2")
        );
        assert_eq!(back.tasks[1].worker.as_deref(), Some("w2"));
    }

    fn record(task: &str, attempt: u32, outcome: Outcome) -> ExecutionRecord {
        ExecutionRecord {
            job: "ns/j".into(),
            task: task.into(),
            attempt,
            worker: "w1".into(),
            assigned_at: Timestamp(10),
            started_at: Some(Timestamp(11)),
            finished_at: Timestamp(12),
            outcome,
            error: (outcome != Outcome::Succeeded).then(|| "boom".into()),
            artifact_uri: (outcome == Outcome::Succeeded).then(|| format!("mem://{task}")),
            traceparent: String::new(),
        }
    }

    #[test]
    fn a_success_recorded_before_its_status_was_written_is_never_run_again() {
        // The status was written while t0 ran and before t1 was even assigned.
        let mut full = JobStatus {
            tasks: vec![task(0, TaskPhase::Running), task(1, TaskPhase::Ready)],
            ..JobStatus::default()
        };
        full.tasks[1].attempt = 0;
        let stored = compact(full, |_| None, None);
        let records = [
            record("t0", 1, Outcome::Succeeded),
            record("t1", 1, Outcome::Succeeded),
        ];
        let back = expand(&stored, &spec(2), &records);
        for t in &back.tasks {
            assert_eq!(t.phase, TaskPhase::Succeeded, "{t:?}");
            assert_eq!(t.attempt, 1);
            assert!(t.worker.is_none());
        }
    }

    #[test]
    fn a_failure_recorded_before_its_status_was_written_moves_to_the_next_attempt() {
        let full = JobStatus {
            tasks: vec![task(0, TaskPhase::Running), task(1, TaskPhase::Running)],
            ..JobStatus::default()
        };
        let stored = compact(full, |_| None, None);
        let mut spec = spec(2);
        spec.tasks[1].retry.limit = 0;
        let records = [
            record("t0", 1, Outcome::Failed),
            record("t1", 1, Outcome::Failed),
        ];
        let back = expand(&stored, &spec, &records);
        // Retries left: it waits for its next attempt, numbered after the recorded one.
        assert_eq!(back.tasks[0].phase, TaskPhase::Retrying);
        assert_eq!(back.tasks[0].attempt, 1);
        // None left: it stays in flight on its worker, where the core will find it gone.
        assert_eq!(back.tasks[1].phase, TaskPhase::Assigned);
        assert_eq!(back.tasks[1].worker.as_deref(), Some("w1"));
    }

    fn explanation(worker: &str, runner_up: &str) -> splai_scheduler::Explanation {
        use splai_scheduler::score::{RunnerUp, Term};
        use splai_scheduler::{ScoreTerms, Strategy};
        let terms = ScoreTerms {
            capability_match: 1.0,
            queue_penalty: 0.2,
            latency_prediction: 0.1,
            ..ScoreTerms::default()
        };
        splai_scheduler::Explanation {
            strategy: Strategy::Splai,
            worker: worker.into(),
            score: 0.8,
            terms,
            predicted_ms: 1000,
            cold_start: false,
            candidates: 2,
            runner_up: Some(RunnerUp {
                worker: runner_up.into(),
                score: 0.7,
                terms: ScoreTerms {
                    queue_penalty: 0.4,
                    ..terms
                },
                lost_on: Term::QueuePenalty,
                lost_by: 0.1,
            }),
        }
    }

    fn attempt(task: &str, n: u32, outcome: Outcome, worker: &str) -> AttemptRecord {
        let mut record = record(task, n, outcome);
        record.worker = worker.into();
        record.traceparent = format!("00-{:032x}-{:016x}-01", 7, n);
        AttemptRecord {
            record,
            decision: Some(crate::artifacts::Decision::placed(
                explanation(worker, "w-other"),
                (n > 1).then(|| "no worker has 500m CPU free".to_owned()),
            )),
        }
    }

    fn ended(mut full: JobStatus) -> SPLAIJobStatus {
        full.phase = splai_scheduler::api::JobPhase::Completed;
        full.progress.total = full.tasks.len() as u32;
        let mut stored = compact(full, |_| None, Some(1));
        crate::set_condition(
            &mut stored.conditions,
            "Finished",
            ConditionStatus::True,
            "Completed",
            "",
            Some(1),
            Timestamp(5),
        );
        stored
    }

    #[test]
    fn an_ended_small_job_lists_every_task_with_its_last_attempts_worker_and_score() {
        let full = JobStatus {
            tasks: vec![
                task(0, TaskPhase::Succeeded),
                TaskStatus {
                    attempt: 2,
                    ..task(1, TaskPhase::Succeeded)
                },
                task(2, TaskPhase::Skipped),
            ],
            ..JobStatus::default()
        };
        let mut stored = ended(full);
        let attempts = [
            attempt("t0", 1, Outcome::Succeeded, "w1"),
            attempt("t1", 1, Outcome::WorkerLost, "w1"),
            attempt("t1", 2, Outcome::Succeeded, "w2"),
        ];
        finished(&mut stored, &attempts, "j");
        let ids: Vec<&str> = stored.job.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t0", "t1", "t2"]);
        let t1 = &stored.job.tasks[1];
        assert_eq!(t1.worker.as_deref(), Some("w2"));
        assert_eq!(t1.assigned_at, Some(Timestamp(10)));
        let score = t1.score.as_deref().unwrap();
        assert!(score.starts_with("splai chose w2 (score 0.800"), "{score}");
        assert!(score.contains("runner-up w-other"), "{score}");
        assert!(score.contains("on queue_penalty"), "{score}");
        // A task that never ran has no attempt to show.
        assert_eq!(stored.job.tasks[2].worker, None);
        // Everything is listed: the condition has nothing to add.
        assert_eq!(stored.conditions[0].message, "");
    }

    #[test]
    fn an_ended_job_of_more_tasks_than_listed_says_where_they_are_and_stays_small() {
        let full = JobStatus {
            tasks: (0..5000).map(|i| task(i, TaskPhase::Succeeded)).collect(),
            ..JobStatus::default()
        };
        let mut stored = ended(full);
        let attempts: Vec<_> = (0..5000)
            .map(|i| attempt(&format!("t{i}"), 1, Outcome::Succeeded, "w1"))
            .collect();
        finished(&mut stored, &attempts, "big");
        assert!(stored.job.tasks.is_empty());
        let message = &stored.conditions[0].message;
        assert!(
            message.starts_with("5000 of 5000 tasks are not listed"),
            "{message}"
        );
        assert!(message.contains("status.recordsUri"), "{message}");
        assert!(message.contains("`splai explain big TASK`"), "{message}");
        let bytes = serde_json::to_vec(&stored).unwrap().len();
        assert!(bytes < 20_000, "{bytes} bytes");

        // The largest job that lists every task stays within the bound its documentation gives.
        let full = JobStatus {
            tasks: (0..FINISHED_SHOWN)
                .map(|i| TaskStatus {
                    artifact_uri: Some(format!("s3://bucket/prefix/jobs/team-a/job/t{i}/1/")),
                    traceparent: Some(format!("00-{:032x}-{:016x}-01", 7, i)),
                    finished_at: Some(Timestamp(12)),
                    ..task(i, TaskPhase::Succeeded)
                })
                .collect(),
            ..JobStatus::default()
        };
        let mut stored = ended(full);
        let attempts: Vec<_> = (0..FINISHED_SHOWN)
            .map(|i| attempt(&format!("t{i}"), 1, Outcome::Succeeded, "worker-node-17"))
            .collect();
        finished(&mut stored, &attempts, "job");
        assert_eq!(stored.job.tasks.len(), FINISHED_SHOWN);
        assert!(stored.job.tasks.iter().all(|t| t.score.is_some()));
        let bytes = serde_json::to_vec(&stored).unwrap().len();
        assert!(bytes < FINISHED_SHOWN * 800, "{bytes} bytes");
    }
}
