use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use splai_operator::{SPLAIJob, SPLAIJobStatus, SPLAIWorker, SPLAIWorkerStatus};
use splai_scheduler::api::{AttemptRef, Health, JobPhase, JobStatus, Progress, WorkerStatus};

use crate::support::{sample, setup};

fn running_job_status() -> SPLAIJobStatus {
    let progress = Progress {
        total: 10,
        succeeded: 7,
        running: 3,
        ..Progress::default()
    };
    SPLAIJobStatus::new(
        JobStatus {
            phase: JobPhase::Running,
            progress,
            ..JobStatus::default()
        },
        Some(1),
    )
}

#[tokio::test]
async fn a_status_update_through_the_subresource_leaves_the_spec_untouched() {
    let (client, ns) = setup("status-keeps-spec").await.unwrap();
    let jobs = Api::<SPLAIJob>::namespaced(client, &ns);
    let job: SPLAIJob = serde_json::from_value(sample("splaijob")).unwrap();
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(created.spec.0.priority, 10);

    let status = running_job_status();
    let patch = json!({ "spec": { "priority": 99, "tenant": "someone-else" }, "status": status });
    let patched = jobs
        .patch_status(
            "summarize-report",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();

    assert_eq!(patched.spec, created.spec);
    assert_eq!(patched.status, Some(status));
    assert_eq!(patched.metadata.generation, created.metadata.generation);
    let stored = jobs.get("summarize-report").await.unwrap();
    assert_eq!(stored.spec, created.spec);
    assert_eq!(stored.status.unwrap().completions.as_deref(), Some("7/10"));
}

#[tokio::test]
async fn a_spec_update_leaves_the_status_untouched_and_bumps_the_generation() {
    let (client, ns) = setup("spec-keeps-status").await.unwrap();
    let jobs = Api::<SPLAIJob>::namespaced(client, &ns);
    let job: SPLAIJob = serde_json::from_value(sample("splaijob")).unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let status = running_job_status();
    let with_status = jobs
        .patch_status(
            "summarize-report",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();

    let patch = json!({ "spec": { "priority": 5 }, "status": { "phase": "Failed" } });
    let patched = jobs
        .patch(
            "summarize-report",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();

    assert_eq!(patched.spec.0.priority, 5);
    assert_eq!(patched.status, Some(status));
    assert_eq!(
        patched.metadata.generation,
        with_status.metadata.generation.map(|g| g + 1)
    );
}

/// `kubectl get` of the objects of `plural` in `ns`: the column names and the first row's cells.
async fn table(client: &kube::Client, ns: &str, plural: &str) -> (Vec<String>, Vec<Value>) {
    let request = http::Request::get(format!("/apis/splai.io/v1alpha1/namespaces/{ns}/{plural}"))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: Value = client.request(request).await.unwrap();
    let columns = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let cells = table["rows"][0]["cells"].as_array().unwrap().clone();
    (columns, cells)
}

#[tokio::test]
async fn kubectl_shows_a_jobs_phase_progress_and_tenant() {
    let (client, ns) = setup("job-columns").await.unwrap();
    let jobs = Api::<SPLAIJob>::namespaced(client.clone(), &ns);
    let job: SPLAIJob = serde_json::from_value(sample("splaijob")).unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let status = json!({ "status": running_job_status() });
    jobs.patch_status(
        "summarize-report",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();

    let (columns, cells) = table(&client, &ns, "splaijobs").await;
    assert_eq!(columns, ["Name", "Phase", "Progress", "Tenant", "Age"]);
    assert_eq!(
        cells[..4],
        [
            json!("summarize-report"),
            json!("Running"),
            json!("7/10"),
            json!("team-a")
        ]
    );
}

#[tokio::test]
async fn kubectl_shows_a_workers_health_running_tasks_and_queue() {
    let (client, ns) = setup("worker-columns").await.unwrap();
    let workers = Api::<SPLAIWorker>::namespaced(client.clone(), &ns);
    let worker: SPLAIWorker = serde_json::from_value(sample("splaiworker")).unwrap();
    workers
        .create(&PostParams::default(), &worker)
        .await
        .unwrap();
    let running = (1..=2)
        .map(|attempt| AttemptRef {
            job: "summarize-report".into(),
            task: "summarize".into(),
            attempt,
        })
        .collect();
    let status = SPLAIWorkerStatus::new(
        WorkerStatus {
            health: Health::Healthy,
            queue_depth: 4,
            running_tasks: running,
            last_heartbeat: Some(splai_scheduler::Timestamp(1_798_761_599_000)),
            ..WorkerStatus::default()
        },
        Some(1),
    );
    workers
        .patch_status(
            "gpu-worker-1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();

    let (columns, cells) = table(&client, &ns, "splaiworkers").await;
    assert_eq!(
        columns,
        ["Name", "Health", "Running", "Queue", "Heartbeat", "Age"]
    );
    assert_eq!(
        cells[..4],
        [json!("gpu-worker-1"), json!("Healthy"), json!(2), json!(4)]
    );
}
