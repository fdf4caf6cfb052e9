//! Who may speak for a worker. An agent registers with its pod's projected service-account
//! token (audience [`AUDIENCE`]); the operator asks the API server about it (a TokenReview) and
//! accepts the agent only when the token is valid, belongs to the agents' service account, and
//! is bound to a pod on the node whose name the agent claims as its worker. A token of node A
//! cannot register worker B, receive B's tasks or report on them.
//!
//! The node comes from the token itself: since Kubernetes 1.30 a token bound to a pod carries
//! its node's name, which a TokenReview returns in the user's extra field [`NODE_NAME_EXTRA`]
//! (the same field the `splai-worker-own-node` admission policy reads). One review is made per
//! connection; agents keep theirs open for hours, so a cache would save little.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};
use splai_protocol::Authenticate;

use crate::metrics::Metrics;

/// The audience agents' tokens are requested for, so a token meant for the operator is good
/// for nothing else, and no other token of the pod is good here.
pub const AUDIENCE: &str = "splai-operator";
/// Where a TokenReview puts the node a pod-bound token was issued on.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Checks agents' tokens with the API server.
#[derive(Clone)]
pub struct TokenReviewer {
    pub client: Client,
    /// The user agents' tokens must belong to: `system:serviceaccount:NAMESPACE:NAME`.
    pub account: String,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Why an agent was refused; its message is what the agent logs.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no credential: start the agent with --token-file, a projected service-account token with audience `{AUDIENCE}`"
    )]
    NoCredential,
    #[error("the API server did not accept the token: {0}")]
    NotAuthenticated(String),
    #[error("the token belongs to `{user}`, not to the agents' service account `{expected}`")]
    WrongAccount { user: String, expected: String },
    #[error("the token is not bound to a pod on a node, so it names no worker")]
    NoNode,
    #[error(
        "the token was issued on node `{node}`, but the agent claims worker `{worker}`: an agent may speak only for its own node"
    )]
    OtherNode { node: String, worker: String },
    #[error("the API server could not review the token (try again later): {0}")]
    Review(#[source] kube::Error),
}

impl Refusal {
    /// A stable name for the `reason` label of `splai_agents_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoCredential => "no_credential",
            Refusal::NotAuthenticated(_) => "not_authenticated",
            Refusal::WrongAccount { .. } => "wrong_account",
            Refusal::NoNode => "no_node",
            Refusal::OtherNode { .. } => "other_node",
            Refusal::Review(_) => "review_failed",
        }
    }
}

impl TokenReviewer {
    /// Whether `credential` lets its agent speak for `worker`.
    pub async fn check(&self, worker: &str, credential: Option<&str>) -> Result<(), Refusal> {
        let token = credential
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::NoCredential)?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Refusal::Review)?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .unwrap_or_else(|| "it is invalid or expired".into());
            return Err(Refusal::NotAuthenticated(why));
        }
        let user = status.user.unwrap_or_default();
        let name = user.username.unwrap_or_default();
        if name != self.account {
            return Err(Refusal::WrongAccount {
                user: name,
                expected: self.account.clone(),
            });
        }
        let node = user
            .extra
            .as_ref()
            .and_then(|e| e.get(NODE_NAME_EXTRA))
            .and_then(|v| v.first())
            .ok_or(Refusal::NoNode)?;
        if node != worker {
            return Err(Refusal::OtherNode {
                node: node.clone(),
                worker: worker.to_owned(),
            });
        }
        Ok(())
    }
}

impl Authenticate for TokenReviewer {
    fn authenticate<'a>(
        &'a self,
        worker: &'a str,
        credential: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.check(worker, credential).await.map_err(|refusal| {
                tracing::warn!(%worker, reason = refusal.label(), error = %refusal, "refused an agent");
                self.metrics
                    .agents_refused
                    .get_or_create(&[("reason", refusal.label())])
                    .inc();
                refusal.to_string()
            })
        })
    }
}
