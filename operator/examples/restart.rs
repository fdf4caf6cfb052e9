//! How long a new leader takes to act after a failover with many live jobs (issue 19 item 4):
//! from its process start to a fully rebuilt state (every live job back in its core) and to its
//! first decision (a task placed on a worker), and its memory then.
//!
//!     scripts/k8s-testbin.sh   # once; then export SPLAI_K8S_BIN=<the path it prints>
//!     cargo build --release -p splai-operator --bin splai-operator --example restart
//!     target/release/examples/restart --jobs 10000
//!     target/release/examples/restart --jobs 50000
//!
//! A first operator (its own process) takes in `--jobs` jobs of ten tasks while no worker is
//! connected, so every job is admitted and waits: live, with its status written. It is then
//! SIGKILLed, and a second one starts under a new lease name, so that the time measured is the
//! rebuild's and not the lease's expiry (a real takeover waits up to `--lease-seconds`, 15 s by
//! default, on top). One worker agent, in this process, is already trying to connect, every 50 to
//! 200 ms.

mod bench;

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, PostParams};
use splai_operator::{SPLAIJob, SPLAIJobSpec};
use splai_protocol::{Agent, AgentConfig, Executor, Outcome, TaskAssignment, TokioNet};
use splai_scheduler::api::Capabilities;
use splai_testbed::measure::{cpu_seconds, memory_kib};

/// The restart benchmark (see the top of the file).
#[derive(clap::Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// Notes when the first task reaches the worker, and finishes every task at once.
struct FirstTask(Arc<OnceLock<Instant>>);

impl Executor for FirstTask {
    async fn run(&self, task: TaskAssignment) -> Outcome {
        let _ = self.0.set(Instant::now());
        Outcome::Succeeded {
            artifact_uri: Some(format!("mem://{}/{}", task.job, task.task)),
        }
    }
}

/// The sum of a metric's samples on the operator's `/metrics` page (0 if it is not there yet).
fn scrape(port: u16, metric: &str) -> f64 {
    let mut page = String::new();
    let fetched = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        s.read_to_string(&mut page)
    });
    if fetched.is_err() {
        return 0.0;
    }
    page.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// This replica's identity and lease name.
fn lease(name: &str) -> [&str; 4] {
    ["--identity", name, "--lease-name", name]
}

/// Waits until `done` holds, checking every 20 ms; fails after `limit`.
async fn until(what: &str, limit: Duration, done: impl Fn() -> bool) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Instant::now())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let cp = splai_testbed::shared()?;
    let client = cp.client().await?;
    let (_, ns) = splai_testbed::namespace("restart").await?;
    splai_operator::crd::install(&client).await?;
    cp.install_job_finalizer_policy(&client, &ns).await?;
    let agent_port = splai_testbed::free_port()?;
    let artifacts = std::env::temp_dir().join(format!("splai-bench-{ns}"));

    // The first leader takes every job in; no worker is connected, so they all wait.
    let first = bench::start_operator(cp, &ns, agent_port, &artifacts, &lease("first"))?;
    let jobs: Api<SPLAIJob> = Api::namespaced(client.clone(), &ns);
    let t0 = Instant::now();
    futures::stream::iter(0..args.jobs)
        .for_each_concurrent(args.concurrency, |i| {
            let (jobs, ns) = (jobs.clone(), ns.clone());
            async move {
                let name = format!("job-{i:05}");
                let mut job = SPLAIJob::new(&name, SPLAIJobSpec(bench::job_spec()));
                job.meta_mut().namespace = Some(ns);
                if let Err(e) = jobs.create(&PostParams::default(), &job).await {
                    eprintln!("creating {name}: {e}");
                }
            }
        })
        .await;
    println!(
        "created {} jobs in {:.1} s",
        args.jobs,
        t0.elapsed().as_secs_f64()
    );
    let port = first.metrics_port;
    let n = args.jobs as f64;
    until(
        "the first leader taking every job in",
        Duration::from_secs(3600),
        || scrape(port, "splai_jobs") >= n,
    )
    .await?;
    // Its statuses are written at its flushes: wait until each job's is stored.
    until(
        "every job's status stored",
        Duration::from_secs(3600),
        || scrape(port, "splai_api_writes_total{kind=\"job_status\"}") >= n,
    )
    .await?;
    println!(
        "every job live (admitted, status stored) {:.1} s after the first create",
        t0.elapsed().as_secs_f64()
    );
    let first_rss = memory_kib(first.pid(), "VmRSS:");
    drop(first); // SIGKILL

    // The worker is already knocking when the new leader starts.
    let first_task = Arc::new(OnceLock::new());
    let caps = Capabilities {
        cpu_millis: 32_000,
        memory_mib: 64 * 1024,
        ..Capabilities::default()
    };
    // It retries every 50-200 ms, so the first decision times the operator, not the agent's
    // backoff (real agents double theirs up to 30 s: they may be heard from later).
    let config = AgentConfig {
        heartbeat_interval: Duration::from_secs(1),
        backoff: splai_protocol::Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        ..AgentConfig::new("w000", format!("127.0.0.1:{agent_port}"), caps)
    };
    let (agent, _handle) = Agent::new(TokioNet, config, FirstTask(first_task.clone()));
    tokio::spawn(agent.run());

    let apiserver = cp.pids()[1];
    let api_cpu0 = cpu_seconds(apiserver);
    let start = Instant::now();
    let second = bench::start_operator(cp, &ns, agent_port, &artifacts, &lease("second"))?;
    let port = second.metrics_port;
    let rebuilt = until("the rebuild", Duration::from_secs(600), || {
        scrape(port, "splai_jobs") >= n
    })
    .await?;
    let rebuilt_rss = memory_kib(second.pid(), "VmRSS:");
    let decided = until("the first decision", Duration::from_secs(600), || {
        first_task.get().is_some()
    })
    .await
    .map(|_| *first_task.get().unwrap_or(&Instant::now()))?;
    let pid = second.pid();
    let (rss, hwm, cpu) = (
        memory_kib(pid, "VmRSS:"),
        memory_kib(pid, "VmHWM:"),
        cpu_seconds(pid),
    );
    let api_cpu = cpu_seconds(apiserver) - api_cpu0;
    println!("live jobs: {}", args.jobs);
    println!(
        "new leader: rebuilt in {:.2} s, first decision at {:.2} s (from its process start; lease wait excluded)",
        rebuilt.duration_since(start).as_secs_f64(),
        decided.duration_since(start).as_secs_f64()
    );
    println!(
        "new leader memory: {:.1} MiB when rebuilt, {:.1} MiB now, {:.1} MiB peak (the first leader held {:.1} MiB)",
        rebuilt_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        first_rss as f64 / 1024.0
    );
    println!("CPU seconds until then: new leader {cpu:.1}, kube-apiserver {api_cpu:.1}");
    Ok(())
}
