use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

#[test]
fn a_private_control_plane_serves_requests_and_is_gone_after_drop() {
    let plane = splai_testbed::ControlPlane::start().unwrap();
    let work = plane.work_dir().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let version = runtime.block_on(async {
        let client = plane.client().await.unwrap();
        client.apiserver_version().await.unwrap()
    });
    assert_eq!(version.minor, "37");
    assert!(plane.kubeconfig().is_file());
    assert!(plane.is_running());

    let pids = plane.pids().to_vec();
    assert_eq!(pids.len(), 2);
    drop(plane);
    assert!(!work.exists(), "{} was left behind", work.display());
    for pid in pids {
        let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
        assert!(!proc.exists(), "process {pid} is still there");
    }
}

#[tokio::test]
async fn each_test_gets_its_own_namespace_on_the_shared_control_plane() {
    let (client, first) = splai_testbed::namespace("Shared Plane").await.unwrap();
    let (_, second) = splai_testbed::namespace("Shared Plane").await.unwrap();
    assert_ne!(first, second);
    assert!(first.starts_with("shared-plane-"), "{first}");
    let namespaces = Api::<Namespace>::all(client);
    assert!(namespaces.get_opt(&first).await.unwrap().is_some());
    assert!(namespaces.get_opt(&second).await.unwrap().is_some());
}
