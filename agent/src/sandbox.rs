//! Runs one attempt of a `command` task in a sandbox.
//!
//! - **Its own process group**, so a timeout or a cancel kills every process the task started,
//!   not only the first (the group is killed when the run is dropped, too).
//! - **rlimits** on cpu seconds, address space (memory), open files and the size of any file it
//!   writes, set by util-linux `prlimit` in the child before the task's program starts.
//! - **`no_new_privs`**, set by util-linux `setpriv`, so nothing it runs can gain privileges
//!   (setuid binaries stay unprivileged); under an agent run as root, no capabilities either.
//! - **A cleared environment**: only the variables on the allow-list pass through from the agent,
//!   plus `HOME` and `TMPDIR` (the private folder) and the task's own variables.
//! - **A private working folder** per attempt, `ROOT/<job>/<task>/<attempt>/`, mode 0700.
//! - **Confinement** (`confine`, Landlock): the task reads only the system folders and writes
//!   only its own folder; it cannot read the agent's token, environment or memory, another
//!   task's folder, nor signal the agent or other tasks (`crate::confine`).
//! - **Captured output**: stdout and stderr are kept up to `capture_bytes` each; the rest is read
//!   and dropped, so a chatty task never blocks on a full pipe.
//!
//! The wrappers keep this crate free of `unsafe` (setting rlimits in a forked child needs it).
//! Both are in util-linux, which every Linux distribution and the worker image ship.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};

use crate::confine::Confinement;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Cpu time, in seconds (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Address space, in bytes (`RLIMIT_AS`): allocations past it fail.
    pub memory_bytes: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// The largest file the task may write, in bytes (`RLIMIT_FSIZE`).
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_seconds: 3600,
            memory_bytes: 4 << 30,
            open_files: 1024,
            file_bytes: 1 << 30,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Where the private folders go.
    pub root: PathBuf,
    /// Agent variables a task may see, such as `PATH`, `LANG` or `TZ`.
    pub env_allow: Vec<String>,
    pub limits: Limits,
    /// Bytes of stdout and of stderr kept.
    pub capture_bytes: usize,
    /// Landlock confinement; `None` runs tasks with the agent's own access (`--task-isolation
    /// none`, for kernels without Landlock).
    pub confine: Option<Confinement>,
}

impl SandboxConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            root: root.into(),
            env_allow: vec!["PATH".into(), "LANG".into(), "TZ".into()],
            limits: Limits::default(),
            capture_bytes: 1 << 20,
            confine: None,
        }
    }
}

/// One attempt to run.
#[derive(Clone, Debug)]
pub struct Attempt<'a> {
    pub job: &'a str,
    pub task: &'a str,
    pub attempt: u32,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Ended by a signal, such as SIGXCPU past the cpu limit or SIGKILL.
    Signal(i32),
    /// Ran past its timeout; the whole process group was killed.
    TimedOut,
}

#[derive(Clone, Debug)]
pub struct Finished {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output past `capture_bytes` was dropped.
    pub truncated: bool,
    /// The attempt's private folder, which holds whatever files the task wrote.
    pub workdir: PathBuf,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.exit == Exit::Code(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the task has no command: give spec.tasks[].command, such as [\"python\", \"run.py\"]")]
    NoCommand,
    #[error("`{part}` cannot name a folder (it is empty, `.`/`..`, or holds `/`)")]
    BadName { part: String },
    #[error("creating the private folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "starting the sandbox failed ({source}); the worker needs util-linux's `setpriv` and `prlimit` on its PATH"
    )]
    Spawn { source: std::io::Error },
    #[error("waiting for the task: {0}")]
    Wait(std::io::Error),
}

/// Kills the process group when dropped: a cancelled attempt (its future dropped) leaves
/// nothing behind.
struct Group(Option<Pid>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH: everything already exited.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

fn folder_part(part: &str) -> Result<&str, SandboxError> {
    if part.is_empty() || part == "." || part == ".." || part.contains('/') || part.contains('\0') {
        return Err(SandboxError::BadName {
            part: part.to_owned(),
        });
    }
    Ok(part)
}

fn private_folder(root: &Path, a: &Attempt<'_>) -> Result<PathBuf, SandboxError> {
    let dir = root
        .join(folder_part(&a.job.replace('/', "."))?)
        .join(folder_part(a.task)?)
        .join(a.attempt.to_string());
    let made = |path: &Path, e| SandboxError::Folder {
        path: path.to_owned(),
        source: e,
    };
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| made(&dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| made(&dir, e))?;
    Ok(dir)
}

/// Reads everything, keeping the first `cap` bytes.
async fn capture(mut from: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
}

/// Runs the attempt and waits for it (or its timeout).
pub async fn run(cfg: &SandboxConfig, a: &Attempt<'_>) -> Result<Finished, SandboxError> {
    let (program, args) = a.argv.split_first().ok_or(SandboxError::NoCommand)?;
    let workdir = private_folder(&cfg.root, a)?;
    let l = &cfg.limits;
    let mut cmd = Command::new("setpriv");
    cmd.arg("--no-new-privs");
    if nix::unistd::Uid::effective().is_root() {
        // An agent run as root (not the DaemonSet's way) would hand its tasks every capability,
        // and CAP_SYS_PTRACE lets a process read others' memory and environment past Landlock.
        cmd.args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
        ]);
    }
    cmd.arg("--")
        .arg("prlimit")
        .arg(format!("--cpu={}", l.cpu_seconds))
        .arg(format!("--as={}", l.memory_bytes))
        .arg(format!("--nofile={}", l.open_files))
        .arg(format!("--fsize={}", l.file_bytes))
        .arg("--");
    if let Some(confine) = &cfg.confine {
        cmd.args(confine.command_line(&workdir));
    }
    cmd.arg(program)
        .args(args)
        .current_dir(&workdir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for name in &cfg.env_allow {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    if std::env::var_os("PATH").is_none() || !cfg.env_allow.iter().any(|n| n == "PATH") {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    cmd.env("HOME", &workdir).env("TMPDIR", workdir.join("tmp"));
    for (k, v) in a.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|source| SandboxError::Spawn { source })?;
    let mut group = Group(
        child
            .id()
            .map(|id| Pid::from_raw(i32::try_from(id).unwrap_or(i32::MAX))),
    );
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let cap = cfg.capture_bytes;
    let output =
        tokio::spawn(async move { tokio::join!(capture(stdout, cap), capture(stderr, cap)) });
    let waited = match a.timeout {
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    let exit = match waited {
        Some(status) => {
            let status = status.map_err(SandboxError::Wait)?;
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Signal(0),
            }
        }
        None => Exit::TimedOut,
    };
    // Whatever the task left running in its group goes with it, and the pipes close.
    group.kill();
    let _ = child.wait().await;
    let ((stdout, out_cut), (stderr, err_cut)) = output.await.unwrap_or_default();
    Ok(Finished {
        exit,
        stdout,
        stderr,
        truncated: out_cut || err_cut,
        workdir,
    })
}
