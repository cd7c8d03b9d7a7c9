//! Host-native endpoints (health, metrics, OpenAPI, docs), the fallbacks,
//! and the API error type. Route groups are mounted by `server` from the
//! manifest; everything here answers without a component.

pub mod docs;
pub mod error;
pub mod functions;
pub mod health;
pub mod openapi;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Method, StatusCode, Uri, header};

pub use error::{ApiError, refuse};

use crate::server::AppState;

/// The host's own routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::live))
        .route("/healthz", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/docs", get(docs::index))
        .route("/v1/docs/{file}", get(docs::asset))
}

async fn metrics(
    State(state): State<AppState>,
    headers: http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.config.http.metrics_token {
        // The scheme in any case, as RFC 9110 has it.
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        // Compared as digests: how long the comparison takes tells
        // nothing of the token.
        if sha256(given) != sha256(token) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "/metrics needs `Authorization: Bearer <http.metrics_token>`",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            ));
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(Some(&state.db)),
    ))
}

fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// No route matches the path.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

/// The path exists, not with this method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
