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
    let cases: [&[&str]; 7] = [
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
        &["calibrate", "no/such.yaml"],
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
fn calibrate_fits_the_delays_of_a_real_runs_folder_and_prints_them_as_scenario_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.csv"),
        "job,task,attempt,worker,assigned_ms,started_ms,finished_ms,outcome,cold_start,error\n\
         a,t,1,w-0,100,102,900,Succeeded,,\n\
         a,u,1,w-0,900,906,1000,Succeeded,false,\n\
         b,t,1,w-1,50,,60,WorkerLost,,agent lost\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("admissions.csv"),
        "job,created_ms,admitted_ms\na,0,90\nb,10,40\nc,20,\n",
    )
    .unwrap();
    let o = splai_sim(&["calibrate", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    // Round trips 2 and 6 ms (mean 4, so 2 each way); admissions 90 and 30 ms (mean 60).
    assert!(
        text.ends_with("networkLatencyMs: 2\nsubmitLatencyMs: 60\n"),
        "{text}"
    );
    assert!(text.contains("2 samples, mean 4.00 ms"), "{text}");
    // What it prints is a scenario fragment: it parses as the settings it names.
    let fragment: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(fragment["submitLatencyMs"], 60);
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
    let plot = dir.path().join("compare.svg");
    let o = splai_sim(&[
        "compare",
        "scenarios/quickstart.yaml",
        "--seeds",
        "1-2",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    for line in table.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("done"), "{table}");
    for p in splai_scheduler::Strategy::ALL {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(p.name()))
            .unwrap_or_else(|| panic!("no row for {}: {table}", p.name()));
        // Every quickstart job ends under every policy.
        assert_eq!(row.split_whitespace().last(), Some("120"), "{table}");
    }
    // The plot overlays every policy's JCT CDF, each named in its legend.
    let svg = std::fs::read_to_string(&plot).unwrap();
    for p in splai_scheduler::Strategy::ALL {
        assert!(
            svg.contains(&format!(">\n{}\n<", p.name())),
            "{} not in the legend",
            p.name()
        );
    }
    let header = std::fs::read_to_string(&csv).unwrap();
    let columns = header.lines().next().unwrap();
    for c in [
        "policy",
        "jct_mean_s",
        "jct_p50_s",
        "jct_p95_s",
        "jct_p99_s",
        "slowdown_mean",
        "fairness_jain",
        "lower_bound_s",
        "makespan_over_lower_bound",
        "gpu_utilization_mean",
        "warm_cache_hit_rate",
        "deadline_misses",
        "goodput",
        "jobs_completed",
    ] {
        assert!(columns.split(',').any(|x| x == c), "{c} missing: {columns}");
    }
    // quickstart's jobs have no deadline: goodput is left empty, not 0 or NaN.
    assert!(!header.contains("NaN"), "{header}");
}

/// A baseline for quickstart alone, from the committed one, with `edit` applied.
fn quickstart_baseline(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/baseline.json"),
    )
    .unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut one = serde_json::json!({ "scenarios": {
        "scenarios/quickstart.yaml": all["scenarios"]["scenarios/quickstart.yaml"].clone()
    }});
    edit(&mut one["scenarios"]["scenarios/quickstart.yaml"]["metrics"]);
    let path = dir.join("baseline.json");
    std::fs::write(&path, one.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn the_gate_fails_a_watched_metric_deleted_from_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let b = quickstart_baseline(dir.path(), |m| {
        m.as_object_mut().unwrap().remove("jct_p95_s");
    });
    let o = splai_sim(&["regress", "scenarios/quickstart.yaml", "--baseline", &b]);
    assert!(!o.status.success());
    assert!(
        stdout(&o)
            .contains("REGRESSED scenarios/quickstart.yaml jct_p95_s: missing from the baseline"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn update_refuses_a_worse_baseline_unless_each_regression_is_accepted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // A committed mean JCT 10% better than the code gives.
    let b = quickstart_baseline(dir.path(), |m| {
        let v = m["jct_mean_s"]["value"].as_f64().unwrap();
        m["jct_mean_s"]["value"] = serde_json::json!(v * 0.9);
    });
    let before = std::fs::read_to_string(&b).unwrap();
    let o = splai_sim(&[
        "regress",
        "scenarios/quickstart.yaml",
        "--baseline",
        &b,
        "--update",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("scenarios/quickstart.yaml:jct_mean_s"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&b).unwrap(),
        before,
        "left as it was"
    );
    let o = splai_sim(&[
        "regress",
        "scenarios/quickstart.yaml",
        "--baseline",
        &b,
        "--update",
        "--accept",
        "scenarios/quickstart.yaml:jct_mean_s",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = splai_sim(&["regress", "scenarios/quickstart.yaml", "--baseline", &b]);
    assert!(o.status.success(), "{}", stdout(&o));
}

#[test]
fn output_into_a_reader_that_stops_early_ends_quietly_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_splai-sim"))
        .args(["compare", "scenarios/quickstart.yaml", "--seeds", "1"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // As `| head -0` would: the reader goes away before anything is written.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(141),
        "as if stopped by SIGPIPE: {}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
