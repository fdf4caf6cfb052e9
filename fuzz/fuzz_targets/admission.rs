//! A job spec as a tenant submits it (JSON), through the core's admission: the DAG rules,
//! planning, a policy with allow and deny rules and quotas, and route resolution. Every input is
//! admitted or refused with a reason, never a panic.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use splai_scheduler::Settings;
use splai_scheduler::admission;
use splai_scheduler::api::{JobSpec, ModelRouteSpec, PolicySpec};

fn rules() -> &'static (
    BTreeMap<String, PolicySpec>,
    BTreeMap<String, ModelRouteSpec>,
) {
    static RULES: OnceLock<(
        BTreeMap<String, PolicySpec>,
        BTreeMap<String, ModelRouteSpec>,
    )> = OnceLock::new();
    RULES.get_or_init(|| {
        let policy: PolicySpec = serde_json::from_str(
            r#"{"tenant": "acme", "models": {"allow": ["llama-*"], "deny": ["llama-70b"]},
                "classifications": {"allow": ["public", "internal"]},
                "quotas": {"maxCpuMillis": 4000, "maxGpus": 2, "maxTasksPerJob": 40}}"#,
        )
        .expect("the policy");
        let routes = [
            r#"{"priority": 1, "backend": "vllm", "endpoint": "http://vllm:8000",
                "match": {"reasoningRequired": true}}"#,
            r#"{"priority": 2, "backend": "ollama", "endpoint": "http://ollama:11434",
                "default": true}"#,
        ]
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("r{i}"), serde_json::from_str(r).expect("a route")))
        .collect();
        ([("acme".to_owned(), policy)].into(), routes)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut spec) = serde_json::from_slice::<JobSpec>(data) else {
        return;
    };
    let (policies, routes) = rules();
    let limits = Settings::default().limits;
    if admission::admit(&mut spec, policies, routes, &limits).is_ok()
        && let Ok(policy) = admission::policy_for(policies, &spec)
    {
        let _ = admission::quota_rejection(&spec, policy);
    }
});
