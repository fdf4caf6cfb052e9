//! Jobs from submission to their end: counters, records, results, retries, timeouts, cancels.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use splai_scheduler::api::{
    Dependency, Health, JobPhase, JobSpec, Outcome, PlanKind, PlanSpec, RetryPolicy,
};

use crate::harness::{Harness, caps, task};

fn dep(task: &str, on: &[&str]) -> Dependency {
    Dependency {
        task: task.into(),
        depends_on: on.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn diamond() -> JobSpec {
    JobSpec {
        tenant: "team-a".into(),
        tasks: vec![
            task("extract", &[]),
            task("left", &["sleep", "50"]),
            task("right", &["sleep", "50"]),
            task("join", &[]),
        ],
        dependencies: vec![
            dep("left", &["extract"]),
            dep("right", &["extract"]),
            dep("join", &["left", "right"]),
        ],
        ..JobSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_job_runs_to_completed_with_counters_records_and_a_result_uri() {
    let mut h = Harness::new("dag-completes").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    h.agent("w2", caps(4000));
    h.submit("diamond", diamond()).await.unwrap();
    let job = h.wait_phase("diamond", JobPhase::Completed).await.unwrap();
    let status = job.status.clone().unwrap();
    assert_eq!(status.job.progress.total, 4);
    assert_eq!(status.job.progress.succeeded, 4);
    assert_eq!(status.completions.as_deref(), Some("4/4"));
    assert_eq!(status.task_phases.as_deref(), Some("SSSS"));
    assert_eq!(
        status.job.result_artifact_uri.as_deref(),
        Some(format!("mem://{}/diamond/join/1", h.ns).as_str())
    );
    // No trace ID was set at creation: the job's uid is its trace ID, shown in the status only
    // (writing it to the object too would cost an update of the whole object per job).
    let trace = status.job.trace_id.clone().unwrap();
    assert_eq!(trace, job.metadata.uid.clone().unwrap().replace('-', ""));
    let annotations = job.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("splai.io/trace-id"), None);
    let finished: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| c.type_ == "Finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].reason, "Completed");

    let records = h.records(&job).unwrap();
    assert_eq!(records.len(), 4, "{records:#?}");
    for r in &records {
        assert_eq!(r.outcome, Outcome::Succeeded);
        assert_eq!(r.attempt, 1);
        assert!(r.traceparent.contains(&trace), "{r:?}");
        assert!(r.started_at.is_some());
    }
    let end = |t: &str| records.iter().find(|r| r.task == t).unwrap().finished_at;
    let start = |t: &str| records.iter().find(|r| r.task == t).unwrap().assigned_at;
    assert!(start("left") >= end("extract"));
    assert!(start("join") >= end("left").max(end("right")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_jobs_status_keeps_each_tasks_worker_and_score_and_its_records_each_attempts_decision()
 {
    let mut h = Harness::new("decisions").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    h.agent("w2", caps(4000));
    for w in ["w1", "w2"] {
        h.wait_worker(w, |s| s.worker.health == Health::Healthy)
            .await
            .unwrap();
    }
    // Retries to spare: an attempt lost with a slow agent connection is retried, and its record
    // still says why it went where it did.
    let retry = RetryPolicy {
        limit: 3,
        initial_backoff_ms: 50,
        backoff_factor: 1.0,
        max_backoff_ms: 50,
    };
    // Two of the three big tasks fit at once; the third waits for one of them to end.
    let big = |id: &str| {
        let mut t = task(id, &["sleep", "300"]);
        t.resources.cpu_millis = 3000;
        t.retry = retry;
        t
    };
    // Its first attempt never succeeds, so it has two at least.
    let mut flaky = task("flaky", &["fail-first", "1", "disk full"]);
    flaky.retry = retry;
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![big("a"), big("b"), big("c"), flaky],
        ..JobSpec::default()
    };
    h.submit("explained", spec).await.unwrap();
    let job = h
        .wait_job("explained", Duration::from_secs(60), |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.job.phase.is_terminal() && s.records_uri.is_some())
        })
        .await
        .unwrap();
    let status = job.status.clone().unwrap();
    assert_eq!(status.job.phase, JobPhase::Completed);
    let attempts = h.attempts(&job).unwrap();

    // What `kubectl describe` shows: every task, with its last attempt's worker and score.
    let ids: Vec<&str> = status.job.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "flaky"]);
    for t in &status.job.tasks {
        let last = attempts
            .iter()
            .filter(|a| a.record.task == t.id)
            .max_by_key(|a| a.record.attempt)
            .unwrap();
        assert_eq!(t.attempt, last.record.attempt, "{t:?}");
        assert_eq!(t.worker.as_ref(), Some(&last.record.worker), "{t:?}");
        let score = t.score.as_deref().unwrap_or_else(|| panic!("{t:?}"));
        assert_eq!(
            Some(score),
            last.decision.as_ref().map(|d| d.score.as_str()),
            "{t:?}"
        );
        assert!(t.assigned_at.is_some() && t.finished_at.is_some(), "{t:?}");
    }
    let finished = status.conditions.iter().find(|c| c.type_ == "Finished");
    assert_eq!(finished.map(|c| c.message.as_str()), Some(""));

    // The records: each attempt with the decision that placed it.
    assert!(
        attempts.iter().filter(|a| a.record.task == "flaky").count() >= 2,
        "{attempts:#?}"
    );
    for a in &attempts {
        let d = a.decision.as_ref().unwrap_or_else(|| panic!("{a:#?}"));
        let placement = d.placement.as_ref().expect("the decision in numbers");
        assert_eq!(&*placement.worker, a.record.worker);
        assert!(
            d.score
                .starts_with(&format!("splai chose {} (score", a.record.worker))
        );
    }
    // With both workers free, the other one was the runner-up, and lost on a term.
    let contested = attempts
        .iter()
        .filter_map(|a| a.decision.as_ref())
        .find(|d| d.placement.as_ref().is_some_and(|p| p.runner_up.is_some()))
        .unwrap_or_else(|| panic!("no decision had a runner-up: {attempts:#?}"));
    let placement = contested.placement.as_ref().unwrap();
    let runner_up = placement.runner_up.as_ref().unwrap();
    assert_ne!(runner_up.worker, placement.worker);
    assert!(
        contested
            .score
            .contains(&format!("runner-up {} scored", runner_up.worker)),
        "{}",
        contested.score
    );
    // A big task waited for room, and its record says why.
    let waited: Vec<&str> = attempts
        .iter()
        .filter_map(|a| a.decision.as_ref()?.waited.as_deref())
        .collect();
    assert!(!waited.is_empty(), "{attempts:#?}");
    assert!(waited.iter().all(|w| !w.is_empty()));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_then_fails_the_job_and_its_dependents_are_skipped() {
    let mut h = Harness::new("retries").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    let retry = RetryPolicy {
        limit: 2,
        initial_backoff_ms: 100,
        backoff_factor: 2.0,
        max_backoff_ms: 1000,
    };
    let mut flaky = task("flaky", &["fail-first", "1", "disk full"]);
    flaky.retry = retry;
    let mut broken = task("broken", &["fail", "segfault"]);
    broken.retry = retry;
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![flaky, broken, task("after", &[])],
        dependencies: vec![dep("after", &["flaky", "broken"])],
        ..JobSpec::default()
    };
    h.submit("flaky", spec).await.unwrap();
    let job = h.wait_phase("flaky", JobPhase::Failed).await.unwrap();
    let status = job.status.clone().unwrap();
    assert_eq!(status.job.progress.succeeded, 1);
    assert_eq!(status.job.progress.failed, 1);
    assert_eq!(status.job.progress.skipped, 1);
    let records = h.records(&job).unwrap();
    let of = |t: &str| records.iter().filter(|r| r.task == t).collect::<Vec<_>>();
    // One failure, then success on the retry.
    let flaky = of("flaky");
    assert_eq!(flaky.len(), 2, "{flaky:#?}");
    assert_eq!(flaky[0].outcome, Outcome::Failed);
    assert_eq!(flaky[1].outcome, Outcome::Succeeded);
    // The retries back off: the second attempt starts at least the initial backoff later.
    assert!(flaky[1].assigned_at.millis() >= flaky[0].finished_at.millis() + 100);
    // Three attempts (one plus two retries), all failed, each with its error.
    let broken = of("broken");
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(
        broken
            .iter()
            .all(|r| r.error.as_deref() == Some("segfault"))
    );
    assert!(broken[2].assigned_at.millis() >= broken[1].finished_at.millis() + 200);
    assert!(of("after").is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_timeout_and_the_job_timeout_are_enforced() {
    let mut h = Harness::new("timeouts").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    let mut slow = task("slow", &["hang"]);
    slow.timeout_seconds = Some(1);
    slow.retry.limit = 0;
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![slow],
        ..JobSpec::default()
    };
    h.submit("task-timeout", spec).await.unwrap();
    let job = h
        .wait_phase("task-timeout", JobPhase::Failed)
        .await
        .unwrap();
    let status = job.status.clone().unwrap();
    assert_eq!(status.job.progress.timed_out, 1, "{status:#?}");
    let records = h.records(&job).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::TimedOut);

    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("forever", &["hang"]), task("quick", &[])],
        timeout_seconds: Some(2),
        ..JobSpec::default()
    };
    h.submit("job-timeout", spec).await.unwrap();
    let job = h.wait_phase("job-timeout", JobPhase::Failed).await.unwrap();
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.job.reason.as_deref(),
        Some("JobTimedOut"),
        "{status:#?}"
    );
    assert_eq!(status.job.progress.succeeded, 1);
    assert_eq!(status.job.progress.canceled, 1);
    // The agent was told to stop the attempt: it no longer runs it.
    h.wait_worker("w1", |w| w.running_count == 0).await.unwrap();
    h.wait_agent_running("w1", 0).await.unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_by_its_flag_or_by_deletion_stops_its_tasks() {
    let mut h = Harness::new("cancel").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(8000));
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("a", &["hang"]), task("b", &["hang"])],
        ..JobSpec::default()
    };
    h.submit("by-flag", spec.clone()).await.unwrap();
    h.submit("by-delete", spec).await.unwrap();
    for name in ["by-flag", "by-delete"] {
        h.wait_job(name, Duration::from_secs(60), |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.job.progress.running == 2)
        })
        .await
        .unwrap();
    }
    h.wait_worker("w1", |w| w.running_count == 4).await.unwrap();

    let patch = serde_json::json!({"spec": {"cancel": true}});
    h.jobs()
        .patch("by-flag", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let job = h.wait_phase("by-flag", JobPhase::Canceled).await.unwrap();
    assert_eq!(job.status.unwrap().job.progress.canceled, 2);
    h.wait_worker("w1", |w| w.running_count == 2).await.unwrap();
    h.wait_agent_running("w1", 2).await.unwrap();

    let job = h.jobs().get("by-delete").await.unwrap();
    assert_eq!(
        job.metadata.finalizers.as_deref(),
        Some(&["splai.io/stop-tasks".to_owned()][..])
    );
    h.jobs()
        .delete("by-delete", &DeleteParams::default())
        .await
        .unwrap();
    // The finalizer holds the object until the tasks are stopped, then it goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.jobs().get_opt("by-delete").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.wait_worker("w1", |w| w.running_count == 0).await.unwrap();
    h.wait_agent_running("w1", 0).await.unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_job_of_five_thousand_tasks_completes_within_the_object_size_limit() {
    let mut h = Harness::new("big-job").await.unwrap();
    h.operator("op-0");
    for w in ["w1", "w2", "w3", "w4"] {
        h.patient_agent(w, caps(32_000));
    }
    let mut template = task("shard", &["sleep", "1"]);
    template.resources.cpu_millis = 500;
    let spec = JobSpec {
        tenant: "team-a".into(),
        plan: Some(Box::new(PlanSpec {
            kind: PlanKind::MapReduce,
            count: 4999,
            template,
            reduce: None,
        })),
        ..JobSpec::default()
    };
    h.submit("big", spec).await.unwrap();
    let job = h
        .wait_job("big", Duration::from_secs(600), |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.job.phase.is_terminal() && s.records_uri.is_some())
        })
        .await
        .unwrap();
    // The planner wrote the tasks into the spec.
    assert_eq!(job.spec.0.tasks.len(), 5000);
    assert_eq!(job.spec.0.dependencies.len(), 1);
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.job.phase,
        JobPhase::Completed,
        "{:?}",
        status.job.message
    );
    assert_eq!(status.job.progress.succeeded, 5000);
    assert_eq!(status.task_phases.as_deref().map(str::len), Some(5000));
    assert!(status.job.tasks.is_empty(), "nothing left worth listing");
    // ... and `kubectl describe` says where each task's worker and score are.
    let finished = status.conditions.iter().find(|c| c.type_ == "Finished");
    let message = finished.map(|c| c.message.as_str()).unwrap_or_default();
    assert!(
        message.contains("5000 of 5000 tasks are not listed")
            && message.contains("status.recordsUri"),
        "{message}"
    );
    assert!(message.contains("`splai explain big TASK`"), "{message}");
    // etcd's default object limit is 1.5 MiB; the whole object stays well under it.
    let size = serde_json::to_vec(&job).unwrap().len();
    let part = |v: serde_json::Value| serde_json::to_vec(&v).unwrap().len();
    assert!(
        size < 1_000_000,
        "the job object is {size} bytes: spec {}, status {}, managedFields {}",
        part(serde_json::to_value(&job.spec).unwrap()),
        part(serde_json::to_value(&job.status).unwrap()),
        part(serde_json::to_value(&job.metadata.managed_fields).unwrap()),
    );
    let records = h.records(&job).unwrap();
    assert_eq!(records.len(), 5000);
    assert!(records.iter().all(|r| r.outcome == Outcome::Succeeded));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_duplicate_task_ids_fails_with_the_core_validators_message() {
    let mut h = Harness::new("duplicate-ids").await.unwrap();
    h.operator("op-0");
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("extract", &[]), task("extract", &[])],
        ..JobSpec::default()
    };
    h.submit("twins", spec).await.unwrap();
    let job = h.wait_phase("twins", JobPhase::Failed).await.unwrap();
    let status = job.status.unwrap();
    assert_eq!(status.job.reason.as_deref(), Some("ValidationFailed"));
    let message = status.job.message.unwrap();
    assert!(message.contains("must be unique"), "{message}");
    assert!(message.contains("tasks[1]"), "{message}");
    assert!(message.contains("extract"), "{message}");
    h.shutdown().await;
}
