use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `SPLAIPolicy.spec`: what one tenant may run, and how much of it at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// The tenant governed, or `*` for every tenant without a policy of its own.
    pub tenant: String,
    /// Rules on `task.model`. Patterns may end in `*`.
    #[serde(default)]
    pub models: RuleSet,
    /// Rules on `task.classification`. Patterns may end in `*`.
    #[serde(default)]
    pub classifications: RuleSet,
    #[serde(default)]
    pub quotas: Quotas,
    /// Localities (zones) the tenant's tasks may run in. Empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_localities: Vec<String>,
}

/// Deny wins over allow. An empty `allow` allows everything that is not denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSet {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Limits per tenant; an absent limit is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_tasks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks_per_job: Option<u32>,
}
