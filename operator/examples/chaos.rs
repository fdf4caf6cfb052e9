//! What SPLAI survives, measured: jobs run on a local real API server (`splai-testbed`) by two
//! operator replicas and real `splai-worker` processes while faults are injected, then every
//! job's records are read back to count tasks lost and results committed twice.
//!
//! The faults, on a fixed timeline from the first submission:
//! - the leading operator is killed (SIGKILL) every `--kill-every` seconds and replaced at once by
//!   a new process with a new identity (as a Deployment replaces a pod), so the standby and the
//!   newcomer race for the lease;
//! - kube-apiserver is killed and restarted once (`--apiserver-at`): every watch breaks, and the
//!   new one has an empty watch cache;
//! - two agents are frozen (SIGSTOP) at `--freeze-at` for `--freeze-for` seconds, longer than the
//!   operator waits before it declares a worker Lost: their tasks run again elsewhere, and what
//!   they report after the thaw must be fenced off.
//!
//! Run it so:
//!
//!     scripts/k8s-testbin.sh   # once; then export SPLAI_K8S_BIN=<the path it prints>
//!     cargo build --release -p splai-operator -p splai-worker --bins --example chaos
//!     target/release/examples/chaos --jobs 1000
//!
//! A benchmark, not a test: it exits non-zero when a task is lost or a result is committed twice,
//! but its timings are only reported. Everything runs on this machine: the two operators and the
//! agents are processes, each task a real command (`sleep`) in the agent's sandbox.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use splai_operator::{SPLAIJob, SPLAIJobSpec};
use splai_scheduler::api::{Dependency, JobPhase, JobSpec, Outcome, Resources, TaskKind, TaskSpec};
use splai_testbed::process::{Reaped, WorkerCommand, signal};

/// The chaos benchmark (see the top of the file). Times are seconds from the first submission.
#[derive(Clone, clap::Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Worker agents; two of them are frozen.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(3..))]
    workers: u16,
    /// Jobs submitted per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long each task sleeps, in milliseconds.
    #[arg(long, default_value_t = 100)]
    task_ms: u64,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    kill_every: u64,
    #[arg(long, default_value_t = 45)]
    apiserver_at: u64,
    #[arg(long, default_value_t = 25)]
    freeze_at: u64,
    #[arg(long, default_value_t = 30)]
    freeze_for: u64,
    /// Give up after this many minutes.
    #[arg(long, default_value_t = 30)]
    limit_minutes: u64,
}

/// Ten tasks: one, eight after it side by side, one after them all.
fn job_spec(task_ms: u64) -> JobSpec {
    let sleep = format!("{:.3}", task_ms as f64 / 1000.0);
    let task = |id: String| TaskSpec {
        id,
        kind: TaskKind::Command,
        command: vec!["sleep".into(), sleep.clone()],
        resources: Resources {
            cpu_millis: 1000,
            memory_mib: 64,
            gpus: 0,
        },
        ..TaskSpec::default()
    };
    let middle: Vec<String> = (1..=8).map(|i| format!("m{i}")).collect();
    let mut tasks = vec![task("first".into())];
    tasks.extend(middle.iter().cloned().map(task));
    tasks.push(task("last".into()));
    let mut dependencies: Vec<Dependency> = middle
        .iter()
        .map(|m| Dependency {
            task: m.clone(),
            depends_on: vec!["first".into()],
        })
        .collect();
    dependencies.push(Dependency {
        task: "last".into(),
        depends_on: middle,
    });
    JobSpec {
        tenant: "chaos".into(),
        tasks,
        dependencies,
        ..JobSpec::default()
    }
}

/// The operator replicas: two slots, each a process that is replaced when killed.
struct Operators {
    bin: PathBuf,
    kubeconfig: PathBuf,
    ns: String,
    artifacts: String,
    settings: PathBuf,
    agent_ports: [u16; 2],
    procs: [Option<(String, Reaped)>; 2],
    started: usize,
}

impl Operators {
    fn start(&mut self, slot: usize) -> Result<()> {
        self.started += 1;
        let identity = format!("op-{slot}-{}", self.started);
        let child = Reaped::spawn(
            Command::new(&self.bin)
                .env("KUBECONFIG", &self.kubeconfig)
                .env("RUST_LOG", "warn")
                .args(["--namespace", &self.ns, "--system-namespace", &self.ns])
                .args(["--identity", &identity, "--lease-seconds", "5"])
                .args([
                    "--agent-listen",
                    &format!("127.0.0.1:{}", self.agent_ports[slot]),
                ])
                .args(["--agent-auth", "none", "--plain-agents"])
                .args([
                    "--metrics-listen",
                    &format!("127.0.0.1:{}", splai_testbed::free_port()?),
                ])
                .args([
                    "--webhook-listen",
                    &format!("127.0.0.1:{}", splai_testbed::free_port()?),
                ])
                .args(["--artifacts", &self.artifacts])
                .arg("--settings")
                .arg(&self.settings),
        )
        .with_context(|| format!("starting {} (build it first)", self.bin.display()))?;
        self.procs[slot] = Some((identity, child));
        Ok(())
    }

    /// Starts again every replica whose process ended on its own (an operator that loses its
    /// lease exits to be restarted as a standby), as the kubelet restarts a container; returns
    /// how many did.
    fn restart_exited(&mut self) -> Result<usize> {
        let mut exited = 0;
        for slot in 0..2 {
            let ended = match &mut self.procs[slot] {
                Some((_, child)) => child.try_wait()?.is_some(),
                None => true,
            };
            if ended {
                exited += 1;
                self.start(slot)?;
            }
        }
        Ok(exited)
    }

    /// Kills the replica holding `identity` and starts its replacement; false if none does.
    fn replace(&mut self, identity: &str) -> Result<bool> {
        let Some(slot) =
            (0..2).find(|&s| self.procs[s].as_ref().is_some_and(|(id, _)| id == identity))
        else {
            return Ok(false);
        };
        // Killed (SIGKILL) and reaped as it is dropped.
        drop(self.procs[slot].take());
        self.start(slot)?;
        Ok(true)
    }
}

/// What the faults did, as the benchmark saw it.
#[derive(Default)]
struct Faults {
    kills: usize,
    /// Operator processes that exited by themselves and were started again.
    exits: usize,
    leaders: BTreeSet<String>,
    apiserver_restarts: usize,
    frozen: usize,
}

/// One job's records, checked.
#[derive(Default)]
struct Tally {
    jobs_completed: usize,
    jobs_failed: usize,
    jobs_unfinished: usize,
    tasks_succeeded: usize,
    /// A task of a job that did not complete, or one with no successful record.
    tasks_lost: usize,
    /// A task with two successful records, or an attempt recorded twice.
    duplicated: usize,
    attempts: usize,
    /// Attempts that ended WorkerLost (the frozen agents' tasks, mostly).
    worker_lost: usize,
}

fn tally(job: &SPLAIJob, records: &[splai_operator::artifacts::AttemptRecord], t: &mut Tally) {
    let tasks = job.spec.0.tasks.len();
    let phase = job.status.as_ref().map(|s| s.job.phase);
    match phase {
        Some(JobPhase::Completed) => t.jobs_completed += 1,
        Some(JobPhase::Failed) => t.jobs_failed += 1,
        _ => t.jobs_unfinished += 1,
    }
    let mut seen = BTreeSet::new();
    let mut successes = BTreeMap::<&str, usize>::new();
    for a in records {
        let r = &a.record;
        t.attempts += 1;
        if !seen.insert((r.task.as_str(), r.attempt)) {
            t.duplicated += 1;
        }
        match r.outcome {
            Outcome::Succeeded => *successes.entry(r.task.as_str()).or_default() += 1,
            Outcome::WorkerLost => t.worker_lost += 1,
            _ => {}
        }
    }
    t.duplicated += successes.values().filter(|&&n| n > 1).count();
    t.tasks_succeeded += successes.len();
    t.tasks_lost += tasks - successes.len();
}

async fn submit_all(
    jobs: Api<SPLAIJob>,
    args: &Args,
    t0: Instant,
    retries: Arc<AtomicUsize>,
) -> Result<()> {
    let spec = job_spec(args.task_ms);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..args.jobs {
        let due = t0 + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
        let (jobs, retries) = (jobs.clone(), retries.clone());
        let job = SPLAIJob::new(&format!("job-{i:05}"), SPLAIJobSpec(spec.clone()));
        set.spawn(async move {
            // Through API-server restarts: a create is retried until it lands; a 409 means an
            // earlier try did land and its answer was lost.
            loop {
                match jobs.create(&PostParams::default(), &job).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(s)) if s.code == 409 => return,
                    Err(_) => {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let cp = tokio::task::spawn_blocking(splai_testbed::ControlPlane::start).await??;
    let kubeconfig = cp.kubeconfig().to_owned();
    let client: Client = cp.client().await?;
    let cp = Arc::new(std::sync::Mutex::new(cp));
    splai_operator::crd::install(&client).await?;
    let ns = "chaos".to_owned();
    splai_testbed::create_namespace(&client, &ns).await?;

    let work = std::env::temp_dir().join(format!("splai-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let artifacts = format!("file://{}", work.join("artifacts").display());
    // A worker silent for 5 s is Stale, for 10 s Lost (defaults 15 s and 60 s). A new leader
    // counts a worker's silence from its own start, so a frozen agent is declared Lost only
    // while one leader lasts long enough: with a kill every 20 s and a 5 s lease, about 15 s.
    // The freeze outlasts that, so the frozen agents' tasks run again elsewhere.
    let settings = work.join("settings.yaml");
    std::fs::write(&settings, "staleAfterMs: 5000\nlostAfterMs: 10000\n")?;
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .context("the example's folder")?
        .to_owned();
    let agent_ports = [splai_testbed::free_port()?, splai_testbed::free_port()?];
    let mut operators = Operators {
        bin: bin_dir.join("splai-operator"),
        kubeconfig: kubeconfig.clone(),
        ns: ns.clone(),
        artifacts: artifacts.clone(),
        settings,
        agent_ports,
        procs: [None, None],
        started: 0,
    };
    operators.start(0)?;
    operators.start(1)?;
    let endpoints = agent_ports.map(|p| format!("127.0.0.1:{p}")).join(",");
    let mut agents = Vec::new();
    for w in 0..args.workers {
        let name = format!("w{w}");
        let work_dir = work.join(format!("work-{name}"));
        let mut command = WorkerCommand {
            bin: &bin_dir.join("splai-worker"),
            name: &name,
            control_plane: &endpoints,
            cpu_millis: 4000,
            artifacts: &artifacts,
            work_dir: &work_dir,
            register_in: Some(&ns),
            kubeconfig: &kubeconfig,
        }
        .command();
        agents.push(Reaped::spawn(&mut command).context("starting splai-worker (build it first)")?);
    }
    // Let a replica lead and the agents register.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let jobs: Api<SPLAIJob> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let retries = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    println!(
        "{} jobs of 10 tasks ({} ms each) at {}/s on {} workers; leader killed every {} s, \
         kube-apiserver restarted at {} s, w0 and w1 frozen at {} s for {} s",
        args.jobs,
        args.task_ms,
        args.rate,
        args.workers,
        args.kill_every,
        args.apiserver_at,
        args.freeze_at,
        args.freeze_for
    );
    let submit = {
        let (jobs, retries, args) = (jobs.clone(), retries.clone(), args.clone());
        tokio::spawn(async move { submit_all(jobs, &args, t0, retries).await })
    };

    let mut faults = Faults::default();
    let limit = Duration::from_secs(args.limit_minutes * 60);
    let mut next_kill = Duration::from_secs(args.kill_every);
    let (mut restarted, mut froze, mut thawed) = (false, false, false);
    let done = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = t0.elapsed();
        faults.exits += operators.restart_exited()?;
        if now >= next_kill {
            // The lease names the leader; while the API server is down, try again shortly.
            if let Ok(lease) = leases.get("splai-operator").await {
                let holder = lease
                    .spec
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                if operators.replace(&holder)? {
                    faults.kills += 1;
                    faults.leaders.insert(holder);
                }
                next_kill += Duration::from_secs(args.kill_every);
            }
        }
        if !froze && now >= Duration::from_secs(args.freeze_at) {
            for child in &agents[..2] {
                signal(child.id(), "-STOP")?;
            }
            faults.frozen = 2;
            froze = true;
        }
        if froze && !thawed && now >= Duration::from_secs(args.freeze_at + args.freeze_for) {
            for child in &agents[..2] {
                signal(child.id(), "-CONT")?;
            }
            thawed = true;
        }
        if !restarted && now >= Duration::from_secs(args.apiserver_at) {
            let cp = cp.clone();
            tokio::task::spawn_blocking(move || cp.lock().unwrap().restart_apiserver()).await??;
            faults.apiserver_restarts += 1;
            restarted = true;
        }
        if submit.is_finished() && thawed && restarted {
            let Ok(list) = jobs.list(&Default::default()).await else {
                continue;
            };
            let ended = list
                .items
                .iter()
                .filter(|j| {
                    j.status
                        .as_ref()
                        .is_some_and(|s| s.job.phase.is_terminal() && s.records_uri.is_some())
                })
                .count();
            if list.items.len() >= args.jobs && ended == list.items.len() {
                break true;
            }
        }
        if now >= limit {
            break false;
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    submit.await??;

    let store = splai_operator::artifacts::Artifacts::open(&artifacts)?;
    let mut t = Tally::default();
    for job in jobs.list(&Default::default()).await?.items {
        let records = match job.status.as_ref().and_then(|s| s.records_uri.clone()) {
            Some(uri) => store.read_attempts(&uri).await?,
            None => Vec::new(),
        };
        tally(&job, &records, &mut t);
    }
    let f = &faults;
    println!(
        "{}: {wall:.0} s; faults: {} leader kills ({} leaders), {} operator exits restarted, {} kube-apiserver restart, {} agents frozen for {} s; {} job creates retried",
        if done { "all jobs ended" } else { "gave up" },
        f.kills,
        f.leaders.len(),
        f.exits,
        f.apiserver_restarts,
        f.frozen,
        args.freeze_for,
        retries.load(Ordering::Relaxed)
    );
    println!(
        "jobs: {} completed, {} failed, {} unfinished; tasks: {} succeeded, {} lost, {} duplicated; \
         attempts: {} ({} ended WorkerLost)",
        t.jobs_completed,
        t.jobs_failed,
        t.jobs_unfinished,
        t.tasks_succeeded,
        t.tasks_lost,
        t.duplicated,
        t.attempts,
        t.worker_lost
    );
    drop(agents);
    drop(operators);
    let _ = std::fs::remove_dir_all(&work);
    if !done || t.tasks_lost > 0 || t.duplicated > 0 || t.jobs_completed != args.jobs {
        bail!("SPLAI did not survive the faults: see the counts above");
    }
    Ok(())
}
