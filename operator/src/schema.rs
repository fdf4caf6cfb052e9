//! What the derived schemas cannot say: string lengths and patterns, list semantics for
//! server-side apply, and CEL rules across fields. Each function edits one CRD's
//! `openAPIV3Schema` in place; a path that does not exist panics, so a renamed field in the core
//! fails `crdgen` and its test rather than silently dropping a rule.

use serde_json::{Value, json};

pub(crate) fn job(root: &mut Value) {
    let spec = at(root, "spec");
    set(spec, "tenant", json!({"minLength": 1, "maxLength": 253}));
    rule(
        spec,
        "(has(self.tasks) && size(self.tasks) > 0) || has(self.plan)",
        "the job has no tasks and no plan: add spec.tasks, or a spec.plan for the planner to expand",
    );
    // "Dependencies name existing tasks" stays with the core's validation (the webhook): as CEL,
    // over up to 20,000 tasks, the API server rejects it as over 100x its cost budget.
    // A job's DAG is one unit that one writer owns, so its lists are atomic. Keyed lists would
    // make the API server track every task in `managedFields`: a 5,000-task job would carry
    // ~800 KB of field ownership beside its ~600 KB spec, against etcd's 1.5 MiB object limit.
    // Duplicate ids are caught by the core's validator (the job fails with its message, and the
    // admission webhook refuses it).
    set(
        spec,
        "tasks",
        json!({"maxItems": 20000, "x-kubernetes-list-type": "atomic"}),
    );
    set(
        spec,
        "dependencies",
        json!({"x-kubernetes-list-type": "atomic"}),
    );
    set(
        at(spec, "dependencies[]"),
        "dependsOn",
        json!({"x-kubernetes-list-type": "atomic"}),
    );
    for task in ["tasks[]", "plan.template", "plan.reduce"] {
        task_rules(at(spec, task));
    }
    status_rules(at(root, "status"));
}

fn task_rules(task: &mut Value) {
    set(
        task,
        "id",
        json!({"maxLength": 63, "pattern": "^[a-z0-9._-]+$"}),
    );
    rule(
        task,
        "self.kind != 'inference' || has(self.model)",
        "an inference task needs a model: set its model",
    );
    rule(
        at(task, "retry"),
        "self.initialBackoffMs <= self.maxBackoffMs",
        "initialBackoffMs must not exceed maxBackoffMs",
    );
}

pub(crate) fn worker(root: &mut Value) {
    set(
        at(root, "spec.capabilities"),
        "speedFactor",
        json!({"minimum": 0.01, "maximum": 100.0}),
    );
    let status = at(root, "status");
    for fraction in ["cpu", "memory", "gpu"] {
        set(
            at(status, "utilization"),
            fraction,
            json!({"minimum": 0.0, "maximum": 1.0}),
        );
    }
    status_rules(status);
}

pub(crate) fn policy(root: &mut Value) {
    set(
        at(root, "spec"),
        "tenant",
        json!({"minLength": 1, "maxLength": 253}),
    );
    status_rules(at(root, "status"));
}

pub(crate) fn route(root: &mut Value) {
    let spec = at(root, "spec");
    set(spec, "endpoint", json!({"maxLength": 2048}));
    rule(
        spec,
        "isURL(self.endpoint) && url(self.endpoint).getScheme() in ['http', 'https']",
        "endpoint must be an http or https URL, such as http://ollama.splai-system:11434",
    );
    status_rules(at(root, "status"));
}

fn status_rules(status: &mut Value) {
    list_map(at(status, "conditions"), "type");
    set(status, "observedGeneration", json!({"minimum": 0}));
}

/// The subschema at a dotted path of property names; `name[]` steps into a list's items.
fn at<'a>(schema: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.').fold(schema, |node, step| {
        let (name, items) = match step.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (step, false),
        };
        let child = node
            .get_mut("properties")
            .and_then(|props| props.get_mut(name))
            .unwrap_or_else(|| panic!("no property {name:?} on the way to {path:?}"));
        if items {
            child
                .get_mut("items")
                .unwrap_or_else(|| panic!("{name:?} is not a list"))
        } else {
            child
        }
    })
}

/// Adds `keywords` to the property `name` of `object`.
fn set(object: &mut Value, name: &str, keywords: Value) {
    let property = at(object, name)
        .as_object_mut()
        .expect("a property schema is an object");
    for (key, value) in keywords.as_object().expect("keywords are an object") {
        property.insert(key.clone(), value.clone());
    }
}

fn list_map(list: &mut Value, key: &str) {
    list["x-kubernetes-list-type"] = json!("map");
    list["x-kubernetes-list-map-keys"] = json!([key]);
}

fn rule(schema: &mut Value, rule: &str, message: &str) {
    let rules = schema
        .as_object_mut()
        .expect("a schema is an object")
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    rules
        .as_array_mut()
        .expect("x-kubernetes-validations is a list")
        .push(json!({"rule": rule, "message": message}));
}
