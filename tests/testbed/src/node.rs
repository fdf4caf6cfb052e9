//! A whole one-node Kubernetes cluster (`scripts/node-up.sh`): etcd, kube-apiserver, the
//! controller-manager, the scheduler, kubelet with containerd, kube-proxy and CoreDNS, as processes
//! on this machine. Pods really run, in containers, on a real pod network.
//!
//! The script itself is the supervisor: it stops every pod and process it started, unmounts what
//! kubelet mounted and removes the iptables chains and the bridge when its stdin closes, which
//! happens on drop, and also when the test process dies in any way.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A running one-node cluster. Dropping it stops everything and removes its files.
pub struct Node {
    script: Child,
    stdin: Option<ChildStdin>,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    log: PathBuf,
    started_in: Duration,
}

impl Node {
    /// Runs `scripts/node-up.sh --stdin` (which builds or installs the parts it lacks the first
    /// time) and waits until the node is Ready. Needs root. The script's progress goes to
    /// `<temp>/splai-node-up-<pid>.log`, whose tail an error carries.
    pub fn start() -> Result<Node> {
        let kubectl = crate::bin_dir()?.join("kubectl");
        let script = repo().join("scripts/node-up.sh");
        let log = std::env::temp_dir().join(format!("splai-node-up-{}.log", std::process::id()));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let started = Instant::now();
        let mut child = Command::new("bash")
            .arg(&script)
            .arg("--stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("node-up.sh stdout")?;
        let mut node = Node {
            script: child,
            stdin,
            kubeconfig: PathBuf::new(),
            kubectl,
            log,
            started_in: Duration::ZERO,
        };
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(path) = line.strip_prefix("ready ") {
                        node.kubeconfig = PathBuf::from(path.trim());
                        break;
                    }
                }
                Some(Err(e)) => return Err(e).context("reading node-up.sh's stdout"),
                None => bail!(
                    "scripts/node-up.sh stopped before the node was ready:\n{}",
                    node.log_tail()
                ),
            }
        }
        node.started_in = started.elapsed();
        Ok(node)
    }

    /// The kubeconfig of a `system:masters` admin, for `kubectl --kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// How long [`Node::start`] took, builds included.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// A new admin client. Make one per tokio runtime, as for [`crate::ControlPlane::client`].
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// A `kubectl` command (the one of `scripts/k8s-testbin.sh`) aimed at this cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// The folder of the components' logs (kubelet.log, containerd.log, ...), removed on drop.
    pub fn logs_dir(&self) -> PathBuf {
        self.kubeconfig
            .parent()
            .map(|p| p.join("logs"))
            .unwrap_or_default()
    }

    /// The last lines of node-up.sh's own output and of every component's log, for a failure
    /// message.
    pub fn log_tail(&self) -> String {
        let mut out = crate::tail(&self.log);
        if let Ok(entries) = std::fs::read_dir(self.logs_dir()) {
            let mut logs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            logs.sort();
            for log in logs {
                out.push('\n');
                out.push_str(&crate::tail(&log));
            }
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Closing the pipe is the script's signal to stop the cluster.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.script.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
