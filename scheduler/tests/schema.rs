//! The resource types generate JSON Schemas that Kubernetes can use for CRD validation.

use splai_scheduler::api::*;

fn schema<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap()
}

#[test]
fn job_specs_have_a_schema_with_camel_case_fields_enums_and_bounds() {
    let s = schema::<JobSpec>();
    let text = s.to_string();
    for field in [
        "tenant",
        "policyRef",
        "priority",
        "tasks",
        "dependencies",
        "timeoutSeconds",
        "plan",
        "cancel",
    ] {
        assert!(s["properties"].get(field).is_some(), "missing {field}");
    }
    assert_eq!(s["required"], serde_json::json!(["tenant"]));
    for needle in [
        "cpuMillis",
        "memoryMib",
        "reasoningRequired",
        "interactionClass",
        "expectedDurationMs",
        "dependsOn",
        "\"inference\"",
        "\"map-reduce\"",
    ] {
        assert!(text.contains(needle), "schema lacks {needle}");
    }
}

#[test]
fn every_resource_type_has_a_schema() {
    for s in [
        schema::<WorkerSpec>(),
        schema::<WorkerStatus>(),
        schema::<PolicySpec>(),
        schema::<ModelRouteSpec>(),
        schema::<JobStatus>(),
    ] {
        assert_eq!(s["type"], "object", "{s}");
    }
    let route = schema::<ModelRouteSpec>().to_string();
    for b in ["ollama", "vllm", "llamacpp", "remote"] {
        assert!(route.contains(&format!("\"{b}\"")), "backend {b} missing");
    }
    let status = schema::<JobStatus>().to_string();
    assert!(
        status.contains("date-time"),
        "timestamps are RFC 3339 strings"
    );
}
