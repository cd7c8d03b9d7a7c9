//! `/v1/functions/:id/deployments`: uploading a component, listing the
//! versions, and activating an older one (rollback).
//!
//! An upload is checked and compiled by the host first (`functions.prepare`:
//! a core module, garbage or an import the host cannot satisfy is a 422
//! naming the problem); then one transaction stores the component by its
//! sha256, numbers the deployment and makes it active. A failed upload
//! leaves the previous version serving. A function keeps its newest
//! `functions.max_deployments` (host config); a deploy past that removes
//! the oldest, and components no deployment uses any more go after them.

use serde_json::json;
use zatabase_guest_kit::access::{caller, require};
use zatabase_guest_kit::functions::{self, ComponentInfo};
use zatabase_guest_kit::platform_db::{self, Transaction};
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::types::{Scalar, Value};
use zatabase_guest_kit::values::{json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response, db};

use crate::functions::{find, name, not_found, uuid_or_nil};

/// A deployment as the API answers it.
const DEPLOYMENT: &str = "d.id::text AS id, d.function_id::text AS function_id, d.version,
    d.sha256, d.size, d.handler, (f.active_deployment_id = d.id) AS active,
    to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at
  FROM zatabase.function_deployments d
  JOIN zatabase.functions f ON f.id = d.function_id";

/// `POST /v1/functions/:id/deployments`, the component as the body
/// (`Content-Type: application/wasm`) → 201 with the deployment, active.
pub fn create(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Write)?;
    let mime = request
        .header("content-type")
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime != "application/wasm" && mime != "application/octet-stream" {
        return Err(ApiError::new(
            415,
            "send the component as the body with `Content-Type: application/wasm`",
        ));
    }
    if request.body.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty; send the component (a .wasm file)",
        ));
    }
    let info = functions::prepare(&request.body).map_err(ApiError::unprocessable)?;

    let tx = db::begin()?;
    // The function may have been deleted meanwhile: lock it or answer 404.
    let locked = db::tx(
        &tx,
        "SELECT id FROM zatabase.functions WHERE id = $1::uuid FOR UPDATE",
        &[param(uuid_or_nil(id))],
    )?;
    if locked.rows.is_empty() {
        return Err(not_found(id));
    }
    let deployment = store(&tx, id, &caller.user_id, &info, &request.body)?;
    let pruned = prune(&tx, id)?;
    db::commit(tx)?;
    functions::forget(id);
    if pruned {
        collect_unused_components();
    }
    Ok(Response::json(201, &one(id, &deployment)?))
}

/// Removes the function's deployments past the newest `max-deployments`
/// of the host's limits, never the active one (after a deploy, the newest);
/// whether any went. Inside the deploy's transaction.
fn prune(tx: &Transaction, function: &str) -> Result<bool, ApiError> {
    let kept = functions::limits().max_deployments;
    let removed = db::tx(
        tx,
        "DELETE FROM zatabase.function_deployments d
         USING zatabase.functions f
         WHERE f.id = $1::uuid AND d.function_id = f.id
           AND d.id IS DISTINCT FROM f.active_deployment_id
           AND d.version <= (SELECT max(version) FROM zatabase.function_deployments
                             WHERE function_id = $1::uuid) - $2
         RETURNING d.id",
        &[
            param(function),
            Value::Scalar(Scalar::Int64(i64::from(kept))),
        ],
    )?;
    Ok(!removed.rows.is_empty())
}

/// Removes the stored components no deployment refers to any more, once
/// the change that freed them is committed, on a best-effort basis: one
/// that a deploy (of any tenant) is storing again meanwhile is locked by
/// it, and the deployment's reference stops its removal then (the whole
/// statement fails, and the next collection retries it). So a failure here
/// is no failure of the request.
pub fn collect_unused_components() {
    let _ = db::query(
        "DELETE FROM zatabase.function_blobs b
         WHERE NOT EXISTS (SELECT 1 FROM zatabase.function_deployments d WHERE d.sha256 = b.sha256)",
        &[],
    );
}

/// Stores `wasm` (checked: `info`) as the function's next deployment and
/// makes it active; the deployment's id. Inside the caller's transaction.
pub fn store(
    tx: &Transaction,
    function: &str,
    user: &str,
    info: &ComponentInfo,
    wasm: &[u8],
) -> Result<String, ApiError> {
    let size = Value::Scalar(Scalar::Int64(i64::try_from(info.size).unwrap_or(i64::MAX)));
    db::tx(
        tx,
        // Locked when it exists (a no-op update), so that a deletion
        // collecting unused components cannot remove it before this
        // deployment refers to it.
        "INSERT INTO zatabase.function_blobs (sha256, size, wasm) VALUES ($1, $2, $3)
         ON CONFLICT (sha256) DO UPDATE SET size = EXCLUDED.size",
        &[
            param(&info.sha256),
            size.clone(),
            Value::Scalar(Scalar::Bytes(wasm.to_vec())),
        ],
    )?;
    let created = db::tx(
        tx,
        "WITH created AS (
           INSERT INTO zatabase.function_deployments
             (function_id, version, sha256, size, handler, created_by)
           SELECT $1::uuid, coalesce(max(version), 0) + 1, $2, $3, $4, $5::uuid
           FROM zatabase.function_deployments WHERE function_id = $1::uuid
           RETURNING id
         )
         UPDATE zatabase.functions SET active_deployment_id = (SELECT id FROM created),
           updated_at = now()
         WHERE id = $1::uuid
         RETURNING active_deployment_id::text AS id",
        &[
            param(function),
            param(&info.sha256),
            size,
            param(&info.handler),
            param(user),
        ],
    )?;
    db::text(&created, "id")
}

/// `GET /v1/functions/:id/deployments`: newest first.
pub fn list(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Read)?;
    let found = db::query_json(
        &format!("SELECT {DEPLOYMENT} WHERE d.function_id = $1::uuid ORDER BY d.version DESC"),
        &[param(id)],
    )?;
    Ok(Response::json(
        200,
        &json!({ "function_id": id, "deployments": json_rows(&found)? }),
    ))
}

/// `POST /v1/functions/:id/deployments/:deployment/activate`, the
/// deployment by id or by version number → 200 with it, active.
pub fn activate(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Write)?;
    let wanted = params.get("deployment");
    let version = wanted.parse::<i32>().ok().filter(|v| *v > 0);
    let missing = || ApiError::not_found(format!("function `{id}` has no deployment `{wanted}`"));
    let activated = platform_db::execute(
        "UPDATE zatabase.functions f SET active_deployment_id = d.id, updated_at = now()
         FROM zatabase.function_deployments d
         WHERE f.id = $1::uuid AND d.function_id = f.id
           AND (d.id = $2::uuid OR d.version = $3)
         RETURNING d.id::text AS id",
        &[
            param(id),
            param(uuid_or_nil(wanted)),
            version.map_or(Value::Null, |v| Value::Scalar(Scalar::Int32(v))),
        ],
    )
    .map_err(|e| match e.sqlstate.as_deref() {
        // foreign_key_violation: a deploy racing this removed the
        // deployment (past `functions.max_deployments`) as it was found.
        Some("23503") => missing(),
        _ => db::internal(e),
    })?;
    if activated.rows.is_empty() {
        return Err(missing());
    }
    let deployment = db::text(&activated, "id")?;
    functions::forget(id);
    Ok(Response::json(200, &one(id, &deployment)?))
}

/// A deployment as just written; gone only if its function was deleted
/// since, which is then the answer (404).
fn one(function: &str, deployment: &str) -> Result<serde_json::Value, ApiError> {
    let found = db::query_json(
        &format!("SELECT {DEPLOYMENT} WHERE d.function_id = $1::uuid AND d.id = $2::uuid"),
        &[param(function), param(deployment)],
    )?;
    json_rows(&found)?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(function))
}
