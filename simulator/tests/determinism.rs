//! The same scenario and seed give byte-identical output; another seed gives another run.

use std::path::{Path, PathBuf};

use splai_scheduler::Strategy;
use splai_sim::scenario::Scenario;
use splai_sim::{Engine, Run};

fn quickstart() -> Scenario {
    Scenario::load(&PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/quickstart.yaml"
    )))
    .unwrap()
}

fn run_into(sc: &Scenario, seed: u64, dir: &Path) -> String {
    let r = Run {
        scenario: sc,
        seed,
        strategy: Strategy::Splai,
        engine: Engine::Des,
        check_invariants: false,
        explain: None,
    }
    .execute()
    .unwrap();
    r.write(dir).unwrap();
    r.summary.output_digest
}

/// Every output file, with the one wall-clock field of summary.json blanked.
fn outputs(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let text = text
                .lines()
                .filter(|l| !l.contains("\"wall_s\""))
                .collect::<Vec<_>>()
                .join("\n");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
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
fn another_seed_gives_another_run() {
    let sc = quickstart();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_ne!(run_into(&sc, 1, a.path()), run_into(&sc, 2, b.path()));
}
