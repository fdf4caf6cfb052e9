//! The validating admission webhook, over HTTPS: the API server asks it before it stores a
//! `SPLAIJob`, `SPLAIPolicy` or `SPLAIModelRoute`, and it answers with the core's own admission
//! functions (`splai_scheduler::admission`), so the messages are the same everywhere.
//!
//! - `POST /validate/splaijob`: the DAG rules, the governing policy's allow and deny rules, route
//!   resolution, and the quotas a job can never meet (a task larger than the tenant's cpu or gpu
//!   quota, more tasks than `maxTasksPerJob`). A job that fits but must wait for running work is
//!   admitted: it waits in the queue with its reason.
//! - `POST /validate/splaipolicy`: contradictory rules and malformed patterns.
//! - `POST /validate/splaimodelroute`: malformed endpoints, taken priorities, a second default.
//!   Unknown backends never reach it: the CRD's schema refuses them.
//!
//! It reads policies and routes from the API at each request, so every replica can serve it,
//! leader or not. Register it with `failurePolicy: Fail`: when it is down, nothing is admitted.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use splai_scheduler::Settings;
use splai_scheduler::admission;
use splai_scheduler::api::{ModelRouteSpec, PolicySpec};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

use crate::tls::TlsListener;
/// TLS from a PEM certificate chain and key, such as the `tls.crt` and `tls.key` that
/// cert-manager writes into a Secret.
pub use crate::tls::server_config as tls_config;

use crate::resources::{SPLAIJob, SPLAIModelRoute, SPLAIPolicy};

#[derive(Clone)]
pub struct Validator {
    pub client: Client,
    pub settings: Settings,
}

/// Serves the webhook over TLS until the process ends.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    validator: Validator,
) -> io::Result<()> {
    let app = axum::Router::new()
        .route("/validate/splaijob", post(job))
        .route("/validate/splaipolicy", post(policy))
        .route("/validate/splaimodelroute", post(route))
        .with_state(Arc::new(validator));
    let listener = TlsListener::new(listener, tls)?;
    axum::serve(listener, app).await
}

type Review = Json<AdmissionReview<DynamicObject>>;

/// Turns a review into its request, runs `decide`, and wraps the answer: admitted (with
/// warnings, which kubectl prints) or refused with a message.
async fn answer<F, Fut>(review: AdmissionReview<DynamicObject>, decide: F) -> Review
where
    F: FnOnce(AdmissionRequest<DynamicObject>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, String>>,
{
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e.to_string()).into_review()),
    };
    let mut response = AdmissionResponse::from(&req);
    let response = match decide(req).await {
        Ok(warnings) => {
            response.warnings = (!warnings.is_empty()).then_some(warnings);
            response
        }
        Err(why) => response.deny(why),
    };
    Json(response.into_review())
}

fn typed<K: serde::de::DeserializeOwned>(
    req: &AdmissionRequest<DynamicObject>,
) -> Result<Option<K>, String> {
    let Some(obj) = &req.object else {
        return Ok(None);
    };
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| format!("the object does not match its schema: {e}"))
}

impl Validator {
    /// The tenant's admitted jobs that have not ended, in `ns`.
    async fn running_jobs(&self, ns: &str, tenant: &str) -> Result<usize, String> {
        let api: Api<SPLAIJob> = Api::namespaced(self.client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("the webhook could not count the namespace's jobs: {e}"))?;
        Ok(list
            .items
            .iter()
            .filter(|j| j.spec.0.tenant == tenant)
            .filter_map(|j| j.status.as_ref())
            .filter(|s| s.job.started_at.is_some() && !s.job.phase.is_terminal())
            .count())
    }

    /// The specs of one kind of resource in `ns`, by name.
    async fn specs<K, S>(
        &self,
        ns: &str,
        what: &str,
        spec: fn(K) -> S,
    ) -> Result<BTreeMap<String, S>, String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("the webhook could not read the namespace's {what}: {e}"))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| Some((o.meta().name.clone()?, spec(o))))
            .collect())
    }

    async fn policies(&self, ns: &str) -> Result<BTreeMap<String, PolicySpec>, String> {
        self.specs(ns, "policies", |p: SPLAIPolicy| p.spec.0).await
    }

    async fn routes(&self, ns: &str) -> Result<BTreeMap<String, ModelRouteSpec>, String> {
        self.specs(ns, "model routes", |r: SPLAIModelRoute| r.spec.0)
            .await
    }
}

async fn job(
    State(v): State<Arc<Validator>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Review {
    answer(review, |req| async move {
        // A job's spec is judged once, when it is created; later writes (the planner's tasks,
        // `cancel`) are the operator's or change nothing the core reads.
        if req.operation != Operation::Create {
            return Ok(Vec::new());
        }
        let Some(job) = typed::<SPLAIJob>(&req)? else {
            return Ok(Vec::new());
        };
        let ns = req.namespace.clone().unwrap_or_default();
        let policies = v.policies(&ns).await?;
        let routes = v.routes(&ns).await?;
        let mut spec = job.spec.0;
        let refused = |r: admission::Rejection| format!("{}: {}", r.reason, r.message);
        let admitted =
            admission::admit(&mut spec, &policies, &routes, &v.settings.limits).map_err(refused)?;
        let policy = admission::policy_for(&policies, &spec).map_err(refused)?;
        admission::quota_rejection(&spec, policy).map_err(refused)?;
        // Admitted; what will make it wait is worth a warning.
        let Some((name, p)) = policy else {
            return Ok(Vec::new());
        };
        let running = match p.quotas.max_running_jobs {
            Some(_) => Some(v.running_jobs(&ns, &spec.tenant).await?),
            None => None,
        };
        Ok(admission::wait_warnings(
            name,
            p,
            &spec.tenant,
            admission::peak_width(&admitted.dag),
            running,
        ))
    })
    .await
}

async fn policy(review: Json<AdmissionReview<DynamicObject>>) -> Review {
    answer(review.0, |req| async move {
        let Some(p) = typed::<SPLAIPolicy>(&req)? else {
            return Ok(Vec::new());
        };
        let issues = admission::review_policy(&p.spec.0);
        if issues.is_empty() {
            Ok(Vec::new())
        } else {
            Err(format!("InvalidPolicy: {}", issues.join("; ")))
        }
    })
    .await
}

async fn route(
    State(v): State<Arc<Validator>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Review {
    answer(review, |req| async move {
        let Some(r) = typed::<SPLAIModelRoute>(&req)? else {
            return Ok(Vec::new());
        };
        let ns = req.namespace.clone().unwrap_or_default();
        let others = v.routes(&ns).await?;
        let issues = admission::review_route(
            &req.name,
            &r.spec.0,
            others.iter().map(|(n, s)| (n.as_str(), s)),
        );
        if issues.is_empty() {
            Ok(Vec::new())
        } else {
            Err(format!("InvalidModelRoute: {}", issues.join("; ")))
        }
    })
    .await
}
