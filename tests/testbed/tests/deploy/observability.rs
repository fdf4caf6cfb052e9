//! The metrics table in operator/README.md and the Grafana dashboard against the metrics the
//! operator really exports.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::support::repo;

/// The metric families the operator exports: (name as exposed, type).
fn exported_metrics() -> BTreeMap<String, String> {
    let metrics = splai_operator::metrics::Metrics::default();
    // A labelled family shows on the page only once it has a member.
    for family in [
        &metrics.reconciles,
        &metrics.reconcile_errors,
        &metrics.ignored,
        &metrics.cancels,
        &metrics.api_writes,
        &metrics.writes_refused,
        &metrics.watch_lists,
        &metrics.gone_at_list,
        &metrics.agents_refused,
    ] {
        family.get_or_create(&[("x", "y")]).inc();
    }
    for family in [&metrics.jobs, &metrics.workers] {
        family.get_or_create(&[("x", "y")]).set(1);
    }
    let page = metrics.render();
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            let exposed = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            (exposed, kind.to_owned())
        })
        .collect()
}

#[test]
fn the_metrics_table_lists_every_metric_the_operator_exports() {
    let exported = exported_metrics();
    assert!(exported.len() >= 10, "{exported:?}");
    let readme = std::fs::read_to_string(repo().join("operator/README.md")).unwrap();
    let table: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `splai_"))
        .collect();
    for (name, kind) in &exported {
        let row = table
            .iter()
            .find(|row| row.starts_with(&format!("| `{name}")))
            .unwrap_or_else(|| panic!("{name} is not in operator/README.md's metrics table"));
        assert!(
            row.contains(&format!("| {kind} |")),
            "{name} is a {kind}: {row}"
        );
    }
    assert_eq!(
        table.len(),
        exported.len(),
        "rows for metrics that do not exist: {table:#?}"
    );
}

#[test]
fn the_grafana_dashboard_charts_latency_queue_jobs_and_workers_from_real_metrics() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/splai-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let exported = exported_metrics();
    let series = |family: &str, kind: &str| -> Vec<String> {
        match kind {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            _ => vec![family.to_owned()],
        }
    };
    let real: BTreeSet<String> = exported
        .iter()
        .flat_map(|(name, kind)| series(name, kind))
        .collect();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(at) = rest.find("splai_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                assert!(
                    real.contains(&name),
                    "panel {}: {name} is not exported",
                    panel["title"]
                );
                used.insert(name);
            }
        }
    }
    for needed in [
        "splai_scheduling_decision_seconds_bucket",
        "splai_queue_depth",
        "splai_jobs",
        "splai_workers",
    ] {
        assert!(used.contains(needed), "no panel charts {needed}");
    }
}
