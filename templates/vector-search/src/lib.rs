//! The `vector-search` template: embeddings and their documents in a table
//! of the tenant's, nearest-neighbour search by pgvector, over Spin's
//! PostgreSQL interface (`spin_sdk::pg3`).
//!
//! | request | answer |
//! |---|---|
//! | `PUT /<id>` `{"embedding": [..], "document": {..}}` | 200 `{"id"}` (insert or replace) |
//! | `POST /search` `{"embedding": [..], "k"?: 10, "metric"?: "cosine" \| "l2" \| "inner_product"}` | 200 `{"results": [{"id", "distance", "document"}]}`, nearest first |
//! | `DELETE /<id>` | 204, or 404 |
//!
//! An embedding of another length than the stored ones is a 400 (pgvector
//! refuses to compare them): the first one stored sets the length.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::pg3::{Connection, Decode, ParameterValue};
use spin_sdk::variables;

fn answer(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

fn error(status: u16, message: &str) -> Response {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    };
    answer(
        status,
        json!({ "error": reason, "message": message, "status": status }),
    )
}

/// The table, created if missing, and checked to be the one this template
/// makes: `CREATE TABLE IF NOT EXISTS` would take any relation of that name
/// (another app's table, a view) for it. Checked once an instance.
fn ensure_table(
    db: &Connection,
    table: &str,
    create: &str,
    columns: &[(&str, &str)],
) -> Result<(), Response> {
    static READY: AtomicBool = AtomicBool::new(false);
    if READY.load(Ordering::Relaxed) {
        return Ok(());
    }
    // Two first requests at once race to create it; the loser's error
    // (a duplicate type) is gone on the second try.
    if db.execute(create, &[]).is_err() {
        db.execute(create, &[])
            .map_err(|e| error(500, &format!("creating {table}: {e}")))?;
    }
    let found = db
        .query(
            "SELECT c.relkind::text, a.attname::text, format_type(a.atttypid, NULL)
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE c.oid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[ParameterValue::Str(table.to_owned())],
        )
        .map_err(|e| error(500, &format!("reading {table}'s columns: {e}")))?;
    let shape: Vec<(String, String, String)> = found
        .rows
        .iter()
        .filter_map(|row| {
            Some((
                String::decode(&row[0]).ok()?,
                String::decode(&row[1]).ok()?,
                String::decode(&row[2]).ok()?,
            ))
        })
        .collect();
    let fits = shape.len() == columns.len()
        && shape
            .iter()
            .zip(columns)
            .all(|((kind, name, ty), (want_name, want_ty))| {
                kind == "r"
                    && name == want_name
                    && (ty == want_ty || ty.ends_with(&format!(".{want_ty}")))
            });
    if !fits {
        let has: Vec<String> = shape
            .iter()
            .map(|(_, name, ty)| format!("{name} {ty}"))
            .collect();
        let wants: Vec<String> = columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        return Err(error(
            409,
            &format!(
                "{table} is not this function's table: it has ({}), this function keeps ({}); \
                 install it again with another `table`",
                has.join(", "),
                wants.join(", ")
            ),
        ));
    }
    READY.store(true, Ordering::Relaxed);
    Ok(())
}

/// The table's name, quoted, if it is a plain lower-case identifier (quoted,
/// a reserved word such as `order` names a table too).
fn table() -> Option<String> {
    let name = variables::get("table").unwrap_or_else(|_| "embeddings".to_owned());
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    plain.then(|| format!("\"{name}\""))
}

/// pgvector's most dimensions.
const MAX_DIMENSIONS: usize = 16_000;

/// `[1,2,3]` and its length from a JSON array of numbers, each within a
/// `real`'s range (what pgvector stores), or the 400 to answer.
fn vector(value: &Value) -> Result<(String, usize), Response> {
    let numbers: Option<Vec<f64>> = value
        .as_array()
        .and_then(|a| a.iter().map(Value::as_f64).collect());
    let numbers = numbers
        .filter(|n| (1..=MAX_DIMENSIONS).contains(&n.len()))
        .filter(|n| n.iter().all(|x| x.is_finite() && x.abs() <= f64::from(f32::MAX)))
        .ok_or_else(|| {
            error(
                400,
                &format!(
                    "`embedding` must be an array of 1 to {MAX_DIMENSIONS} numbers, each within a 32-bit float's range"
                ),
            )
        })?;
    let text = numbers
        .iter()
        .map(f64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    Ok((format!("[{text}]"), numbers.len()))
}

/// Whether `value` holds a NUL character anywhere, keys included.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    // A failure of the database is answered in the platform's error shape.
    serve(request).unwrap_or_else(|e| error(500, &e.to_string()))
}

fn serve(request: Request) -> anyhow::Result<Response> {
    let Some(table) = table() else {
        return Ok(error(500, "the `table` variable is not a plain table name"));
    };
    let db = Connection::open("postgres://tenant")?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY,
           embedding extensions.vector NOT NULL, document jsonb NOT NULL DEFAULT '{{}}')"
    );
    let columns = [
        ("id", "text"),
        ("embedding", "vector"),
        ("document", "jsonb"),
    ];
    if let Err(response) = ensure_table(&db, &table, &create, &columns) {
        return Ok(response);
    }
    let path = request
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| request.path())
        .trim_matches('/')
        .to_owned();
    let body = || serde_json::from_slice::<Value>(request.body()).ok();
    Ok(match (request.method(), path.as_str()) {
        (Method::Post, "search") => {
            let Some(body) = body() else {
                return Ok(error(400, "expected a JSON body"));
            };
            let (embedding, dimensions) = match vector(&body["embedding"]) {
                Ok(vector) => vector,
                Err(response) => return Ok(response),
            };
            let k = match &body["k"] {
                Value::Null => Some(10),
                k => k.as_i64().filter(|k| (1..=1000).contains(k)),
            };
            let Some(k) = k else {
                return Ok(error(400, "`k` must be a whole number from 1 to 1000"));
            };
            let metric = match &body["metric"] {
                Value::Null => Some("cosine"),
                metric => metric.as_str(),
            };
            let operator = match metric {
                Some("cosine") => "<=>",
                Some("l2") => "<->",
                Some("inner_product") => "<#>",
                _ => return Ok(error(400, "`metric` is cosine, l2 or inner_product")),
            };
            // Only embeddings of the query's length are candidates: the
            // length check of a PUT and its write are two statements, so
            // two first PUTs of different lengths at once can both be
            // stored (and SQL can write any), and a distance between
            // vectors of different lengths is an error.
            let found = db.query(
                &format!(
                    "SELECT id, (embedding OPERATOR(extensions.{operator}) $1::extensions.vector)::float8 AS distance,
                       document::text FROM {table}
                     WHERE extensions.vector_dims(embedding) = $3
                     ORDER BY embedding OPERATOR(extensions.{operator}) $1::extensions.vector LIMIT $2"
                ),
                &[
                    ParameterValue::Str(embedding),
                    ParameterValue::Int64(k),
                    ParameterValue::Int64(dimensions as i64),
                ],
            );
            match found {
                Ok(rows) if rows.rows.is_empty() => {
                    // None of this length: a mistake, if others are stored.
                    let other = db.query(
                        &format!("SELECT extensions.vector_dims(embedding)::int8 FROM {table} LIMIT 1"),
                        &[],
                    )?;
                    match other.rows.first() {
                        Some(row) => error(
                            400,
                            &format!(
                                "`embedding` has {dimensions} numbers; the stored ones have {}",
                                i64::decode(&row[0])?
                            ),
                        ),
                        None => answer(200, json!({ "results": [] })),
                    }
                }
                Ok(rows) => {
                    let results: anyhow::Result<Vec<Value>> = rows
                        .rows
                        .iter()
                        .map(|row| {
                            Ok(json!({
                                "id": String::decode(&row[0])?,
                                "distance": f64::decode(&row[1])?,
                                "document": serde_json::from_str::<Value>(&String::decode(&row[2])?)?,
                            }))
                        })
                        .collect();
                    answer(200, json!({ "results": results? }))
                }
                Err(e) => return Err(e.into()),
            }
        }
        (Method::Put, id) if !id.is_empty() && !id.contains('/') => {
            let Some(body) = body() else {
                return Ok(error(400, "expected a JSON body"));
            };
            let (embedding, dimensions) = match vector(&body["embedding"]) {
                Ok(vector) => vector,
                Err(response) => return Ok(response),
            };
            let stored = db.query(
                &format!("SELECT extensions.vector_dims(embedding)::int8 FROM {table} WHERE id <> $1 LIMIT 1"),
                &[ParameterValue::Str(id.to_owned())],
            )?;
            if let Some(row) = stored.rows.first() {
                let length = i64::decode(&row[0])?;
                if length != dimensions as i64 {
                    return Ok(error(
                        400,
                        &format!(
                            "`embedding` has {dimensions} numbers; the stored ones have {length}"
                        ),
                    ));
                }
            }
            let document = match &body["document"] {
                Value::Null => json!({}),
                // Postgres's jsonb holds no NUL character.
                document @ Value::Object(_) if holds_nul(document) => {
                    return Ok(error(
                        400,
                        "`document` holds a NUL character (\\u0000), which Postgres's jsonb cannot store",
                    ));
                }
                document @ Value::Object(_) => document.clone(),
                _ => return Ok(error(400, "`document` must be a JSON object")),
            };
            db.execute(
                &format!(
                    "INSERT INTO {table} (id, embedding, document) VALUES ($1, $2::extensions.vector, $3::jsonb)
                     ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, document = EXCLUDED.document"
                ),
                &[
                    ParameterValue::Str(id.to_owned()),
                    ParameterValue::Str(embedding),
                    ParameterValue::Str(document.to_string()),
                ],
            )?;
            answer(200, json!({ "id": id }))
        }
        (Method::Delete, id) if !id.is_empty() => {
            let deleted = db.execute(
                &format!("DELETE FROM {table} WHERE id = $1"),
                &[ParameterValue::Str(id.to_owned())],
            )?;
            if deleted == 0 {
                error(404, "no such id")
            } else {
                Response::builder().status(204).build()
            }
        }
        _ => error(404, "PUT /<id>, POST /search or DELETE /<id>"),
    })
}
