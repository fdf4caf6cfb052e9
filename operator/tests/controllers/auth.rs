//! Agents prove which node they run on: each registers with a real service-account token bound
//! to a pod on its node, which the operator has the API server review.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use splai_operator::agent_auth::AUDIENCE;
use splai_protocol::{
    AgentMessage, ControlMessage, Credential, DEFAULT_MAX_FRAME, FrameReader, FrameWriter,
};
use splai_scheduler::api::{AttemptRef, JobPhase, JobSpec};

use crate::harness::{Harness, caps, task};

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A token of service account `account`, for the operator's audience, bound to a pod on node
/// `node`, as the kubelet projects one into an agent's pod. The node and the pod are only
/// objects here: nothing runs them.
async fn node_token(h: &Harness, account: &str, node: &str) -> String {
    let nodes: Api<Node> = Api::all(h.client.clone());
    if nodes.get_opt(node).await.unwrap().is_none() {
        nodes
            .create(
                &PostParams::default(),
                &Node {
                    metadata: named(node),
                    ..Node::default()
                },
            )
            .await
            .unwrap();
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(h.client.clone(), &h.ns);
    if accounts.get_opt(account).await.unwrap().is_none() {
        let sa = ServiceAccount {
            metadata: named(account),
            ..ServiceAccount::default()
        };
        accounts.create(&PostParams::default(), &sa).await.unwrap();
    }
    let pod = Pod {
        metadata: named(&format!("{account}-on-{node}")),
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            service_account_name: Some(account.to_owned()),
            containers: vec![Container {
                name: "agent".into(),
                image: Some("splai-worker".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let pod = Api::<Pod>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![AUDIENCE.to_owned()]),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

type Reader = FrameReader<tokio::io::ReadHalf<tokio::net::TcpStream>>;
type Writer = FrameWriter<tokio::io::WriteHalf<tokio::net::TcpStream>>;

/// Registers as `worker` over a bare connection, as any program that reaches the port could;
/// gives the operator's answer and the connection.
async fn register(
    endpoint: &str,
    worker: &str,
    credential: Option<&str>,
) -> (ControlMessage, Reader, Writer) {
    let stream = tokio::net::TcpStream::connect(endpoint).await.unwrap();
    let (read, write) = tokio::io::split(stream);
    let (mut reader, mut writer) = (
        FrameReader::new(read, DEFAULT_MAX_FRAME),
        FrameWriter::new(write, DEFAULT_MAX_FRAME),
    );
    let hello = AgentMessage::Register {
        worker: worker.to_owned(),
        capabilities: caps(1000),
        incarnation: 1,
        credential: credential.map(|c| Credential(c.to_owned())),
    };
    writer.send(&hello).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), reader.recv::<ControlMessage>())
        .await
        .expect("an answer")
        .unwrap();
    (answer, reader, writer)
}

fn refusal(answer: ControlMessage) -> String {
    match answer {
        ControlMessage::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_speaks_only_for_the_node_its_token_was_issued_on() {
    let mut h = Harness::new("agent-auth").await.unwrap();
    h.agent_account = Some(format!("system:serviceaccount:{}:splai-worker", h.ns));
    let (node_a, node_b) = (format!("{}-a", h.ns), format!("{}-b", h.ns));
    let token_a = node_token(&h, "splai-worker", &node_a).await;
    let token_b = node_token(&h, "splai-worker", &node_b).await;
    let intruder = node_token(&h, "intruder", &node_a).await;
    let metrics = h.operator("op-0");
    let endpoint = h.endpoints["op-0"].clone();

    // Node B's agent, with its own token, is accepted and runs a task that never ends.
    h.credentials.insert(node_b.clone(), Credential(token_b));
    h.agent(&node_b, caps(4000));
    h.submit(
        "work",
        JobSpec {
            tenant: "team-a".into(),
            tasks: vec![task("forever", &["hang"])],
            ..JobSpec::default()
        },
    )
    .await
    .unwrap();
    h.wait_agent_running(&node_b, 1).await.unwrap();

    // Refused: no credential; A's token claiming B; another account's token; no token at all.
    let (answer, ..) = register(&endpoint, &node_a, None).await;
    assert!(refusal(answer).contains("no credential"));
    let (answer, ..) = register(&endpoint, &node_b, Some(&token_a)).await;
    let reason = refusal(answer);
    assert!(
        reason.contains(&format!("issued on node `{node_a}`"))
            && reason.contains(&format!("claims worker `{node_b}`")),
        "{reason}"
    );
    let (answer, ..) = register(&endpoint, &node_a, Some(&intruder)).await;
    assert!(refusal(answer).contains("intruder"));
    let (answer, ..) = register(&endpoint, &node_a, Some("not-a-token")).await;
    assert!(refusal(answer).contains("did not accept the token"));
    for reason in [
        "no_credential",
        "other_node",
        "wrong_account",
        "not_authenticated",
    ] {
        assert_eq!(metrics.refused_agents(reason), 1, "{reason}");
    }

    // A, with its own token, is accepted, and its report on B's attempt is fenced and counted.
    let (answer, _reader, mut writer) = register(&endpoint, &node_a, Some(&token_a)).await;
    assert_eq!(answer, ControlMessage::Ack);
    let forged = AgentMessage::Succeeded {
        worker: node_a.clone(),
        attempt: AttemptRef {
            job: format!("{}/work", h.ns),
            task: "forever".into(),
            attempt: 1,
        },
        artifact_uri: Some("mem://forged".into()),
    };
    writer.send(&forged).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metrics.ignored("stale_report") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = h.jobs().get("work").await.unwrap();
    assert_eq!(job.status.unwrap().job.phase, JobPhase::Running);
    // B's own agent was never refused, whenever it (re)connected: each refusal above counted once.
    for reason in [
        "no_credential",
        "other_node",
        "wrong_account",
        "not_authenticated",
    ] {
        assert_eq!(metrics.refused_agents(reason), 1, "{reason}");
    }
    h.shutdown().await;
}
