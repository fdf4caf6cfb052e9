//! The operator's benchmark against a local real API server (`splai-testbed`): how many jobs of
//! ten tasks it carries from submission to Completed per minute, how long each waits to start,
//! and where the CPU time goes (kube-apiserver, etcd, the operator). With `--workers 0` nothing
//! runs, and it reports the operator's memory while it holds every job.
//!
//!     scripts/k8s-testbin.sh   # once; then export SPLAI_K8S_BIN=<the path it prints>
//!     cargo build --release -p splai-operator --bin splai-operator --example throughput
//!     target/release/examples/throughput --jobs 1000 --workers 10
//!     target/release/examples/throughput --jobs 1000 --workers 10 --rate 16.7
//!     target/release/examples/throughput --jobs 10000 --workers 0
//!     target/release/examples/throughput --jobs 1000 --workers 10 --no-finalizer-policy
//!     SPLAI_TESTBED_AUDIT=1 target/release/examples/throughput --jobs 1000 --workers 10
//!
//! The operator runs as its own process (the release binary next to this one), so its memory
//! and CPU are its own. The agents (an instant fake executor) and the submitting client run in
//! this process.

mod bench;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use splai_operator::{SPLAIJob, SPLAIJobSpec};
use splai_protocol::{Agent, AgentConfig, Executor, Outcome, TaskAssignment, TokioNet};
use splai_scheduler::api::Capabilities;
use splai_testbed::measure::{cpu_seconds, memory_kib, percentile};
use tokio::sync::Mutex;

struct Instant0;

impl Executor for Instant0 {
    async fn run(&self, task: TaskAssignment) -> Outcome {
        Outcome::Succeeded {
            artifact_uri: Some(format!("mem://{}/{}", task.job, task.task)),
        }
    }
}

/// The operator's throughput benchmark (see the top of the file).
#[derive(clap::Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    #[arg(long, default_value_t = 10)]
    workers: usize,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Jobs submitted per second; 0 for as fast as the API server takes them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Leave out the job-finalizer admission policy (deploy/kubernetes/job-finalizer), as on a
    /// cluster older than Kubernetes 1.36: the operator then adds each job's finalizer itself.
    #[arg(long)]
    no_finalizer_policy: bool,
}

/// The API requests of the run from kube-apiserver's audit log (from byte `from`), per job, by
/// verb and resource; the benchmark's own requests (a create per job, its watch) are among them.
fn print_requests(log: &std::path::Path, from: u64, jobs: usize) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log)?;
    file.seek(SeekFrom::Start(from))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or("(none)").to_owned();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let verb = event["verb"].as_str().unwrap_or("?").to_owned();
        *counts.entry((verb, resource)).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let writes: usize = counts
        .iter()
        .filter(|((v, _), _)| matches!(v.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|(_, n)| n)
        .sum();
    println!(
        "API requests per job: {:.2} ({:.2} writes); by verb and resource:",
        total as f64 / jobs as f64,
        writes as f64 / jobs as f64
    );
    let mut rows: Vec<_> = counts.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    for ((verb, resource), n) in rows {
        println!(
            "  {verb:>6} {resource:<40} {n:>7}  {:.3} per job",
            n as f64 / jobs as f64
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let cp = splai_testbed::shared()?;
    let client = cp.client().await?;
    let (_, ns) = splai_testbed::namespace("bench").await?;
    splai_operator::crd::install(&client).await?;
    if !args.no_finalizer_policy {
        cp.install_job_finalizer_policy(&client, &ns).await?;
    }

    let agent_port = splai_testbed::free_port()?;
    let artifacts = std::env::temp_dir().join(format!("splai-bench-{ns}"));
    let operator = bench::start_operator(cp, &ns, agent_port, &artifacts, &[])?;
    let op_pid = operator.pid();

    for w in 0..args.workers {
        let caps = Capabilities {
            cpu_millis: 32_000,
            memory_mib: 64 * 1024,
            ..Capabilities::default()
        };
        let config = AgentConfig {
            heartbeat_interval: Duration::from_secs(1),
            ..AgentConfig::new(format!("w{w:03}"), format!("127.0.0.1:{agent_port}"), caps)
        };
        let (agent, _handle) = Agent::new(TokioNet, config, Instant0);
        tokio::spawn(agent.run());
    }
    // Let the operator lead and the workers register.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let jobs: Api<SPLAIJob> = Api::namespaced(client.clone(), &ns);
    let submitted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Arc::new(Mutex::new(HashMap::<String, Instant>::new()));
    let completed = Arc::new(Mutex::new(HashMap::<String, Instant>::new()));
    // Without workers, a job counts once the operator holds it (its first status is written).
    let hold = args.workers == 0;
    let watch = {
        let (jobs, started, completed) = (jobs.clone(), started.clone(), completed.clone());
        tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(jobs, watcher::Config::default()).applied_objects());
            while let Some(Ok(job)) = stream.next().await {
                let Some(status) = &job.status else { continue };
                if status.job.submitted_at.is_none() {
                    continue;
                }
                let name = job.metadata.name.clone().unwrap_or_default();
                let now = Instant::now();
                if status.job.started_at.is_some() {
                    started.lock().await.entry(name.clone()).or_insert(now);
                }
                if hold || status.job.phase.is_terminal() {
                    completed.lock().await.entry(name).or_insert(now);
                }
            }
        })
    };

    // Where the audit log stands: only the requests of the run are counted.
    let audit_from = cp
        .audit_log()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let cpu0 = [
        cpu_seconds(cp.pids()[0]),
        cpu_seconds(cp.pids()[1]),
        cpu_seconds(op_pid),
    ];
    let t0 = Instant::now();
    let rate = args.rate;
    futures::stream::iter(0..args.jobs)
        .for_each_concurrent(args.concurrency, |i| {
            let (jobs, submitted, ns) = (jobs.clone(), submitted.clone(), ns.clone());
            async move {
                if rate > 0.0 {
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let name = format!("job-{i:05}");
                let mut job = SPLAIJob::new(&name, SPLAIJobSpec(bench::job_spec()));
                job.meta_mut().namespace = Some(ns);
                let at = Instant::now();
                match jobs.create(&PostParams::default(), &job).await {
                    Ok(_) => {
                        submitted.lock().await.insert(name, at);
                    }
                    Err(e) => eprintln!("creating {name}: {e}"),
                }
            }
        })
        .await;
    let submit_s = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while completed.lock().await.len() < args.jobs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total_s = t0.elapsed().as_secs_f64();
    let cpu1 = [
        cpu_seconds(cp.pids()[0]),
        cpu_seconds(cp.pids()[1]),
        cpu_seconds(op_pid),
    ];
    let rss = memory_kib(op_pid, "VmRSS:");
    let hwm = memory_kib(op_pid, "VmHWM:");
    watch.abort();

    let submitted = submitted.lock().await;
    let (started, completed) = (started.lock().await, completed.lock().await);
    let mut to_start: Vec<f64> = submitted
        .iter()
        .filter_map(|(n, at)| Some(started.get(n)?.duration_since(*at).as_secs_f64()))
        .collect();
    let mut to_end: Vec<f64> = submitted
        .iter()
        .filter_map(|(n, at)| Some(completed.get(n)?.duration_since(*at).as_secs_f64()))
        .collect();
    to_start.sort_by(f64::total_cmp);
    to_end.sort_by(f64::total_cmp);
    println!("jobs: {} of 10 tasks, workers: {}", args.jobs, args.workers);
    let goal = if hold {
        "held by the operator"
    } else {
        "ended"
    };
    println!(
        "submitted in {submit_s:.1} s; {goal}: {} in {total_s:.1} s",
        completed.len()
    );
    if args.workers > 0 {
        println!(
            "throughput: {:.0} jobs/min (submit of the first to Completed of the last)",
            completed.len() as f64 / total_s * 60.0
        );
        println!(
            "submit -> Running: p50 {:.3} s, p99 {:.3} s; submit -> Completed: p50 {:.3} s, p99 {:.3} s",
            percentile(&to_start, 0.5),
            percentile(&to_start, 0.99),
            percentile(&to_end, 0.5),
            percentile(&to_end, 0.99),
        );
    }
    println!(
        "operator memory: {:.1} MiB resident now, {:.1} MiB peak",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "CPU seconds during the run: etcd {:.1}, kube-apiserver {:.1}, operator {:.1} (wall {total_s:.1} s)",
        cpu1[0] - cpu0[0],
        cpu1[1] - cpu0[1],
        cpu1[2] - cpu0[2]
    );
    println!(
        "kube-apiserver CPU per job: {:.2} ms; operator CPU per job: {:.2} ms",
        (cpu1[1] - cpu0[1]) * 1000.0 / args.jobs as f64,
        (cpu1[2] - cpu0[2]) * 1000.0 / args.jobs as f64,
    );
    if let Some(log) = cp.audit_log() {
        print_requests(&log, audit_from, args.jobs)?;
    } else {
        println!(
            "(set {}=1 for API requests per job by verb and resource)",
            splai_testbed::AUDIT_VAR
        );
    }
    drop(operator);
    let _ = std::fs::remove_dir_all(&artifacts);
    Ok(())
}
