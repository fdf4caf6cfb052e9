//! The planner: expands `spec.plan` into `spec.tasks` and `spec.dependencies`.
//!
//! Expansion is deterministic: the same plan always gives the same ids in the same order.
//!
//! - `single`: one task, the template itself (id unchanged).
//! - `chain` with `count: n`: `<id>-1 -> <id>-2 -> ... -> <id>-n`, each step waiting for the one before.
//! - `map-reduce` with `count: n`: `<id>-1 ... <id>-n` run in parallel, then one reducer (the
//!   `reduce` template, or the template with id `reduce`) waits for all of them.

use crate::api::{Dependency, JobSpec, PlanKind, PlanSpec, TaskSpec};
use crate::validate::ValidationIssue;

/// Fills `tasks` and `dependencies` from `plan` when the job has no tasks. Returns whether it
/// changed the spec. A job that already has tasks is left as it is: its plan was expanded before.
pub fn expand_into(spec: &mut JobSpec, max_tasks: usize) -> Result<bool, ValidationIssue> {
    if !spec.tasks.is_empty() {
        return Ok(false);
    }
    let Some(plan) = &spec.plan else {
        return Ok(false);
    };
    let (tasks, dependencies) = expand(plan, max_tasks)?;
    spec.tasks = tasks;
    spec.dependencies = dependencies;
    Ok(true)
}

/// The tasks and dependencies a plan stands for.
pub fn expand(
    plan: &PlanSpec,
    max_tasks: usize,
) -> Result<(Vec<TaskSpec>, Vec<Dependency>), ValidationIssue> {
    let n = plan.count as usize;
    let invalid = |why: String| ValidationIssue::InvalidPlan { why };
    if plan.kind != PlanKind::Single && n == 0 {
        return Err(invalid("count must be at least 1".into()));
    }
    let generated = match plan.kind {
        PlanKind::Single => 1,
        PlanKind::Chain => n,
        PlanKind::MapReduce => n + 1,
    };
    if generated > max_tasks {
        return Err(invalid(format!(
            "it would generate {generated} tasks, over the limit of {max_tasks}"
        )));
    }
    let prefix = if plan.template.id.is_empty() {
        "step"
    } else {
        plan.template.id.as_str()
    };
    let step = |i: usize| TaskSpec {
        id: format!("{prefix}-{i}"),
        ..plan.template.clone()
    };
    Ok(match plan.kind {
        PlanKind::Single => {
            let mut only = plan.template.clone();
            if only.id.is_empty() {
                only.id = "main".into();
            }
            (vec![only], Vec::new())
        }
        PlanKind::Chain => {
            let tasks: Vec<TaskSpec> = (1..=n).map(step).collect();
            let deps = tasks
                .windows(2)
                .map(|w| Dependency {
                    task: w[1].id.clone(),
                    depends_on: vec![w[0].id.clone()],
                })
                .collect();
            (tasks, deps)
        }
        PlanKind::MapReduce => {
            let mut tasks: Vec<TaskSpec> = (1..=n).map(step).collect();
            let reduce = match &plan.reduce {
                Some(r) if !r.id.is_empty() => r.clone(),
                Some(r) => TaskSpec {
                    id: "reduce".into(),
                    ..r.clone()
                },
                None => TaskSpec {
                    id: "reduce".into(),
                    ..plan.template.clone()
                },
            };
            if tasks.iter().any(|t| t.id == reduce.id) {
                return Err(invalid(format!(
                    "the reducer's id `{}` clashes with a mapper's id",
                    reduce.id
                )));
            }
            let deps = vec![Dependency {
                task: reduce.id.clone(),
                depends_on: tasks.iter().map(|t| t.id.clone()).collect(),
            }];
            tasks.push(reduce);
            (tasks, deps)
        }
    })
}
