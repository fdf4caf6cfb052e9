//! What the agent does with an assignment: a `command` task runs in the [`sandbox`]; an
//! `inference` task calls the backend its route resolved to ([`crate::inference`]). What a task
//! leaves (output, logs, the model's answer) goes to the artifact store under
//! `jobs/<job>/<task>/<attempt>/`, whose URI the success report carries.
//!
//! The models this worker has served recently are its warm models, reported with each heartbeat
//! so that the core's `model_warm_cache` term favours it for them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use splai_protocol::{Executor, Outcome, TaskAssignment};
use splai_scheduler::api::TaskKind;
use tracing::Instrument;

use crate::sandbox::{self, Attempt, Exit, SandboxConfig};

/// Why an artifact store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "artifact store `{url}` is not a URL ({reason}); use file:///path or s3://bucket/prefix"
    )]
    NotAUrl { url: String, reason: String },
    #[error("creating the artifact folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("artifact store `{url}`: {reason}")]
    Open { url: String, reason: String },
}

/// Where artifacts go: a store and the URL its root has.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    url: String,
}

impl ArtifactStore {
    /// `file:///path` (created if missing) or `s3://bucket/prefix`, configured by the standard
    /// `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP` for a plain-HTTP endpoint, ...).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        // Only `AWS_*`: object_store also takes bare keys such as `TOKEN` or `ENDPOINT`, which
        // an unrelated variable of the pod could carry.
        Self::open_with(url, std::env::vars().filter(|(k, _)| k.starts_with("AWS_")))
    }

    /// [`ArtifactStore::open`] with the store's settings given, under the same names as the
    /// variables (`AWS_ENDPOINT_URL`, ...), instead of read from the environment.
    pub fn open_with(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StoreError> {
        let parsed = url::Url::parse(url).map_err(|e| StoreError::NotAUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if parsed.scheme() == "file" {
            std::fs::create_dir_all(parsed.path()).map_err(|source| StoreError::Folder {
                path: parsed.path().to_owned(),
                source,
            })?;
        } else {
            // object_store's HTTP client is built without a bundled TLS provider; it takes rustls'
            // process default, which is ring here as in the rest of the agent. Already set is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (store, root) =
            object_store::parse_url_opts(&parsed, options).map_err(|e| StoreError::Open {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(ArtifactStore {
            store: store.into(),
            root,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    fn path(&self, rel: &str) -> StorePath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    async fn put(&self, rel: &str, bytes: Vec<u8>) -> object_store::Result<()> {
        self.store
            .put(&self.path(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
    }

    pub fn uri(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }
}

pub struct WorkerExecutor {
    pub sandbox: SandboxConfig,
    pub artifacts: ArtifactStore,
    pub inference: crate::inference::Client,
    /// Models used most recently first, at most `warm_slots`.
    pub warm: std::sync::Mutex<Vec<String>>,
    pub warm_slots: usize,
}

impl WorkerExecutor {
    pub fn new(
        sandbox: SandboxConfig,
        artifacts: ArtifactStore,
        inference: crate::inference::Client,
        warm_models: Vec<String>,
        warm_slots: usize,
    ) -> Self {
        WorkerExecutor {
            sandbox,
            artifacts,
            inference,
            warm: std::sync::Mutex::new(warm_models),
            warm_slots: warm_slots.max(1),
        }
    }

    fn used(&self, model: &str) {
        let mut warm = self
            .warm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        warm.retain(|m| m != model);
        warm.insert(0, model.to_owned());
        warm.truncate(self.warm_slots);
    }

    async fn inference(&self, task: &TaskAssignment) -> Outcome {
        let Some(route) = &task.route else {
            return Outcome::Failed {
                error: "the inference task has no route: create a SPLAIModelRoute that matches it"
                    .into(),
                retryable: false,
            };
        };
        let prompt = task
            .task_spec
            .as_ref()
            .and_then(|s| s.input.clone())
            .unwrap_or_default();
        match self.inference.call(route, &prompt).await {
            Ok(answer) => {
                self.used(&route.model);
                let prefix = format!("jobs/{}/{}/{}", task.job, task.task, task.attempt);
                let raw = serde_json::to_vec_pretty(&answer.raw).unwrap_or_default();
                for (rel, bytes) in [
                    (format!("{prefix}/response.txt"), answer.text.into_bytes()),
                    (format!("{prefix}/response.json"), raw),
                ] {
                    if let Err(e) = self.artifacts.put(&rel, bytes).await {
                        return Outcome::Failed {
                            error: format!("storing artifact {rel}: {e}"),
                            retryable: true,
                        };
                    }
                }
                Outcome::Succeeded {
                    artifact_uri: Some(self.artifacts.uri(&format!("{prefix}/"))),
                }
            }
            Err(e) => Outcome::Failed {
                retryable: e.retryable(),
                error: e.to_string(),
            },
        }
    }
}

/// The files a task left in its folder, relative to it (not `tmp/`), at most `limit`.
fn outputs(dir: &Path, limit: usize) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() && rel != Path::new("tmp") {
                stack.push(path);
            } else if kind.is_file() && found.len() < limit {
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

impl WorkerExecutor {
    async fn command(&self, task: &TaskAssignment) -> Outcome {
        let Some(spec) = &task.task_spec else {
            return Outcome::Failed {
                error: "the assignment carries no task spec; update the operator".into(),
                retryable: false,
            };
        };
        let env = vec![
            ("SPLAI_JOB".to_owned(), task.job.clone()),
            ("SPLAI_TASK".to_owned(), task.task.clone()),
            ("SPLAI_ATTEMPT".to_owned(), task.attempt.to_string()),
            ("TRACEPARENT".to_owned(), task.traceparent.clone()),
        ];
        let attempt = Attempt {
            job: &task.job,
            task: &task.task,
            attempt: task.attempt,
            argv: &spec.command,
            env: &env,
            // The core enforces the timeout too; this is the agent's own backstop.
            timeout: spec.timeout_seconds.map(Duration::from_secs),
        };
        let done = match sandbox::run(&self.sandbox, &attempt).await {
            Ok(done) => done,
            Err(e) => {
                let retryable = matches!(e, sandbox::SandboxError::Spawn { .. });
                return Outcome::Failed {
                    error: e.to_string(),
                    retryable,
                };
            }
        };
        let prefix = format!("jobs/{}/{}/{}", task.job, task.task, task.attempt);
        let mut uploads = vec![
            (format!("{prefix}/stdout.log"), done.stdout.clone()),
            (format!("{prefix}/stderr.log"), done.stderr.clone()),
        ];
        for rel in outputs(&done.workdir, 1000) {
            if let Ok(bytes) = std::fs::read(done.workdir.join(&rel)) {
                uploads.push((format!("{prefix}/out/{rel}"), bytes));
            }
        }
        for (rel, bytes) in uploads {
            if let Err(e) = self.artifacts.put(&rel, bytes).await {
                return Outcome::Failed {
                    error: format!("storing artifact {rel}: {e}"),
                    retryable: true,
                };
            }
        }
        let _ = std::fs::remove_dir_all(&done.workdir);
        let last_err = String::from_utf8_lossy(&done.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect::<String>();
        match done.exit {
            Exit::Code(0) => Outcome::Succeeded {
                artifact_uri: Some(self.artifacts.uri(&format!("{prefix}/"))),
            },
            Exit::Code(code) => Outcome::Failed {
                error: format!("exit code {code}: {last_err}"),
                retryable: true,
            },
            Exit::Signal(sig) => Outcome::Failed {
                error: format!("killed by signal {sig} (a limit, or the OOM killer): {last_err}"),
                retryable: true,
            },
            Exit::TimedOut => Outcome::Failed {
                error: "ran past its timeout; the process group was killed".into(),
                retryable: true,
            },
        }
    }
}

impl Executor for WorkerExecutor {
    async fn run(&self, task: TaskAssignment) -> Outcome {
        // The execution joins its job's trace: the assignment's traceparent is its parent.
        let span = tracing::info_span!(
            "task.execute",
            job = %task.job,
            task = %task.task,
            attempt = task.attempt,
            outcome = tracing::field::Empty,
        );
        splai_telemetry::join_trace(&span, &task.traceparent);
        let outcome = async {
            match task.task_spec.as_ref().map(|s| s.kind) {
                Some(TaskKind::Inference) => self.inference(&task).await,
                _ => self.command(&task).await,
            }
        }
        .instrument(span.clone())
        .await;
        let label = match &outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
        };
        span.record("outcome", label);
        outcome
    }

    fn load(&self) -> splai_protocol::Load {
        splai_protocol::Load {
            warm_models: self
                .warm
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            ..splai_protocol::Load::default()
        }
    }
}
