//! `/v1/functions/:id/deployments`: uploading a component, listing the
//! versions, and activating an older one (rollback).
//!
//! An upload is checked and compiled by the host first (`functions.prepare`:
//! a core module, garbage or an import the host cannot satisfy is a 422
//! naming the problem); then one transaction stores the component by its
//! sha256, numbers the deployment and makes it active. A component whose
//! linear memory starts larger than the function's `memory_mb` is refused
//! too (422), since every call of it would fail. A failed upload
//! leaves the previous version serving. Activating an older version checks
//! its component again on this host, as an upload is checked. A function keeps its newest
//! `functions.max_deployments` (host config); a deploy past that removes
//! the oldest, and components no deployment uses any more go after them.

use serde_json::json;
use zatabase_guest_kit::access::{caller, require};
use zatabase_guest_kit::functions::{self, ComponentInfo};
use zatabase_guest_kit::platform_db::Transaction;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::types::{Scalar, Value};
use zatabase_guest_kit::values::{cell, json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response, db};

use crate::functions::{find, integer, name, not_found, uuid_or_nil};

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
        "SELECT id, memory_mb FROM zatabase.functions WHERE id = $1::uuid FOR UPDATE",
        &[param(uuid_or_nil(id))],
    )?;
    if locked.rows.is_empty() {
        return Err(not_found(id));
    }
    fits(&info, integer(&locked, "memory_mb")?)?;
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

/// Whether a function with `memory_mb` can run the component: an instance
/// needs at least the memory it starts with.
pub fn fits(info: &ComponentInfo, memory_mb: u64) -> Result<(), ApiError> {
    if u64::from(info.min_memory_mb) > memory_mb {
        return Err(ApiError::unprocessable(format!(
            "the component starts with {} MB of linear memory, more than the function's \
             `memory_mb` ({memory_mb}), so no call of it could run; raise `memory_mb` or build \
             a smaller component",
            info.min_memory_mb
        )));
    }
    Ok(())
}

/// The component of a deployment (`sha256`, its `version`), checked again
/// on this host: one stored by an older host may no longer link here.
fn checked_again(tx: &Transaction, sha256: &str, version: u64) -> Result<ComponentInfo, ApiError> {
    let blob = db::tx(
        tx,
        "SELECT wasm FROM zatabase.function_blobs WHERE sha256 = $1",
        &[param(sha256)],
    )?;
    let Some(Value::Scalar(Scalar::Bytes(wasm))) = cell(&blob, 0, "wasm") else {
        return Err(ApiError::internal(format!(
            "version {version}'s component is not stored"
        )));
    };
    functions::prepare(wasm).map_err(|e| {
        ApiError::unprocessable(format!("version {version} cannot run on this host: {e}"))
    })
}

/// Whether the function's active version can run with `memory_mb`; within
/// the transaction that holds the function's row.
pub fn active_fits(tx: &Transaction, function: &str, memory_mb: u64) -> Result<(), ApiError> {
    let active = db::tx(
        tx,
        "SELECT d.sha256, d.version FROM zatabase.functions f
           JOIN zatabase.function_deployments d ON d.id = f.active_deployment_id
         WHERE f.id = $1::uuid",
        &[param(function)],
    )?;
    if active.rows.is_empty() {
        return Ok(());
    }
    let info = checked_again(
        tx,
        &db::text(&active, "sha256")?,
        integer(&active, "version")?,
    )?;
    fits(&info, memory_mb).map_err(|e| {
        ApiError::unprocessable(format!(
            "`memory_mb`: for the active version, {}",
            e.message
        ))
    })
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
    let tx = db::begin()?;
    // The function's and the version's rows held, so that its `memory_mb`
    // stays what the version is checked against, and a deploy cannot prune
    // the version meanwhile (one that pruned it first leaves no row: 404).
    let found = db::tx(
        &tx,
        "SELECT d.id::text AS id, d.version, d.sha256, f.memory_mb
         FROM zatabase.functions f JOIN zatabase.function_deployments d ON d.function_id = f.id
         WHERE f.id = $1::uuid AND (d.id = $2::uuid OR d.version = $3)
         FOR UPDATE OF f, d",
        &[
            param(id),
            param(uuid_or_nil(wanted)),
            version.map_or(Value::Null, |v| Value::Scalar(Scalar::Int32(v))),
        ],
    )?;
    if found.rows.is_empty() {
        return Err(missing());
    }
    let deployment = db::text(&found, "id")?;
    let info = checked_again(
        &tx,
        &db::text(&found, "sha256")?,
        integer(&found, "version")?,
    )?;
    fits(&info, integer(&found, "memory_mb")?)?;
    let activated = db::tx(
        &tx,
        "UPDATE zatabase.functions SET active_deployment_id = $2::uuid, updated_at = now()
         WHERE id = $1::uuid RETURNING id",
        &[param(id), param(&deployment)],
    )?;
    if activated.rows.is_empty() {
        return Err(missing());
    }
    db::commit(tx)?;
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
