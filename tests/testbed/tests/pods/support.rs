//! The cluster every test of this binary shares: SPLAI's binaries wrapped in images
//! (`scripts/node-images.sh --splai`), a one-node cluster ([`splai_testbed::Node`]), and
//! `deploy/node` applied with `kubectl apply -k`, the gateway given a token and a certificate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use splai_scheduler::api::ExecutionRecord;
use splai_testbed::Node;

pub(crate) const SYSTEM: &str = "splai-system";
pub(crate) const TENANT: &str = "team-a";
/// Where deploy/node's volume keeps the artifacts, on this machine.
pub(crate) const ARTIFACTS: &str = "/var/lib/splai/artifacts";

pub(crate) struct Splai {
    pub(crate) node: Node,
    pub(crate) node_name: String,
    pub(crate) token: String,
    pub(crate) gateway_ca: PathBuf,
    pub(crate) binaries: PathBuf,
}

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The shared cluster with SPLAI installed, and a lock: the tests delete pods, so they take turns.
pub(crate) fn splai() -> (&'static Splai, MutexGuard<'static, ()>) {
    static SPLAI: OnceLock<Result<Splai, String>> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let splai = SPLAI
        .get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .as_ref()
        .unwrap_or_else(|e| panic!("SPLAI did not start on the node: {e}"));
    (splai, turn)
}

fn install() -> Result<Splai> {
    let started = Instant::now();
    let binaries = binaries()?;
    run(Command::new("bash")
        .arg(repo().join("scripts/node-images.sh"))
        .arg("--splai")
        .arg(&binaries))
    .context("building SPLAI's images")?;
    let node = Node::start()?;
    eprintln!("pods: node ready in {:?}", node.started_in());
    let splai = configure(node, binaries).map_err(|e| e.context("installing deploy/node"))?;
    eprintln!("pods: SPLAI running after {:?}", started.elapsed());
    Ok(splai)
}

/// The folder of `splai-operator`, `splai-gateway`, `splai` and `splai-worker`:
/// `SPLAI_POD_BINARIES`, else this test's own profile, built now if `cargo test` has not built
/// them already (`cargo test --workspace` has: the operator's, gateway's and agent's own tests
/// run them). The images wrap these binaries, so nothing is compiled twice for the pods.
fn binaries() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SPLAI_POD_BINARIES") {
        return Ok(PathBuf::from(dir));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).current_dir(repo()).args([
        "build",
        "--locked",
        "-p",
        "splai-operator",
        "-p",
        "splai-gateway",
        "-p",
        "splai-worker",
    ]))
    .context("cargo build of SPLAI's binaries")?;
    // tests/pods is a test of this profile: target/<profile>/deps/pods-<hash> is its executable.
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable's folder")?;
    Ok(profile.to_path_buf())
}

fn configure(node: Node, binaries: PathBuf) -> Result<Splai> {
    let kubectl = |args: &[&str]| kubectl_of(&node, args);
    // The folder outlives clusters: no file of an earlier run may pass for this one's.
    let old = Path::new(ARTIFACTS).join("jobs").join(TENANT);
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    let node_name = kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])?;
    kubectl(&["apply", "-k", &repo().join("deploy/node").to_string_lossy()])?;

    // The walk-through's certificate (deploy/README.md, step 4), for the Service's names and its
    // cluster address, which this machine reaches through kube-proxy.
    let dir = std::env::temp_dir().join(format!("splai-pods-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let gateway_ip = kubectl(&[
        "-n",
        SYSTEM,
        "get",
        "service",
        "splai-gateway",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let (crt, key) = (dir.join("gateway.crt"), dir.join("gateway.key"));
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=splai-gateway",
        "-addext",
        &format!(
            "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:splai-gateway.splai-system.svc,IP:{gateway_ip}"
        ),
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        &key.to_string_lossy(),
        "-out",
        &crt.to_string_lossy(),
    ]))?;
    kubectl(&[
        "-n",
        SYSTEM,
        "create",
        "secret",
        "tls",
        "splai-gateway-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ])?;
    // The tokens last: the gateway pods wait for them, so they start with the certificate.
    let token = random_hex();
    let tokens =
        format!("tenants:\n- {{token: \"{token}\", tenant: {TENANT}, namespace: {TENANT}}}\n");
    let tokens_file = dir.join("tokens.yaml");
    std::fs::write(&tokens_file, tokens)?;
    kubectl(&[
        "-n",
        SYSTEM,
        "create",
        "secret",
        "generic",
        "splai-gateway-tokens",
        &format!("--from-file=tokens.yaml={}", tokens_file.display()),
    ])?;
    // As in the walk-through: a gateway pod reads its certificate at start, and may have started
    // (with the optional Secret's volume still empty) before the Secret existed.
    kubectl(&[
        "-n",
        SYSTEM,
        "rollout",
        "restart",
        "deployment/splai-gateway",
    ])?;
    for what in [
        "deployment/splai-operator",
        "daemonset/splai-worker",
        "deployment/splai-gateway",
    ] {
        kubectl(&["-n", SYSTEM, "rollout", "status", what, "--timeout=180s"])
            .with_context(|| format!("{what} never rolled out:\n{}", node.log_tail()))?;
    }
    // Until kube-proxy has dropped the old gateway pods' addresses, a connection may reach one.
    wait_for(
        "the gateway's certificate over its Service",
        Duration::from_secs(120),
        || Ok(gateway_health(&gateway_ip, &crt).is_ok().then_some(())),
    )?;
    Ok(Splai {
        node,
        node_name,
        token,
        gateway_ca: crt,
        binaries,
    })
}

impl Splai {
    /// `kubectl ARGS` against the cluster; its stdout, or an error with its stderr.
    pub(crate) fn kubectl(&self, args: &[&str]) -> Result<String> {
        kubectl_of(&self.node, args)
    }

    /// `kubectl get ... -o json`, parsed.
    pub(crate) fn get(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&all)?)?)
    }

    /// The gateway Service's cluster address (kube-proxy takes this machine's traffic there).
    pub(crate) fn gateway_url(&self) -> Result<String> {
        let ip = self.kubectl(&[
            "-n",
            SYSTEM,
            "get",
            "service",
            "splai-gateway",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        Ok(format!("https://{ip}"))
    }

    /// The `splai` CLI aimed at the gateway through its Service, with the tenant's token and the
    /// certificate, which names the Service's address.
    pub(crate) fn splai_cli(&self) -> Result<Command> {
        let mut cmd = Command::new(self.binaries.join("splai"));
        cmd.env("SPLAI_SERVER", self.gateway_url()?)
            .env("SPLAI_TOKEN", &self.token)
            .env("SPLAI_CA_FILE", &self.gateway_ca);
        Ok(cmd)
    }

    /// The name of the pod holding the operator's Lease.
    pub(crate) fn leader(&self) -> Result<String> {
        self.kubectl(&[
            "-n",
            SYSTEM,
            "get",
            "lease",
            "splai-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    }

    /// Names of the pods with `app.kubernetes.io/name=<app>` that are Running and not deleting.
    pub(crate) fn running_pods(&self, app: &str) -> Result<Vec<String>> {
        let pods = self.get(&[
            "-n",
            SYSTEM,
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/name={app}"),
        ])?;
        Ok(pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// A SPLAIJob of the tenant, as JSON.
    pub(crate) fn job(&self, name: &str) -> Result<Value> {
        self.get(&["-n", TENANT, "get", "splaijob", name])
    }

    /// Applies a SPLAIJob as the cluster admin (the webhook judges it), deleting an older one of
    /// the same name first.
    pub(crate) fn submit(&self, name: &str, yaml: &str) -> Result<()> {
        self.kubectl(&[
            "-n",
            TENANT,
            "delete",
            "splaijob",
            name,
            "--ignore-not-found",
            "--wait=true",
        ])?;
        kubectl_stdin(&self.node, &["apply", "-f", "-"], yaml)?;
        Ok(())
    }

    /// Waits until the job's phase is terminal; returns the job.
    pub(crate) fn wait_finished(&self, name: &str, limit: Duration) -> Result<Value> {
        let job = wait_for(&format!("job {name} to finish"), limit, || {
            let job = self.job(name)?;
            let phase = job["status"]["phase"].as_str().unwrap_or_default();
            Ok(matches!(phase, "Completed" | "Failed" | "Canceled")
                && !job["status"]["recordsUri"].is_null())
            .map(|done| done.then_some(job))
        })?;
        Ok(job)
    }

    /// The job's execution records, from the file its status names in the artifact volume.
    pub(crate) fn records(&self, job: &Value) -> Result<Vec<ExecutionRecord>> {
        let uri = job["status"]["recordsUri"]
            .as_str()
            .context("the job has no recordsUri")?;
        let path = uri
            .strip_prefix("file://")
            .context("records not in a file")?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading records {path}"))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("a record: {l}")))
            .collect()
    }
}

/// `GET /healthz` of the gateway at `ip`, checked against `ca`; the body.
pub(crate) fn gateway_health(ip: &str, ca: &Path) -> Result<String> {
    run(Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(ca)
        .arg(format!("https://{ip}/healthz")))
}

fn kubectl_of(node: &Node, args: &[&str]) -> Result<String> {
    let out = node
        .kubectl()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `kubectl ARGS` with `input` on stdin; Err carries stderr.
pub(crate) fn kubectl_stdin(node: &Node, args: &[&str], input: &str) -> Result<String> {
    use std::io::Write;
    let mut child = node
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command to the end; Err carries its output.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every half second until it returns `Some`, for at most `limit`.
pub(crate) fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if started.elapsed() > limit {
            bail!("waited {limit:?} for {what}; last error: {last}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn random_hex() -> String {
    let bytes = std::fs::read("/proc/sys/kernel/random/uuid").unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect()
}
