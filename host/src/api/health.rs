//! `/health`, `/healthz` (liveness) and `/health/ready` (readiness).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use super::error::ApiError;
use crate::server::AppState;

/// The process is up and serving.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Postgres answers, migrations are applied, every component is loaded:
/// 200 with each subsystem's status, or 503 in the error shape with the same.
pub async fn ready(State(state): State<AppState>) -> Response {
    let postgres = state.db.ping().await;
    let migrations = postgres && state.db.migrations_applied().await.unwrap_or(false);
    let components = state.components.len();
    let expected = state.app.components.len();
    let up = |ok: bool| if ok { "up" } else { "down" };
    let checks = json!({
        "postgres": { "status": up(postgres) },
        "migrations": { "status": up(migrations) },
        "components": { "status": up(components == expected), "loaded": components, "expected": expected },
    });
    if postgres && migrations && components == expected {
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    let mut down = Vec::new();
    if !postgres {
        down.push("postgres is unreachable");
    } else if !migrations {
        down.push("migrations are not applied");
    }
    if components != expected {
        down.push("components are not all loaded");
    }
    let error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}", down.join(", ")),
    );
    let mut body = error.body();
    body["checks"] = checks;
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
