//! What the operator keeps outside the API server: each job's execution records, as JSON lines,
//! and the manifest of a job's results when there are too many to list in its status.
//!
//! Records are written while the job runs as numbered chunks, before the status that reflects
//! them, so a restart finds every committed attempt. When the job ends the chunks become one
//! `records.jsonl`, one line per attempt.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use splai_scheduler::api::{ExecutionRecord, TaskArtifact};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "artifact store `{url}` is not a URL the operator can use ({reason}); give a URL such as file:///var/lib/splai/artifacts or s3://bucket/prefix"
    )]
    BadUrl { url: String, reason: String },
    #[error("artifact store: {0}")]
    Store(#[from] object_store::Error),
    #[error("artifact `{path}` holds a line that is not an execution record: {reason}")]
    BadRecord { path: String, reason: String },
}

/// A job's place in the store: `jobs/<namespace>/<name>/`. Chunks carry the job's uid, so a job
/// deleted and created again under the same name never reads the old one's records.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobDir {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl JobDir {
    fn base(&self) -> String {
        format!("jobs/{}/{}", self.namespace, self.name)
    }

    fn chunks(&self) -> String {
        format!("{}/.records-{}", self.base(), self.uid)
    }
}

#[derive(Clone, Debug)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

impl Artifacts {
    /// Opens a store by URL: `file:///path`, or `s3://bucket/prefix` configured by the standard
    /// `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, keys, `AWS_ALLOW_HTTP`, ...).
    pub fn open(url: &str) -> Result<Self, ArtifactError> {
        // Only `AWS_*`: object_store also takes bare keys such as `TOKEN` or `ENDPOINT`, which
        // an unrelated variable of the pod could carry.
        Self::open_with(url, std::env::vars().filter(|(k, _)| k.starts_with("AWS_")))
    }

    /// [`Artifacts::open`] with the store's settings given, under the same names as the
    /// variables (`AWS_ENDPOINT_URL`, ...), instead of read from the environment.
    pub fn open_with(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ArtifactError> {
        let bad = |reason: String| ArtifactError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if parsed.scheme() != "file" {
            // object_store's HTTP client has no bundled TLS provider and takes rustls' process
            // default: ring, as kube uses. Already set is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (store, root) =
            object_store::parse_url_opts(&parsed, options).map_err(|e| bad(e.to_string()))?;
        if parsed.scheme() == "file" {
            std::fs::create_dir_all(parsed.path()).map_err(|e| bad(e.to_string()))?;
        }
        Ok(Artifacts {
            store: store.into(),
            root,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    fn path(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in rel.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    /// The URI of a path under the store's root.
    pub fn uri(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// Writes one chunk of a running job's records.
    pub async fn put_chunk(
        &self,
        job: &JobDir,
        seq: u64,
        records: &[ExecutionRecord],
    ) -> Result<(), ArtifactError> {
        let path = self.path(&format!("{}/{seq:010}.jsonl", job.chunks()));
        self.store
            .put(&path, PutPayload::from(lines(records)))
            .await?;
        Ok(())
    }

    /// Every record written so far for a job, one per attempt, in attempt order per task.
    pub async fn records(&self, job: &JobDir) -> Result<Vec<ExecutionRecord>, ArtifactError> {
        let prefix = self.path(&job.chunks());
        let mut metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut by_attempt = BTreeMap::new();
        for meta in metas {
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let r: ExecutionRecord =
                    serde_json::from_slice(line).map_err(|e| ArtifactError::BadRecord {
                        path: meta.location.to_string(),
                        reason: e.to_string(),
                    })?;
                // A report sent again after a restart records the same attempt again.
                by_attempt.entry((r.task.clone(), r.attempt)).or_insert(r);
            }
        }
        Ok(by_attempt.into_values().collect())
    }

    /// Gathers a finished job's chunks into `records.jsonl` and returns its URI. The chunks stay
    /// until [`Artifacts::drop_chunks`], so doing this again (after a failed status write or a
    /// restart) gives the same file.
    pub async fn finish(&self, job: &JobDir) -> Result<String, ArtifactError> {
        let records = self.records(job).await?;
        let rel = format!("{}/records.jsonl", job.base());
        self.store
            .put(&self.path(&rel), PutPayload::from(lines(&records)))
            .await?;
        Ok(self.uri(&rel))
    }

    /// Deletes a job's chunks, once a status pointing at `records.jsonl` is stored.
    pub async fn drop_chunks(&self, job: &JobDir) -> Result<(), ArtifactError> {
        let prefix = self.path(&job.chunks());
        let chunks: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        for meta in chunks {
            self.store.delete(&meta.location).await?;
        }
        Ok(())
    }

    /// Lists a job's results in `results.json` and returns its URI.
    pub async fn put_results(
        &self,
        job: &JobDir,
        results: &[TaskArtifact],
    ) -> Result<String, ArtifactError> {
        let rel = format!("{}/results.json", job.base());
        let body = serde_json::to_vec_pretty(results).expect("artifacts serialize");
        self.store
            .put(&self.path(&rel), PutPayload::from(body))
            .await?;
        Ok(self.uri(&rel))
    }

    /// Reads a URI this store produced, such as a job's `recordsUri`.
    pub async fn read_uri(&self, uri: &str) -> Result<Vec<u8>, ArtifactError> {
        let rel = uri
            .strip_prefix(&self.url)
            .map(|r| r.trim_start_matches('/'))
            .ok_or_else(|| ArtifactError::BadUrl {
                url: uri.to_owned(),
                reason: format!("not under {}", self.url),
            })?;
        Ok(self
            .store
            .get(&self.path(rel))
            .await?
            .bytes()
            .await?
            .to_vec())
    }
}

fn lines(records: &[ExecutionRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("records serialize");
        out.push(b'\n');
    }
    out
}
