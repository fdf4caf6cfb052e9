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
//! Every replica serves it, leader or not. Each keeps policies and routes in kube's
//! `reflector` stores, fed by its own watches (a re-list replaces a store whole, so a deleted
//! policy never lingers), and reads them at each request instead of listing. Jobs are listed,
//! and only to answer a job under a policy with `maxRunningJobs`: a standby does not keep every
//! job in memory for that one warning. Register it with `failurePolicy: Fail`: when it is
//! down, nothing is admitted.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
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

/// How long a request waits for the stores' first list before it is refused.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Validator {
    client: Client,
    settings: Settings,
    policies: Store<SPLAIPolicy>,
    routes: Store<SPLAIModelRoute>,
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
    /// Starts watching policies and routes in `namespace` (every namespace when `None`) and
    /// gives the validator that reads them. The watches run as long as the runtime does.
    pub fn start(client: Client, settings: Settings, namespace: Option<&str>) -> Validator {
        Validator {
            policies: reflect(crate::run::scoped::<SPLAIPolicy>(&client, namespace)),
            routes: reflect(crate::run::scoped::<SPLAIModelRoute>(&client, namespace)),
            client,
            settings,
        }
    }

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

    /// The specs of one kind of resource in `ns`, by name, from its store.
    async fn specs<K, S>(
        store: &Store<K>,
        ns: &str,
        what: &str,
        spec: fn(&K) -> S,
    ) -> Result<BTreeMap<String, S>, String>
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
    {
        match tokio::time::timeout(FIRST_LIST_WAIT, store.wait_until_ready()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(format!(
                    "the webhook has not read the {what} from the API yet; try again shortly"
                ));
            }
        }
        Ok(store
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns))
            .filter_map(|o| Some((o.meta().name.clone()?, spec(o))))
            .collect())
    }

    async fn policies(&self, ns: &str) -> Result<BTreeMap<String, PolicySpec>, String> {
        Self::specs(&self.policies, ns, "policies", |p: &SPLAIPolicy| {
            p.spec.0.clone()
        })
        .await
    }

    async fn routes(&self, ns: &str) -> Result<BTreeMap<String, ModelRouteSpec>, String> {
        Self::specs(&self.routes, ns, "model routes", |r: &SPLAIModelRoute| {
            r.spec.0.clone()
        })
        .await
    }
}

/// A store of one resource, kept by a watch that runs on its own task.
fn reflect<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(stream.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(kind = %K::kind(&()), error = %e, "the webhook's watch failed; retrying");
        }
    }));
    store
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
