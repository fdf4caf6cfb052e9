//! A scenario run for real: the operator's controllers (`splai_operator::run`, the code the
//! `splai-operator` binary runs) against a real Kubernetes API server, one agent process per
//! simulated worker speaking the real protocol over TCP (`crate::agents`), jobs created as
//! `SPLAIJob` objects at their arrival times, and faults applied to the agents at their times.
//!
//! The agents run the simulator's worker model (`splai_sim::executor`): an attempt sleeps for as
//! long as the scenario says (its duration, the worker's speed, a model load when the model is
//! not warm, the injected failures), and each heartbeat reports the worker's warm models. Only
//! what the tasks do is simulated; every decision, message, status write and record is real.
//!
//! The run is read back from the jobs' final statuses and their `records.jsonl` into the same
//! recorder the simulator fills, so both give the same `summary.json`, `tasks.csv` and `jobs.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use splai_operator::artifacts::parse_attempts;
use splai_operator::metrics::Metrics;
use splai_operator::run::{OperatorConfig, run};
use splai_operator::{
    SPLAIJob, SPLAIJobSpec, SPLAIModelRoute, SPLAIModelRouteSpec, SPLAIPolicy, SPLAIPolicySpec,
};
use splai_scheduler::api::{ExecutionRecord, JobPhase, JobSpec, JobStatus, Outcome};
use splai_sim::calibrate::Admission;
use splai_sim::record::Recorder;
use splai_sim::scenario::{FaultKind, Scenario};
use splai_sim::summary::Counters;
use splai_sim::worker::{self, SimWorker};
use splai_sim::workload::arrivals;
use tokio::task::JoinHandle;

use crate::agents::{self, AgentProcesses, AgentSetup};
use tokio::time::Instant;

/// The least time an agent of a real run waits for a heartbeat's answer before it reconnects.
const AGENT_DEAD_AFTER: Duration = Duration::from_secs(10);

/// How long an agent of a real run waits for a heartbeat's answer, given what the scenario
/// asks. The operator answers a heartbeat once the status writes before it are flushed, which
/// takes real time that a time scale does not shrink: an agent that gave up after three scaled
/// intervals would drop its link, and its attempts, whenever the API server is slow. Only
/// partitions need a short limit, and a real run has none.
pub fn agent_dead_after(scenario: Duration) -> Duration {
    scenario.max(AGENT_DEAD_AFTER)
}

/// How a real run is made.
#[derive(Clone, Debug)]
pub struct RealOptions {
    pub seed: u64,
    /// How often the operator batches its status writes (the binary's `--flush-ms`).
    pub flush_interval: Duration,
    /// How long to wait past the scenario's horizon for the last jobs to end.
    pub grace: Duration,
    /// Where the operator writes the execution records (a folder on this machine); the agent
    /// processes' files go here too.
    pub artifacts: PathBuf,
    /// The `splai-fidelity-agent` program, run once per worker.
    pub agent_program: PathBuf,
}

/// What a real run did, in the simulator's terms.
pub struct RealRun {
    /// Times are milliseconds since the run's start, as in the simulator.
    pub rec: Recorder,
    /// Every job that arrived: its spec (plans expanded) and its final status, every task listed.
    pub jobs: Vec<(String, JobSpec, JobStatus)>,
    pub counters: Counters,
    pub wall_s: f64,
    /// When each job was created and when the operator took it in (ms since the start), for
    /// `splai-sim calibrate`.
    pub admissions: Vec<Admission>,
}

#[derive(Debug, thiserror::Error)]
pub enum RealRunError {
    #[error(
        "faults[{index}] is a `{kind}` fault, which a real run cannot apply yet (only crash, \
         heartbeatLoss, slow and taskFailures): remove it or run the scenario in the simulator only"
    )]
    UnsupportedFault { index: usize, kind: &'static str },
    #[error(
        "job `{0}` cannot be a Kubernetes object name: use lower-case letters, digits and '-', \
         at most 63 characters, starting and ending with a letter or digit"
    )]
    BadJobName(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("installing the splai.io CRDs: {0}")]
    Crds(String),
    #[error("the operator stopped before the run ended: {0}")]
    Operator(String),
    #[error(
        "the operator's agent endpoint {endpoint} did not open within {seconds} s: is another \
         operator holding the `splai-operator` lease of this namespace?"
    )]
    NoEndpoint { endpoint: String, seconds: u64 },
    #[error("cannot create the records folder {}: {error}", path.display())]
    Artifacts {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "cannot start the agent program {}: {error} (build it with `cargo build -p splai-fidelity`; \
         it belongs beside splai-fidelity)",
        program.display()
    )]
    AgentProcess {
        program: PathBuf,
        error: std::io::Error,
    },
    #[error("the execution records of job {job} ({uri}): {reason}")]
    Records {
        job: String,
        uri: String,
        reason: String,
    },
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> RealRunError {
    let what = what.into();
    move |source| RealRunError::Api { what, source }
}

/// The least `assignmentGraceMs` of a real run, in real milliseconds.
pub const MIN_ASSIGNMENT_GRACE_MS: u64 = 5_000;

/// The time-scaled scenario as both runs take it: `scaled` with the limits that guard against
/// lost messages kept above what real messages take. The core judges a heartbeat when it handles
/// it, so a heartbeat the agent sent just before an assignment reached it, handled after a
/// backlog, would find the attempt missing once a scaled grace of 1.5 s has passed; only lost
/// messages need the grace short, and a real run loses none on purpose.
pub fn for_real_time(mut scaled: Scenario) -> Scenario {
    let s = &mut scaled.settings;
    s.assignment_grace_ms = s.assignment_grace_ms.max(MIN_ASSIGNMENT_GRACE_MS);
    scaled
}

/// Checks that every fault of the scenario can be applied to real agents.
pub fn check_faults(sc: &Scenario) -> Result<(), RealRunError> {
    for (index, f) in sc.faults.iter().enumerate() {
        let kind = match f.kind {
            FaultKind::Partition { .. } => "partition",
            FaultKind::Network { .. } => "network",
            _ => continue,
        };
        return Err(RealRunError::UnsupportedFault { index, kind });
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Runs `sc` (already time-scaled if it should be) for real in namespace `ns`, which should
/// hold nothing of SPLAI's. The splai.io CRDs are installed if missing.
pub async fn run_real(
    client: Client,
    ns: &str,
    sc: &Scenario,
    opts: &RealOptions,
) -> Result<RealRun, RealRunError> {
    check_faults(sc)?;
    // The same draws, in the same order, as the simulator's engines.
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let arrivals = arrivals(sc, &mut rng);
    if let Some(a) = arrivals.iter().find(|a| !valid_name(&a.key)) {
        return Err(RealRunError::BadJobName(a.key.clone()));
    }
    let fleet = SimWorker::fleet(sc);
    let boots = worker::boot_times(sc, fleet.len(), &mut rng);

    splai_operator::crd::install(&client)
        .await
        .map_err(|e| RealRunError::Crds(format!("{e:#}")))?;
    create_policies_and_routes(&client, ns, sc).await?;

    std::fs::create_dir_all(&opts.artifacts).map_err(|error| RealRunError::Artifacts {
        path: opts.artifacts.clone(),
        error,
    })?;
    let scenario_file = opts.artifacts.join("scenario.json");
    let json = serde_json::to_vec(sc).expect("a scenario serializes");
    std::fs::write(&scenario_file, json).map_err(|error| RealRunError::Artifacts {
        path: scenario_file.clone(),
        error,
    })?;
    let endpoint = splai_testbed::free_endpoint();
    let config = OperatorConfig {
        flush_interval: opts.flush_interval,
        settings: sc.settings.clone(),
        ..OperatorConfig::in_namespace(
            ns,
            endpoint.clone(),
            format!("file://{}", opts.artifacts.display()),
        )
    };
    let mut operator = tokio::spawn(run(client.clone(), config, Arc::new(Metrics::default())));
    wait_for_endpoint(&endpoint, &mut operator).await?;

    // Time 0 of the run is a moment ahead, so every agent process is up by its boot time.
    let lead = agents::lead_time(fleet.len());
    let start = Instant::now() + lead;
    let epoch_ms = splai_operator::run::now().millis() + lead.as_millis() as u64;
    let setup = AgentSetup {
        program: opts.agent_program.clone(),
        scenario_file,
        seed: opts.seed,
        endpoint: endpoint.clone(),
        key_prefix: format!("{ns}/"),
        epoch_unix_ms: epoch_ms,
        cold_dir: opts.artifacts.clone(),
    };
    let names = fleet.iter().map(|w| w.name.clone()).collect();
    let mut agents = match AgentProcesses::start(setup, names, &boots) {
        Ok(agents) => agents,
        Err(e) => {
            operator.abort();
            return Err(e);
        }
    };
    tokio::time::sleep_until(start).await;

    let jobs_api: Api<SPLAIJob> = Api::namespaced(client.clone(), ns);
    let mut rec = Recorder::for_scenario(sc);
    let timeline = sc.fault_timeline();
    let mut next_fault = 0;
    // Jobs are created on time by a task of their own, each create in flight on its own, so a
    // slow create or a slow poll never delays the next arrival.
    let (created_tx, mut created) = tokio::sync::mpsc::unbounded_channel();
    let submitter = tokio::spawn(submit(
        jobs_api.clone(),
        ns.to_owned(),
        arrivals.clone(),
        start,
        created_tx,
    ));
    let mut submitted = 0;
    let horizon = start + Duration::from_secs(sc.horizon_seconds) + opts.grace;
    let mut ended: BTreeMap<String, SPLAIJob> = BTreeMap::new();
    let mut next_poll = start;
    let result = 'run: loop {
        let wake = timeline.get(next_fault).map_or(next_poll, |f| {
            next_poll.min(start + Duration::from_millis(f.0))
        });
        tokio::select! {
            finished = &mut operator => {
                break Err(RealRunError::Operator(match finished {
                    Ok(Ok(())) => "it returned".into(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => e.to_string(),
                }));
            }
            Some((i, at, outcome)) = created.recv() => {
                let a: &splai_sim::workload::Arrival = &arrivals[i];
                if let Err(e) = outcome {
                    break Err(api(format!("creating SPLAIJob {}", a.key))(e));
                }
                rec.job_arrived(&a.key, &a.spec, &a.durations_ms, at);
                submitted += 1;
                continue;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        while let Some(&(at, i, on)) = timeline.get(next_fault)
            && start + Duration::from_millis(at) <= now
        {
            if let Err(e) = agents.apply(sc, i, on, at).await {
                break 'run Err(e);
            }
            next_fault += 1;
        }
        if now >= next_poll {
            next_poll = now + Duration::from_millis(250);
            let list = match jobs_api.list(&ListParams::default()).await {
                Ok(list) => list,
                Err(e) => break Err(api(format!("listing the jobs of {ns}"))(e)),
            };
            for j in list {
                let done = j
                    .status
                    .as_ref()
                    .is_some_and(|s| s.job.phase.is_terminal() && s.records_uri.is_some());
                if done {
                    ended.insert(j.metadata.name.clone().unwrap_or_default(), j);
                }
            }
            if submitted == arrivals.len() && ended.len() == arrivals.len() {
                break Ok(());
            }
        }
        if now >= horizon {
            break Ok(());
        }
    };
    submitter.abort();
    let wall_s = start.elapsed().as_secs_f64();
    // Jobs still open at the horizon are read as they stand.
    let last = match result {
        Ok(()) => jobs_api
            .list(&ListParams::default())
            .await
            .map_err(api(format!("listing the jobs of {ns}"))),
        Err(e) => Err(e),
    };
    // The jobs carry the operator's finalizer: delete them while the operator still runs, so
    // that nothing is left behind (a namespace deleted with them would hang in Terminating).
    remove_jobs(&jobs_api).await;
    agents.stop().await;
    operator.abort();
    for j in last? {
        ended
            .entry(j.metadata.name.clone().unwrap_or_default())
            .or_insert(j);
    }
    // Whether each attempt loaded its model, as the agents saw it.
    for (key, cold) in agents.cold_loads() {
        rec.cold.insert(key, cold);
    }
    let horizon_ms = sc.horizon_seconds.saturating_mul(1000);
    read_back(sc, epoch_ms, horizon_ms, &arrivals, ended, rec, wall_s)
}

/// Deletes every job of the run and waits up to 20 s for the operator to let them go; a job
/// still there then has its finalizers removed.
async fn remove_jobs(api: &Api<SPLAIJob>) {
    let all = ListParams::default();
    let _ = api.delete_collection(&DeleteParams::default(), &all).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = match api.list(&all).await {
            Ok(list) => list.items,
            Err(_) => return,
        };
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let unfinalize = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
            for j in left {
                if let Some(name) = j.metadata.name {
                    let _ = api.patch(&name, &PatchParams::default(), &unfinalize).await;
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates each job at its arrival time and sends `(index, submitted ms, outcome)` back; the
/// submission time is when the create was sent.
async fn submit(
    api: Api<SPLAIJob>,
    ns: String,
    arrivals: Vec<splai_sim::workload::Arrival>,
    start: Instant,
    created: tokio::sync::mpsc::UnboundedSender<(usize, u64, Result<(), kube::Error>)>,
) {
    let mut creates = tokio::task::JoinSet::new();
    for (i, a) in arrivals.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(a.at_ms)).await;
        let mut job = SPLAIJob::new(&a.key, SPLAIJobSpec(a.spec));
        job.meta_mut().namespace = Some(ns.clone());
        let at = Instant::now().duration_since(start).as_millis() as u64;
        let (api, created) = (api.clone(), created.clone());
        creates.spawn(async move {
            let outcome = api.create(&PostParams::default(), &job).await.map(drop);
            let _ = created.send((i, at, outcome));
        });
        while creates.try_join_next().is_some() {}
    }
    while creates.join_next().await.is_some() {}
}

async fn create_policies_and_routes(
    client: &Client,
    ns: &str,
    sc: &Scenario,
) -> Result<(), RealRunError> {
    let policies: Api<SPLAIPolicy> = Api::namespaced(client.clone(), ns);
    for (name, spec) in &sc.policies {
        let p = SPLAIPolicy::new(name, SPLAIPolicySpec(spec.clone()));
        policies
            .create(&PostParams::default(), &p)
            .await
            .map_err(api(format!("creating SPLAIPolicy {name}")))?;
    }
    let routes: Api<SPLAIModelRoute> = Api::namespaced(client.clone(), ns);
    for (name, spec) in &sc.routes {
        let r = SPLAIModelRoute::new(name, SPLAIModelRouteSpec(spec.clone()));
        routes
            .create(&PostParams::default(), &r)
            .await
            .map_err(api(format!("creating SPLAIModelRoute {name}")))?;
    }
    Ok(())
}

/// Waits until the operator leads and listens for agents.
async fn wait_for_endpoint(
    endpoint: &str,
    operator: &mut JoinHandle<Result<(), splai_operator::run::OperatorError>>,
) -> Result<(), RealRunError> {
    const LIMIT: Duration = Duration::from_secs(60);
    let deadline = Instant::now() + LIMIT;
    loop {
        if tokio::net::TcpStream::connect(endpoint).await.is_ok() {
            return Ok(());
        }
        if operator.is_finished() {
            let why = match operator.await {
                Ok(Ok(())) => "it returned".into(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            };
            return Err(RealRunError::Operator(why));
        }
        if Instant::now() > deadline {
            return Err(RealRunError::NoEndpoint {
                endpoint: endpoint.to_owned(),
                seconds: LIMIT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The records a job's status points to (`file://` only: the operator of a real run writes them
/// on this machine).
fn records(job: &str, uri: &str) -> Result<Vec<ExecutionRecord>, RealRunError> {
    let err = |reason: String| RealRunError::Records {
        job: job.to_owned(),
        uri: uri.to_owned(),
        reason,
    };
    let path = uri
        .strip_prefix("file://")
        .ok_or_else(|| err("not a file:// URI".into()))?;
    let bytes = std::fs::read(Path::new(path)).map_err(|e| err(e.to_string()))?;
    let attempts = parse_attempts(&bytes, path).map_err(|e| err(e.to_string()))?;
    Ok(attempts.into_iter().map(|a| a.record).collect())
}

/// Fills the recorder from the jobs' final statuses and records.
#[allow(clippy::too_many_arguments)]
fn read_back(
    sc: &Scenario,
    epoch_ms: u64,
    horizon_ms: u64,
    arrivals: &[splai_sim::workload::Arrival],
    mut ended: BTreeMap<String, SPLAIJob>,
    mut rec: Recorder,
    wall_s: f64,
) -> Result<RealRun, RealRunError> {
    let mut jobs = Vec::new();
    let mut counters = Counters::default();
    let mut all: Vec<ExecutionRecord> = Vec::new();
    let mut admissions = Vec::new();
    for a in arrivals {
        let Some(job) = ended.remove(&a.key) else {
            continue; // never created: the run stopped first
        };
        let mut spec = a.spec.clone();
        // The planner's expansion, as the core makes it: ids and resources of every task.
        let _ = splai_scheduler::plan::expand_into(&mut spec, sc.settings.limits.max_tasks_per_job);
        let stored = job.status.unwrap_or_default();
        if let Some(row) = rec.jobs.get(&a.key) {
            admissions.push(Admission {
                job: a.key.clone(),
                created_ms: row.submitted_ms,
                admitted_ms: stored
                    .job
                    .submitted_at
                    .map(|t| t.millis().saturating_sub(epoch_ms)),
            });
        }
        let mut recs = match &stored.records_uri {
            Some(uri) => records(&a.key, uri)?,
            None => Vec::new(),
        };
        // The operator keys jobs `<namespace>/<name>`; the simulator by the scenario's name.
        for r in &mut recs {
            r.job.clone_from(&a.key);
        }
        let mut status = splai_operator::view::expand(&stored, &spec, &recs);
        let finished_ms = status
            .finished_at
            .map(|t| t.millis().saturating_sub(epoch_ms));
        // The real run waits a little past the horizon for the last records; a job that ended
        // in that grace did not end within the run, as the simulator counts it.
        if finished_ms.is_some_and(|f| f > horizon_ms) {
            status.phase = JobPhase::Running;
        }
        if let Some(row) = rec.jobs.get_mut(&a.key) {
            row.tasks = spec.tasks.len();
            row.phase = status.phase;
            if status.phase.is_terminal() {
                row.finished_ms = finished_ms;
            }
        }
        counters.timeouts += recs
            .iter()
            .filter(|r| r.outcome == Outcome::TimedOut)
            .count() as u64;
        counters.decisions += recs.len() as u64;
        all.extend(recs);
        jobs.push((a.key.clone(), spec, status));
    }
    // In the order they ended, as the simulator records them.
    all.sort_by(|a, b| {
        (a.finished_at, &a.job, &a.task, a.attempt).cmp(&(
            b.finished_at,
            &b.job,
            &b.task,
            b.attempt,
        ))
    });
    let resources: BTreeMap<(&str, &str), (u32, u32)> = jobs
        .iter()
        .flat_map(|(key, spec, _)| {
            spec.tasks.iter().map(move |t| {
                (
                    (key.as_str(), t.id.as_str()),
                    (t.resources.cpu_millis, t.resources.gpus),
                )
            })
        })
        .collect();
    for r in &all {
        let (cpu, gpus) = resources
            .get(&(r.job.as_str(), r.task.as_str()))
            .copied()
            .unwrap_or((0, 0));
        rec.attempt_ended(r, epoch_ms, cpu, gpus);
    }
    counters.retries = crate::report::retries(&rec.attempts);
    Ok(RealRun {
        rec,
        jobs,
        counters,
        wall_s,
        admissions,
    })
}
