//! The gateway's OpenAPI document, served at `/v1/openapi.json`: the routes are written here,
//! the job spec's schema is the SPLAIJob CRD's (what the API server validates), so a client
//! generator or a property-based tester (schemathesis, `gateway/tests/schemathesis.rs`) sees the
//! same rules as the server. A test checks that it lists every route the router serves.
//!
//! OpenAPI 3.0, not 3.1: the CRD schema is Kubernetes' OpenAPI v3 dialect (`nullable`).

use std::sync::OnceLock;

use serde_json::Value;

/// The document, with the job spec's schema in `components.schemas.JobSpec`.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(ROUTES).expect("the routes document is JSON");
        doc["components"]["schemas"]["JobSpec"] = job_spec();
        doc
    })
}

/// The SPLAIJob CRD's `spec` schema, with `tenant` optional and possibly empty (the gateway
/// fills it in from the token), and closed to unknown fields as the gateway's parser is (every
/// type of a job spec denies them; the API server would only drop them).
fn job_spec() -> Value {
    let crd = splai_operator::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "SPLAIJob")
        .expect("the SPLAIJob CRD");
    let crd = serde_json::to_value(crd).expect("a CRD serializes");
    let mut spec =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
    if let Some(required) = spec.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r != "tenant");
    }
    let tenant = &mut spec["properties"]["tenant"];
    if let Some(t) = tenant.as_object_mut() {
        t.remove("minLength");
    }
    tenant["description"] =
        "Left out or empty: the token's tenant. Another tenant is refused (403).".into();
    closed(&mut spec);
    spec
}

fn closed(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.contains_key("properties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

const ROUTES: &str = r##"{
  "openapi": "3.0.3",
  "info": {"title": "SPLAI gateway", "version": "v1",
           "description": "Submit, read, watch, cancel and delete SPLAI jobs. Every request needs `Authorization: Bearer TOKEN`; the token names a tenant, and a tenant sees only its own jobs."},
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "SubmitRequest": {"type": "object", "required": ["name", "spec"], "additionalProperties": false,
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                       "spec": {"$ref": "#/components/schemas/JobSpec"}}},
      "JobView": {"type": "object", "properties": {"name": {"type": "string"}, "tenant": {"type": "string"}, "traceId": {"type": "string"},
                  "status": {"type": "object", "description": "The SPLAIJob status."}}},
      "Artifacts": {"type": "object", "properties": {"result": {"type": "string"}, "records": {"type": "string"},
                    "results": {"type": "array", "items": {"type": "object", "properties": {"task": {"type": "string"}, "uri": {"type": "string"}}}}}},
      "AttemptRecord": {"type": "object", "description": "One attempt of one task: a line of the job's records.jsonl",
        "properties": {"job": {"type": "string"}, "task": {"type": "string"}, "attempt": {"type": "integer"}, "worker": {"type": "string"},
                       "assignedAt": {"type": "string", "format": "date-time"}, "startedAt": {"type": "string", "format": "date-time"},
                       "finishedAt": {"type": "string", "format": "date-time"},
                       "outcome": {"type": "string", "enum": ["Succeeded", "Failed", "TimedOut", "WorkerLost", "Canceled"]},
                       "error": {"type": "string"}, "artifactUri": {"type": "string"}, "traceparent": {"type": "string"},
                       "decision": {"type": "object", "description": "Why the attempt went to its worker; absent in records written before decisions were kept",
                         "properties": {"score": {"type": "string", "description": "The explanation as text: strategy, worker, score and each term, runner-up and the term it lost on"},
                                        "placement": {"type": "object", "description": "The same in numbers: strategy, worker, score, terms, predictedMs, coldStart, candidates, runnerUp {worker, score, terms, lostOn, lostBy}"},
                                        "waited": {"type": "string", "description": "Why the task waited for a worker before this attempt, when known"}}}}},
      "Error": {"type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string", "description": "Stable and machine-readable: unauthorized, invalid, refused, not_found, conflict, too_large, not_allowed, unavailable, upstream"},
                                                "message": {"type": "string", "description": "What went wrong and what to do about it"}}}}}
    },
    "parameters": {
      "name": {"name": "name", "in": "path", "required": true, "description": "The job's name",
               "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}}
    },
    "responses": {
      "Error": {"description": "Any error, in one shape", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Upstream": {"description": "The Kubernetes API server (or the artifact store) could not be reached or failed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    }
  },
  "security": [{"bearer": []}],
  "paths": {
    "/v1/jobs": {
      "post": {"summary": "Submit a job (JSON, or YAML with Content-Type application/yaml; at most 1 MiB)",
               "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}},
                                                             "application/yaml": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}}}},
               "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobView"}}}},
                             "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                             "403": {"$ref": "#/components/responses/Error"},
                             "409": {"description": "The name is taken in the tenant's namespace; the message says whether the job there is yours to delete",
                                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                             "413": {"$ref": "#/components/responses/Error"},
                             "422": {"description": "The API server or SPLAI's admission refused the job; the message gives each cause",
                                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                             "502": {"$ref": "#/components/responses/Upstream"}}},
      "get": {"summary": "List the tenant's jobs",
              "responses": {"200": {"description": "The jobs", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/JobView"}}}}},
                            "401": {"$ref": "#/components/responses/Error"}, "502": {"$ref": "#/components/responses/Upstream"}}}
    },
    "/v1/jobs/{name}": {
      "get": {"summary": "Get a job", "parameters": [{"$ref": "#/components/parameters/name"}],
              "responses": {"200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobView"}}}},
                            "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                            "404": {"$ref": "#/components/responses/Error"}, "502": {"$ref": "#/components/responses/Upstream"}}},
      "delete": {"summary": "Delete a job: the operator stops its running tasks, then the job is gone and its name free",
                 "parameters": [{"$ref": "#/components/parameters/name"}],
                 "responses": {"202": {"description": "Deletion requested; the job as it is now", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobView"}}}},
                               "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                               "404": {"$ref": "#/components/responses/Error"}, "502": {"$ref": "#/components/responses/Upstream"}}}
    },
    "/v1/jobs/{name}/cancel": {
      "post": {"summary": "Cancel a job: its running tasks are stopped", "parameters": [{"$ref": "#/components/parameters/name"}],
               "responses": {"202": {"description": "Cancel requested", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobView"}}}},
                             "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                             "404": {"$ref": "#/components/responses/Error"}, "502": {"$ref": "#/components/responses/Upstream"}}}
    },
    "/v1/jobs/{name}/watch": {
      "get": {"summary": "Server-Sent Events: one `status` event (a JobView) per change, until the job has ended",
              "parameters": [{"$ref": "#/components/parameters/name"}],
              "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {}}},
                            "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                            "404": {"$ref": "#/components/responses/Error"}, "502": {"$ref": "#/components/responses/Upstream"}}}
    },
    "/v1/jobs/{name}/artifacts": {
      "get": {"summary": "Links to a job's result, per-task results and execution records", "parameters": [{"$ref": "#/components/parameters/name"}],
              "responses": {"200": {"description": "The links", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Artifacts"}}}},
                            "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                            "404": {"$ref": "#/components/responses/Error"}, "502": {"$ref": "#/components/responses/Upstream"}}}
    },
    "/v1/jobs/{name}/records": {
      "get": {"summary": "Each attempt of the job's tasks, with the decision that placed it (the job's records: all of them once it has ended, those written so far while it runs)",
              "parameters": [{"$ref": "#/components/parameters/name"},
                             {"name": "task", "in": "query", "required": false, "description": "Only this task's attempts", "schema": {"type": "string"}}],
              "responses": {"200": {"description": "The attempts, in attempt order per task", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/AttemptRecord"}}}}},
                            "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
                            "404": {"$ref": "#/components/responses/Error"},
                            "501": {"description": "This gateway does not read the artifact store (started without --artifacts); the message says where the records are",
                                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                            "502": {"$ref": "#/components/responses/Upstream"}}}
    },
    "/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                 "responses": {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
  }
}"##;
