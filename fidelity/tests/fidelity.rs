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
