//! The `sql` route group: `POST /v1/sql` runs one request's SQL in the
//! caller's tenant through the host's `sql` capability.

// Natively (unit tests, lints) nothing calls the route group: its entry
// point is the component export, which exists on wasm32 only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde::Deserialize;
use zatabase_guest_kit::access::require;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::types::{ErrorKind, SqlError};
use zatabase_guest_kit::values::{columns_to_json, param_from_json};
use zatabase_guest_kit::{ApiError, Params, Request, Response, RouteGroup, Router, sql};

struct Sql;

impl RouteGroup for Sql {
    fn handle(request: Request) -> Response {
        Router::new()
            .route("POST", "/v1/sql", execute)
            .handle(&request)
    }
}

zatabase_guest_kit::route_group!(Sql);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    query: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
}

/// Needs Read on all Tables (arbitrary SQL can touch any of them); without
/// Write as well, the host runs it in a read-only transaction.
fn execute(request: &Request, _: &Params) -> Result<Response, ApiError> {
    require(Resource::Tables, None, Action::Read)?;
    let body: SqlRequest = request.json()?;
    if body.query.trim().is_empty() {
        return Err(ApiError::unprocessable("`query` must not be empty"));
    }
    let params: Vec<_> = body.params.iter().map(param_from_json).collect();
    let result = sql::execute_json(&body.query, &params).map_err(sql_error)?;
    // The rows arrive as JSON text from the host and go out as they are.
    let columns = columns_to_json(&result.columns).to_string();
    let mut response = String::with_capacity(result.rows.len() + columns.len() + 64);
    response.push_str("{\"rows\":");
    response.push_str(&result.rows);
    response.push_str(",\"columns\":");
    response.push_str(&columns);
    response.push_str(&format!(",\"affected_rows\":{}", result.affected_rows));
    if result.truncated {
        response.push_str(",\"truncated\":true");
    }
    response.push('}');
    Ok(Response::json_text(200, response))
}

/// Postgres's verdict as an API error. Every kind is decided here, so a new
/// kind in the WIT fails to compile until it has a status.
fn sql_error(error: SqlError) -> ApiError {
    let status = match error.kind {
        ErrorKind::Syntax | ErrorKind::UndefinedObject | ErrorKind::InvalidInput => 400,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::Timeout => 408,
        ErrorKind::UniqueViolation | ErrorKind::Conflict => 409,
        ErrorKind::ForeignKeyViolation
        | ErrorKind::NotNullViolation
        | ErrorKind::CheckViolation => 422,
        ErrorKind::Unavailable => 503,
        ErrorKind::Internal => 500,
    };
    let mut message = error.message;
    if let Some(position) = error.position {
        message.push_str(&format!(" (at character {position})"));
    }
    if let Some(detail) = error.detail {
        message.push_str(&format!(": {detail}"));
    }
    if let Some(hint) = error.hint {
        message.push_str(&format!(" Hint: {hint}"));
    }
    ApiError::new(status, message)
}
