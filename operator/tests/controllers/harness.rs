//! One operator (or two) in this process against the shared real API server, with worker
//! agents that run a fast fake executor, all in a fresh namespace per test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use splai_operator::artifacts::AttemptRecord;
use splai_operator::crd;
use splai_operator::leader::LeaseConfig;
use splai_operator::metrics::Metrics;
use splai_operator::run::{OperatorConfig, OperatorError, run};
use splai_operator::{SPLAIJob, SPLAIJobSpec, SPLAIWorker, SPLAIWorkerStatus};
use splai_protocol::{
    Agent, AgentConfig, AgentHandle, Backoff, Credential, CredentialSource, Executor, Load,
    Outcome, TaskAssignment, TokioNet,
};
use splai_scheduler::Settings;
use splai_scheduler::api::{Capabilities, ExecutionRecord, JobPhase, JobSpec, TaskSpec};
use tokio::task::JoinHandle;

/// What the fake executor did: every attempt it finished, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Ran {
    pub worker: String,
    pub job: String,
    pub task: String,
    pub attempt: u32,
    pub succeeded: bool,
}

/// Runs a task by its `command`:
/// - `["sleep", MS]`: succeed after MS milliseconds;
/// - `["fail", MSG]`: fail with MSG (retryable) every time;
/// - `["fail-first", N, MSG]`: fail the first N attempts, then succeed;
/// - `["hang"]`: never finish (until cancelled);
/// - `["hang-first", N]`: hang on the first N attempts, then succeed;
/// - anything else: succeed after 20 ms.
#[derive(Clone)]
pub struct FakeExecutor {
    pub worker: String,
    pub log: Arc<Mutex<Vec<Ran>>>,
}

impl Executor for FakeExecutor {
    async fn run(&self, task: TaskAssignment) -> Outcome {
        let command = task
            .task_spec
            .as_ref()
            .map(|s| s.command.clone())
            .unwrap_or_default();
        let arg = |i: usize| command.get(i).cloned().unwrap_or_default();
        let outcome = match arg(0).as_str() {
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(arg(1).parse().unwrap_or(20))).await;
                ok(&task)
            }
            "fail" => Outcome::Failed {
                error: arg(1),
                retryable: true,
            },
            "fail-first" if task.attempt <= arg(1).parse().unwrap_or(0) => Outcome::Failed {
                error: arg(2),
                retryable: true,
            },
            "hang" => std::future::pending::<Outcome>().await,
            "hang-first" if task.attempt <= arg(1).parse().unwrap_or(0) => {
                std::future::pending::<Outcome>().await
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ok(&task)
            }
        };
        self.log.lock().unwrap().push(Ran {
            worker: self.worker.clone(),
            job: task.job.clone(),
            task: task.task.clone(),
            attempt: task.attempt,
            succeeded: matches!(outcome, Outcome::Succeeded { .. }),
        });
        outcome
    }

    fn load(&self) -> Load {
        Load::default()
    }
}

fn ok(task: &TaskAssignment) -> Outcome {
    Outcome::Succeeded {
        artifact_uri: Some(format!("mem://{}/{}/{}", task.job, task.task, task.attempt)),
    }
}

/// A running operator replica's task.
pub type Replica = JoinHandle<Result<(), OperatorError>>;

pub struct Harness {
    pub client: Client,
    /// The client the operators use: `client` unless a test routes them another way.
    pub operator_client: Client,
    /// The service account whose node-bound tokens agents must show; `None` trusts any agent.
    pub agent_account: Option<String>,
    /// The credential each agent registers with, by worker name.
    pub credentials: BTreeMap<String, Credential>,
    pub ns: String,
    pub artifacts: PathBuf,
    /// One agent endpoint per operator replica, by identity.
    pub endpoints: BTreeMap<String, String>,
    pub settings: Settings,
    pub lease_seconds: u64,
    pub operators: BTreeMap<String, (Replica, Arc<Metrics>)>,
    pub agents: BTreeMap<String, (AgentHandle, JoinHandle<()>)>,
    pub log: Arc<Mutex<Vec<Ran>>>,
}

/// Fast thresholds, so that lost workers and retries show within seconds.
pub fn fast_settings() -> Settings {
    Settings {
        stale_after_ms: 1_500,
        lost_after_ms: 3_000,
        assignment_grace_ms: 3_000,
        ..Settings::default()
    }
}

impl Harness {
    pub async fn new(test: &str) -> Result<Harness> {
        let (client, ns) = splai_testbed::namespace(test).await?;
        Harness::on(client, ns).await
    }

    /// A harness in namespace `ns`, which exists, of the API server `client` reaches.
    pub async fn on(client: Client, ns: String) -> Result<Harness> {
        crd::install(&client).await?;
        let artifacts = std::env::temp_dir().join(format!("splai-artifacts-{ns}"));
        std::fs::create_dir_all(&artifacts)?;
        Ok(Harness {
            operator_client: client.clone(),
            agent_account: None,
            credentials: BTreeMap::new(),
            client,
            ns,
            artifacts,
            endpoints: BTreeMap::new(),
            settings: fast_settings(),
            lease_seconds: 3,
            operators: BTreeMap::new(),
            agents: BTreeMap::new(),
            log: Arc::default(),
        })
    }

    pub fn config(&mut self, identity: &str) -> OperatorConfig {
        let endpoint = self
            .endpoints
            .entry(identity.to_owned())
            .or_insert_with(splai_testbed::free_endpoint)
            .clone();
        OperatorConfig {
            namespace: Some(self.ns.clone()),
            worker_namespace: self.ns.clone(),
            agent_listen: endpoint,
            artifacts: format!("file://{}", self.artifacts.display()),
            lease: LeaseConfig {
                namespace: self.ns.clone(),
                name: "splai-operator".into(),
                identity: identity.to_owned(),
                duration: Duration::from_secs(self.lease_seconds),
                renew_every: Duration::from_millis(self.lease_seconds * 1000 / 3),
            },
            flush_interval: Duration::from_millis(50),
            worker_refresh: Duration::from_secs(30),
            settings: self.settings.clone(),
            agent_account: self.agent_account.clone(),
            agent_tls: None,
        }
    }

    /// Starts an operator replica.
    pub fn operator(&mut self, identity: &str) -> Arc<Metrics> {
        let config = self.config(identity);
        let metrics = Arc::new(Metrics::default());
        let handle = tokio::spawn(run(self.operator_client.clone(), config, metrics.clone()));
        self.operators
            .insert(identity.to_owned(), (handle, metrics.clone()));
        metrics
    }

    /// Kills a replica as a crash would: no lease release, no last flush.
    pub async fn kill(&mut self, identity: &str) {
        if let Some((handle, _)) = self.operators.remove(identity) {
            handle.abort();
            let _ = handle.await;
        }
    }

    pub fn metrics(&self, identity: &str) -> Arc<Metrics> {
        self.operators[identity].1.clone()
    }

    /// Starts a worker agent that dials every replica's endpoint in turn.
    pub fn agent(&mut self, name: &str, capabilities: Capabilities) {
        self.agent_beating(name, capabilities, Duration::from_millis(250));
    }

    pub fn agent_beating(&mut self, name: &str, capabilities: Capabilities, every: Duration) {
        self.agent_with(name, capabilities, every, Duration::from_secs(2));
    }

    /// An agent that waits up to a minute for a heartbeat's answer before it drops the link.
    /// The operator answers a heartbeat only after the flush that holds the reports before it,
    /// and on a loaded machine the flush of a job with thousands of tasks takes more than the
    /// 2 s the other agents wait: they would drop the link, and the attempts in flight with it.
    pub fn patient_agent(&mut self, name: &str, capabilities: Capabilities) {
        self.agent_with(
            name,
            capabilities,
            Duration::from_millis(250),
            Duration::from_secs(60),
        );
    }

    fn agent_with(
        &mut self,
        name: &str,
        capabilities: Capabilities,
        every: Duration,
        dead_after: Duration,
    ) {
        let endpoints: Vec<String> = self.endpoints.values().cloned().collect();
        let config = AgentConfig {
            heartbeat_interval: every,
            dead_after,
            connect_timeout: Duration::from_secs(2),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(500),
            },
            credential: self
                .credentials
                .get(name)
                .cloned()
                .map(CredentialSource::Fixed),
            ..AgentConfig::new(name, endpoints.join(","), capabilities)
        };
        let executor = FakeExecutor {
            worker: name.to_owned(),
            log: self.log.clone(),
        };
        let (agent, handle) = Agent::new(TokioNet, config, executor);
        let task = tokio::spawn(agent.run());
        self.agents.insert(name.to_owned(), (handle, task));
    }

    pub fn agent_handle(&self, name: &str) -> &AgentHandle {
        &self.agents[name].0
    }

    /// Waits until the agent itself runs `n` attempts (what it does, not what the API says).
    pub async fn wait_agent_running(&self, name: &str, n: usize) -> Result<()> {
        let mut status = self.agent_handle(name).watch();
        tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| s.running == n))
            .await
            .with_context(|| format!("agent {name} never ran {n} attempts"))??;
        Ok(())
    }

    pub fn jobs(&self) -> Api<SPLAIJob> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn submit(&self, name: &str, spec: JobSpec) -> Result<SPLAIJob> {
        let mut job = SPLAIJob::new(name, SPLAIJobSpec(spec));
        job.meta_mut().namespace = Some(self.ns.clone());
        Ok(self.jobs().create(&PostParams::default(), &job).await?)
    }

    /// Waits until the job's phase satisfies `done`; a guard against hanging, not a timing
    /// assertion.
    pub async fn wait_job(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(&SPLAIJob) -> bool,
    ) -> Result<SPLAIJob> {
        let api = self.jobs();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let job = api.get(name).await?;
            if done(&job) {
                return Ok(job);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "job {name} did not get there within {limit:?}; last status: {}",
                    serde_json::to_string_pretty(&job.status).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_phase(&self, name: &str, phase: JobPhase) -> Result<SPLAIJob> {
        self.wait_job(name, Duration::from_secs(90), |j| {
            j.status.as_ref().is_some_and(|s| {
                s.job.phase == phase && (!phase.is_terminal() || s.records_uri.is_some())
            })
        })
        .await
    }

    /// Waits until the worker's stored status satisfies `done`.
    pub async fn wait_worker(
        &self,
        name: &str,
        done: impl Fn(&SPLAIWorkerStatus) -> bool,
    ) -> Result<SPLAIWorkerStatus> {
        let api: Api<SPLAIWorker> = Api::namespaced(self.client.clone(), &self.ns);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = api.get_opt(name).await?.and_then(|w| w.status);
            if let Some(s) = &status
                && done(s)
            {
                return Ok(s.clone());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("worker {name} did not get there in a minute; last status: {status:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The execution records a finished job points to.
    pub fn records(&self, job: &SPLAIJob) -> Result<Vec<ExecutionRecord>> {
        let uri = job
            .status
            .as_ref()
            .and_then(|s| s.records_uri.clone())
            .context("the job has no recordsUri")?;
        let path = uri.strip_prefix("file://").context("a file:// URI")?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .map(|l| serde_json::from_str(l).context("a record"))
            .collect()
    }

    /// [`Harness::records`] with each attempt's decision.
    pub fn attempts(&self, job: &SPLAIJob) -> Result<Vec<AttemptRecord>> {
        let uri = job
            .status
            .as_ref()
            .and_then(|s| s.records_uri.clone())
            .context("the job has no recordsUri")?;
        let path = uri.strip_prefix("file://").context("a file:// URI")?;
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        Ok(splai_operator::artifacts::parse_attempts(&bytes, path)?)
    }

    /// Stops every agent and operator.
    pub async fn shutdown(mut self) {
        for (_, (handle, task)) in std::mem::take(&mut self.agents) {
            let _ = handle.shutdown();
            task.abort();
        }
        let ids: Vec<String> = self.operators.keys().cloned().collect();
        for id in ids {
            self.kill(&id).await;
        }
        let _ = std::fs::remove_dir_all(&self.artifacts);
    }
}

/// A one-cpu task that runs `command` on the fake executor.
pub fn task(id: &str, command: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        resources: splai_scheduler::api::Resources {
            cpu_millis: 1000,
            memory_mib: 256,
            gpus: 0,
        },
        ..TaskSpec::default()
    }
}

pub fn caps(cpu_millis: u32) -> Capabilities {
    Capabilities {
        cpu_millis,
        memory_mib: 16 * 1024,
        ..Capabilities::default()
    }
}
