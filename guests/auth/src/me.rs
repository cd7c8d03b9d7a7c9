//! The caller: `GET /v1/whoami` and `GET /v1/environments`.

use serde_json::json;
use zatabase_guest_kit::values::{param, text};
use zatabase_guest_kit::{ApiError, Params, Request, Response};

use crate::sessions::caller;
use zatabase_guest_kit::db;

pub fn whoami(_: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let found = db::query(
        "SELECT email,
                to_char(to_timestamp($2::bigint) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS expires_at
         FROM zatabase.users WHERE id = $1::uuid",
        &[param(&caller.user_id), param(caller.expires_at.to_string())],
    )?;
    Ok(Response::json(
        200,
        &json!({
            "user_id": caller.user_id,
            "email": db::text(&found, "email")?,
            "session_id": caller.session_id,
            "organization_id": caller.organization_id,
            "project_id": caller.project_id,
            "environment": caller.environment,
            "expires_at": db::text(&found, "expires_at")?,
        }),
    ))
}

pub fn environments(_: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let found = db::query(
        "SELECT name FROM zatabase.environments WHERE project_id = $1::uuid ORDER BY name",
        &[param(&caller.project_id)],
    )?;
    let environments: Vec<_> = found
        .rows
        .iter()
        .filter_map(|row| row.first().and_then(text))
        .map(|name| json!({ "name": name, "current": name == caller.environment }))
        .collect();
    Ok(Response::json(
        200,
        &json!({ "environments": environments }),
    ))
}
