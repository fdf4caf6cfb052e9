//! The same scenario and seed give byte-identical output; another seed gives another run.

mod common;

use std::path::Path;

use common::{outputs, scenario};

use splai_scheduler::Strategy;
use splai_sim::scenario::Scenario;
use splai_sim::{Engine, Run};

fn quickstart() -> Scenario {
    scenario("quickstart")
}

fn run_into(sc: &Scenario, seed: u64, dir: &Path) -> String {
    run_policy_into(sc, seed, Strategy::Splai, dir)
}

fn run_policy_into(sc: &Scenario, seed: u64, strategy: Strategy, dir: &Path) -> String {
    let r = Run {
        scenario: sc,
        seed,
        strategy,
        engine: Engine::Des,
        check_invariants: false,
        explain: None,
    }
    .execute()
    .unwrap();
    r.write(dir).unwrap();
    r.summary.output_digest
}

#[test]
fn the_same_scenario_and_seed_give_byte_identical_outputs() {
    let sc = quickstart();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (da, db) = (run_into(&sc, 7, a.path()), run_into(&sc, 7, b.path()));
    assert_eq!(da, db);
    let (fa, fb) = (outputs(a.path()), outputs(b.path()));
    assert_eq!(
        fa.len(),
        7,
        "{:?}",
        fa.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(fa, fb);
}

#[test]
fn every_policy_gives_byte_identical_outputs_for_the_same_seed() {
    let sc = quickstart();
    for p in Strategy::ALL {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (da, db) = (
            run_policy_into(&sc, 3, p, a.path()),
            run_policy_into(&sc, 3, p, b.path()),
        );
        assert_eq!(da, db, "{}", p.name());
        assert_eq!(outputs(a.path()), outputs(b.path()), "{}", p.name());
    }
}

#[test]
fn another_seed_gives_another_run() {
    let sc = quickstart();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_ne!(run_into(&sc, 1, a.path()), run_into(&sc, 2, b.path()));
}
