//! `/openapi.json`: the API described by hand, next to the routes it
//! describes (a test checks every route is in it).

use crate::errors::Code;
use axum::Json;
use serde_json::{json, Value};

fn op(summary: &str, mutating: bool, params: Value, responses: Value) -> Value {
    let mut o = json!({ "summary": summary, "parameters": params, "responses": responses });
    if mutating {
        o["security"] = json!([{ "bearer": [] }]);
    }
    o
}

fn ok(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": {} } })
}

fn id_param() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// The one error shape of every API error (`crate::errors::ApiError`).
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "description": "Every error under /api/ (also an unknown route, a wrong method, a body that is not JSON) has this shape.",
        "properties": { "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": false,
            "properties": {
                "code": { "type": "string", "enum": Code::ALL, "description": "what went wrong, for programs" },
                "message": { "type": "string", "description": "what went wrong, for people" },
                "group": { "type": "string", "description": "leased: the group" },
                "holder": { "type": "string", "description": "leased: the run holding the group lease" },
                "expires_at": { "type": "integer", "description": "leased: when the lease runs out unless renewed (ms since the epoch)" }
            }
        } }
    })
}

/// The OpenAPI 3.1 document.
pub fn spec() -> Value {
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let mutating_responses = |extra: Value| {
        let mut r = json!({ "202": ok("accepted"), "401": err("no or wrong bearer token; nothing changed"), "404": err("unknown run or pipeline") });
        if let (Some(r), Some(e)) = (r.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        r
    };
    let q = |name: &str, desc: &str| json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": { "type": "string" } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "repave", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Maintenance windows, runs, fleet and patch manifests of repave serve. Every error answer under /api/ is an Error (components.schemas.Error): {\"error\": {\"code\", \"message\", ...}}; besides the statuses listed per operation, a body that is not JSON answers 400 or 415, JSON of the wrong shape 422, an unknown route 404 and a wrong method 405." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": { "Error": error_schema() }
        },
        "paths": {
            "/api/pipelines": { "get": op("Pipelines with their window, next window, schedule state and last run", false, json!([]), json!({ "200": ok("pipelines") })) },
            "/api/pipelines/{name}/schedule": { "post": {
                "summary": "Enable or disable a pipeline's schedule: {\"enabled\": true} (enabling clears the failure count), {\"enabled\": false, \"reason\": \"...\"}",
                "security": [{ "bearer": [] }],
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["enabled"],
                    "properties": { "enabled": { "type": "boolean" }, "reason": { "type": "string" } } } } } },
                "responses": { "200": ok("the schedule's new state"), "401": err("no or wrong bearer token; nothing changed"), "404": err("unknown pipeline, or it has no window") }
            } },
            "/api/runs": {
                "get": op("Runs, newest first", false, json!([q("pipeline", "only this pipeline"), q("state", "pending, running, paused, succeeded, failed, rolled_back, cancelled"), q("limit", "at most this many (default 100)")]), json!({ "200": ok("runs"), "400": err("unknown state") })),
                "post": {
                    "summary": "Start a run: {\"pipeline\": \"web\", \"kind\": \"run|bake|roll|rollback\"}",
                    "security": [{ "bearer": [] }],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["pipeline"],
                        "properties": { "pipeline": { "type": "string" }, "kind": { "type": "string", "enum": ["run", "bake", "roll", "rollback"] } } } } } },
                    "responses": mutating_responses(json!({ "409": err("the group is leased by another run (code leased, see holder)"), "400": err("unknown kind, or a body that is not JSON"), "422": err("pipeline missing") }))
                }
            },
            "/api/runs/{id}": { "get": op("A run with its steps and events", false, id_param(), json!({ "200": ok("run"), "404": err("unknown run") })) },
            "/api/runs/{id}/progress": { "get": op("Roll progress: samples (at, in service, floor, old, new, draining), and the roll's replaced / total as of the last one (null before a roll); live while this server drives it, else from the run summary", false, id_param(), json!({ "200": ok("samples"), "404": err("unknown run") })) },
            "/api/runs/{id}/cancel": { "post": op("Stop a run at its next safe point, whichever process drives it (the request is stored, as `repave cancel` does): before publish it cleans up and ends cancelled; a roll pauses, resumable. `driven_here` says whether this server drives it", true, id_param(), mutating_responses(json!({ "409": err("the run has finished") }))) },
            "/api/runs/{id}/resume": { "post": op("Continue a paused or interrupted run", true, id_param(), mutating_responses(json!({ "409": err("finished, already running, or group leased") }))) },
            "/api/runs/{id}/rollback": { "post": op("Start a rollback run for the run's pipeline", true, id_param(), mutating_responses(json!({ "409": err("group leased") }))) },
            "/api/webhooks": { "get": op("The webhook outbox, newest first: each notice's hook (a digest, never the URL), event, run, state (pending, delivered, failed), attempts and last error", false, json!([]), json!({ "200": ok("notices") })) },
            "/api/fleet": { "get": op("Instances by image, drift from the golden image, patch level", false, json!([]), json!({ "200": ok("groups") })) },
            "/api/images/diff": { "get": op("Difference between two images' patch manifests", false,
                json!([{ "name": "a", "in": "query", "required": true, "schema": { "type": "string" } }, { "name": "b", "in": "query", "required": true, "schema": { "type": "string" } }]),
                json!({ "200": ok("added, removed, common"), "400": err("a or b missing"), "404": err("an image repave did not bake and no provider has"), "503": err("a provider could not be asked") })) },
            "/api/images/{id}/manifest": { "get": op("An image's patch manifest and lineage (empty for a base image repave did not bake)", false, id_param(),
                json!({ "200": ok("manifest"), "404": err("an image repave did not bake and no provider has"), "503": err("a provider could not be asked") })) },
            "/openapi.json": { "get": op("This document", false, json!([]), json!({ "200": ok("OpenAPI 3.1") })) },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text format 0.0.4", "content": { "text/plain": {} } } } } }
        }
    })
}

pub(crate) async fn document() -> Json<Value> {
    Json(spec())
}
