//! The gateway's HTTP API types, shared by the server and the `splai` client.

use serde::{Deserialize, Serialize};
use splai_operator::{SPLAIJob, SPLAIJobStatus};
use splai_scheduler::api::{JobSpec, TaskArtifact};

/// `GET /v1/jobs/{name}/records`: each attempt of the job's tasks, with the decision that placed
/// it (one line of the job's `records.jsonl`).
pub use splai_operator::artifacts::{AttemptRecord, Decision};

/// `POST /v1/jobs`, as JSON or YAML. The tenant comes from the token: a `spec.tenant` that names
/// another tenant is refused, an empty one is filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitRequest {
    /// The job's name: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
    pub spec: JobSpec,
}

/// A job as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub name: String,
    pub tenant: String,
    /// The job's W3C trace ID: the caller's, or the one the operator derives from the job's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SPLAIJobStatus>,
}

impl From<&SPLAIJob> for JobView {
    fn from(job: &SPLAIJob) -> Self {
        JobView {
            name: job.metadata.name.clone().unwrap_or_default(),
            tenant: job.spec.0.tenant.clone(),
            // What the operator annotates the job with, worked out the same way, so it is known
            // from the moment the job is created.
            trace_id: job
                .metadata
                .uid
                .is_some()
                .then(|| splai_operator::driver::trace_id_of(job)),
            status: job.status.clone(),
        }
    }
}

impl JobView {
    /// The job has ended and its records are written.
    pub fn finished(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.job.phase.is_terminal() && s.records_uri.is_some())
    }
}

/// `GET /v1/jobs/{name}/artifacts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifacts {
    /// The job's result: its one sink's output, or a manifest of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskArtifact>,
    /// Every attempt, as JSON lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
}

/// The message for a job name already taken in the namespace. `own` says whether the job
/// there is the caller's, which only then may delete it.
pub fn name_taken(name: &str, namespace: &str, own: bool, deleting: bool) -> String {
    if deleting {
        format!(
            "job `{name}` in namespace `{namespace}` is still being deleted (its running tasks are \
             being stopped); submit again in a moment, or change metadata.name"
        )
    } else if own {
        format!(
            "job `{name}` already exists in namespace `{namespace}`; delete it with \
             `splai delete {name}` or change metadata.name"
        )
    } else {
        format!(
            "the name `{name}` is taken in namespace `{namespace}` by a job you cannot see; \
             change metadata.name"
        )
    }
}

/// Every error, in one shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable and machine-readable, such as `unauthorized` or `not_found`.
    pub code: String,
    pub message: String,
}
