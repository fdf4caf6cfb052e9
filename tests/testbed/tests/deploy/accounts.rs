//! SPLAI's own code run under its service accounts (by impersonation): the worker agent's
//! registration against the own-node policy, and the operator's certificate setup and leader.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::support::{OPERATOR, SYSTEM, TENANT, WORKER, installed};

const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// A client of the shared control plane that acts as `who`, with the user extras a bound
/// service-account token would carry.
async fn client_as(who: &str, extra: &[(&str, &str)]) -> Client {
    let plane = splai_testbed::shared().unwrap();
    let mut kubeconfig = Kubeconfig::read_from(plane.kubeconfig()).unwrap();
    for named in &mut kubeconfig.auth_infos {
        let user = named.auth_info.as_mut().unwrap();
        user.impersonate = Some(who.to_owned());
        if !extra.is_empty() {
            user.impersonate_user_extra = Some(
                extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                    .collect(),
            );
        }
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn workers(client: Client) -> Api<DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("splai.io", "v1alpha1", "SPLAIWorker");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "splaiworkers");
    Api::namespaced_with(client, SYSTEM, &resource)
}

/// What `splai-worker --register-in` sends: a server-side apply of its SPLAIWorker's spec.
async fn register(client: Client, name: &str) -> Result<DynamicObject, kube::Error> {
    let body = json!({
        "apiVersion": "splai.io/v1alpha1",
        "kind": "SPLAIWorker",
        "metadata": {"name": name, "labels": {"splai.io/node": name}},
        "spec": {"capabilities": {"cpuMillis": 2000, "memoryMib": 2048}},
    });
    workers(client)
        .patch(
            name,
            &PatchParams::apply("splai-worker").force(),
            &Patch::Apply(&body),
        )
        .await
}

fn refusal(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_worker_agent_applies_its_own_nodes_splaiworker_and_no_other_object() {
    installed();
    let agent = client_as(WORKER, &[(NODE_NAME_EXTRA, "node-a")]).await;
    register(agent.clone(), "node-a").await.unwrap();
    // A restarted agent applies again.
    register(agent.clone(), "node-a").await.unwrap();

    let (code, message) = refusal(register(agent.clone(), "node-b").await);
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("only write the SPLAIWorker of its own node"),
        "{message}"
    );

    let status = json!({"status": {"health": "Healthy"}});
    let (code, message) = refusal(
        workers(agent.clone())
            .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&status))
            .await,
    );
    assert_eq!(code, 403, "{message}");

    let cancel = json!({"spec": {"cancel": true}});
    let gvk = kube::api::GroupVersionKind::gvk("splai.io", "v1alpha1", "SPLAIJob");
    let jobs: Api<DynamicObject> = Api::namespaced_with(
        agent.clone(),
        TENANT,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "splaijobs"),
    );
    let (code, _) = refusal(
        jobs.patch("any-job", &PatchParams::default(), &Patch::Merge(&cancel))
            .await,
    );
    assert_eq!(code, 403);

    // A token not bound to a pod on a node names no node, and may write no SPLAIWorker.
    let unbound = client_as(WORKER, &[]).await;
    let (code, message) = refusal(register(unbound, "node-c").await);
    assert_eq!(code, 403, "{message}");

    // The policy binds only the agents' account: the operator still creates workers.
    let admin = splai_testbed::shared().unwrap().client().await.unwrap();
    assert!(workers(admin).get_opt("node-b").await.unwrap().is_none());
}

#[tokio::test]
async fn the_operator_makes_its_webhook_certificate_under_its_own_account() {
    installed();
    let operator = client_as(OPERATOR, &[]).await;
    let self_signed = splai_operator::webhook_cert::SelfSigned {
        namespace: SYSTEM.into(),
        secret: "splai-webhook-tls".into(),
        service: "splai-webhook".into(),
        configuration: "splai-webhook".into(),
        agent_service: Some("splai-operator".into()),
    };
    let issued = self_signed.ensure(&operator).await.unwrap();
    // Another replica, or a restart, serves the same certificate and changes nothing.
    assert_eq!(self_signed.ensure(&operator).await.unwrap(), issued);
    assert!(!self_signed.inject(&operator, &issued.ca_pem).await.unwrap());

    let admin = splai_testbed::shared().unwrap().client().await.unwrap();
    let secret = Api::<Secret>::namespaced(admin.clone(), SYSTEM)
        .get("splai-webhook-tls")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let hooks = Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .get("splai-webhook")
        .await
        .unwrap();
    let hooks = hooks.webhooks.unwrap();
    assert_eq!(hooks.len(), 3);
    for hook in hooks {
        let bundle = hook.client_config.ca_bundle.expect("a caBundle").0;
        assert_eq!(bundle, issued.ca_pem.as_bytes(), "{}", hook.name);
    }

    // The manifests applied again reset every caBundle to the file's (empty): the operator,
    // under its own account, writes the CA back.
    let keeper = tokio::spawn(
        self_signed
            .clone()
            .keep_injected(operator.clone(), issued.ca_pem.clone()),
    );
    let configurations = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
    let mut cleared = configurations.get("splai-webhook").await.unwrap();
    for hook in cleared.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = None;
    }
    configurations
        .replace("splai-webhook", &Default::default(), &cleared)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hooks = configurations.get("splai-webhook").await.unwrap().webhooks;
        let restored = hooks.iter().flatten().all(|h| {
            h.client_config.ca_bundle.as_ref().map(|b| &b.0[..]) == Some(issued.ca_pem.as_bytes())
        });
        if restored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the caBundle was never written back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    keeper.abort();

    // The API server dials splai-webhook.splai-system.svc, and agents splai-operator.splai-system.svc
    // (the agent endpoint has the same certificate); each checks the name against the CA.
    let tls =
        splai_operator::webhook::tls_config(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(tls.clone())
                .accept(tcp)
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    for ca in
        tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(issued.ca_pem.as_bytes())
    {
        roots.add(ca.unwrap()).unwrap();
    }
    let client_config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    for host in [
        "splai-webhook.splai-system.svc",
        "splai-operator.splai-system.svc",
    ] {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        connector
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("the certificate does not verify for {host}: {e}"));
    }
    server.await.unwrap().unwrap();
}

/// Runs tasks it is never given: the operator only needs an agent to register.
struct Idle;

impl splai_protocol::Executor for Idle {
    async fn run(&self, _: splai_protocol::TaskAssignment) -> splai_protocol::Outcome {
        splai_protocol::Outcome::Failed {
            error: "this agent runs nothing".into(),
            retryable: true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_leads_and_registers_a_worker_under_its_own_account() {
    installed();
    let operator = client_as(OPERATOR, &[]).await;
    let port = splai_testbed::free_port().unwrap();
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-artifacts");
    let mut config = splai_operator::run::OperatorConfig::in_namespace(
        SYSTEM,
        format!("127.0.0.1:{port}"),
        format!("file://{}", artifacts.display()),
    );
    // As deployed: jobs, policies and routes of every namespace.
    config.namespace = None;
    let metrics = Arc::new(splai_operator::metrics::Metrics::default());
    let running = tokio::spawn(splai_operator::run::run(operator, config, metrics.clone()));

    // An agent the operator has never seen: it creates the SPLAIWorker, then writes its status.
    let capabilities = splai_scheduler::api::Capabilities {
        cpu_millis: 1000,
        memory_mib: 1024,
        ..Default::default()
    };
    let agent_config = splai_protocol::AgentConfig {
        heartbeat_interval: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        ..splai_protocol::AgentConfig::new(
            "node-operator-test",
            format!("127.0.0.1:{port}"),
            capabilities,
        )
    };
    let (agent, handle) = splai_protocol::Agent::new(splai_protocol::TokioNet, agent_config, Idle);
    let agent = tokio::spawn(agent.run());

    let admin = splai_testbed::shared().unwrap().client().await.unwrap();
    let started = Instant::now();
    let health = loop {
        if running.is_finished() {
            panic!("the operator stopped: {:?}", running.await);
        }
        let worker = workers(admin.clone())
            .get_opt("node-operator-test")
            .await
            .unwrap();
        let health = worker.and_then(|w| w.data["status"]["health"].as_str().map(str::to_owned));
        if let Some(health) = health {
            break health;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no worker status after 60 s:\n{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health, "Healthy");
    let page = metrics.render();
    assert!(page.contains("splai_leader 1"), "{page}");
    assert!(metrics.writes("worker_create") >= 1, "{page}");
    assert!(metrics.writes("worker_status") >= 1, "{page}");
    assert!(
        !page.contains("splai_reconcile_errors_total{"),
        "a write failed:\n{page}"
    );
    let _ = handle.shutdown();
    let _ = agent.await;
    running.abort();
}
