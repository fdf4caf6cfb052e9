//! Inference against local HTTP servers that follow each API: Ollama's and the OpenAI-compatible
//! one (vLLM, llama.cpp's server, remote APIs), with keys, retries and clear failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use splai_protocol::{Executor, Outcome, TaskAssignment};
use splai_scheduler::api::{Backend, ResolvedRoute, TaskKind, TaskSpec};
use splai_worker::executor::{ArtifactStore, WorkerExecutor};
use splai_worker::inference::{Client, InferenceConfig, InferenceError};
use splai_worker::sandbox::SandboxConfig;

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn ollama() -> axum::Router {
    axum::Router::new().route(
        "/api/generate",
        post(|Json(body): Json<Value>| async move {
            assert_eq!(body["stream"], false);
            Json(json!({
                "model": body["model"],
                "response": format!("echo: {}", body["prompt"].as_str().unwrap_or_default()),
                "done": true,
            }))
        }),
    )
}

fn openai(calls: Arc<AtomicU32>, fail_first: u32) -> axum::Router {
    axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let calls = calls.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Bearer sk-test")
                {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"error": "bad key"})));
                }
                if n <= fail_first {
                    return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "loading"})));
                }
                let prompt = body["messages"][0]["content"].as_str().unwrap_or_default();
                (
                    StatusCode::OK,
                    Json(json!({
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("{} says {prompt}", body["model"].as_str().unwrap_or_default())}}],
                    })),
                )
            }
        }),
    )
}

fn route(backend: Backend, endpoint: &str) -> ResolvedRoute {
    ResolvedRoute {
        route: "r".into(),
        backend,
        endpoint: endpoint.into(),
        model: "llama-8b".into(),
    }
}

fn client(key: Option<&str>) -> Client {
    Client::new(InferenceConfig {
        api_key: key.map(str::to_owned),
        timeout: Duration::from_secs(10),
        tries: 3,
        backoff: Duration::from_millis(10),
    })
}

#[tokio::test]
async fn an_ollama_backend_gets_its_own_api_and_answers() {
    let endpoint = serve(ollama()).await;
    let answer = client(None)
        .call(&route(Backend::Ollama, &endpoint), "2+2?")
        .await
        .unwrap();
    assert_eq!(answer.text, "echo: 2+2?");
    assert_eq!(answer.raw["done"], true);
}

#[tokio::test]
async fn openai_compatible_backends_get_the_key_and_a_retry_on_503() {
    let calls = Arc::new(AtomicU32::new(0));
    let endpoint = serve(openai(calls.clone(), 1)).await;
    for backend in [Backend::Vllm, Backend::Llamacpp, Backend::Remote] {
        calls.store(0, Ordering::SeqCst);
        let answer = client(Some("sk-test"))
            .call(&route(backend, &format!("{endpoint}/v1")), "hi")
            .await
            .unwrap();
        assert_eq!(answer.text, "llama-8b says hi");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one 503, then the answer");
    }
    // A wrong key is the backend's refusal, passed on and not retried.
    calls.store(10, Ordering::SeqCst);
    let err = client(Some("sk-wrong"))
        .call(&route(Backend::Vllm, &endpoint), "hi")
        .await
        .unwrap_err();
    assert!(
        matches!(err, InferenceError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(!err.retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn an_unreachable_backend_fails_retryably_and_names_itself() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = client(None)
        .call(&route(Backend::Ollama, &endpoint), "hi")
        .await
        .unwrap_err();
    assert!(err.retryable());
    assert!(err.to_string().contains(&endpoint), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test]
async fn an_inference_task_stores_its_answer_and_warms_its_model() {
    let endpoint = serve(ollama()).await;
    let dir = std::env::temp_dir().join(format!("splai-inference-{}", std::process::id()));
    let executor = WorkerExecutor::new(
        SandboxConfig::new(dir.join("work")),
        ArtifactStore::open(&format!("file://{}/artifacts", dir.display())).unwrap(),
        client(None),
        vec!["phi-3".into()],
        2,
    );
    let task = TaskAssignment {
        job: "ns/ask".into(),
        task: "answer".into(),
        attempt: 1,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        route: Some(route(Backend::Ollama, &endpoint)),
        task_spec: Some(TaskSpec {
            id: "answer".into(),
            kind: TaskKind::Inference,
            model: Some("llama-8b".into()),
            input: Some("what is SPLAI?".into()),
            ..TaskSpec::default()
        }),
    };
    let Outcome::Succeeded {
        artifact_uri: Some(uri),
    } = executor.run(task).await
    else {
        panic!("the inference task failed");
    };
    let folder = std::path::PathBuf::from(uri.strip_prefix("file://").unwrap());
    assert!(folder.ends_with("jobs/ns/ask/answer/1"), "{uri}");
    assert_eq!(
        std::fs::read_to_string(folder.join("response.txt")).unwrap(),
        "echo: what is SPLAI?"
    );
    assert_eq!(executor.load().warm_models, ["llama-8b", "phi-3"]);
    let _ = std::fs::remove_dir_all(&dir);
}
