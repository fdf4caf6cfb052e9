//! Admission: the decisions the admission webhook and the core share, and a fuzz run of the DAG
//! validator and the policy evaluator over arbitrary input.

use std::collections::BTreeMap;

use proptest::prelude::*;
use splai_scheduler::admission::{
    admit, peak_width, policy_for, quota_rejection, review_policy, review_route, wait_warnings,
};
use splai_scheduler::api::*;
use splai_scheduler::{Event, Limits, Scheduler, Settings, Strategy as Placement, Timestamp};

fn task(id: &str, cpu: u32) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        resources: Resources {
            cpu_millis: cpu,
            memory_mib: 64,
            gpus: 0,
        },
        ..TaskSpec::default()
    }
}

fn job(tasks: Vec<TaskSpec>, deps: &[(&str, &[&str])]) -> JobSpec {
    JobSpec {
        tenant: "acme".into(),
        tasks,
        dependencies: deps
            .iter()
            .map(|(t, on)| Dependency {
                task: (*t).into(),
                depends_on: on.iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect(),
        ..JobSpec::default()
    }
}

fn no_policies() -> BTreeMap<String, PolicySpec> {
    BTreeMap::new()
}

fn no_routes() -> BTreeMap<String, ModelRouteSpec> {
    BTreeMap::new()
}

#[test]
fn the_peak_width_is_the_widest_level_of_the_dag() {
    let limits = Limits::default();
    let chain = job(
        vec![task("a", 1), task("b", 1), task("c", 1)],
        &[("b", &["a"]), ("c", &["b"])],
    );
    let fan = job(
        vec![
            task("root", 1),
            task("x", 1),
            task("y", 1),
            task("z", 1),
            task("join", 1),
        ],
        &[
            ("x", &["root"]),
            ("y", &["root"]),
            ("z", &["root"]),
            ("join", &["x", "y", "z"]),
        ],
    );
    for (spec, width) in [(chain, 1), (fan, 3)] {
        let mut spec = spec;
        let admitted = admit(&mut spec, &no_policies(), &no_routes(), &limits).unwrap();
        assert_eq!(peak_width(&admitted.dag), width);
    }
}

#[test]
fn the_core_refuses_a_job_with_the_same_message_as_admission() {
    let cyclic = job(
        vec![task("a", 1), task("b", 1)],
        &[("a", &["b"]), ("b", &["a"])],
    );
    let refused = admit(
        &mut cyclic.clone(),
        &no_policies(),
        &no_routes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(refused.reason, "ValidationFailed");
    let mut core = Scheduler::new(Settings::default(), Placement::Splai, 1);
    core.handle(
        Event::JobSubmitted {
            key: "j".into(),
            spec: cyclic,
            trace_id: None,
        },
        Timestamp(1),
    );
    let status = core.job_status("j").unwrap();
    assert_eq!(status.phase, JobPhase::Failed);
    assert_eq!(status.reason.as_deref(), Some(refused.reason));
    assert_eq!(status.message, Some(refused.message));
}

#[test]
fn a_task_larger_than_the_tenants_quota_is_refused_and_a_wide_job_is_not() {
    let policies = BTreeMap::from([(
        "acme-quota".to_owned(),
        PolicySpec {
            tenant: "acme".into(),
            quotas: Quotas {
                max_cpu_millis: Some(4000),
                max_gpus: Some(1),
                max_running_tasks: Some(2),
                ..Quotas::default()
            },
            ..PolicySpec::default()
        },
    )]);
    let mut gpu = task("train", 1000);
    gpu.resources.gpus = 2;
    let big = job(vec![task("ok", 1000), task("huge", 8000), gpu], &[]);
    let policy = policy_for(&policies, &big).unwrap();
    let refused = quota_rejection(&big, policy).unwrap_err();
    assert_eq!(refused.reason, "QuotaExceeded");
    assert!(
        refused
            .message
            .contains("task `huge` needs 8000 cpu millis"),
        "{refused}"
    );
    assert!(
        refused.message.contains("maxCpuMillis of 4000"),
        "{refused}"
    );
    assert!(
        refused.message.contains("task `train` needs 2 gpus"),
        "{refused}"
    );
    // Ten tasks at once against maxRunningTasks 2: admitted, with a warning that it runs two at
    // a time.
    let wide = job((0..10).map(|i| task(&format!("t{i}"), 1000)).collect(), &[]);
    let policy = policy_for(&policies, &wide).unwrap();
    assert!(quota_rejection(&wide, policy).is_ok());
    let (name, p) = policy.unwrap();
    let warnings = wait_warnings(name, p, "acme", 10, None);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("the job runs 2 at a time"),
        "{warnings:?}"
    );
}

#[test]
fn a_policy_that_allows_and_denies_the_same_model_is_contradictory() {
    let policy = PolicySpec {
        tenant: "acme".into(),
        models: RuleSet {
            allow: vec!["llama-*".into(), "gpt-4".into()],
            deny: vec!["gpt-4".into()],
        },
        classifications: RuleSet {
            allow: vec!["pub*lic".into()],
            deny: vec![],
        },
        ..PolicySpec::default()
    };
    let issues = review_policy(&policy);
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert!(issues[0].contains("spec.models.allow[1] and spec.models.deny[0] are both `gpt-4`"));
    assert!(issues[1].contains("spec.classifications.allow[0] `pub*lic` is not a pattern"));
    assert!(
        review_policy(&PolicySpec {
            tenant: "acme".into(),
            ..PolicySpec::default()
        })
        .is_empty()
    );
}

fn route(priority: i32, endpoint: &str, default: bool) -> ModelRouteSpec {
    ModelRouteSpec {
        priority,
        matches: RouteMatch::default(),
        backend: Backend::Ollama,
        endpoint: endpoint.into(),
        model: None,
        default,
    }
}

#[test]
fn a_route_with_a_malformed_endpoint_or_a_taken_priority_is_refused() {
    let existing = route(10, "http://vllm:8000", true);
    let others = [("reasoning", &existing)];
    for bad in [
        "vllm:8000",
        "ftp://vllm",
        "http://",
        "http://vllm:99999",
        "http://user@vllm",
    ] {
        let issues = review_route("new", &route(5, bad, false), others);
        assert_eq!(issues.len(), 1, "{bad}: {issues:?}");
        assert!(
            issues[0].starts_with(&format!("spec.endpoint `{bad}`")),
            "{issues:?}"
        );
    }
    let issues = review_route(
        "new",
        &route(10, "https://api.example.com/v1", true),
        others,
    );
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert!(issues[0].contains("spec.priority 10 is already taken by route `reasoning`"));
    assert!(issues[1].contains("route `reasoning` is already the default"));
    // A route may be updated in place: it does not clash with itself.
    assert!(review_route("reasoning", &existing, others).is_empty());
    assert!(review_route("local", &route(1, "http://ollama:11434", false), others).is_empty());
}

/// Any spec at all: ids from a small alphabet (so duplicates and unknown references happen),
/// random edges (so cycles happen), random resources, models and classifications.
fn any_job() -> impl Strategy<Value = JobSpec> {
    let id = prop::sample::select(vec!["a", "b", "c", "d", "e", "A", "", "a.b", "x-1"]);
    let model = prop::option::of(prop::sample::select(vec!["llama-8b", "gpt-4", "", "*"]));
    let class = prop::option::of(prop::sample::select(vec!["public", "secret", ""]));
    let task = (id, model, class, 0u32..300_000, 0u32..100, any::<bool>()).prop_map(
        |(id, model, class, cpu, gpus, inference)| TaskSpec {
            id: id.into(),
            kind: if inference {
                TaskKind::Inference
            } else {
                TaskKind::Command
            },
            model: model.map(Into::into),
            classification: class.map(Into::into),
            resources: Resources {
                cpu_millis: cpu,
                memory_mib: 64,
                gpus,
            },
            ..TaskSpec::default()
        },
    );
    let dep = (
        prop::sample::select(vec!["a", "b", "c", "d", "z"]),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d", "z"]), 0..4),
    )
        .prop_map(|(t, on)| Dependency {
            task: t.into(),
            depends_on: on.into_iter().map(Into::into).collect(),
        });
    (
        prop::collection::vec(task, 0..8),
        prop::collection::vec(dep, 0..8),
        prop::option::of(prop::sample::select(vec!["acme-rules", "other", "missing"])),
    )
        .prop_map(|(tasks, dependencies, policy_ref)| JobSpec {
            tenant: "acme".into(),
            policy_ref: policy_ref.map(Into::into),
            tasks,
            dependencies,
            ..JobSpec::default()
        })
}

fn any_rules() -> impl Strategy<Value = RuleSet> {
    let pattern = prop::sample::select(vec!["llama-*", "gpt-4", "*", "", "p*b*", "secret", "pub*"]);
    (
        prop::collection::vec(pattern.clone(), 0..4),
        prop::collection::vec(pattern, 0..4),
    )
        .prop_map(|(allow, deny)| RuleSet {
            allow: allow.into_iter().map(Into::into).collect(),
            deny: deny.into_iter().map(Into::into).collect(),
        })
}

/// Executions per run of the fuzz target; `PROPTEST_CASES` overrides it.
const FUZZ_CASES: u32 = 20_000;

fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FUZZ_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    /// The fuzz target of the DAG validator and the policy evaluator: whatever the job and the
    /// policies, admission answers (admitted, or refused with a reason and a message) and never
    /// panics; an admitted job's DAG covers every task and has a width.
    #[test]
    fn admission_never_panics_and_always_explains_a_refusal(
        spec in any_job(),
        models in any_rules(),
        classes in any_rules(),
        max_cpu in prop::option::of(0u64..300_000),
    ) {
        let policies = BTreeMap::from([
            ("acme-rules".to_owned(), PolicySpec {
                tenant: "acme".into(),
                models,
                classifications: classes,
                quotas: Quotas { max_cpu_millis: max_cpu, ..Quotas::default() },
                ..PolicySpec::default()
            }),
            ("other".to_owned(), PolicySpec { tenant: "globex".into(), ..PolicySpec::default() }),
        ]);
        let _ = review_policy(&policies["acme-rules"]);
        let mut admitted_spec = spec.clone();
        match admit(&mut admitted_spec, &policies, &no_routes(), &Limits::default()) {
            Ok(a) => {
                prop_assert_eq!(a.dag.len(), admitted_spec.tasks.len());
                prop_assert!(peak_width(&a.dag) >= 1);
                let policy = policy_for(&policies, &admitted_spec).unwrap();
                if let Err(r) = quota_rejection(&admitted_spec, policy) {
                    prop_assert_eq!(r.reason, "QuotaExceeded");
                }
            }
            Err(r) => {
                prop_assert!(!r.message.is_empty());
                prop_assert!(["ValidationFailed", "PolicyDenied", "PolicyNotFound"].contains(&r.reason));
            }
        }
    }
}
