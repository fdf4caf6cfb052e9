use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::InteractionClass;

/// `SPLAIModelRoute.spec`: which backend serves the inference tasks it matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelRouteSpec {
    /// Routes are tried from the highest priority down; the first match wins.
    #[serde(default)]
    pub priority: i32,
    /// Every field set here must equal the task's; an empty match matches every task.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    pub backend: Backend,
    /// Base URL of the backend, such as `http://ollama.splai-system:11434`.
    pub endpoint: String,
    /// The model name the backend knows; defaults to the task's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Used when no other route matches, whatever its `match` says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction_class: Option<InteractionClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// The task's model; may end in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Ollama,
    Vllm,
    Llamacpp,
    Remote,
}

/// The outcome of routing one task: stamped into the task's status and its assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedRoute {
    /// Name of the `SPLAIModelRoute` that matched.
    pub route: String,
    pub backend: Backend,
    pub endpoint: String,
    pub model: String,
}
