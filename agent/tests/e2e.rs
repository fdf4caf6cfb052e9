//! Real `splai-worker` processes against the operator (in this process) and the real API
//! server: shell commands run in the sandbox, their artifacts land on disk, and an agent killed
//! mid-task is restarted and the task retried under a new attempt, and a frozen agent's late
//! report for an attempt already retried is ignored.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::api::{Api, PostParams};
use splai_operator::metrics::Metrics;
use splai_operator::run::{OperatorConfig, run};
use splai_operator::{SPLAIJob, SPLAIJobSpec};
use splai_scheduler::Settings;
use splai_scheduler::api::{Dependency, JobPhase, JobSpec, Outcome, TaskSpec};
use splai_testbed::process::{Reaped, WorkerCommand};

struct Setup {
    jobs: Api<SPLAIJob>,
    ns: String,
    endpoint: String,
    dir: PathBuf,
    metrics: Arc<Metrics>,
    operator: tokio::task::JoinHandle<Result<(), splai_operator::run::OperatorError>>,
}

async fn setup(test: &str) -> Setup {
    let (client, ns) = splai_testbed::namespace(test).await.unwrap();
    splai_operator::crd::install(&client).await.unwrap();
    let dir = std::env::temp_dir().join(format!("splai-e2e-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoint = splai_testbed::free_endpoint();
    let config = OperatorConfig {
        settings: Settings {
            stale_after_ms: 2_000,
            lost_after_ms: 4_000,
            assignment_grace_ms: 4_000,
            ..Settings::default()
        },
        ..OperatorConfig::in_namespace(
            &ns,
            endpoint.clone(),
            format!("file://{}/records", dir.display()),
        )
    };
    let metrics = Arc::new(Metrics::default());
    let operator = tokio::spawn(run(client.clone(), config, metrics.clone()));
    Setup {
        jobs: Api::namespaced(client, &ns),
        ns,
        endpoint,
        dir,
        metrics,
        operator,
    }
}

/// A real `splai-worker` process, killed when dropped, so a failing test leaves none behind.
fn worker(s: &Setup, name: &str) -> Reaped {
    let artifacts = format!("file://{}/artifacts", s.dir.display());
    let work_dir = s.dir.join(format!("work-{name}"));
    let command = WorkerCommand {
        bin: Path::new(env!("CARGO_BIN_EXE_splai-worker")),
        name,
        control_plane: &s.endpoint,
        cpu_millis: 4000,
        artifacts: &artifacts,
        work_dir: &work_dir,
        register_in: Some(&s.ns),
        kubeconfig: splai_testbed::shared().unwrap().kubeconfig(),
    };
    Reaped::spawn(&mut command.command()).expect("splai-worker starts")
}

fn shell(id: &str, script: &str) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        resources: splai_scheduler::api::Resources {
            cpu_millis: 1000,
            memory_mib: 128,
            gpus: 0,
        },
        ..TaskSpec::default()
    }
}

async fn submit(s: &Setup, name: &str, spec: JobSpec) {
    let mut job = SPLAIJob::new(name, SPLAIJobSpec(spec));
    job.meta_mut().namespace = Some(s.ns.clone());
    s.jobs.create(&PostParams::default(), &job).await.unwrap();
}

async fn wait_until(s: &Setup, name: &str, done: impl Fn(&SPLAIJob) -> bool) -> SPLAIJob {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let job = s.jobs.get(name).await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never got there: {:#?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn completed(j: &SPLAIJob) -> bool {
    j.status
        .as_ref()
        .is_some_and(|s| s.job.phase.is_terminal() && s.records_uri.is_some())
}

fn file_of(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("file://").expect("a file:// URI"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_workers_run_shell_commands_and_their_artifacts_land_on_disk() {
    let s = setup("e2e-run").await;
    let mut workers = [worker(&s, "w1"), worker(&s, "w2")];
    let spec = JobSpec {
        tenant: "acme".into(),
        tasks: vec![
            shell("count", "echo 21 > n.txt; echo counted"),
            shell("left", "echo left-$SPLAI_ATTEMPT"),
            shell("right", "echo right; echo to-stderr >&2"),
        ],
        dependencies: vec![
            Dependency {
                task: "left".into(),
                depends_on: vec!["count".into()],
            },
            Dependency {
                task: "right".into(),
                depends_on: vec!["count".into()],
            },
        ],
        ..JobSpec::default()
    };
    submit(&s, "shells", spec).await;
    let job = wait_until(&s, "shells", completed).await;
    let status = job.status.unwrap();
    assert_eq!(
        status.job.phase,
        JobPhase::Completed,
        "{:?}",
        status.job.message
    );
    let results = &status.job.result_artifacts;
    assert_eq!(results.len(), 2, "{status:#?}");
    let base = format!("file://{}/artifacts/jobs/{}/shells", s.dir.display(), s.ns);
    let left = results.iter().find(|r| r.task == "left").unwrap();
    assert_eq!(left.uri, format!("{base}/left/1/"));
    assert_eq!(read(&file_of(&left.uri).join("stdout.log")), "left-1\n");
    let right = results.iter().find(|r| r.task == "right").unwrap();
    assert_eq!(read(&file_of(&right.uri).join("stderr.log")), "to-stderr\n");
    let count = file_of(&format!("{base}/count/1/"));
    assert_eq!(read(&count.join("out/n.txt")), "21\n");
    assert!(status.job.result_artifact_uri.is_some());
    // Each worker registered its own SPLAIWorker (its spec), and the operator keeps its status.
    let api: Api<splai_operator::SPLAIWorker> =
        Api::namespaced(s.jobs.clone().into_client(), &s.ns);
    for name in ["w1", "w2"] {
        let w = api.get(name).await.unwrap();
        assert_eq!(w.spec.0.capabilities.cpu_millis, 4000);
        let labels = w.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("splai.io/node").map(String::as_str), Some(name));
        let managers: Vec<String> = w
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(managers.iter().any(|m| m == "splai-worker"), "{managers:?}");
        assert!(w.status.is_some(), "the operator writes the status");
    }
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    s.operator.abort();
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_is_restarted_and_the_task_runs_again_under_a_new_attempt() {
    let s = setup("e2e-restart").await;
    let mut w1 = worker(&s, "w1");
    let spec = JobSpec {
        tenant: "acme".into(),
        tasks: vec![shell("slow", "sleep 2; echo done-$SPLAI_ATTEMPT")],
        ..JobSpec::default()
    };
    submit(&s, "restarted", spec).await;
    wait_until(&s, "restarted", |j| {
        j.status
            .as_ref()
            .is_some_and(|st| st.job.tasks.iter().any(|t| t.started_at.is_some()))
    })
    .await;
    // SIGKILL: the process and its report of attempt 1 are gone; its sandboxed `sleep` is
    // orphaned and may still finish, but nothing reports for it.
    w1.kill().unwrap();
    w1.wait().unwrap();
    let mut w1 = worker(&s, "w1");
    let job = wait_until(&s, "restarted", completed).await;
    let status = job.status.clone().unwrap();
    assert_eq!(
        status.job.phase,
        JobPhase::Completed,
        "{:?}",
        status.job.message
    );
    let records = read(&file_of(status.records_uri.as_deref().unwrap()));
    let records: Vec<splai_scheduler::api::ExecutionRecord> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(records[0].attempt, 1);
    assert_ne!(records[0].outcome, Outcome::Succeeded);
    assert_eq!(records[1].attempt, 2);
    assert_eq!(records[1].outcome, Outcome::Succeeded);
    let out = file_of(records[1].artifact_uri.as_deref().unwrap()).join("stdout.log");
    assert_eq!(read(&out), "done-2\n");
    let _ = w1.kill();
    let _ = w1.wait();
    s.operator.abort();
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Sends a signal to a process with the system's `kill`.
fn signal(child: &Child, sig: &str) {
    splai_testbed::process::signal(child.id(), sig).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agents_late_report_for_an_attempt_already_retried_is_ignored() {
    let s = setup("e2e-late").await;
    let w1 = worker(&s, "w1");
    let spec = JobSpec {
        tenant: "acme".into(),
        tasks: vec![shell("slow", "sleep 2; echo done-$SPLAI_ATTEMPT")],
        ..JobSpec::default()
    };
    submit(&s, "late", spec).await;
    let running_attempt = |n: u32| {
        move |j: &SPLAIJob| {
            j.status.as_ref().is_some_and(|st| {
                st.job
                    .tasks
                    .iter()
                    .any(|t| t.attempt == n && t.started_at.is_some())
            })
        }
    };
    wait_until(&s, "late", running_attempt(1)).await;
    // Frozen, not killed: its heartbeats stop, so the operator declares it Lost and retries the
    // task, while the sandboxed command (a process group of its own) runs on to its end.
    signal(&w1, "-STOP");
    let mut w2 = worker(&s, "w2");
    wait_until(&s, "late", running_attempt(2)).await;
    // Thawed while attempt 2 runs: w1 finds attempt 1 finished and stores its outputs. Then one
    // of two things happens, and the race between them is real: w1 reports attempt 1 succeeded,
    // too late, and the operator fences the report off; or w1's first heartbeat still lists
    // attempt 1, the operator answers with an `orphaned` cancel, and w1 drops the report.
    let reported_late = || s.metrics.ignored("stale_report") + s.metrics.ignored("unknown_job");
    let settled = || reported_late() + s.metrics.cancels("orphaned");
    let (settled_before_thaw, reported_before_thaw) = (settled(), reported_late());
    signal(&w1, "-CONT");
    let mut w1 = w1;
    let job = wait_until(&s, "late", completed).await;
    let status = job.status.clone().unwrap();
    assert_eq!(status.job.phase, JobPhase::Completed);
    // Wait until the operator has dealt with w1's attempt 1 (its report fenced off as stale, or
    // as for an unknown job if the ended job was already forgotten; or the attempt cancelled as
    // orphaned), then check that nothing changed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while settled() == settled_before_thaw {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator never heard of the thawed agent's attempt 1 again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Attempt 1's outputs stay under attempt 1. When w1 reported it, it had stored them first.
    // When the orphaned cancel reached w1 first, w1 dropped the attempt, and whether it had
    // stored them by then is the race itself.
    let stale = s
        .dir
        .join(format!("artifacts/jobs/{}/late/slow/1/stdout.log", s.ns));
    if reported_late() > reported_before_thaw || stale.exists() {
        assert_eq!(read(&stale), "done-1\n");
    }
    let job = s.jobs.get("late").await.unwrap();
    let status = job.status.clone().unwrap();
    let records = read(&file_of(status.records_uri.as_deref().unwrap()));
    let records: Vec<splai_scheduler::api::ExecutionRecord> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(
        (records[0].attempt, records[0].outcome),
        (1, Outcome::WorkerLost)
    );
    assert_eq!(
        (records[1].attempt, records[1].outcome),
        (2, Outcome::Succeeded)
    );
    assert_eq!(status.job.progress.succeeded, 1);
    let result = status.job.result_artifact_uri.clone().unwrap();
    assert!(result.ends_with("/late/slow/2/"), "{result}");
    for w in [&mut w1, &mut w2] {
        let _ = w.kill();
        let _ = w.wait();
    }
    s.operator.abort();
    let _ = std::fs::remove_dir_all(&s.dir);
}
