//! `splai-worker`: runs on each node (a DaemonSet), registers with the operator's agent endpoint,
//! heartbeats, and runs the tasks it is assigned.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use splai_protocol::{Agent, AgentConfig, CredentialSource, TlsNet, TokioNet};
use splai_scheduler::api::Capabilities;
use splai_worker::confine::{self, Confinement};
use splai_worker::executor::{ArtifactStore, WorkerExecutor};
use splai_worker::inference::{Client, InferenceConfig};
use splai_worker::sandbox::SandboxConfig;

#[derive(Parser, Debug)]
#[command(version, about = "SPLAI's worker agent")]
struct Args {
    /// This worker's name, the node's name in a cluster (from the downward API).
    #[arg(long, env = "NODE_NAME")]
    name: String,
    /// The operator's agent endpoint(s), `host:port`, comma-separated for several replicas.
    #[arg(
        long,
        env = "SPLAI_CONTROL_PLANE",
        default_value = "splai-operator.splai-system:7400"
    )]
    control_plane: String,
    /// The token that proves to the operator which node this agent runs on: a projected
    /// service-account token with audience `splai-operator`, read again at each connection
    /// (the kubelet renews it). Without it the operator must run with `--agent-auth none`.
    #[arg(long, env = "SPLAI_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The CA (PEM) that signed the operator's certificate: the agent then speaks TLS and checks
    /// the operator's certificate against the host of --control-plane. Without it, plain TCP.
    #[arg(long, env = "SPLAI_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Capabilities as YAML (cpuMillis, memoryMib, gpus, gpuModel, models, tools, locality,
    /// classifications, speedFactor); the flags below override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    cpu_millis: Option<u32>,
    #[arg(long)]
    memory_mib: Option<u32>,
    #[arg(long)]
    gpus: Option<u32>,
    /// Models this worker serves, comma-separated (`*` for any).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Tools this worker offers, comma-separated.
    #[arg(long, value_delimiter = ',')]
    tools: Vec<String>,
    /// The zone, for locality.
    #[arg(long, env = "SPLAI_LOCALITY")]
    locality: Option<String>,
    /// Where task outputs and logs go.
    #[arg(
        long,
        env = "SPLAI_ARTIFACTS",
        default_value = "file:///var/lib/splai/artifacts"
    )]
    artifacts: String,
    /// Where the tasks' private folders go.
    #[arg(long, default_value = "/var/lib/splai/work")]
    work_dir: PathBuf,
    /// How tasks are kept from the agent's secrets and from each other: `landlock` (each task
    /// reads only the system folders and writes only its own folder; needs a kernel with
    /// Landlock) or `none` (tasks run with the agent's own access).
    #[arg(long, value_enum, default_value_t = TaskIsolation::Landlock)]
    task_isolation: TaskIsolation,
    /// More folders confined tasks may read (and execute from), comma-separated, such as a
    /// mounted models folder.
    #[arg(long, value_delimiter = ',')]
    task_read_paths: Vec<PathBuf>,
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// A file holding the API key for OpenAI-compatible backends (a mounted Secret); else the
    /// variable SPLAI_API_KEY.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Seconds an inference call may take.
    #[arg(long, default_value_t = 300)]
    inference_timeout_seconds: u64,
    /// Create or update this worker's SPLAIWorker in this namespace at start (with the
    /// kubeconfig, or the pod's service account), so the worker owns its spec.
    #[arg(long, env = "SPLAI_WORKER_NAMESPACE")]
    register_in: Option<String>,
    /// Models kept warm at once (reported with heartbeats).
    #[arg(long, default_value_t = 2)]
    warm_slots: usize,
}

/// Applies this worker's `SPLAIWorker` (its spec: the capabilities) by server-side apply, as
/// field manager `splai-worker`. The operator writes its status.
async fn register(ns: &str, name: &str, caps: &Capabilities) -> anyhow::Result<()> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let client = kube::Client::try_default()
        .await
        .context("--register-in needs a kubeconfig or a service account")?;
    let gvk = GroupVersionKind::gvk("splai.io", "v1alpha1", "SPLAIWorker");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "splaiworkers");
    let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &resource);
    let body = serde_json::json!({
        "apiVersion": "splai.io/v1alpha1",
        "kind": "SPLAIWorker",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "splai-worker", "splai.io/node": name},
        },
        "spec": {"capabilities": caps},
    });
    api.patch(
        name,
        &PatchParams::apply("splai-worker").force(),
        &Patch::Apply(&body),
    )
    .await
    .with_context(|| format!("registering SPLAIWorker {ns}/{name}"))?;
    tracing::info!(worker = %name, namespace = %ns, "registered");
    Ok(())
}

fn node_capacity() -> (u32, u32) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1 << 20);
    (
        u32::try_from(cpus * 1000).unwrap_or(u32::MAX),
        u32::try_from(mem_kib / 1024).unwrap_or(u32::MAX),
    )
}

/// TLS that trusts the CA certificates in `path` only.
fn client_tls(path: &std::path::Path) -> anyhow::Result<Arc<ClientConfig>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading --ca-file {}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("{}: not a PEM certificate", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Logs each change of the link to the operator: connected, or lost and why (a refusal names
/// what was wrong with the agent's token).
async fn log_link(mut status: tokio::sync::watch::Receiver<splai_protocol::AgentStatus>) {
    let (mut connected, mut error) = (false, None);
    while status.changed().await.is_ok() {
        let now = status.borrow_and_update().clone();
        if now.connected != connected {
            connected = now.connected;
            if connected {
                tracing::info!("connected to the operator");
            }
        }
        let latest = now.last_error.as_ref().map(|e| e.to_string());
        if latest.is_some() && latest != error {
            tracing::warn!(
                error = latest.as_deref().unwrap_or_default(),
                "lost the link to the operator; reconnecting"
            );
        }
        error = latest;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TaskIsolation {
    Landlock,
    None,
}

fn main() -> anyhow::Result<()> {
    // The last link of a task's sandbox: confine this process, then become the task's program.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == confine::ARG) {
        let failed = confine::exec(argv);
        eprintln!("splai-worker: {failed}");
        std::process::exit(126);
    }
    agent()
}

#[tokio::main]
async fn agent() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs to stderr; spans to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let _telemetry = splai_telemetry::Telemetry::init("splai-worker", false)?;
    let mut caps: Capabilities = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{}: not valid worker capabilities", path.display()))?
        }
        None => {
            let (cpu, mem) = node_capacity();
            Capabilities {
                cpu_millis: cpu,
                memory_mib: mem,
                ..Capabilities::default()
            }
        }
    };
    caps.cpu_millis = args.cpu_millis.unwrap_or(caps.cpu_millis);
    caps.memory_mib = args.memory_mib.unwrap_or(caps.memory_mib);
    caps.gpus = args.gpus.unwrap_or(caps.gpus);
    if !args.models.is_empty() {
        caps.models = args.models.clone();
    }
    if !args.tools.is_empty() {
        caps.tools = args.tools.clone();
    }
    if args.locality.is_some() {
        caps.locality = args.locality.clone();
    }
    let api_key = match &args.api_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the API key from {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("SPLAI_API_KEY").ok(),
    };
    let inference = Client::new(InferenceConfig {
        api_key,
        timeout: Duration::from_secs(args.inference_timeout_seconds.max(1)),
        ..InferenceConfig::default()
    });
    if let Some(ns) = &args.register_in {
        register(ns, &args.name, &caps).await?;
    }
    let mut sandbox = SandboxConfig::new(&args.work_dir);
    if args.task_isolation == TaskIsolation::Landlock {
        confine::available()?;
        let exe = std::env::current_exe().context("finding this binary, which confines tasks")?;
        sandbox.confine = Some(Confinement::new(exe, &args.task_read_paths));
    } else {
        tracing::warn!(
            "--task-isolation none: tasks can read this agent's token, environment and each other's folders"
        );
    }
    let executor = WorkerExecutor::new(
        sandbox,
        ArtifactStore::open(&args.artifacts)?,
        inference,
        Vec::new(),
        args.warm_slots,
    );
    // A new incarnation per process start: the core then knows a restarted agent lost its work.
    let incarnation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(1));
    let config = AgentConfig {
        incarnation,
        heartbeat_interval: Duration::from_secs(args.heartbeat_seconds.max(1)),
        dead_after: Duration::from_secs(args.heartbeat_seconds.max(1) * 3),
        credential: args.token_file.clone().map(CredentialSource::File),
        ..AgentConfig::new(&args.name, &args.control_plane, caps)
    };
    tracing::info!(worker = %args.name, control_plane = %args.control_plane, "starting");
    let (running, handle) = match &args.ca_file {
        Some(ca) => {
            let (agent, handle) = Agent::new(TlsNet::client(client_tls(ca)?), config, executor);
            (tokio::spawn(agent.run()), handle)
        }
        None => {
            let (agent, handle) = Agent::new(TokioNet, config, executor);
            (tokio::spawn(agent.run()), handle)
        }
    };
    tokio::spawn(log_link(handle.watch()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    let _ = handle.shutdown();
    let _ = running.await;
    Ok(())
}
