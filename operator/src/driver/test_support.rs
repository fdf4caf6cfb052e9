//! What the driver's tests share: a driver with an empty cluster, a one-task job, and agent
//! messages from worker `w1`.

use std::sync::Arc;

use splai_protocol::Inbound;
use splai_scheduler::api::{JobSpec, Resources, TaskSpec};
use splai_scheduler::{Event, Heartbeat, Settings, Timestamp};

use super::{Driver, DriverConfig, Input, Listed};
use crate::metrics::Metrics;
use crate::resources::{SPLAIJob, SPLAIJobSpec};

pub fn config() -> DriverConfig {
    DriverConfig {
        worker_namespace: "sys".into(),
        worker_refresh_ms: 30_000,
    }
}

pub fn driver() -> Driver {
    let metrics = Arc::new(Metrics::default());
    Driver::rebuild(
        config(),
        Settings::default(),
        metrics,
        Listed::default(),
        Timestamp(1_000),
    )
}

/// Job `ns/job-{i:04}`, with one small task, `only`.
pub fn job(i: usize) -> SPLAIJob {
    let spec = JobSpec {
        tenant: "t".into(),
        tasks: vec![TaskSpec {
            id: "only".into(),
            resources: Resources {
                cpu_millis: 100,
                memory_mib: 64,
                gpus: 0,
            },
            ..TaskSpec::default()
        }],
        ..JobSpec::default()
    };
    let mut job = SPLAIJob::new(&format!("job-{i:04}"), SPLAIJobSpec(spec));
    job.metadata.namespace = Some("ns".into());
    job.metadata.uid = Some(format!("0f2504e0-4f89-11d3-9a0c-{i:012}"));
    job
}

/// A heartbeat from `w1` at 2 s, asking for an answer on `connection`.
pub fn heartbeat(d: &mut Driver, connection: u64) {
    let event = Event::Heartbeat(Heartbeat {
        worker: "w1".into(),
        incarnation: 1,
        ..Heartbeat::default()
    });
    d.input(
        Input::Agent(Inbound::Event {
            worker: "w1".into(),
            event,
            connection,
            asks: true,
        }),
        Timestamp(2_000),
    );
}

/// An event from `w1`'s agent, needing no answer.
pub fn from_agent(d: &mut Driver, event: Event, now: u64) {
    let input = Input::Agent(Inbound::Event {
        worker: "w1".into(),
        event,
        connection: 1,
        asks: false,
    });
    d.input(input, Timestamp(now));
}
