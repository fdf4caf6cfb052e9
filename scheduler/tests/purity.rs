//! The core must stay pure: no async runtime, no Kubernetes client, no I/O, no clock and no OS
//! randomness. This reads `cargo metadata` and the sources to keep it so.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

const FORBIDDEN_CRATES: [&str; 10] = [
    "tokio",
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    "hyper",
    "reqwest",
    "getrandom",
    "mio",
    "socket2",
];

#[test]
fn the_core_depends_on_no_runtime_client_io_or_os_randomness_crate() {
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
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let by_id: HashMap<&str, &serde_json::Value> = nodes
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = by_id
        .keys()
        .find(|id| name_of[*id] == "splai-scheduler")
        .copied()
        .expect("the core is in the graph");
    // Walk the normal (non-dev, non-build) dependency edges.
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for dep in by_id[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(name_of[pkg]) {
                stack.push(pkg);
            }
        }
    }
    let bad: Vec<&&str> = seen
        .iter()
        .filter(|n| FORBIDDEN_CRATES.contains(n))
        .collect();
    assert!(
        bad.is_empty(),
        "the core must stay pure, but depends on {bad:?} (all: {seen:?})"
    );
    assert!(
        seen.contains("rand_chacha"),
        "the walk found the core's real dependencies: {seen:?}"
    );
}

#[test]
fn the_core_sources_read_no_clock_file_socket_or_os_randomness() {
    let forbidden = [
        "std::fs",
        "std::net",
        "std::time::SystemTime",
        "Instant::now",
        "SystemTime::now",
        "thread_rng",
        "from_entropy",
        "std::env",
        "std::process",
        "std::thread",
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut stack = vec![std::path::PathBuf::from(dir)];
    let mut checked = 0;
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for f in forbidden {
                    assert!(
                        !text.contains(f),
                        "{} uses {f}: pass time and randomness in instead",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10);
}
