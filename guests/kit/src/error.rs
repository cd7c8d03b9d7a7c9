//! The API error shape: `{"error": "...", "message": "...", "status": N}`.

use crate::Response;

/// An error answered to the client. `error` is the status's reason phrase,
/// `message` says what went wrong in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// A deadlock or serialization failure, which Postgres rolled back
    /// whole: 409, and the same request may simply be sent again.
    pub fn retryable(error: &crate::types::SqlError) -> Option<Self> {
        matches!(error.sqlstate.as_deref(), Some("40001" | "40P01")).then(|| {
            Self::new(
                409,
                format!(
                    "this request conflicted with a concurrent one and nothing of it was kept ({}); send it again",
                    error.message
                ),
            )
        })
    }

    /// The reason phrase of the status, used as the `error` field.
    pub fn reason(&self) -> &'static str {
        reason_phrase(self.status)
    }
}

impl From<ApiError> for Response {
    fn from(error: ApiError) -> Self {
        let response = Response::json(
            error.status,
            &serde_json::json!({
                "error": error.reason(),
                "message": error.message,
                "status": error.status,
            }),
        );
        match error.retry_after {
            Some(seconds) => response.with_header("retry-after", seconds.to_string()),
            None => response,
        }
    }
}

/// Reason phrases of the statuses the API answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;
    use crate::types::{ErrorKind, SqlError};

    #[test]
    fn deadlocks_and_serialization_failures_are_conflicts_to_retry() {
        let failed = |sqlstate: &str| SqlError {
            kind: ErrorKind::Conflict,
            sqlstate: Some(sqlstate.to_owned()),
            message: "deadlock detected".to_owned(),
            detail: None,
            hint: None,
            position: None,
        };
        for sqlstate in ["40001", "40P01"] {
            let answer = ApiError::retryable(&failed(sqlstate)).expect(sqlstate);
            assert_eq!(answer.status, 409);
            assert!(
                answer.message.contains("send it again"),
                "{}",
                answer.message
            );
        }
        // A taken name is a conflict too, but no retry makes it go away.
        assert_eq!(ApiError::retryable(&failed("42P07")), None);
    }
}
