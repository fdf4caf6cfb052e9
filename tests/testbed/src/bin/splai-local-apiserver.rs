//! `splai-local-apiserver`: the test bed's etcd and kube-apiserver, kept running for you: a
//! Kubernetes API without kind or Docker, to try the operator, the workers, the gateway and the
//! CLI on one machine (README.md, "The whole flow on one machine").
//!
//! It prints how to reach it (the admin kubeconfig, and the folder with a matching `kubectl`)
//! and runs until it gets SIGTERM, SIGINT (Ctrl-C) or SIGHUP; then etcd and kube-apiserver stop
//! and their files go. So it runs in the background without a terminal to read, and the
//! walk-through's `pkill -f target/release/splai-` stops it with everything else.
//! No kubelet runs: nothing here starts pods.

use tokio::signal::unix::{SignalKind, signal};

fn main() -> anyhow::Result<()> {
    // The handlers are in place before anything is started, so a signal that comes early still
    // stops what was started.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let _entered = runtime.enter();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    eprintln!("starting etcd and kube-apiserver (the first run builds them: minutes)...");
    let plane = splai_testbed::ControlPlane::start()?;
    println!("export KUBECONFIG={}", plane.kubeconfig().display());
    println!("export PATH={}:$PATH", splai_testbed::bin_dir()?.display());
    println!(
        "# API server {}; stop it with Ctrl-C or SIGTERM (pkill -f splai-local-apiserver)",
        plane.server()
    );
    let got = runtime.block_on(async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        }
    });
    eprintln!("{got}: stopping kube-apiserver and etcd");
    drop(plane);
    Ok(())
}
