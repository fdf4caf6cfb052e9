mod common;

use common::*;
use splai_scheduler::api::*;
use splai_scheduler::{Effect, Event};

fn policy(tenant: &str) -> PolicySpec {
    PolicySpec {
        tenant: tenant.into(),
        ..PolicySpec::default()
    }
}

fn with_policy(name: &str, p: PolicySpec) -> Sim {
    let mut sim = Sim::new();
    sim.send(Event::PolicyUpserted {
        name: name.into(),
        spec: p,
    });
    sim
}

#[test]
fn a_job_using_a_denied_model_fails_with_the_rule_that_denied_it() {
    let p = PolicySpec {
        models: RuleSet {
            allow: vec![],
            deny: vec!["gpt-*".into()],
        },
        ..policy("acme")
    };
    let mut sim = with_policy("acme-rules", p);
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(inference("ask", "gpt-4o"))
            .build(),
    );
    let st = sim.status("j");
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (JobPhase::Failed, Some("PolicyDenied"))
    );
    assert_eq!(
        st.message.as_deref(),
        Some(
            "task `ask`: model `gpt-4o` is denied by policy `acme-rules` rule models.deny[0] (`gpt-*`); use another model or ask for the policy to change"
        )
    );
}

#[test]
fn a_denied_classification_is_refused_and_other_tenants_are_unaffected() {
    let p = PolicySpec {
        classifications: RuleSet {
            allow: vec!["public".into()],
            deny: vec![],
        },
        ..policy("acme")
    };
    let mut sim = with_policy("acme-rules", p);
    let mut secret = task("t");
    secret.classification = Some("restricted".into());
    sim.submit("j", JobBuilder::new("acme").task(secret.clone()).build());
    assert!(
        sim.status("j")
            .message
            .unwrap()
            .contains("classification `restricted` is not in the allow list")
    );
    sim.submit("k", JobBuilder::new("globex").task(secret).build());
    assert_eq!(sim.phase("k"), JobPhase::Scheduled);
}

#[test]
fn a_policy_reference_must_exist_and_govern_the_jobs_tenant() {
    let mut sim = with_policy("other", policy("globex"));
    let mut spec = JobBuilder::new("acme").chain(1).build();
    spec.policy_ref = Some("missing".into());
    sim.submit("a", spec.clone());
    assert_eq!(sim.status("a").reason.as_deref(), Some("PolicyNotFound"));
    spec.policy_ref = Some("other".into());
    sim.submit("b", spec);
    assert!(
        sim.status("b")
            .message
            .unwrap()
            .contains("governs tenant `globex`, not `acme`")
    );
}

#[test]
fn a_job_over_the_tasks_per_job_quota_is_refused() {
    let p = PolicySpec {
        quotas: Quotas {
            max_tasks_per_job: Some(2),
            ..Quotas::default()
        },
        ..policy("*")
    };
    let mut sim = with_policy("all", p);
    sim.submit("j", JobBuilder::new("acme").chain(3).build());
    assert!(
        sim.status("j")
            .message
            .unwrap()
            .contains("over policy `all` quota maxTasksPerJob of 2")
    );
}

#[test]
fn the_running_tasks_quota_holds_tasks_with_a_reason_until_capacity_frees() {
    let p = PolicySpec {
        quotas: Quotas {
            max_running_tasks: Some(2),
            ..Quotas::default()
        },
        ..policy("acme")
    };
    let mut sim = with_policy("q", p);
    sim.worker("w", caps(16_000, 16_384));
    let spec = (0..4)
        .fold(JobBuilder::new("acme"), |b, i| {
            b.task(task(&format!("t{i}")))
        })
        .build();
    sim.submit("j", spec);
    assert_eq!(sim.assignments().len(), 2);
    assert_eq!(
        sim.task("j", "t3").pending_reason.as_deref(),
        Some("tenant quota: 2/2 running tasks")
    );
    // Another tenant is not held back by acme's quota.
    sim.submit("k", JobBuilder::new("globex").chain(1).build());
    assert!(sim.assigned("k", "s1").is_some());
    sim.succeed("j", "t0");
    assert_eq!(
        sim.assignments().iter().filter(|a| &*a.job == "j").count(),
        3
    );
}

fn quota_sim(quotas: Quotas) -> Sim {
    let mut sim = with_policy(
        "q",
        PolicySpec {
            quotas,
            ..policy("acme")
        },
    );
    sim.worker(
        "w",
        Capabilities {
            gpus: 4,
            ..caps(16_000, 16_384)
        },
    );
    sim
}

#[test]
fn the_gpu_quota_counts_the_gpus_the_tenant_holds_and_spares_cpu_tasks() {
    let mut sim = quota_sim(Quotas {
        max_gpus: Some(1),
        ..Quotas::default()
    });
    let mut g = task("g1");
    g.resources.gpus = 1;
    let g2 = TaskSpec {
        id: "g2".into(),
        ..g.clone()
    };
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(g)
            .task(g2)
            .task(task("c"))
            .build(),
    );
    assert_eq!(
        sim.task("j", "g2").pending_reason.as_deref(),
        Some("tenant quota: 1/1 gpus in use, task needs 1")
    );
    assert_eq!(sim.task("j", "c").phase, TaskPhase::Assigned);
}

#[test]
fn the_cpu_quota_counts_the_millicores_the_tenant_holds() {
    let mut sim = quota_sim(Quotas {
        max_cpu_millis: Some(1500),
        ..Quotas::default()
    });
    let mut small = task("small");
    small.resources.cpu_millis = 500;
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(task("a"))
            .task(task("b"))
            .task(small)
            .build(),
    );
    assert_eq!(
        sim.task("j", "b").pending_reason.as_deref(),
        Some("tenant quota: 1500m of 1500m cpu in use, task needs 1000m")
    );
    assert_eq!(
        sim.task("j", "small").phase,
        TaskPhase::Assigned,
        "1000m + 500m fits the 1500m quota"
    );
}

#[test]
fn jobs_over_the_running_jobs_quota_wait_in_the_queue_with_their_position() {
    let p = PolicySpec {
        quotas: Quotas {
            max_running_jobs: Some(1),
            ..Quotas::default()
        },
        ..policy("acme")
    };
    let mut sim = with_policy("q", p);
    sim.worker("w", caps(16_000, 16_384));
    sim.submit("first", JobBuilder::new("acme").chain(1).build());
    sim.submit("second", JobBuilder::new("acme").chain(1).build());
    sim.submit("third", JobBuilder::new("acme").chain(1).build());
    let st = sim.status("third");
    assert_eq!(
        (st.phase, st.reason.as_deref()),
        (JobPhase::Queued, Some("QuotaExceeded"))
    );
    assert_eq!(
        st.message.as_deref(),
        Some("tenant quota: 1/1 running jobs; position 2 in the tenant's queue")
    );
    sim.succeed("first", "s1");
    assert_eq!(sim.phase("second"), JobPhase::Scheduled);
    assert_eq!(
        sim.status("third").message.as_deref(),
        Some("tenant quota: 1/1 running jobs; position 1 in the tenant's queue")
    );
}

#[test]
fn a_policy_limits_placement_to_its_allowed_localities() {
    let p = PolicySpec {
        allowed_localities: vec!["eu-1".into()],
        ..policy("acme")
    };
    let mut sim = with_policy("eu-only", p);
    sim.worker(
        "us",
        Capabilities {
            locality: Some("us-1".into()),
            ..caps(8000, 8192)
        },
    );
    sim.submit("j", JobBuilder::new("acme").chain(1).build());
    assert_eq!(
        sim.task("j", "s1").pending_reason.as_deref(),
        Some("no suitable worker is in the tenant's allowed localities")
    );
    sim.worker(
        "eu",
        Capabilities {
            locality: Some("eu-1".into()),
            ..caps(8000, 8192)
        },
    );
    assert_eq!(&*sim.assigned("j", "s1").unwrap().worker, "eu");
}

fn route(
    priority: i32,
    m: RouteMatch,
    backend: Backend,
    endpoint: &str,
    default: bool,
) -> ModelRouteSpec {
    ModelRouteSpec {
        priority,
        matches: m,
        backend,
        endpoint: endpoint.into(),
        model: None,
        default,
    }
}

#[test]
fn inference_tasks_carry_the_backend_their_route_resolved_to() {
    let mut sim = Sim::new();
    sim.send(Event::RouteUpserted {
        name: "reasoning".into(),
        spec: route(
            10,
            RouteMatch {
                reasoning_required: Some(true),
                ..Default::default()
            },
            Backend::Vllm,
            "http://vllm:8000",
            false,
        ),
    });
    sim.send(Event::RouteUpserted {
        name: "local".into(),
        spec: route(
            0,
            RouteMatch::default(),
            Backend::Ollama,
            "http://ollama:11434",
            true,
        ),
    });
    sim.worker(
        "w",
        Capabilities {
            models: vec!["*".into()],
            ..caps(8000, 8192)
        },
    );
    let mut think = inference("think", "qwen");
    think.reasoning_required = true;
    sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(think)
            .task(inference("chat", "qwen"))
            .task(task("cmd"))
            .build(),
    );
    let r = sim.assigned("j", "think").unwrap().route.clone().unwrap();
    assert_eq!(
        (
            r.route.as_str(),
            r.backend,
            r.endpoint.as_str(),
            r.model.as_str()
        ),
        ("reasoning", Backend::Vllm, "http://vllm:8000", "qwen")
    );
    assert_eq!(
        sim.assigned("j", "chat")
            .unwrap()
            .route
            .as_ref()
            .unwrap()
            .backend,
        Backend::Ollama
    );
    assert_eq!(sim.assigned("j", "cmd").unwrap().route, None);
    assert_eq!(sim.task("j", "think").route.unwrap().backend, Backend::Vllm);
}

#[test]
fn an_inference_task_no_route_matches_fails_the_job_with_a_clear_reason() {
    let mut sim = Sim::new();
    sim.send(Event::RouteUpserted {
        name: "only-llama".into(),
        spec: route(
            0,
            RouteMatch {
                model: Some("llama-*".into()),
                ..Default::default()
            },
            Backend::Llamacpp,
            "http://l:8080",
            false,
        ),
    });
    let out = sim.submit(
        "j",
        JobBuilder::new("acme")
            .task(inference("x", "mistral"))
            .build(),
    );
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::JobPhaseChanged {
            to: JobPhase::Failed,
            reason: "NoModelRoute",
            ..
        }
    )));
    assert!(
        sim.status("j")
            .message
            .unwrap()
            .contains("task `x`: no SPLAIModelRoute matches model `mistral`")
    );
}
