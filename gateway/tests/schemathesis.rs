//! The gateway under generated requests: schemathesis (a property-based API tester, installed by
//! `scripts/schemathesis-testbin.sh`) reads the gateway's OpenAPI document and sends valid and
//! invalid requests to every operation, over HTTPS, with the gateway on the real API server.
//! Every answer must be documented, in the documented shape, never a 5xx, and within the request
//! timeout; invalid requests must be refused with a 4xx, requests without a valid token with 401.
//! The settings and the checks left out (with why) are in `gateway/tests/schemathesis.toml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use splai_gateway::server::{Gateway, Tokens, serve};

const TOKEN: &str = "token-of-tenant-st-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_good_and_bad_requests_get_documented_answers_and_never_a_server_error() {
    let tool = splai_testbed::installed("SPLAI_SCHEMATHESIS", "schemathesis-testbin.sh")
        .expect("schemathesis is installed (scripts/schemathesis-testbin.sh)");
    let (client, ns) = splai_testbed::namespace("gw-st").await.unwrap();
    splai_operator::crd::install(&client).await.unwrap();

    let tokens = format!("tenants:\n- {{token: {TOKEN}, tenant: st, namespace: {ns}}}\n");
    let work = tempfile::tempdir().unwrap();
    // As deployed: the gateway reads the operator's artifact store for the jobs' records.
    let store = format!("file://{}", work.path().join("artifacts").display());
    let gw = Gateway {
        client,
        tokens: Arc::new(Tokens::parse(&tokens).unwrap()),
        artifacts: Some(splai_operator::artifacts::Artifacts::open(&store).unwrap()),
    };
    let (tls, cert_pem) = splai_operator::tls::self_signed(&["127.0.0.1".into()]).unwrap();
    let ca_file = work.path().join("ca.crt");
    std::fs::write(&ca_file, cert_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, gw, Some(tls), std::future::pending()));

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let har = work.path().join("requests.har");
    let mut run = Command::new(&tool);
    run.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{base}/v1/openapi.json"))
        .arg("--tls-verify")
        .arg(&ca_file)
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--seed", "1", "--report", "har", "--report-har-path"])
        .arg(&har)
        .env("NO_COLOR", "1")
        .current_dir(work.path());
    let out = tokio::task::spawn_blocking(move || run.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Its report, with the reproducing commands of megabyte bodies cut short.
    for line in stdout.lines().chain(stderr.lines()) {
        let cut: String = line.chars().take(400).collect();
        println!("{cut}");
    }
    assert!(
        out.status.success(),
        "schemathesis found failures ({}); its report is above",
        out.status
    );
    // Every request it sent, read back: a run that sent little proves little, and every refusal
    // must say why in the API's one error shape.
    let har: Value = serde_json::from_slice(&std::fs::read(&har).expect("the HAR report")).unwrap();
    let entries = har["log"]["entries"].as_array().expect("HAR entries");
    let mut by_status = BTreeMap::<u64, usize>::new();
    for entry in entries {
        let status = entry["response"]["status"].as_u64().unwrap_or(0);
        *by_status.entry(status).or_default() += 1;
        let (method, url) = (&entry["request"]["method"], &entry["request"]["url"]);
        assert!((200..500).contains(&status), "{method} {url} got {status}");
        if status >= 400 {
            let text = entry["response"]["content"]["text"]
                .as_str()
                .unwrap_or_default();
            let body: Value = serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("{method} {url} got {status} without a JSON body ({e}): {text}")
            });
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.is_empty() && body["error"]["code"].is_string(),
                "{method} {url} got {status} without a code and a message: {text}"
            );
        }
    }
    let refused: usize = by_status.range(400..500).map(|(_, n)| n).sum();
    println!(
        "{} requests, {refused} refused with a 4xx and a message; by status: {by_status:?}",
        entries.len()
    );
    assert!(
        entries.len() >= 1_000,
        "schemathesis sent {} requests",
        entries.len()
    );
    for status in [200, 201, 202, 400, 401, 404, 405, 409, 422] {
        assert!(
            by_status.contains_key(&status),
            "no request got {status}: the run did not reach that part of the API"
        );
    }
}
