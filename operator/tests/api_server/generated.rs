use std::path::PathBuf;

#[test]
fn the_committed_crd_yaml_is_what_crdgen_writes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/crd/bases");
    for crd in splai_operator::crd::all() {
        let path = dir.join(splai_operator::crd::file_name(&crd));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == splai_operator::crd::to_yaml(&crd),
            "{} is stale: run `cargo run -p splai-operator --bin crdgen`",
            path.display()
        );
    }
}

#[test]
fn every_sample_reads_as_its_rust_type() {
    use splai_operator::{SPLAIJob, SPLAIModelRoute, SPLAIPolicy, SPLAIWorker};
    let job: SPLAIJob = serde_json::from_value(crate::support::sample("splaijob")).unwrap();
    assert_eq!(job.spec.0.tasks.len(), 2);
    let worker: SPLAIWorker =
        serde_json::from_value(crate::support::sample("splaiworker")).unwrap();
    assert_eq!(worker.spec.0.capabilities.gpus, 1);
    let policy: SPLAIPolicy =
        serde_json::from_value(crate::support::sample("splaipolicy")).unwrap();
    assert_eq!(policy.spec.0.tenant, "team-a");
    let route: SPLAIModelRoute =
        serde_json::from_value(crate::support::sample("splaimodelroute")).unwrap();
    assert_eq!(route.spec.0.priority, 100);
}
