//! The platform tables, through the `platform-db` capability (for the route
//! groups granted it): a failure becomes a plain 500 or 503 for the client.

use crate::platform_db::{self, Transaction};
use crate::types::{ErrorKind, JsonResult, QueryResult, SqlError, Value};
use crate::values::{self, cell};
use crate::{ApiError, log};

/// A platform-db failure as the client sees it: a plain 500 (the detail goes
/// to the log, not to the client), except for a value Postgres cannot take
/// (the statements are the route group's own, so their values are what the
/// client sent: a NUL in a text, say), which is the client's 400.
pub fn internal(error: SqlError) -> ApiError {
    log::log(
        log::Level::Error,
        &format!("platform query failed: {}", error.message),
    );
    match error.kind {
        ErrorKind::Unavailable | ErrorKind::Timeout => {
            ApiError::new(503, "the service is temporarily unavailable; try again")
        }
        // Class 22: a data exception (the host says its own refusal of a
        // value, a NUL, the same way).
        ErrorKind::InvalidInput
            if error
                .sqlstate
                .as_deref()
                .is_some_and(|s| s.starts_with("22")) =>
        {
            ApiError::bad_request(format!(
                "the request holds a value that cannot be stored: {}{}",
                error.message,
                error.detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ))
        }
        _ => ApiError::internal("internal error"),
    }
}

pub fn query(statement: &str, params: &[Value]) -> Result<QueryResult, ApiError> {
    platform_db::execute(statement, params).map_err(internal)
}

/// `query`, with the rows as JSON (for answering them).
pub fn query_json(statement: &str, params: &[Value]) -> Result<JsonResult, ApiError> {
    platform_db::execute_json(statement, params).map_err(internal)
}

pub fn begin() -> Result<Transaction, ApiError> {
    platform_db::begin().map_err(internal)
}

pub fn tx(tx: &Transaction, statement: &str, params: &[Value]) -> Result<QueryResult, ApiError> {
    tx.execute(statement, params).map_err(internal)
}

pub fn commit(tx: Transaction) -> Result<(), ApiError> {
    tx.commit().map_err(internal)
}

/// A text column of the first row, which must be there.
pub fn text(result: &QueryResult, column: &str) -> Result<String, ApiError> {
    cell(result, 0, column)
        .and_then(values::text)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::internal(format!("no `{column}` in the result")))
}

/// An optional text column of the first row.
pub fn optional_text(result: &QueryResult, column: &str) -> Option<String> {
    cell(result, 0, column)
        .and_then(values::text)
        .map(str::to_owned)
}
