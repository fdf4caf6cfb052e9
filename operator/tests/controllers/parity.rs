//! The operator and the simulator drive the same core: on the same small scenario, with timing
//! taken out of play, they make the same assignments.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use splai_scheduler::Strategy;
use splai_scheduler::api::{Health, TaskPhase};
use splai_sim::des::{Des, RunOptions};
use splai_sim::scenario::Scenario;

use crate::harness::Harness;

/// `job/task` -> worker, for every task that has one.
type Placement = BTreeMap<String, String>;

fn simulated(sc: &Scenario) -> Placement {
    let opts = RunOptions {
        seed: sc.seed,
        strategy: Strategy::Splai,
        check_invariants: true,
        explain: None,
        progress: false,
    };
    let (_, core, _) = Des::new(sc, opts).run();
    let mut placed = Placement::new();
    for job in &sc.workload.jobs {
        let status = core.job_status(&job.name).expect("the job is known");
        for t in status.tasks {
            if let Some(w) = t.worker {
                placed.insert(format!("{}/{}", job.name, t.id), w);
            }
        }
    }
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_and_the_simulator_make_the_same_assignments_on_the_same_scenario() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controllers/parity.yaml");
    let sc = Scenario::load(&path).unwrap();
    let expected = simulated(&sc);
    assert!(
        expected.len() >= 10,
        "too few placements to compare: {expected:?}"
    );
    let workers: std::collections::BTreeSet<&String> = expected.values().collect();
    assert!(
        workers.len() >= 3,
        "the scenario hardly varies: {expected:?}"
    );

    let mut h = Harness::new("parity").await.unwrap();
    h.settings = sc.settings.clone();
    h.operator("op-0");
    // The fleet registers in the simulator's order, each worker healthy before the next.
    for g in &sc.fleet {
        for i in 0..g.count {
            let name = format!("{}-{i}", g.group);
            h.agent(&name, g.capabilities.clone());
            h.wait_worker(&name, |w| w.worker.health == Health::Healthy)
                .await
                .unwrap();
        }
    }
    // Each job arrives alone, once the one before has been placed.
    let mut placed = Placement::new();
    for job in &sc.workload.jobs {
        h.submit(&job.name, job.spec.clone()).await.unwrap();
        let settled = h
            .wait_job(&job.name, Duration::from_secs(60), |j| {
                j.status.as_ref().is_some_and(|s| {
                    s.job.progress.ready == 0
                        || s.job
                            .tasks
                            .iter()
                            .filter(|t| t.phase == TaskPhase::Ready)
                            .all(|t| t.pending_reason.is_some())
                })
            })
            .await
            .unwrap();
        for t in settled.status.unwrap().job.tasks {
            if let Some(w) = t.worker {
                placed.insert(format!("{}/{}", job.name, t.id), w);
            }
        }
    }
    assert_eq!(placed, expected);
    h.shutdown().await;
}
