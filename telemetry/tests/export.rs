//! Spans reach a real OTLP/HTTP receiver: a local server that decodes the protobuf requests the
//! way a collector does. One test per process: the subscriber is global.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use splai_telemetry::{Export, Telemetry, join_trace, trace_id_of};

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn receive(State(got): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    got.lock().unwrap().push(request);
    ""
}

#[test]
fn spans_joined_to_a_job_reach_the_collector_under_the_jobs_trace_id() {
    let got: Received = Arc::default();
    // The receiver runs on its own runtime: flushing blocks this thread.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(got.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });

    let telemetry = Telemetry::init_with("splai-test", false, Export::To(url)).unwrap();
    assert!(telemetry.exporting());
    let job_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = tracing::info_span!(target: "splai_test", "task.execute", job = "default/hello", task = "greet");
    assert!(join_trace(
        &span,
        &format!("00-{job_trace}-00f067aa0ba902b7-01")
    ));
    assert_eq!(trace_id_of(&span).as_deref(), Some(job_trace));
    span.in_scope(|| tracing::info!("running"));
    drop(span);
    let root = tracing::info_span!(target: "splai_test", "gateway.submit");
    assert!(join_trace(&root, job_trace), "a bare trace ID joins too");
    drop(root);
    assert!(!join_trace(
        &tracing::info_span!("bad"),
        "not-a-traceparent"
    ));
    splai_telemetry::record_span(
        "task.attempt",
        &format!("00-{job_trace}-00f067aa0ba902b7-01"),
        1_700_000_000_000,
        1_700_000_002_500,
        vec![("splai.outcome", "Succeeded".into())],
    );
    drop(telemetry); // flushes

    let requests = got.lock().unwrap();
    let spans: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map({
                    let service = service.clone();
                    move |s| (service.clone(), s)
                })
            })
        })
        .collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let execute = spans
        .iter()
        .find(|(_, s)| s.name == "task.execute")
        .expect("the execution span was exported");
    assert!(
        execute
            .0
            .as_deref()
            .is_some_and(|s| s.contains("splai-test")),
        "{:?}",
        execute.0
    );
    assert_eq!(hex(&execute.1.trace_id), job_trace);
    assert_eq!(hex(&execute.1.parent_span_id), "00f067aa0ba902b7");
    let submit = spans
        .iter()
        .find(|(_, s)| s.name == "gateway.submit")
        .expect("the request span was exported");
    assert_eq!(hex(&submit.1.trace_id), job_trace);
    let attempt = spans
        .iter()
        .find(|(_, s)| s.name == "task.attempt")
        .expect("the recorded attempt was exported");
    assert_eq!(hex(&attempt.1.trace_id), job_trace);
    assert_eq!(attempt.1.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(attempt.1.end_time_unix_nano, 1_700_000_002_500_000_000);
    assert!(
        attempt
            .1
            .attributes
            .iter()
            .any(|a| a.key == "splai.outcome")
    );
}
