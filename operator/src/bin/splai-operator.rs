//! `splai-operator`: the SPLAI control plane against any Kubernetes API server.
//!
//! It reads the kubeconfig the usual way (in-cluster service account, `$KUBECONFIG`, or
//! `~/.kube/config`). See operator/README.md.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use splai_operator::leader::LeaseConfig;
use splai_operator::metrics::Metrics;
use splai_operator::run::{OperatorConfig, run, serve_metrics};
use splai_operator::webhook_cert::SelfSigned;
use splai_operator::{tls, webhook};
use splai_scheduler::Settings;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "SPLAI's Kubernetes operator: job, scheduler and heartbeat controllers"
)]
struct Args {
    /// Watch jobs, policies and routes in this namespace only (default: all namespaces).
    #[arg(long, env = "SPLAI_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// The namespace of the operator's Lease and of the SPLAIWorkers.
    #[arg(long, env = "POD_NAMESPACE", default_value = "splai-system")]
    system_namespace: String,
    /// This replica's identity in the leader lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, default_value = "splai-operator")]
    lease_name: String,
    /// Seconds a lease holds without renewal; a standby takes over after it.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Where worker agents connect.
    #[arg(long, default_value = "0.0.0.0:7400")]
    agent_listen: String,
    /// How agents prove which worker they are: `token` (their pod's service-account token,
    /// projected with audience `splai-operator`, reviewed by the API server and bound to the
    /// node it names) or `none` (any agent that reaches --agent-listen is trusted: a laptop).
    #[arg(long, value_enum, default_value_t = AgentAuth::Token)]
    agent_auth: AgentAuth,
    /// The service account of the worker agents, in --system-namespace.
    #[arg(long, default_value = "splai-worker")]
    agent_service_account: String,
    /// The Service agents dial, in --system-namespace: the self-signed certificate also names
    /// it, since the agent endpoint is served with the webhook's certificate.
    #[arg(long, default_value = "splai-operator")]
    agent_service: String,
    /// Serve agents plain TCP even when there is a certificate (agents on loopback). Without a
    /// certificate (no --webhook-cert-dir files, no --webhook-self-signed-secret) agents are
    /// served plain TCP anyway, with a warning.
    #[arg(long)]
    plain_agents: bool,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_listen: String,
    /// Where the admission webhook is served (HTTPS), on every replica.
    #[arg(long, default_value = "0.0.0.0:9443")]
    webhook_listen: String,
    /// Folder with the webhook's `tls.crt` and `tls.key` (as cert-manager writes them). Without
    /// them the webhook is not served, and a registered webhook then refuses every request.
    #[arg(long, default_value = "/etc/splai/webhook")]
    webhook_cert_dir: std::path::PathBuf,
    /// Without `tls.crt` and `tls.key` in --webhook-cert-dir: serve the webhook with a
    /// self-signed certificate kept in this Secret of --system-namespace (the first replica to
    /// start makes it), and write its CA into the caBundle of --webhook-configuration.
    #[arg(long, env = "SPLAI_WEBHOOK_SELF_SIGNED_SECRET")]
    webhook_self_signed_secret: Option<String>,
    /// The Service the API server calls the webhook through, in --system-namespace; the
    /// self-signed certificate is made for its DNS names.
    #[arg(long, default_value = "splai-webhook")]
    webhook_service: String,
    /// The ValidatingWebhookConfiguration whose caBundle gets the self-signed CA.
    #[arg(long, default_value = "splai-webhook")]
    webhook_configuration: String,
    /// Where execution records and result manifests go.
    #[arg(
        long,
        env = "SPLAI_ARTIFACTS",
        default_value = "file:///var/lib/splai/artifacts"
    )]
    artifacts: String,
    /// Milliseconds between batches of status writes.
    #[arg(long, default_value_t = 100)]
    flush_ms: u64,
    /// Seconds between status writes of a worker whose state did not change.
    #[arg(long, default_value_t = 30)]
    worker_refresh_seconds: u64,
    /// Scheduler settings (weights, thresholds, limits) as YAML or JSON; defaults otherwise.
    #[arg(long)]
    settings: Option<std::path::PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AgentAuth {
    Token,
    None,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs to stderr; spans to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let _telemetry = splai_telemetry::Telemetry::init("splai-operator", args.log_json)?;
    let settings = match &args.settings {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading settings from {}", path.display()))?;
            serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{}: not valid scheduler settings", path.display()))?
        }
        None => Settings::default(),
    };
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "splai-operator".into());
        format!("{host}-{}", std::process::id())
    });
    let agent_account = match args.agent_auth {
        AgentAuth::Token => Some(format!(
            "system:serviceaccount:{}:{}",
            args.system_namespace, args.agent_service_account
        )),
        AgentAuth::None => {
            tracing::warn!("--agent-auth none: any agent that reaches --agent-listen is trusted");
            None
        }
    };
    let mut config = OperatorConfig {
        agent_account,
        agent_tls: None,
        namespace: args.namespace,
        worker_namespace: args.system_namespace.clone(),
        agent_listen: args.agent_listen,
        artifacts: args.artifacts,
        lease: LeaseConfig {
            namespace: args.system_namespace,
            name: args.lease_name,
            identity,
            duration: Duration::from_secs(args.lease_seconds.max(2)),
            renew_every: Duration::from_secs((args.lease_seconds / 3).max(1)),
        },
        flush_interval: Duration::from_millis(args.flush_ms.max(10)),
        worker_refresh: Duration::from_secs(args.worker_refresh_seconds.max(1)),
        settings,
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (set KUBECONFIG, or run in a cluster)")?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(&args.metrics_listen)
        .await
        .with_context(|| format!("listening for /metrics on {}", args.metrics_listen))?;
    tokio::spawn(serve_metrics(listener, metrics.clone()));
    // Mounted files (cert-manager's Secret) are read again when they are renewed; a
    // self-signed certificate lives in a Secret, and its CA is kept in the caBundle.
    let tls = match tls::from_dir(&args.webhook_cert_dir, tls::RELOAD_EVERY)? {
        Some(tls) => Some(tls),
        None => match args.webhook_self_signed_secret {
            Some(secret) => {
                let self_signed = SelfSigned {
                    namespace: config.lease.namespace.clone(),
                    secret,
                    service: args.webhook_service,
                    configuration: args.webhook_configuration,
                    agent_service: Some(args.agent_service),
                };
                let issued = self_signed
                    .ensure(&client)
                    .await
                    .context("setting up the webhook's self-signed certificate")?;
                tokio::spawn(
                    self_signed
                        .clone()
                        .keep_injected(client.clone(), issued.ca_pem.clone()),
                );
                Some(tls::server_config(
                    issued.cert_pem.as_bytes(),
                    issued.key_pem.as_bytes(),
                )?)
            }
            None => None,
        },
    };
    // Agents are served TLS with the webhook's certificate, which names both Services.
    config.agent_tls = match (&tls, args.plain_agents) {
        (Some(tls), false) => Some(tls.clone()),
        (None, false) => {
            tracing::warn!(
                "no certificate: agents are served plain TCP, their tasks and tokens in clear"
            );
            None
        }
        (_, true) => None,
    };
    match tls {
        Some(tls) => {
            let listener = tokio::net::TcpListener::bind(&args.webhook_listen)
                .await
                .with_context(|| format!("listening for the webhook on {}", args.webhook_listen))?;
            // Jobs in every namespace are judged, by the policies of their own namespace.
            let validator =
                webhook::Validator::start(client.clone(), config.settings.clone(), None);
            tokio::spawn(webhook::serve(listener, tls, validator));
        }
        None => tracing::warn!(
            dir = %args.webhook_cert_dir.display(),
            "no tls.crt and tls.key, and no --webhook-self-signed-secret: the admission webhook is not served"
        ),
    }
    tokio::select! {
        result = run(client, config, metrics) => Ok(result?),
        _ = splai_operator::run::stop_signal() => {
            tracing::info!("stopping; a standby takes over when the lease lapses");
            Ok(())
        }
    }
}
