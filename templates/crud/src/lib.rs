//! The `crud` template: JSON documents in a table of the tenant's, over
//! Spin's PostgreSQL interface (`spin_sdk::pg3`; on Zatabase every
//! connection reaches the function's own project environment).
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | 200 `{"items": [{"id", "data", "created_at", "updated_at"}]}` (newest first, at most 100) |
//! | `POST /` (a JSON object) | 201 the item |
//! | `GET /<id>` | 200 the item, or 404 |
//! | `PUT /<id>` (a JSON object) | 200 the item replaced, or 404 |
//! | `DELETE /<id>` | 204, or 404 |

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::pg3::{Connection, Decode, ParameterValue, RowSet};
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
    let name = variables::get("table").unwrap_or_else(|_| "items".to_owned());
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    plain.then(|| format!("\"{name}\""))
}

fn items(rows: &RowSet) -> anyhow::Result<Vec<Value>> {
    rows.rows
        .iter()
        .map(|row| {
            Ok(json!({
                "id": i64::decode(&row[0])?,
                "data": serde_json::from_str::<Value>(&String::decode(&row[1])?)?,
                "created_at": String::decode(&row[2])?,
                "updated_at": String::decode(&row[3])?,
            }))
        })
        .collect()
}

/// Whether a NUL character is anywhere in `value`, keys included.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A JSON object body, or the 400 to answer.
fn object(request: &Request) -> Result<String, Response> {
    match serde_json::from_slice::<Value>(request.body()) {
        // Postgres's jsonb holds no NUL character.
        Ok(value @ Value::Object(_)) if holds_nul(&value) => Err(error(
            400,
            "the document holds a NUL character (\\u0000), which Postgres's jsonb cannot store",
        )),
        Ok(value @ Value::Object(_)) => Ok(value.to_string()),
        Ok(_) => Err(error(422, "the body must be a JSON object")),
        Err(e) => Err(error(400, &format!("malformed JSON: {e}"))),
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
        "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, data jsonb NOT NULL,
           created_at timestamptz NOT NULL DEFAULT now(),
           updated_at timestamptz NOT NULL DEFAULT now())"
    );
    let columns = [
        ("id", "bigint"),
        ("data", "jsonb"),
        ("created_at", "timestamp with time zone"),
        ("updated_at", "timestamp with time zone"),
    ];
    if let Err(response) = ensure_table(&db, &table, &create, &columns) {
        return Ok(response);
    }
    let columns =
        "id, data::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
    let path = request
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| request.path())
        .trim_matches('/')
        .to_owned();
    if path.is_empty() {
        return Ok(match request.method() {
            Method::Get => {
                let rows = db.query(
                    &format!("SELECT {columns} FROM {table} ORDER BY id DESC LIMIT 100"),
                    &[],
                )?;
                answer(200, json!({ "items": items(&rows)? }))
            }
            Method::Post => match object(&request) {
                Ok(data) => {
                    let rows = db.query(
                        &format!(
                            "INSERT INTO {table} (data) VALUES ($1::jsonb) RETURNING {columns}"
                        ),
                        &[ParameterValue::Str(data)],
                    )?;
                    answer(201, items(&rows)?.remove(0))
                }
                Err(response) => response,
            },
            _ => error(405, "GET or POST here"),
        });
    }
    let Ok(id) = path.parse::<i64>() else {
        return Ok(error(404, "no such item"));
    };
    let id = ParameterValue::Int64(id);
    let found = |rows: RowSet| -> anyhow::Result<Response> {
        Ok(match items(&rows)?.pop() {
            Some(item) => answer(200, item),
            None => error(404, "no such item"),
        })
    };
    Ok(match request.method() {
        Method::Get => found(db.query(
            &format!("SELECT {columns} FROM {table} WHERE id = $1"),
            &[id],
        )?)?,
        Method::Put => match object(&request) {
            Ok(data) => found(db.query(
                &format!(
                    "UPDATE {table} SET data = $2::jsonb, updated_at = now() WHERE id = $1 RETURNING {columns}"
                ),
                &[id, ParameterValue::Str(data)],
            )?)?,
            Err(response) => response,
        },
        Method::Delete => {
            let deleted = db.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[id])?;
            if deleted == 0 {
                error(404, "no such item")
            } else {
                Response::builder().status(204).build()
            }
        }
        _ => error(405, "GET, PUT or DELETE here"),
    })
}
