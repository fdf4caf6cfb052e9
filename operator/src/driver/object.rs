//! What the driver reads off a `SPLAIJob` object: its key and artifact folder, whether an
//! operator saw it before, whether it holds the finalizer, and its trace ID.

use splai_scheduler::hash::fnv1a;

use crate::artifacts::JobDir;
use crate::resources::SPLAIJob;

/// The finalizer that lets the operator stop a deleted job's tasks before the job goes away.
pub const FINALIZER: &str = "splai.io/stop-tasks";
/// The annotation that carries a job's W3C trace ID; set it at creation to join a caller's trace.
pub const TRACE_ANNOTATION: &str = "splai.io/trace-id";

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn job_dir(job: &SPLAIJob) -> JobDir {
    JobDir {
        namespace: job.metadata.namespace.clone().unwrap_or_default(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
    }
}

/// A job's key in the core, and where its artifacts go.
pub(super) fn key_and_dir(job: &SPLAIJob) -> (String, JobDir) {
    let dir = job_dir(job);
    (key_of(&dir.namespace, &dir.name), dir)
}

pub(super) fn has_finalizer(job: &SPLAIJob) -> bool {
    job.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Whether the job object was seen by an operator before (its status was written).
pub(super) fn was_seen(job: &SPLAIJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.job.submitted_at.is_some())
}

/// A job's trace ID: its annotation when the caller set one, else its uid, which is already 32
/// hex digits once the dashes are gone.
pub fn trace_id_of(job: &SPLAIJob) -> String {
    if let Some(t) = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRACE_ANNOTATION))
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return t.to_ascii_lowercase();
    }
    let hex: String = job
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 32 && hex.bytes().any(|b| b != b'0') {
        hex
    } else {
        // An object without a proper uid (never from a real API server): a stable stand-in.
        let (key, _) = key_and_dir(job);
        format!(
            "{:016x}{:016x}",
            fnv1a(key.as_bytes()),
            fnv1a(format!("{key}/trace").as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::test_support::job;

    #[test]
    fn a_job_without_a_caller_trace_id_takes_its_uid_as_the_trace_id() {
        let j = job(5);
        assert_eq!(trace_id_of(&j), "0f2504e04f8911d39a0c000000000005");
        let mut annotated = job(6);
        annotated.metadata.annotations = Some(
            [(TRACE_ANNOTATION.to_owned(), "AB".repeat(16))]
                .into_iter()
                .collect(),
        );
        assert_eq!(trace_id_of(&annotated), "ab".repeat(16));
    }
}
