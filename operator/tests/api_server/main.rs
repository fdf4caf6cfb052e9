//! The four CRDs against a real kube-apiserver (see `splai-testbed`): one control plane for this
//! binary, one namespace per test.

mod admission;
mod apply;
mod generated;
mod status;
mod support;
mod watch;
