mod common;

use common::*;
use splai_scheduler::api::*;
use splai_scheduler::{CancelReason, Effect, Event, Ignored};

fn fleet_of_one() -> Sim {
    let mut sim = Sim::new();
    sim.worker("w1", caps(4000, 8192));
    sim
}

#[test]
fn a_chain_runs_in_dependency_order_and_completes_with_its_result_artifact() {
    let mut sim = fleet_of_one();
    sim.submit("j", JobBuilder::new("acme").chain(3).build());
    assert_eq!(sim.phase("j"), JobPhase::Scheduled);
    assert!(sim.assigned("j", "s2").is_none(), "s2 must wait for s1");
    sim.start("j", "s1");
    assert_eq!(sim.phase("j"), JobPhase::Running);
    sim.succeed("j", "s1");
    assert!(sim.assigned("j", "s2").is_some());
    assert!(sim.assigned("j", "s3").is_none());
    sim.succeed("j", "s2");
    sim.succeed("j", "s3");
    let st = sim.status("j");
    assert_eq!(st.phase, JobPhase::Completed);
    assert_eq!(st.progress.succeeded, 3);
    assert_eq!(
        st.result_artifact_uri.as_deref(),
        Some("file:///artifacts/j/s3/1")
    );
    let phases: Vec<(JobPhase, JobPhase)> = sim
        .effects
        .iter()
        .filter_map(|e| {
            if let Effect::JobPhaseChanged { from, to, .. } = e {
                Some((*from, *to))
            } else {
                None
            }
        })
        .collect();
    use JobPhase::*;
    assert_eq!(
        phases,
        vec![
            (Queued, Planning),
            (Planning, Scheduled),
            (Scheduled, Running),
            (Running, Completed)
        ]
    );
}

#[test]
fn a_job_with_several_sinks_lists_every_sink_artifact() {
    let mut sim = fleet_of_one();
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(task("a"))
            .task(task("b"))
            .build(),
    );
    sim.succeed("j", "a");
    sim.succeed("j", "b");
    let st = sim.status("j");
    assert_eq!(st.result_artifact_uri, None);
    assert_eq!(st.result_artifacts.len(), 2);
}

#[test]
fn a_failed_attempt_retries_with_exponential_backoff_until_it_succeeds() {
    let mut sim = fleet_of_one();
    sim.submit(
        "j",
        JobBuilder::new("acme").task(task("t")).retries(3).build(),
    );
    sim.fail("j", "t", "exit code 1");
    assert_eq!(sim.task("j", "t").phase, TaskPhase::Retrying);
    let requeue = sim.effects.iter().find_map(|e| match e {
        Effect::Requeue {
            not_before,
            failed_attempt,
            ..
        } => Some((*not_before, *failed_attempt)),
        _ => None,
    });
    assert_eq!(
        requeue,
        Some((splai_scheduler::Timestamp(sim.now + 1000), 1))
    );
    sim.advance(999);
    assert_eq!(
        sim.assigned("j", "t").unwrap().attempt,
        1,
        "not before the backoff ends"
    );
    sim.advance(1);
    assert_eq!(sim.assigned("j", "t").unwrap().attempt, 2);
    sim.fail("j", "t", "exit code 1");
    sim.advance(1999);
    assert_eq!(
        sim.assigned("j", "t").unwrap().attempt,
        2,
        "the second backoff is twice the first"
    );
    sim.advance(1);
    sim.succeed("j", "t");
    assert_eq!(sim.phase("j"), JobPhase::Completed);
    assert_eq!(sim.task("j", "t").attempt, 3);
}

#[test]
fn exhausted_retries_fail_the_job_and_skip_the_tasks_downstream() {
    let mut sim = fleet_of_one();
    let spec = JobBuilder::new("acme")
        .chain(3)
        .task(task("side"))
        .retries(1)
        .build();
    sim.submit("j", spec);
    sim.fail("j", "s1", "boom");
    sim.advance(1000);
    sim.fail("j", "s1", "boom again");
    let st = sim.status("j");
    assert_eq!(sim.task("j", "s1").phase, TaskPhase::Failed);
    assert_eq!(sim.task("j", "s2").phase, TaskPhase::Skipped);
    assert_eq!(sim.task("j", "s3").phase, TaskPhase::Skipped);
    assert_eq!(
        st.phase,
        JobPhase::Running,
        "the independent task still runs"
    );
    sim.succeed("j", "side");
    let st = sim.status("j");
    assert_eq!(st.phase, JobPhase::Failed);
    assert_eq!(st.reason.as_deref(), Some("TaskFailed"));
    assert_eq!(
        st.message.as_deref(),
        Some("task `s1` failed after 2 attempt(s): boom again; 2 downstream task(s) skipped")
    );
}

#[test]
fn a_non_retryable_failure_fails_the_task_at_once() {
    let mut sim = fleet_of_one();
    sim.submit(
        "j",
        JobBuilder::new("acme").task(task("t")).retries(5).build(),
    );
    let a = sim.assigned("j", "t").unwrap().clone();
    sim.send(Event::TaskFailed {
        attempt: AttemptRef {
            job: "j".into(),
            task: "t".into(),
            attempt: a.attempt,
        },
        worker: a.worker.to_string(),
        error: "invalid input".into(),
        retryable: false,
    });
    assert_eq!(sim.phase("j"), JobPhase::Failed);
}

#[test]
fn a_task_that_runs_past_its_timeout_is_cancelled_and_retried() {
    let mut sim = fleet_of_one();
    let mut t = task("slow");
    t.timeout_seconds = Some(10);
    t.retry.limit = 1;
    sim.submit("j", JobBuilder::new("acme").task(t).build());
    sim.start("j", "slow");
    let out = sim.advance(10_000);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Cancel {
            reason: CancelReason::TaskTimedOut,
            attempt: 1,
            ..
        }
    )));
    assert!(out.iter().any(|e| matches!(e, Effect::TaskTimedOut { .. })));
    assert_eq!(sim.task("j", "slow").phase, TaskPhase::Retrying);
    sim.advance(1000);
    sim.advance(10_000);
    assert_eq!(sim.task("j", "slow").phase, TaskPhase::TimedOut);
    assert_eq!(sim.phase("j"), JobPhase::Failed);
    assert!(
        sim.status("j")
            .message
            .unwrap()
            .contains("timed out after 2 attempt(s): attempt 2 ran past its timeout of 10s")
    );
}

#[test]
fn the_job_timeout_cancels_running_tasks_and_fails_the_job() {
    let mut sim = fleet_of_one();
    sim.submit("j", JobBuilder::new("acme").chain(2).timeout(30).build());
    sim.start("j", "s1");
    let out = sim.advance(30_000);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Cancel {
            reason: CancelReason::JobTimedOut,
            ..
        }
    )));
    let st = sim.status("j");
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (JobPhase::Failed, Some("JobTimedOut"))
    );
    assert_eq!(st.progress.canceled, 2);
}

#[test]
fn cancel_cascades_to_every_task_and_stops_running_attempts() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(1000, 8192));
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(task("a"))
            .task(task("b"))
            .task(task("c"))
            .dep("c", &["a"])
            .build(),
    );
    sim.start("j", "a");
    let out = sim.send(Event::JobCanceled { key: "j".into() });
    let cancels = out
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Cancel {
                    reason: CancelReason::JobCanceled,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        cancels, 1,
        "only `a` was running; `b` waited for cpu, `c` for `a`"
    );
    let st = sim.status("j");
    assert_eq!((st.phase, st.progress.canceled), (JobPhase::Canceled, 3));
    assert_eq!(sim.s.queue_len(), 0);
    // The worker's report after cancellation changes nothing.
    let late = sim.succeed("j", "a");
    assert!(matches!(
        late[0],
        Effect::Ignored(Ignored::StaleReport { .. })
    ));
}

#[test]
fn every_finished_attempt_is_recorded_once_with_its_outcome() {
    let mut sim = fleet_of_one();
    sim.submit(
        "j",
        JobBuilder::new("acme").task(task("t")).retries(1).build(),
    );
    sim.start("j", "t");
    sim.fail("j", "t", "oom");
    sim.advance(1000);
    sim.start("j", "t");
    sim.succeed("j", "t");
    let records: Vec<&ExecutionRecord> = sim
        .effects
        .iter()
        .filter_map(|e| {
            if let Effect::AttemptEnded(r) = e {
                Some(&**r)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (
            records[0].attempt,
            records[0].outcome,
            records[0].error.as_deref()
        ),
        (1, Outcome::Failed, Some("oom"))
    );
    assert_eq!(
        (records[1].attempt, records[1].outcome),
        (2, Outcome::Succeeded)
    );
    assert!(
        records[1]
            .traceparent
            .starts_with(&format!("00-{}-", sim.status("j").trace_id.unwrap()))
    );
    assert_ne!(
        records[0].traceparent, records[1].traceparent,
        "each attempt is its own span"
    );
}

#[test]
fn a_planned_job_gets_its_tasks_from_the_planner() {
    let mut sim = fleet_of_one();
    let mut spec = JobBuilder::new("acme").build();
    spec.plan = Some(Box::new(PlanSpec {
        kind: PlanKind::MapReduce,
        count: 2,
        template: task("map"),
        reduce: None,
    }));
    let out = sim.submit("j", spec);
    let planned = out.iter().find_map(|e| {
        if let Effect::JobPlanned { tasks, .. } = e {
            Some(tasks.len())
        } else {
            None
        }
    });
    assert_eq!(planned, Some(3));
    sim.succeed("j", "map-1");
    sim.succeed("j", "map-2");
    sim.succeed("j", "reduce");
    assert_eq!(sim.phase("j"), JobPhase::Completed);
}

#[test]
fn an_invalid_job_fails_at_submission_with_the_validators_message() {
    let mut sim = fleet_of_one();
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(task("a"))
            .dep("a", &["a"])
            .build(),
    );
    let st = sim.status("j");
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (JobPhase::Failed, Some("ValidationFailed"))
    );
    assert_eq!(
        st.message.as_deref(),
        Some("task `a` depends on itself: remove `a` from its dependsOn")
    );
}

#[test]
fn submitting_the_same_job_twice_is_ignored() {
    let mut sim = fleet_of_one();
    sim.submit("j", JobBuilder::new("acme").chain(1).build());
    let out = sim.submit("j", JobBuilder::new("acme").chain(2).build());
    assert_eq!(
        out,
        vec![Effect::Ignored(Ignored::DuplicateJob { job: "j".into() })]
    );
    assert_eq!(sim.status("j").progress.total, 1);
}

#[test]
fn forgotten_jobs_give_their_slots_to_new_jobs_without_their_timers_following() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(2000, 4096));
    for i in 0..300 {
        let key = format!("old-{i}");
        let mut t = task("t");
        t.timeout_seconds = Some(60);
        sim.submit(&key, JobBuilder::new("acme").task(t).timeout(120).build());
        sim.start(&key, "t");
        sim.succeed(&key, "t");
        assert_eq!(sim.phase(&key), JobPhase::Completed);
        let out = sim.send(Event::JobForgotten { key: key.clone() });
        assert!(out.is_empty(), "{out:?}");
        sim.advance(10);
    }
    // Memory follows the live jobs: the slots of forgotten ones are taken again.
    assert!(sim.s.job_slots() < 100, "{} slots", sim.s.job_slots());

    let mut t = task("t");
    t.timeout_seconds = Some(3_600);
    sim.submit("new", JobBuilder::new("acme").task(t).build());
    sim.start("new", "t");
    // Past every timeout the old jobs armed: none of them may reach the new job in their slot.
    for _ in 0..600 {
        sim.advance(1_000);
        sim.heartbeat("w1", &[]);
    }
    assert_eq!(
        sim.phase("new"),
        JobPhase::Running,
        "{:?}",
        sim.status("new").message
    );
    assert_eq!(sim.task("new", "t").phase, TaskPhase::Running);
    sim.succeed("new", "t");
    assert_eq!(sim.phase("new"), JobPhase::Completed);
    assert_eq!(sim.s.job_keys(), vec!["new".to_string()]);
}
