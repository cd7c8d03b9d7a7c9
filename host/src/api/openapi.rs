//! `/v1/openapi.json`: OpenAPI 3.0.3, assembled at start-up from the host's
//! own endpoints and the fragments of the route groups actually mounted.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::manifest::App;
use crate::server::AppState;

pub async fn document(State(state): State<AppState>) -> Json<Value> {
    Json(state.openapi.as_ref().clone())
}

/// The document for `app`.
pub fn assemble(app: &App) -> Value {
    let mut paths = host_paths();
    // `/fn` is the host's, served when the functions route group is.
    if app
        .components
        .iter()
        .any(|c| c.feature.as_deref() == Some("functions"))
        && let Some(paths) = paths.as_object_mut()
    {
        paths.insert("/fn/{function_name}/{path}".to_owned(), fn_path());
        paths.insert("/v1/functions/{id}/invoke".to_owned(), invoke_path());
    }
    let mut schemas = json!({
        "Error": {
            "type": "object",
            "required": ["error", "message", "status"],
            "properties": {
                "error": { "type": "string", "example": "Forbidden" },
                "message": { "type": "string", "example": "Insufficient permissions: requires Read on Tables" },
                "status": { "type": "integer", "example": 403 }
            }
        }
    });
    for component in &app.components {
        let Some(fragment) = &component.openapi else {
            continue;
        };
        if let (Some(target), Some(source)) = (paths.as_object_mut(), fragment["paths"].as_object())
        {
            target.extend(source.clone());
        }
        if let (Some(target), Some(source)) = (
            schemas.as_object_mut(),
            fragment
                .pointer("/components/schemas")
                .and_then(Value::as_object),
        ) {
            target.extend(source.clone());
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Zatabase API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A self-hostable serverless platform with a database API."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            },
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" }
            }
        }
    })
}

fn invoke_path() -> Value {
    json!({
        "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }],
        "post": {
            "tags": ["Functions"],
            "summary": "Invoke a function",
            "description": "The body goes to the function as `POST /fn/<name>` with the same content type; the answer is the function's response. Needs Read on the function.",
            "responses": {
                "200": { "description": "The function's response" },
                "404": { "description": "No such function here, or none deployed" },
                "500": { "description": "The function trapped or exceeded its memory" },
                "504": { "description": "The function ran past its timeout" }
            }
        }
    })
}

fn fn_path() -> Value {
    json!({
        "parameters": [
            { "name": "function_name", "in": "path", "required": true, "schema": { "type": "string" } },
            { "name": "path", "in": "path", "required": true, "schema": { "type": "string" } }
        ],
        "get": {
            "tags": ["Functions"],
            "summary": "Call a function over HTTP (every method)",
            "description": "Resolved in the bearer token's project environment. Without a token only a `public` function answers, its project named by `X-Zatabase-Project` (id or slug) or the `Host` header (`<slug>.<functions.base_domain>`), its environment by `X-Zatabase-Environment` (default `live`). Method, path, query, headers and body pass through; Spin's `spin-path-info` and related headers are set. An `Authorization` header that is not a Zatabase token reaches a public function as sent. A function that sets `Access-Control-Allow-Origin` keeps its own CORS headers, and answers its own preflights when it sets one on them.",
            "security": [{ "bearer": [] }, {}],
            "responses": {
                "200": { "description": "The function's response" },
                "404": { "description": "No such function here, or none deployed" },
                "500": { "description": "The function trapped or exceeded its memory" },
                "504": { "description": "The function ran past its timeout" }
            }
        }
    })
}

fn host_paths() -> Value {
    let public = |tag: &str, summary: &str, ok: Value| {
        json!({ "get": {
            "tags": [tag], "summary": summary, "security": [],
            "responses": { "200": ok }
        }})
    };
    let status = json!({
        "description": "Alive",
        "content": { "application/json": { "schema": { "type": "object", "properties": { "status": { "type": "string" } } } } }
    });
    let text = |what: &str| json!({ "description": what, "content": { "text/plain": { "schema": { "type": "string" } } } });
    let mut ready = public(
        "Health",
        "Readiness: Postgres, migrations and components",
        json!({ "description": "Ready" }),
    );
    ready["get"]["responses"]["503"] = json!({ "$ref": "#/components/responses/Error" });
    json!({
        "/health": public("Health", "Liveness check", status.clone()),
        "/healthz": public("Health", "Kubernetes-compatible liveness alias", status),
        "/health/ready": ready,
        "/metrics": public("Metrics", "Prometheus metrics", text("Prometheus text exposition")),
        "/v1/openapi.json": public("Docs", "This document", json!({ "description": "OpenAPI 3.0.3 document" })),
        "/v1/docs": public("Docs", "Interactive Swagger UI", json!({ "description": "HTML page", "content": { "text/html": {} } })),
    })
}
