//! `splai-gateway`: the HTTP API in front of the SPLAI operator.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use splai_gateway::server::{Gateway, Tokens, serve};
use splai_operator::tls;

#[derive(Parser, Debug)]
#[command(version, about = "SPLAI's HTTP API gateway")]
struct Args {
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: String,
    /// The tokens file (a mounted Secret): `tenants: [{token, tenant, namespace}]`.
    #[arg(
        long,
        env = "SPLAI_TOKENS_FILE",
        default_value = "/etc/splai/tokens/tokens.yaml"
    )]
    tokens: PathBuf,
    /// A folder with `tls.crt` and `tls.key` (a mounted TLS Secret, such as cert-manager's).
    /// Without them the gateway makes a self-signed certificate for `--self-signed-name` at
    /// start and logs it; clients then need `splai --ca-file` with it, or
    /// `--insecure-skip-tls-verify`.
    #[arg(
        long,
        env = "SPLAI_GATEWAY_TLS_DIR",
        default_value = "/etc/splai/gateway-tls"
    )]
    tls_cert_dir: PathBuf,
    /// Names the self-signed certificate is valid for (DNS names or IP addresses).
    #[arg(
        long = "self-signed-name",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,splai-gateway,splai-gateway.splai-system.svc"
    )]
    self_signed_names: Vec<String>,
    /// Serve plain HTTP: only behind a proxy or ingress that terminates TLS, since every request
    /// carries a tenant's token.
    #[arg(long)]
    plain_http: bool,
    /// The operator's artifact store (its `--artifacts`, such as file:///var/lib/splai/artifacts
    /// or s3://bucket/prefix with the AWS_* variables), read to serve the jobs' records; without
    /// it `GET /v1/jobs/{name}/records` answers 501.
    #[arg(long, env = "SPLAI_ARTIFACTS")]
    artifacts: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = splai_telemetry::Telemetry::init("splai-gateway", false)?;
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading the tokens file {}", args.tokens.display()))?;
    let gateway = Gateway {
        client: kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (set KUBECONFIG, or run in a cluster)")?,
        tokens: Arc::new(Tokens::parse(&text)?),
        artifacts: args
            .artifacts
            .as_deref()
            .map(splai_operator::artifacts::Artifacts::open)
            .transpose()?,
    };
    let tls = if args.plain_http {
        tracing::warn!("serving plain HTTP: put a TLS-terminating proxy in front of it");
        None
    } else if let Some(config) = tls::from_dir(&args.tls_cert_dir, tls::RELOAD_EVERY)? {
        tracing::info!(dir = %args.tls_cert_dir.display(), "serving HTTPS with the mounted certificate");
        Some(config)
    } else {
        let (config, pem) = tls::self_signed(&args.self_signed_names)?;
        tracing::warn!(
            dir = %args.tls_cert_dir.display(),
            names = ?args.self_signed_names,
            "no tls.crt and tls.key: serving HTTPS with a self-signed certificate made now; \
             give it to clients with `splai --ca-file`:\n{pem}"
        );
        Some(config)
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, https = tls.is_some(), "serving");
    serve(listener, gateway, tls, splai_operator::run::stop_signal()).await?;
    Ok(())
}
