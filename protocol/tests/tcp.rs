//! The same agent and server over real TCP on loopback, as in production.

use std::time::Duration;

use splai_protocol::{
    AckMode, Agent, AgentConfig, ControlMessage, Error, Executor, Inbound, Outcome, Server,
    ServerConfig, TaskAssignment, TokioNet,
};
use splai_scheduler::Event;
use splai_scheduler::api::Capabilities;
use tokio::sync::mpsc;

struct Immediate;

impl Executor for Immediate {
    async fn run(&self, task: TaskAssignment) -> Outcome {
        Outcome::Succeeded {
            artifact_uri: Some(format!("mem://{}/{}", task.job, task.task)),
        }
    }
}

fn assignment() -> ControlMessage {
    ControlMessage::Assign(Box::new(TaskAssignment {
        job: "docs".into(),
        task: "summarize".into(),
        attempt: 1,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        route: None,
        task_spec: None,
    }))
}

/// The next event from the agent that is not a heartbeat.
async fn next_report(events: &mut mpsc::Receiver<Inbound>) -> Inbound {
    loop {
        let inbound = events.recv().await.expect("the server stopped");
        if !matches!(
            inbound,
            Inbound::Event {
                event: Event::Heartbeat(_),
                ..
            }
        ) {
            return inbound;
        }
    }
}

async fn round_trip() {
    let server = Server::bind(TokioNet, "127.0.0.1:0", ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let control = server.handle();
    let (events_tx, mut events) = mpsc::channel(64);
    tokio::spawn(server.serve(events_tx));

    let config = AgentConfig {
        heartbeat_interval: Duration::from_millis(20),
        ..AgentConfig::new("w1", addr, Capabilities::default())
    };
    let (agent, handle) = Agent::new(TokioNet, config, Immediate);
    let agent = tokio::spawn(agent.run());

    let Inbound::Event { worker, event, .. } = next_report(&mut events).await else {
        panic!("expected a registration");
    };
    assert_eq!(worker, "w1");
    assert!(matches!(
        event,
        Event::WorkerRegistered { incarnation: 1, .. }
    ));

    control.send("w1", assignment()).unwrap();
    let reports: Vec<_> = [
        next_report(&mut events).await,
        next_report(&mut events).await,
    ]
    .into_iter()
    .map(|inbound| match inbound {
        Inbound::Event { event, .. } => event,
        other => panic!("expected a report, got {other:?}"),
    })
    .collect();
    assert!(
        matches!(reports[0], Event::TaskStarted { .. }),
        "{reports:?}"
    );
    assert!(
        matches!(&reports[1], Event::TaskSucceeded { artifact_uri: Some(uri), .. } if uri == "mem://docs/summarize"),
        "{reports:?}"
    );

    handle.shutdown().unwrap();
    agent.await.unwrap();
    let Inbound::Disconnected { worker, reason, .. } = next_report(&mut events).await else {
        panic!("expected the connection to end");
    };
    assert_eq!(worker.as_deref(), Some("w1"));
    // A clean close reads as end-of-stream; if the kernel resets the socket first it reads as a
    // reset. Either way the server reports the worker gone, which is what matters here.
    let ended = match &reason {
        Error::Closed => true,
        Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    };
    assert!(ended, "{reason}");
    let refused = control.send("w1", assignment()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "worker `w1` is not connected to this control plane"
    );
    assert!(handle.shutdown().is_err());
}

#[tokio::test]
async fn an_agent_and_the_server_talk_over_real_tcp() {
    // A guard against hanging forever on a regression, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(60), round_trip())
        .await
        .expect("the round trip hung");
}

async fn unanswered_report_moves_to_the_next_endpoint() {
    let by_driver = ServerConfig {
        ack: AckMode::ByDriver,
        ..ServerConfig::default()
    };
    let first = Server::bind(TokioNet, "127.0.0.1:0", by_driver.clone())
        .await
        .unwrap();
    let second = Server::bind(TokioNet, "127.0.0.1:0", by_driver)
        .await
        .unwrap();
    let endpoints = format!(
        "{},{}",
        first.local_addr().unwrap(),
        second.local_addr().unwrap()
    );
    let (first_control, second_control) = (first.handle(), second.handle());
    let (first_tx, mut first_events) = mpsc::channel(64);
    let (second_tx, mut second_events) = mpsc::channel(64);
    tokio::spawn(first.serve(first_tx));
    tokio::spawn(second.serve(second_tx));

    let config = AgentConfig {
        heartbeat_interval: Duration::from_millis(20),
        dead_after: Duration::from_millis(300),
        ..AgentConfig::new("w1", endpoints, Capabilities::default())
    };
    let (agent, handle) = Agent::new(TokioNet, config, Immediate);
    let agent = tokio::spawn(agent.run());

    // The first control plane receives everything but never answers: it "dies" before making
    // anything durable.
    let Inbound::Event { event, .. } = next_report(&mut first_events).await else {
        panic!("expected a registration");
    };
    assert!(matches!(event, Event::WorkerRegistered { .. }));
    first_control.send("w1", assignment()).unwrap();
    let mut succeeded_at_first = false;
    while !succeeded_at_first {
        if let Inbound::Event { event, .. } = next_report(&mut first_events).await {
            succeeded_at_first = matches!(event, Event::TaskSucceeded { .. });
        }
    }

    // Unanswered, the agent gives up on the first endpoint, dials the second, registers there
    // and sends the report again. The second answers, so the report is then forgotten.
    let mut resent = false;
    while !resent {
        match next_report(&mut second_events).await {
            Inbound::Event {
                event,
                connection,
                asks,
                worker,
            } => {
                if asks {
                    second_control.ack(&worker, connection).unwrap();
                }
                resent = matches!(event, Event::TaskSucceeded { .. });
            }
            Inbound::Disconnected { .. } => {}
        }
    }
    // An answer for a connection that is no longer current is dropped, not misdelivered.
    second_control.ack("w1", u64::MAX).unwrap();
    handle.shutdown().unwrap();
    agent.await.unwrap();
}

#[tokio::test]
async fn an_unanswered_report_is_sent_again_to_the_next_control_plane_endpoint() {
    // A guard against hanging forever on a regression, not a timing assertion.
    tokio::time::timeout(
        Duration::from_secs(60),
        unanswered_report_moves_to_the_next_endpoint(),
    )
    .await
    .expect("the agent never reached the second endpoint");
}
