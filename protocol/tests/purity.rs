//! The protocol carries messages and nothing else: no Kubernetes client, no turmoil in production
//! builds, and no clock or socket that turmoil cannot virtualise. This reads `cargo metadata` and
//! the sources to keep it so.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

const FORBIDDEN_CRATES: [&str; 5] = [
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    // Only behind the `turmoil` feature, which production binaries leave off.
    "turmoil",
];

/// Names of the crates `splai-protocol` depends on through normal edges, default features.
fn production_dependencies() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let protocol = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "splai-protocol")
        .expect("the protocol is in the graph");
    // The manifest's own normal dependencies that are not optional: what a build with default
    // features links. (The resolve graph would also show what the dev-dependencies turn on.)
    let direct: BTreeSet<&str> = protocol["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null() && d["optional"] == false)
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = nodes
        .keys()
        .filter(|id| direct.contains(name_of[**id]))
        .copied()
        .collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(name_of[id].to_owned()) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen
}

#[test]
fn production_builds_depend_on_no_kubernetes_client_and_no_turmoil() {
    let deps = production_dependencies();
    let bad: Vec<_> = FORBIDDEN_CRATES
        .iter()
        .filter(|c| deps.contains(**c))
        .collect();
    assert!(bad.is_empty(), "depends on {bad:?} (all: {deps:?})");
    assert!(
        deps.contains("tokio") && deps.contains("splai-scheduler"),
        "the walk found the real dependencies: {deps:?}"
    );
}

#[test]
fn the_sources_read_time_and_the_network_only_through_tokio() {
    // turmoil virtualises `tokio::time` and swaps the network through `Network`; the standard
    // library's clock and sockets would escape the simulation.
    let forbidden = [
        "std::time::Instant",
        "SystemTime",
        "std::net",
        "thread::sleep",
        "std::thread",
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for f in forbidden {
                assert!(!text.contains(f), "{} uses {f}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 6);
}
