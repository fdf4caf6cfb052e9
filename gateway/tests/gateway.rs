//! The gateway against the real API server: tenant isolation, authentication, bad requests, taken
//! names, deletion, trace IDs, the OpenAPI document, and the whole flow from the `splai` CLI
//! through the gateway and the operator to real `splai-worker` processes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use reqwest::StatusCode;
use serde_json::{Value, json};
use splai_gateway::api::{ErrorBody, JobView};
use splai_gateway::server::{Gateway, Tokens, router, serve};
use splai_testbed::process::{Reaped, WorkerCommand, workspace_binary};

async fn install_crds(client: &Client) {
    splai_operator::crd::install(client).await.unwrap();
}

const TOKEN_A: &str = "token-of-tenant-a-0123456789";
const TOKEN_B: &str = "token-of-tenant-b-0123456789";
const TOKEN_C: &str = "token-of-tenant-c-0123456789";

/// A gateway for tenants `a` (namespace `ns_a`) and `b` (`ns_b`); its base URL.
async fn gateway(client: &Client, ns_a: &str, ns_b: &str) -> String {
    gateway_for(client, &[("a", TOKEN_A, ns_a), ("b", TOKEN_B, ns_b)]).await
}

/// A gateway, without an artifact store, for `(tenant, token, namespace)`s; its base URL.
async fn gateway_for(client: &Client, tenants: &[(&str, &str, &str)]) -> String {
    let mut yaml = String::from("tenants:\n");
    for (tenant, token, ns) in tenants {
        yaml.push_str(&format!(
            "- {{token: {token}, tenant: {tenant}, namespace: {ns}}}\n"
        ));
    }
    let app = router(Gateway {
        client: client.clone(),
        tokens: Arc::new(Tokens::parse(&yaml).unwrap()),
        artifacts: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn job(name: &str) -> Value {
    json!({"name": name, "spec": {"tasks": [
        {"id": "hello", "kind": "command", "command": ["sh", "-c", "echo hello"],
         "resources": {"cpuMillis": 500, "memoryMib": 64}}
    ]}})
}

async fn error_of(response: reqwest::Response) -> (StatusCode, ErrorBody) {
    let status = response.status();
    let body: ErrorBody = response.json().await.expect("errors are JSON in one shape");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_only_its_own_jobs_and_bad_requests_get_clear_errors() {
    let (client, ns_a) = splai_testbed::namespace("gw-a").await.unwrap();
    let (_, ns_b) = splai_testbed::namespace("gw-b").await.unwrap();
    install_crds(&client).await;
    let base = gateway(&client, &ns_a, &ns_b).await;
    let http = reqwest::Client::new();

    let created = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .json(&job("secret-plan"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        StatusCode::CREATED,
        "{:?}",
        created.text().await
    );
    let view: JobView = created.json().await.unwrap();
    assert_eq!(view.tenant, "a");
    // YAML works too.
    let yaml =
        "name: from-yaml\nspec:\n  tasks:\n  - {id: t, kind: command, command: [\"true\"]}\n";
    let created = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // Tenant b can neither see, list, cancel nor delete tenant a's job, nor read its records.
    for (method, path) in [
        ("GET", "/v1/jobs/secret-plan"),
        ("POST", "/v1/jobs/secret-plan/cancel"),
        ("DELETE", "/v1/jobs/secret-plan"),
        ("GET", "/v1/jobs/secret-plan/artifacts"),
        ("GET", "/v1/jobs/secret-plan/records"),
        ("GET", "/v1/jobs/secret-plan/watch"),
    ] {
        let req = http.request(method.parse().unwrap(), format!("{base}{path}"));
        let (status, body) = error_of(req.bearer_auth(TOKEN_B).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(body.error.code, "not_found");
    }
    // Its owner may ask for its records, which a gateway without the artifact store cannot read.
    let (status, body) = error_of(
        http.get(format!("{base}/v1/jobs/secret-plan/records"))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(body.error.code, "unavailable");
    assert!(body.error.message.contains("--artifacts"), "{body:?}");
    let listed: Vec<JobView> = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(TOKEN_B)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let listed: Vec<JobView> = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    // A tenant cannot submit in another's name.
    let mut other = job("impostor");
    other["spec"]["tenant"] = json!("a");
    let (status, body) = error_of(
        http.post(format!("{base}/v1/jobs"))
            .bearer_auth(TOKEN_B)
            .json(&other)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.error.message.contains("your token is tenant `b`"),
        "{body:?}"
    );

    // Missing and wrong tokens.
    let (status, body) = error_of(http.get(format!("{base}/v1/jobs")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.error.message.contains("Bearer"), "{body:?}");
    let (status, _) = error_of(
        http.get(format!("{base}/v1/jobs"))
            .bearer_auth("not-a-token-at-all-000000")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Malformed, unknown fields, bad names, oversized.
    let bad = |body: Vec<u8>| {
        http.post(format!("{base}/v1/jobs"))
            .bearer_auth(TOKEN_A)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = error_of(bad(b"{not json".to_vec()).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.error.message.contains("the JSON body"), "{body:?}");
    let mut unknown = job("typo");
    unknown["spec"]["taks"] = json!([]);
    let (status, body) = error_of(bad(unknown.to_string().into_bytes()).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.error.message.contains("unknown field `taks`"),
        "{body:?}"
    );
    let (status, body) =
        error_of(bad(job("Bad_Name").to_string().into_bytes()).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.error.message.contains("is not valid"), "{body:?}");
    // A name already taken is a conflict (see also the test of taken names).
    let (status, body) = error_of(
        bad(job("secret-plan").to_string().into_bytes())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.error.message.contains("already exists"), "{body:?}");

    // Tenant a may cancel its own job.
    let cancelled = http
        .post(format!("{base}/v1/jobs/secret-plan/cancel"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);

    // Oversized, on a connection of its own: the gateway reads and drops the rest of the body,
    // then answers 413.
    let oversized = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .header("content-type", "application/json")
        .body(vec![b' '; splai_gateway::server::MAX_BODY + 1024])
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(oversized).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body.error.code, "too_large");

    // Unknown routes and methods get the same error shape.
    let nowhere = http.get(format!("{base}/v1/nowhere")).send().await.unwrap();
    let (status, body) = error_of(nowhere).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let put = http.put(format!("{base}/v1/jobs")).send().await.unwrap();
    let (status, body) = error_of(put).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "not_allowed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deletes_its_own_job_but_never_another_tenants() {
    let (client, ns_a) = splai_testbed::namespace("gw-del-a").await.unwrap();
    let (_, ns_b) = splai_testbed::namespace("gw-del-b").await.unwrap();
    install_crds(&client).await;
    let base = gateway(&client, &ns_a, &ns_b).await;
    let http = reqwest::Client::new();
    let submit = |token: &'static str, name: &str| {
        http.post(format!("{base}/v1/jobs"))
            .bearer_auth(token)
            .json(&job(name))
            .send()
    };
    assert_eq!(
        submit(TOKEN_A, "mine").await.unwrap().status(),
        StatusCode::CREATED
    );
    // Tenant b's own job of the same name lives in its namespace, untouched by a's delete.
    assert_eq!(
        submit(TOKEN_B, "mine").await.unwrap().status(),
        StatusCode::CREATED
    );
    let delete = |token: &'static str| {
        http.delete(format!("{base}/v1/jobs/mine"))
            .bearer_auth(token)
            .send()
    };
    let get = |token: &'static str| {
        http.get(format!("{base}/v1/jobs/mine"))
            .bearer_auth(token)
            .send()
    };

    // b deletes its own; a's is still there.
    let deleted = delete(TOKEN_B).await.unwrap();
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    let view: JobView = deleted.json().await.unwrap();
    assert_eq!((view.name.as_str(), view.tenant.as_str()), ("mine", "b"));
    let (status, body) = error_of(get(TOKEN_B).await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:?}");
    assert_eq!(get(TOKEN_A).await.unwrap().status(), StatusCode::OK);

    // A job in a's namespace without a's label is not a's: a cannot delete it.
    let jobs: kube::Api<splai_operator::SPLAIJob> = kube::Api::namespaced(client.clone(), &ns_a);
    let mut spec = job("x")["spec"].clone();
    spec["tenant"] = json!("someone-else");
    let foreign = splai_operator::SPLAIJob::new(
        "foreign",
        splai_operator::SPLAIJobSpec(serde_json::from_value(spec).unwrap()),
    );
    jobs.create(&kube::api::PostParams::default(), &foreign)
        .await
        .unwrap();
    let (status, body) = error_of(
        http.delete(format!("{base}/v1/jobs/foreign"))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body.error.code, "not_found");
    assert!(jobs.get_opt("foreign").await.unwrap().is_some());

    // a deletes its own: gone, and its name is free again.
    assert_eq!(
        delete(TOKEN_A).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(get(TOKEN_A).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert!(jobs.get_opt("mine").await.unwrap().is_none());
    let (status, _) = error_of(delete(TOKEN_A).await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        submit(TOKEN_A, "mine").await.unwrap().status(),
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_a_taken_name_says_whose_it_is_and_how_to_free_it() {
    let (client, ns) = splai_testbed::namespace("gw-taken").await.unwrap();
    install_crds(&client).await;
    // Two tenants that share one namespace.
    let base = gateway_for(&client, &[("a", TOKEN_A, &ns), ("c", TOKEN_C, &ns)]).await;
    let http = reqwest::Client::new();
    let submit = |token: &'static str| {
        http.post(format!("{base}/v1/jobs"))
            .bearer_auth(token)
            .json(&job("hello"))
            .send()
    };
    assert_eq!(submit(TOKEN_A).await.unwrap().status(), StatusCode::CREATED);
    let (status, body) = error_of(submit(TOKEN_A).await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body.error.code, "conflict");
    assert_eq!(
        body.error.message,
        format!(
            "job `hello` already exists in namespace `{ns}`; delete it with `splai delete hello` or change metadata.name"
        )
    );
    // The other tenant learns only that the name is taken, not whose job it is.
    let (status, body) = error_of(submit(TOKEN_C).await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body.error.message.contains("by a job you cannot see"),
        "{body:?}"
    );
    assert!(!body.error.message.contains("splai delete"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_job_shows_at_once_the_trace_id_the_operator_derives_from_its_uid() {
    let (client, ns) = splai_testbed::namespace("gw-trace").await.unwrap();
    install_crds(&client).await;
    let base = gateway_for(&client, &[("a", TOKEN_A, &ns)]).await;
    let created = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .json(&job("traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let view: JobView = created.json().await.unwrap();
    // No operator runs here: the ID is the gateway's own derivation, which must be the
    // operator's (its uid's hex digits).
    let stored: splai_operator::SPLAIJob = kube::Api::namespaced(client.clone(), &ns)
        .get("traced")
        .await
        .unwrap();
    let uid_hex: String = stored.metadata.uid.clone().unwrap().replace('-', "");
    assert_eq!(view.trace_id.as_deref(), Some(uid_hex.as_str()));
    assert_eq!(
        view.trace_id.as_deref(),
        Some(splai_operator::driver::trace_id_of(&stored).as_str())
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let doc = splai_gateway::openapi::document();
    for (path, method) in [
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{name}", "get"),
        ("/v1/jobs/{name}", "delete"),
        ("/v1/jobs/{name}/cancel", "post"),
        ("/v1/jobs/{name}/watch", "get"),
        ("/v1/jobs/{name}/artifacts", "get"),
        ("/v1/jobs/{name}/records", "get"),
        ("/v1/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path].get(method).is_some(),
            "{method} {path} is not documented"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_over_https_or_through_the_kubeconfig_and_watches_real_workers_complete_the_job()
 {
    use splai_operator::metrics::Metrics;
    use splai_operator::run::{OperatorConfig, run};

    let (client, ns) = splai_testbed::namespace("gw-e2e").await.unwrap();
    install_crds(&client).await;
    let dir = std::env::temp_dir().join(format!("splai-gw-e2e-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let endpoint = splai_testbed::free_endpoint();
    let config = OperatorConfig {
        settings: splai_scheduler::Settings::default(),
        ..OperatorConfig::in_namespace(
            &ns,
            endpoint.clone(),
            format!("file://{}/records", dir.display()),
        )
    };
    let operator = tokio::spawn(run(client.clone(), config, Arc::new(Metrics::default())));
    let worker_bin = workspace_binary("splai-worker", "splai-worker");
    let artifacts = format!("file://{}/artifacts", dir.display());
    let kubeconfig = splai_testbed::shared().unwrap().kubeconfig();
    let _workers: Vec<Reaped> = ["node-1", "node-2"]
        .iter()
        .map(|name| {
            let work_dir = dir.join(format!("work-{name}"));
            let command = WorkerCommand {
                bin: &worker_bin,
                name,
                control_plane: &endpoint,
                cpu_millis: 2000,
                artifacts: &artifacts,
                work_dir: &work_dir,
                register_in: None,
                kubeconfig,
            };
            Reaped::spawn(&mut command.command()).unwrap()
        })
        .collect();
    // The gateway as its binary runs it by default: HTTPS with a certificate made at start.
    let tokens = Tokens::parse(&format!(
        "tenants:\n- {{token: {TOKEN_A}, tenant: a, namespace: {ns}}}\n"
    ))
    .unwrap();
    let (tls, cert_pem) = splai_operator::tls::self_signed(&["127.0.0.1".into()]).unwrap();
    let ca_file = dir.join("gateway-ca.pem");
    std::fs::write(&ca_file, cert_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    // It reads the operator's store for the jobs' records.
    let store =
        splai_operator::artifacts::Artifacts::open(&format!("file://{}/records", dir.display()))
            .unwrap();
    let gw = Gateway {
        client: client.clone(),
        tokens: Arc::new(tokens),
        artifacts: Some(store),
    };
    tokio::spawn(serve(listener, gw, Some(tls), std::future::pending()));
    let ca_file = ca_file.to_str().unwrap().to_owned();
    let file = dir.join("job.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: splai.io/v1alpha1
kind: SPLAIJob
metadata:
  name: word-count
spec:
  tasks:
    - {id: fetch, kind: command, command: [sh, -c, "printf 'a b c\nd e\n' > text.txt"], resources: {cpuMillis: 500, memoryMib: 64}}
    - {id: count, kind: command, command: [sh, -c, "echo 5 words"], resources: {cpuMillis: 500, memoryMib: 64}}
  dependencies:
    - {task: count, dependsOn: [fetch]}
"#,
    )
    .unwrap();
    let cli = env!("CARGO_BIN_EXE_splai");
    let out = tokio::task::spawn_blocking({
        let (base, file, ca_file) = (base.clone(), file.clone(), ca_file.clone());
        move || {
            let mut child = Command::new(cli)
                .args(["--server", &base, "--token", TOKEN_A, "--ca-file", &ca_file])
                .arg("submit")
                .arg(&file)
                .arg("--watch")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // A guard against hanging forever, not a timing assertion.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while child.try_wait().unwrap().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Submitted once, with the trace ID the operator then shows in the job's status.
    assert_eq!(stdout.matches("submitted").count(), 1, "{stdout}");
    let trace = stdout
        .split_once("submitted word-count (trace ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(trace, _)| trace.to_owned())
        .unwrap_or_else(|| panic!("no trace ID: {stdout}"));
    let jobs: kube::Api<splai_operator::SPLAIJob> = kube::Api::namespaced(client.clone(), &ns);
    let done = jobs.get("word-count").await.unwrap();
    let shown = done.status.as_ref().and_then(|s| s.job.trace_id.as_ref());
    assert_eq!(shown, Some(&trace));
    assert!(stdout.contains("Completed: 2/2 succeeded"), "{stdout}");
    let result = format!(
        "result: file://{}/artifacts/jobs/{ns}/word-count/count/1/",
        dir.display()
    );
    assert!(stdout.contains(&result), "{stdout}");
    let count = PathBuf::from(format!(
        "{}/artifacts/jobs/{ns}/word-count/count/1/stdout.log",
        dir.display()
    ));
    assert_eq!(std::fs::read_to_string(count).unwrap(), "5 words\n");
    let fetched = PathBuf::from(format!(
        "{}/artifacts/jobs/{ns}/word-count/fetch/1/out/text.txt",
        dir.display()
    ));
    assert_eq!(std::fs::read_to_string(fetched).unwrap(), "a b c\nd e\n");

    // get, list and explain through the gateway.
    let run_cli = |args: &[&str]| {
        let out = Command::new(cli)
            .args(["--server", &base, "--token", TOKEN_A, "--ca-file", &ca_file])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run_cli(&["get", "word-count"]).contains("Completed"));
    assert!(run_cli(&["list"]).contains("word-count"));
    // A finished task's attempts, from the records the gateway reads: outcome and worker, the
    // score terms, the runner-up and what it lost on.
    let explained = run_cli(&["explain", "word-count", "count"]);
    assert!(
        explained.starts_with("count attempt 1: Succeeded on node-"),
        "{explained}"
    );
    for part in [
        "placed: splai chose node-",
        "queue_penalty",
        "runner-up node-",
        "losing",
    ] {
        assert!(explained.contains(part), "{part}: {explained}");
    }
    // What `kubectl describe` shows: the ended job keeps each task's worker and score.
    let status = done.status.clone().unwrap();
    assert_eq!(status.job.tasks.len(), 2, "{:?}", status.job.tasks);
    for t in &status.job.tasks {
        assert!(
            t.worker.as_deref().is_some_and(|w| w.starts_with("node-")),
            "{t:?}"
        );
        assert!(
            t.score.as_deref().is_some_and(|s| s.contains("runner-up")),
            "{t:?}"
        );
    }
    // Without the task: the last attempt of each, from the status.
    let whole = run_cli(&["explain", "word-count"]);
    assert!(
        whole.contains("fetch attempt 1: Succeeded on node-"),
        "{whole}"
    );
    assert!(
        whole.contains("count attempt 1: Succeeded on node-"),
        "{whole}"
    );

    // The same file again: the name is taken, and the CLI says how to free it.
    let again = Command::new(cli)
        .args(["--server", &base, "--token", TOKEN_A, "--ca-file", &ca_file])
        .arg("submit")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!(
            "job `word-count` already exists in namespace `{ns}`; delete it with `splai delete word-count`"
        )),
        "{stderr}"
    );

    // Without the gateway's certificate the CLI refuses to send the token, and says why.
    let out = Command::new(cli)
        .args(["--server", &base, "--token", TOKEN_A, "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ca-file"), "{stderr}");

    // The kubeconfig fallback: no --server, the same commands against the API server.
    let kubeconfig = splai_testbed::shared().unwrap().kubeconfig().to_owned();
    let kube_ns = ns.clone();
    let kube_cli = move |args: &[&str]| {
        Command::new(cli)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("SPLAI_SERVER")
            .args(["--namespace", &kube_ns])
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |out: std::process::Output| {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    assert!(ok(kube_cli(&["get", "word-count"])).contains("Completed"));
    assert!(ok(kube_cli(&["list"])).contains("word-count"));
    // The records read straight from the store the job's recordsUri names.
    let explained = ok(kube_cli(&["explain", "word-count", "fetch"]));
    assert!(
        explained.starts_with("fetch attempt 1: Succeeded on node-"),
        "{explained}"
    );
    assert!(
        explained.contains("placed: splai chose node-"),
        "{explained}"
    );
    let echo = dir.join("echo.yaml");
    std::fs::write(
        &echo,
        "apiVersion: splai.io/v1alpha1\nkind: SPLAIJob\nmetadata: {name: echo}\nspec:\n  tenant: a\n  tasks:\n    - {id: say, kind: command, command: [echo, hi], resources: {cpuMillis: 500, memoryMib: 64}}\n",
    )
    .unwrap();
    let echo = echo.to_str().unwrap().to_owned();
    let watched = tokio::task::spawn_blocking({
        let kube_cli = kube_cli.clone();
        move || ok(kube_cli(&["submit", &echo, "--watch"]))
    })
    .await
    .unwrap();
    assert!(watched.contains("Completed: 1/1 succeeded"), "{watched}");
    let sleeper = dir.join("sleeper.yaml");
    std::fs::write(
        &sleeper,
        "apiVersion: splai.io/v1alpha1\nkind: SPLAIJob\nmetadata: {name: sleeper}\nspec:\n  tenant: a\n  tasks:\n    - {id: nap, kind: command, command: [sleep, '300'], resources: {cpuMillis: 500, memoryMib: 64}}\n",
    )
    .unwrap();
    ok(kube_cli(&["submit", sleeper.to_str().unwrap()]));
    ok(kube_cli(&["cancel", "sleeper"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = ok(kube_cli(&["get", "sleeper"]));
        if got.contains("Canceled") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never canceled: {got}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Delete, through the gateway and through the kubeconfig: the operator's finalizer lets
    // the jobs go, and their names are free again.
    run_cli(&["delete", "word-count"]);
    ok(kube_cli(&["delete", "sleeper"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for name in ["word-count", "sleeper"] {
        while jobs.get_opt(name).await.unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "{name} never went");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let out = Command::new(cli)
        .args(["--server", &base, "--token", TOKEN_A, "--ca-file", &ca_file])
        .arg("get")
        .arg("word-count")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(run_cli(&["submit", file.to_str().unwrap()]).contains("submitted word-count"));

    operator.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_connect_and_stall_hold_up_no_other_client() {
    let (client, _ns) = splai_testbed::namespace("gw-stall").await.unwrap();
    let tokens = Tokens::parse(&format!(
        "tenants:\n- {{token: {TOKEN_A}, tenant: a, namespace: a}}\n"
    ))
    .unwrap();
    let (tls, cert_pem) = splai_operator::tls::self_signed(&["127.0.0.1".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway {
        client,
        tokens: Arc::new(tokens),
        artifacts: None,
    };
    tokio::spawn(serve(listener, gw, Some(tls), std::future::pending()));
    // Thirty connections that never start their TLS handshake: served one at a time, each would
    // hold the door for the 10 s handshake limit, five minutes in all.
    let mut stalled = Vec::new();
    for _ in 0..30 {
        stalled.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    // A guard against hanging, far above what either design needs when it works: it fails only
    // if the stalled connections are waited out one after another.
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        http.get(format!("https://{addr}/healthz")).send(),
    )
    .await
    .expect("a stalled client held up the others")
    .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "ok");
    drop(stalled);
}
