//! Finding the test tools: each is named by an environment variable (`SPLAI_K8S_BIN` for etcd and
//! kube-apiserver), else installed by its script under `scripts/`, which does it once and prints
//! the path last.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub(crate) fn bin_dir() -> Result<PathBuf> {
    let dir = installed("SPLAI_K8S_BIN", "k8s-testbin.sh")?;
    for name in ["etcd", "kube-apiserver"] {
        let path = dir.join(name);
        if !path.is_file() {
            bail!("{} is missing; run scripts/k8s-testbin.sh", path.display());
        }
    }
    Ok(dir)
}

/// A test tool: the path in the environment variable `var`, else the last line that
/// `scripts/<script>` prints (it installs the tool the first time).
pub fn installed(var: &str, script: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    // stderr passes through: a cold install takes minutes and says what it is doing.
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
        .with_context(|| format!("{} printed no path", script.display()))?;
    Ok(PathBuf::from(last.trim()))
}
