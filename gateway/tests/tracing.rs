//! OTLP export across processes: the real `splai-gateway`, `splai-operator` and `splai-worker`
//! binaries, each told only `OTEL_EXPORTER_OTLP_ENDPOINT`, send their spans to a local OTLP/HTTP
//! receiver, and one job's spans (the gateway's request, the operator's job and attempt, the
//! agent's execution) all carry the trace ID that the job's `splai.io/trace-id` annotation names.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use splai_gateway::api::JobView;

/// Spans received: (service.name, span name, trace ID in hex).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

async fn receive(State(got): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    let mut got = got.lock().unwrap();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
            got.push((service.clone(), span.name, trace));
        }
    }
    ""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_jobs_spans_from_gateway_operator_and_agent_share_its_trace_id() {
    let (client, ns) = splai_testbed::namespace("otlp").await.unwrap();
    splai_operator::crd::install(&client).await.unwrap();
    let dir = std::env::temp_dir().join(format!("splai-otlp-{ns}"));
    std::fs::create_dir_all(dir.join("tls")).unwrap();

    let got: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("tls/tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls/tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let token = "token-of-the-tracing-tenant-0123";
    std::fs::write(
        dir.join("tokens.yaml"),
        format!("tenants:\n- {{token: {token}, tenant: t, namespace: {ns}}}\n"),
    )
    .unwrap();

    let kubeconfig = splai_testbed::shared().unwrap().kubeconfig().to_owned();
    let agent_endpoint = splai_testbed::free_endpoint();
    let gateway_addr = splai_testbed::free_endpoint();
    let spawn = |bin: &std::path::Path, args: &[String]| {
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
            // Send batches every 200 ms instead of 5 s, so the test need not wait long.
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("RUST_LOG", "warn")
            .spawn()
            .map(splai_testbed::process::Reaped)
            .unwrap()
    };
    let operator = splai_testbed::process::workspace_binary("splai-operator", "splai-operator");
    let worker = splai_testbed::process::workspace_binary("splai-worker", "splai-worker");
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let _processes: Vec<splai_testbed::process::Reaped> = vec![
        spawn(
            &operator,
            &strings(&[
                "--namespace",
                &ns,
                "--system-namespace",
                &ns,
                "--identity",
                "otlp-operator",
                "--agent-listen",
                &agent_endpoint,
                // Agents on loopback, with no service-account token.
                "--agent-auth",
                "none",
                "--metrics-listen",
                "127.0.0.1:0",
                "--webhook-listen",
                "127.0.0.1:0",
                "--artifacts",
                &format!("file://{}/records", dir.display()),
            ]),
        ),
        spawn(
            &worker,
            &strings(&[
                "--name",
                "otlp-node",
                "--control-plane",
                &agent_endpoint,
                "--cpu-millis",
                "2000",
                "--memory-mib",
                "2048",
                "--heartbeat-seconds",
                "1",
                "--artifacts",
                &format!("file://{}/artifacts", dir.display()),
                "--work-dir",
                &format!("{}/work", dir.display()),
            ]),
        ),
        spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_splai-gateway")),
            &strings(&[
                "--listen",
                &gateway_addr,
                "--tokens",
                &format!("{}/tokens.yaml", dir.display()),
                "--tls-cert-dir",
                &format!("{}/tls", dir.display()),
            ]),
        ),
    ];

    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://{gateway_addr}/v1/jobs");
    let body = serde_json::json!({"name": "traced", "spec": {"tasks": [
        {"id": "greet", "kind": "command", "command": ["echo", "hello"],
         "resources": {"cpuMillis": 500, "memoryMib": 64}}
    ]}});
    // Guards against hanging forever, not timing assertions.
    let deadline = Instant::now() + Duration::from_secs(120);
    let submitted: JobView = loop {
        match http.post(&base).bearer_auth(token).json(&body).send().await {
            Ok(r) => {
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                break r.json().await.unwrap();
            }
            // The gateway may still be starting.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the gateway never answered: {e}"),
        }
    };
    let trace = submitted
        .trace_id
        .clone()
        .expect("the gateway annotates the job with its request's trace ID");
    assert_eq!(trace.len(), 32);
    loop {
        let view: JobView = http
            .get(format!("{base}/traced"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view.finished() {
            let phase = view.status.map(|s| s.job.phase);
            assert_eq!(phase, Some(splai_scheduler::api::JobPhase::Completed));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never finished: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let wanted = [
        ("splai-gateway", "gateway.submit"),
        ("splai-operator", "job"),
        ("splai-operator", "task.attempt"),
        ("splai-worker", "task.execute"),
    ];
    loop {
        let seen: BTreeMap<(String, String), Vec<String>> =
            got.lock()
                .unwrap()
                .iter()
                .fold(BTreeMap::new(), |mut m, (service, name, t)| {
                    m.entry((service.clone(), name.clone()))
                        .or_default()
                        .push(t.clone());
                    m
                });
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(service, name)| {
                !seen
                    .get(&(service.to_string(), name.to_string()))
                    .is_some_and(|traces| traces.contains(&trace))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing from trace {trace}: {missing:?}; received {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
