//! The job status as stored: compact enough for a job of thousands of tasks, and exact enough to
//! rebuild the core after a restart.
//!
//! [`compact`] keeps every task's phase as one letter and details only the tasks a person or a
//! restart needs: those in flight, retrying or failed, and the first few that wait for a worker.
//! [`expand`] turns it back into the core's per-task status, with the execution records filling
//! in what the letters leave out (attempt numbers and artifacts of finished tasks).

use std::collections::HashMap;

use splai_scheduler::api::{ExecutionRecord, JobSpec, JobStatus, Outcome, TaskPhase, TaskStatus};

use crate::resources::SPLAIJobStatus;

/// Ready tasks listed with their pending reason; the rest are only counted.
pub const READY_SHOWN: usize = 20;
/// Canceled tasks listed; the rest show only in `taskPhases`.
pub const CANCELED_SHOWN: usize = 20;
/// Result artifacts listed in the status; the manifest at `resultArtifactUri` lists them all.
pub const RESULTS_SHOWN: usize = 50;

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
    let tasks = std::mem::take(&mut full.tasks);
    full.tasks = tasks
        .into_iter()
        .filter_map(|mut t| {
            let keep = match t.phase {
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
}
