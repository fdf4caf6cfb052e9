//! SPLAI's API gateway (`splai-gateway`) and its command-line client (`splai`).
//!
//! - [`server`]: the HTTP API over the Kubernetes API: submit (JSON or YAML), get, list,
//!   cancel, watch (Server-Sent Events) and artifact links, behind bearer tokens that map to
//!   tenants and their namespaces.
//! - [`api`]: the request and response types both sides share; [`openapi`]: the document.

#![forbid(unsafe_code)]

pub mod api;
pub mod openapi;
pub mod server;
