//! The simulator's prediction against a real run of the same scenario: the real operator's
//! controllers and real agents over TCP against the test bed's API server, at a time scale of
//! 1/20 (a 13-minute scenario runs in 40 s). The runs take turns: the prediction is about the
//! operator, not about how two real runs share two cores.

use std::path::Path;
use std::time::Duration;

use splai_fidelity::report::Tolerances;
use splai_fidelity::{Measured, Options, measure};
use splai_sim::scenario::Scenario;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn fidelity(file: &str) -> Measured {
    let _turn = ONE_AT_A_TIME.lock().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sc = Scenario::load(&root.join(file)).unwrap();
    let (client, ns) = splai_testbed::namespace(&sc.name).await.unwrap();
    let opts = Options {
        seed: sc.seed,
        time_scale: 0.05,
        tolerances: Tolerances::default(),
        flush_interval: Duration::from_millis(100),
        artifacts: std::env::temp_dir().join(format!("splai-fidelity-test-{ns}")),
    };
    let m = measure(client, &ns, &sc, &opts).await.unwrap();
    let _ = std::fs::remove_dir_all(&opts.artifacts);
    eprintln!("{}", m.report.table());
    m
}

/// What must hold of any real run, whatever the prediction: every job ended, no task was lost
/// and none was committed twice.
fn sound(m: &Measured) {
    let s = &m.real_summary;
    assert_eq!(
        (s.jobs_unfinished, s.tasks_lost, s.duplicate_completions),
        (0, 0, 0),
        "{s:#?}"
    );
    assert_eq!(s.jobs_total, m.simulated.summary.jobs_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_for_real_is_within_ten_percent_of_the_prediction_and_five_points_on_warm_hits()
{
    let m = fidelity("scenarios/quickstart.yaml").await;
    sound(&m);
    // Inference tasks with warm and cold model loads: both runs must have loaded models.
    assert!(m.real_summary.cold_starts > 0 && m.simulated.summary.cold_starts > 0);
    assert!(m.report.pass, "{}", m.report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_that_crashes_mid_run_costs_the_real_operator_what_the_simulator_predicts() {
    let m = fidelity("scenarios/worker-crash.yaml").await;
    sound(&m);
    assert!(
        m.real_summary.retries > 0,
        "the crash must lose running attempts"
    );
    assert!(m.report.pass, "{}", m.report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_whose_heartbeats_stop_cost_the_real_operator_what_the_simulator_predicts() {
    let m = fidelity("scenarios/heartbeat-loss.yaml").await;
    sound(&m);
    assert!(m.report.pass, "{}", m.report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_against_a_clusters_kubeconfig_writes_its_report_and_cleans_up() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let plane = splai_testbed::shared().unwrap();
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_splai-fidelity"))
        .arg(root.join("scenarios/worker-crash.yaml"))
        .arg("--kubeconfig")
        .arg(plane.kubeconfig())
        .arg("--out")
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("fidelity: within tolerance"), "{stdout}");
    for f in [
        "fidelity.json",
        "fidelity.csv",
        "jct_cdf.svg",
        "simulated/summary.json",
        "real/summary.json",
        "real/tasks.csv",
        "real/jobs.csv",
    ] {
        assert!(out.path().join(f).is_file(), "{f} was not written");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("fidelity.json")).unwrap()).unwrap();
    assert_eq!(report["pass"], true);
    assert_eq!(report["scenario"], "worker-crash");
    // The namespace the run made is gone (or going).
    let client = plane.client().await.unwrap();
    let spaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    for ns in spaces.list(&Default::default()).await.unwrap() {
        let name = ns.metadata.name.unwrap_or_default();
        if name.starts_with("splai-fidelity-") {
            assert!(
                ns.metadata.deletion_timestamp.is_some(),
                "namespace {name} was left behind"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_with_a_partition_is_refused_before_anything_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_splai-fidelity"))
        .arg(root.join("scenarios/partition.yaml"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_requests_from_the_alibaba_trace_with_measured_model_loads_run_as_predicted() {
    let m = fidelity("scenarios/fidelity/alibaba-genai-small.yaml").await;
    sound(&m);
    assert!(m.real_summary.cold_starts > 0 && m.real_summary.warm_cache_hit_rate > 0.5);
    // The harness kept up with the arrivals (400 jobs in 30 s): a late job would hide its wait.
    assert!(
        m.report.real_arrival_lag_max_s < 5.0,
        "{}",
        m.report.table()
    );
    let row = |name: &str| m.report.rows.iter().find(|r| r.metric == name).unwrap();
    // Makespan and warm hits are held to the usual bounds. Mean JCT on one seed of this
    // scenario is not: half of it is queueing behind 8 busy GPU nodes, which moves with every
    // small difference in timing (the simulator alone moves by 7% between time scales), and
    // on seeds 1-5 the real run was 18% under to 19% over the prediction (BENCHMARKS.md).
    assert!(row("makespan_s").ok, "{}", m.report.table());
    assert!(row("warm_cache_hit_rate").ok, "{}", m.report.table());
    let jct = row("jct_mean_s").ratio.unwrap();
    assert!((0.75..=1.25).contains(&jct), "{}", m.report.table());
}
