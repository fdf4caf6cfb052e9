//! `splai-worker`, SPLAI's worker agent: [`sandbox`] runs `command` tasks (own process group,
//! rlimits, `no_new_privs`, a clean environment, a private folder, captured output),
//! [`inference`] calls model backends (Ollama and OpenAI-compatible APIs), and [`executor`]
//! ties them to the agent protocol and the artifact store.

#![forbid(unsafe_code)]

pub mod confine;
pub mod executor;
pub mod inference;
pub mod sandbox;
