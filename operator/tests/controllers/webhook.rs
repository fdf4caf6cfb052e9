//! The admission webhook, called by the real kube-apiserver over TLS with a test CA: a table of
//! bad inputs refused with their messages, the matching good ones admitted, and fail-closed when
//! the webhook is down.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::{Client, Resource};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use splai_operator::tls;
use splai_operator::webhook::{Validator, serve};
use splai_operator::{SPLAIJob, SPLAIModelRoute, SPLAIPolicy};
use splai_scheduler::Settings;
use tokio::task::JoinHandle;

use crate::harness::Harness;

/// A test CA.
fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap()
}

/// A new serving certificate for 127.0.0.1 signed by `ca`, written into `dir` as a mounted TLS
/// Secret holds it (and as cert-manager renews it: same CA, new key).
fn issue_into(ca: &CertifiedIssuer<'static, KeyPair>, dir: &Path) {
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = server.signed_by(&key, ca).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(tls::KEY_FILE), key.serialize_pem()).unwrap();
    std::fs::write(dir.join(tls::CERT_FILE), cert.pem()).unwrap();
}

/// Serves the webhook with the certificate in `dir`, read again every 50 ms.
async fn start_webhook(client: &Client, ns: &str, dir: &Path) -> (u16, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings = Settings::default();
    settings.limits.max_tasks_per_job = 50;
    let validator = Validator::start(client.clone(), settings, Some(ns));
    let tls = tls::from_dir(dir, Duration::from_millis(50))
        .unwrap()
        .expect("a certificate");
    let task = tokio::spawn(async move {
        let _ = serve(listener, tls, validator).await;
    });
    (port, task)
}

/// Registers the three webhooks for this test's namespace only (the API server is shared).
async fn register(client: &Client, ns: &str, port: u16, ca: &str) -> String {
    let name = format!("splai-{ns}");
    let hook = |resource: &str, ops: &[&str]| {
        json!({
            "name": format!("{resource}.splai.io"),
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate/{resource}")},
            "rules": [{
                "apiGroups": ["splai.io"], "apiVersions": ["v1alpha1"],
                "resources": [format!("{resource}s").replace("policys", "policies")],
                "operations": ops,
            }],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        })
    };
    let mut config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            hook("splaijob", &["CREATE"]),
            hook("splaipolicy", &["CREATE", "UPDATE"]),
            hook("splaimodelroute", &["CREATE", "UPDATE"]),
        ],
    }))
    .unwrap();
    for w in config.webhooks.iter_mut().flatten() {
        w.client_config.ca_bundle = Some(ByteString(ca.as_bytes().to_vec()));
    }
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    api.create(&PostParams::default(), &config).await.unwrap();
    name
}

fn job(name: &str, tasks: Value, deps: Value) -> Value {
    json!({
        "apiVersion": "splai.io/v1alpha1", "kind": "SPLAIJob",
        "metadata": {"name": name},
        "spec": {"tenant": "acme", "tasks": tasks, "dependencies": deps},
    })
}

fn t(id: &str) -> Value {
    json!({"id": id, "kind": "command", "resources": {"cpuMillis": 500, "memoryMib": 64}})
}

async fn create<K: Resource<DynamicType = ()>>(
    client: &Client,
    ns: &str,
    object: Value,
) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &kube::api::ApiResource::erase::<K>(&()));
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await
}

/// Creates `object` until the webhook refuses it, deleting what it admitted: for a refusal that
/// needs an object created just before, which the webhook learns of from its watch a moment
/// later. Gives the refusal's message.
async fn refused_once_seen<K: Resource<DynamicType = ()>>(
    client: &Client,
    ns: &str,
    object: Value,
) -> String {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &kube::api::ApiResource::erase::<K>(&()));
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match create::<K>(client, ns, object.clone()).await {
            Err(kube::Error::Api(s)) => return s.message,
            Ok(_) => {
                api.delete(&name, &DeleteParams::default()).await.unwrap();
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} was never refused"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn refusal(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_refuses_bad_jobs_policies_and_routes_with_their_reasons_over_tls() {
    let h = Harness::new("webhook").await.unwrap();
    let (client, ns) = (h.client.clone(), h.ns.clone());
    let ca = ca();
    let tls_dir = h.artifacts.join("webhook-tls");
    issue_into(&ca, &tls_dir);
    let (port, server) = start_webhook(&client, &ns, &tls_dir).await;
    let config = register(&client, &ns, port, &ca.pem()).await;

    // The policy the jobs below meet: created first, and itself admitted by the webhook.
    let policy = json!({
        "apiVersion": "splai.io/v1alpha1", "kind": "SPLAIPolicy",
        "metadata": {"name": "acme-rules"},
        "spec": {
            "tenant": "acme",
            "models": {"deny": ["gpt-*"]},
            "classifications": {"allow": ["public", "internal"]},
            "quotas": {"maxCpuMillis": 4000, "maxTasksPerJob": 40, "maxRunningTasks": 20},
        },
    });
    // The API server picks up a new webhook configuration within a moment: retry until the
    // webhook answers (a bad policy is refused).
    let bad_policy = json!({
        "apiVersion": "splai.io/v1alpha1", "kind": "SPLAIPolicy",
        "metadata": {"name": "contradictory"},
        "spec": {"tenant": "acme", "models": {"allow": ["llama-8b"], "deny": ["llama-8b"]}},
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let message = loop {
        match create::<SPLAIPolicy>(&client, &ns, bad_policy.clone()).await {
            Err(kube::Error::Api(s)) => break s.message,
            Ok(_) => {
                let api: Api<SPLAIPolicy> = Api::namespaced(client.clone(), &ns);
                api.delete("contradictory", &DeleteParams::default())
                    .await
                    .unwrap();
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the webhook never answered"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        message.contains("denied the request: InvalidPolicy"),
        "{message}"
    );
    assert!(
        message.contains("spec.models.allow[0] and spec.models.deny[0] are both `llama-8b`"),
        "{message}"
    );
    create::<SPLAIPolicy>(&client, &ns, policy).await.unwrap();
    // The webhook reads policies from its watch: it refuses what the policy denies once it has
    // seen the policy.
    let mut probe = t("probe");
    probe["kind"] = json!("inference");
    probe["model"] = json!("gpt-probe");
    let message =
        refused_once_seen::<SPLAIJob>(&client, &ns, job("probe", json!([probe]), json!([]))).await;
    assert!(message.contains("PolicyDenied"), "{message}");

    let mut gpt = t("ask");
    gpt["kind"] = json!("inference");
    gpt["model"] = json!("gpt-4o");
    let mut secret = t("read");
    secret["classification"] = json!("secret");
    let mut huge = t("huge");
    huge["resources"]["cpuMillis"] = json!(8000);
    let many = |n: usize| Value::Array((0..n).map(|i| t(&format!("t{i}"))).collect());
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "cycle",
            job(
                "cycle",
                json!([t("a"), t("b")]),
                json!([{"task": "a", "dependsOn": ["b"]}, {"task": "b", "dependsOn": ["a"]}]),
            ),
            &["ValidationFailed", "cycle", "a -> b -> a"],
        ),
        (
            "unknown dependency",
            job(
                "unknown-dep",
                json!([t("a")]),
                json!([{"task": "a", "dependsOn": ["ghost"]}]),
            ),
            &["ValidationFailed", "ghost"],
        ),
        (
            "duplicate ids",
            job("dup", json!([t("a"), t("a")]), json!([])),
            &["ValidationFailed", "task ids must be unique", "tasks[1]"],
        ),
        (
            "denied model",
            job("denied-model", json!([gpt]), json!([])),
            &[
                "PolicyDenied",
                "task `ask`",
                "gpt-4o",
                "acme-rules",
                "models.deny[0]",
            ],
        ),
        (
            "denied classification",
            job("denied-class", json!([secret]), json!([])),
            &[
                "PolicyDenied",
                "task `read`",
                "secret",
                "not in the allow list",
            ],
        ),
        (
            "quota exceeded",
            job("too-big", json!([huge]), json!([])),
            &[
                "QuotaExceeded",
                "task `huge` needs 8000 cpu millis",
                "maxCpuMillis of 4000",
            ],
        ),
        (
            "over the policy's tasks per job",
            job("too-many", many(45), json!([])),
            &["PolicyDenied", "45 tasks", "maxTasksPerJob of 40"],
        ),
        (
            "over the size limit",
            job("too-large", many(51), json!([])),
            &["ValidationFailed", "51"],
        ),
    ];
    for (what, object, expected) in cases {
        let message = refusal(create::<SPLAIJob>(&client, &ns, object).await);
        for part in expected {
            assert!(
                message.contains(part),
                "{what}: `{part}` missing from: {message}"
            );
        }
    }
    // Nothing refused was stored.
    let jobs: Api<SPLAIJob> = Api::namespaced(client.clone(), &ns);
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The matching good inputs.
    let mut llama = t("ask");
    llama["kind"] = json!("inference");
    llama["model"] = json!("llama-8b");
    llama["classification"] = json!("public");
    create::<SPLAIJob>(
        &client,
        &ns,
        job(
            "fine",
            json!([t("a"), t("b"), llama]),
            json!([{"task": "b", "dependsOn": ["a"]}]),
        ),
    )
    .await
    .unwrap();
    // Admitted with a warning, which kubectl prints: it will run 20 tasks at a time.
    let file = h.artifacts.join("wide.json");
    std::fs::write(&file, job("wide", many(40), json!([])).to_string()).unwrap();
    let bin = std::env::var("SPLAI_K8S_BIN").expect("SPLAI_K8S_BIN (run scripts/test.sh)");
    let out = std::process::Command::new(format!("{bin}/kubectl"))
        .arg("--kubeconfig")
        .arg(splai_testbed::shared().unwrap().kubeconfig())
        .args(["create", "-n", &ns, "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: up to 40 tasks can run at once, over policy `acme-rules` quota maxRunningTasks of 20"),
        "{stderr}"
    );

    // The certificate is renewed in place while the webhook serves: every admission below goes
    // on working, whichever certificate the API server's connection was made with.
    issue_into(&ca, &tls_dir);

    // Routes: a malformed endpoint and a taken priority are refused by the webhook, an unknown
    // backend by the CRD's schema before the webhook is asked.
    let route = |name: &str, priority: i32, backend: &str, endpoint: &str| {
        json!({
            "apiVersion": "splai.io/v1alpha1", "kind": "SPLAIModelRoute",
            "metadata": {"name": name},
            "spec": {"priority": priority, "backend": backend, "endpoint": endpoint},
        })
    };
    create::<SPLAIModelRoute>(
        &client,
        &ns,
        route("local", 1, "ollama", "http://ollama:11434"),
    )
    .await
    .unwrap();
    let message = refusal(
        create::<SPLAIModelRoute>(
            &client,
            &ns,
            route("bad-url", 2, "vllm", "http://vllm:99999"),
        )
        .await,
    );
    assert!(
        message.contains("InvalidModelRoute: spec.endpoint `http://vllm:99999`"),
        "{message}"
    );
    let message = refused_once_seen::<SPLAIModelRoute>(
        &client,
        &ns,
        route("clash", 1, "vllm", "http://vllm:8000"),
    )
    .await;
    assert!(
        message.contains("spec.priority 1 is already taken by route `local`"),
        "{message}"
    );
    let message = refusal(
        create::<SPLAIModelRoute>(&client, &ns, route("odd", 3, "tensorrt", "http://t:1")).await,
    );
    assert!(message.contains("tensorrt"), "{message}");
    assert!(message.contains("supported values"), "{message}");

    // Down: fail closed, with the API server's clear error, and nothing stored.
    server.abort();
    let _ = server.await;
    let message = refusal(
        create::<SPLAIJob>(&client, &ns, job("while-down", json!([t("a")]), json!([]))).await,
    );
    assert!(
        message.contains("failed calling webhook \"splaijob.splai.io\""),
        "{message}"
    );
    assert!(jobs.get_opt("while-down").await.unwrap().is_none());

    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    api.delete(&config, &DeleteParams::default()).await.unwrap();
    h.shutdown().await;
}
