//! Processes the tests and benchmarks start: killed when dropped (a failed test leaves none
//! behind), signalled with the system's `kill`, and the command lines of SPLAI's binaries,
//! which this crate knows only by their flags.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A child process killed when dropped, thawed first in case a test froze it (SIGSTOP) and
/// failed before thawing it.
pub struct Reaped(pub Child);

impl Reaped {
    /// Starts `command`; the process is killed when the returned value is dropped.
    pub fn spawn(command: &mut Command) -> std::io::Result<Reaped> {
        command.spawn().map(Reaped)
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = signal(self.0.id(), "-CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `sig` (such as `-STOP`, `-CONT`, `-KILL`) to `pid` with the system's `kill`.
pub fn signal(pid: u32, sig: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill {sig} {pid}: {status}")))
    }
}

/// A `splai-worker` process's settings: the binary, its name, the endpoint(s) it dials (one
/// `host:port` or several, comma-separated), its CPU, the artifact store URL, the folder of its
/// tasks, the namespace it registers its own `SPLAIWorker` in (`--register-in`; without it the
/// operator makes the `SPLAIWorker` when the agent connects) and its kubeconfig.
pub struct WorkerCommand<'a> {
    pub bin: &'a Path,
    pub name: &'a str,
    pub control_plane: &'a str,
    pub cpu_millis: u32,
    pub artifacts: &'a str,
    pub work_dir: &'a Path,
    pub register_in: Option<&'a str>,
    pub kubeconfig: &'a Path,
}

impl WorkerCommand<'_> {
    /// The command line, with 4 GiB, a heartbeat every second and logs at `warn`; add flags or
    /// variables to it before starting it.
    pub fn command(&self) -> Command {
        let mut command = Command::new(self.bin);
        command
            .args(["--name", self.name, "--control-plane", self.control_plane])
            .args([
                "--cpu-millis",
                &self.cpu_millis.to_string(),
                "--memory-mib",
                "4096",
            ])
            .args(["--heartbeat-seconds", "1", "--artifacts", self.artifacts])
            .arg("--work-dir")
            .arg(self.work_dir)
            .env("KUBECONFIG", self.kubeconfig)
            .env("RUST_LOG", "warn");
        if let Some(ns) = self.register_in {
            command.args(["--register-in", ns]);
        }
        command
    }
}

/// Builds another package's binary (cargo builds only a package's own binaries for its tests)
/// and returns its path in the debug profile.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--bin", bin])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {bin} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug").join(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_process_is_gone_once_dropped_even_when_frozen() {
        let mut sleeper = Reaped::spawn(Command::new("sleep").arg("60")).unwrap();
        let pid = sleeper.id();
        signal(pid, "-STOP").unwrap();
        assert!(sleeper.try_wait().unwrap().is_none());
        drop(sleeper);
        // Reaped by the drop: no process, not even a zombie, has the pid's stat as ours.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "{stat}");
    }

    #[test]
    fn signalling_a_process_that_is_gone_is_an_error() {
        let mut done = Command::new("true").spawn().unwrap();
        let pid = done.id();
        done.wait().unwrap();
        assert!(signal(pid, "-CONT").is_err());
    }
}
