//! The gateway's OpenAPI document, served at `/v1/openapi.json`. A test checks that it lists
//! every route the router serves.

pub const DOCUMENT: &str = r##"{
  "openapi": "3.1.0",
  "info": {"title": "SPLAI gateway", "version": "v1",
           "description": "Submit, read, watch, cancel and delete SPLAI jobs. Every request needs `Authorization: Bearer TOKEN`; the token names a tenant, and a tenant sees only its own jobs."},
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "SubmitRequest": {"type": "object", "required": ["name", "spec"], "additionalProperties": false,
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                       "spec": {"type": "object", "description": "A SPLAIJob spec (see config/crd/bases/splai.io_splaijobs.yaml); spec.tenant may be left out."}}},
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
      "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
    },
    "responses": {
      "Error": {"description": "Any error, in one shape", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
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
                             "413": {"$ref": "#/components/responses/Error"}}},
      "get": {"summary": "List the tenant's jobs",
              "responses": {"200": {"description": "The jobs", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/JobView"}}}}},
                            "401": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/jobs/{name}": {
      "get": {"summary": "Get a job", "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
              "responses": {"200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobView"}}}},
                            "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}},
      "delete": {"summary": "Delete a job: the operator stops its running tasks, then the job is gone and its name free",
                 "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                 "responses": {"202": {"description": "Deletion requested; the job as it is now", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobView"}}}},
                               "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/jobs/{name}/cancel": {
      "post": {"summary": "Cancel a job: its running tasks are stopped", "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
               "responses": {"202": {"description": "Cancel requested", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobView"}}}},
                             "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/jobs/{name}/watch": {
      "get": {"summary": "Server-Sent Events: one `status` event (a JobView) per change, until the job has ended",
              "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
              "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {}}},
                            "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/jobs/{name}/artifacts": {
      "get": {"summary": "Links to a job's result, per-task results and execution records", "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
              "responses": {"200": {"description": "The links", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Artifacts"}}}},
                            "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/jobs/{name}/records": {
      "get": {"summary": "Each attempt of the job's tasks, with the decision that placed it (the job's records: all of them once it has ended, those written so far while it runs)",
              "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                             {"name": "task", "in": "query", "required": false, "description": "Only this task's attempts", "schema": {"type": "string"}}],
              "responses": {"200": {"description": "The attempts, in attempt order per task", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/AttemptRecord"}}}}},
                            "401": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
                            "501": {"$ref": "#/components/responses/Error"}, "502": {"$ref": "#/components/responses/Error"}}}
    },
    "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}}
  }
}"##;
