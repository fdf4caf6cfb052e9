//! What people see: `kubectl describe`, Events and `/metrics`.

use std::time::Duration;

use splai_scheduler::api::{JobPhase, JobSpec, Resources, TaskSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Harness, caps};

fn task(id: &str, command: &[&str], cpu_millis: u32) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        resources: Resources {
            cpu_millis,
            memory_mib: 256,
            gpus: 0,
        },
        ..TaskSpec::default()
    }
}

fn kubectl(args: &[&str]) -> String {
    let bin = std::env::var("SPLAI_K8S_BIN").expect("SPLAI_K8S_BIN (run scripts/test.sh)");
    let kubeconfig = splai_testbed::shared().unwrap().kubeconfig().to_owned();
    let out = std::process::Command::new(format!("{bin}/kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_each_score_term_of_a_placement_and_why_a_task_waits() {
    let mut h = Harness::new("describe").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![
            task("runner", &["hang"], 1000),
            task("too-big", &[], 64_000),
        ],
        ..JobSpec::default()
    };
    h.submit("explained", spec).await.unwrap();
    let job = h
        .wait_job("explained", Duration::from_secs(60), |j| {
            j.status.as_ref().is_some_and(|s| {
                s.job.progress.running == 1
                    && s.job.tasks.iter().any(|t| t.pending_reason.is_some())
            })
        })
        .await
        .unwrap();
    let status = job.status.unwrap();
    let runner = status.job.tasks.iter().find(|t| t.id == "runner").unwrap();
    let score = runner
        .score
        .clone()
        .expect("the running task shows its score");
    for term in [
        "capability_match",
        "model_warm_cache",
        "locality_score",
        "packing",
        "queue_penalty",
        "latency_prediction",
        "w1",
    ] {
        assert!(score.contains(term), "{term} missing from {score}");
    }
    let waiting = status.job.tasks.iter().find(|t| t.id == "too-big").unwrap();
    let reason = waiting.pending_reason.clone().unwrap();
    assert!(reason.contains("cpu"), "{reason}");

    let described = kubectl(&["describe", "sj", "explained", "-n", &h.ns]);
    assert!(described.contains("capability_match"), "{described}");
    assert!(described.contains(&reason), "{described}");
    assert!(described.contains("Task Phases:"), "{described}");
    // The admission is an Event on the job (as are its end and any warning).
    let events = kubectl(&[
        "get",
        "events",
        "-n",
        &h.ns,
        "--field-selector",
        "involvedObject.name=explained",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("Admitted"), "{events}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_of_an_ended_job_shows_each_tasks_worker_and_score() {
    let mut h = Harness::new("describe-ended").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    h.agent("w2", caps(4000));
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("greet-a", &[], 500), task("greet-b", &[], 500)],
        ..JobSpec::default()
    };
    h.submit("hello", spec).await.unwrap();
    h.wait_phase("hello", JobPhase::Completed).await.unwrap();
    let described = kubectl(&["describe", "sj", "hello", "-n", &h.ns]);
    assert!(
        described
            .lines()
            .any(|l| l.trim_start().starts_with("Task Phases:") && l.trim_end().ends_with(" SS")),
        "{described}"
    );
    for id in ["greet-a", "greet-b"] {
        // kubectl prints each listed task's fields in a block of its own.
        let (_, status) = described.split_once("\nStatus:").expect("a status");
        let block = status
            .split("Id:")
            .find(|b| b.trim_start().starts_with(id))
            .unwrap_or_else(|| panic!("{id} is not listed: {described}"));
        assert!(block.contains("Worker:"), "{id}: {block}");
        assert!(
            block.contains("Score:") && block.contains("splai chose w"),
            "{id}: {block}"
        );
        assert!(block.contains("queue_penalty"), "{id}: {block}");
    }
    h.shutdown().await;
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_reconciles_decision_latency_queue_depth_heartbeats_and_jobs_by_phase() {
    let mut h = Harness::new("metrics").await.unwrap();
    h.operator("op-0");
    h.agent("w1", caps(4000));
    let spec = JobSpec {
        tenant: "team-a".into(),
        tasks: vec![task("a", &[], 1000), task("b", &[], 1000)],
        ..JobSpec::default()
    };
    h.submit("measured", spec).await.unwrap();
    h.wait_phase("measured", JobPhase::Completed).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = h.metrics("op-0");
    tokio::spawn(splai_operator::run::serve_metrics(listener, metrics));
    let page = get(addr, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for series in [
        "splai_reconcile_total{controller=\"job\"}",
        "splai_scheduling_decision_seconds_bucket",
        "splai_scheduling_decision_seconds_count 2",
        "splai_queue_depth 0",
        "splai_heartbeats_total",
        "splai_jobs{phase=\"Completed\"} 1",
        "splai_workers{health=\"Healthy\"} 1",
        "splai_api_writes_total{kind=\"job_status\"}",
        "splai_leader 1",
    ] {
        assert!(page.contains(series), "{series} missing from\n{page}");
    }
    assert!(get(addr, "/healthz").await.ends_with("ok"));
    h.shutdown().await;
}
