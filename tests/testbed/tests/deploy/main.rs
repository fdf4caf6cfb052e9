//! The manifests in `deploy/` against the real kube-apiserver.
//!
//! - Every rendering (the base `deploy/kubernetes`, the minikube, kind and node overlays, and the base
//!   with the cert-manager component) is made by `kubectl kustomize`, applied with a server-side
//!   dry-run, then for real, with no Pod Security warning (the namespace enforces the restricted Pod Security
//!   Standard, so a pod template that breaks it warns).
//! - Each service account holds exactly the permissions its binary uses: checked by impersonation
//!   with `kubectl auth can-i`, and by running the operator's own code under its account.
//! - The worker policy confines each agent to its own node's `SPLAIWorker`.
//! - Every container is locked down, and the metrics table and the Grafana dashboard name the
//!   operator's real metrics.
//!
//! One control plane serves the whole binary; the manifests are applied to it once, by the first
//! test that needs them ([`support::installed`]).

mod accounts;
mod images;
mod manifests;
mod observability;
mod rbac;
mod support;
