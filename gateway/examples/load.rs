//! The gateway under load, on loopback against a local real API server (`splai-testbed`): an
//! open-loop generator sends requests at a fixed rate, whatever the answers' pace, and times each
//! from the moment it was due (so a slow answer delays no later request and hides no queueing).
//! It reports per operation the latency percentiles and any answer other than the expected one,
//! and the CPU time per request of the gateway, kube-apiserver and etcd. The same reads sent
//! straight to kube-apiserver at the same rate first give the baseline the gateway adds to.
//!
//!     scripts/k8s-testbin.sh   # once; then export SPLAI_K8S_BIN=<the path it prints>
//!     cargo build --release -p splai-gateway --bin splai-gateway --example load
//!     target/release/examples/load --rate 200 --seconds 30
//!
//! The mix, per 20 requests: 14 reads of one job, 2 lists of the tenant's jobs, 2 submissions,
//! and 2 bad requests (in turn: no valid token, a name no job can have, a body that is not JSON,
//! a job the tenant does not have, a spec naming another tenant), each with the 4xx it must get.
//!
//! The gateway runs as its own process (the release binary next to this one) over HTTPS with a
//! certificate from its `--tls-cert-dir`, as in a cluster. A hand-written generator rather than
//! a tool such as vegeta: it needs the test bed's API server, tenants and jobs set up first, and
//! its baseline phase speaks to kube-apiserver with the Kubernetes client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::Api;
use reqwest::StatusCode;
use serde_json::{Value, json};
use splai_operator::SPLAIJob;
use splai_testbed::measure::{cpu_seconds, memory_kib, percentile};
use tokio::sync::Mutex;

/// The gateway's load benchmark (see the top of the file).
#[derive(clap::Parser)]
struct Args {
    /// Requests per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    tenants: u16,
    /// Jobs each tenant has before the run.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
}

/// One kind of request and the status it must get.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    Get,
    List,
    Submit,
    BadToken,
    BadName,
    BadBody,
    UnknownJob,
    OtherTenantInSpec,
    /// The baseline: a GET of a job straight from kube-apiserver.
    ApiServerGet,
}

impl Op {
    /// The request at position `i` of the mix.
    fn nth(i: usize) -> Op {
        match i % 20 {
            0..=13 => Op::Get,
            14 | 15 => Op::List,
            16 | 17 => Op::Submit,
            _ => [
                Op::BadToken,
                Op::BadName,
                Op::BadBody,
                Op::UnknownJob,
                Op::OtherTenantInSpec,
            ][(i / 20) % 5],
        }
    }

    fn expected(self) -> StatusCode {
        match self {
            Op::Get | Op::List | Op::ApiServerGet => StatusCode::OK,
            Op::Submit => StatusCode::CREATED,
            Op::BadToken => StatusCode::UNAUTHORIZED,
            Op::BadName | Op::BadBody => StatusCode::BAD_REQUEST,
            Op::UnknownJob => StatusCode::NOT_FOUND,
            Op::OtherTenantInSpec => StatusCode::FORBIDDEN,
        }
    }
}

fn job(name: &str) -> Value {
    json!({"name": name, "spec": {"tasks": [
        {"id": "step", "kind": "command", "command": ["true"],
         "resources": {"cpuMillis": 100, "memoryMib": 16}}
    ]}})
}

struct Target {
    http: reqwest::Client,
    base: String,
    tokens: Vec<String>,
    apiserver: Vec<Api<SPLAIJob>>,
    jobs: usize,
}

impl Target {
    /// Sends request `i` of the mix (or of the baseline) and returns its status.
    async fn send(&self, i: usize, op: Op) -> Result<StatusCode> {
        let tenant = i % self.tokens.len();
        let token = &self.tokens[tenant];
        let some_job = format!("seed-{:04}", (i / self.tokens.len()) % self.jobs);
        let base = &self.base;
        let request = match op {
            Op::ApiServerGet => {
                self.apiserver[tenant].get(&some_job).await?;
                return Ok(StatusCode::OK);
            }
            Op::Get => self
                .http
                .get(format!("{base}/v1/jobs/{some_job}"))
                .bearer_auth(token),
            Op::List => self.http.get(format!("{base}/v1/jobs")).bearer_auth(token),
            Op::Submit => self
                .http
                .post(format!("{base}/v1/jobs"))
                .bearer_auth(token)
                .json(&job(&format!("load-{i:07}"))),
            Op::BadToken => self
                .http
                .get(format!("{base}/v1/jobs/{some_job}"))
                .bearer_auth("not-a-token-of-anyone-0000"),
            Op::BadName => self
                .http
                .get(format!("{base}/v1/jobs/Not_A_Name"))
                .bearer_auth(token),
            Op::BadBody => self
                .http
                .post(format!("{base}/v1/jobs"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body("{\"name\": \"x\", \"spec\": "),
            Op::UnknownJob => self
                .http
                .get(format!("{base}/v1/jobs/absent-{i}"))
                .bearer_auth(token),
            Op::OtherTenantInSpec => {
                let mut body = job(&format!("stolen-{i}"));
                body["spec"]["tenant"] = json!("someone-else");
                self.http
                    .post(format!("{base}/v1/jobs"))
                    .bearer_auth(token)
                    .json(&body)
            }
        };
        let response = request.send().await?;
        let status = response.status();
        // The answer counts once it has all arrived.
        response.bytes().await?;
        Ok(status)
    }
}

#[derive(Default)]
struct Samples {
    /// (operation, seconds from due to answered, status as expected)
    done: Vec<(Op, f64, bool)>,
    failed: Vec<String>,
}

/// Sends `count` requests at `rate` per second, request `i` being `op(i)`, each timed from the
/// moment it was due. At most `cap` are in flight; a request due while that many are is counted
/// as not sent (a sign the rate is past what the system takes).
async fn open_loop(
    target: Arc<Target>,
    rate: f64,
    count: usize,
    op: fn(usize) -> Op,
) -> (Samples, usize, f64) {
    const CAP: usize = 2_000;
    let samples = Arc::new(Mutex::new(Samples::default()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(CAP));
    let mut not_sent = 0;
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for i in 0..count {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let (target, samples) = (target.clone(), samples.clone());
        tasks.spawn(async move {
            let op = op(i);
            let result = target.send(i, op).await;
            let took = due.elapsed().as_secs_f64();
            let mut s = samples.lock().await;
            match result {
                Ok(status) => s.done.push((op, took, status == op.expected())),
                Err(e) => s.failed.push(format!("{op:?}: {e:#}")),
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = t0.elapsed().as_secs_f64();
    let samples = Arc::try_unwrap(samples)
        .map_err(|_| ())
        .expect("every request has ended")
        .into_inner();
    (samples, not_sent, wall)
}

fn report(title: &str, samples: &Samples, not_sent: usize, wall: f64) {
    let sent = samples.done.len() + samples.failed.len();
    println!(
        "{title}: {sent} requests in {wall:.1} s ({:.0}/s), {not_sent} not sent (in-flight cap), {} without an answer",
        sent as f64 / wall,
        samples.failed.len()
    );
    for e in samples.failed.iter().take(5) {
        println!("  no answer: {e}");
    }
    println!("| operation | expected | n | wrong status | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut ops: Vec<Op> = samples.done.iter().map(|(op, ..)| *op).collect();
    ops.sort();
    ops.dedup();
    let mut all: Vec<f64> = Vec::new();
    for op in ops {
        let mut took: Vec<f64> = samples
            .done
            .iter()
            .filter(|(o, ..)| *o == op)
            .map(|(_, t, _)| t * 1000.0)
            .collect();
        let wrong = samples
            .done
            .iter()
            .filter(|(o, _, ok)| *o == op && !ok)
            .count();
        all.extend(&took);
        took.sort_by(f64::total_cmp);
        println!(
            "| {op:?} | {} | {} | {wrong} | {:.1} | {:.1} | {:.1} | {:.1} |",
            op.expected().as_u16(),
            took.len(),
            percentile(&took, 0.5),
            percentile(&took, 0.9),
            percentile(&took, 0.99),
            took.last().copied().unwrap_or(f64::NAN),
        );
    }
    all.sort_by(f64::total_cmp);
    println!(
        "| all | | {} | | {:.1} | {:.1} | {:.1} | {:.1} |",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
    );
}

/// A certificate for 127.0.0.1 in `dir` as `tls.crt` and `tls.key`; its PEM.
fn certificate(dir: &std::path::Path) -> Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
    let cert = params.self_signed(&key)?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    Ok(cert.pem())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if args.rate <= 0.0 || args.seconds <= 0.0 {
        bail!("--rate and --seconds must be positive");
    }
    let cp = splai_testbed::shared()?;
    let client = cp.client().await?;
    splai_operator::crd::install(&client).await?;

    let work = std::env::temp_dir().join(format!("splai-load-{}", std::process::id()));
    std::fs::create_dir_all(work.join("tls"))?;
    let cert_pem = certificate(&work.join("tls"))?;
    let mut tokens_yaml = String::from("tenants:\n");
    let (mut tokens, mut apiserver) = (Vec::new(), Vec::new());
    for t in 0..usize::from(args.tenants) {
        let (_, ns) = splai_testbed::namespace("load").await?;
        let token = format!("load-token-of-tenant-{t}-0123456789");
        tokens_yaml.push_str(&format!(
            "- {{token: {token}, tenant: t{t}, namespace: {ns}}}\n"
        ));
        tokens.push(token);
        apiserver.push(Api::namespaced(client.clone(), &ns));
    }
    std::fs::write(work.join("tokens.yaml"), tokens_yaml)?;

    let exe = std::env::current_exe()?;
    let gateway_bin: PathBuf = exe
        .parent()
        .and_then(|p| p.parent())
        .context("the example's folder")?
        .join("splai-gateway");
    let port = splai_testbed::free_port()?;
    let mut gateway = std::process::Command::new(&gateway_bin)
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tokens")
        .arg(work.join("tokens.yaml"))
        .arg("--tls-cert-dir")
        .arg(work.join("tls"))
        .spawn()
        .with_context(|| format!("starting {} (build it first)", gateway_bin.display()))?;
    let gateway_pid = gateway.id();

    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes())?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = format!("https://127.0.0.1:{port}");
    let ready = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the gateway did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = Arc::new(Target {
        http,
        base,
        tokens,
        apiserver,
        jobs: usize::from(args.jobs),
    });
    for (t, token) in target.tokens.iter().enumerate() {
        for j in 0..args.jobs {
            let created = target
                .http
                .post(format!("{}/v1/jobs", target.base))
                .bearer_auth(token)
                .json(&job(&format!("seed-{j:04}")))
                .send()
                .await?;
            if created.status() != StatusCode::CREATED {
                bail!("seeding tenant {t}'s jobs: {}", created.text().await?);
            }
        }
    }

    let count = (args.rate * args.seconds).round() as usize;
    println!(
        "rate {} requests/s for {} s ({count} requests per phase); {} tenants of {} jobs; gateway over HTTPS",
        args.rate, args.seconds, args.tenants, args.jobs
    );
    let pids = [gateway_pid, cp.pids()[1], cp.pids()[0]];
    let cpu = || pids.map(cpu_seconds);

    let before = cpu();
    let (samples, not_sent, wall) =
        open_loop(target.clone(), args.rate, count, |_| Op::ApiServerGet).await;
    let after = cpu();
    report(
        "baseline, GET straight from kube-apiserver",
        &samples,
        not_sent,
        wall,
    );
    let base_requests = samples.done.len().max(1) as f64;
    println!(
        "CPU ms per request: kube-apiserver {:.2}, etcd {:.2}\n",
        (after[1] - before[1]) * 1000.0 / base_requests,
        (after[2] - before[2]) * 1000.0 / base_requests,
    );

    let before = cpu();
    let (samples, not_sent, wall) = open_loop(target.clone(), args.rate, count, Op::nth).await;
    let after = cpu();
    report("through the gateway, the mix", &samples, not_sent, wall);
    let requests = samples.done.len().max(1) as f64;
    println!(
        "CPU ms per request: gateway {:.2}, kube-apiserver {:.2}, etcd {:.2}; gateway memory {:.1} MiB resident, {:.1} MiB peak",
        (after[0] - before[0]) * 1000.0 / requests,
        (after[1] - before[1]) * 1000.0 / requests,
        (after[2] - before[2]) * 1000.0 / requests,
        memory_kib(gateway_pid, "VmRSS:") as f64 / 1024.0,
        memory_kib(gateway_pid, "VmHWM:") as f64 / 1024.0,
    );
    let wrong = samples.done.iter().filter(|(_, _, ok)| !ok).count();
    let _ = gateway.kill();
    let _ = gateway.wait();
    let _ = std::fs::remove_dir_all(&work);
    if wrong > 0 || !samples.failed.is_empty() {
        bail!(
            "{wrong} answers had another status than expected and {} got none",
            samples.failed.len()
        );
    }
    Ok(())
}
