//! Lost workers, operator restarts and failover.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;

use splai_scheduler::api::{Dependency, Health, JobPhase, JobSpec, Outcome};

use crate::harness::{Harness, caps, task};

fn chain(n: usize, ms: u64) -> JobSpec {
    let ms = ms.to_string();
    JobSpec {
        tenant: "team-a".into(),
        tasks: (0..n)
            .map(|i| task(&format!("step-{i}"), &["sleep", &ms]))
            .collect(),
        dependencies: (1..n)
            .map(|i| Dependency {
                task: format!("step-{i}"),
                depends_on: vec![format!("step-{}", i - 1)],
            })
            .collect(),
        ..JobSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_heartbeats_stop_goes_stale_then_lost_and_its_task_finishes_elsewhere() {
    let mut h = Harness::new("lost-worker").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("long", &["hang-first", "1"])],
        ..JobSpec::default()
    };
    h.submit("survivor", spec).await.unwrap();
    h.wait_job("survivor", Duration::from_secs(60), |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.job.progress.running == 1)
    })
    .await
    .unwrap();
    h.agent("w2", caps(4000));
    h.wait_worker("w2", |w| w.worker.health == Health::Healthy)
        .await
        .unwrap();
    h.agent_handle("w1")
        .pause_heartbeats(Duration::from_secs(8))
        .unwrap();
    h.wait_worker("w1", |w| w.worker.health == Health::Stale)
        .await
        .unwrap();
    h.wait_worker("w1", |w| w.worker.health == Health::Lost)
        .await
        .unwrap();
    let job = h.wait_phase("survivor", JobPhase::Completed).await.unwrap();
    let records = h.records(&job).unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0].worker, "w1");
    assert_ne!(records[0].outcome, Outcome::Succeeded);
    assert_eq!(records[1].worker, "w2");
    assert_eq!(records[1].outcome, Outcome::Succeeded);
    assert_eq!(records[1].attempt, 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_run_restarts_and_every_job_completes_with_no_result_committed_twice()
 {
    let mut h = Harness::new("restart").await.unwrap();
    h.operator("op-0");
    for w in ["w1", "w2", "w3"] {
        h.agent(w, caps(3000));
    }
    for i in 0..50 {
        h.submit(&format!("job-{i:02}"), chain(3, 150))
            .await
            .unwrap();
    }
    // Kill it once some jobs have finished and others are under way.
    h.wait_job("job-05", Duration::from_secs(120), |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.job.phase == JobPhase::Completed)
    })
    .await
    .unwrap();
    h.kill("op-0").await;
    let unfinished = h
        .jobs()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|j| !j.status.as_ref().is_some_and(|s| s.job.phase.is_terminal()))
        .count();
    assert!(
        unfinished > 0,
        "every job ended before the kill; the test proves nothing"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.operator("op-0");

    let mut committed = 0;
    for i in 0..50 {
        let name = format!("job-{i:02}");
        let job = h.wait_phase(&name, JobPhase::Completed).await.unwrap();
        let records = h.records(&job).unwrap();
        let mut successes: BTreeMap<&str, u32> = BTreeMap::new();
        let mut attempts = BTreeSet::new();
        for r in &records {
            assert!(
                attempts.insert((r.task.as_str(), r.attempt)),
                "{name}: attempt {} of {} recorded twice",
                r.attempt,
                r.task
            );
            if r.outcome == Outcome::Succeeded {
                *successes.entry(r.task.as_str()).or_default() += 1;
            }
        }
        assert_eq!(successes.len(), 3, "{name}: {records:#?}");
        assert!(
            successes.values().all(|&n| n == 1),
            "{name}: a result was committed twice: {records:#?}"
        );
        committed += successes.len();
    }
    assert_eq!(committed, 150);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_leader_acts_and_the_standby_takes_over_when_it_dies() {
    let mut h = Harness::new("failover").await.unwrap();
    let a = h.operator("op-a");
    // Let the first replica win the lease before the second starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while a.leader.get() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "op-a never led");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = h.operator("op-b");
    h.agent("w1", caps(4000));
    h.agent("w2", caps(4000));
    h.submit("before", chain(2, 50)).await.unwrap();
    h.wait_phase("before", JobPhase::Completed).await.unwrap();
    assert_eq!(b.leader.get(), 0);
    assert_eq!(b.assignments.get(), 0, "the standby assigned work");
    assert_eq!(b.writes("job_status"), 0, "the standby wrote a status");
    assert!(a.assignments.get() >= 2);

    h.kill("op-a").await;
    h.submit("after", chain(2, 50)).await.unwrap();
    h.wait_phase("after", JobPhase::Completed).await.unwrap();
    assert_eq!(b.leader.get(), 1);
    assert!(b.assignments.get() >= 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_folded_into_worker_status_in_batches_not_one_write_each() {
    let mut h = Harness::new("heartbeats").await.unwrap();
    let m = h.operator("op-0");
    let workers = 60;
    for i in 0..workers {
        h.agent_beating(&format!("w{i:03}"), caps(4000), Duration::from_millis(100));
    }
    for i in 0..workers {
        h.wait_worker(&format!("w{i:03}"), |w| w.worker.health == Health::Healthy)
            .await
            .unwrap();
    }
    // Wait for 1,200 heartbeats (about 2 s at 600/s, longer on a starved machine), not for a
    // fixed time: the check needs enough heartbeats to mean something, however long they take.
    let (beats, writes) = (m.heartbeats.get(), m.writes("worker_status"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while m.heartbeats.get() - beats < 1_200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} heartbeats arrived",
            m.heartbeats.get() - beats
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (beats, writes) = (
        m.heartbeats.get() - beats,
        m.writes("worker_status") - writes,
    );
    // Nothing a status shows changed, so (almost) nothing was written.
    assert!(
        writes * 100 <= beats,
        "{writes} status writes for {beats} heartbeats"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_status_the_api_server_refuses_is_not_retried_and_the_work_goes_on() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
    use serde_json::json;
    use splai_operator::SPLAIWorker;

    let mut h = Harness::new("refused-status").await.unwrap();
    // A cluster admission policy, as an administrator might write, refuses every status of
    // worker `w-bad` in this namespace with a 422.
    let name = format!("refuse-{}", h.ns);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["splai.io"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["splaiworkers/status"],
            }]},
            "validations": [{
                "expression": "object.metadata.name != 'w-bad'",
                "message": "w-bad may not report",
            }],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": h.ns},
            }},
        },
    }))
    .unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(h.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(h.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The API server takes a moment to enforce a new policy: probe until it refuses.
    let workers: Api<SPLAIWorker> = Api::namespaced(h.client.clone(), &h.ns);
    let probe: SPLAIWorker = serde_json::from_value(json!({
        "apiVersion": "splai.io/v1alpha1", "kind": "SPLAIWorker",
        "metadata": {"name": "w-bad"},
        "spec": {"capabilities": {"cpuMillis": 1000, "memoryMib": 1024}},
    }))
    .unwrap();
    workers
        .create(&PostParams::default(), &probe)
        .await
        .unwrap();
    let status = json!({"status": {"worker": {"health": "Unknown"}}});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match workers
            .patch_status("w-bad", &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 422 => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the admission policy was never enforced: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    workers
        .delete("w-bad", &DeleteParams::default())
        .await
        .unwrap();

    let metrics = h.operator("op-0");
    // Patient agents: on a loaded machine an answer can take longer than the usual 2 s, and
    // whether a refused write holds answers back is the driver's unit test's to show
    // (`a_failed_worker_write_is_retried_but_holds_back_no_answer`).
    h.patient_agent("w-bad", caps(1000));
    h.patient_agent("w-good", caps(1000));
    h.submit("work", chain(4, 300)).await.unwrap();
    h.wait_phase("work", JobPhase::Completed).await.unwrap();
    assert!(metrics.refused("worker") >= 1, "{}", metrics.render());
    // Refused once per change of w-bad's status, never sent again as a retry.
    assert_eq!(metrics.retried("worker"), 0, "{}", metrics.render());
    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    h.shutdown().await;
}

/// Jobs the operator's core holds, as its `jobs` gauge counts them.
fn held(metrics: &splai_operator::metrics::Metrics) -> i64 {
    ["Queued", "Planning", "Scheduled", "Running"]
        .iter()
        .map(|p| metrics.jobs.get_or_create(&[("phase", *p)]).get())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_rebuilds_every_waiting_job_when_they_fill_several_list_pages() {
    // The new leader lists jobs 500 at a time: 1,100 take three pages.
    const JOBS: usize = 1_100;
    let mut h = Harness::new("pages").await.unwrap();
    let first = h.operator("op-0");
    let one = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("only", &["echo"])],
        ..JobSpec::default()
    };
    let submitted: Vec<_> = futures::stream::iter(0..JOBS)
        .map(|i| {
            let (h, one) = (&h, one.clone());
            async move { h.submit(&format!("job-{i:04}"), one).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(submitted.iter().all(Result::is_ok));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while first
        .api_writes
        .get_or_create(&[("kind", "job_status")])
        .get()
        < JOBS as u64
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "statuses never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.kill("op-0").await;
    let submitted_at = |jobs: Vec<splai_operator::SPLAIJob>| -> BTreeMap<String, String> {
        jobs.into_iter()
            .map(|j| {
                let at = j.status.and_then(|s| s.job.submitted_at);
                (j.metadata.name.unwrap(), format!("{at:?}"))
            })
            .collect()
    };
    let before = submitted_at(h.jobs().list(&Default::default()).await.unwrap().items);
    let second = h.operator("op-0");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while held(&second) < JOBS as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new leader holds {} of {JOBS} jobs",
            held(&second)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held(&second), JOBS as i64);
    // And they run once a worker comes, each as the job the first leader admitted: a job the
    // rebuild missed would be taken in again by the watch, as new, with a new submission time.
    h.agent("w1", caps(64_000));
    for i in 0..JOBS {
        h.wait_phase(&format!("job-{i:04}"), JobPhase::Completed)
            .await
            .unwrap();
    }
    let after = submitted_at(h.jobs().list(&Default::default()).await.unwrap().items);
    assert_eq!(before.len(), JOBS);
    let moved: Vec<&String> = before
        .iter()
        .filter(|(name, at)| after.get(*name) != Some(at))
        .map(|(name, _)| name)
        .collect();
    assert!(
        moved.is_empty(),
        "{} of {JOBS} jobs were taken in again as new, such as {:?}",
        moved.len(),
        &moved[..moved.len().min(5)]
    );
    h.shutdown().await;
}
