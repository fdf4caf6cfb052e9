//! Watches that break: what was deleted while the operator could not see the API server leaves
//! its core once the watches list again, as no delete event ever reaches it. And a new leader
//! whose first list fails keeps trying instead of exiting.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use splai_operator::metrics::Metrics;
use splai_operator::{
    SPLAIModelRoute, SPLAIModelRouteSpec, SPLAIPolicy, SPLAIPolicySpec, SPLAIWorker,
};
use splai_scheduler::api::{
    Backend, Health, JobPhase, JobSpec, ModelRouteSpec, PolicySpec, Quotas, RouteMatch,
};
use splai_testbed::{ControlPlane, Relay};

use crate::harness::{Harness, caps, task};

fn job(command: &[&str]) -> JobSpec {
    JobSpec {
        tenant: "acme".into(),
        tasks: vec![task("work", command)],
        ..JobSpec::default()
    }
}

/// Waits until the operator's metrics satisfy `done`; a guard against hanging, not a timing
/// assertion.
async fn until(metrics: &Metrics, what: &str, done: impl Fn(&Metrics) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !done(metrics) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened; metrics:\n{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_policy_and_route_deleted_while_the_watches_were_broken_leave_the_core_after_the_relist()
 {
    // A control plane of its own: its API server is restarted, which the other tests must not see.
    // Its startup and restart block on a runtime of their own, so they run off this one.
    let plane = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap()
        .unwrap();
    let client = plane.client().await.unwrap();
    let ns = "relist".to_owned();
    splai_testbed::create_namespace(&client, &ns).await.unwrap();
    let mut h = Harness::on(client.clone(), ns.clone()).await.unwrap();
    // The operator reaches the API server through a relay the test can cut; its lease outlasts
    // the cut, so it keeps leading throughout.
    let relay = Relay::start(plane.server()).await.unwrap();
    h.operator_client = plane.client_at(&relay.url()).await.unwrap();
    h.lease_seconds = 300;

    let mut policy = SPLAIPolicy::new(
        "acme-one-at-a-time",
        SPLAIPolicySpec(PolicySpec {
            tenant: "acme".into(),
            quotas: Quotas {
                max_running_jobs: Some(1),
                ..Quotas::default()
            },
            ..PolicySpec::default()
        }),
    );
    policy.meta_mut().namespace = Some(ns.clone());
    let policies: Api<SPLAIPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let mut route = SPLAIModelRoute::new(
        "local",
        SPLAIModelRouteSpec(ModelRouteSpec {
            priority: 0,
            matches: RouteMatch::default(),
            backend: Backend::Ollama,
            endpoint: "http://ollama:11434".into(),
            model: None,
            default: true,
        }),
    );
    route.meta_mut().namespace = Some(ns.clone());
    let routes: Api<SPLAIModelRoute> = Api::namespaced(client.clone(), &ns);
    routes.create(&PostParams::default(), &route).await.unwrap();

    let metrics = h.operator("op-0");
    h.agent("w1", caps(8000));
    h.agent("w2", caps(8000));
    // The policy is in force: with one job of acme's running, the next one waits.
    h.submit("blocker", job(&["hang"])).await.unwrap();
    h.wait_job("blocker", Duration::from_secs(60), |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.job.started_at.is_some())
    })
    .await
    .unwrap();
    h.submit("held", job(&["sleep", "50"])).await.unwrap();
    h.wait_job("held", Duration::from_secs(60), |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.job.reason.as_deref() == Some("QuotaExceeded"))
    })
    .await
    .unwrap();
    // Both workers' objects are stored (their statuses are written after their creation), so
    // no create is in flight when the cut comes: one whose answer the cut lost would be sent
    // again after it, and bring w2's object back.
    for w in ["w1", "w2"] {
        h.wait_worker(w, |s| s.worker.health == Health::Healthy)
            .await
            .unwrap();
    }
    until(
        &metrics,
        "the fleet, the policy and the route counted",
        |m| m.workers_registered() == 2 && m.policies.get() == 1 && m.routes.get() == 1,
    )
    .await;

    // Cut off: w2's agent stops, and w2, the policy and the route are deleted. Then the API
    // server restarts, so the operator's watches cannot resume where they broke off.
    relay.cut();
    let (w2, w2_task) = h.agents.remove("w2").unwrap();
    let _ = w2.shutdown();
    w2_task.abort();
    let workers: Api<SPLAIWorker> = Api::namespaced(client.clone(), &ns);
    workers
        .delete("w2", &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete("acme-one-at-a-time", &DeleteParams::default())
        .await
        .unwrap();
    routes
        .delete("local", &DeleteParams::default())
        .await
        .unwrap();
    let plane = tokio::task::spawn_blocking(move || {
        let mut plane = plane;
        plane.restart_apiserver().map(|()| plane)
    })
    .await
    .unwrap()
    .unwrap();
    relay.restore();

    until(&metrics, "each watch's list finding its object gone", |m| {
        m.gone_at_list("worker") == 1
            && m.gone_at_list("policy") == 1
            && m.gone_at_list("route") == 1
    })
    .await;
    until(
        &metrics,
        "the core without w2, the policy and the route",
        |m| m.workers_registered() == 1 && m.policies.get() == 0 && m.routes.get() == 0,
    )
    .await;
    // The deleted policy no longer holds the job back.
    h.wait_phase("held", JobPhase::Completed).await.unwrap();
    assert_eq!(metrics.gone_at_list("job"), 0, "no job was deleted");
    h.shutdown().await;
    drop(plane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_that_cannot_list_at_first_keeps_trying_and_leads_once_it_can() {
    // A control plane of its own: the test removes a CRD, which every other test relies on.
    let plane = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap()
        .unwrap();
    let client = plane.client().await.unwrap();
    let ns = "late-crds".to_owned();
    splai_testbed::create_namespace(&client, &ns).await.unwrap();
    let mut h = Harness::on(client.clone(), ns.clone()).await.unwrap();
    // The leader's first list fails, as when it starts while kube-apiserver is away or before
    // the CRDs are installed (a chart applying both at once): here, without the SPLAIJob CRD.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("splaijobs.splai.io", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while crds.get_opt("splaijobs.splai.io").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the CRD never went");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let metrics = h.operator("op-0");
    until(&metrics, "leading", |m| m.leader.get() == 1).await;
    // Several failed read-backs (0.5 s, then 1 s, 2 s apart): the replica is still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (replica, _) = &h.operators["op-0"];
    assert!(
        !replica.is_finished(),
        "the leader gave up when it could not list: {:?}",
        h.operators.remove("op-0").unwrap().0.await
    );

    splai_operator::crd::install(&client).await.unwrap();
    h.agent("w1", caps(4000));
    h.submit("after", job(&["sleep", "50"])).await.unwrap();
    h.wait_phase("after", JobPhase::Completed).await.unwrap();
    h.shutdown().await;
}
