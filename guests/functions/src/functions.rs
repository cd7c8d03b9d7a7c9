//! `/v1/functions` and `/v1/functions/:id`: a function's settings.
//!
//! Functions live in the caller's project environment; another tenant's id
//! reads as 404. Reading needs Read on `Functions` (the function by name, or
//! `*` to list), changing it Write.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use zatabase_guest_kit::access::{caller, require};
use zatabase_guest_kit::platform_db::Transaction;
use zatabase_guest_kit::session::{Action, Principal, Resource};
use zatabase_guest_kit::types::{ErrorKind, Value};
use zatabase_guest_kit::values::{json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response, db, functions};

use crate::deployments::{self, collect_unused_components};
use crate::settings::{CreateRequest, Settings, UpdateRequest};

/// A function as the API answers it (secrets by name only).
pub const FUNCTION: &str = "f.id::text AS id, f.name, f.description, f.environment,
    f.variables,
    (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]') FROM jsonb_object_keys(f.secrets) k) AS secrets,
    f.public, f.timeout_ms, f.memory_mb, to_jsonb(f.allowed_outbound_hosts) AS allowed_outbound_hosts,
    CASE WHEN d.id IS NULL THEN NULL ELSE jsonb_build_object(
      'id', d.id, 'version', d.version, 'sha256', d.sha256) END AS active_deployment,
    '/fn/' || f.name AS url,
    to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at,
    to_char(f.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS updated_at
  FROM zatabase.functions f
  LEFT JOIN zatabase.function_deployments d ON d.id = f.active_deployment_id";

/// `POST /v1/functions` → 201 with the function.
pub fn create(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let body: CreateRequest = request.json()?;
    let settings = Settings::from_create(body, &functions::limits())?;
    require(Resource::Functions, Some(&settings.name), Action::Write)?;
    let tx = db::begin()?;
    let id = insert(&tx, &caller, &settings)?;
    db::commit(tx)?;
    Ok(Response::json(201, &find(&caller, &id)?))
}

/// Inserts a function with `settings` in the caller's environment; its id,
/// or 409 when the name is taken, 422 when the environment holds
/// `functions.max_functions` already.
pub fn insert(
    tx: &Transaction,
    caller: &Principal,
    settings: &Settings,
) -> Result<String, ApiError> {
    // The environment's row held first, then the count (a statement of its
    // own, so that it sees what the holder before committed): concurrent
    // creations count each other's functions.
    let environment = [param(&caller.project_id), param(&caller.environment)];
    db::tx(
        tx,
        "SELECT 1 FROM zatabase.environments WHERE project_id = $1::uuid AND name = $2 FOR UPDATE",
        &environment,
    )?;
    let held = db::tx(
        tx,
        "SELECT count(*) AS n FROM zatabase.functions WHERE project_id = $1::uuid AND environment = $2",
        &environment,
    )?;
    let max = functions::limits().max_functions;
    if integer(&held, "n")? >= u64::from(max) {
        return Err(ApiError::unprocessable(format!(
            "an environment holds at most {max} functions (`functions.max_functions`); delete one first"
        )));
    }
    let created = db::tx(
        tx,
        "INSERT INTO zatabase.functions (project_id, environment, name, description, variables,
           secrets, public, timeout_ms, memory_mb, allowed_outbound_hosts, created_by)
         VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9,
           ARRAY(SELECT jsonb_array_elements_text($10::jsonb)), $11::uuid)
         ON CONFLICT (project_id, environment, name) DO NOTHING
         RETURNING id::text AS id",
        &[
            &[param(&caller.project_id), param(&caller.environment)][..],
            &columns(settings),
            &[param(&caller.user_id)],
        ]
        .concat(),
    )?;
    if created.rows.is_empty() {
        return Err(ApiError::new(
            409,
            format!(
                "a function named `{}` already exists in this environment",
                settings.name
            ),
        ));
    }
    db::text(&created, "id")
}

/// `GET /v1/functions?limit=100&after=<name>`: by name, a page at a time
/// (an environment may hold any number, each with up to 1.6 MB of
/// variables); `next_after` (null on the last page) is the `after` of the
/// next.
pub fn list(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    require(Resource::Functions, None, Action::Read)?;
    request.only_query_params(&["limit", "after"])?;
    let limit = crate::telemetry::bounded(request, "limit", 100, 1000)?;
    let after = request.query_param("after")?;
    if after.as_deref().is_some_and(|name| name.contains('\0')) {
        return Err(ApiError::bad_request(
            "`after` must not contain NUL characters",
        ));
    }
    // One more than the page, to tell whether another follows.
    let found = db::query_json(
        &format!(
            "SELECT {FUNCTION} WHERE f.project_id = $1::uuid AND f.environment = $2
               AND ($3::text IS NULL OR f.name > $3)
             ORDER BY f.name LIMIT $4 + 1"
        ),
        &[
            param(&caller.project_id),
            param(&caller.environment),
            after.map_or(Value::Null, param),
            Value::Scalar(zatabase_guest_kit::types::Scalar::Int64(limit)),
        ],
    )?;
    let mut functions = json_rows(&found)?;
    let more = functions.len() as i64 > limit;
    functions.truncate(limit as usize);
    let next_after = match functions.last() {
        Some(last) if more => last["name"].clone(),
        _ => Json::Null,
    };
    Ok(Response::json(
        200,
        &json!({ "functions": functions, "next_after": next_after }),
    ))
}

/// `GET /v1/functions/:id`.
pub fn get(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let function = find(&caller, params.get("id"))?;
    require(Resource::Functions, Some(name(&function)), Action::Read)?;
    Ok(Response::json(200, &function))
}

/// `PUT /v1/functions/:id` → 200 with the function as changed.
pub fn update(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let body: UpdateRequest = request.json()?;
    let id = params.get("id");
    let tx = db::begin()?;
    let current = db::tx(
        &tx,
        "SELECT name, description, variables::text AS variables, secrets::text AS secrets, public,
           timeout_ms, memory_mb, to_jsonb(allowed_outbound_hosts)::text AS hosts
         FROM zatabase.functions
         WHERE id = $1::uuid AND project_id = $2::uuid AND environment = $3 FOR UPDATE",
        &[
            param(uuid_or_nil(id)),
            param(&caller.project_id),
            param(&caller.environment),
        ],
    )?;
    if current.rows.is_empty() {
        return Err(not_found(id));
    }
    let old_name = db::text(&current, "name")?;
    require(Resource::Functions, Some(&old_name), Action::Write)?;
    let parse = |column: &str| -> Result<Json, ApiError> {
        serde_json::from_str(&db::text(&current, column)?)
            .map_err(|e| ApiError::internal(format!("stored `{column}`: {e}")))
    };
    let settings = Settings {
        name: old_name.clone(),
        description: db::text(&current, "description")?,
        variables: serde_json::from_value(parse("variables")?).unwrap_or_default(),
        secrets: serde_json::from_value(parse("secrets")?).unwrap_or_default(),
        public: zatabase_guest_kit::values::cell(&current, 0, "public")
            .and_then(zatabase_guest_kit::values::boolean)
            .unwrap_or(false),
        timeout_ms: integer(&current, "timeout_ms")?,
        memory_mb: integer(&current, "memory_mb")?,
        allowed_outbound_hosts: serde_json::from_value(parse("hosts")?).unwrap_or_default(),
    }
    .updated(body, &functions::limits())?;
    if settings.name != old_name {
        require(Resource::Functions, Some(&settings.name), Action::Write)?;
    }
    // Less memory than the active version starts with would fail its every
    // call: refused, as a deploy of that version would be.
    if settings.memory_mb < integer(&current, "memory_mb")? {
        deployments::active_fits(&tx, id, settings.memory_mb)?;
    }
    let updated = tx.execute(
        "UPDATE zatabase.functions SET name = $2, description = $3, variables = $4::jsonb,
           secrets = $5::jsonb, public = $6, timeout_ms = $7, memory_mb = $8,
           allowed_outbound_hosts = ARRAY(SELECT jsonb_array_elements_text($9::jsonb)),
           updated_at = now()
         WHERE id = $1::uuid",
        &[&[param(id)][..], &columns(&settings)].concat(),
    );
    match updated {
        Err(e) if e.kind == ErrorKind::UniqueViolation => {
            return Err(ApiError::new(
                409,
                format!(
                    "a function named `{}` already exists in this environment",
                    settings.name
                ),
            ));
        }
        other => other.map_err(db::internal)?,
    };
    db::commit(tx)?;
    functions::forget(id);
    Ok(Response::json(200, &find(&caller, id)?))
}

/// `DELETE /v1/functions/:id` → 204; `/fn/:name` answers 404 from then on.
/// Its deployments go with it, and their components unless another
/// deployment shares them.
pub fn delete(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let id = params.get("id");
    let function = find(&caller, id)?;
    require(Resource::Functions, Some(name(&function)), Action::Write)?;
    db::query(
        "DELETE FROM zatabase.functions WHERE id = $1::uuid",
        &[param(id)],
    )?;
    // Forgotten first: the collection can wait on another deploy's locks,
    // and this host would serve the function meanwhile.
    functions::forget(id);
    collect_unused_components();
    Ok(Response::no_content())
}

/// The function `id` in the caller's environment, as the API answers it.
pub fn find(caller: &Principal, id: &str) -> Result<Json, ApiError> {
    let found = db::query_json(
        &format!(
            "SELECT {FUNCTION} WHERE f.id = $1::uuid AND f.project_id = $2::uuid
               AND f.environment = $3"
        ),
        &[
            param(uuid_or_nil(id)),
            param(&caller.project_id),
            param(&caller.environment),
        ],
    )?;
    json_rows(&found)?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(id))
}

pub fn name(function: &Json) -> &str {
    function["name"].as_str().unwrap_or_default()
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no function `{id}` in this environment"))
}

/// `id` if it is a UUID, else the nil UUID (which names nothing), so a
/// malformed id is a 404 like any unknown one, not a SQL error.
pub fn uuid_or_nil(id: &str) -> &str {
    let hex = id.bytes().filter(|b| *b != b'-').count();
    let shaped = id.len() == 36
        && hex == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && [8, 13, 18, 23].iter().all(|i| id.as_bytes()[*i] == b'-');
    if shaped {
        id
    } else {
        "00000000-0000-0000-0000-000000000000"
    }
}

/// The settings as statement parameters, in the table's column order
/// (name, description, variables, secrets, public, timeout_ms, memory_mb,
/// allowed_outbound_hosts).
fn columns(settings: &Settings) -> [Value; 8] {
    [
        param(&settings.name),
        param(&settings.description),
        json_param(&settings.variables),
        json_param(&settings.secrets),
        Value::Scalar(zatabase_guest_kit::types::Scalar::Boolean(settings.public)),
        int(settings.timeout_ms),
        int(settings.memory_mb),
        param(json!(settings.allowed_outbound_hosts).to_string()),
    ]
}

fn json_param(map: &BTreeMap<String, String>) -> Value {
    param(json!(map).to_string())
}

fn int(n: u64) -> Value {
    Value::Scalar(zatabase_guest_kit::types::Scalar::Int64(
        i64::try_from(n).unwrap_or(i64::MAX),
    ))
}

pub fn integer(
    result: &zatabase_guest_kit::types::QueryResult,
    column: &str,
) -> Result<u64, ApiError> {
    use zatabase_guest_kit::types::Scalar;
    match zatabase_guest_kit::values::cell(result, 0, column) {
        Some(Value::Scalar(Scalar::Int32(n))) => Ok(u64::try_from(*n).unwrap_or(0)),
        Some(Value::Scalar(Scalar::Int64(n))) => Ok(u64::try_from(*n).unwrap_or(0)),
        _ => Err(ApiError::internal(format!("no integer `{column}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::uuid_or_nil;

    #[test]
    fn malformed_ids_name_nothing() {
        let id = "0b7e8f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(uuid_or_nil(id), id);
        for bad in [
            "",
            "x",
            "0b7e8f3a1c2d4e5f8a9b0c1d2e3f4a5b",
            "0b7e8f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5g",
        ] {
            assert_eq!(uuid_or_nil(bad), "00000000-0000-0000-0000-000000000000");
        }
    }
}
