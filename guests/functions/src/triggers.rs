//! `/v1/functions/:id/triggers`: cron schedules that call a function (the
//! host's scheduler runs them; `host/src/functions/scheduler.rs`). Every
//! function also answers HTTP at `/fn/<name>` without a trigger.

use serde::Deserialize;
use serde_json::json;
use zatabase_guest_kit::access::{caller, require};
use zatabase_guest_kit::functions;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::types::{Scalar, Value};
use zatabase_guest_kit::values::{json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response, db};

use crate::functions::{find, name, not_found, uuid_or_nil};

/// The longest schedule (`0-59/5 8-18 * * mon-fri` is 24).
const MAX_SCHEDULE_BYTES: usize = 256;

const MAX_TRIGGERS: usize = 20;

const TRIGGER: &str = "id::text AS id, function_id::text AS function_id, kind AS type, schedule,
    path, to_char(next_run AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS next_run,
    to_char(last_run AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS last_run,
    last_status,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at
  FROM zatabase.function_triggers";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    #[serde(rename = "type")]
    kind: String,
    schedule: String,
    #[serde(default)]
    path: Option<String>,
}

/// `POST /v1/functions/:id/triggers` → 201 with the trigger.
pub fn create(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Write)?;
    let body: TriggerRequest = request.json()?;
    match body.kind.as_str() {
        "cron" => {}
        "http" => {
            return Err(ApiError::unprocessable(
                "every function answers HTTP at /fn/<name>; it needs no trigger",
            ));
        }
        other => {
            return Err(ApiError::unprocessable(format!(
                "`type` must be `cron`, not `{other}` (event triggers come with the events API)"
            )));
        }
    }
    let path = body.path.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') || path.len() > 1024 || !path.bytes().all(is_uri_byte) {
        return Err(ApiError::unprocessable(
            "`path` must start with `/`, be at most 1024 characters and hold only what a URL's \
             path and query may (letters, digits, `-._~!$&'()*+,;=:@/?%`)",
        ));
    }
    // Stored as its fields with one space between, as it is sent (in the
    // `x-zatabase-schedule` header) and listed.
    let schedule = body
        .schedule
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // Each tick sends it as a header, and each claim reads it.
    if schedule.len() > MAX_SCHEDULE_BYTES {
        return Err(ApiError::unprocessable(format!(
            "`schedule` must be at most {MAX_SCHEDULE_BYTES} characters"
        )));
    }
    let tx = db::begin()?;
    // The function locked (or gone meanwhile: 404), so that concurrent
    // creations count each other's triggers; the first run is reckoned
    // from the database's clock, as the scheduler's claims are (this
    // host's may differ: ahead, it would skip the first tick; behind, fire
    // one at once).
    let locked = db::tx(
        &tx,
        "SELECT floor(extract(epoch FROM now()))::int8 AS now
         FROM zatabase.functions WHERE id = $1::uuid FOR UPDATE",
        &[param(id)],
    )?;
    let Some(Value::Scalar(Scalar::Int64(now))) =
        zatabase_guest_kit::values::cell(&locked, 0, "now")
    else {
        return Err(not_found(id));
    };
    let next = functions::next_run(&schedule, *now)
        .map_err(|e| ApiError::unprocessable(format!("`schedule`: {e}")))?;
    let existing = db::tx(
        &tx,
        "SELECT count(*) AS n FROM zatabase.function_triggers WHERE function_id = $1::uuid",
        &[param(id)],
    )?;
    if matches!(
        zatabase_guest_kit::values::cell(&existing, 0, "n"),
        Some(Value::Scalar(Scalar::Int64(n))) if *n as usize >= MAX_TRIGGERS
    ) {
        return Err(ApiError::unprocessable(format!(
            "a function has at most {MAX_TRIGGERS} triggers"
        )));
    }
    let created = db::tx(
        &tx,
        "INSERT INTO zatabase.function_triggers (function_id, kind, schedule, path, next_run)
         VALUES ($1::uuid, 'cron', $2, $3, to_timestamp($4::float8)) RETURNING id::text AS id",
        &[
            param(id),
            param(&schedule),
            param(&path),
            Value::Scalar(Scalar::Int64(next)),
        ],
    )?;
    let trigger = db::text(&created, "id")?;
    db::commit(tx)?;
    Ok(Response::json(201, &one(id, &trigger)?))
}

/// `GET /v1/functions/:id/triggers`.
pub fn list(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Read)?;
    let found = db::query_json(
        &format!("SELECT {TRIGGER} WHERE function_id = $1::uuid ORDER BY created_at, id"),
        &[param(id)],
    )?;
    Ok(Response::json(
        200,
        &json!({ "function_id": id, "triggers": json_rows(&found)? }),
    ))
}

/// `DELETE /v1/functions/:id/triggers/:trigger` → 204.
pub fn delete(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Write)?;
    let trigger = params.get("trigger");
    let deleted = db::query(
        "DELETE FROM zatabase.function_triggers WHERE id = $1::uuid AND function_id = $2::uuid
         RETURNING id",
        &[param(uuid_or_nil(trigger)), param(id)],
    )?;
    if deleted.rows.is_empty() {
        return Err(ApiError::not_found(format!(
            "function `{id}` has no trigger `{trigger}`"
        )));
    }
    Ok(Response::no_content())
}

fn one(function: &str, trigger: &str) -> Result<serde_json::Value, ApiError> {
    let found = db::query_json(
        &format!("SELECT {TRIGGER} WHERE function_id = $1::uuid AND id = $2::uuid"),
        &[param(function), param(trigger)],
    )?;
    json_rows(&found)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the trigger just written is missing"))
}

/// A byte a URL's path or query may hold as it is (RFC 3986's unreserved,
/// sub-delims, `:`, `@`, `/`, `?` and `%` for what is percent-encoded).
fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}
