//! The API error shape, `{"error": "...", "message": "...", "status": N}`,
//! for everything the host itself answers.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::dispatch::DispatchError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// 401 with a `WWW-Authenticate` challenge (RFC 6750).
    pub fn unauthorized(error: crate::auth::AuthError) -> Self {
        let challenge = match error {
            crate::auth::AuthError::Missing => "Bearer",
            _ => "Bearer error=\"invalid_token\"",
        };
        Self::new(StatusCode::UNAUTHORIZED, error.to_string()).with_header(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The error shape as JSON, for bodies that add fields to it.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
            "status": self.status.as_u16(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl ApiError {
    /// Every way a component can fail, decided here; the client gets a plain
    /// sentence, the log gets the detail and the request's id.
    pub fn dispatch_failed(error: DispatchError, request_id: &str) -> Self {
        match error {
            DispatchError::Timeout { component, after } => {
                tracing::warn!(request_id, component, ?after, "component timed out");
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "`{component}` did not answer within {} ms",
                        after.as_millis()
                    ),
                )
            }
            DispatchError::MemoryLimit { component, error } => {
                tracing::warn!(request_id, component, %error, "component hit its memory limit");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("`{component}`: {error}"),
                )
            }
            DispatchError::Failed { component, error } => {
                tracing::error!(
                    request_id,
                    component,
                    error = format!("{error:?}"),
                    "component failed"
                );
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("`{component}` failed: {}", error.root_cause()),
                )
            }
            DispatchError::BadRequest(message) => ApiError::new(StatusCode::BAD_REQUEST, message),
            DispatchError::Host(error) => {
                tracing::error!(
                    request_id,
                    error = format!("{error:?}"),
                    "dispatch failed in the host"
                );
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// `error`, answered before the request's body was read: a small body is
/// read first, so the connection stays usable for the client's next request
/// (HTTP/1.1 cannot reuse a connection with an unread body on it, and a
/// client that already pooled it would find it closed).
pub async fn refuse(error: ApiError, request: axum::extract::Request) -> axum::response::Response {
    use http_body_util::BodyExt;
    const DRAIN: u64 = 64 << 10;
    let small = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > 0 && n <= DRAIN);
    if small {
        let drained = request.into_body().collect();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
    }
    axum::response::IntoResponse::into_response(error)
}
