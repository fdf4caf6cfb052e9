//! `splai-gateway`: the HTTP API in front of the SPLAI operator.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use splai_gateway::server::{Gateway, Tokens, router};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading the tokens file {}", args.tokens.display()))?;
    let gateway = Gateway {
        client: kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (set KUBECONFIG, or run in a cluster)")?,
        tokens: Arc::new(Tokens::parse(&text)?),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving");
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
