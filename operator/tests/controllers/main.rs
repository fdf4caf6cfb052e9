//! The operator's controllers against a real kube-apiserver (see `splai-testbed`), with worker
//! agents in this process running a fast fake executor. One namespace per test.

mod auth;
mod faults;
mod finalizer;
mod harness;
mod lifecycle;
mod observe;
mod parity;
mod quota;
mod relist;
mod webhook;
