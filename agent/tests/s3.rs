//! Artifacts in S3-compatible storage, against a real local S3 server (moto's, installed by
//! `scripts/s3-testbin.sh`): a real `splai-worker` process configured only by `AWS_*` variables
//! writes a task's outputs to `s3://`, and the operator's store keeps a job's records and results
//! there. Everything is read back from the bucket.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::api::{Api, PostParams};
use object_store::ObjectStoreExt;
use splai_operator::artifacts::{Artifacts, JobDir};
use splai_operator::metrics::Metrics;
use splai_operator::run::{OperatorConfig, run};
use splai_operator::{SPLAIJob, SPLAIJobSpec};
use splai_scheduler::Timestamp;
use splai_scheduler::api::{ExecutionRecord, JobPhase, JobSpec, Outcome, TaskArtifact, TaskSpec};
use splai_testbed::process::{Reaped, WorkerCommand};

const BUCKET: &str = "splai-artifacts";

/// moto's S3 server on a loopback port, with one bucket.
struct LocalS3 {
    _server: Reaped,
    endpoint: String,
}

impl LocalS3 {
    async fn start() -> LocalS3 {
        let port = splai_testbed::free_port().unwrap();
        let server = Reaped(
            Command::new(moto_server())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts"),
        );
        let s3 = LocalS3 {
            _server: server,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Creating the bucket is also the readiness probe: moto takes a few seconds to import.
        let http = reqwest::Client::new();
        let url = format!("{}/{BUCKET}", s3.endpoint);
        let mut tries = 0;
        loop {
            match http.put(&url).send().await {
                Ok(r) if r.status().is_success() => break,
                other => {
                    tries += 1;
                    assert!(tries < 600, "moto never created {BUCKET}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        s3
    }

    /// What a deployment sets in the environment; these tests pass the same names explicitly.
    fn vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "splai-test"),
            ("AWS_SECRET_ACCESS_KEY", "splai-test-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The body of an object named by its `s3://` URI, read straight from the bucket.
    async fn read(&self, uri: &str) -> String {
        let url = url::Url::parse(uri).unwrap();
        let (store, path) = object_store::parse_url_opts(&url, self.vars()).unwrap();
        let bytes = store
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("{uri}: {e}"))
            .bytes()
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}

/// `SPLAI_S3_SERVER`, or what `scripts/s3-testbin.sh` installs (once) and prints last.
fn moto_server() -> std::path::PathBuf {
    splai_testbed::installed("SPLAI_S3_SERVER", "s3-testbin.sh")
        .expect("moto's server is installed")
}

fn record(task: &str, attempt: u32, outcome: Outcome) -> ExecutionRecord {
    ExecutionRecord {
        job: "ns/j".into(),
        task: task.into(),
        attempt,
        worker: "w1".into(),
        assigned_at: Timestamp(1_000),
        started_at: Some(Timestamp(1_100)),
        finished_at: Timestamp(2_000),
        outcome,
        error: None,
        artifact_uri: Some(format!("s3://{BUCKET}/x/{task}/{attempt}/")),
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_store_keeps_a_jobs_records_and_results_in_s3() {
    let s3 = LocalS3::start().await;
    let base = format!("s3://{BUCKET}/operator");
    let store = Artifacts::open_with(&base, s3.vars()).unwrap();
    let job = JobDir {
        namespace: "ns".into(),
        name: "j".into(),
        uid: "uid-1".into(),
    };
    let first = record("a", 1, Outcome::Failed);
    let second = record("a", 2, Outcome::Succeeded);
    store
        .put_chunk(&job, 1, std::slice::from_ref(&first))
        .await
        .unwrap();
    // A report sent again after a restart lands in a later chunk and counts once.
    store
        .put_chunk(&job, 2, &[second.clone(), first.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.records(&job).await.unwrap(),
        [first.clone(), second.clone()]
    );

    let records_uri = store.finish(&job).await.unwrap();
    assert_eq!(records_uri, format!("{base}/jobs/ns/j/records.jsonl"));
    let lines: Vec<ExecutionRecord> = s3
        .read(&records_uri)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [first, second]);
    store.drop_chunks(&job).await.unwrap();
    assert!(store.records(&job).await.unwrap().is_empty());

    let results = [TaskArtifact {
        task: "a".into(),
        uri: format!("s3://{BUCKET}/x/a/2/"),
    }];
    let results_uri = store.put_results(&job, &results).await.unwrap();
    assert_eq!(results_uri, format!("{base}/jobs/ns/j/results.json"));
    let back: Vec<TaskArtifact> = serde_json::from_str(&s3.read(&results_uri).await).unwrap();
    assert_eq!(back, results);
    assert_eq!(
        store.read_uri(&results_uri).await.unwrap(),
        serde_json::to_vec_pretty(&results).unwrap()
    );
}

/// The operator runs in this process with its records on disk; the worker is a real process
/// whose artifact store is `s3://`, set up by its environment alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_configured_by_aws_variables_writes_a_tasks_outputs_to_s3() {
    let s3 = LocalS3::start().await;
    let (client, ns) = splai_testbed::namespace("s3-worker").await.unwrap();
    splai_operator::crd::install(&client).await.unwrap();
    let dir = std::env::temp_dir().join(format!("splai-s3-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoint = splai_testbed::free_endpoint();
    let config = OperatorConfig::in_namespace(
        &ns,
        endpoint.clone(),
        format!("file://{}/records", dir.display()),
    );
    let operator = tokio::spawn(run(client.clone(), config, Arc::new(Metrics::default())));

    let artifacts = format!("s3://{BUCKET}/runs/{ns}");
    let work_dir = dir.join("work");
    let mut command = WorkerCommand {
        bin: std::path::Path::new(env!("CARGO_BIN_EXE_splai-worker")),
        name: "w1",
        control_plane: &endpoint,
        cpu_millis: 2000,
        artifacts: &artifacts,
        work_dir: &work_dir,
        register_in: Some(&ns),
        kubeconfig: splai_testbed::shared().unwrap().kubeconfig(),
    }
    .command();
    command
        .envs(s3.vars())
        // A variable of the pod meant for something else: object_store would read a bare
        // `ENDPOINT` as its own (after `AWS_ENDPOINT_URL`, as the child's environment is sorted)
        // and send the artifacts to a closed port. The agent passes only `AWS_*` variables.
        .env("ENDPOINT", "http://127.0.0.1:9");
    let _worker = Reaped::spawn(&mut command).expect("splai-worker starts");

    let spec = JobSpec {
        tenant: "acme".into(),
        tasks: vec![TaskSpec {
            id: "make".into(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo 42 > answer.txt && echo made; echo note >&2".into(),
            ],
            resources: splai_scheduler::api::Resources {
                cpu_millis: 500,
                memory_mib: 64,
                gpus: 0,
            },
            ..TaskSpec::default()
        }],
        ..JobSpec::default()
    };
    let mut job = SPLAIJob::new("to-s3", SPLAIJobSpec(spec));
    job.meta_mut().namespace = Some(ns.clone());
    let jobs: Api<SPLAIJob> = Api::namespaced(client, &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();

    let mut polls = 0;
    let status = loop {
        let job = jobs.get("to-s3").await.unwrap();
        // The result list comes with the records' URI, once the records are stored.
        if let Some(st) = job
            .status
            .filter(|s| s.job.phase.is_terminal() && s.records_uri.is_some())
        {
            break st;
        }
        polls += 1;
        assert!(polls < 1200, "the job never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.job.phase,
        JobPhase::Completed,
        "{:?}",
        status.job.message
    );
    // One task, so one result: the job's own result URI.
    let uri = status
        .job
        .result_artifact_uri
        .as_ref()
        .expect("a result URI");
    assert_eq!(uri, &format!("{artifacts}/jobs/{ns}/to-s3/make/1/"));
    assert_eq!(s3.read(&format!("{uri}stdout.log")).await, "made\n");
    assert_eq!(s3.read(&format!("{uri}stderr.log")).await, "note\n");
    assert_eq!(s3.read(&format!("{uri}out/answer.txt")).await, "42\n");

    operator.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
