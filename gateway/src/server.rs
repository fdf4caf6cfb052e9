//! The HTTP API (axum). Every request carries a bearer token; the token names a tenant, and the
//! tenant a namespace. The gateway only ever reads and writes jobs in that namespace that carry
//! the tenant's label, so a tenant can neither see, cancel nor delete another's jobs: to it they
//! do not exist (404).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use splai_operator::artifacts::{Artifacts as Store, AttemptRecord, JobDir};
use splai_operator::driver::TRACE_ANNOTATION;
use splai_operator::{SPLAIJob, SPLAIJobSpec};
use tracing::Instrument;

use crate::api::{Artifacts, ErrorBody, ErrorDetail, JobView, SubmitRequest, name_taken};

/// The label that ties a job to its tenant.
pub const TENANT_LABEL: &str = "splai.io/tenant";
/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantEntry {
    pub token: String,
    pub tenant: String,
    pub namespace: String,
}

/// The tokens file (a mounted Secret): `tenants: [{token, tenant, namespace}, ...]`.
#[derive(Clone, Debug, Default)]
pub struct Tokens(HashMap<String, Arc<TenantEntry>>);

impl Tokens {
    pub fn parse(yaml: &str) -> Result<Tokens, TokensError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            tenants: Vec<TenantEntry>,
        }
        let file: File =
            serde_yaml_ng::from_str(yaml).map_err(|e| TokensError::Invalid(e.to_string()))?;
        let mut map = HashMap::new();
        for t in file.tenants {
            if t.token.len() < 16 {
                return Err(TokensError::Short { tenant: t.tenant });
            }
            map.insert(t.token.clone(), Arc::new(t));
        }
        Ok(Tokens(map))
    }
}

/// Why the tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("the tokens file is not valid: {0}")]
    Invalid(String),
    #[error("the token of tenant `{tenant}` is shorter than 16 characters; use a long random one")]
    Short { tenant: String },
}

#[derive(Clone)]
pub struct Gateway {
    pub client: Client,
    pub tokens: Arc<Tokens>,
    /// The operator's artifact store, read for the jobs' records; without it
    /// `GET /v1/jobs/{name}/records` answers 501.
    pub artifacts: Option<Store>,
}

/// An error in the API's one shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job `{name}` does not exist for this tenant"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => {
                let status = StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY);
                let code = match s.code {
                    400 | 422 => "invalid",
                    403 => "refused",
                    404 => "not_found",
                    409 => "conflict",
                    _ => "upstream",
                };
                // The API server's own failures are the gateway's upstream's, not the caller's.
                let status = if status.is_server_error() {
                    StatusCode::BAD_GATEWAY
                } else {
                    status
                };
                ApiError::new(status, code, s.message)
            }
            other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                format!("the Kubernetes API is unreachable: {other}"),
            ),
        }
    }
}

/// The caller's tenant, from `Authorization: Bearer TOKEN`.
pub struct Caller(Arc<TenantEntry>);

impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send `Authorization: Bearer TOKEN` with your tenant's token",
                )
            })?;
        gw.tokens
            .0
            .get(token.trim())
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the token is not valid",
                )
            })
    }
}

/// A job's name from the path, checked: a name no job can have is a bad request, answered before
/// anything reaches the API server.
pub struct JobName(String);

impl<S: Send + Sync> FromRequestParts<S> for JobName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::new(
                    e.status(),
                    "invalid",
                    format!("the job name in the path: {e}"),
                )
            })?;
        if !valid_name(&name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!(
                    "`{name}` is not a job name: use lowercase letters, digits and `-`, at most 63 characters"
                ),
            ));
        }
        Ok(JobName(name))
    }
}

impl Caller {
    fn jobs(&self, gw: &Gateway) -> Api<SPLAIJob> {
        Api::namespaced(gw.client.clone(), &self.0.namespace)
    }

    fn owns(&self, job: &SPLAIJob) -> bool {
        job.labels().get(TENANT_LABEL) == Some(&self.0.tenant)
    }

    async fn job(&self, gw: &Gateway, name: &str) -> Result<SPLAIJob, ApiError> {
        match self.jobs(gw).get_opt(name).await? {
            Some(job) if self.owns(&job) => Ok(job),
            _ => Err(ApiError::not_found(name)),
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes: over HTTPS with `tls`, or plain
/// HTTP without it (only behind a proxy that terminates TLS: tokens travel in every request).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Gateway,
    tls: Option<Arc<splai_operator::tls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(gw);
    match tls {
        Some(tls) => {
            let listener = splai_operator::tls::TlsListener::new(listener, tls)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{name}", get(get_job).delete(delete_job))
        .route("/v1/jobs/{name}/cancel", post(cancel))
        .route("/v1/jobs/{name}/watch", get(watch))
        .route("/v1/jobs/{name}/artifacts", get(artifacts))
        .route("/v1/jobs/{name}/records", get(records))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(no_route)
        .method_not_allowed_fallback(not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(gw))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

async fn submit(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let body = read_body(body).await?;
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    let mut value: serde_json::Value = if yaml {
        serde_yaml_ng::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the YAML body: {e}"),
            )
        })?
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the JSON body: {e}"),
            )
        })?
    };
    // The tenant is the token's: filled in when left out, refused when it names another.
    let tenant = &caller.0.tenant;
    if let Some(spec) = value.get_mut("spec").and_then(|s| s.as_object_mut()) {
        let given = match spec.get("tenant") {
            None => None,
            Some(serde_json::Value::String(t)) => Some(t.as_str()),
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("spec.tenant must be a string (or left out), not {other}"),
                ));
            }
        };
        match given {
            None | Some("") => {
                spec.insert("tenant".into(), serde_json::Value::String(tenant.clone()));
            }
            Some(other) if other != tenant => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "refused",
                    format!(
                        "spec.tenant is `{other}` but your token is tenant `{tenant}`: drop spec.tenant or use your own"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let request: SubmitRequest = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the request body: {e}"),
        )
    })?;
    if !valid_name(&request.name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "name `{}` is not valid: use lowercase letters, digits and `-`, at most 63 characters",
                request.name
            ),
        ));
    }
    let spec = request.spec;
    let mut job = SPLAIJob::new(&request.name, SPLAIJobSpec(spec));
    job.meta_mut().namespace = Some(caller.0.namespace.clone());
    job.meta_mut()
        .labels
        .get_or_insert_with(Default::default)
        .insert(TENANT_LABEL.to_owned(), tenant.clone());
    // The job's trace: the caller's when it sent a W3C `traceparent`, else this request's own
    // when spans are exported. The operator and the agents join the trace the annotation names.
    let span = tracing::info_span!("gateway.submit", tenant = %tenant, job = %request.name);
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let trace_id = match traceparent.and_then(splai_telemetry::trace_id_in) {
        Some(id) => {
            splai_telemetry::join_trace(&span, traceparent.unwrap_or_default());
            Some(id)
        }
        None => splai_telemetry::trace_id_of(&span),
    };
    if let Some(id) = trace_id {
        job.meta_mut()
            .annotations
            .get_or_insert_with(Default::default)
            .insert(TRACE_ANNOTATION.to_owned(), id);
    }
    let created = match caller
        .jobs(&gw)
        .create(&PostParams::default(), &job)
        .instrument(span)
        .await
    {
        Ok(created) => created,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = caller.jobs(&gw).get_opt(&request.name).await?;
            let own = existing.as_ref().is_some_and(|j| caller.owns(j));
            let deleting = own
                && existing
                    .as_ref()
                    .is_some_and(|j| j.metadata.deletion_timestamp.is_some());
            let namespace = &caller.0.namespace;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                name_taken(&request.name, namespace, own, deleting),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok((StatusCode::CREATED, Json(JobView::from(&created))))
}

/// How much of a body past [`MAX_BODY`] is read and dropped before the 413 is sent. A server
/// that answers and closes while the client is still sending makes most clients see a broken
/// connection instead of the answer; past this the gateway closes anyway.
const DRAIN_LIMIT: usize = 16 * MAX_BODY;

/// The request body, at most [`MAX_BODY`] bytes.
async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than the limit of {MAX_BODY} bytes"),
        )
    };
    let mut chunks = body.into_data_stream();
    let (mut kept, mut seen) = (Vec::new(), 0usize);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("reading the request body: {e}"),
            )
        })?;
        seen += chunk.len();
        if seen <= MAX_BODY {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

async fn list(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let lp = ListParams::default().labels(&format!("{TENANT_LABEL}={}", caller.0.tenant));
    let jobs = caller.jobs(&gw).list(&lp).await?;
    Ok(Json(jobs.items.iter().map(JobView::from).collect()))
}

async fn get_job(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    JobName(name): JobName,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(JobView::from(&caller.job(&gw, &name).await?)))
}

async fn cancel(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    JobName(name): JobName,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    caller.job(&gw, &name).await?;
    let patch = serde_json::json!({"spec": {"cancel": true}});
    let job = caller
        .jobs(&gw)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}

/// Deletes a job. The operator's finalizer stops its running tasks first; the job is gone once
/// they are. Only the object the caller owns is deleted: the precondition on its uid keeps a job
/// created again under the same name meanwhile (by anyone) from going instead.
async fn delete_job(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    JobName(name): JobName,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = caller.job(&gw, &name).await?;
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let deleted = match caller.jobs(&gw).delete(&name, &params).await {
        Ok(deleted) => deleted,
        // Gone meanwhile, or replaced by another object of that name: not the caller's job.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            return Err(ApiError::not_found(&name));
        }
        Err(e) => return Err(e.into()),
    };
    // The object as it is now (deleting, while the finalizer runs), or as it was when gone.
    let view = deleted
        .left()
        .map_or_else(|| JobView::from(&job), |j| JobView::from(&j));
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Deserialize)]
struct RecordsQuery {
    task: Option<String>,
}

/// Each attempt of the job's tasks with the decision that placed it: from `records.jsonl` once
/// the job has ended, from the chunks written so far while it runs.
async fn records(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    JobName(name): JobName,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Result<Json<Vec<AttemptRecord>>, ApiError> {
    let Query(query) = query
        .map_err(|e| ApiError::new(e.status(), "invalid", format!("the query string: {e}")))?;
    let job = caller.job(&gw, &name).await?;
    let records_uri = job.status.as_ref().and_then(|s| s.records_uri.clone());
    let Some(store) = &gw.artifacts else {
        let where_ = records_uri.map_or_else(
            || "the operator's artifact store".to_owned(),
            |uri| format!("`{uri}`"),
        );
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "unavailable",
            format!(
                "this gateway does not read the artifact store (start it with --artifacts); the \
                 records are in {where_}"
            ),
        ));
    };
    let read = match &records_uri {
        Some(uri) => store.read_attempts(uri).await,
        None => {
            let dir = JobDir {
                namespace: caller.0.namespace.clone(),
                name: name.clone(),
                uid: job.metadata.uid.clone().unwrap_or_default(),
            };
            store.attempts(&dir).await
        }
    };
    let mut attempts = read.map_err(|e| {
        tracing::warn!(job = %name, error = %e, "reading records failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream",
            format!("reading the job's records: {e}"),
        )
    })?;
    if let Some(task) = &query.task {
        attempts.retain(|a| &a.record.task == task);
    }
    Ok(Json(attempts))
}

async fn artifacts(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    JobName(name): JobName,
) -> Result<Json<Artifacts>, ApiError> {
    let job = caller.job(&gw, &name).await?;
    let status = job.status.unwrap_or_default();
    Ok(Json(Artifacts {
        result: status.job.result_artifact_uri,
        results: status.job.result_artifacts,
        records: status.records_uri,
    }))
}

/// Server-Sent Events: one `status` event per change of the job, until it has ended.
async fn watch(
    State(gw): State<Arc<Gateway>>,
    caller: Caller,
    JobName(name): JobName,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let first = caller.job(&gw, &name).await?;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let tenant = caller.0.tenant.clone();
    let changes = watcher(caller.jobs(&gw), config)
        .applied_objects()
        .filter_map(move |j| {
            let tenant = tenant.clone();
            async move {
                j.ok()
                    .filter(|j| j.labels().get(TENANT_LABEL) == Some(&tenant))
            }
        });
    let views = futures::stream::once(async move { first })
        .chain(changes)
        .map(|j| JobView::from(&j));
    // Changes only, and nothing after the event that shows the job ended.
    let events = views
        .scan((None::<JobView>, false), |(last, ended), view| {
            let out = if *ended {
                None
            } else {
                let fresh = last.as_ref() != Some(&view);
                *ended = view.finished();
                *last = Some(view.clone());
                Some(fresh.then_some(view))
            };
            futures::future::ready(out)
        })
        .filter_map(futures::future::ready)
        .map(|view| {
            Ok(SseEvent::default()
                .event("status")
                .json_data(&view)
                .unwrap_or_default())
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn openapi() -> Json<&'static serde_json::Value> {
    Json(crate::openapi::document())
}

/// Unknown paths get the API's error shape too.
async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such route: {}; the routes are in /v1/openapi.json",
            uri.path()
        ),
    )
}

async fn not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not_allowed",
        format!(
            "{method} is not allowed on {}; the routes and their methods are in /v1/openapi.json",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_with_a_short_token_or_an_unknown_field_is_refused_with_the_reason() {
        let short = Tokens::parse("tenants:\n- {token: abc, tenant: acme, namespace: a}\n");
        assert!(
            matches!(&short, Err(TokensError::Short { tenant }) if tenant == "acme"),
            "{:?}",
            short.err()
        );
        let unknown = Tokens::parse("tenants: []\nadmins: []\n").unwrap_err();
        assert!(unknown.to_string().contains("admins"), "{unknown}");
        let good = Tokens::parse(
            "tenants:\n- {token: 0123456789abcdef0123, tenant: acme, namespace: a}\n",
        )
        .unwrap();
        assert_eq!(good.0["0123456789abcdef0123"].tenant, "acme");
    }
}
