//! What agents and the control plane say to each other, and how it maps onto the core's events
//! and effects.
//!
//! Every frame carries an [`Envelope`] with the protocol version, so that a mismatched agent is
//! told so instead of misreading a field. Field names are camelCase, as in the resources.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use splai_scheduler::api::{AttemptRef, Capabilities, ResolvedRoute, TaskSpec};
use splai_scheduler::{Assignment, Effect, Event, Heartbeat};

/// Bumped on any change an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<M> {
    pub version: u32,
    pub message: M,
}

impl<M> Envelope<M> {
    pub fn new(message: M) -> Self {
        Envelope {
            version: PROTOCOL_VERSION,
            message,
        }
    }
}

/// Agent to control plane. Every message names its worker; the server checks it against the
/// worker that registered the connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum AgentMessage {
    /// Opens every connection. A new `incarnation` tells the core the agent restarted and lost
    /// whatever it was running; a reconnect keeps the old one. `credential` proves the agent may
    /// speak for `worker`, when the control plane asks for one (see `server::Authenticate`).
    Register {
        worker: String,
        capabilities: Capabilities,
        incarnation: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<Credential>,
    },
    Heartbeat(Heartbeat),
    Started {
        worker: String,
        attempt: AttemptRef,
    },
    Succeeded {
        worker: String,
        attempt: AttemptRef,
        artifact_uri: Option<String>,
    },
    Failed {
        worker: String,
        attempt: AttemptRef,
        error: String,
        retryable: bool,
    },
}

impl AgentMessage {
    pub fn worker(&self) -> &str {
        match self {
            AgentMessage::Register { worker, .. }
            | AgentMessage::Started { worker, .. }
            | AgentMessage::Succeeded { worker, .. }
            | AgentMessage::Failed { worker, .. } => worker,
            AgentMessage::Heartbeat(hb) => &hb.worker,
        }
    }

    /// The wire tag, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentMessage::Register { .. } => "register",
            AgentMessage::Heartbeat(_) => "heartbeat",
            AgentMessage::Started { .. } => "started",
            AgentMessage::Succeeded { .. } => "succeeded",
            AgentMessage::Failed { .. } => "failed",
        }
    }
}

/// The control plane side is a thin adapter: every agent message is exactly one core event.
impl From<AgentMessage> for Event {
    fn from(message: AgentMessage) -> Event {
        match message {
            AgentMessage::Register {
                worker,
                capabilities,
                incarnation,
                credential: _,
            } => Event::WorkerRegistered {
                name: worker,
                capabilities,
                incarnation,
            },
            AgentMessage::Heartbeat(hb) => Event::Heartbeat(hb),
            AgentMessage::Started { worker, attempt } => Event::TaskStarted { attempt, worker },
            AgentMessage::Succeeded {
                worker,
                attempt,
                artifact_uri,
            } => Event::TaskSucceeded {
                attempt,
                worker,
                artifact_uri,
            },
            AgentMessage::Failed {
                worker,
                attempt,
                error,
                retryable,
            } => Event::TaskFailed {
                attempt,
                worker,
                error,
                retryable,
            },
        }
    }
}

/// A bearer credential, such as a service-account token. Its `Debug` shows no secret, so a
/// logged message leaks nothing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(pub String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential(<{} bytes>)", self.0.len())
    }
}

/// Control plane to agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum ControlMessage {
    Assign(Box<TaskAssignment>),
    /// Stop an attempt; the agent sends no report for it, since the core has already ended it.
    Cancel {
        job: String,
        task: String,
        attempt: u32,
        reason: CancelReason,
    },
    /// Answers each `register` and `heartbeat`, in order. An agent whose heartbeats go
    /// unanswered reconnects, and a report is known delivered once a later heartbeat is answered.
    Ack,
    /// The answer to a `register` whose credential does not let the agent speak for its worker;
    /// the connection closes after it.
    Refused {
        reason: String,
    },
}

impl ControlMessage {
    /// The message an effect asks to send, and the worker it goes to; `None` for effects that
    /// are not for an agent. Assignments carry no task spec; add one with
    /// [`TaskAssignment::with_task_spec`].
    pub fn from_effect(effect: &Effect) -> Option<(Arc<str>, ControlMessage)> {
        match effect {
            Effect::Assign(a) => Some((
                a.worker.clone(),
                ControlMessage::Assign(Box::new(TaskAssignment::from(&**a))),
            )),
            Effect::Cancel {
                job,
                task,
                attempt,
                worker,
                reason,
            } => Some((
                worker.clone(),
                ControlMessage::Cancel {
                    job: job.to_string(),
                    task: task.to_string(),
                    attempt: *attempt,
                    reason: *reason,
                },
            )),
            _ => None,
        }
    }
}

/// One attempt of one task, as the agent runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssignment {
    pub job: String,
    pub task: String,
    pub attempt: u32,
    /// W3C trace context, so the agent's spans join the job's trace.
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<ResolvedRoute>,
    /// What to run. The core's assignment does not carry it; the driver adds it from the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_spec: Option<TaskSpec>,
}

impl TaskAssignment {
    pub fn with_task_spec(mut self, spec: TaskSpec) -> Self {
        self.task_spec = Some(spec);
        self
    }

    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef {
            job: self.job.clone(),
            task: self.task.clone(),
            attempt: self.attempt,
        }
    }
}

impl From<&Assignment> for TaskAssignment {
    fn from(a: &Assignment) -> Self {
        TaskAssignment {
            job: a.job.to_string(),
            task: a.task.to_string(),
            attempt: a.attempt,
            traceparent: a.traceparent.clone(),
            route: a.route.clone(),
            task_spec: None,
        }
    }
}

/// Why an attempt is stopped: the core's own type, which reads back from the wire.
pub use splai_scheduler::CancelReason;

#[cfg(test)]
mod tests {
    use serde_json::json;
    use splai_scheduler::api::Backend;

    use super::*;

    fn attempt() -> AttemptRef {
        AttemptRef {
            job: "docs".into(),
            task: "summarize".into(),
            attempt: 2,
        }
    }

    #[test]
    fn reports_are_camel_case_and_tagged_by_type() {
        let msg = AgentMessage::Succeeded {
            worker: "w1".into(),
            attempt: attempt(),
            artifact_uri: Some("s3://out/1".into()),
        };
        let wire = serde_json::to_value(Envelope::new(msg.clone())).unwrap();
        assert_eq!(
            wire,
            json!({
                "version": 1,
                "message": {
                    "type": "succeeded",
                    "worker": "w1",
                    "attempt": {"job": "docs", "task": "summarize", "attempt": 2},
                    "artifactUri": "s3://out/1",
                },
            })
        );
        let back: Envelope<AgentMessage> = serde_json::from_value(wire).unwrap();
        assert_eq!(back.message, msg);
    }

    #[test]
    fn a_heartbeat_round_trips_with_its_running_attempts() {
        let msg = AgentMessage::Heartbeat(Heartbeat {
            worker: "w1".into(),
            incarnation: 3,
            queue_depth: 1,
            running: vec![attempt()],
            ..Heartbeat::default()
        });
        let wire = serde_json::to_string(&msg).unwrap();
        assert!(wire.starts_with(r#"{"type":"heartbeat","worker":"w1","incarnation":3"#));
        assert_eq!(serde_json::from_str::<AgentMessage>(&wire).unwrap(), msg);
    }

    #[test]
    fn each_agent_message_becomes_the_matching_core_event() {
        let failed = AgentMessage::Failed {
            worker: "w1".into(),
            attempt: attempt(),
            error: "exit 3".into(),
            retryable: false,
        };
        assert_eq!(
            Event::from(failed),
            Event::TaskFailed {
                attempt: attempt(),
                worker: "w1".into(),
                error: "exit 3".into(),
                retryable: false,
            }
        );
        let register = AgentMessage::Register {
            worker: "w2".into(),
            capabilities: Capabilities::default(),
            incarnation: 7,
            credential: Some(Credential("secret-token".into())),
        };
        assert!(!format!("{register:?}").contains("secret-token"));
        assert_eq!(register.worker(), "w2");
        assert_eq!(
            Event::from(register),
            Event::WorkerRegistered {
                name: "w2".into(),
                capabilities: Capabilities::default(),
                incarnation: 7,
            }
        );
    }

    #[test]
    fn a_cancel_effect_becomes_a_cancel_for_its_worker() {
        let effect = Effect::Cancel {
            job: "docs".into(),
            task: "summarize".into(),
            attempt: 2,
            worker: "w1".into(),
            reason: splai_scheduler::CancelReason::TaskTimedOut,
        };
        let (worker, msg) = ControlMessage::from_effect(&effect).unwrap();
        assert_eq!(&*worker, "w1");
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"type": "cancel", "job": "docs", "task": "summarize", "attempt": 2, "reason": "taskTimedOut"})
        );
    }

    #[test]
    fn effects_that_are_not_for_an_agent_map_to_nothing() {
        let effect = Effect::Pending {
            job: "docs".into(),
            task: "summarize".into(),
            reason: "no worker".into(),
        };
        assert_eq!(ControlMessage::from_effect(&effect), None);
    }

    #[test]
    fn an_assignment_carries_its_route_and_an_optional_spec() {
        let assign = TaskAssignment {
            job: "docs".into(),
            task: "summarize".into(),
            attempt: 1,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            route: Some(ResolvedRoute {
                route: "local".into(),
                backend: Backend::Ollama,
                endpoint: "http://ollama:11434".into(),
                model: "llama-8b".into(),
            }),
            task_spec: None,
        }
        .with_task_spec(TaskSpec {
            id: "summarize".into(),
            ..TaskSpec::default()
        });
        let msg = ControlMessage::Assign(Box::new(assign));
        let wire = serde_json::to_value(&msg).unwrap();
        assert_eq!(wire["type"], "assign");
        assert_eq!(wire["route"]["backend"], "ollama");
        assert_eq!(wire["taskSpec"]["id"], "summarize");
        assert_eq!(serde_json::from_value::<ControlMessage>(wire).unwrap(), msg);
    }
}
