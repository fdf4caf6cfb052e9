use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;
use splai_operator::SPLAIJob;

use crate::support::{sample, setup};

#[tokio::test]
async fn a_watch_sees_every_change_in_order() {
    let (client, ns) = setup("watch-order").await.unwrap();
    let jobs = Api::<SPLAIJob>::namespaced(client, &ns);
    let from = jobs.list(&ListParams::default()).await.unwrap();
    let from = from.metadata.resource_version.unwrap();
    let mut events = jobs
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();

    let job: SPLAIJob = serde_json::from_value(sample("splaijob")).unwrap();
    let mut written = vec![(
        "Added",
        10,
        jobs.create(&PostParams::default(), &job).await.unwrap(),
    )];
    for priority in [1, 2, 3] {
        let patch = json!({ "spec": { "priority": priority } });
        let job = jobs
            .patch(
                "summarize-report",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        written.push(("Modified", priority, job));
    }
    jobs.delete("summarize-report", &DeleteParams::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 5 {
        match events
            .try_next()
            .await
            .unwrap()
            .expect("the watch ended early")
        {
            WatchEvent::Added(job) => seen.push(("Added", job)),
            WatchEvent::Modified(job) => seen.push(("Modified", job)),
            WatchEvent::Deleted(job) => seen.push(("Deleted", job)),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    let kinds: Vec<_> = seen
        .iter()
        .map(|(kind, job)| (*kind, job.spec.0.priority))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Added", 10),
            ("Modified", 1),
            ("Modified", 2),
            ("Modified", 3),
            ("Deleted", 3)
        ]
    );
    for ((_, _, wrote), (_, saw)) in written.iter().zip(&seen) {
        assert_eq!(
            saw.metadata.resource_version,
            wrote.metadata.resource_version
        );
    }
}
