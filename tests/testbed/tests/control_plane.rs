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

/// The walk-through's local API server runs in the background with no input to read, and one
/// SIGTERM (as `pkill -f target/release/splai-` sends) stops etcd and kube-apiserver and removes
/// their files.
#[test]
fn the_local_apiserver_stops_everything_it_started_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_splai-local-apiserver"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let kubeconfig = loop {
        let line = lines
            .next()
            .expect("the program printed its kubeconfig")
            .unwrap();
        if let Some(path) = line.strip_prefix("export KUBECONFIG=") {
            break std::path::PathBuf::from(path);
        }
    };
    let work = kubeconfig.parent().unwrap().to_owned();
    assert!(work.is_dir());
    // Stdin is closed already: it must not have stopped on that.
    assert!(child.try_wait().unwrap().is_none(), "it stopped by itself");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!work.exists(), "{} was left behind", work.display());
    // No etcd or kube-apiserver still runs from its folder.
    let needle = work.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!cmdline.contains(&needle), "still running: {cmdline}");
    }
}
