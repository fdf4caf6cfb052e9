//! A real etcd and kube-apiserver on loopback for SPLAI's integration tests, as controller-runtime's
//! envtest provides for Go operators. A mock API server is never a substitute: schema validation,
//! CEL, the status subresource, server-side apply and watches only behave like this on the real one.
//!
//! Tests call [`namespace`], which starts one control plane per test binary on first use and gives
//! each test its own namespace. [`ControlPlane::start`] gives a private one.
//!
//! The processes run under a small bash supervisor that reads the harness's end of a pipe. The
//! supervisor kills kube-apiserver, then etcd, and removes the work folder when the pipe closes:
//! on drop, and also at exit for the shared instance. Statics are never dropped, and a pipe that
//! closes is the one signal that still arrives after a panic, `process::exit` or SIGKILL.
//!
//! [`Node`] is a whole one-node cluster (`scripts/node-up.sh`) where pods really run.
//!
//! This crate depends only on the Kubernetes client, never on SPLAI's own crates.

#![forbid(unsafe_code)]

mod binaries;
mod certs;
pub mod measure;
mod node;
pub mod process;
mod relay;

pub use binaries::installed;
pub use node::Node;
pub use relay::Relay;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Set (to anything) for kube-apiserver to write an audit log, one JSON line per request with
/// its verb, resource and user agent: what the benchmarks count API writes with.
pub const AUDIT_VAR: &str = "SPLAI_TESTBED_AUDIT";
const AUDIT_LOG: &str = "audit.log";
/// Every request once, when its answer is complete, without bodies.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
";

/// How long etcd and kube-apiserver get to become ready; they take 3–4 s on two cores.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

const SUPERVISOR: &str = r#"
work=$1; shift
etcd=(); while [ "$1" != "--" ]; do etcd+=("$1"); shift; done; shift
"${etcd[@]}" >"$work/etcd.log" 2>&1 </dev/null & e=$!
"$@" >"$work/apiserver.log" 2>&1 </dev/null & a=$!
echo "$e $a"
# Each line from the harness is a command; the pipe's end stops everything.
while read -r cmd; do
  case "$cmd" in
    restart-apiserver)
      kill -9 "$a" 2>/dev/null; wait "$a" 2>/dev/null
      "$@" >>"$work/apiserver.log" 2>&1 </dev/null & a=$!
      echo "$e $a";;
  esac
done
# kube-apiserver first: without etcd its shutdown can take minutes.
kill -9 "$a" 2>/dev/null; wait "$a" 2>/dev/null
kill -9 "$e" 2>/dev/null; wait "$e" 2>/dev/null
rm -rf "$work"
"#;

/// The folder holding `etcd`, `kube-apiserver` and `kubectl`: `SPLAI_K8S_BIN`, else the cache of
/// `scripts/k8s-testbin.sh`, which builds them the first time.
pub fn bin_dir() -> Result<PathBuf> {
    binaries::bin_dir()
}

/// A running etcd and kube-apiserver. Dropping it stops both and removes their files.
pub struct ControlPlane {
    supervisor: Child,
    stdin: Option<ChildStdin>,
    /// Where the supervisor prints the process ids, at start and after each restart.
    stdout: BufReader<ChildStdout>,
    kubeconfig: PathBuf,
    server: String,
    work: PathBuf,
    pids: Vec<u32>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on free loopback ports and waits until `/readyz` says ok.
    pub fn start() -> Result<ControlPlane> {
        // A port is found free, then bound by etcd or kube-apiserver a moment later, and another
        // process (a test starting its own plane) can take it in between: such a clash is
        // retried on new ports.
        let mut attempt = 1;
        loop {
            match ControlPlane::start_on_free_ports() {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn start_on_free_ports() -> Result<ControlPlane> {
        let bin = binaries::bin_dir()?;
        let work = work_dir()?;
        let certs = certs::write(&work)?;
        let (etcd_client, etcd_peer, secure) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = [
            path_arg(&bin.join("etcd")),
            "--name=testbed".into(),
            format!("--data-dir={}", work.join("etcd").display()),
            "--unsafe-no-fsync".into(),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testbed={peer_url}"),
            "--log-level=error".into(),
        ];
        let mut apiserver = vec![
            path_arg(&bin.join("kube-apiserver")),
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The default reconciler needs a routable address; loopback has none.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={secure}"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", certs.sa_public.display()),
            format!(
                "--service-account-signing-key-file={}",
                certs.sa_private.display()
            ),
            "--authorization-mode=RBAC".into(),
            format!("--client-ca-file={}", certs.client_ca.display()),
            format!("--tls-cert-file={}", certs.serving_cert.display()),
            format!("--tls-private-key-file={}", certs.serving_key.display()),
            "--disable-admission-plugins=ServiceAccount".into(),
        ];
        if std::env::var_os(AUDIT_VAR).is_some() {
            let policy = work.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY)?;
            apiserver.push(format!("--audit-policy-file={}", policy.display()));
            apiserver.push(format!(
                "--audit-log-path={}",
                work.join(AUDIT_LOG).display()
            ));
            apiserver.push("--audit-log-format=json".into());
        }
        let mut supervisor = Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("splai-testbed")
            .arg(&work)
            .args(&etcd)
            .arg("--")
            .args(&apiserver)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bash, which supervises etcd and kube-apiserver")?;
        let stdin = supervisor.stdin.take();
        let stdout = supervisor.stdout.take().context("supervisor stdout")?;
        let server = format!("https://127.0.0.1:{secure}");
        let kubeconfig = work.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, &certs))?;
        let mut stdout = BufReader::new(stdout);
        let pids = read_pids(&mut stdout)?;
        let plane = ControlPlane {
            supervisor,
            stdin,
            stdout,
            kubeconfig,
            server,
            work: work.clone(),
            pids,
        };
        if let Err(e) = plane.wait_ready() {
            let logs = ["etcd.log", "apiserver.log"]
                .map(|log| tail(&work.join(log)))
                .join("\n");
            return Err(e.context(logs));
        }
        Ok(plane)
    }

    /// Kills kube-apiserver (SIGKILL) and starts it again on the same port and etcd, then waits
    /// until it is ready. Its watch cache starts empty, so a watch that was open before cannot
    /// be resumed: its client has to list again, as after a real control-plane restart.
    pub fn restart_apiserver(&mut self) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the supervisor's pipe is closed")?;
        writeln!(stdin, "restart-apiserver")?;
        stdin.flush()?;
        self.pids = read_pids(&mut self.stdout)?;
        self.wait_ready()
            .map_err(|e| e.context(tail(&self.work.join("apiserver.log"))))
    }

    /// A new admin client that reaches the API server at `server` (such as a [`Relay`]'s
    /// address) instead of its own port.
    pub async fn client_at(&self, server: &str) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.cluster_url = server
            .parse()
            .with_context(|| format!("{server} as a URL"))?;
        Ok(Client::try_from(config)?)
    }

    /// The kubeconfig of the `system:masters` admin, for `kubectl --kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A new admin client. Make one per tokio runtime: a client's connections live on the runtime
    /// that made it, and each `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Runs kubectl (the one beside kube-apiserver) as the admin; its stdout, or an error with
    /// its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(binaries::bin_dir()?.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies SPLAI's job-finalizer admission policy (`deploy/kubernetes/job-finalizer`) and
    /// waits until the API server enforces it, which it does a moment after the policy is stored:
    /// until a server-side dry run of a job in `ns` comes back with the finalizer. The SPLAIJob
    /// CRD must be installed.
    pub async fn install_job_finalizer_policy(&self, client: &Client, ns: &str) -> Result<()> {
        let policy = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/job-finalizer/policy.yaml"
        );
        self.kubectl(&["apply", "-f", policy])?;
        let resource = kube::discovery::ApiResource {
            group: "splai.io".into(),
            version: "v1alpha1".into(),
            api_version: "splai.io/v1alpha1".into(),
            kind: "SPLAIJob".into(),
            plural: "splaijobs".into(),
        };
        let jobs: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &resource);
        let probe: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "splai.io/v1alpha1",
            "kind": "SPLAIJob",
            "metadata": {"name": "finalizer-probe", "namespace": ns},
            "spec": {"tenant": "probe", "tasks": [{
                "id": "a", "kind": "command", "command": ["true"],
                "resources": {"cpuMillis": 100, "memoryMib": 64, "gpus": 0},
            }]},
        }))?;
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let created = jobs.create(&dry_run, &probe).await?;
            if created.metadata.finalizers.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the job-finalizer policy was applied but not enforced within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The temporary folder holding certificates, data and logs; removed on drop.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// kube-apiserver's audit log, when [`AUDIT_VAR`] was set at start.
    pub fn audit_log(&self) -> Option<PathBuf> {
        let path = self.work.join(AUDIT_LOG);
        std::env::var_os(AUDIT_VAR).is_some().then_some(path)
    }

    /// The process ids of etcd and kube-apiserver.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Whether etcd and kube-apiserver are both still running.
    pub fn is_running(&self) -> bool {
        self.pids.iter().all(|&pid| alive(pid))
    }

    fn wait_ready(&self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = self.client().await?;
            let started = Instant::now();
            loop {
                if let Some(dead) = self.pids.iter().find(|&&pid| !alive(pid)) {
                    bail!("process {dead} exited during startup");
                }
                let readyz = http_get("/readyz");
                if let Ok(body) = client.request_text(readyz).await
                    && body.trim() == "ok"
                {
                    return Ok(());
                }
                if started.elapsed() > STARTUP_LIMIT {
                    bail!("kube-apiserver not ready after {STARTUP_LIMIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Closing the pipe is the supervisor's signal to stop both processes.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.supervisor.wait();
    }
}

/// The control plane this test binary shares, started on first use.
pub fn shared() -> Result<&'static ControlPlane> {
    static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            // Startup blocks on its own runtime, which must not nest inside a test's.
            std::thread::spawn(ControlPlane::start)
                .join()
                .map_err(|_| "control plane startup panicked".to_owned())?
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("the shared control plane did not start: {e}"))
}

/// A client of the shared control plane and a fresh namespace named after `prefix`.
pub async fn namespace(prefix: &str) -> Result<(Client, String)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let plane = shared()?;
    let client = plane.client().await?;
    let mut name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    name = format!(
        "{}-{}",
        name.trim_matches('-'),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    create_namespace(&client, &name).await?;
    Ok((client, name))
}

/// Creates the namespace `name` with `client`.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

fn read_pids(stdout: &mut BufReader<ChildStdout>) -> Result<Vec<u32>> {
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    line.split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("supervisor printed {line:?} instead of two pids"))
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request")
}

fn kubeconfig_yaml(server: &str, certs: &certs::CertFiles) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: testbed
  context:
    cluster: testbed
    user: admin
current-context: testbed
",
        ca = certs.serving_ca.display(),
        cert = certs.admin_cert.display(),
        key = certs.admin_key.display(),
    )
}

fn work_dir() -> Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "splai-testbed-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A loopback port nothing listens on right now, for a server a test is about to start. (Another
/// process could take it in between; on a test machine that does not happen in practice.)
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `127.0.0.1:<free port>`, as the operator's agent endpoint and similar flags take it.
pub fn free_endpoint() -> String {
    format!("127.0.0.1:{}", free_port().expect("a free loopback port"))
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// Whether `pid` is running: present in /proc and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(30);
    format!("---- {} ----\n{}", log.display(), lines[start..].join("\n"))
}
