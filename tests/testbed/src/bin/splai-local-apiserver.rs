//! `splai-local-apiserver`: the test bed's etcd and kube-apiserver, kept running for you: a
//! Kubernetes API without kind or Docker, to try the operator, the workers, the gateway and the
//! CLI on one machine (README.md, "The whole flow on one machine").
//!
//! It prints how to reach it (the admin kubeconfig, and the folder with a matching `kubectl`)
//! and runs until its input ends (Ctrl-D); then etcd and kube-apiserver stop and their files go.
//! No kubelet runs: nothing here starts pods.

use std::io::Read;

fn main() -> anyhow::Result<()> {
    eprintln!("starting etcd and kube-apiserver (the first run builds them: minutes)...");
    let plane = splai_testbed::ControlPlane::start()?;
    println!("export KUBECONFIG={}", plane.kubeconfig().display());
    println!("export PATH={}:$PATH", splai_testbed::bin_dir()?.display());
    println!(
        "# API server {}; end this program's input (Ctrl-D) to stop it",
        plane.server()
    );
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(plane);
    Ok(())
}
