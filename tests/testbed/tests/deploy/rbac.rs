//! RBAC by impersonation: `kubectl auth can-i --as=system:serviceaccount:...` for each thing a
//! binary does and a sample of what it must not, and `--list` for the complete set.

use std::collections::BTreeSet;

use crate::support::{GATEWAY, OPERATOR, SYSTEM, TENANT, WORKER, installed, kubectl};

/// `kubectl auth can-i VERB RESOURCE [--subresource S] --as WHO` in `namespace` (`None`: across
/// all namespaces, which only a ClusterRoleBinding grants).
fn can(who: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (resource, sub) = match resource.split_once('#') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "--as", who];
    let sub_arg;
    if let Some(s) = sub {
        sub_arg = format!("--subresource={s}");
        args.push(&sub_arg);
    }
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let ran = kubectl(&args, None);
    match ran.stdout.trim() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl {}: {}{}", args.join(" "), ran.stdout, ran.stderr),
    }
}

/// Checks a table of (verb, resource, namespace, expected); `resource#sub` names a subresource
/// and `resource/name` one object. Reports every mismatch at once.
fn check(who: &str, table: &[(&str, &str, Option<&str>, bool)]) {
    installed();
    let wrong: Vec<String> = table
        .iter()
        .filter(|(verb, resource, ns, want)| can(who, verb, resource, *ns) != *want)
        .map(|(verb, resource, ns, want)| {
            format!(
                "{verb} {resource} in {}: expected {}",
                ns.unwrap_or("all namespaces"),
                if *want { "yes" } else { "no" }
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{who}:\n{}", wrong.join("\n"));
}

const JOBS: &str = "splaijobs.splai.io";
const WORKERS: &str = "splaiworkers.splai.io";

#[test]
fn the_operator_can_do_each_thing_its_code_does() {
    let all = None;
    let sys = Some(SYSTEM);
    let tenant = Some(TENANT);
    check(
        OPERATOR,
        &[
            // The job controller, cluster-wide, and the webhook's count of running jobs.
            ("list", JOBS, all, true),
            ("watch", JOBS, all, true),
            ("get", JOBS, tenant, true),
            ("patch", JOBS, tenant, true),
            ("patch", "splaijobs.splai.io#status", tenant, true),
            ("list", "splaipolicies.splai.io", all, true),
            ("watch", "splaipolicies.splai.io", all, true),
            ("list", "splaimodelroutes.splai.io", all, true),
            ("watch", "splaimodelroutes.splai.io", all, true),
            ("create", "events.events.k8s.io", tenant, true),
            ("patch", "events.events.k8s.io", tenant, true),
            ("create", "events.events.k8s.io", sys, true),
            // Agents' registration tokens.
            ("create", "tokenreviews.authentication.k8s.io", None, true),
            // The heartbeat controller, in splai-system.
            ("list", WORKERS, sys, true),
            ("watch", WORKERS, sys, true),
            ("create", WORKERS, sys, true),
            ("patch", "splaiworkers.splai.io#status", sys, true),
            // Leader election.
            (
                "get",
                "leases.coordination.k8s.io/splai-operator",
                sys,
                true,
            ),
            (
                "update",
                "leases.coordination.k8s.io/splai-operator",
                sys,
                true,
            ),
            ("create", "leases.coordination.k8s.io", sys, true),
            // The self-signed webhook certificate.
            ("get", "secrets/splai-webhook-tls", sys, true),
            ("create", "secrets", sys, true),
            (
                "get",
                "validatingwebhookconfigurations.admissionregistration.k8s.io/splai-webhook",
                all,
                true,
            ),
            (
                "update",
                "validatingwebhookconfigurations.admissionregistration.k8s.io/splai-webhook",
                all,
                true,
            ),
        ],
    );
}

#[test]
fn the_operator_cannot_read_secrets_cluster_wide() {
    check(
        OPERATOR,
        &[
            ("get", "secrets", None, false),
            ("list", "secrets", None, false),
            ("watch", "secrets", None, false),
            ("list", "secrets", Some(SYSTEM), false),
            ("get", "secrets/another-secret", Some(SYSTEM), false),
            ("get", "secrets/splai-webhook-tls", Some(TENANT), false),
            ("get", "secrets/splai-webhook-tls", Some("default"), false),
            ("update", "secrets/splai-webhook-tls", Some(SYSTEM), false),
            ("delete", "secrets/splai-webhook-tls", Some(SYSTEM), false),
        ],
    );
}

#[test]
fn the_operator_cannot_change_what_users_own_or_touch_other_objects() {
    let tenant = Some(TENANT);
    let sys = Some(SYSTEM);
    check(
        OPERATOR,
        &[
            ("create", JOBS, tenant, false),
            ("update", JOBS, tenant, false),
            ("delete", JOBS, tenant, false),
            ("create", "splaipolicies.splai.io", tenant, false),
            ("patch", "splaipolicies.splai.io", tenant, false),
            ("get", "splaipolicies.splai.io", tenant, false),
            ("delete", "splaimodelroutes.splai.io", tenant, false),
            ("list", WORKERS, tenant, false),
            ("patch", WORKERS, sys, false),
            ("delete", WORKERS, sys, false),
            (
                "get",
                "leases.coordination.k8s.io/another-lease",
                sys,
                false,
            ),
            (
                "update",
                "leases.coordination.k8s.io/another-lease",
                sys,
                false,
            ),
            (
                "delete",
                "leases.coordination.k8s.io/splai-operator",
                sys,
                false,
            ),
            (
                "update",
                "validatingwebhookconfigurations.admissionregistration.k8s.io/another-webhook",
                None,
                false,
            ),
            (
                "delete",
                "validatingwebhookconfigurations.admissionregistration.k8s.io/splai-webhook",
                None,
                false,
            ),
            ("create", "pods", sys, false),
            ("get", "configmaps", sys, false),
            ("create", "events", tenant, false),
            ("list", "namespaces", None, false),
            (
                "create",
                "customresourcedefinitions.apiextensions.k8s.io",
                None,
                false,
            ),
        ],
    );
}

#[test]
fn the_gateway_can_create_read_and_delete_jobs_only_in_tenant_namespaces() {
    let tenant = Some(TENANT);
    check(
        GATEWAY,
        &[
            ("create", JOBS, tenant, true),
            ("get", JOBS, tenant, true),
            ("list", JOBS, tenant, true),
            ("watch", JOBS, tenant, true),
            // cancel
            ("patch", JOBS, tenant, true),
            // `splai delete`
            ("delete", JOBS, tenant, true),
            ("deletecollection", JOBS, tenant, false),
            ("update", JOBS, tenant, false),
            ("patch", "splaijobs.splai.io#status", tenant, false),
            ("create", JOBS, Some(SYSTEM), false),
            ("get", JOBS, Some(SYSTEM), false),
            ("delete", JOBS, Some(SYSTEM), false),
            ("create", JOBS, Some("default"), false),
            ("delete", JOBS, Some("default"), false),
            ("list", JOBS, None, false),
            ("create", "splaipolicies.splai.io", tenant, false),
            ("list", WORKERS, Some(SYSTEM), false),
            ("get", "secrets", tenant, false),
            ("get", "secrets", Some(SYSTEM), false),
        ],
    );
}

#[test]
fn the_worker_can_apply_only_splaiworkers_and_nothing_else() {
    let sys = Some(SYSTEM);
    check(
        WORKER,
        &[
            // `--register-in`: server-side apply, which creates the object the first time.
            ("patch", WORKERS, sys, true),
            ("create", WORKERS, sys, true),
            // The status is the operator's.
            ("patch", "splaiworkers.splai.io#status", sys, false),
            ("update", "splaiworkers.splai.io#status", sys, false),
            ("delete", WORKERS, sys, false),
            ("list", WORKERS, sys, false),
            ("patch", WORKERS, Some(TENANT), false),
            ("patch", JOBS, Some(TENANT), false),
            ("get", JOBS, Some(TENANT), false),
            ("get", "secrets", sys, false),
            ("get", "leases.coordination.k8s.io", sys, false),
        ],
    );
}

/// The rules `kubectl auth can-i --list` shows for `who` in `namespace`, as (resource, names,
/// verbs), without what every authenticated user may do (discovery, self-reviews).
fn rules(who: &str, namespace: &str) -> BTreeSet<(String, String, String)> {
    let everyone = listed_rules(
        "system:serviceaccount:splai-system:bound-to-nothing",
        namespace,
    );
    listed_rules(who, namespace)
        .difference(&everyone)
        .cloned()
        .collect()
}

/// Every resource rule `kubectl auth can-i --list` shows.
fn listed_rules(who: &str, namespace: &str) -> BTreeSet<(String, String, String)> {
    let ran = kubectl(
        &["auth", "can-i", "--list", "--as", who, "-n", namespace],
        None,
    );
    assert!(ran.ok, "{}", ran.stderr);
    let mut rules = BTreeSet::new();
    for line in ran.stdout.lines().skip(1) {
        // Columns: Resources, Non-Resource URLs, Resource Names, Verbs; the lists are
        // bracketed with no spaces inside, except the verbs. A URL rule has no resource, so
        // its first word is a bracketed list.
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [resource, urls, names, verbs @ ..] = cols.as_slice() else {
            continue;
        };
        if resource.starts_with('[') || *urls != "[]" {
            continue;
        }
        rules.insert((resource.to_string(), names.to_string(), verbs.join(" ")));
    }
    rules
}

fn expect(rows: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|(r, n, v)| (r.to_string(), n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn each_service_account_holds_exactly_the_rules_its_binary_needs() {
    installed();
    let cluster_wide_operator = [
        ("splaijobs.splai.io", "[]", "[get list watch patch]"),
        ("splaijobs.splai.io/status", "[]", "[patch]"),
        ("splaimodelroutes.splai.io", "[]", "[list watch]"),
        ("splaipolicies.splai.io", "[]", "[list watch]"),
        ("events.events.k8s.io", "[]", "[create patch]"),
        ("tokenreviews.authentication.k8s.io", "[]", "[create]"),
        (
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
            "[splai-webhook]",
            "[get update list watch]",
        ),
    ];
    let mut operator_in_system = expect(&cluster_wide_operator);
    operator_in_system.extend(expect(&[
        ("splaiworkers.splai.io", "[]", "[list watch create]"),
        ("splaiworkers.splai.io/status", "[]", "[patch]"),
        (
            "leases.coordination.k8s.io",
            "[splai-operator]",
            "[get update]",
        ),
        ("leases.coordination.k8s.io", "[]", "[create]"),
        ("secrets", "[splai-webhook-tls]", "[get]"),
        ("secrets", "[]", "[create]"),
    ]));
    assert_eq!(rules(OPERATOR, SYSTEM), operator_in_system);
    assert_eq!(rules(OPERATOR, TENANT), expect(&cluster_wide_operator));

    let gateway = expect(&[(
        "splaijobs.splai.io",
        "[]",
        "[create get list watch patch delete]",
    )]);
    assert_eq!(rules(GATEWAY, TENANT), gateway);
    assert_eq!(rules(GATEWAY, SYSTEM), BTreeSet::new());

    let worker = expect(&[("splaiworkers.splai.io", "[]", "[create patch]")]);
    assert_eq!(rules(WORKER, SYSTEM), worker);
    assert_eq!(rules(WORKER, TENANT), BTreeSet::new());
}
