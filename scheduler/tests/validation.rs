mod common;

use common::*;
use splai_scheduler::api::*;
use splai_scheduler::dag::validate;
use splai_scheduler::plan::expand;
use splai_scheduler::{Limits, ValidationIssue};

fn issues(spec: &JobSpec) -> Vec<ValidationIssue> {
    validate(spec, &Limits::default())
        .expect_err("the job is invalid")
        .0
}

#[test]
fn a_valid_chain_gets_a_topological_order() {
    let dag = validate(
        &JobBuilder::new("acme").chain(4).build(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(dag.topological_order(), &[0, 1, 2, 3]);
    assert_eq!(dag.parents(2), &[1]);
    assert_eq!(dag.sinks().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn rejects_duplicate_task_ids_naming_both_positions() {
    let spec = JobBuilder::new("acme")
        .task(task("a"))
        .task(task("b"))
        .task(task("a"))
        .build();
    let found = issues(&spec);
    assert_eq!(
        found,
        vec![ValidationIssue::DuplicateTaskId {
            id: "a".into(),
            first: 0,
            index: 2
        }]
    );
    assert_eq!(
        found[0].to_string(),
        "task ids must be unique: `a` appears at tasks[0] and tasks[2]"
    );
    assert_eq!(found[0].field(), "spec.tasks[2].id");
}

#[test]
fn rejects_unknown_dependencies_and_unknown_dependents() {
    let spec = JobBuilder::new("acme")
        .task(task("a"))
        .dep("a", &["ghost"])
        .dep("nobody", &["a"])
        .build();
    let found = issues(&spec);
    assert!(found.contains(&ValidationIssue::UnknownDependency {
        index: 0,
        task: "a".into(),
        missing: "ghost".into()
    }));
    assert!(found.contains(&ValidationIssue::UnknownTask {
        index: 1,
        task: "nobody".into()
    }));
    assert!(
        found
            .iter()
            .any(|i| i.to_string() == "task `a` depends on `ghost`, which does not exist")
    );
}

#[test]
fn rejects_a_task_that_depends_on_itself() {
    let found = issues(
        &JobBuilder::new("acme")
            .task(task("a"))
            .dep("a", &["a"])
            .build(),
    );
    assert_eq!(
        found,
        vec![ValidationIssue::SelfDependency {
            index: 0,
            task: "a".into()
        }]
    );
}

#[test]
fn rejects_a_cycle_and_names_its_path() {
    let spec = JobBuilder::new("acme")
        .task(task("a"))
        .task(task("b"))
        .task(task("c"))
        .task(task("d"))
        .dep("b", &["a"])
        .dep("c", &["b"])
        .dep("a", &["c"])
        .dep("d", &["a"])
        .build();
    let found = issues(&spec);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].to_string(),
        "the dependencies form a cycle: a -> b -> c -> a; remove one of these edges"
    );
}

#[test]
fn reports_each_separate_cycle() {
    let spec = JobBuilder::new("acme")
        .task(task("a"))
        .task(task("b"))
        .task(task("x"))
        .task(task("y"))
        .dep("a", &["b"])
        .dep("b", &["a"])
        .dep("x", &["y"])
        .dep("y", &["x"])
        .build();
    let paths: Vec<Vec<String>> = issues(&spec)
        .into_iter()
        .map(|i| match i {
            ValidationIssue::Cycle { path } => path,
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(paths, vec![vec!["a", "b", "a"], vec!["x", "y", "x"]]);
}

#[test]
fn rejects_an_empty_job_and_a_missing_tenant_together() {
    let found = issues(&JobSpec::default());
    assert_eq!(
        found,
        vec![ValidationIssue::MissingTenant, ValidationIssue::EmptyJob]
    );
}

#[test]
fn rejects_a_job_over_the_task_and_edge_limits() {
    let limits = Limits {
        max_tasks_per_job: 3,
        max_edges_per_job: 1,
        ..Limits::default()
    };
    let spec = JobBuilder::new("acme").chain(4).build();
    let found = validate(&spec, &limits).unwrap_err().0;
    assert!(found.contains(&ValidationIssue::TooManyTasks { count: 4, limit: 3 }));
    assert!(found.contains(&ValidationIssue::TooManyEdges { count: 3, limit: 1 }));
}

#[test]
fn rejects_invalid_resources_timeouts_and_retry_policies() {
    let mut bad = task("bad");
    bad.resources.cpu_millis = 0;
    bad.resources.gpus = 1000;
    bad.timeout_seconds = Some(0);
    bad.retry.backoff_factor = 0.5;
    let mut spec = JobBuilder::new("acme")
        .task(bad)
        .task(TaskSpec {
            model: None,
            ..inference("llm", "x")
        })
        .build();
    spec.timeout_seconds = Some(0);
    let found = issues(&spec);
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 5, "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains("cpuMillis 0 is outside")
            && t.contains("gpus 1000 is over the limit of 64"))
    );
    assert!(
        text.iter()
            .any(|t| t.contains("task `bad` has an invalid timeout"))
    );
    assert!(
        text.iter()
            .any(|t| t.contains("backoffFactor 0.5 must be a number of at least 1"))
    );
    assert!(
        text.iter()
            .any(|t| t.contains("`llm` is an inference task without a model"))
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("the job timeout is invalid"))
    );
}

#[test]
fn reports_every_problem_at_once_in_one_message() {
    let spec = JobBuilder::new("")
        .task(task("a"))
        .task(task("a"))
        .task(task("B!"))
        .dep("a", &["zz"])
        .build();
    let err = validate(&spec, &Limits::default()).unwrap_err();
    assert_eq!(err.0.len(), 4);
    let msg = err.to_string();
    assert!(
        msg.starts_with("the job has 4 problems: (1) spec.tenant is empty"),
        "{msg}"
    );
    assert!(msg.contains("use only lowercase letters"), "{msg}");
}

#[test]
fn the_planner_expands_a_chain_deterministically() {
    let plan = PlanSpec {
        kind: PlanKind::Chain,
        count: 3,
        template: task("step"),
        reduce: None,
    };
    let (tasks, deps) = expand(&plan, 100).unwrap();
    let ids: Vec<_> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["step-1", "step-2", "step-3"]);
    assert_eq!(
        deps[1],
        Dependency {
            task: "step-3".into(),
            depends_on: vec!["step-2".into()]
        }
    );
    assert_eq!(
        expand(&plan, 100).unwrap(),
        (tasks, deps),
        "same plan, same expansion"
    );
}

#[test]
fn the_planner_expands_map_reduce_with_a_reducer_waiting_for_every_mapper() {
    let plan = PlanSpec {
        kind: PlanKind::MapReduce,
        count: 4,
        template: inference("map", "llama"),
        reduce: None,
    };
    let (tasks, deps) = expand(&plan, 100).unwrap();
    assert_eq!(tasks.len(), 5);
    assert_eq!(tasks[4].id, "reduce");
    assert_eq!(
        deps,
        vec![Dependency {
            task: "reduce".into(),
            depends_on: (1..=4).map(|i| format!("map-{i}")).collect()
        }]
    );
    let spec = JobSpec {
        tenant: "acme".into(),
        tasks,
        dependencies: deps,
        ..JobSpec::default()
    };
    let dag = validate(&spec, &Limits::default()).unwrap();
    assert_eq!(dag.peak_width(|_| 1), 4, "four mappers can run at once");
}

#[test]
fn the_planner_keeps_a_single_task_and_refuses_plans_over_the_limit() {
    let single = PlanSpec {
        kind: PlanKind::Single,
        count: 1,
        template: task("only"),
        reduce: None,
    };
    assert_eq!(expand(&single, 10).unwrap().0[0].id, "only");
    let huge = PlanSpec {
        kind: PlanKind::Chain,
        count: 50,
        template: task("s"),
        reduce: None,
    };
    let err = expand(&huge, 10).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the plan is invalid: it would generate 50 tasks, over the limit of 10"
    );
}

#[test]
fn specs_use_camel_case_and_reject_unknown_fields() {
    let yaml_like = serde_json::json!({
        "tenant": "acme",
        "priority": 5,
        "tasks": [{"id": "a", "kind": "inference", "model": "llama", "resources": {"cpuMillis": 500, "memoryMib": 256},
                   "interactionClass": "interactive", "reasoningRequired": true, "expectedDurationMs": 1200}],
        "timeoutSeconds": 60
    });
    let spec: JobSpec = serde_json::from_value(yaml_like).unwrap();
    assert_eq!(spec.tasks[0].resources.cpu_millis, 500);
    assert!(spec.tasks[0].reasoning_required);
    let typo = serde_json::json!({"tenant": "acme", "taks": []});
    let err = serde_json::from_value::<JobSpec>(typo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `taks`"), "{err}");
}
