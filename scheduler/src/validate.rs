//! Validation errors for jobs, written for the person who submitted the job.
//!
//! The admission webhook, the simulator and the CLI all print these same messages.

use std::fmt;

/// One thing wrong with a job. `field()` points at the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationIssue {
    #[error("spec.tenant is empty: every job must name the tenant that owns it")]
    MissingTenant,
    #[error(
        "the job has no tasks and no plan: add spec.tasks, or a spec.plan for the planner to expand"
    )]
    EmptyJob,
    #[error("the job has {count} tasks, over the limit of {limit}: split it into smaller jobs")]
    TooManyTasks { count: usize, limit: usize },
    #[error(
        "the job has {count} dependency edges, over the limit of {limit}: simplify the DAG or split the job"
    )]
    TooManyEdges { count: usize, limit: usize },
    #[error("task id `{id}` at tasks[{index}] is invalid: {why}")]
    InvalidTaskId {
        index: usize,
        id: String,
        why: &'static str,
    },
    #[error("task ids must be unique: `{id}` appears at tasks[{first}] and tasks[{index}]")]
    DuplicateTaskId {
        id: String,
        first: usize,
        index: usize,
    },
    #[error("dependencies[{index}] is for task `{task}`, which does not exist")]
    UnknownTask { index: usize, task: String },
    #[error("task `{task}` depends on `{missing}`, which does not exist")]
    UnknownDependency {
        index: usize,
        task: String,
        missing: String,
    },
    #[error("task `{task}` depends on itself: remove `{task}` from its dependsOn")]
    SelfDependency { index: usize, task: String },
    #[error("the dependencies form a cycle: {}; remove one of these edges", .path.join(" -> "))]
    Cycle { path: Vec<String> },
    #[error("task `{task}` has invalid resources: {why}")]
    InvalidResources { task: String, why: String },
    #[error("task `{task}` has an invalid timeout: {why}")]
    InvalidTaskTimeout { task: String, why: String },
    #[error("the job timeout is invalid: {why}")]
    InvalidJobTimeout { why: String },
    #[error("task `{task}` has an invalid retry policy: {why}")]
    InvalidRetry { task: String, why: String },
    #[error("task `{task}` is an inference task without a model: set tasks[].model")]
    InferenceWithoutModel { task: String },
    #[error("the plan is invalid: {why}")]
    InvalidPlan { why: String },
}

impl ValidationIssue {
    /// The JSON path of the field at fault, as Kubernetes reports field errors.
    pub fn field(&self) -> String {
        use ValidationIssue::*;
        match self {
            MissingTenant => "spec.tenant".into(),
            EmptyJob | TooManyTasks { .. } => "spec.tasks".into(),
            TooManyEdges { .. } | Cycle { .. } => "spec.dependencies".into(),
            InvalidTaskId { index, .. } | DuplicateTaskId { index, .. } => {
                format!("spec.tasks[{index}].id")
            }
            UnknownTask { index, .. } => format!("spec.dependencies[{index}].task"),
            UnknownDependency { index, .. } | SelfDependency { index, .. } => {
                format!("spec.dependencies[{index}].dependsOn")
            }
            InvalidResources { task, .. } => format!("spec.tasks[{task}].resources"),
            InvalidTaskTimeout { task, .. } => format!("spec.tasks[{task}].timeoutSeconds"),
            InvalidJobTimeout { .. } => "spec.timeoutSeconds".into(),
            InvalidRetry { task, .. } => format!("spec.tasks[{task}].retry"),
            InferenceWithoutModel { task } => format!("spec.tasks[{task}].model"),
            InvalidPlan { .. } => "spec.plan".into(),
        }
    }
}

/// Every problem found in a job, not only the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationIssue>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "the job has {} problems:", many.len())?;
                for (i, issue) in many.iter().enumerate() {
                    write!(f, " ({}) {issue};", i + 1)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationErrors {}
