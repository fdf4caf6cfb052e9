//! Every rendering applies to the real API server; every container is locked down; the
//! walk-through's job is one the core admits.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{
    Doc, RENDERINGS, SYSTEM, TENANT, installed, joined, kind_of, kubectl, name_of, render,
    render_with_cert_manager, repo, values,
};

#[test]
fn every_rendering_passes_a_server_dry_run_then_applies_without_a_warning() {
    let applied = installed();
    assert_eq!(applied.len(), RENDERINGS.len());
    for a in applied {
        assert!(
            a.documents > 25,
            "{}: only {} objects",
            a.rendering,
            a.documents
        );
        assert_eq!(a.dry_run_lines, a.documents, "{}: dry run", a.rendering);
        assert_eq!(a.applied_lines, a.documents, "{}: apply", a.rendering);
        // No warning at all: not Pod Security's, and not the API server's about unknown integer
        // formats (crdgen writes the formats it knows, with the unsigned types' bounds).
        assert!(a.warnings.is_empty(), "{:#?}", a.warnings);
    }
    // The kind overlay, applied last, is what the cluster now runs.
    let replicas = kubectl(
        &[
            "get",
            "deployment",
            "splai-operator",
            "-n",
            SYSTEM,
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ],
        None,
    );
    assert_eq!(
        replicas.stdout, "2 splai-operator:dev",
        "{}",
        replicas.stderr
    );
    let volume = kubectl(
        &[
            "get",
            "pv",
            "splai-artifacts",
            "-o",
            "jsonpath={.spec.claimRef.namespace}/{.spec.claimRef.name}",
        ],
        None,
    );
    assert_eq!(
        volume.stdout, "splai-system/splai-artifacts",
        "{}",
        volume.stderr
    );
}

#[test]
fn the_cert_manager_component_swaps_the_self_signed_certificate_for_an_issued_one() {
    installed();
    let rendered = render_with_cert_manager();
    let docs = values(rendered.clone());
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| kind_of(d) == kind && name_of(d) == name)
            .cloned()
    };
    let cert = find("Certificate", "splai-webhook").expect("a Certificate");
    assert_eq!(cert["spec"]["secretName"], "splai-webhook-tls");
    let names: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"splai-webhook.splai-system.svc"),
        "{names:?}"
    );
    let hooks = find("ValidatingWebhookConfiguration", "splai-webhook").unwrap();
    assert_eq!(
        hooks["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "splai-system/splai-webhook"
    );
    let operator = find("Deployment", "splai-operator").unwrap();
    let pod = &operator["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/splai/webhook"),
        "{container:#}"
    );
    assert!(
        !container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "SPLAI_WEBHOOK_SELF_SIGNED_SECRET"),
        "{container:#}"
    );
    for kind in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"] {
        assert!(
            find(kind, "splai-operator-webhook-cert").is_none(),
            "{kind}"
        );
    }
    // Everything but cert-manager's own kinds, whose CRDs this API server does not have, passes
    // a server-side dry run against what is installed.
    let ours: Vec<Doc> = rendered
        .into_iter()
        .filter(|d| {
            !d.value["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("cert-manager.io/")
        })
        .collect();
    let ran = kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&joined(&ours)),
    );
    assert!(ran.ok, "{}", ran.stderr);
}

/// Every container and init container of every pod template, with where it came from.
fn containers(docs: &[Value]) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for doc in docs {
        let pod = match kind_of(doc) {
            "Pod" => &doc["spec"],
            "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => {
                &doc["spec"]["template"]["spec"]
            }
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for c in pod[list].as_array().into_iter().flatten() {
                let at = format!("{} {}: {}", kind_of(doc), name_of(doc), c["name"]);
                found.push((at, c.clone()));
            }
        }
    }
    found
}

#[test]
fn every_container_runs_as_non_root_on_a_read_only_root_with_no_capabilities() {
    let mut renderings: Vec<(String, Vec<Value>)> = RENDERINGS
        .iter()
        .map(|dir| (dir.to_string(), render(dir)))
        .collect();
    renderings.push(("cert-manager".into(), values(render_with_cert_manager())));
    for (name, docs) in renderings {
        let found = containers(&docs);
        // The operator, the gateway and the worker.
        assert_eq!(
            found.len(),
            3,
            "{name}: {:?}",
            found.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for (at, c) in found {
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true, "{name}, {at}: runAsNonRoot");
            assert_eq!(
                sc["readOnlyRootFilesystem"], true,
                "{name}, {at}: readOnlyRootFilesystem"
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{name}, {at}: allowPrivilegeEscalation"
            );
            assert_eq!(
                sc["capabilities"]["drop"],
                json!(["ALL"]),
                "{name}, {at}: drop"
            );
            assert!(
                sc["capabilities"]["add"].is_null(),
                "{name}, {at}: adds capabilities"
            );
            assert_ne!(sc["privileged"], true, "{name}, {at}: privileged");
        }
    }
}

#[test]
fn the_walk_through_job_is_admitted_by_the_core() {
    let text = std::fs::read_to_string(repo().join("deploy/examples/hello.yaml")).unwrap();
    let job: splai_operator::SPLAIJob = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(job.metadata.namespace.as_deref(), Some(TENANT));
    let mut spec = job.spec.0;
    assert_eq!(spec.tenant, TENANT);
    let admitted = splai_scheduler::admission::admit(
        &mut spec,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &splai_scheduler::Settings::default().limits,
    );
    assert!(admitted.is_ok(), "{:?}", admitted.err());
    // Every task fits one kind worker of the overlay (1 cpu, 2 GiB).
    for task in &spec.tasks {
        assert!(task.resources.cpu_millis <= 1000, "{}", task.id);
    }
}
