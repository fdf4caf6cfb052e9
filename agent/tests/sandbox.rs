//! The sandbox with real processes: output, the private folder, timeouts that kill the whole
//! process tree, the memory, file-size and output caps, the environment, and `no_new_privs`.

use std::time::Duration;

use tempfile::TempDir;

use splai_worker::sandbox::{Attempt, Exit, Finished, Limits, SandboxConfig, SandboxError, run};

/// A sandbox root in a fresh temporary folder, removed when the test ends, passed or failed.
fn sandbox(test: &str) -> (TempDir, SandboxConfig) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("splai-sandbox-{test}-"))
        .tempdir()
        .expect("a temporary folder");
    let cfg = SandboxConfig::new(dir.path().join("work"));
    (dir, cfg)
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

async fn sh(cfg: &SandboxConfig, script: &str, timeout: Option<Duration>) -> Finished {
    let argv = argv(&["sh", "-c", script]);
    let attempt = Attempt {
        job: "ns/job",
        task: "step",
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
