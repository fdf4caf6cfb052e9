//! Carries out a [`Flush`]: the API writes and artifact writes the driver asked for.
//!
//! Statuses are written by server-side apply, so a field the operator stops setting (a pending
//! reason that no longer holds) goes away. Finalizers are edited with the object's
//! `resourceVersion` as a precondition and retried on 409 conflicts. Each job's writes run in
//! order (records, then status, then finalizer); different jobs' writes run concurrently.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::json;
use std::sync::Arc;

use crate::artifacts::Artifacts;
use crate::driver::{FINALIZER, Flush, Flushed, JobWrite, Note, TRACE_ANNOTATION, WorkerWrite};
use crate::metrics::Metrics;
use crate::resources::{SPLAIJob, SPLAIWorker, SPLAIWorkerSpec};
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
        if let Some(meta) = &w.meta {
            let (add, trace) = (meta.add_finalizer, meta.trace_id.clone());
            self.edit_meta(&api, name, |m| {
                if add {
                    let f = m.finalizers.get_or_insert_with(Vec::new);
                    if !f.iter().any(|x| x == FINALIZER) {
                        f.push(FINALIZER.to_owned());
                    }
                }
                if let Some(t) = &trace {
                    m.annotations
                        .get_or_insert_with(Default::default)
                        .insert(TRACE_ANNOTATION.to_owned(), t.clone());
                }
            })
            .await?;
        }
        if let Some((tasks, dependencies)) = &w.planned {
            let patch = json!({"spec": {"tasks": tasks, "dependencies": dependencies}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
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
            let body = json!({
                "apiVersion": "splai.io/v1alpha1",
                "kind": "SPLAIJob",
                "status": status,
            });
            api.patch_status(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
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
            self.edit_meta(&api, name, |m| {
                if let Some(f) = m.finalizers.as_mut() {
                    f.retain(|x| x != FINALIZER);
                }
            })
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

    async fn edit_meta(
        &self,
        api: &Api<SPLAIJob>,
        name: &str,
        edit: impl Fn(&mut kube::api::ObjectMeta),
    ) -> Result<(), WriteError> {
        for _ in 0..CONFLICT_RETRIES {
            let current = api.get(name).await?;
            let mut meta = current.metadata.clone();
            edit(&mut meta);
            if meta.finalizers == current.metadata.finalizers
                && meta.annotations == current.metadata.annotations
            {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "resourceVersion": current.metadata.resource_version,
                "finalizers": meta.finalizers.unwrap_or_default(),
                "annotations": meta.annotations.unwrap_or_default(),
            }});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
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
