//! What the operator's benchmarks share: the job they submit and the operator they start, the
//! release binary built beside them, run as its own process so its CPU and memory are its own.

// Each example compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use splai_scheduler::api::{JobSpec, Resources, TaskSpec};
use splai_testbed::ControlPlane;
use splai_testbed::process::Reaped;

/// Ten independent tasks of one cpu each.
pub fn job_spec() -> JobSpec {
    JobSpec {
        tenant: "bench".into(),
        tasks: (0..10)
            .map(|i| TaskSpec {
                id: format!("t{i}"),
                resources: Resources {
                    cpu_millis: 1000,
                    memory_mib: 128,
                    gpus: 0,
                },
                ..TaskSpec::default()
            })
            .collect(),
        ..JobSpec::default()
    }
}

/// A running `splai-operator` and the port of its `/metrics`.
pub struct Operator {
    pub process: Reaped,
    pub metrics_port: u16,
}

impl Operator {
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

/// Starts the operator for namespace `ns` (its Lease and workers there too) against `cp`, its
/// agents in this process on loopback without credentials, its artifacts in `artifacts`.
/// `extra` adds flags, such as `--identity` and `--lease-name`.
pub fn start_operator(
    cp: &ControlPlane,
    ns: &str,
    agent_port: u16,
    artifacts: &Path,
    extra: &[&str],
) -> Result<Operator> {
    let exe = std::env::current_exe()?;
    let bin: PathBuf = exe
        .parent()
        .and_then(|p| p.parent())
        .context("the example's folder")?
        .join("splai-operator");
    let metrics_port = splai_testbed::free_port()?;
    let process = Reaped::spawn(
        std::process::Command::new(&bin)
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "warn")
            .args(["--namespace", ns, "--system-namespace", ns])
            .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
            .args(["--agent-auth", "none", "--plain-agents"])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--artifacts", &format!("file://{}", artifacts.display())])
            .args(extra),
    )
    .with_context(|| format!("starting {} (build it first)", bin.display()))?;
    Ok(Operator {
        process,
        metrics_port,
    })
}
