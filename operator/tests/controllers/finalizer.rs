//! The job-finalizer admission policy (`deploy/kubernetes/job-finalizer`): the API server gives
//! each new job the operator's finalizer as it is created, so the operator writes nothing to a
//! job's object but its status, and a deleted job still has its tasks stopped before it goes.

use std::time::Duration;

use kube::api::DeleteParams;
use splai_operator::metrics::Metrics;
use splai_scheduler::api::{JobPhase, JobSpec};
use splai_testbed::ControlPlane;

use crate::harness::{Harness, caps, task};

fn job_meta_writes(metrics: &Metrics) -> u64 {
    metrics
        .api_writes
        .get_or_create(&[("kind", "job_meta")])
        .get()
}

fn spec(command: &[&str]) -> JobSpec {
    JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("only", command)],
        ..JobSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_finalizer_policy_the_operator_writes_only_statuses_and_deletion_still_stops_tasks()
 {
    // A control plane of its own: the policy applies to every namespace, and the other tests
    // check the operator's own way of adding the finalizer.
    let plane = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap()
        .unwrap();
    let client = plane.client().await.unwrap();
    let ns = "finalizer-policy".to_owned();
    splai_testbed::create_namespace(&client, &ns).await.unwrap();
    let mut h = Harness::on(client, ns).await.unwrap();
    // As a user would apply it: kubectl apply -f deploy/kubernetes/job-finalizer/policy.yaml.
    plane
        .install_job_finalizer_policy(&h.client, &h.ns)
        .await
        .unwrap();

    let metrics = h.operator("op-0");
    h.agent("w1", caps(8000));
    h.submit("short", spec(&["echo"])).await.unwrap();
    let job = h.wait_phase("short", JobPhase::Completed).await.unwrap();
    assert_eq!(
        job.metadata.finalizers.as_deref(),
        Some(&["splai.io/stop-tasks".to_owned()][..])
    );
    assert_eq!(job_meta_writes(&metrics), 0, "{}", metrics.render());

    h.submit("long", spec(&["hang"])).await.unwrap();
    h.wait_job("long", Duration::from_secs(60), |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.job.progress.running == 1)
    })
    .await
    .unwrap();
    h.jobs()
        .delete("long", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while h.jobs().get_opt("long").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.wait_agent_running("w1", 0).await.unwrap();
    // The one write to a job's object: the finalizer's removal.
    assert_eq!(job_meta_writes(&metrics), 1, "{}", metrics.render());
    h.shutdown().await;
}
