//! Where the binaries' logs go: stderr, as plain text when stderr is not a terminal. The test
//! runs itself again as a child process (the subscriber is global, and the streams must be real
//! pipes), in which `a_child_that_logs_one_line` installs the subscriber and logs.

use std::process::Command;

const CHILD: &str = "SPLAI_TELEMETRY_LOG_CHILD";
const LINE: &str = "a line for the log test";

#[test]
fn a_child_that_logs_one_line() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let _telemetry = splai_telemetry::Telemetry::init("splai-test", false).unwrap();
    tracing::info!(answer = 42, "{LINE}");
}

#[test]
fn logs_go_to_stderr_without_colour_when_it_is_not_a_terminal() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_child_that_logs_one_line", "--nocapture"])
        .env(CHILD, "1")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains(LINE),
        "the log line went to stdout: {stdout}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains(LINE))
        .unwrap_or_else(|| panic!("no log line on stderr: {stderr}"));
    assert!(
        !line.contains('\u{1b}'),
        "colour codes in a piped log: {line:?}"
    );
    assert!(
        line.contains("INFO") && line.contains("answer=42"),
        "{line}"
    );
}
