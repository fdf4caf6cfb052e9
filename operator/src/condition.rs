use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use splai_scheduler::Timestamp;

/// One aspect of a resource's state, as the Kubernetes API conventions define it (the shape of
/// `metav1.Condition`), so that `kubectl wait --for=condition=...` and other tools understand it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// CamelCase, such as `Admitted` or `Ready`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
    ))]
    pub type_: String,
    pub status: ConditionStatus,
    /// The `.metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
    /// A CamelCase cause, usable as a metric label, such as `QuotaExceeded`.
    #[schemars(length(min = 1, max = 1024))]
    #[schemars(regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"))]
    pub reason: String,
    /// What a person should know; may be empty.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Sets the condition of `type_`, keeping its transition time unless its status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let reason = if reason.is_empty() { "Unknown" } else { reason };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message.to_owned();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            observed_generation: generation,
            last_transition_time: now,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }),
    }
}
