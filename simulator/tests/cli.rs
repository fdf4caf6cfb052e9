//! The `splai-sim` binary as a user meets it: what it prints, where, and how it reports mistakes.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `splai-sim` from the workspace root, so scenario paths read as they do in the docs.
fn splai_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splai-sim"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("splai-sim runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_missing_file_is_reported_once_with_its_path_by_every_command() {
    let out = std::env::temp_dir().join("splai-sim-cli-never-written.yaml");
    let out = out.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["run", "no/such.yaml"],
        &["compare", "no/such.yaml"],
        &[
            "regress",
            "no/such.yaml",
            "--baseline",
            "scenarios/baseline.json",
        ],
        &[
            "regress",
            "scenarios/quickstart.yaml",
            "--baseline",
            "no/such.yaml",
        ],
        &["import", "alibaba-v2018", "no/such.yaml", "-o", out],
        &["import", "alibaba-genai", "no/such.yaml", "-o", out],
    ];
    for args in cases {
        let o = splai_sim(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("no/such.yaml"), "{args:?}: {err}");
        assert_eq!(err.matches("(os error").count(), 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn run_without_out_says_on_stderr_that_no_files_were_written_and_how_to_get_them() {
    let o = splai_sim(&["run", "scenarios/quickstart.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("output digest"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("--out"), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "no files written: add --out DIR for summary.json, the CSVs and the plots\n"
    );
}

#[test]
fn run_with_out_writes_the_files_and_prints_no_note() {
    let dir = tempfile::tempdir().unwrap();
    let o = splai_sim(&[
        "run",
        "scenarios/quickstart.yaml",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    assert!(stdout(&o).contains("wrote "), "{}", stdout(&o));
    assert!(dir.path().join("summary.json").is_file());
}

#[test]
fn run_help_describes_the_scenario_and_the_seed_and_lists_every_policy() {
    let o = splai_sim(&["run", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    // In the long help a description follows each name on the next line.
    let described = |name: &str| {
        let mut lines = help.lines().skip_while(|l| !l.trim().starts_with(name));
        lines.next().is_some() && lines.next().is_some_and(|l| !l.trim().is_empty())
    };
    assert!(described("<SCENARIO>"), "{help}");
    assert!(described("--seed"), "{help}");
    let names: Vec<&str> = splai_scheduler::Strategy::ALL
        .iter()
        .map(|p| p.name())
        .collect();
    assert!(
        help.contains(&format!("[possible values: {}]", names.join(", "))),
        "{help}"
    );
}

#[test]
fn compare_fits_in_100_columns_and_shows_counts_as_whole_numbers_while_the_csv_keeps_every_column()
{
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("compare.csv");
    let o = splai_sim(&[
        "compare",
        "scenarios/quickstart.yaml",
        "--seeds",
        "1-2",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    for line in table.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("jobs done"), "{table}");
    for p in splai_scheduler::Strategy::ALL {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(p.name()))
            .unwrap_or_else(|| panic!("no row for {}: {table}", p.name()));
        // Every quickstart job ends under every policy.
        assert_eq!(row.split_whitespace().last(), Some("120"), "{table}");
    }
    let header = std::fs::read_to_string(&csv).unwrap();
    assert!(
        header.starts_with("policy,jct_mean_s,jct_p95_s,makespan_s,queue_wait_mean_s,utilization_mean,warm_cache_hit_rate,cold_starts,jobs_completed\n"),
        "{header}"
    );
}
