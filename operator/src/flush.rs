//! Carries out a [`Flush`]: the API writes and artifact writes the driver asked for.
//!
//! A job's status is written whole, by a JSON patch that replaces `.status`, so a field the
//! operator stops setting (a pending reason that no longer holds) goes away. Server-side apply
//! would do the same but costs the API server 0.5 to 2 CPU-ms more per write (it parses the body
//! as YAML and tracks ownership field by field; BENCHMARKS.md, issue 19), and the operator is the
//! status's only writer. Workers' statuses, written far less often, keep server-side apply.
//! Finalizers are edited with the object's `resourceVersion` as a precondition (the one the watch
//! showed, so a new job's finalizer costs no read) and retried on 409 conflicts. Each job's
//! writes run in order (its finalizer, planned tasks, records, status, then the finalizer's
//! removal); different jobs' writes run concurrently.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::json;
use std::sync::Arc;

use crate::artifacts::Artifacts;
use crate::driver::{FINALIZER, Flush, Flushed, JobWrite, Note, SeenMeta, WorkerWrite};
use crate::metrics::Metrics;
use crate::resources::{SPLAIJob, SPLAIJobStatus, SPLAIWorker, SPLAIWorkerSpec};
use crate::view::{self, RESULTS_SHOWN};

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "splai-operator";
const CONCURRENCY: usize = 32;
const CONFLICT_RETRIES: usize = 8;

#[derive(Clone)]
pub struct Flusher {
    pub client: Client,
    pub artifacts: Artifacts,
    /// Who the Events name as their source.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Artifact(#[from] crate::artifacts::ArtifactError),
    #[error("encoding a status: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("gave up after {CONFLICT_RETRIES} conflicting updates")]
    Conflicts,
}

fn is_not_found(e: &WriteError) -> bool {
    matches!(e, WriteError::Api(kube::Error::Api(s)) if s.code == 404)
}

/// The API server refused the write for what it says (400 Bad Request, 422 Invalid, such as an
/// admission policy's denial): the same write would be refused again.
fn is_refused(e: &WriteError) -> bool {
    matches!(e, WriteError::Api(kube::Error::Api(s)) if matches!(s.code, 400 | 422))
}

/// A merge or JSON patch in the operator's name (its `managedFields` entry).
fn update_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// The JSON patch that sets a job's whole status (`add` replaces a member that exists).
fn replace_status(status: &SPLAIJobStatus) -> Result<Patch<()>, serde_json::Error> {
    let ops = json!([{"op": "add", "path": "/status", "value": status}]);
    Ok(Patch::Json(serde_json::from_value(ops)?))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Flusher {
    pub async fn run(&self, flush: Flush) -> Flushed {
        // A recorder per flush: kube's keeps every Event it sent for six minutes to fold repeats
        // into a series, which costs megabytes at thousands of jobs, and the operator's Events
        // do not repeat (one per transition).
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let recorder = &recorder;
        let mut done = Flushed {
            acks: flush.acks,
            ..Flushed::default()
        };
        let jobs = futures::stream::iter(flush.jobs.into_iter().map(|w| async move {
            let result = self.job(&w, recorder).await;
            (w, result)
        }))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>();
        let workers = futures::stream::iter(flush.workers.into_iter().map(|w| async move {
            let result = self.worker(&w, recorder).await;
            (w, result)
        }))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>();
        let (jobs, workers) = futures::join!(jobs, workers);
        for (w, result) in jobs {
            match result {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => done.gone_jobs.push(w.key),
                Err(e) => {
                    tracing::warn!(job = %w.key, error = %e, "writing a job failed; retrying");
                    done.failed_jobs.push(w);
                }
            }
        }
        for (w, result) in workers {
            match result {
                Ok(()) => {}
                // A worker's status is written again at its next change: a refused one is not
                // sent again and again, and a deleted worker's watch event removes it.
                Err(e) if is_refused(&e) || is_not_found(&e) => {
                    tracing::error!(worker = %w.name, error = %e, "the API server refused a worker's status; not retried");
                    self.count_refused("worker");
                }
                Err(e) => {
                    tracing::warn!(worker = %w.name, error = %e, "writing a worker failed; retrying");
                    done.failed_workers.push(w);
                }
            }
        }
        done
    }

    fn count_refused(&self, controller: &'static str) {
        self.metrics
            .writes_refused
            .get_or_create(&[("controller", controller)])
            .inc();
    }

    fn count(&self, kind: &'static str) {
        self.metrics
            .api_writes
            .get_or_create(&[("kind", kind)])
            .inc();
    }

    async fn job(&self, w: &JobWrite, recorder: &Recorder) -> Result<(), WriteError> {
        let api: Api<SPLAIJob> = Api::namespaced(self.client.clone(), &w.dir.namespace);
        let name = &w.dir.name;
        if let Some(add) = &w.finalizer {
            self.edit_finalizers(&api, name, add.seen.clone(), |f| {
                if !f.iter().any(|x| x == FINALIZER) {
                    f.push(FINALIZER.to_owned());
                }
            })
            .await?;
        }
        if let Some((tasks, dependencies)) = &w.planned {
            let patch = json!({"spec": {"tasks": tasks, "dependencies": dependencies}});
            api.patch(name, &update_params(), &Patch::Merge(&patch))
                .await?;
            self.count("job_spec");
        }
        if let Some((seq, records)) = &w.chunk {
            self.artifacts.put_chunk(&w.dir, *seq, records).await?;
        }
        if let Some(status) = &w.status {
            let mut status = status.clone();
            if w.finish {
                let (uri, attempts) = self.artifacts.gather(&w.dir).await?;
                view::finished(&mut status, &attempts, name);
                status.records_uri = Some(uri);
            }
            if w.finish && !status.job.result_artifacts.is_empty() {
                // Several results: a manifest lists them all, so the job has one result URI.
                let results = &status.job.result_artifacts;
                status.job.result_artifact_uri =
                    Some(self.artifacts.put_results(&w.dir, results).await?);
                if results.len() > RESULTS_SHOWN {
                    status.job.result_artifacts.clear();
                }
            }
            api.patch_status(name, &update_params(), &replace_status(&status)?)
                .await?;
            self.count("job_status");
            if w.finish
                && let Err(e) = self.artifacts.drop_chunks(&w.dir).await
            {
                // Leftover chunks waste space but change nothing: the status points at the file.
                tracing::warn!(job = %w.key, error = %e, "deleting record chunks failed");
            }
        }
        if w.remove_finalizer {
            self.edit_finalizers(&api, name, None, |f| f.retain(|x| x != FINALIZER))
                .await?;
        }
        if !w.notes.is_empty() {
            let reference = ObjectReference {
                api_version: Some("splai.io/v1alpha1".into()),
                kind: Some("SPLAIJob".into()),
                name: Some(name.clone()),
                namespace: Some(w.dir.namespace.clone()),
                uid: Some(w.dir.uid.clone()).filter(|u| !u.is_empty()),
                ..ObjectReference::default()
            };
            self.publish(recorder, &w.notes, &reference).await;
        }
        Ok(())
    }

    /// Edits a job's finalizers by a merge patch on a `resourceVersion`: the one `seen` gives,
    /// else one read first. A conflict (the object changed in between) reads it again.
    async fn edit_finalizers(
        &self,
        api: &Api<SPLAIJob>,
        name: &str,
        mut seen: Option<SeenMeta>,
        edit: impl Fn(&mut Vec<String>),
    ) -> Result<(), WriteError> {
        for _ in 0..CONFLICT_RETRIES {
            let current = match seen.take() {
                Some(s) => s,
                None => {
                    let meta = api.get(name).await?.metadata;
                    SeenMeta {
                        resource_version: meta.resource_version.unwrap_or_default(),
                        finalizers: meta.finalizers.unwrap_or_default(),
                    }
                }
            };
            let mut finalizers = current.finalizers.clone();
            edit(&mut finalizers);
            if finalizers == current.finalizers {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "resourceVersion": current.resource_version,
                "finalizers": finalizers,
            }});
            match api
                .patch(name, &update_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.count("job_meta");
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(WriteError::Conflicts)
    }

    async fn worker(&self, w: &WorkerWrite, recorder: &Recorder) -> Result<(), WriteError> {
        let api: Api<SPLAIWorker> = Api::namespaced(self.client.clone(), &w.namespace);
        if let Some(caps) = &w.create {
            let mut obj = SPLAIWorker::new(
                &w.name,
                SPLAIWorkerSpec(splai_scheduler::api::WorkerSpec {
                    capabilities: caps.clone(),
                }),
            );
            obj.meta_mut().namespace = Some(w.namespace.clone());
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => self.count("worker_create"),
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(status) = &w.status {
            let body = json!({
                "apiVersion": "splai.io/v1alpha1",
                "kind": "SPLAIWorker",
                "status": status,
            });
            api.patch_status(
                &w.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
            self.count("worker_status");
        }
        if !w.notes.is_empty() {
            let reference = ObjectReference {
                api_version: Some("splai.io/v1alpha1".into()),
                kind: Some("SPLAIWorker".into()),
                name: Some(w.name.clone()),
                namespace: Some(w.namespace.clone()),
                ..ObjectReference::default()
            };
            self.publish(recorder, &w.notes, &reference).await;
        }
        Ok(())
    }

    /// Events are best effort: a failure is logged, never retried.
    async fn publish(&self, recorder: &Recorder, notes: &[Note], reference: &ObjectReference) {
        for n in notes {
            let event = KEvent {
                type_: if n.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: n.reason.clone(),
                note: Some(n.message.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            match recorder.publish(&event, reference).await {
                Ok(()) => self.count("event"),
                Err(e) => tracing::debug!(error = %e, "publishing an event failed"),
            }
        }
    }
}
