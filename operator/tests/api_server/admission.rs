use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use splai_operator::{SPLAIJob, SPLAIModelRoute, SPLAIPolicy, SPLAIWorker};

use crate::support::{create_raw, rejection, sample, setup};

#[tokio::test]
async fn the_crds_install_and_become_established() {
    let (client, _) = splai_testbed::namespace("crds").await.unwrap();
    let installed = crate::support::install_crds(&client).await.unwrap();
    let mut names: Vec<_> = installed
        .iter()
        .map(|crd| crd.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "splaijobs.splai.io",
            "splaimodelroutes.splai.io",
            "splaipolicies.splai.io",
            "splaiworkers.splai.io"
        ]
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in names {
        let crd = crds.get(&name).await.unwrap();
        let status = crd.status.unwrap();
        let condition = |kind: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == kind)
                .map(|c| c.status.clone())
        };
        assert_eq!(condition("Established").as_deref(), Some("True"), "{name}");
        assert_eq!(
            condition("NamesAccepted").as_deref(),
            Some("True"),
            "{name}"
        );
        let accepted = status.accepted_names.unwrap();
        assert_eq!(
            accepted.categories,
            Some(vec!["splai".to_owned()]),
            "{name}"
        );
        assert_eq!(accepted.short_names.map(|s| s.len()), Some(1), "{name}");
    }
}

#[tokio::test]
async fn accepts_valid_job_sample() {
    let (client, ns) = setup("accepts-job").await.unwrap();
    let job: SPLAIJob = serde_json::from_value(sample("splaijob")).unwrap();
    let created = Api::<SPLAIJob>::namespaced(client, &ns)
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    assert_eq!(created.spec, job.spec);
}

#[tokio::test]
async fn accepts_valid_worker_sample() {
    let (client, ns) = setup("accepts-worker").await.unwrap();
    let worker: SPLAIWorker = serde_json::from_value(sample("splaiworker")).unwrap();
    let created = Api::<SPLAIWorker>::namespaced(client, &ns)
        .create(&PostParams::default(), &worker)
        .await
        .unwrap();
    assert_eq!(created.spec, worker.spec);
}

#[tokio::test]
async fn accepts_valid_policy_sample() {
    let (client, ns) = setup("accepts-policy").await.unwrap();
    let policy: SPLAIPolicy = serde_json::from_value(sample("splaipolicy")).unwrap();
    let created = Api::<SPLAIPolicy>::namespaced(client, &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    assert_eq!(created.spec, policy.spec);
}

#[tokio::test]
async fn accepts_valid_model_route_sample() {
    let (client, ns) = setup("accepts-route").await.unwrap();
    let route: SPLAIModelRoute = serde_json::from_value(sample("splaimodelroute")).unwrap();
    let created = Api::<SPLAIModelRoute>::namespaced(client, &ns)
        .create(&PostParams::default(), &route)
        .await
        .unwrap();
    assert_eq!(created.spec, route.spec);
}

/// The job sample with `edit` applied to it, under a fresh name.
fn job_with(name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut job = sample("splaijob");
    job["metadata"]["name"] = json!(name);
    edit(&mut job);
    job
}

async fn job_rejection(test: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (client, ns) = setup(test).await.unwrap();
    let job = job_with(test, edit);
    rejection(create_raw::<SPLAIJob>(&client, &ns, job).await, 422).unwrap()
}

#[tokio::test]
async fn rejects_job_without_tenant() {
    let message = job_rejection("no-tenant", |job| {
        job["spec"].as_object_mut().unwrap().remove("tenant");
    })
    .await;
    assert!(message.contains("spec.tenant: Required value"), "{message}");
}

#[tokio::test]
async fn rejects_job_with_empty_tenant() {
    let message = job_rejection("empty-tenant", |job| job["spec"]["tenant"] = json!("")).await;
    assert!(message.contains("spec.tenant: Invalid value"), "{message}");
    assert!(message.contains("at least 1 chars long"), "{message}");
}

#[tokio::test]
async fn rejects_negative_timeout() {
    let message = job_rejection("negative-timeout", |job| {
        job["spec"]["timeoutSeconds"] = json!(-5);
    })
    .await;
    assert!(
        message.contains("spec.timeoutSeconds: Invalid value: -5"),
        "{message}"
    );
    assert!(
        message.contains("should be greater than or equal to 1"),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_unknown_task_kind() {
    let message = job_rejection("bad-kind", |job| {
        job["spec"]["tasks"][0]["kind"] = json!("shell");
    })
    .await;
    assert!(
        message.contains(r#"spec.tasks[0].kind: Unsupported value: "shell": supported values: "command", "inference""#),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_priority_of_the_wrong_type() {
    let message = job_rejection("wrong-type", |job| {
        job["spec"]["priority"] = json!("high");
    })
    .await;
    assert!(
        message.contains("spec.priority: Invalid value"),
        "{message}"
    );
    assert!(message.contains("must be of type integer"), "{message}");
}

#[tokio::test]
async fn rejects_inference_task_without_model() {
    let message = job_rejection("no-model", |job| {
        job["spec"]["tasks"][1]
            .as_object_mut()
            .unwrap()
            .remove("model");
    })
    .await;
    assert!(
        message.contains(
            "spec.tasks[1]: Invalid value: an inference task needs a model: set its model"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_job_without_tasks_or_plan() {
    let message = job_rejection("empty-job", |job| {
        let spec = job["spec"].as_object_mut().unwrap();
        spec.remove("tasks");
        spec.remove("dependencies");
    })
    .await;
    assert!(
        message.contains("the job has no tasks and no plan"),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_task_id_with_uppercase_letters() {
    let message = job_rejection("bad-id", |job| {
        job["spec"]["tasks"][0]["id"] = json!("Extract");
    })
    .await;
    assert!(
        message.contains("spec.tasks[0].id: Invalid value: \"Extract\""),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_retry_with_initial_backoff_over_max() {
    let message = job_rejection("bad-backoff", |job| {
        job["spec"]["tasks"][1]["retry"]["initialBackoffMs"] = json!(60000);
    })
    .await;
    assert!(
        message.contains("initialBackoffMs must not exceed maxBackoffMs"),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_worker_with_zero_cpu() {
    let (client, ns) = setup("zero-cpu").await.unwrap();
    let mut worker = sample("splaiworker");
    worker["spec"]["capabilities"]["cpuMillis"] = json!(0);
    let message = rejection(create_raw::<SPLAIWorker>(&client, &ns, worker).await, 422).unwrap();
    assert!(
        message.contains("spec.capabilities.cpuMillis: Invalid value: 0"),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_task_memory_that_does_not_fit_its_32_bit_field() {
    // Without the bound the API server would store it, and every watch of the operator would
    // then fail to read the object.
    let message = job_rejection("huge-memory", |job| {
        job["spec"]["tasks"][0]["resources"]["memoryMib"] = json!(4_294_967_296u64);
    })
    .await;
    assert!(
        message.contains("spec.tasks[0].resources.memoryMib: Invalid value: 4294967296"),
        "{message}"
    );
    assert!(
        message.contains("should be less than or equal to 4294967295"),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_unknown_route_backend() {
    let (client, ns) = setup("bad-backend").await.unwrap();
    let mut route = sample("splaimodelroute");
    route["spec"]["backend"] = json!("triton");
    let message = rejection(
        create_raw::<SPLAIModelRoute>(&client, &ns, route).await,
        422,
    )
    .unwrap();
    assert!(
        message.contains(r#"spec.backend: Unsupported value: "triton""#),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_route_endpoint_that_is_not_a_url() {
    let (client, ns) = setup("bad-endpoint").await.unwrap();
    let mut route = sample("splaimodelroute");
    route["spec"]["endpoint"] = json!("ollama:11434");
    let message = rejection(
        create_raw::<SPLAIModelRoute>(&client, &ns, route).await,
        422,
    )
    .unwrap();
    assert!(
        message.contains("endpoint must be an http or https URL"),
        "{message}"
    );
}

#[tokio::test]
async fn rejects_policy_without_tenant() {
    let (client, ns) = setup("policy-no-tenant").await.unwrap();
    let mut policy = sample("splaipolicy");
    policy["spec"].as_object_mut().unwrap().remove("tenant");
    let message = rejection(create_raw::<SPLAIPolicy>(&client, &ns, policy).await, 422).unwrap();
    assert!(message.contains("spec.tenant: Required value"), "{message}");
}
