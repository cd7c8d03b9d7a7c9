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
pub fn bounded(request: &Request, key: &str, default: i64, max: i64) -> Result<i64, ApiError> {
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

/// Where a page of log lines ends: its last line's time (microseconds since
/// the epoch) and id, written `<micros>_<id>`. The next page starts after it,
/// in the same order (newest first, ties by id), so lines written between
/// two pages neither repeat nor shift the rest.
struct Cursor {
    micros: i64,
    id: i64,
}

/// Microseconds from 1970 to about the year 2255: any cursor this
/// endpoint gave, and short of what Postgres's timestamps hold.
const MAX_CURSOR_MICROS: i64 = 9_000_000_000_000_000;

impl Cursor {
    fn parse(raw: &str) -> Result<Self, ApiError> {
        let number = |part: &str| part.parse::<i64>().ok().filter(|n| *n >= 0);
        raw.split_once('_')
            .and_then(|(micros, id)| {
                Some(Self {
                    // Within the years Postgres's timestamps reach (its
                    // interval arithmetic fails past them).
                    micros: number(micros).filter(|m| *m <= MAX_CURSOR_MICROS)?,
                    id: number(id)?,
                })
            })
            .ok_or_else(|| {
                ApiError::bad_request(
                    "`before` must be a `next_before` from an earlier page of this endpoint",
                )
            })
    }
}

/// `GET /v1/functions/:id/logs?limit=100&request_id=...&before=...`: newest
/// first, a page at a time; `next_before` (null on the last page) is the
/// `before` of the next.
pub fn logs(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Read)?;
    request.only_query_params(&["limit", "request_id", "before"])?;
    let limit = bounded(request, "limit", 100, 1000)?;
    let request_id = request.query_param("request_id")?;
    if request_id.as_deref().is_some_and(|id| id.contains('\0')) {
        return Err(ApiError::bad_request(
            "`request_id` must not contain NUL characters",
        ));
    }
    let before = request
        .query_param("before")?
        .map(|raw| Cursor::parse(&raw))
        .transpose()?;
    let (micros, line) = before.map_or((Value::Null, Value::Null), |cursor| {
        (
            Value::Scalar(Scalar::Int64(cursor.micros)),
            Value::Scalar(Scalar::Int64(cursor.id)),
        )
    });
    // One line more than the page, to tell whether another follows.
    let found = db::query_json(
        "SELECT request_id, level, message,
           to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at,
           (extract(epoch FROM at) * 1000000)::int8 || '_' || id AS cursor
         FROM zatabase.function_logs
         WHERE function_id = $1::uuid AND ($2::text IS NULL OR request_id = $2)
           AND ($4::int8 IS NULL
                OR (at, id) < (timestamptz 'epoch' + $4::int8 * interval '1 microsecond', $5::int8))
         ORDER BY at DESC, id DESC LIMIT $3 + 1",
        &[
            param(id),
            request_id.map_or(Value::Null, param),
            Value::Scalar(Scalar::Int64(limit)),
            micros,
            line,
        ],
    )?;
    let mut lines = json_rows(&found)?;
    let more = lines.len() as i64 > limit;
    lines.truncate(limit as usize);
    let mut next_before = serde_json::Value::Null;
    for line in &mut lines {
        if let Some(fields) = line.as_object_mut() {
            next_before = fields.remove("cursor").unwrap_or_default();
        }
    }
    if !more {
        next_before = serde_json::Value::Null;
    }
    Ok(Response::json(
        200,
        &json!({ "function_id": id, "logs": lines, "next_before": next_before }),
    ))
}

/// `GET /v1/functions/:id/metrics?hours=24`: invocations, errors (5xx),
/// cold starts and duration percentiles over the last `hours` (by whole
/// minutes: the minutes that began within them).
pub fn metrics(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Read)?;
    request.only_query_params(&["hours"])?;
    let hours = bounded(request, "hours", 24, 168)?;
    // One statement over the function's minute rows (migration 0017), so
    // the counts by status add up to the total. A percentile is the middle
    // of the histogram bucket its rank falls in (buckets 2^(1/16) wide, so
    // within 2.2 % of a duration some call took), kept within the window's
    // shortest and longest call.
    let found = db::query_json(
        "WITH m AS (
           SELECT * FROM zatabase.function_invocation_minutes
           WHERE function_id = $1::uuid AND minute > now() - make_interval(hours => $2::int)),
         totals AS (
           SELECT coalesce(sum(invocations), 0)::int8 AS invocations,
             coalesce(sum(errors), 0)::int8 AS errors,
             coalesce(sum(cold_starts), 0)::int8 AS cold_starts,
             min(min_us) AS lo, max(max_us) AS hi
           FROM m),
         ranked AS (
           SELECT k, sum(sum(n)) OVER (ORDER BY k) AS up_to
           FROM m, unnest(m.buckets, m.bucket_counts) AS u (k, n) GROUP BY k),
         p (name, q) AS (VALUES ('p50', 0.5), ('p95', 0.95), ('p99', 0.99))
         SELECT t.invocations, t.errors, t.cold_starts,
           (SELECT jsonb_object_agg(p.name, round((least(greatest(
                power(2, ((SELECT min(k) FROM ranked WHERE up_to >= ceil(p.q * t.invocations))
                          + 0.5) / 16.0),
                t.lo), t.hi) / 1000.0)::numeric, 3)::float8)
            FROM p) AS duration_ms,
           (SELECT coalesce(jsonb_object_agg(status, n), '{}')
            FROM (SELECT k::text AS status, sum(n) AS n
                  FROM m, unnest(m.statuses, m.status_counts) AS u (k, n) GROUP BY k) s) AS by_status
         FROM totals t",
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
