//! What the operator keeps outside the API server: each job's execution records, as JSON lines,
//! and the manifest of a job's results when there are too many to list in its status.
//!
//! Records are written while the job runs as numbered chunks, before the status that reflects
//! them, so a restart finds every committed attempt. When the job ends the chunks become one
//! `records.jsonl`, one line per attempt: an [`AttemptRecord`], the core's [`ExecutionRecord`]
//! with the decision that placed the attempt beside it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use splai_scheduler::Explanation;
use splai_scheduler::api::{ExecutionRecord, TaskArtifact};

/// One line of a job's records: what became of one attempt, and why it went where it did.
///
/// The line is the [`ExecutionRecord`]'s fields with `decision` added, so a reader that knows
/// only `ExecutionRecord` still reads it, and lines written before decisions were recorded read
/// as attempts without one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    #[serde(flatten)]
    pub record: ExecutionRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

impl From<ExecutionRecord> for AttemptRecord {
    fn from(record: ExecutionRecord) -> Self {
        AttemptRecord {
            record,
            decision: None,
        }
    }
}

/// Why the scheduler placed an attempt on its worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The explanation as the status's `tasks[].score` and `splai explain` show it: the strategy,
    /// the worker, the score and each term, the runner-up and the term it lost on.
    pub score: String,
    /// The same in numbers. Absent when the attempt was placed by an operator before a restart:
    /// the status it left kept only the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Explanation>,
    /// Why the task waited for a worker before this attempt, as the scheduler last said while
    /// the task was first in its queue; absent when it did not wait, or was not first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited: Option<String>,
}

impl Decision {
    /// The decision behind an assignment, and why the task waited before it.
    pub fn placed(explanation: Explanation, waited: Option<String>) -> Self {
        Decision {
            score: explanation.to_string(),
            placement: Some(explanation),
            waited,
        }
    }
}

/// What a chunk of records may hold: the operator writes [`AttemptRecord`]s; a bare
/// [`ExecutionRecord`] is a line without a decision.
pub trait RecordLine: Serialize {}
impl RecordLine for AttemptRecord {}
impl RecordLine for ExecutionRecord {}

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
        records: &[impl RecordLine],
    ) -> Result<(), ArtifactError> {
        let path = self.path(&format!("{}/{seq:010}.jsonl", job.chunks()));
        self.store
            .put(&path, PutPayload::from(lines(records)))
            .await?;
        Ok(())
    }

    /// Every record written so far for a job, one per attempt, in attempt order per task.
    pub async fn records(&self, job: &JobDir) -> Result<Vec<ExecutionRecord>, ArtifactError> {
        Ok(self
            .attempts(job)
            .await?
            .into_iter()
            .map(|a| a.record)
            .collect())
    }

    /// [`Artifacts::records`] with each attempt's decision.
    pub async fn attempts(&self, job: &JobDir) -> Result<Vec<AttemptRecord>, ArtifactError> {
        let prefix = self.path(&job.chunks());
        let mut metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut by_attempt = BTreeMap::new();
        for meta in metas {
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            for a in parse_attempts(&bytes, meta.location.as_ref())? {
                // A report sent again after a restart records the same attempt again.
                by_attempt
                    .entry((a.record.task.clone(), a.record.attempt))
                    .or_insert(a);
            }
        }
        Ok(by_attempt.into_values().collect())
    }

    /// Gathers a finished job's chunks into `records.jsonl` and returns its URI. The chunks stay
    /// until [`Artifacts::drop_chunks`], so doing this again (after a failed status write or a
    /// restart) gives the same file.
    pub async fn finish(&self, job: &JobDir) -> Result<String, ArtifactError> {
        Ok(self.gather(job).await?.0)
    }

    /// [`Artifacts::finish`], returning the attempts it wrote too.
    pub async fn gather(
        &self,
        job: &JobDir,
    ) -> Result<(String, Vec<AttemptRecord>), ArtifactError> {
        let attempts = self.attempts(job).await?;
        let rel = format!("{}/records.jsonl", job.base());
        self.store
            .put(&self.path(&rel), PutPayload::from(lines(&attempts)))
            .await?;
        Ok((self.uri(&rel), attempts))
    }

    /// The attempts in a `records.jsonl` this store holds, such as a finished job's `recordsUri`.
    pub async fn read_attempts(&self, uri: &str) -> Result<Vec<AttemptRecord>, ArtifactError> {
        parse_attempts(&self.read_uri(uri).await?, uri)
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

/// The attempts in the text of a `records.jsonl`; `path` names it in errors.
pub fn parse_attempts(bytes: &[u8], path: &str) -> Result<Vec<AttemptRecord>, ArtifactError> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|e| ArtifactError::BadRecord {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn lines(records: &[impl RecordLine]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("records serialize");
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use splai_scheduler::Timestamp;
    use splai_scheduler::api::Outcome;

    use super::*;

    fn record(task: &str, attempt: u32) -> ExecutionRecord {
        ExecutionRecord {
            job: "ns/j".into(),
            task: task.into(),
            attempt,
            worker: "w1".into(),
            assigned_at: Timestamp(1_000),
            started_at: Some(Timestamp(1_500)),
            finished_at: Timestamp(2_000),
            outcome: Outcome::Succeeded,
            error: None,
            artifact_uri: None,
            traceparent: String::new(),
        }
    }

    #[tokio::test]
    async fn each_attempts_decision_is_kept_and_records_without_one_still_read() {
        let dir = std::env::temp_dir().join(format!("splai-records-{}", std::process::id()));
        let store = Artifacts::open(&format!("file://{}", dir.display())).unwrap();
        let job = JobDir {
            namespace: "ns".into(),
            name: "j".into(),
            uid: "u1".into(),
        };
        // A chunk as an operator wrote it before decisions were recorded.
        store.put_chunk(&job, 1, &[record("a", 1)]).await.unwrap();
        let placed = AttemptRecord {
            record: record("b", 1),
            decision: Some(Decision {
                score: "splai chose w1 (score 0.800)".into(),
                placement: None,
                waited: Some("no worker has 500m CPU free".into()),
            }),
        };
        store
            .put_chunk(&job, 2, std::slice::from_ref(&placed))
            .await
            .unwrap();

        let (uri, attempts) = store.gather(&job).await.unwrap();
        assert_eq!(
            attempts,
            [AttemptRecord::from(record("a", 1)), placed.clone()]
        );
        assert_eq!(store.read_attempts(&uri).await.unwrap(), attempts);
        // A reader that knows only the core's record reads every line, the decision aside.
        let text = String::from_utf8(store.read_uri(&uri).await.unwrap()).unwrap();
        let plain: Vec<ExecutionRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(plain, [record("a", 1), record("b", 1)]);
        assert!(
            text.contains(r#""decision":{"score":"splai chose w1"#),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
