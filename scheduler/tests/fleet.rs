mod common;

use common::*;
use splai_scheduler::api::*;
use splai_scheduler::{CancelReason, Effect, Event, Heartbeat, Ignored, Settings};

fn health_changes(effects: &[Effect]) -> Vec<(String, Health)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::WorkerHealthChanged { worker, to, .. } => Some((worker.to_string(), *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_silent_worker_goes_stale_then_lost_at_the_configured_thresholds() {
    let settings = Settings {
        stale_after_ms: 5_000,
        lost_after_ms: 20_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Default::default());
    sim.worker("w1", caps(1000, 1000));
    sim.advance(4_999);
    assert_eq!(sim.s.worker_status("w1").unwrap().health, Health::Healthy);
    let out = sim.advance(1);
    assert_eq!(health_changes(&out), vec![("w1".into(), Health::Stale)]);
    let out = sim.advance(15_000);
    assert_eq!(health_changes(&out), vec![("w1".into(), Health::Lost)]);
}

#[test]
fn heartbeats_keep_a_worker_healthy_and_revive_a_stale_one() {
    let settings = Settings {
        stale_after_ms: 5_000,
        lost_after_ms: 20_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Default::default());
    sim.worker("w1", caps(1000, 1000));
    for _ in 0..10 {
        sim.advance(4_000);
        sim.heartbeat("w1", &[]);
    }
    assert!(
        health_changes(&sim.effects)
            .iter()
            .all(|(_, h)| *h == Health::Healthy)
    );
    sim.advance(6_000);
    let out = sim.heartbeat("w1", &[]);
    assert_eq!(health_changes(&out), vec![("w1".into(), Health::Healthy)]);
}

#[test]
fn a_stale_worker_gets_no_new_work_but_keeps_its_tasks() {
    let settings = Settings {
        stale_after_ms: 5_000,
        lost_after_ms: 60_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Default::default());
    sim.worker("w1", caps(4000, 4000));
    sim.submit("a", JobBuilder::new("acme").task(task("t")).build());
    sim.advance(5_000);
    sim.submit("b", JobBuilder::new("acme").task(task("t")).build());
    assert!(sim.assigned("b", "t").is_none());
    assert_eq!(
        sim.task("b", "t").pending_reason.as_deref(),
        Some("no healthy worker can run it (1 suitable workers are stale or lost)")
    );
    assert_eq!(sim.task("a", "t").phase, TaskPhase::Assigned);
}

fn lose_the_worker_of(sim: &mut Sim, job: &str, t: &str) -> (String, String) {
    let first = sim.assigned(job, t).unwrap().worker.to_string();
    let other = if first == "w1" { "w2" } else { "w1" }.to_string();
    // Only the other worker keeps beating; the first goes silent for 20 s.
    for _ in 0..5 {
        sim.advance(4_000);
        sim.heartbeat(&other, &[]);
    }
    (first, other)
}

fn two_workers_losing_one() -> Sim {
    let settings = Settings {
        stale_after_ms: 5_000,
        lost_after_ms: 20_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Default::default());
    sim.worker("w1", caps(1000, 1000));
    sim.worker("w2", caps(1000, 1000));
    sim
}

#[test]
fn stale_worker_tasks_are_requeued_within_their_retry_budget_when_it_is_lost() {
    let mut sim = two_workers_losing_one();
    let mut once = task("once");
    once.retry.limit = 1;
    sim.submit("j", JobBuilder::new("acme").task(once).build());
    let (first, other) = lose_the_worker_of(&mut sim, "j", "once");
    let once = sim.task("j", "once");
    assert_eq!(once.phase, TaskPhase::Retrying);
    assert_eq!(
        once.error,
        Some(format!("worker {first} was lost: no heartbeat for 20s"))
    );
    sim.advance(1_000);
    let again = sim.assigned("j", "once").unwrap();
    assert_eq!(
        (again.attempt, again.worker.to_string()),
        (2, other),
        "requeued to the healthy worker"
    );
}

#[test]
fn a_lost_workers_task_with_no_retry_budget_left_fails() {
    let mut sim = two_workers_losing_one();
    sim.submit("j", JobBuilder::new("acme").task(task("never")).build());
    lose_the_worker_of(&mut sim, "j", "never");
    assert_eq!(sim.task("j", "never").phase, TaskPhase::Failed);
    assert_eq!(sim.phase("j"), JobPhase::Failed);
}

#[test]
fn a_report_from_an_attempt_that_is_no_longer_current_is_ignored() {
    let settings = Settings {
        stale_after_ms: 1_000,
        lost_after_ms: 2_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Default::default());
    sim.worker("w1", caps(1000, 1000));
    let mut t = task("t");
    t.retry.limit = 2;
    sim.submit("j", JobBuilder::new("acme").task(t).build());
    sim.advance(2_000); // w1 lost, attempt 1 requeued
    sim.worker("w2", caps(1000, 1000));
    sim.advance(999);
    sim.heartbeat("w2", &[]);
    sim.advance(1);
    assert_eq!(sim.assigned("j", "t").unwrap().attempt, 2);
    // w1 comes back and reports the old attempt as done: fenced.
    let out = sim.send(Event::TaskSucceeded {
        attempt: AttemptRef {
            job: "j".into(),
            task: "t".into(),
            attempt: 1,
        },
        worker: "w1".into(),
        artifact_uri: Some("file:///stale".into()),
    });
    assert!(matches!(
        &out[0],
        Effect::Ignored(Ignored::StaleReport {
            current_attempt: 2,
            ..
        })
    ));
    assert_eq!(sim.task("j", "t").phase, TaskPhase::Assigned);
    sim.succeed("j", "t");
    // A duplicate of the real result is ignored too: the result is committed once.
    let dup = sim.succeed("j", "t");
    assert!(matches!(
        &dup[0],
        Effect::Ignored(Ignored::StaleReport { .. })
    ));
    let committed = sim
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::AttemptEnded(r) if r.outcome == Outcome::Succeeded))
        .count();
    assert_eq!(committed, 1);
    assert_eq!(
        sim.status("j").result_artifact_uri.as_deref(),
        Some("file:///artifacts/j/t/2")
    );
}

#[test]
fn a_report_from_the_wrong_worker_is_ignored() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(1000, 1000));
    sim.worker("w2", caps(1000, 1000));
    sim.submit("j", JobBuilder::new("acme").task(task("t")).build());
    let a = sim.assigned("j", "t").unwrap().clone();
    let other = if &*a.worker == "w1" { "w2" } else { "w1" };
    let out = sim.send(Event::TaskSucceeded {
        attempt: AttemptRef {
            job: "j".into(),
            task: "t".into(),
            attempt: a.attempt,
        },
        worker: other.into(),
        artifact_uri: None,
    });
    assert!(matches!(
        &out[0],
        Effect::Ignored(Ignored::StaleReport { .. })
    ));
}

#[test]
fn a_restarted_agent_loses_its_attempts_and_they_run_again() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(1000, 1000));
    let mut t = task("t");
    t.retry.limit = 1;
    sim.submit("j", JobBuilder::new("acme").task(t).build());
    sim.send(Event::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 2,
        ..Heartbeat::default()
    }));
    assert_eq!(sim.task("j", "t").phase, TaskPhase::Retrying);
    assert_eq!(
        sim.task("j", "t").error.as_deref(),
        Some("worker w1 restarted")
    );
}

#[test]
fn an_agent_reporting_an_attempt_it_should_not_run_is_told_to_cancel_it() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(1000, 1000));
    let out = sim.send(Event::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        running: vec![AttemptRef {
            job: "gone".into(),
            task: "t".into(),
            attempt: 3,
        }],
        ..Heartbeat::default()
    }));
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Cancel {
            reason: CancelReason::Orphaned,
            attempt: 3,
            ..
        }
    )));
}

#[test]
fn heartbeats_update_the_workers_status() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(1000, 1000));
    sim.send(Event::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        utilization: Utilization {
            cpu: 0.5,
            memory: 0.25,
            gpu: 0.0,
        },
        queue_depth: 3,
        warm_models: vec!["m1".into()],
        running: vec![],
    }));
    let st = sim.s.worker_status("w1").unwrap();
    assert_eq!(
        (st.health, st.queue_depth, st.utilization.cpu),
        (Health::Healthy, 3, 0.5)
    );
    assert_eq!(st.warm_models, vec!["m1".to_string()]);
    let unknown = sim.heartbeat("nobody", &[]);
    assert_eq!(
        unknown,
        vec![Effect::Ignored(Ignored::UnknownWorker {
            worker: "nobody".into()
        })]
    );
}

#[test]
fn a_utilization_past_its_bounds_is_held_within_zero_and_one() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(1000, 1000));
    sim.send(Event::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        utilization: Utilization {
            cpu: 2.5,
            memory: -0.5,
            gpu: f64::NAN,
        },
        ..Heartbeat::default()
    }));
    let u = sim.s.worker_status("w1").unwrap().utilization;
    assert_eq!((u.cpu, u.memory, u.gpu), (1.0, 0.0, 0.0));
}

#[test]
fn a_revived_worker_that_falls_silent_again_goes_stale_on_time() {
    let settings = Settings {
        stale_after_ms: 10_000,
        lost_after_ms: 30_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Default::default());
    sim.worker("w1", caps(1000, 1000));
    sim.advance(10_000);
    assert_eq!(sim.s.worker_status("w1").unwrap().health, Health::Stale);
    sim.heartbeat("w1", &[]);
    let out = sim.advance(10_000);
    assert_eq!(
        health_changes(&out),
        vec![("w1".into(), Health::Stale)],
        "10 s after its last heartbeat, not 30"
    );
}

fn lossy_assignment() -> Sim {
    let settings = Settings {
        assignment_grace_ms: 10_000,
        ..Settings::default()
    };
    let mut sim = Sim::with(settings, Default::default());
    sim.worker("w1", caps(1000, 1000));
    let mut t = task("t");
    t.retry.limit = 1;
    sim.submit("j", JobBuilder::new("acme").task(t).build());
    sim
}

fn empty_heartbeat(sim: &mut Sim) -> Vec<Effect> {
    sim.send(Event::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        ..Heartbeat::default()
    }))
}

#[test]
fn an_attempt_the_worker_never_received_is_retried_after_the_assignment_grace() {
    let mut sim = lossy_assignment();
    sim.now += 9_999;
    empty_heartbeat(&mut sim);
    assert_eq!(
        sim.task("j", "t").phase,
        TaskPhase::Assigned,
        "the assignment may still be in flight"
    );
    sim.now += 1;
    empty_heartbeat(&mut sim);
    let t = sim.task("j", "t");
    assert_eq!(t.phase, TaskPhase::Retrying);
    assert_eq!(
        t.error.as_deref(),
        Some("worker w1 is not running attempt 1: the assignment or its report was lost")
    );
    sim.advance(1_000);
    assert_eq!(sim.assigned("j", "t").unwrap().attempt, 2);
}

#[test]
fn an_attempt_the_worker_lists_is_kept_however_old() {
    let mut sim = lossy_assignment();
    for _ in 0..10 {
        sim.now += 10_000;
        sim.heartbeat("w1", &[]);
    }
    assert_eq!(sim.task("j", "t").phase, TaskPhase::Assigned);
}
