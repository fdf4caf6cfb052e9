//! The agent and the server over TCP with TLS, as in a cluster: the agent verifies the server's
//! certificate for the host it dials, and proves its name with a credential the server checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use splai_protocol::{
    Agent, AgentConfig, Authenticate, Credential, CredentialSource, Error, Executor, Inbound,
    Outcome, Server, ServerConfig, TaskAssignment, TlsNet,
};
use splai_scheduler::Event;
use splai_scheduler::api::Capabilities;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig as TlsConfig, crypto};

struct Idle;

impl Executor for Idle {
    async fn run(&self, _: TaskAssignment) -> Outcome {
        std::future::pending().await
    }
}

/// Accepts `w1` with the credential `letmein`, and no one else.
#[derive(Debug)]
struct OnePassword;

impl Authenticate for OnePassword {
    fn authenticate<'a>(
        &'a self,
        worker: &'a str,
        credential: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            match (worker, credential) {
                ("w1", Some("letmein")) => Ok(()),
                _ => Err(format!("{worker} may not register")),
            }
        })
    }
}

/// A certificate for 127.0.0.1 and a server configuration that presents it.
fn server_tls() -> (CertificateDer<'static>, Arc<TlsConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key =
        PrivateKeyDer::from_pem_slice(certified.signing_key.serialize_pem().as_bytes()).unwrap();
    let config = TlsConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    (cert, Arc::new(config))
}

fn client_trusting(root: CertificateDer<'static>) -> TlsNet {
    let mut roots = RootCertStore::empty();
    roots.add(root).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsNet::client(Arc::new(config))
}

fn agent(worker: &str, addr: &str, credential: &str, net: TlsNet) -> splai_protocol::AgentHandle {
    let config = AgentConfig {
        heartbeat_interval: Duration::from_millis(20),
        credential: Some(CredentialSource::Fixed(Credential(credential.to_owned()))),
        ..AgentConfig::new(worker, addr, Capabilities::default())
    };
    let (agent, handle) = Agent::new(net, config, Idle);
    tokio::spawn(agent.run());
    handle
}

/// Waits until the agent's last error satisfies `seen`.
async fn last_error(handle: &splai_protocol::AgentHandle, seen: impl Fn(&Error) -> bool) {
    let mut status = handle.watch();
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.last_error.as_deref().is_some_and(&seen)),
    )
    .await;
    assert!(waited.is_ok(), "{:?}", handle.watch().borrow());
}

#[tokio::test]
async fn over_tls_only_an_agent_that_trusts_the_server_and_shows_its_credential_gets_in() {
    let (cert, tls) = server_tls();
    let config = ServerConfig {
        authenticate: Some(Arc::new(OnePassword)),
        ..ServerConfig::default()
    };
    let server = Server::bind(TlsNet::server(tls), "127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (events_tx, mut events) = mpsc::channel(64);
    tokio::spawn(server.serve(events_tx));

    // The right certificate and credential: registered, heartbeating.
    let good = agent("w1", &addr, "letmein", client_trusting(cert.clone()));
    let Some(Inbound::Event { worker, event, .. }) = events.recv().await else {
        panic!("expected a registration");
    };
    assert_eq!(worker, "w1");
    assert!(matches!(event, Event::WorkerRegistered { .. }), "{event:?}");
    assert!(good.watch().wait_for(|s| s.connected).await.is_ok());

    // A server it does not trust: the agent never sends a byte of its credential.
    let (other, _) = server_tls();
    let wary = agent("w1", &addr, "letmein", client_trusting(other));
    last_error(&wary, |e| e.to_string().contains("certificate")).await;

    // Trusted server, wrong credential: told why, never registered.
    let refused = agent("w2", &addr, "guess", client_trusting(cert));
    last_error(
        &refused,
        |e| matches!(e, Error::Refused { reason, .. } if reason == "w2 may not register"),
    )
    .await;
    while let Ok(inbound) = events.try_recv() {
        if let Inbound::Event { worker, .. } = inbound {
            assert_eq!(worker, "w1", "only w1 ever registered");
        }
    }
}
