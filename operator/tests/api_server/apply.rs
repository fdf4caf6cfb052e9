use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use splai_operator::SPLAIJob;

use crate::support::{rejection, sample, setup};

#[tokio::test]
async fn server_side_apply_by_a_second_field_manager_conflicts_until_it_forces() {
    let (client, ns) = setup("apply-conflict").await.unwrap();
    let jobs = Api::<SPLAIJob>::namespaced(client, &ns);
    let alice = PatchParams::apply("alice");
    let bob = PatchParams::apply("bob");
    let mut config = sample("splaijob");
    config["spec"]["priority"] = json!(1);
    jobs.patch("summarize-report", &alice, &Patch::Apply(&config))
        .await
        .unwrap();

    let same_value = json!({
        "apiVersion": "splai.io/v1alpha1", "kind": "SPLAIJob",
        "metadata": { "name": "summarize-report" },
        "spec": { "priority": 1 },
    });
    jobs.patch("summarize-report", &bob, &Patch::Apply(&same_value))
        .await
        .expect("applying the value another manager set is shared ownership, not a conflict");

    let mut other_value = same_value.clone();
    other_value["spec"]["priority"] = json!(2);
    let result = jobs
        .patch("summarize-report", &bob, &Patch::Apply(&other_value))
        .await;
    let message = rejection(result, 409).unwrap();
    assert!(message.contains(r#"conflict with "alice""#), "{message}");
    assert!(message.contains(".spec.priority"), "{message}");
    assert_eq!(
        jobs.get("summarize-report").await.unwrap().spec.0.priority,
        1
    );

    let forced = jobs
        .patch(
            "summarize-report",
            &bob.clone().force(),
            &Patch::Apply(&other_value),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.0.priority, 2);
    assert_eq!(forced.spec.0.tenant, "team-a");
    let result = jobs
        .patch("summarize-report", &alice, &Patch::Apply(&config))
        .await;
    let message = rejection(result, 409).unwrap();
    assert!(message.contains(r#"conflict with "bob""#), "{message}");
}
