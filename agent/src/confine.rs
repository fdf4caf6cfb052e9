//! Confines a task with Landlock, the kernel's unprivileged access control (Linux 5.13+), so it
//! can reach neither the agent's secrets nor other tasks:
//!
//! - **Files**: the task reads and executes only the system folders (`/usr`, `/etc`, `/proc`,
//!   ...; `/run` and `/var`, where Kubernetes mounts service-account tokens and Secrets, are not
//!   among them) and writes only its own attempt folder and a few devices (`/dev/null`, ...).
//!   Another task's folder, the agent's token, its configuration and the artifact store are
//!   out of reach.
//! - **The agent's environment and memory**: a confined process may not trace a process outside
//!   its Landlock domain, which is what reading `/proc/<pid>/environ` or `/proc/<pid>/mem`
//!   takes; each task is in a domain of its own.
//! - **Signals and abstract sockets** (Landlock ABI 6, Linux 6.12+): a task cannot signal the
//!   agent or another task, nor connect to their abstract UNIX sockets.
//!
//! Landlock needs no privilege, capability or user namespace, so it works in the worker's
//! hardened container (non-root, every capability dropped, `no_new_privs`); a uid per task would
//! need CAP_SETUID, and a mount namespace CAP_SYS_ADMIN or a user namespace, which the default
//! seccomp profiles of container runtimes refuse to a process without CAP_SYS_ADMIN.
//!
//! The agent runs its own binary as the last step of the sandbox's chain,
//! `splai-worker __confine --ro P.. --rw P.. -- PROGRAM ARGS..`: it restricts itself, then
//! executes the task's program, which keeps the restriction (a forked child's `pre_exec` hook
//! would need `unsafe`, which this crate forbids).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};

/// The first argument that makes `splai-worker` confine itself and run a task's program.
pub const ARG: &str = "__confine";

/// The newest Landlock ABI this code asks for; older kernels enforce what they know.
const ABI_WANTED: ABI = ABI::V6;

/// Folders a task may read and execute from, when they exist.
pub const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc",
    "/sys", "/dev",
];

/// Devices a task may write.
pub const DEVICES_WRITE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// What a confined task may touch besides its own folder.
#[derive(Clone, Debug)]
pub struct Confinement {
    /// The `splai-worker` binary, which confines itself and then runs the task.
    pub exe: PathBuf,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

impl Confinement {
    /// The system folders and devices, plus `extra_read` (such as a models folder).
    pub fn new(exe: PathBuf, extra_read: &[PathBuf]) -> Self {
        let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        read.extend(extra_read.iter().cloned());
        Confinement {
            exe,
            read,
            write: DEVICES_WRITE.iter().map(PathBuf::from).collect(),
        }
    }

    /// The arguments that run `program` confined, writing only in `workdir`.
    pub fn command_line(&self, workdir: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![self.exe.clone().into(), ARG.into()];
        for p in &self.read {
            argv.extend(["--ro".into(), p.clone().into()]);
        }
        for p in self.write.iter().map(PathBuf::as_path).chain([workdir]) {
            argv.extend(["--rw".into(), p.into()]);
        }
        argv.push("--".into());
        argv
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error(
        "this kernel does not enforce Landlock ({0}), so tasks cannot be isolated from the agent \
         and from each other: use Linux 5.13 or later with `landlock` in its lsm= list, and a \
         seccomp profile that allows the landlock_* system calls (containerd 1.6.20's \
         RuntimeDefault, which SPLAI's pod tests run under, does); or start the worker with \
         `--task-isolation none`"
    )]
    Unavailable(String),
    #[error("usage: splai-worker {ARG} [--ro PATH].. [--rw PATH].. -- PROGRAM [ARGS..]")]
    Usage,
    #[error("running {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

/// Checks that this kernel enforces Landlock, without restricting anything: a ruleset is
/// made and dropped.
pub fn available() -> Result<(), ConfineError> {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .map(drop)
        .map_err(|e| ConfineError::Unavailable(e.to_string()))
}

/// `splai-worker __confine ...` (`args` after [`ARG`]): restricts this process, then executes
/// the program in its place. Returns only on failure.
pub fn exec(mut args: impl Iterator<Item = OsString>) -> ConfineError {
    let (mut read, mut write, mut program) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--ro") => read.extend(args.next().map(PathBuf::from)),
            Some("--rw") => write.extend(args.next().map(PathBuf::from)),
            Some("--") => {
                program.extend(args.by_ref());
                break;
            }
            _ => return ConfineError::Usage,
        }
    }
    let Some((name, rest)) = program.split_first() else {
        return ConfineError::Usage;
    };
    if let Err(e) = restrict(&read, &write) {
        return e;
    }
    let source = std::process::Command::new(name).args(rest).exec();
    ConfineError::Exec {
        program: name.to_string_lossy().into_owned(),
        source,
    }
}

/// Restricts this process (and what it executes) to `read` and `write`.
fn restrict(read: &[PathBuf], write: &[PathBuf]) -> Result<(), ConfineError> {
    let unavailable = |e: landlock::RulesetError| ConfineError::Unavailable(e.to_string());
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_WANTED))
        .and_then(|r| r.scope(Scope::from_all(ABI_WANTED)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(read, AccessFs::from_read(ABI_WANTED))))
        .and_then(|r| r.add_rules(path_beneath_rules(write, AccessFs::from_all(ABI_WANTED))))
        .and_then(|r| r.restrict_self())
        .map_err(unavailable)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(ConfineError::Unavailable(
            "the ruleset was not enforced".into(),
        ));
    }
    Ok(())
}
