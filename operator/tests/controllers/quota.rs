//! Quotas at run time: a job that fits its tenant's quota but not right now waits, with its
//! reason and place in the queue, and runs as capacity frees.

use std::time::Duration;

use kube::Resource;
use kube::api::{Api, PostParams};
use splai_operator::{SPLAIPolicy, SPLAIPolicySpec};
use splai_scheduler::api::{JobPhase, JobSpec, PolicySpec, Quotas, Resources, TaskSpec};

use crate::harness::{Harness, caps};

fn one_task(tenant: &str, ms: u64) -> JobSpec {
    JobSpec {
        tenant: tenant.into(),
        tasks: vec![TaskSpec {
            id: "work".into(),
            command: vec!["sleep".into(), ms.to_string()],
            resources: Resources {
                cpu_millis: 500,
                memory_mib: 64,
                gpus: 0,
            },
            ..TaskSpec::default()
        }],
        ..JobSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_tenants_the_jobs_over_quota_wait_with_their_reason_then_run_as_capacity_frees() {
    let mut h = Harness::new("quota").await.unwrap();
    let mut policy = SPLAIPolicy::new(
        "acme-quota",
        SPLAIPolicySpec(PolicySpec {
            tenant: "acme".into(),
            quotas: Quotas {
                max_running_jobs: Some(1),
                ..Quotas::default()
            },
            ..PolicySpec::default()
        }),
    );
    policy.meta_mut().namespace = Some(h.ns.clone());
    let policies: Api<SPLAIPolicy> = Api::namespaced(h.client.clone(), &h.ns);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    h.operator("op-0");
    h.agent("w1", caps(8000));
    h.submit("acme-1", one_task("acme", 1500)).await.unwrap();
    h.wait_job("acme-1", Duration::from_secs(60), |j| {
        j.status
            .as_ref()
            .is_some_and(|s| s.job.started_at.is_some())
    })
    .await
    .unwrap();
    h.submit("acme-2", one_task("acme", 100)).await.unwrap();
    h.submit("acme-3", one_task("acme", 100)).await.unwrap();
    h.submit("globex-1", one_task("globex", 100)).await.unwrap();

    // The other tenant is not held back by acme's quota.
    h.wait_phase("globex-1", JobPhase::Completed).await.unwrap();
    for (name, place) in [("acme-2", 1), ("acme-3", 2)] {
        let job = h
            .wait_job(name, Duration::from_secs(60), |j| {
                j.status
                    .as_ref()
                    .is_some_and(|s| s.job.reason.as_deref() == Some("QuotaExceeded"))
            })
            .await
            .unwrap();
        let status = job.status.unwrap();
        assert_eq!(status.job.phase, JobPhase::Queued);
        let message = status.job.message.unwrap();
        assert!(message.contains("1/1 running jobs"), "{message}");
        assert!(
            message.contains(&format!("position {place} in the tenant's queue")),
            "{name}: {message}"
        );
    }
    // As acme-1 ends, the others run in turn, never two at once.
    for name in ["acme-1", "acme-2", "acme-3"] {
        h.wait_phase(name, JobPhase::Completed).await.unwrap();
    }
    let (a1, a2, a3) = (
        h.records(&h.jobs().get("acme-1").await.unwrap()).unwrap(),
        h.records(&h.jobs().get("acme-2").await.unwrap()).unwrap(),
        h.records(&h.jobs().get("acme-3").await.unwrap()).unwrap(),
    );
    assert!(a2[0].assigned_at >= a1[0].finished_at);
    assert!(a3[0].assigned_at >= a2[0].finished_at);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_inference_task_is_stamped_with_the_backend_endpoint_and_model_of_its_route() {
    use splai_operator::{SPLAIModelRoute, SPLAIModelRouteSpec};
    use splai_scheduler::api::{Backend, ModelRouteSpec, RouteMatch, TaskKind};

    let mut h = Harness::new("routes").await.unwrap();
    let routes: Api<SPLAIModelRoute> = Api::namespaced(h.client.clone(), &h.ns);
    for (name, priority, reasoning, backend, endpoint, default) in [
        (
            "reasoning",
            10,
            Some(true),
            Backend::Vllm,
            "http://vllm:8000",
            false,
        ),
        (
            "local",
            0,
            None,
            Backend::Ollama,
            "http://ollama:11434",
            true,
        ),
    ] {
        let mut r = SPLAIModelRoute::new(
            name,
            SPLAIModelRouteSpec(ModelRouteSpec {
                priority,
                matches: RouteMatch {
                    reasoning_required: reasoning,
                    ..RouteMatch::default()
                },
                backend,
                endpoint: endpoint.into(),
                model: None,
                default,
            }),
        );
        r.meta_mut().namespace = Some(h.ns.clone());
        routes.create(&PostParams::default(), &r).await.unwrap();
    }
    h.operator("op-0");
    let mut gpu = caps(8000);
    gpu.models = vec!["*".into()];
    h.agent("w1", gpu);
    let ask = |id: &str, reasoning: bool| TaskSpec {
        id: id.into(),
        kind: TaskKind::Inference,
        model: Some("llama-8b".into()),
        reasoning_required: reasoning,
        command: vec!["hang".into()],
        resources: Resources {
            cpu_millis: 500,
            memory_mib: 64,
            gpus: 0,
        },
        ..TaskSpec::default()
    };
    let spec = JobSpec {
        tenant: "acme".into(),
        tasks: vec![ask("think", true), ask("chat", false)],
        ..JobSpec::default()
    };
    h.submit("routed", spec).await.unwrap();
    let job = h
        .wait_job("routed", Duration::from_secs(60), |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.job.progress.running == 2)
        })
        .await
        .unwrap();
    let status = job.status.unwrap();
    let route_of = |id: &str| {
        let t = status.job.tasks.iter().find(|t| t.id == id).unwrap();
        let r = t.route.clone().expect("the task carries its route");
        (r.route, r.backend, r.endpoint, r.model)
    };
    assert_eq!(
        route_of("think"),
        (
            "reasoning".into(),
            Backend::Vllm,
            "http://vllm:8000".into(),
            "llama-8b".into()
        )
    );
    assert_eq!(
        route_of("chat"),
        (
            "local".into(),
            Backend::Ollama,
            "http://ollama:11434".into(),
            "llama-8b".into()
        )
    );
    h.shutdown().await;
}
