//! `splai`: submit, watch, inspect, cancel and delete SPLAI jobs.
//!
//! It talks to the gateway (`--server`, `--token`, or `SPLAI_SERVER` and `SPLAI_TOKEN`); without
//! a server it falls back to the Kubernetes API through your kubeconfig (`--namespace`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use splai_gateway::api::{AttemptRecord, ErrorBody, JobView, SubmitRequest, name_taken};
use splai_operator::{SPLAIJob, SPLAIJobSpec};
use splai_scheduler::api::JobPhase;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Submit, watch, inspect, cancel and delete SPLAI jobs"
)]
struct Cli {
    /// The gateway's URL, such as https://splai.example.com; without it, the kubeconfig is used.
    #[arg(long, env = "SPLAI_SERVER", global = true)]
    server: Option<String>,
    /// Your tenant's token for the gateway.
    #[arg(long, env = "SPLAI_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of the CA (or self-signed certificate) to trust for the gateway's HTTPS, beside
    /// the public roots.
    #[arg(long, env = "SPLAI_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Accept any certificate from the gateway. Only for trying things out: anyone on the path
    /// can then read your token.
    #[arg(long, env = "SPLAI_INSECURE_SKIP_TLS_VERIFY", global = true)]
    insecure_skip_tls_verify: bool,
    /// The namespace, when talking to the Kubernetes API directly.
    #[arg(
        long,
        short,
        env = "SPLAI_NAMESPACE",
        global = true,
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a job from a file: a SPLAIJob manifest, or `{name, spec}`, in YAML or JSON.
    Submit {
        file: PathBuf,
        /// Follow the job until it ends, then print its result.
        #[arg(long)]
        watch: bool,
    },
    /// Show one job.
    Get { name: String },
    /// List your jobs.
    List,
    /// Cancel a job; its running tasks are stopped.
    Cancel { name: String },
    /// Delete a job: its running tasks are stopped, then it is gone and its name is free.
    Delete { name: String },
    /// Why a task went where it did (each score term and the runner-up), or why it waits; with
    /// TASK, each of its attempts: worker, score terms, why it waited and the outcome.
    Explain { name: String, task: Option<String> },
}

enum Backend {
    Gateway {
        http: reqwest::Client,
        server: String,
        token: String,
    },
    Kube {
        api: Box<Api<SPLAIJob>>,
        namespace: String,
    },
}

impl Backend {
    async fn new(cli: &Cli) -> Result<Backend> {
        if let Some(server) = &cli.server {
            let token = cli
                .token
                .clone()
                .context("--server needs --token (or SPLAI_TOKEN): your tenant's token")?;
            let mut http = reqwest::Client::builder();
            if let Some(path) = &cli.ca_file {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading --ca-file {}", path.display()))?;
                let ca = reqwest::Certificate::from_pem(&pem).with_context(|| {
                    format!("--ca-file {} is not a PEM certificate", path.display())
                })?;
                http = http.add_root_certificate(ca);
            }
            if cli.insecure_skip_tls_verify {
                http = http.danger_accept_invalid_certs(true);
            }
            return Ok(Backend::Gateway {
                http: http.build().context("setting up HTTPS")?,
                server: server.trim_end_matches('/').to_owned(),
                token,
            });
        }
        let client = kube::Client::try_default()
            .await
            .context("no --server given and no usable kubeconfig")?;
        Ok(Backend::Kube {
            api: Box::new(Api::namespaced(client, &cli.namespace)),
            namespace: cli.namespace.clone(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let Backend::Gateway { token, server, .. } = self else {
            unreachable!("only the gateway speaks HTTP");
        };
        let response = req.bearer_auth(token).send().await.map_err(|e| {
            let untrusted =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.to_string().contains("certificate"));
            let hint = if untrusted {
                " (its certificate is not trusted: pass the gateway's CA with --ca-file)"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!("reaching the gateway at {server}{hint}"))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => bail!("{} ({status})", e.error.message),
            Err(_) => bail!("the gateway answered {status}: {text}"),
        }
    }

    fn url(&self, path: &str) -> String {
        match self {
            Backend::Gateway { server, .. } => format!("{server}{path}"),
            Backend::Kube { .. } => String::new(),
        }
    }

    async fn submit(&self, name: String, spec: Value) -> Result<JobView> {
        match self {
            Backend::Gateway { http, .. } => {
                let body = serde_json::json!({"name": name, "spec": spec});
                Ok(self
                    .send(http.post(self.url("/v1/jobs")).json(&body))
                    .await?
                    .json()
                    .await?)
            }
            Backend::Kube { api, namespace } => {
                let request: SubmitRequest =
                    serde_json::from_value(serde_json::json!({"name": name, "spec": spec}))
                        .context(
                            "not a SPLAI job (without the gateway, spec.tenant is required)",
                        )?;
                let job = SPLAIJob::new(&request.name, SPLAIJobSpec(request.spec));
                match api.create(&PostParams::default(), &job).await {
                    Ok(created) => Ok(JobView::from(&created)),
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        let existing = api.get_opt(&request.name).await?;
                        let deleting =
                            existing.is_some_and(|j| j.metadata.deletion_timestamp.is_some());
                        bail!("{}", name_taken(&request.name, namespace, true, deleting))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    async fn get(&self, name: &str) -> Result<JobView> {
        match self {
            Backend::Gateway { http, .. } => Ok(self
                .send(http.get(self.url(&format!("/v1/jobs/{name}"))))
                .await?
                .json()
                .await?),
            Backend::Kube { api, .. } => Ok(JobView::from(&api.get(name).await?)),
        }
    }

    async fn list(&self) -> Result<Vec<JobView>> {
        match self {
            Backend::Gateway { http, .. } => Ok(self
                .send(http.get(self.url("/v1/jobs")))
                .await?
                .json()
                .await?),
            Backend::Kube { api, .. } => Ok(api
                .list(&Default::default())
                .await?
                .items
                .iter()
                .map(JobView::from)
                .collect()),
        }
    }

    async fn cancel(&self, name: &str) -> Result<JobView> {
        match self {
            Backend::Gateway { http, .. } => Ok(self
                .send(http.post(self.url(&format!("/v1/jobs/{name}/cancel"))))
                .await?
                .json()
                .await?),
            Backend::Kube { api, .. } => {
                let patch = serde_json::json!({"spec": {"cancel": true}});
                let job = api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(JobView::from(&job))
            }
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self {
            Backend::Gateway { http, .. } => {
                self.send(http.delete(self.url(&format!("/v1/jobs/{name}"))))
                    .await?;
            }
            Backend::Kube { api, .. } => {
                api.delete(name, &DeleteParams::default()).await?;
            }
        }
        Ok(())
    }

    /// A task's attempts from the job's records: through the gateway, or, without it, read from
    /// the records URI of an ended job with your own access to the store.
    async fn attempts(&self, view: &JobView, task: &str) -> Result<Vec<AttemptRecord>> {
        let mut attempts: Vec<AttemptRecord> = match self {
            Backend::Gateway { http, .. } => {
                let url = self.url(&format!("/v1/jobs/{}/records", view.name));
                self.send(http.get(url).query(&[("task", task)]))
                    .await?
                    .json()
                    .await?
            }
            Backend::Kube { .. } => {
                // A running job's records are in chunks only the operator and gateway find.
                let Some(uri) = view.status.as_ref().and_then(|s| s.records_uri.as_deref()) else {
                    return Ok(Vec::new());
                };
                read_records(uri)
                    .await
                    .with_context(|| format!("reading {uri}"))?
            }
        };
        attempts.retain(|a| a.record.task == task);
        Ok(attempts)
    }

    /// Calls `each` with every change of the job until it has ended; returns the last view.
    async fn watch(&self, name: &str, mut each: impl FnMut(&JobView)) -> Result<JobView> {
        let mut last = None;
        match self {
            Backend::Gateway { http, .. } => {
                let response = self
                    .send(http.get(self.url(&format!("/v1/jobs/{name}/watch"))))
                    .await?;
                let mut bytes = response.bytes_stream();
                let mut buffer = String::new();
                while let Some(chunk) = bytes.next().await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk?));
                    while let Some(end) = buffer.find("\n\n") {
                        let event: String = buffer.drain(..end + 2).collect();
                        for line in event.lines() {
                            if let Some(data) = line.strip_prefix("data:") {
                                let view: JobView = serde_json::from_str(data.trim())?;
                                each(&view);
                                last = Some(view);
                            }
                        }
                    }
                    if last.as_ref().is_some_and(JobView::finished) {
                        break;
                    }
                }
            }
            Backend::Kube { api, .. } => {
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let mut stream = std::pin::pin!(watcher((**api).clone(), config).applied_objects());
                while let Some(job) = stream.next().await {
                    let view = JobView::from(&job?);
                    if last.as_ref() != Some(&view) {
                        each(&view);
                    }
                    let done = view.finished();
                    last = Some(view);
                    if done {
                        break;
                    }
                }
            }
        }
        last.context("the watch ended before the job did")
    }
}

/// A submission from a file: `{name, spec}` or a SPLAIJob manifest, as `(name, spec)`. The
/// spec stays JSON: the gateway fills in the tenant from the token.
fn read_request(file: &PathBuf) -> Result<(String, Value)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not YAML or JSON", file.display()))?;
    let name = if value.get("kind").is_some() {
        value.pointer("/metadata/name")
    } else {
        value.get("name")
    }
    .and_then(Value::as_str)
    .with_context(|| {
        format!(
            "{}: the job has no name (metadata.name, or name)",
            file.display()
        )
    })?
    .to_owned();
    let spec = value
        .get("spec")
        .cloned()
        .with_context(|| format!("{}: the job has no spec", file.display()))?;
    Ok((name, spec))
}

/// The attempts in a `records.jsonl` at `uri`: a local file, or an object read with your own
/// credentials (the `AWS_*` variables for `s3://`).
async fn read_records(uri: &str) -> Result<Vec<AttemptRecord>> {
    let bytes = match uri.strip_prefix("file://") {
        Some(path) => std::fs::read(path)?,
        None => {
            let (folder, _) = uri.rsplit_once('/').context("not a records URI")?;
            let store = splai_operator::artifacts::Artifacts::open(folder)?;
            store.read_uri(uri).await?
        }
    };
    Ok(splai_operator::artifacts::parse_attempts(&bytes, uri)?)
}

fn progress(view: &JobView) -> String {
    let Some(s) = &view.status else {
        return "waiting for the operator to pick it up".into();
    };
    let p = &s.job.progress;
    format!(
        "{:?}: {}/{} succeeded, {} running, {} waiting, {} failed{}",
        s.job.phase,
        p.succeeded,
        p.total,
        p.running,
        p.waiting + p.ready + p.retrying,
        p.failed + p.timed_out,
        s.job
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    )
}

fn result_lines(view: &JobView) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = &view.status {
        if let Some(uri) = &s.job.result_artifact_uri {
            out.push(format!("result: {uri}"));
        }
        for r in &s.job.result_artifacts {
            out.push(format!("  {}: {}", r.task, r.uri));
        }
        if let Some(uri) = &s.records_uri {
            out.push(format!("records: {uri}"));
        }
    }
    out
}

/// What the status says of the tasks it lists (or of `task`): the decision behind each one's
/// current attempt (its last, once a small job has ended), or why it waits.
fn explain(view: &JobView, task: Option<&str>) -> Vec<String> {
    let Some(s) = &view.status else {
        return vec![format!("{}: not picked up by the operator yet", view.name)];
    };
    let mut out = Vec::new();
    for t in &s.job.tasks {
        if task.is_some_and(|x| x != t.id) {
            continue;
        }
        let on = t
            .worker
            .as_deref()
            .map(|w| format!(" on {w}"))
            .unwrap_or_default();
        let line = match (&t.score, &t.pending_reason) {
            (Some(score), _) => {
                format!("{} attempt {}: {:?}{on}: {score}", t.id, t.attempt, t.phase)
            }
            (None, Some(reason)) => format!("{}: waits: {reason}", t.id),
            (None, None) => format!(
                "{}: {:?}{on}{}",
                t.id,
                t.phase,
                t.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        };
        out.push(line);
    }
    if out.is_empty() {
        out.push(match task {
            Some(t) => format!(
                "{t} is neither running nor waiting now; its attempts are in {}",
                s.records_uri
                    .as_deref()
                    .unwrap_or("the job's records once it ends")
            ),
            None => "no task is running or waiting".into(),
        });
    }
    out
}

/// One ended attempt: its outcome and worker, the decision that placed it and why it waited.
fn attempt_lines(a: &AttemptRecord) -> Vec<String> {
    let r = &a.record;
    let ran = r.finished_at.since(r.started_at.unwrap_or(r.assigned_at));
    let mut out = vec![format!(
        "{} attempt {}: {:?} on {} after {:.1} s{}",
        r.task,
        r.attempt,
        r.outcome,
        r.worker,
        ran as f64 / 1000.0,
        r.error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )];
    match &a.decision {
        Some(d) => {
            if let Some(w) = &d.waited {
                out.push(format!("  waited: {w}"));
            }
            out.push(format!("  placed: {}", d.score));
        }
        None => out.push("  placed: not recorded (an older operator wrote this record)".into()),
    }
    out
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let backend = Backend::new(&cli).await?;
    match &cli.command {
        Command::Submit { file, watch } => {
            let (name, spec) = read_request(file)?;
            let view = backend.submit(name, spec).await?;
            println!(
                "submitted {} (trace {})",
                view.name,
                view.trace_id.as_deref().unwrap_or("-")
            );
            if *watch {
                let started = Instant::now();
                let last = backend
                    .watch(&view.name, |v| {
                        // The job as submitted was just announced: say nothing until it changes.
                        if v.status.is_some() {
                            println!("{:>6.1}s  {}", started.elapsed().as_secs_f64(), progress(v));
                        }
                    })
                    .await?;
                for line in result_lines(&last) {
                    println!("{line}");
                }
                let phase = last.status.as_ref().map(|s| s.job.phase);
                if phase != Some(JobPhase::Completed) {
                    bail!("{} ended {:?}", last.name, phase.unwrap_or_default());
                }
            }
        }
        Command::Get { name } => {
            let view = backend.get(name).await?;
            println!("{}  tenant {}  {}", view.name, view.tenant, progress(&view));
            for line in result_lines(&view) {
                println!("{line}");
            }
        }
        Command::List => {
            println!("{:<32} {:<10} {:>9}  TENANT", "NAME", "PHASE", "PROGRESS");
            for v in backend.list().await? {
                let (phase, done) = v.status.as_ref().map_or(("-".into(), "-".into()), |s| {
                    (
                        format!("{:?}", s.job.phase),
                        s.completions.clone().unwrap_or_default(),
                    )
                });
                println!("{:<32} {:<10} {:>9}  {}", v.name, phase, done, v.tenant);
            }
        }
        Command::Cancel { name } => {
            backend.cancel(name).await?;
            println!("cancel requested for {name}");
        }
        Command::Delete { name } => {
            backend.delete(name).await?;
            println!("deleted {name} (the operator stops its running tasks first)");
        }
        Command::Explain { name, task } => {
            let view = backend.get(name).await?;
            let Some(task) = task else {
                explain(&view, None).iter().for_each(|l| println!("{l}"));
                return Ok(());
            };
            // Each ended attempt, from the records; then what the task does now, if anything.
            let read = backend.attempts(&view, task).await;
            if let Err(e) = &read {
                eprintln!("{task}'s attempts could not be read: {e:#}");
            }
            let attempts = read.as_deref().unwrap_or_default();
            attempts
                .iter()
                .flat_map(attempt_lines)
                .for_each(|l| println!("{l}"));
            let status = view.status.as_ref();
            let listed = status.and_then(|s| s.job.tasks.iter().find(|t| &t.id == task));
            let now = listed.is_some_and(|t| !t.phase.is_terminal());
            let ended = status.filter(|s| s.job.phase.is_terminal());
            if now {
                explain(&view, Some(task))
                    .iter()
                    .for_each(|l| println!("{l}"));
            } else if attempts.is_empty() {
                match (ended, listed) {
                    // An ended job of few tasks lists them all.
                    (Some(s), None) if s.job.tasks.len() == s.job.progress.total as usize => {
                        bail!("job {name} has no task `{task}`")
                    }
                    (Some(_), _) if read.is_ok() => println!(
                        "{task} never ran{}",
                        listed
                            .map(|t| format!(" ({:?})", t.phase))
                            .unwrap_or_default()
                    ),
                    _ => explain(&view, Some(task))
                        .iter()
                        .for_each(|l| println!("{l}")),
                }
            }
        }
    }
    Ok(())
}
