//! Rendering the manifests with `kubectl kustomize`, applying them once to the shared control
//! plane, and the names every test uses.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

pub(crate) const SYSTEM: &str = "splai-system";
pub(crate) const TENANT: &str = "team-a";
pub(crate) const OPERATOR: &str = "system:serviceaccount:splai-system:splai-operator";
pub(crate) const GATEWAY: &str = "system:serviceaccount:splai-system:splai-gateway";
pub(crate) const WORKER: &str = "system:serviceaccount:splai-system:splai-worker";

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

pub(crate) fn kubectl_path() -> PathBuf {
    let kubectl = splai_testbed::bin_dir()
        .expect("the kubernetes test binaries")
        .join("kubectl");
    assert!(
        kubectl.is_file(),
        "{} is missing; run scripts/k8s-testbin.sh",
        kubectl.display()
    );
    kubectl
}

pub(crate) struct Ran {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs kubectl against the shared control plane (or none, for `kustomize`).
pub(crate) fn kubectl(args: &[&str], stdin: Option<&str>) -> Ran {
    let mut cmd = Command::new(kubectl_path());
    if args.first() != Some(&"kustomize") {
        let plane = splai_testbed::shared().expect("the shared control plane");
        cmd.arg("--kubeconfig").arg(plane.kubeconfig());
    }
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing to kubectl");
    }
    let out = child.wait_with_output().expect("waiting for kubectl");
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One object of a rendering: its YAML as kustomize wrote it, and parsed.
#[derive(Clone)]
pub(crate) struct Doc {
    pub(crate) yaml: String,
    pub(crate) value: Value,
}

/// Splits kustomize's output at its `---` lines. The YAML text is what gets applied: kubectl
/// validates a JSON `List` on the client, where it refuses the `null` that the CRDs' nullable
/// enums list, while the API server accepts it.
pub(crate) fn documents(yaml: &str) -> Vec<Doc> {
    let mut chunks = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            chunks.push(String::new());
        } else {
            let last = chunks.last_mut().expect("one chunk");
            last.push_str(line);
            last.push('\n');
        }
    }
    chunks
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .map(|yaml| {
            let value = Value::deserialize(serde_yaml_ng::Deserializer::from_str(&yaml))
                .expect("a YAML document");
            Doc { yaml, value }
        })
        .collect()
}

pub(crate) fn joined(docs: &[Doc]) -> String {
    docs.iter()
        .map(|d| d.yaml.as_str())
        .collect::<Vec<_>>()
        .join("---\n")
}

pub(crate) fn values(docs: Vec<Doc>) -> Vec<Value> {
    docs.into_iter().map(|d| d.value).collect()
}

/// `kubectl kustomize` of a folder given relative to the repository root.
pub(crate) fn render_docs(dir: &str) -> Vec<Doc> {
    let path = repo().join(dir);
    let ran = kubectl(&["kustomize", &path.to_string_lossy()], None);
    assert!(ran.ok, "kubectl kustomize {dir} failed:\n{}", ran.stderr);
    documents(&ran.stdout)
}

pub(crate) fn render(dir: &str) -> Vec<Value> {
    values(render_docs(dir))
}

/// The base with the cert-manager component, as a user's overlay would add it. kustomize takes
/// only relative paths, so the overlay is written under the target folder and points back.
pub(crate) fn render_with_cert_manager() -> Vec<Doc> {
    let overlay = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-with-cert-manager");
    std::fs::create_dir_all(&overlay).unwrap();
    let overlay = overlay.canonicalize().unwrap();
    let back = relative(&overlay, &repo());
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{back}/deploy/kubernetes]\ncomponents: [{back}/deploy/kubernetes/cert-manager]\n"
        ),
    )
    .unwrap();
    let ran = kubectl(&["kustomize", &overlay.to_string_lossy()], None);
    assert!(
        ran.ok,
        "kubectl kustomize with cert-manager:\n{}",
        ran.stderr
    );
    documents(&ran.stdout)
}

/// The path from folder `from` to `to`, as `../..` and names.
pub(crate) fn relative(from: &Path, to: &Path) -> String {
    let (a, b): (Vec<Component>, Vec<Component>) =
        (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".into(); a.len() - common];
    parts.extend(
        b[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

pub(crate) const RENDERINGS: [&str; 4] = [
    "deploy/kubernetes",
    "deploy/minikube",
    "deploy/kind",
    "deploy/node",
];

pub(crate) fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub(crate) fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// What applying one rendering printed.
pub(crate) struct Applied {
    pub(crate) rendering: String,
    pub(crate) documents: usize,
    pub(crate) dry_run_lines: usize,
    pub(crate) applied_lines: usize,
    pub(crate) warnings: Vec<String>,
}

/// Applies each of [`RENDERINGS`] in turn to the shared control plane, once per test binary:
/// namespaces and CRDs first (a dry run of a namespaced object needs its namespace to exist),
/// each group dry-run on the server, then applied for real.
pub(crate) fn installed() -> &'static [Applied] {
    static INSTALLED: OnceLock<Result<Vec<Applied>, String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| RENDERINGS.iter().map(|dir| apply_rendering(dir)).collect())
        .as_deref()
        .unwrap_or_else(|e| panic!("the manifests did not apply: {e}"))
}

pub(crate) fn apply_rendering(dir: &str) -> Result<Applied, String> {
    let docs = render_docs(dir);
    let (first, rest): (Vec<Doc>, Vec<Doc>) = docs
        .iter()
        .cloned()
        .partition(|d| matches!(kind_of(&d.value), "Namespace" | "CustomResourceDefinition"));
    let mut applied = Applied {
        rendering: dir.to_owned(),
        documents: docs.len(),
        dry_run_lines: 0,
        applied_lines: 0,
        warnings: Vec::new(),
    };
    for group in [first, rest] {
        let list = joined(&group);
        for dry_run in [true, false] {
            let mut args = vec!["apply", "-f", "-"];
            if dry_run {
                args.push("--dry-run=server");
            }
            let ran = kubectl(&args, Some(&list));
            if !ran.ok {
                return Err(format!(
                    "{dir}: kubectl {} failed:\n{}",
                    args.join(" "),
                    ran.stderr
                ));
            }
            let lines = ran.stdout.lines().filter(|l| !l.trim().is_empty()).count();
            if dry_run {
                applied.dry_run_lines += lines;
            } else {
                applied.applied_lines += lines;
            }
            applied.warnings.extend(
                ran.stderr
                    .lines()
                    .filter(|l| l.contains("Warning"))
                    .map(|l| format!("{dir}: {l}")),
            );
        }
    }
    Ok(applied)
}
