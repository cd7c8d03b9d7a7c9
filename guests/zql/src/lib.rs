//! The `zql` route group: the record engine and its query language at
//! `/api/zql/*` (language: docs/zql.md).
//!
//! Records are rows of the tenant's `zatabase_records` table (id,
//! namespace, JSON data, an optional pgvector embedding, times), reached
//! through the host's `sql` capability as the tenant's role, so Postgres
//! keeps tenants apart. A ZQL query is parsed into a syntax tree
//! (`parser`) and compiled into one parameterised statement (`compile`);
//! storage, durability and flushes are `store`'s.

// Natively (unit tests, lints) nothing calls the route group: its entry
// point is the component export, which exists on wasm32 only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod compile;
pub mod lexer;
pub mod parser;
mod store;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json, json};
use zatabase_guest_kit::access::require;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::values::{self, json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response, RouteGroup, Router};

use compile::{CompileError, RECORD_COLUMNS, Shape, compile};
use parser::{Condition, Find, Metric, Near, Statement, Value};

struct Zql;

impl RouteGroup for Zql {
    fn handle(request: Request) -> Response {
        Router::new()
            .route("POST", "/api/zql/query", query)
            .route("POST", "/api/zql/insert", insert)
            .route("POST", "/api/zql/search", search)
            .route("GET", "/api/zql/record/:id", get_record)
            .route("DELETE", "/api/zql/record/:id", delete_record)
            .route("POST", "/api/zql/flush", flush)
            .route("GET", "/api/zql/info", info)
            .handle(&request)
    }
}

zatabase_guest_kit::route_group!(Zql);

fn syntax(error: lexer::SyntaxError) -> ApiError {
    ApiError::bad_request(format!("ZQL syntax error: {error}"))
}

fn invalid(error: CompileError) -> ApiError {
    ApiError::new(
        error.status,
        format!("invalid ZQL query: {}", error.message),
    )
}

/// The action a statement needs on Records.
fn action(statement: &Statement) -> Action {
    match statement {
        Statement::Find(_)
        | Statement::Count { .. }
        | Statement::Aggregate { .. }
        | Statement::Get { .. } => Action::Read,
        Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. } => {
            Action::Write
        }
    }
}

/// A statement's answer: rows read pass through as the host wrote them
/// (JSON text), so a large result is not held again as parsed values.
enum Answer {
    /// `{"results": <rows>}`, and `"truncated": true` when cut.
    Rows {
        rows: String,
        truncated: bool,
    },
    Json(Json),
}

impl Answer {
    fn into_text(self) -> String {
        match self {
            Answer::Rows { rows, truncated } => format!(
                "{{\"results\":{rows}{}}}",
                if truncated { ",\"truncated\":true" } else { "" }
            ),
            Answer::Json(json) => json.to_string(),
        }
    }
}

/// Runs a parsed statement; the API's answer.
fn run(statement: &Statement, params: &BTreeMap<String, Json>) -> Result<Answer, ApiError> {
    require(Resource::Records, None, action(statement))?;
    let sql = compile(statement, params).map_err(invalid)?;
    match sql.shape {
        Shape::Records | Shape::Values => {
            // Cut at the host's result cap (`sql.max_result_bytes`), as
            // `/v1/sql` says it.
            match store::read(&sql.statement, &sql.params)? {
                Some(read) if read.rows != "[]" => Ok(Answer::Rows {
                    rows: read.rows,
                    truncated: read.truncated,
                }),
                // A count or an aggregate over no table is over no records.
                read => Ok(Answer::Rows {
                    rows: Json::Array(empty_values(statement)).to_string(),
                    truncated: read.is_some_and(|r| r.truncated),
                }),
            }
        }
        Shape::Write => {
            let written = match statement {
                Statement::Insert { buffered, .. } => {
                    store::insert(&sql.statement, &sql.params, *buffered)?
                }
                // Updates and deletes of a tenant with no records change none.
                _ => match store::read(&sql.statement, &sql.params)? {
                    Some(result) => result,
                    None => return Ok(Answer::Json(json!({ "results": [], "affected": 0 }))),
                },
            };
            let results = if matches!(statement, Statement::Insert { .. }) {
                json_rows(&written)?
            } else {
                Vec::new()
            };
            Ok(Answer::Json(
                json!({ "results": results, "affected": written.affected_rows }),
            ))
        }
    }
}

/// What `COUNT` and ungrouped aggregates answer over no table: what they
/// answer over a table with no records (counts 0, the rest null). Grouped,
/// there are no groups.
fn empty_values(statement: &Statement) -> Vec<Json> {
    match statement {
        Statement::Count { .. } => vec![json!({ "count": 0 })],
        Statement::Aggregate {
            aggregates,
            group_by: None,
            ..
        } => vec![Json::Object(
            aggregates
                .iter()
                .map(|aggregate| {
                    let none = match aggregate.function {
                        parser::Function::Count => json!(0),
                        _ => Json::Null,
                    };
                    (compile::result_name(aggregate), none)
                })
                .collect(),
        )],
        _ => Vec::new(),
    }
}

/// 422 for a value nested deeper than a record may be (it could be stored,
/// but not read back).
fn shallow_enough(value: &Json, what: &str) -> Result<(), ApiError> {
    if values::depth(value) > values::MAX_DEPTH {
        return Err(ApiError::unprocessable(format!(
            "{what} nests deeper than {} levels",
            values::MAX_DEPTH
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    query: String,
    #[serde(default)]
    params: BTreeMap<String, Json>,
}

/// `POST /api/zql/query`
fn query(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: QueryRequest = request.json()?;
    for (name, value) in &body.params {
        shallow_enough(value, &format!("`params.{name}`"))?;
    }
    let statement = parser::statement(&body.query).map_err(syntax)?;
    let answer = run(&statement, &body.params)?;
    let status = if matches!(statement, Statement::Insert { .. }) {
        201
    } else {
        200
    };
    Ok(Response::json_text(status, answer.into_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InsertRequest {
    namespace: Option<String>,
    id: Option<String>,
    data: Map<String, Json>,
    vector: Option<Vec<f64>>,
    #[serde(default = "yes")]
    durable: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/zql/insert` → 201 `{"id"}`
fn insert(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: InsertRequest = request.json()?;
    let data = Json::Object(body.data);
    shallow_enough(&data, "`data`")?;
    let statement = Statement::Insert {
        namespace: body.namespace.map(|n| Value::Json(Json::String(n))),
        data: Value::Json(data),
        vector: body
            .vector
            .map(|v| Value::Json(Json::Array(v.into_iter().map(Json::from).collect()))),
        id: body.id.map(|i| Value::Json(Json::String(i))),
        buffered: !body.durable,
    };
    let Answer::Json(answer) = run(&statement, &BTreeMap::new())? else {
        return Err(ApiError::internal("an insert answered rows"));
    };
    let id = answer["results"][0]["id"].clone();
    Ok(Response::json(201, &json!({ "id": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    namespace: Option<String>,
    vector: Vec<f64>,
    k: i64,
    metric: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, Json>,
}

/// `POST /api/zql/search`: the k records nearest `vector` among those the
/// filter keeps (applied before ranking); `score` is the metric's
/// distance, smaller nearer.
fn search(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: SearchRequest = request.json()?;
    let metric = match &body.metric {
        None => Metric::default(),
        Some(name) => Metric::parse(name).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "unknown metric `{name}`: expected l2, cosine or inner_product"
            ))
        })?,
    };
    if !(1..=compile::MAX_LIMIT).contains(&body.k) {
        return Err(ApiError::unprocessable(format!(
            "`k` must be between 1 and {}, got {}",
            compile::MAX_LIMIT,
            body.k
        )));
    }
    let filter: Option<Condition> = body
        .filter
        .as_deref()
        .map(parser::condition)
        .transpose()
        .map_err(syntax)?;
    let statement = Statement::Find(Find {
        namespace: body.namespace.map(|n| Value::Json(Json::String(n))),
        filter,
        near: Some(Near {
            vector: Value::Json(Json::Array(
                body.vector.into_iter().map(Json::from).collect(),
            )),
            metric,
            top: Value::Json(body.k.into()),
        }),
        order: Vec::new(),
        limit: None,
        offset: None,
    });
    let Answer::Rows { rows, truncated } = run(&statement, &body.params)? else {
        return Err(ApiError::internal("a search answered no rows"));
    };
    // Each record as `{id, score, data}`, its values copied as written.
    let found: Vec<Found> = serde_json::from_str(&rows)
        .map_err(|e| ApiError::internal(format!("the host's rows: {e}")))?;
    let results = serde_json::to_string(&found)
        .map_err(|e| ApiError::internal(format!("writing the results: {e}")))?;
    Ok(Response::json_text(
        200,
        Answer::Rows {
            rows: results,
            truncated,
        }
        .into_text(),
    ))
}

/// A record as a search answers it.
#[derive(Deserialize, serde::Serialize)]
struct Found<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    score: &'a RawValue,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn no_record(id: &str) -> ApiError {
    ApiError::not_found(format!("no record `{id}`"))
}

/// `GET /api/zql/record/:id`
fn get_record(_: &Request, params: &Params) -> Result<Response, ApiError> {
    require(Resource::Records, None, Action::Read)?;
    let id = params.get("id");
    let found = store::read(
        &format!(
            "SELECT {RECORD_COLUMNS}, embedding AS vector FROM zatabase_records WHERE id = $1"
        ),
        &[param(id)],
    )?;
    let mut record = found
        .map(|r| json_rows(&r))
        .transpose()?
        .and_then(|mut rows| rows.pop())
        .ok_or_else(|| no_record(id))?;
    if record["vector"].is_null()
        && let Some(fields) = record.as_object_mut()
    {
        fields.remove("vector");
    }
    Ok(Response::json(200, &record))
}

/// `DELETE /api/zql/record/:id` → 204
fn delete_record(_: &Request, params: &Params) -> Result<Response, ApiError> {
    require(Resource::Records, None, Action::Write)?;
    let id = params.get("id");
    let deleted = store::read("DELETE FROM zatabase_records WHERE id = $1", &[param(id)])?;
    match deleted {
        Some(result) if result.affected_rows > 0 => Ok(Response::no_content()),
        _ => Err(no_record(id)),
    }
}

/// `POST /api/zql/flush` → `{"flushed": N}`
fn flush(_: &Request, _: &Params) -> Result<Response, ApiError> {
    require(Resource::Records, None, Action::Write)?;
    Ok(Response::json(200, &json!({ "flushed": store::flush()? })))
}

/// `GET /api/zql/info`: records per namespace, pending buffered writes,
/// storage, indexes and the last flush.
fn info(_: &Request, _: &Params) -> Result<Response, ApiError> {
    require(Resource::Records, None, Action::Read)?;
    let namespaces = store::read(
        "SELECT namespace, count(*) AS records, count(embedding) AS with_vector,
                count(*) FILTER (WHERE pending) AS pending
         FROM zatabase_records GROUP BY namespace ORDER BY namespace",
        &[],
    )?
    .map(|r| json_rows(&r))
    .transpose()?
    .unwrap_or_default();
    let storage = store::read(
        "SELECT pg_total_relation_size('zatabase_records') AS storage_bytes,
                (SELECT last_flush FROM zatabase_records_flushes) AS last_flush,
                coalesce((SELECT flushed FROM zatabase_records_flushes), 0) AS flushed_total,
                (SELECT coalesce(json_agg(json_build_object(
                    'name', c.relname, 'valid', i.indisvalid, 'size_bytes', pg_relation_size(c.oid))
                    ORDER BY c.relname), '[]')
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE i.indrelid = 'zatabase_records'::regclass) AS indexes",
        &[],
    )?
    .map(|r| json_rows(&r))
    .transpose()?
    .and_then(|mut rows| rows.pop());
    let total: u64 = namespaces
        .iter()
        .filter_map(|n| n["records"].as_u64())
        .sum();
    let pending: u64 = namespaces
        .iter()
        .filter_map(|n| n["pending"].as_u64())
        .sum();
    let storage = storage.unwrap_or_else(|| json!({}));
    Ok(Response::json(
        200,
        &json!({
            "records": total,
            "pending": pending,
            "namespaces": namespaces,
            "storage_bytes": storage.get("storage_bytes").cloned().unwrap_or(json!(0)),
            "indexes": storage.get("indexes").cloned().unwrap_or(json!([])),
            "last_flush": storage.get("last_flush").cloned().unwrap_or(Json::Null),
            "flushed_total": storage.get("flushed_total").cloned().unwrap_or(json!(0)),
        }),
    ))
}

/// The parser and compiler take any text without panicking: random
/// strings, and random sequences of ZQL's own words and symbols (which
/// get much further into the grammar).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "FIND",
        "COUNT",
        "AGGREGATE",
        "GET",
        "INSERT",
        "INTO",
        "UPDATE",
        "SET",
        "DELETE",
        "IN",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "EXISTS",
        "BETWEEN",
        "NEAR",
        "USING",
        "cosine",
        "TOP",
        "ORDER",
        "BY",
        "DESC",
        "LIMIT",
        "OFFSET",
        "GROUP",
        "AS",
        "ID",
        "VECTOR",
        "BUFFERED",
        "sum",
        "avg",
        "a",
        "b.c",
        "x[0]",
        "`k`",
        "@id",
        "@score",
        "@created_at",
        "@nope",
        "$p",
        "$",
        "@",
        "'s'",
        "\"t\"",
        "'open",
        "1",
        "-2.5e3",
        "1e999",
        "99999999999999999999",
        "true",
        "null",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        ".",
        "*",
        ";",
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "<>",
        "--c\n",
        "\n",
        "é",
        "#",
    ];

    fn check(text: &str) {
        if let Ok(statement) = crate::parser::statement(text) {
            let params =
                std::collections::BTreeMap::from([("p".to_owned(), serde_json::json!([1, "x"]))]);
            let _ = crate::compile::compile(&statement, &params);
        }
        let _ = crate::parser::condition(text);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn any_text(chars in prop::collection::vec(any::<char>(), 0..200)) {
            check(&chars.into_iter().collect::<String>());
        }

        #[test]
        fn any_sequence_of_zql_pieces(pieces in prop::collection::vec(0..PIECES.len(), 0..40)) {
            let text: Vec<&str> = pieces.iter().map(|i| PIECES[*i]).collect();
            check(&text.join(" "));
        }
    }
}
