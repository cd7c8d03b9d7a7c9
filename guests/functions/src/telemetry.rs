//! `GET /v1/functions/:id/logs` and `GET /v1/functions/:id/metrics`: what
//! the host recorded of the function's runs (a fraction of a second behind;
//! seven days kept). Both need Read on the function.

use serde_json::json;
use zatabase_guest_kit::access::{caller, require};
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::types::{Scalar, Value};
use zatabase_guest_kit::values::{json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response, db};

use crate::functions::{find, name};

/// A positive integer query parameter, at most `max`, or `default`.
fn bounded(request: &Request, key: &str, default: i64, max: i64) -> Result<i64, ApiError> {
    match request.query_param(key)? {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("`{key}` must be a whole number from 1 to {max}"))
            }),
    }
}

/// `GET /v1/functions/:id/logs?limit=100&request_id=...`: newest first.
pub fn logs(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Read)?;
    let limit = bounded(request, "limit", 100, 1000)?;
    let request_id = request.query_param("request_id")?;
    if request_id.as_deref().is_some_and(|id| id.contains('\0')) {
        return Err(ApiError::bad_request(
            "`request_id` must not contain NUL characters",
        ));
    }
    let found = db::query_json(
        "SELECT request_id, level, message,
           to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at
         FROM zatabase.function_logs
         WHERE function_id = $1::uuid AND ($2::text IS NULL OR request_id = $2)
         ORDER BY at DESC, id DESC LIMIT $3",
        &[
            param(id),
            request_id.map_or(Value::Null, param),
            Value::Scalar(Scalar::Int64(limit)),
        ],
    )?;
    Ok(Response::json(
        200,
        &json!({ "function_id": id, "logs": json_rows(&found)? }),
    ))
}

/// `GET /v1/functions/:id/metrics?hours=24`: invocations, errors (5xx),
/// cold starts and duration percentiles over the last `hours`.
pub fn metrics(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Read)?;
    let hours = bounded(request, "hours", 24, 168)?;
    // One statement, so the counts by status add up to the total. The
    // percentiles are nearest-rank: each is a duration some call took.
    let found = db::query_json(
        "WITH calls AS (
           SELECT status, duration_us, cold FROM zatabase.function_invocations
           WHERE function_id = $1::uuid AND at > now() - make_interval(hours => $2::int))
         SELECT count(*) AS invocations,
           count(*) FILTER (WHERE status >= 500) AS errors,
           count(*) FILTER (WHERE cold) AS cold_starts,
           jsonb_build_object(
             'p50', round((percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_us) / 1000.0)::numeric, 3)::float8,
             'p95', round((percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_us) / 1000.0)::numeric, 3)::float8,
             'p99', round((percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_us) / 1000.0)::numeric, 3)::float8
           ) AS duration_ms,
           (SELECT coalesce(jsonb_object_agg(status, n), '{}')
            FROM (SELECT status::text AS status, count(*) AS n FROM calls GROUP BY status) s) AS by_status
         FROM calls",
        &[param(id), Value::Scalar(Scalar::Int64(hours))],
    )?;
    let row = json_rows(&found)?.into_iter().next().unwrap_or_default();
    let by_status = row["by_status"].clone();
    Ok(Response::json(
        200,
        &json!({
            "function_id": id,
            "hours": hours,
            "invocations": row["invocations"],
            "errors": row["errors"],
            "cold_starts": row["cold_starts"],
            "duration_ms": row["duration_ms"],
            "by_status": by_status,
        }),
    ))
}
