//! The committed scenarios parse and pass their own checks; broken scenario files get errors
//! that name the file, line and field.

use std::path::PathBuf;

use splai_scheduler::Strategy;
use splai_sim::scenario::{Scenario, ScenarioError};
use splai_sim::{Engine, Run};

fn scenarios_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios"))
}

fn committed() -> Vec<(String, Scenario)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let sc = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), sc));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_committed_scenario_passes_its_checks_with_invariants_checked_at_every_step() {
    let all = committed();
    assert!(all.len() >= 6, "found {}", all.len());
    for (file, sc) in all {
        let r = Run {
            scenario: &sc,
            seed: sc.seed,
            strategy: Strategy::Splai,
            engine: Engine::Des,
            check_invariants: true,
            explain: None,
        }
        .execute()
        .unwrap();
        assert_eq!(r.check_failures(), Vec::<String>::new(), "{file}");
        assert!(r.summary.tasks_total > 0, "{file} ran no task");
    }
}

#[test]
fn the_committed_json_schema_matches_the_scenario_types() {
    let committed = std::fs::read_to_string(scenarios_dir().join("scenario.schema.json")).unwrap();
    assert_eq!(
        committed.trim_end(),
        splai_sim::scenario::schema_json(),
        "scenarios/scenario.schema.json is stale: run `cargo run -p splai-sim -- schema > scenarios/scenario.schema.json`"
    );
}

fn parse_error(text: &str) -> String {
    match Scenario::parse("bad.yaml", text) {
        Err(e @ (ScenarioError::Parse { .. } | ScenarioError::Invalid { .. })) => e.to_string(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the scenario was accepted"),
    }
}

const GOOD_HEAD: &str = "name: t\nhorizonSeconds: 60\n";

#[test]
fn a_wrong_type_is_reported_with_file_line_and_field() {
    let text = format!(
        "{GOOD_HEAD}fleet:\n  - group: g\n    capabilities: {{ cpuMillis: four, memoryMib: 1 }}\nworkload: {{ jobs: [] }}\n"
    );
    let e = parse_error(&text);
    assert!(e.starts_with("bad.yaml:5:"), "{e}");
    assert!(
        e.contains("fleet[0].capabilities.cpuMillis: invalid type: string \"four\""),
        "{e}"
    );
}

#[test]
fn an_unknown_field_is_reported_with_its_name() {
    let e = parse_error(&format!("{GOOD_HEAD}flete: []\n"));
    assert!(e.contains("unknown field `flete`"), "{e}");
    let e = parse_error(&format!(
        "{GOOD_HEAD}fleet: [{{ group: g, capabilities: {{ cpuMillis: 1, memoryMib: 1 }} }}]\nworkload: {{ jobs: [] }}\nfaults: [{{ atMs: 1, kind: crash, target: {{ group: g }}, durationMS: 5 }}]\n"
    ));
    assert!(e.contains("unknown field `durationMS`"), "{e}");
}

#[test]
fn a_fault_on_an_unknown_worker_or_an_empty_workload_is_refused() {
    let fleet =
        "fleet: [{ group: g, count: 2, capabilities: { cpuMillis: 1000, memoryMib: 1 } }]\n";
    let job = "workload: { jobs: [{ name: j, spec: { tenant: a, tasks: [{ id: t, kind: command }] } }] }\n";
    let e = parse_error(&format!(
        "{GOOD_HEAD}{fleet}{job}faults: [{{ atMs: 1, kind: crash, target: {{ worker: g-7 }} }}]\n"
    ));
    assert_eq!(
        e,
        "bad.yaml: faults[0].target: no worker `g-7` in the fleet (workers are named <group>-<index>)"
    );
    let e = parse_error(&format!("{GOOD_HEAD}{fleet}workload: {{}}\n"));
    assert_eq!(
        e,
        "bad.yaml: workload: the workload is empty: add jobs or generators"
    );
    let e = parse_error(&format!("{GOOD_HEAD}fleet: []\n{job}"));
    assert!(e.contains("the fleet is empty"), "{e}");
}

#[test]
fn a_missing_file_says_so() {
    let e = Scenario::load(std::path::Path::new("no/such.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("no/such.yaml: cannot read:"), "{e}");
}

#[test]
fn every_generated_scenario_is_what_the_command_in_its_header_writes() {
    let root = scenarios_dir().join("..").canonicalize().unwrap();
    let shared = root.join("../shared");
    // The traces live beside the repository, not in it (they are not ours to copy): a clone
    // without them has nothing to regenerate from.
    if !shared.join("traces").is_dir() {
        eprintln!(
            "no traces at {}: the generated scenarios were not regenerated",
            shared.display()
        );
        return;
    }
    // A copy of the layout the commands expect: run from the workspace root, with the traces
    // at ../shared and the output under scenarios/.
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir_all(ws.join("scenarios")).unwrap();
    std::os::unix::fs::symlink(shared.canonicalize().unwrap(), tmp.path().join("shared")).unwrap();
    let mut checked = 0;
    // The scenarios and those of its folders (such as scenarios/fidelity/).
    let mut files = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::create_dir_all(ws.join("scenarios").join(path.file_name().unwrap())).unwrap();
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(path);
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Some(command) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# Generated by: splai-sim "))
        else {
            continue;
        };
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_splai-sim"))
            .args(&args)
            .current_dir(&ws)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = ws
            .join("scenarios")
            .join(path.strip_prefix(scenarios_dir()).unwrap());
        let again = std::fs::read_to_string(&written)
            .unwrap_or_else(|e| panic!("{command} wrote no {}: {e}", written.display()));
        assert!(
            again == text,
            "{} differs from what `splai-sim {command}` writes now: regenerate it with that command",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} generated scenarios found");
}
