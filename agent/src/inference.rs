//! Inference calls to the backend a task's route resolved to.
//!
//! - `ollama`: Ollama's API, `POST {endpoint}/api/generate` with `stream: false`.
//! - `vllm`, `llamacpp`, `remote`: the OpenAI-compatible API, `POST {endpoint}/v1/chat/completions`
//!   (an endpoint that already ends in `/v1` is not given a second one), with
//!   `Authorization: Bearer KEY` when a key is configured.
//!
//! Each call has a timeout. Errors worth another try (connection failures, timeouts, 429 and
//! 5xx answers) are retried a few times with backoff inside the attempt; the rest fail the
//! attempt with the backend's own message.

use std::time::Duration;

use serde_json::{Value, json};
use splai_scheduler::api::{Backend, ResolvedRoute};

#[derive(Clone, Debug)]
pub struct InferenceConfig {
    /// The bearer key for OpenAI-compatible backends, read from a Secret-mounted file or an
    /// environment variable by the binary.
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// Tries per attempt, for errors worth another try.
    pub tries: u32,
    pub backoff: Duration,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            api_key: None,
            timeout: Duration::from_secs(300),
            tries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("backend {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("backend {endpoint} answered {status}: {body}")]
    Status {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("backend {endpoint} answered something that is not a {api} response: {reason}")]
    Malformed {
        endpoint: String,
        api: &'static str,
        reason: String,
    },
}

impl InferenceError {
    /// Worth another attempt later (the backend may come back), as opposed to a request the
    /// backend refuses as it is.
    pub fn retryable(&self) -> bool {
        match self {
            InferenceError::Unreachable { .. } => true,
            InferenceError::Status { status, .. } => *status == 429 || *status >= 500,
            InferenceError::Malformed { .. } => false,
        }
    }
}

/// What a backend answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub text: String,
    /// The whole response body, kept as an artifact.
    pub raw: Value,
}

pub struct Client {
    http: reqwest::Client,
    cfg: InferenceConfig,
}

fn openai_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

impl Client {
    pub fn new(cfg: InferenceConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .expect("an HTTP client with default TLS settings builds");
        Client { http, cfg }
    }

    /// Sends `prompt` to the route's backend, retrying what is worth retrying.
    pub async fn call(
        &self,
        route: &ResolvedRoute,
        prompt: &str,
    ) -> Result<Answer, InferenceError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.once(route, prompt).await {
                Err(e) if e.retryable() && tries < self.cfg.tries.max(1) => {
                    tracing::debug!(error = %e, tries, "inference call failed; trying again");
                    tokio::time::sleep(self.cfg.backoff * 2u32.pow(tries - 1)).await;
                }
                other => return other,
            }
        }
    }

    async fn once(&self, route: &ResolvedRoute, prompt: &str) -> Result<Answer, InferenceError> {
        let endpoint = route.endpoint.trim_end_matches('/').to_owned();
        let (url, body, api) = match route.backend {
            Backend::Ollama => (
                format!("{endpoint}/api/generate"),
                json!({"model": route.model, "prompt": prompt, "stream": false}),
                "Ollama",
            ),
            Backend::Vllm | Backend::Llamacpp | Backend::Remote => (
                openai_url(&endpoint),
                json!({
                    "model": route.model,
                    "messages": [{"role": "user", "content": prompt}],
                }),
                "OpenAI-compatible",
            ),
        };
        let mut request = self.http.post(&url).json(&body);
        if route.backend != Backend::Ollama
            && let Some(key) = &self.cfg.api_key
        {
            request = request.bearer_auth(key);
        }
        let unreachable = |e: reqwest::Error| InferenceError::Unreachable {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(InferenceError::Status {
                endpoint,
                status: status.as_u16(),
                body: text.chars().take(500).collect(),
            });
        }
        let malformed = |reason: String| InferenceError::Malformed {
            endpoint: endpoint.clone(),
            api,
            reason,
        };
        let raw: Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        let answer = match route.backend {
            Backend::Ollama => raw.get("response").and_then(Value::as_str),
            _ => raw
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str),
        }
        .ok_or_else(|| malformed("the answer's text is missing".into()))?
        .to_owned();
        Ok(Answer { text: answer, raw })
    }
}
