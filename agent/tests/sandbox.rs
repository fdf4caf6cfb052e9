//! The sandbox with real processes: output, the private folder, timeouts that kill the whole
//! process tree, the memory, file-size and output caps, the environment, `no_new_privs`, and
//! the Landlock confinement that keeps a task from the agent's secrets and from other tasks.
//! Every test runs confined, as the worker does by default; the test process plays the agent.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use splai_worker::confine::Confinement;
use splai_worker::sandbox::{Attempt, Exit, Finished, Limits, SandboxConfig, SandboxError, run};

/// A sandbox root in a fresh temporary folder, removed when the test ends, passed or failed.
fn sandbox(test: &str) -> (TempDir, SandboxConfig) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("splai-sandbox-{test}-"))
        .tempdir()
        .expect("a temporary folder");
    let mut cfg = SandboxConfig::new(dir.path().join("work"));
    cfg.confine = Some(Confinement::new(
        PathBuf::from(env!("CARGO_BIN_EXE_splai-worker")),
        &[],
    ));
    (dir, cfg)
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

async fn sh(cfg: &SandboxConfig, script: &str, timeout: Option<Duration>) -> Finished {
    sh_as(cfg, "step", script, timeout).await
}

async fn sh_as(
    cfg: &SandboxConfig,
    task: &str,
    script: &str,
    timeout: Option<Duration>,
) -> Finished {
    let argv = argv(&["sh", "-c", script]);
    let attempt = Attempt {
        job: "ns/job",
        task,
        attempt: 1,
        argv: &argv,
        env: &[],
        timeout,
    };
    run(cfg, &attempt).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_command_runs_in_its_private_folder_with_its_output_captured() {
    let (_dir, cfg) = sandbox("folder");
    let done = sh(
        &cfg,
        "pwd; echo result > out.txt; echo oops >&2; exit 3",
        None,
    )
    .await;
    assert_eq!(done.exit, Exit::Code(3));
    assert!(
        done.workdir.ends_with("ns.job/step/1"),
        "{:?}",
        done.workdir
    );
    assert_eq!(
        text(&done.stdout).trim(),
        done.workdir.display().to_string()
    );
    assert_eq!(text(&done.stderr), "oops\n");
    assert_eq!(
        std::fs::read_to_string(done.workdir.join("out.txt")).unwrap(),
        "result\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&done.workdir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

fn gone(pid: u32) -> bool {
    // Gone, or a zombie waiting for whoever adopted it: either way it runs nothing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_tree() {
    let (_dir, cfg) = sandbox("timeout");
    let done = sh(
        &cfg,
        "sleep 300 & echo $! > background.pid; sleep 300",
        Some(Duration::from_millis(500)),
    )
    .await;
    assert_eq!(done.exit, Exit::TimedOut);
    let pid: u32 = std::fs::read_to_string(done.workdir.join("background.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The kill is sent before `run` returns; give the kernel a moment to deliver it.
    let mut tries = 0;
    while !gone(pid) && tries < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tries += 1;
    }
    assert!(
        gone(pid),
        "the background process {pid} survived the timeout"
    );
}

#[tokio::test]
async fn the_memory_limit_is_enforced() {
    let (_dir, mut cfg) = sandbox("memory");
    cfg.limits = Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let alloc =
        |mib: u32| format!("python3 -c 'b = bytearray({mib} * 1024 * 1024); print(len(b))'");
    let small = sh(&cfg, &alloc(16), None).await;
    assert!(small.succeeded(), "{}", text(&small.stderr));
    let big = sh(&cfg, &alloc(1024), None).await;
    assert_ne!(big.exit, Exit::Code(0));
    assert!(
        text(&big.stderr).contains("MemoryError"),
        "{}",
        text(&big.stderr)
    );
}

#[tokio::test]
async fn output_and_written_files_are_capped() {
    let (_dir, mut cfg) = sandbox("caps");
    cfg.capture_bytes = 1000;
    cfg.limits = Limits {
        file_bytes: 1 << 20,
        ..Limits::default()
    };
    let chatty = sh(&cfg, "head -c 5000000 /dev/zero | tr '\\0' x", None).await;
    assert!(chatty.succeeded());
    assert_eq!(chatty.stdout.len(), 1000);
    assert!(chatty.truncated);
    let writer = sh(&cfg, "head -c 3000000 /dev/zero > big.bin", None).await;
    assert_ne!(
        writer.exit,
        Exit::Code(0),
        "writing past the file limit must fail"
    );
    let size = std::fs::metadata(writer.workdir.join("big.bin"))
        .unwrap()
        .len();
    assert!(size <= 1 << 20, "{size} bytes written");
}

#[tokio::test]
async fn the_environment_holds_only_the_allow_list_and_the_tasks_own_variables() {
    let (_dir, cfg) = sandbox("env");
    let argv = argv(&["env"]);
    let env = [("MODEL_NAME".to_owned(), "llama-8b".to_owned())];
    let attempt = Attempt {
        job: "ns/job",
        task: "env",
        attempt: 2,
        argv: &argv,
        env: &env,
        timeout: None,
    };
    let done = run(&cfg, &attempt).await.unwrap();
    let seen = text(&done.stdout);
    let names: Vec<&str> = seen.lines().filter_map(|l| l.split('=').next()).collect();
    for name in &names {
        assert!(
            ["PATH", "LANG", "TZ", "HOME", "TMPDIR", "MODEL_NAME"].contains(name),
            "{name} leaked into the sandbox: {seen}"
        );
    }
    assert!(seen.contains("MODEL_NAME=llama-8b"), "{seen}");
    assert!(
        seen.contains(&format!("HOME={}", done.workdir.display())),
        "{seen}"
    );
    // The test runner's own variables (cargo sets many) stay out.
    assert!(!seen.contains("CARGO"), "{seen}");
}

#[tokio::test]
async fn the_task_cannot_gain_privileges() {
    let (_dir, cfg) = sandbox("privs");
    let done = sh(&cfg, "grep NoNewPrivs /proc/self/status", None).await;
    assert_eq!(
        text(&done.stdout).split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
}

#[tokio::test]
async fn a_task_without_a_command_or_with_an_unsafe_name_is_refused() {
    let (_dir, cfg) = sandbox("refused");
    let none: Vec<String> = Vec::new();
    let attempt = Attempt {
        job: "ns/job",
        task: "t",
        attempt: 1,
        argv: &none,
        env: &[],
        timeout: None,
    };
    assert!(matches!(
        run(&cfg, &attempt).await,
        Err(SandboxError::NoCommand)
    ));
    let argv = argv(&["true"]);
    let escape = Attempt {
        task: "..",
        argv: &argv,
        ..attempt
    };
    let err = run(&cfg, &escape).await.unwrap_err();
    assert!(matches!(err, SandboxError::BadName { .. }), "{err}");
}

/// Linux 6.12 brought Landlock's signal scoping (ABI 6).
fn kernel_scopes_signals() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 12)
}

#[tokio::test]
async fn a_confined_task_cannot_reach_the_agents_token_environment_or_another_tasks_folder() {
    let (dir, cfg) = sandbox("confined");
    // The agent's secret, outside the work folder, as a mounted service-account token is.
    let token = dir.path().join("token");
    std::fs::write(&token, "agent-token").unwrap();
    // Another task's output, in its own private folder.
    let first = sh_as(&cfg, "first", "echo first-output > out.txt", None).await;
    assert!(first.succeeded(), "{}", text(&first.stderr));
    let others = first.workdir.join("out.txt");
    let agent = std::process::id();
    let script = format!(
        "cat {token} || echo token-denied; \
         cat {others} || echo folder-denied; \
         ls {others_dir} || echo listing-denied; \
         head -c 40 /proc/{agent}/environ || echo environ-denied; \
         kill -0 {agent} || echo signal-denied; \
         echo own-output > own.txt && cat own.txt; \
         cat /etc/hostname > /dev/null && echo system-readable",
        token = token.display(),
        others = others.display(),
        others_dir = first.workdir.display(),
    );
    let done = sh_as(&cfg, "second", &script, None).await;
    let out = text(&done.stdout);
    let err = text(&done.stderr);
    for denied in [
        "token-denied",
        "folder-denied",
        "listing-denied",
        "environ-denied",
    ] {
        assert!(out.contains(denied), "not {denied}: {out}\n{err}");
    }
    assert!(!out.contains("agent-token"), "{out}");
    assert!(!out.contains("first-output"), "{out}");
    if kernel_scopes_signals() {
        assert!(out.contains("signal-denied"), "{out}\n{err}");
    }
    // What it may do, it still does: its own folder, the system's files.
    assert!(out.contains("own-output"), "{out}\n{err}");
    assert!(out.contains("system-readable"), "{out}\n{err}");

    // Unconfined (`--task-isolation none`), the same task reads the token and the other
    // folder: those denials are the confinement's. (The environment may stay out of reach
    // unconfined too: under a root agent the task runs without capabilities.)
    let open = SandboxConfig {
        confine: None,
        ..cfg.clone()
    };
    let done = sh_as(&open, "third", &script, None).await;
    let out = text(&done.stdout);
    assert!(
        out.contains("agent-token") && out.contains("first-output"),
        "{out}"
    );
}

#[tokio::test]
async fn a_confined_task_cannot_signal_or_read_another_running_task() {
    let (_dir, cfg) = sandbox("siblings");
    // The first task publishes its pid in its folder and waits.
    let sleeper = sh_as(
        &cfg,
        "sleeper",
        "echo $$ > pid; exec sleep 30",
        Some(Duration::from_secs(20)),
    );
    let prober = async {
        let root = cfg.root.join("ns.job/sleeper/1/pid");
        let mut pid = String::new();
        for _ in 0..100 {
            // The test (the agent) reads it; the other task could not.
            if let Ok(p) = std::fs::read_to_string(&root) {
                pid = p.trim().to_owned();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!pid.is_empty(), "the sleeper never started");
        let script = format!(
            "head -c 20 /proc/{pid}/environ || echo environ-denied; \
             kill -9 {pid} || echo signal-denied"
        );
        let done = sh_as(&cfg, "prober", &script, None).await;
        text(&done.stdout)
    };
    let (slept, out) = tokio::join!(sleeper, prober);
    assert!(out.contains("environ-denied"), "{out}");
    if kernel_scopes_signals() {
        assert!(out.contains("signal-denied"), "{out}");
        assert_eq!(
            slept.exit,
            Exit::TimedOut,
            "the sleeper was killed by its neighbour"
        );
    }
}

#[tokio::test]
async fn a_missing_program_in_a_confined_task_is_a_clear_failure() {
    let (_dir, cfg) = sandbox("missing");
    let argv = argv(&["no-such-program-here"]);
    let attempt = Attempt {
        job: "ns/job",
        task: "missing",
        attempt: 1,
        argv: &argv,
        env: &[],
        timeout: None,
    };
    let done = run(&cfg, &attempt).await.unwrap();
    assert_eq!(done.exit, Exit::Code(126));
    let err = text(&done.stderr);
    assert!(err.contains("running no-such-program-here"), "{err}");
}
