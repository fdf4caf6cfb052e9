//! Finding etcd and kube-apiserver: `SPLAI_K8S_BIN`, or `scripts/k8s-testbin.sh`, which builds them
//! once and prints its cache folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub(crate) fn bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("SPLAI_K8S_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => from_script()?,
    };
    for name in ["etcd", "kube-apiserver"] {
        let path = dir.join(name);
        if !path.is_file() {
            bail!("{} is missing; run scripts/k8s-testbin.sh", path.display());
        }
    }
    Ok(dir)
}

fn from_script() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/k8s-testbin.sh");
    // stderr passes through: a cold build takes minutes and says what it is doing.
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8(out.stdout)?;
    let last = stdout
        .lines()
        .last()
        .context("k8s-testbin.sh printed no bin folder")?;
    Ok(PathBuf::from(last.trim()))
}
