//! Wiring: leader election, the watches, the agent endpoint, the flusher and the metrics
//! endpoint around one [`Driver`].
//!
//! Only the leader acts. It lists the four resources, rebuilds the core from them, then feeds
//! the driver from the watches and the agents and flushes its writes every `flush_interval`.
//! A standby neither watches nor listens for agents; agents that dial it are refused and try the
//! next endpoint.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::api::{Api, ListParams};
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use splai_protocol::{AckMode, Authenticate, Inbound, Server, ServerConfig, TlsNet, TokioNet};
use splai_scheduler::{Settings, Timestamp};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::agent_auth::TokenReviewer;
use crate::artifacts::{ArtifactError, Artifacts};
use crate::driver::{Driver, DriverConfig, Input, Listed};
use crate::flush::Flusher;
use crate::leader::{Elector, LeaseConfig, LeaseError};
use crate::metrics::Metrics;
use crate::resources::{SPLAIJob, SPLAIModelRoute, SPLAIPolicy, SPLAIWorker};
use crate::watch::{Feed, Index, trim};

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch jobs, policies and routes in this namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Where `SPLAIWorker`s live.
    pub worker_namespace: String,
    /// Where agents connect, such as `0.0.0.0:7400`.
    pub agent_listen: String,
    /// Where the records and results go, such as `file:///var/lib/splai/artifacts`.
    pub artifacts: String,
    pub lease: LeaseConfig,
    /// How often pending writes are flushed to the API.
    pub flush_interval: Duration,
    /// Rewrite a heartbeating worker's status at least this often.
    pub worker_refresh: Duration,
    pub settings: Settings,
    /// The service account (`system:serviceaccount:NS:NAME`) whose node-bound tokens agents
    /// must register with; `None` accepts any agent that can reach `agent_listen`.
    pub agent_account: Option<String>,
    /// TLS for the agent endpoint; `None` speaks plain TCP (loopback, tests).
    pub agent_tls: Option<Arc<crate::tls::ServerConfig>>,
}

impl OperatorConfig {
    /// One replica confined to `namespace` (its jobs, workers and lease), with a short lease
    /// and quick flushes: for a laptop, a CI job or a test.
    pub fn in_namespace(namespace: &str, agent_listen: String, artifacts: String) -> Self {
        OperatorConfig {
            namespace: Some(namespace.to_owned()),
            worker_namespace: namespace.to_owned(),
            agent_listen,
            artifacts,
            lease: LeaseConfig {
                namespace: namespace.to_owned(),
                name: "splai-operator".into(),
                identity: "splai-operator-0".into(),
                duration: Duration::from_secs(3),
                renew_every: Duration::from_secs(1),
            },
            flush_interval: Duration::from_millis(50),
            worker_refresh: Duration::from_secs(30),
            settings: Settings::default(),
            agent_account: None,
            agent_tls: None,
        }
    }
}

/// Wall-clock time as the core counts it.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Why the operator stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        source: kube::Error,
    },
    #[error("reading the records of {job}: {source}")]
    Records { job: String, source: ArtifactError },
    #[error("listening for agents on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("every watch and the agent endpoint stopped")]
    InputsClosed,
    #[error("the flusher stopped")]
    FlusherStopped,
    #[error("an operator task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Waits to lead, then leads until the lease is lost (an error: the process should exit and
/// be restarted as a standby) or leading fails.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
) -> Result<(), OperatorError> {
    let elector = Elector::new(client.clone(), config.lease.clone());
    elector.acquire().await;
    metrics.leader.set(1);
    let result = tokio::select! {
        r = lead(client, &config, metrics.clone()) => r,
        lost = elector.keep() => Err(lost.into()),
    };
    metrics.leader.set(0);
    result
}

/// An API of `namespace`, or of every namespace when `None`.
pub(crate) fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Every job, listed in pages: tens of thousands of jobs in one answer would be hundreds of
/// megabytes held at once, by the API server and by this process. Each job's `managedFields`,
/// which the rebuild does not read, is dropped as its page arrives.
async fn list_jobs(api: &Api<SPLAIJob>) -> Result<Vec<SPLAIJob>, kube::Error> {
    const PAGE: u32 = 500;
    let mut jobs = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        jobs.extend(page.items.into_iter().map(|mut j| {
            j.metadata.managed_fields = None;
            j
        }));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(jobs);
        }
    }
}

/// Lists the four resources and reads the records of the jobs still running.
async fn read_back(
    artifacts: &Artifacts,
    jobs_api: &Api<SPLAIJob>,
    workers_api: &Api<SPLAIWorker>,
    policies_api: &Api<SPLAIPolicy>,
    routes_api: &Api<SPLAIModelRoute>,
) -> Result<Listed, OperatorError> {
    let lp = ListParams::default();
    let listing = |what| move |source| OperatorError::List { what, source };
    let jobs = list_jobs(jobs_api).await.map_err(listing("SPLAIJobs"))?;
    let mut listed = Listed {
        workers: workers_api
            .list(&lp)
            .await
            .map_err(listing("SPLAIWorkers"))?
            .items,
        policies: policies_api
            .list(&lp)
            .await
            .map_err(listing("SPLAIPolicies"))?
            .items,
        routes: routes_api
            .list(&lp)
            .await
            .map_err(listing("SPLAIModelRoutes"))?
            .items,
        ..Listed::default()
    };
    for (key, dir) in Listed::running_jobs(&jobs) {
        let records = artifacts
            .records(&dir)
            .await
            .map_err(|source| OperatorError::Records {
                job: key.clone(),
                source,
            })?;
        listed.records.insert(key, records);
    }
    listed.jobs = jobs;
    Ok(listed)
}

async fn lead(
    client: Client,
    config: &OperatorConfig,
    metrics: Arc<Metrics>,
) -> Result<(), OperatorError> {
    let artifacts = Artifacts::open(&config.artifacts)?;
    let ns = config.namespace.as_deref();
    let jobs_api: Api<SPLAIJob> = scoped(&client, ns);
    let workers_api: Api<SPLAIWorker> = Api::namespaced(client.clone(), &config.worker_namespace);
    let policies_api: Api<SPLAIPolicy> = scoped(&client, ns);
    let routes_api: Api<SPLAIModelRoute> = scoped(&client, ns);

    // Everything the previous leader left, then the core rebuilt from it. A new leader often
    // starts while the API server is away (that may be why the old one went): it keeps trying
    // for as long as it holds the lease, rather than exit and be restarted to try again.
    let mut pause = Duration::from_millis(500);
    let listed = loop {
        match read_back(
            &artifacts,
            &jobs_api,
            &workers_api,
            &policies_api,
            &routes_api,
        )
        .await
        {
            Ok(listed) => break listed,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "reading the state to rebuild from failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    };
    let feeds = Feeds::seeded(&listed);
    let restored = listed.jobs.len();
    let cfg = DriverConfig {
        worker_namespace: config.worker_namespace.clone(),
        worker_refresh_ms: u64::try_from(config.worker_refresh.as_millis()).unwrap_or(u64::MAX),
    };
    let started = std::time::Instant::now();
    let mut driver = Driver::rebuild(cfg, config.settings.clone(), metrics.clone(), listed, now());
    metrics.decided(started.elapsed(), driver.take_assigned());
    tracing::info!(jobs = restored, "rebuilt the scheduler from the API");

    let authenticate = config.agent_account.clone().map(|account| {
        let reviewer = TokenReviewer {
            client: client.clone(),
            account,
            metrics: metrics.clone(),
        };
        Arc::new(reviewer) as Arc<dyn Authenticate>
    });
    let server_config = ServerConfig {
        ack: AckMode::ByDriver,
        authenticate,
        ..ServerConfig::default()
    };
    let listening = |source| OperatorError::Listen {
        addr: config.agent_listen.clone(),
        source,
    };
    // Every task below ends when `lead` is dropped: the set aborts them.
    let mut tasks = JoinSet::new();
    let (tx, mut inputs) = mpsc::channel::<Input>(1024);
    let (agent_tx, mut agent_rx) = mpsc::channel::<Inbound>(1024);
    let control = match &config.agent_tls {
        Some(tls) => {
            let net = TlsNet::server(tls.clone());
            let server = Server::bind(net, &config.agent_listen, server_config)
                .await
                .map_err(listening)?;
            let control = server.handle();
            tasks.spawn(server.serve(agent_tx));
            control
        }
        None => {
            let server = Server::bind(TokioNet, &config.agent_listen, server_config)
                .await
                .map_err(listening)?;
            let control = server.handle();
            tasks.spawn(server.serve(agent_tx));
            control
        }
    };
    let forward = tx.clone();
    tasks.spawn(async move {
        while let Some(inbound) = agent_rx.recv().await {
            if forward.send(Input::Agent(inbound)).await.is_err() {
                return;
            }
        }
    });
    tasks.spawn(feeds.jobs.run(jobs_api, tx.clone(), metrics.clone()));
    tasks.spawn(feeds.workers.run(workers_api, tx.clone(), metrics.clone()));
    tasks.spawn(
        feeds
            .policies
            .run(policies_api, tx.clone(), metrics.clone()),
    );
    tasks.spawn(feeds.routes.run(routes_api, tx, metrics.clone()));

    let reporter = Reporter {
        controller: crate::flush::MANAGER.into(),
        instance: Some(config.lease.identity.clone()),
    };
    let flusher = Flusher {
        reporter,
        client,
        artifacts,
        metrics: metrics.clone(),
    };
    let (flush_tx, mut flush_rx) = mpsc::channel(1);
    let (done_tx, mut done_rx) = mpsc::channel(1);
    tasks.spawn(async move {
        while let Some(flush) = flush_rx.recv().await {
            let done = flusher.run(flush).await;
            if done_tx.send(done).await.is_err() {
                return;
            }
        }
    });

    let mut flush_tick = tokio::time::interval(config.flush_interval);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushing = false;
    loop {
        let t = now();
        let wake = match driver.next_wakeup() {
            Some(at) => {
                Instant::now() + Duration::from_millis(at.millis().saturating_sub(t.millis()))
            }
            None => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => {
                flushing = false;
                let acks = timed(&mut driver, &metrics, |d| d.flushed(done, now()));
                for (worker, connection) in acks {
                    if let Err(e) = control.ack(&worker, connection) {
                        tracing::debug!(%worker, error = %e, "answering a heartbeat failed");
                    }
                }
            }
            input = inputs.recv() => match input {
                Some(input) => timed(&mut driver, &metrics, |d| d.input(input, now())),
                None => return Err(OperatorError::InputsClosed),
            },
            () = sleep_until(wake) => timed(&mut driver, &metrics, |d| d.tick(now())),
            _ = flush_tick.tick(), if !flushing => {
                if let Some(flush) = driver.take_flush(now()) {
                    flushing = true;
                    flush_tx.send(flush).await.map_err(|_| OperatorError::FlusherStopped)?;
                }
            }
            Some(ended) = tasks.join_next() => {
                ended?;
            }
        }
        for (worker, message) in driver.outbox.drain(..) {
            if let Err(e) = control.send(&worker, message) {
                tracing::debug!(%worker, error = %e, "not sent; the core requeues it if the worker stays away");
            }
        }
    }
}

/// One call into the driver, timed for the decision-latency metric: the driver reads no clock.
fn timed<T>(driver: &mut Driver, metrics: &Metrics, call: impl FnOnce(&mut Driver) -> T) -> T {
    let started = std::time::Instant::now();
    let out = call(driver);
    metrics.decided(started.elapsed(), driver.take_assigned());
    out
}

/// The four watches, each with an index that starts from what the leader listed.
struct Feeds {
    jobs: Feed<SPLAIJob>,
    workers: Feed<SPLAIWorker>,
    policies: Feed<SPLAIPolicy>,
    routes: Feed<SPLAIModelRoute>,
}

impl Feeds {
    fn seeded(listed: &Listed) -> Feeds {
        Feeds {
            jobs: Feed {
                kind: "job",
                index: Index::new(trim::job, &listed.jobs),
                applied: Input::JobApplied,
                deleted: Input::JobDeleted,
            },
            workers: Feed {
                kind: "worker",
                index: Index::new(trim::worker, &listed.workers),
                applied: Input::WorkerApplied,
                deleted: Input::WorkerDeleted,
            },
            policies: Feed {
                kind: "policy",
                index: Index::new(trim::policy, &listed.policies),
                applied: Input::PolicyApplied,
                deleted: Input::PolicyDeleted,
            },
            routes: Feed {
                kind: "route",
                index: Index::new(trim::route, &listed.routes),
                applied: Input::RouteApplied,
                deleted: Input::RouteDeleted,
            },
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    axum::serve(listener, app).await
}

/// Completes on Ctrl-C or SIGTERM (what Kubernetes sends a pod it stops), so the binaries end
/// cleanly either way: servers drain, spans are flushed.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGTERM; only Ctrl-C stops this");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
