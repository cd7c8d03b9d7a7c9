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
