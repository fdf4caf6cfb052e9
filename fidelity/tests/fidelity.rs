//! Real runs of scenarios through the operator's controllers and real agents over TCP against the
//! test bed's API server, at a time scale of 1/20, read back and compared with the simulator.
//!
//! These tests assert what a real run must do whatever the machine's speed: every job ends, no
//! task is lost or committed twice, faults have their effect, the report covers every metric, and
//! the CLI cleans up. How close the real run comes to the prediction is timing, so it is measured,
//! not asserted: `scripts/test.sh` runs `splai-fidelity` and prints its tables, and BENCHMARKS.md
//! holds the figures on seeds 1-5. The runs take turns, so two real runs never share the cores.

use std::path::Path;
use std::time::Duration;

use splai_fidelity::report::Tolerances;
use splai_fidelity::{DelaySource, Measured, Options, measure};
use splai_scheduler::api::Outcome;
use splai_sim::scenario::Scenario;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn fidelity(file: &str) -> Measured {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sc = Scenario::load(&root().join(file)).unwrap();
    let (client, ns) = splai_testbed::namespace(&sc.name).await.unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let opts = Options {
        seed: sc.seed,
        time_scale: 0.05,
        tolerances: Tolerances::default(),
        flush_interval: Duration::from_millis(100),
        artifacts: artifacts.path().to_owned(),
        delays: DelaySource::Measured,
        agent_program: env!("CARGO_BIN_EXE_splai-fidelity-agent").into(),
    };
    let m = measure(client, &ns, &sc, &opts).await.unwrap();
    eprintln!("{}", m.report.table());
    m
}

/// What must hold of any real run: every job ended, no task was lost and none was committed
/// twice, and the report compares every metric.
fn sound(m: &Measured) {
    let s = &m.real_summary;
    assert_eq!(
        (s.jobs_unfinished, s.tasks_lost, s.duplicate_completions),
        (0, 0, 0),
        "{s:#?}"
    );
    assert_eq!(s.jobs_total, m.simulated.summary.jobs_total);
    assert_eq!(s.jobs_completed, m.simulated.summary.jobs_completed);
    let metrics: Vec<&str> = m.report.rows.iter().map(|r| r.metric.as_str()).collect();
    for name in [
        "makespan_s",
        "jct_mean_s",
        "jct_p50_s",
        "jct_p95_s",
        "queue_wait_mean_s",
        "warm_cache_hit_rate",
        "cold_starts",
        "retries",
    ] {
        assert!(metrics.contains(&name), "{name} missing from {metrics:?}");
    }
    // The operator took in every job, and the simulator was given the delays measured.
    assert_eq!(m.real.admissions.len() as u64, s.jobs_total);
    assert!(
        m.real
            .admissions
            .iter()
            .all(|a| a.admitted_ms >= Some(a.created_ms))
    );
    assert_eq!(m.report.delays_from, "measured in the real run");
    assert_eq!(
        m.simulated.summary.jobs_total, s.jobs_total,
        "the simulated run is the same scenario"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_for_real_with_warm_and_cold_model_loads_and_every_job_completes() {
    let m = fidelity("scenarios/quickstart.yaml").await;
    sound(&m);
    // Inference tasks loaded models cold on the real agents too, and found them warm after.
    let s = &m.real_summary;
    assert!(s.cold_starts > 0 && s.warm_cache_hit_rate > 0.5, "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_that_crashes_mid_run_loses_its_attempts_and_the_real_operator_retries_them() {
    let m = fidelity("scenarios/worker-crash.yaml").await;
    sound(&m);
    assert!(m.real_summary.retries > 0, "{:#?}", m.real_summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_with_sigstop_past_lost_after_loses_its_attempts_and_nothing_is_committed_twice()
 {
    let m = fidelity("scenarios/worker-freeze.yaml").await;
    // `sound` holds duplicate completions to 0: the reports the agent sent when it was
    // continued (SIGCONT) were fenced off by attempt number.
    sound(&m);
    let lost = m
        .real
        .rec
        .attempts
        .iter()
        .filter(|a| a.worker == "rack-b-2" && a.outcome == Outcome::WorkerLost)
        .count();
    assert!(lost > 0, "{:#?}", m.real_summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_against_a_clusters_kubeconfig_writes_its_report_and_leaves_nothing_behind() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let plane = splai_testbed::shared().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_splai-fidelity"))
        .arg(root().join("scenarios/heartbeat-loss.yaml"))
        .arg("--kubeconfig")
        .arg(plane.kubeconfig())
        .arg("--out")
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    // 0 within tolerance, 1 past it: either way the runs were made and compared.
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("makespan_s"), "{stdout}");
    for f in [
        "fidelity.json",
        "fidelity.csv",
        "jct_cdf.svg",
        "simulated/summary.json",
        "real/summary.json",
        "real/tasks.csv",
        "real/jobs.csv",
        "real/admissions.csv",
    ] {
        assert!(out.path().join(f).is_file(), "{f} was not written");
    }
    // What `splai-sim calibrate` reads: an admission for every job, a round trip per start.
    let measured = splai_sim::calibrate::read_run(&out.path().join("real")).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("real/summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        measured.admissions_ms.len() as u64,
        summary["jobs_total"].as_u64().unwrap()
    );
    let fitted = splai_sim::calibrate::fit(&[measured]).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("fidelity.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "heartbeat-loss");
    // Fitted from the run itself, the simulator's delays are what calibration finds.
    assert_eq!(report["delays_from"], "measured in the real run");
    assert_eq!(
        report["delays"]["submitLatencyMs"],
        fitted.delays.submit_latency_ms
    );
    assert_eq!(report["pass"], run.status.success());
    // The namespace it made holds no job (their finalizers were let go) and is being deleted.
    let ns = stderr
        .split("for real in namespace ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no namespace named in: {stderr}"));
    assert!(ns.starts_with("splai-fidelity-"), "{ns}");
    let client = plane.client().await.unwrap();
    let jobs: kube::Api<splai_operator::SPLAIJob> = kube::Api::namespaced(client.clone(), ns);
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let spaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    if let Some(space) = spaces.get_opt(ns).await.unwrap() {
        assert!(space.metadata.deletion_timestamp.is_some(), "{ns} was left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_with_a_partition_is_refused_before_anything_runs() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_splai-fidelity"))
        .arg(root().join("scenarios/partition.yaml"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`partition` fault, which a real run cannot apply yet"),
        "{stderr}"
    );
}
