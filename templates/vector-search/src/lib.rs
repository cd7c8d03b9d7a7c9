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
//! refuses to compare them).

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
    answer(status, json!({ "error": message, "status": status }))
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

/// `[1,2,3]` from a JSON array of numbers.
fn vector(value: &Value) -> Option<String> {
    let numbers: Option<Vec<f64>> = value.as_array()?.iter().map(Value::as_f64).collect();
    let numbers = numbers.filter(|n| !n.is_empty() && n.iter().all(|x| x.is_finite()))?;
    Some(format!(
        "[{}]",
        numbers.iter().map(f64::to_string).collect::<Vec<_>>().join(",")
    ))
}

#[http_component]
fn handle(request: Request) -> anyhow::Result<impl IntoResponse> {
    let Some(table) = table() else {
        return Ok(error(500, "the `table` variable is not a plain table name"));
    };
    let db = Connection::open("postgres://tenant")?;
    db.execute(
        &format!(
            "CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY,
               embedding extensions.vector NOT NULL, document jsonb NOT NULL DEFAULT '{{}}')"
        ),
        &[],
    )?;
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
            let Some(embedding) = vector(&body["embedding"]) else {
                return Ok(error(400, "`embedding` must be a non-empty array of numbers"));
            };
            let k = body["k"].as_i64().unwrap_or(10);
            if !(1..=1000).contains(&k) {
                return Ok(error(400, "`k` must be from 1 to 1000"));
            }
            let operator = match body["metric"].as_str().unwrap_or("cosine") {
                "cosine" => "<=>",
                "l2" => "<->",
                "inner_product" => "<#>",
                _ => return Ok(error(400, "`metric` is cosine, l2 or inner_product")),
            };
            let found = db.query(
                &format!(
                    "SELECT id, (embedding OPERATOR(extensions.{operator}) $1::extensions.vector)::float8 AS distance,
                       document::text FROM {table}
                     ORDER BY embedding OPERATOR(extensions.{operator}) $1::extensions.vector LIMIT $2"
                ),
                &[ParameterValue::Str(embedding), ParameterValue::Int64(k)],
            );
            match found {
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
                Err(e) => error(400, &e.to_string()),
            }
        }
        (Method::Put, id) if !id.is_empty() && !id.contains('/') => {
            let Some(body) = body() else {
                return Ok(error(400, "expected a JSON body"));
            };
            let Some(embedding) = vector(&body["embedding"]) else {
                return Ok(error(400, "`embedding` must be a non-empty array of numbers"));
            };
            let document = match &body["document"] {
                Value::Null => json!({}),
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
