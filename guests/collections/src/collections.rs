//! `/v1/collections`, `/v1/collections/:name` and its projection.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value as Json, json};
use zatabase_guest_kit::access::require;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::sql::{self, Transaction};
use zatabase_guest_kit::types::{ErrorKind, Value};
use zatabase_guest_kit::values::{json_rows, param, param_from_json};
use zatabase_guest_kit::{ApiError, Params, Request, Response, tenant};

use crate::projection::{self, ColumnSpec, Projection};
use crate::sql_error;

/// The tenant's collection settings, created with its first collection.
const SETTINGS: &str = "CREATE TABLE IF NOT EXISTS zatabase_collections (
    name text PRIMARY KEY,
    projection jsonb NOT NULL DEFAULT '{}',
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now())";

/// Rows a backfill statement rewrites at once.
const BACKFILL_BATCH: i64 = 1000;
/// How long a projection change backfills before it answers; the rest is
/// done by the next `PUT` of the same projection (or shows as pending).
const BACKFILL_BUDGET_MS: u64 = 8000;

/// A collection's settings.
#[derive(Debug, Clone)]
pub struct Collection {
    pub name: String,
    pub projection: Projection,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Deserialize)]
struct SettingsRow {
    name: String,
    projection: BTreeMap<String, ColumnSpec>,
    version: i64,
    created_at: String,
    updated_at: String,
}

impl SettingsRow {
    fn into_collection(self) -> Result<Collection, ApiError> {
        Ok(Collection {
            projection: projection::parse(&self.projection)?,
            name: self.name,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The statement (by name, `$1`) reading settings.
const READ: &str = "SELECT name, projection, version, created_at, updated_at
    FROM zatabase_collections";

/// pgvector's types: they live in schema `extensions`, after the tenant's
/// on its search path, so a table of the same name (whose row type takes
/// the name) would hide them from every statement of the tenant.
const EXTENSION_TYPES: [&str; 3] = ["vector", "halfvec", "sparsevec"];

/// A name that can be a collection: an identifier, not the platform's.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if !projection::valid_identifier(name)
        || name.starts_with("zatabase_")
        || name.starts_with("pg_")
    {
        return Err(ApiError::unprocessable(format!(
            "`{name}` is not a collection name: 1-63 of a-z, 0-9 and _, starting with a letter, \
             not starting with zatabase_ or pg_"
        )));
    }
    Ok(())
}

/// A name a new collection can take: [`check_name`]'s, and not one of the
/// types the tenant's statements use (a collection made so before keeps
/// its name, and can be deleted).
fn check_new_name(name: &str) -> Result<(), ApiError> {
    check_name(name)?;
    if EXTENSION_TYPES.contains(&name) {
        return Err(ApiError::unprocessable(format!(
            "`{name}` is not a collection name: it would hide pgvector's type of that name"
        )));
    }
    Ok(())
}

/// `"name"`, any `"` in it doubled: identifiers the API takes are checked
/// before they reach SQL, but a collection's row can be written through
/// `/v1/sql` with any name.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn no_collection(name: &str) -> ApiError {
    ApiError::not_found(format!("no collection `{name}`"))
}

/// Every collection, or none when the tenant has never made one.
fn all() -> Result<Vec<Collection>, ApiError> {
    match sql::execute_json(&format!("{READ} ORDER BY name"), &[]) {
        Ok(result) => rows(&result),
        Err(e) if e.kind == ErrorKind::UndefinedObject => Ok(Vec::new()),
        Err(e) => Err(sql_error(e)),
    }
}

fn rows(result: &zatabase_guest_kit::types::JsonResult) -> Result<Vec<Collection>, ApiError> {
    serde_json::from_str::<Vec<SettingsRow>>(&result.rows)
        .map_err(|e| ApiError::internal(format!("reading collection settings: {e}")))?
        .into_iter()
        .map(SettingsRow::into_collection)
        .collect()
}

/// One collection's settings (404 when there is none by that name).
pub fn find(name: &str) -> Result<Collection, ApiError> {
    check_name(name).map_err(|_| no_collection(name))?;
    match sql::execute_json(&format!("{READ} WHERE name = $1"), &[param(name)]) {
        Ok(result) => rows(&result)?.pop().ok_or_else(|| no_collection(name)),
        Err(e) if e.kind == ErrorKind::UndefinedObject => Err(no_collection(name)),
        Err(e) => Err(sql_error(e)),
    }
}

/// One collection's settings inside `tx`, locked against a concurrent
/// projection change (`share`) or for one (`update`).
pub fn find_locked(tx: &Transaction, name: &str, lock: &str) -> Result<Collection, ApiError> {
    check_name(name).map_err(|_| no_collection(name))?;
    let found = tx
        .execute(
            &format!(
                "SELECT name, projection::text AS projection, version::int8 AS version,
                    created_at::text AS created_at, updated_at::text AS updated_at
                 FROM zatabase_collections WHERE name = $1 FOR {lock}"
            ),
            &[param(name)],
        )
        .map_err(|e| match e.kind {
            ErrorKind::UndefinedObject => no_collection(name),
            _ => sql_error(e),
        })?;
    let text = |column: &str| zatabase_guest_kit::db::optional_text(&found, column);
    let Some(projection) = text("projection") else {
        return Err(no_collection(name));
    };
    let version = match zatabase_guest_kit::values::cell(&found, 0, "version") {
        Some(Value::Scalar(zatabase_guest_kit::types::Scalar::Int64(v))) => *v,
        _ => return Err(ApiError::internal("reading a collection's version")),
    };
    let specs: BTreeMap<String, ColumnSpec> = serde_json::from_str(&projection)
        .map_err(|e| ApiError::internal(format!("reading a projection: {e}")))?;
    Ok(Collection {
        name: name.to_owned(),
        projection: projection::parse(&specs)?,
        version,
        created_at: text("created_at").unwrap_or_default(),
        updated_at: text("updated_at").unwrap_or_default(),
    })
}

/// What the API answers about a collection: its settings, and its table's
/// count, size and indexes.
fn describe(collection: &Collection) -> Result<Json, ApiError> {
    let table = quoted(&collection.name);
    let stats = sql::execute_json(
        &format!(
            "SELECT (SELECT count(*) FROM {table}) AS document_count,
                pg_total_relation_size(to_regclass($1)) AS size_bytes,
                (SELECT count(*) FROM {table} WHERE projection_version < $2) AS pending,
                coalesce((SELECT jsonb_agg(jsonb_build_object('name', indexname, 'definition', indexdef)
                          ORDER BY indexname)
                   FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $3), '[]') AS indexes"
        ),
        &[
            param(table.as_str()),
            Value::Scalar(zatabase_guest_kit::types::Scalar::Int64(collection.version)),
            param(collection.name.as_str()),
        ],
    )
;
    let stats = match stats {
        Ok(stats) => json_rows(&stats)?.pop().unwrap_or_default(),
        // Its table was dropped outside the API (through `/v1/sql`): said
        // so, and the list still answers (the collection can be deleted).
        Err(e) if e.kind == ErrorKind::UndefinedObject => json!({ "table_missing": true }),
        Err(e) => return Err(sql_error(e)),
    };
    let mut described = json!({
        "name": collection.name,
        "document_count": stats["document_count"],
        "size_bytes": stats["size_bytes"],
        "projection": projection::specs(&collection.projection),
        "backfill": backfill_state(stats["pending"].as_i64().unwrap_or(0)),
        "indexes": stats["indexes"],
        "created_at": collection.created_at,
        "updated_at": collection.updated_at,
    });
    if stats["table_missing"] == true {
        described["table_missing"] = json!(true);
    }
    Ok(described)
}

fn backfill_state(pending: i64) -> Json {
    if pending == 0 {
        json!({ "status": "complete", "pending": 0 })
    } else {
        json!({ "status": "pending", "pending": pending })
    }
}

/// `GET /v1/collections`
pub fn list(_: &Request, _: &Params) -> Result<Response, ApiError> {
    require(Resource::Collections, None, Action::Read)?;
    let collections = all()?.iter().map(describe).collect::<Result<Vec<_>, _>>()?;
    Ok(Response::json(200, &json!({ "collections": collections })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    projection: BTreeMap<String, ColumnSpec>,
}

/// `POST /v1/collections`: the settings row and the table, in one
/// transaction (a taken name is 409 and leaves nothing).
pub fn create(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: CreateRequest = request.json()?;
    check_new_name(&body.name)?;
    require(Resource::Collections, Some(&body.name), Action::Write)?;
    let projection = projection::parse(&body.projection)?;
    tenant::create_if_missing(SETTINGS).map_err(sql_error)?;
    let tx = sql::begin().map_err(sql_error)?;
    let columns: String = projection
        .values()
        .map(|c| format!(",\n    {} {}", quoted(&c.name), c.ty.sql()))
        .collect();
    let taken = || {
        ApiError::new(
            409,
            format!("a collection, table or type `{}` already exists", body.name),
        )
    };
    tx.execute(
        "INSERT INTO zatabase_collections (name, projection) VALUES ($1, $2::jsonb)",
        &[
            param(body.name.as_str()),
            param_from_json(&json!(projection::specs(&projection))),
        ],
    )
    .map_err(|e| match e.kind {
        ErrorKind::UniqueViolation => taken(),
        _ => sql_error(e),
    })?;
    tx.execute(
        &format!(
            "CREATE TABLE {} (
    id text PRIMARY KEY,
    document jsonb NOT NULL,
    projection_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(){columns})",
            quoted(&body.name)
        ),
        &[],
    )
    .map_err(|e| match e.sqlstate.as_deref() {
        // duplicate_table, or duplicate_object (a type of that name, whose
        // name the table's row type would take): made through /v1/sql.
        Some("42P07" | "42710") => taken(),
        _ => sql_error(e),
    })?;
    tx.commit().map_err(sql_error)?;
    Ok(Response::json(201, &describe(&find(&body.name)?)?))
}

/// `GET /v1/collections/:name`
pub fn get(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let name = params.get("name");
    require(Resource::Collections, Some(name), Action::Read)?;
    Ok(Response::json(200, &describe(&find(name)?)?))
}

/// `DELETE /v1/collections/:name`: the table and its settings.
pub fn delete(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let name = params.get("name");
    require(Resource::Collections, Some(name), Action::Admin)?;
    let tx = sql::begin().map_err(sql_error)?;
    let collection = find_locked(&tx, name, "UPDATE")?;
    tx.execute(
        "DELETE FROM zatabase_collections WHERE name = $1",
        &[param(name)],
    )
    .map_err(sql_error)?;
    tx.execute(
        &format!("DROP TABLE IF EXISTS {}", quoted(&collection.name)),
        &[],
    )
    .map_err(sql_error)?;
    tx.commit().map_err(sql_error)?;
    Ok(Response::no_content())
}

/// `GET /v1/collections/:name/projection`
pub fn get_projection(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let name = params.get("name");
    require(Resource::Collections, Some(name), Action::Read)?;
    let collection = find(name)?;
    let described = describe(&collection)?;
    Ok(Response::json(
        200,
        &json!({
            "projection": described["projection"],
            "backfill": described["backfill"],
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectionRequest {
    projection: BTreeMap<String, ColumnSpec>,
}

/// `PUT /v1/collections/:name/projection`: the columns change in one
/// transaction (a column whose type or path changed is made anew), then
/// existing documents are backfilled in batches, each its own statement,
/// so readers are never blocked and progress shows in `backfill`. Past the
/// time budget the answer is 202 with what is pending; the same `PUT`
/// again goes on where it stopped.
pub fn put_projection(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let name = params.get("name");
    require(Resource::Collections, Some(name), Action::Write)?;
    let body: ProjectionRequest = request.json()?;
    let wanted = projection::parse(&body.projection)?;

    let tx = sql::begin().map_err(sql_error)?;
    let current = find_locked(&tx, name, "UPDATE")?;
    let table = quoted(name);
    let mut version = current.version;
    if current.projection != wanted {
        for (column, old) in &current.projection {
            if wanted.get(column) != Some(old) {
                tx.execute(
                    &format!("ALTER TABLE {table} DROP COLUMN {}", quoted(column)),
                    &[],
                )
                .map_err(sql_error)?;
            }
        }
        for (column, new) in &wanted {
            if current.projection.get(column) != Some(new) {
                tx.execute(
                    &format!(
                        "ALTER TABLE {table} ADD COLUMN {} {}",
                        quoted(column),
                        new.ty.sql()
                    ),
                    &[],
                )
                .map_err(sql_error)?;
            }
        }
        version += 1;
        tx.execute(
            "UPDATE zatabase_collections SET projection = $2::jsonb, version = $3, updated_at = now()
             WHERE name = $1",
            &[
                param(name),
                param_from_json(&json!(projection::specs(&wanted))),
                Value::Scalar(zatabase_guest_kit::types::Scalar::Int64(version)),
            ],
        )
        .map_err(sql_error)?;
    }
    tx.commit().map_err(sql_error)?;

    let collection = Collection {
        projection: wanted,
        version,
        ..current
    };
    let (status, backfill) = match backfill(&collection)? {
        Backfill::Pending(0) => (200, backfill_state(0)),
        Backfill::Pending(pending) => (202, backfill_state(pending)),
        Backfill::Superseded => (200, json!({ "status": "superseded" })),
    };
    Ok(Response::json(
        status,
        &json!({
            "projection": projection::specs(&collection.projection),
            "backfill": backfill,
        }),
    ))
}

/// How far a `PUT …/projection`'s rewrite of older documents got.
enum Backfill {
    /// Documents still under an older projection.
    Pending(i64),
    /// A later change replaced this projection meanwhile (and rewrites
    /// them for its own).
    Superseded,
}

/// Whether the collection's projection is no longer `collection`'s (a later
/// change replaced it, or the collection is gone).
fn superseded(collection: &Collection) -> Result<bool, ApiError> {
    let stored = sql::execute_json(
        "SELECT version FROM zatabase_collections WHERE name = $1",
        &[param(collection.name.as_str())],
    )
    .map_err(sql_error)?;
    Ok(json_rows(&stored)?
        .pop()
        .and_then(|row| row["version"].as_i64())
        != Some(collection.version))
}

/// Rewrites documents written under an older projection, a batch per
/// statement, until none is left or the budget is spent. A value that does
/// not fit its column's type becomes NULL there. Batches go through the
/// ids in order (each starts after the last one's), so a large
/// collection's rewrite does not rescan what it has done; a row a later
/// projection already rewrote is left alone.
fn backfill(collection: &Collection) -> Result<Backfill, ApiError> {
    let table = quoted(&collection.name);
    let mut sets = vec!["projection_version = $1".to_owned()];
    for column in collection.projection.values() {
        sets.push(format!(
            "{} = {}",
            quoted(&column.name),
            projection::expression(column, "t.document", projection::Fit::Lenient)
        ));
    }
    let statement = format!(
        "WITH batch AS (
           SELECT id FROM {table} WHERE projection_version < $1 AND id > $2
           ORDER BY id LIMIT {BACKFILL_BATCH}),
         done AS (
           UPDATE {table} AS t SET {} FROM batch
           WHERE t.id = batch.id AND t.projection_version < $1)
         SELECT max(id) AS last FROM batch",
        sets.join(", ")
    );
    let version = Value::Scalar(zatabase_guest_kit::types::Scalar::Int64(collection.version));
    let started = std::time::Instant::now();
    let mut last = String::new();
    let pending = loop {
        let done = match sql::execute_json(&statement, &[version.clone(), param(last.as_str())]) {
            Ok(done) => done,
            // A later change (or a delete) came in between: a column this
            // projection named is gone, or has another type now.
            Err(_) if superseded(collection)? => return Ok(Backfill::Superseded),
            Err(e) => return Err(sql_error(e)),
        };
        match json_rows(&done)?
            .pop()
            .and_then(|row| row["last"].as_str().map(str::to_owned))
        {
            Some(id) => last = id,
            None => break 0,
        }
        if started.elapsed() > std::time::Duration::from_millis(BACKFILL_BUDGET_MS) {
            let left = sql::execute_json(
                &format!("SELECT count(*) AS n FROM {table} WHERE projection_version < $1"),
                std::slice::from_ref(&version),
            )
            .map_err(sql_error)?;
            break json_rows(&left)?
                .pop()
                .and_then(|row| row["n"].as_i64())
                .unwrap_or(0);
        }
    };
    // Done or out of time, it may have been replaced meanwhile.
    if superseded(collection)? {
        return Ok(Backfill::Superseded);
    }
    Ok(Backfill::Pending(pending))
}
