mod common;

use common::*;
use splai_scheduler::api::*;
use splai_scheduler::{
    Effect, Event, Heartbeat, Ignored, Scheduler, Settings, Snapshot, Strategy, Timestamp,
};

/// A fleet and a mix of jobs caught mid-flight: running, retrying, waiting, queued for quota.
fn busy() -> Sim {
    let mut sim = Sim::new();
    sim.send(Event::PolicyUpserted {
        name: "q".into(),
        spec: PolicySpec {
            tenant: "acme".into(),
            quotas: Quotas {
                max_running_jobs: Some(2),
                ..Quotas::default()
            },
            ..PolicySpec::default()
        },
    });
    sim.worker(
        "w1",
        Capabilities {
            models: vec!["m".into()],
            ..caps(2000, 4096)
        },
    );
    sim.worker("w2", caps(2000, 4096));
    sim.heartbeat("w1", &["m"]);
    let mut flaky = task("flaky");
    flaky.retry.limit = 2;
    let mut slow = task("slow");
    slow.timeout_seconds = Some(600);
    sim.submit(
        "a",
        JobBuilder::new("acme")
            .task(flaky)
            .task(slow)
            .task(inference("llm", "m"))
            .build(),
    );
    sim.submit("b", JobBuilder::new("acme").chain(3).build());
    sim.submit("c", JobBuilder::new("acme").chain(1).build());
    sim.start("a", "slow");
    sim.fail("a", "flaky", "exit 3");
    sim.succeed("b", "s1");
    sim
}

fn rebuilt(sim: &Sim) -> (Scheduler, Vec<Effect>) {
    Scheduler::rebuild(
        sim.s.settings().clone(),
        sim.s.strategy(),
        7,
        sim.s.snapshot(),
        Timestamp(sim.now),
    )
}

#[test]
fn a_rebuilt_scheduler_has_the_same_state_as_the_one_it_replaces() {
    let sim = busy();
    let before = sim.s.snapshot();
    assert_eq!(sim.phase("c"), JobPhase::Queued);
    assert_eq!(sim.task("a", "flaky").phase, TaskPhase::Retrying);
    let (again, out) = rebuilt(&sim);
    assert!(
        out.iter().all(|e| !matches!(e, Effect::Assign(_))),
        "nothing new is placed by a rebuild: {out:?}"
    );
    // The same state, but that no agent has been heard from since the rebuild.
    let now = Timestamp(sim.now);
    let expected = Snapshot {
        workers: before
            .workers
            .iter()
            .cloned()
            .map(|w| w.restored(now))
            .collect(),
        ..before
    };
    assert_eq!(again.snapshot(), expected);
    again.check_invariants().unwrap();
}

#[test]
fn a_rebuilt_core_places_nothing_on_a_worker_until_its_agent_heartbeats_again() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(2000, 4096));
    sim.worker("w2", caps(2000, 4096));
    sim.heartbeat("w1", &[]);
    sim.advance(1_000);
    let (s, _) = rebuilt(&sim);
    sim.s = s;
    for w in ["w1", "w2"] {
        let status = sim.s.worker_status(w).unwrap();
        assert_eq!(status.health, Health::Stale, "{w}");
        assert_eq!(status.last_heartbeat, Some(Timestamp(sim.now)), "{w}");
    }
    let out = sim.submit("j", JobBuilder::new("acme").chain(1).build());
    assert!(
        !out.iter().any(|e| matches!(e, Effect::Assign(_))),
        "placed before any agent was heard from: {out:?}"
    );
    let out = sim.heartbeat("w2", &[]);
    assert_eq!(sim.s.worker_status("w2").unwrap().health, Health::Healthy);
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Assign(a) if &*a.worker == "w2")),
        "the heartbeat makes w2 placeable again: {out:?}"
    );
    // The silent one is lost a whole `lost_after_ms` after the rebuild, not before.
    let lost_after = sim.s.settings().lost_after_ms;
    sim.advance(lost_after - 1);
    assert_eq!(sim.s.worker_status("w1").unwrap().health, Health::Stale);
    sim.advance(1);
    assert_eq!(sim.s.worker_status("w1").unwrap().health, Health::Lost);
}

#[test]
fn a_snapshot_survives_a_round_trip_through_json() {
    let snap = busy().s.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);
}

#[test]
fn after_a_restart_reports_are_fenced_by_the_attempt_numbers_of_before() {
    let mut sim = busy();
    let (s, _) = rebuilt(&sim);
    let stale = AttemptRef {
        job: "a".into(),
        task: "flaky".into(),
        attempt: 1,
    };
    let worker = sim.assigned("a", "flaky").unwrap().worker.to_string();
    sim.s = s;
    let out = sim.send(Event::TaskSucceeded {
        attempt: stale,
        worker,
        artifact_uri: None,
    });
    assert!(
        matches!(
            &out[0],
            Effect::Ignored(Ignored::StaleReport {
                current_attempt: 1,
                ..
            })
        ),
        "{out:?}"
    );
    // The running attempt is still current and commits once.
    sim.succeed("a", "slow");
    assert_eq!(sim.task("a", "slow").phase, TaskPhase::Succeeded);
}

#[test]
fn a_rebuilt_scheduler_makes_the_same_decisions_as_the_original() {
    let mut original = busy();
    let mut restarted = busy();
    restarted.s = rebuilt(&restarted).0;
    for sim in [&mut original, &mut restarted] {
        // The agents reach the restarted core first; the original has heard from them all along.
        sim.heartbeat("w1", &["m"]);
        sim.heartbeat("w2", &[]);
        sim.advance(1_000);
        sim.heartbeat("w1", &["m"]);
        sim.heartbeat("w2", &[]);
        sim.succeed("a", "slow");
        sim.succeed("a", "llm");
        sim.succeed("a", "flaky");
        sim.succeed("b", "s2");
    }
    let tail = |s: &Sim| {
        s.effects
            .iter()
            .rev()
            .filter_map(|e| match e {
                Effect::Assign(a) => {
                    Some(format!("{}/{}#{}@{}", a.job, a.task, a.attempt, a.worker))
                }
                _ => None,
            })
            .take(4)
            .collect::<Vec<_>>()
    };
    assert_eq!(tail(&original).len(), 4, "the test exercises new decisions");
    assert_eq!(tail(&original), tail(&restarted));
    assert_eq!(original.s.snapshot(), restarted.s.snapshot());
}

/// Rebuilds `busy()` without the worker that ran `a/slow`, giving `slow` `retries` retries.
fn rebuild_without_slows_worker(retries: u32) -> (Scheduler, String) {
    let sim = busy();
    let mut snap = sim.s.snapshot();
    let gone = sim.assigned("a", "slow").unwrap().worker.to_string();
    snap.workers.retain(|w| w.name != gone);
    let job = snap.jobs.iter_mut().find(|j| j.key == "a").unwrap();
    job.spec
        .tasks
        .iter_mut()
        .find(|t| t.id == "slow")
        .unwrap()
        .retry
        .limit = retries;
    let (mut s, _) = Scheduler::rebuild(
        Settings::default(),
        Strategy::Splai,
        7,
        snap,
        Timestamp(sim.now),
    );
    // The agents that are left reconnect.
    for w in s.snapshot().workers {
        let heartbeat = Heartbeat {
            worker: w.name,
            incarnation: w.status.incarnation,
            warm_models: w.status.warm_models,
            running: w.status.running_tasks,
            ..Heartbeat::default()
        };
        s.handle(Event::Heartbeat(heartbeat), Timestamp(sim.now));
    }
    s.check_invariants().unwrap();
    (s, gone)
}

fn slow_of(s: &Scheduler) -> TaskStatus {
    s.job_status("a")
        .unwrap()
        .tasks
        .into_iter()
        .find(|t| t.id == "slow")
        .unwrap()
}

#[test]
fn an_attempt_whose_worker_vanished_during_a_restart_runs_again_within_its_budget() {
    let (s, gone) = rebuild_without_slows_worker(1);
    let slow = slow_of(&s);
    assert_eq!(slow.attempt, 2, "the lost attempt is replaced at once");
    assert_ne!(slow.worker.as_deref(), Some(gone.as_str()));
}

#[test]
fn an_attempt_whose_worker_vanished_during_a_restart_fails_without_budget() {
    let (s, gone) = rebuild_without_slows_worker(0);
    let slow = slow_of(&s);
    assert_eq!((slow.phase, slow.attempt), (TaskPhase::Failed, 1));
    assert_eq!(
        slow.error,
        Some(format!("worker {gone} was gone after a restart"))
    );
}

#[test]
fn a_rebuild_readies_tasks_whose_parents_succeeded_and_ends_jobs_whose_tasks_all_ended() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(2000, 4096));
    sim.submit("chain", JobBuilder::new("acme").chain(2).build());
    sim.submit("single", JobBuilder::new("acme").chain(1).build());
    let mut snapshot = sim.s.snapshot();
    // A driver learned of successes from its records before the statuses caught up: the first
    // link and the single task succeeded, yet their jobs still read as running.
    for job in &mut snapshot.jobs {
        let first = &mut job.status.tasks[0];
        first.phase = TaskPhase::Succeeded;
        first.worker = None;
        first.finished_at = Some(Timestamp(sim.now));
    }
    let (s, effects) = Scheduler::rebuild(
        sim.s.settings().clone(),
        Strategy::Splai,
        7,
        snapshot,
        Timestamp(sim.now),
    );
    let chain = s.job_status("chain").unwrap();
    assert_eq!(chain.tasks[0].phase, TaskPhase::Succeeded);
    assert!(
        matches!(chain.tasks[1].phase, TaskPhase::Ready | TaskPhase::Assigned),
        "{chain:#?}"
    );
    assert_eq!(s.job_phase("single"), Some(JobPhase::Completed));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::JobPhaseChanged { job, to: JobPhase::Completed, .. } if &**job == "single"
    )));
    s.check_invariants().unwrap();
}

/// A job whose tasks set every field of `TaskSpec`, beside one that leaves them all default.
fn every_field() -> JobSpec {
    let full = TaskSpec {
        id: "full".into(),
        kind: TaskKind::Inference,
        resources: Resources {
            cpu_millis: 1500,
            memory_mib: 700,
            gpus: 0,
        },
        model: Some("m".into()),
        tools: vec!["python".into(), "ffmpeg".into()],
        locality: Some("zone-a".into()),
        classification: Some("internal".into()),
        interaction_class: InteractionClass::Interactive,
        reasoning_required: true,
        timeout_seconds: Some(90),
        retry: RetryPolicy {
            limit: 5,
            initial_backoff_ms: 250,
            backoff_factor: 1.5,
            max_backoff_ms: 9_000,
        },
        expected_duration_ms: Some(4_321),
        command: Vec::new(),
        input: Some("summarise this".into()),
    };
    let mut cmd = task("cmd");
    cmd.command = vec!["sh".into(), "-c".into(), "echo hi".into()];
    cmd.timeout_seconds = Some(u64::MAX);
    JobBuilder::new("acme")
        .task(full)
        .task(cmd)
        .task(TaskSpec {
            id: "bare".into(),
            ..TaskSpec::default()
        })
        .dep("bare", &["full", "cmd"])
        .priority(3)
        .timeout(3_600)
        .build()
}

#[test]
fn the_core_gives_back_every_field_of_an_admitted_spec() {
    let mut sim = Sim::new();
    let spec = every_field();
    sim.submit("j", spec.clone());
    assert_eq!(sim.s.job_spec("j").as_ref(), Some(&spec));
    for t in &spec.tasks {
        assert_eq!(
            sim.s.task_spec("j", &t.id).as_ref(),
            Some(t),
            "task {}",
            t.id
        );
    }
    assert_eq!(sim.s.task_spec("j", "nope"), None);
    assert_eq!(sim.s.task_spec("nope", "full"), None);
    let snap = sim.s.snapshot();
    assert_eq!(snap.jobs[0].spec, spec);
}

#[test]
fn a_refused_job_keeps_its_spec_whole() {
    let mut sim = Sim::new();
    let mut spec = every_field();
    // A cycle: admission refuses the job, so its tasks are never built.
    spec.dependencies.push(Dependency {
        task: "full".into(),
        depends_on: vec!["bare".into()],
    });
    sim.submit("j", spec.clone());
    assert_eq!(sim.s.job_phase("j"), Some(JobPhase::Failed));
    assert_eq!(sim.s.job_spec("j").as_ref(), Some(&spec));
    assert_eq!(sim.s.task_spec("j", "cmd").as_ref(), Some(&spec.tasks[1]));
}

#[test]
fn an_ended_job_whose_status_still_shows_tasks_in_flight_holds_no_worker_after_a_rebuild() {
    let mut sim = Sim::new();
    sim.worker("w1", caps(2000, 4096));
    let mut flaky = task("flaky");
    flaky.retry.limit = 3;
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(task("busy"))
            .task(flaky)
            .build(),
    );
    sim.start("j", "busy");
    sim.fail("j", "flaky", "exit 1");
    let mut snap = sim.s.snapshot();
    // The job's end was stored, but its tasks' last states were not: one running, one retrying.
    let status = &mut snap.jobs[0].status;
    assert!(status.tasks.iter().any(|t| t.phase == TaskPhase::Running));
    assert!(status.tasks.iter().any(|t| t.phase == TaskPhase::Retrying));
    status.phase = JobPhase::Canceled;
    status.finished_at = Some(Timestamp(sim.now));
    let (mut s, _) = Scheduler::rebuild(
        sim.s.settings().clone(),
        sim.s.strategy(),
        7,
        snap,
        Timestamp(sim.now),
    );
    s.check_invariants().unwrap();
    assert!(s.worker_status("w1").unwrap().running_tasks.is_empty());
    let phases: Vec<TaskPhase> = s
        .job_status("j")
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.phase)
        .collect();
    assert!(phases.iter().all(|p| p.is_terminal()), "{phases:?}");
    // Past every backoff: nothing of the ended job runs again.
    let later = s.handle(Event::Tick, Timestamp(sim.now + 600_000));
    assert!(
        !later.iter().any(|e| matches!(e, Effect::Assign(_))),
        "{later:?}"
    );
    assert!(
        s.handle(
            Event::JobForgotten { key: "j".into() },
            Timestamp(sim.now + 600_001)
        )
        .is_empty()
    );
    s.check_invariants().unwrap();
}
