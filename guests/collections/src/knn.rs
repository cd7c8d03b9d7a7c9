//! `POST /v1/knn`: the exact k nearest neighbours of a vector in a
//! collection's vector column or a table's, by L2, cosine or inner-product
//! distance (pgvector's `<->`, `<=>`, `<#>`), nearest first.
//!
//! Exact means every row is compared: the ordering is kept out of reach of
//! an approximate index (the distance is computed in a subquery Postgres
//! does not flatten), so an HNSW index never changes this answer.

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use zatabase_guest_kit::access::require;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::sql;
use zatabase_guest_kit::types::{Scalar, Value};
use zatabase_guest_kit::values::{json_rows, param, param_from_json};
use zatabase_guest_kit::{ApiError, Params, Request, Response};

use crate::collections::{self, quoted};
use crate::projection::{ColumnType, valid_identifier};
use crate::sql_error;

/// The most neighbours one search returns.
pub const MAX_K: i64 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KnnRequest {
    collection: Option<String>,
    table: Option<String>,
    column: String,
    vector: Vec<f64>,
    k: i64,
    #[serde(default)]
    metric: Metric,
    filter: Option<Map<String, Json>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Metric {
    #[default]
    L2,
    Cosine,
    InnerProduct,
}

impl Metric {
    fn operator(self) -> &'static str {
        match self {
            Self::L2 => "<->",
            Self::Cosine => "<=>",
            Self::InnerProduct => "<#>",
        }
    }
}

/// `POST /v1/knn`
pub fn knn(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: KnnRequest = request.json()?;
    if !(1..=MAX_K).contains(&body.k) {
        return Err(ApiError::unprocessable(format!(
            "`k` must be between 1 and {MAX_K}, got {}",
            body.k
        )));
    }
    if body.vector.iter().any(|x| !x.is_finite()) {
        return Err(ApiError::unprocessable("`vector` must hold finite numbers"));
    }
    if !valid_identifier(&body.column) {
        return Err(ApiError::unprocessable(format!(
            "`{}` is not a column name",
            body.column
        )));
    }
    let search = match (&body.collection, &body.table) {
        (Some(name), None) => {
            require(Resource::Collections, Some(name), Action::Read)?;
            collection_search(name, &body)?
        }
        (None, Some(name)) => {
            require(Resource::Tables, Some(name), Action::Read)?;
            table_search(name, &body)?
        }
        _ => {
            return Err(ApiError::unprocessable(
                "name exactly one of `collection` and `table`",
            ));
        }
    };
    let found = sql::execute_json(&search.statement, &search.params).map_err(sql_error)?;
    Ok(Response::json(
        200,
        &json!({ "results": json_rows(&found) }),
    ))
}

struct Search {
    statement: String,
    params: Vec<Value>,
}

fn vector_param(vector: &[f64]) -> Value {
    let items: Vec<String> = vector.iter().map(f64::to_string).collect();
    Value::Scalar(Scalar::Other(format!("[{}]", items.join(","))))
}

fn check_dimensions(dims: u32, vector: &[f64]) -> Result<(), ApiError> {
    if vector.len() != dims as usize {
        return Err(ApiError::unprocessable(format!(
            "dimension mismatch: the column holds {dims} dimensions, the vector has {}",
            vector.len()
        )));
    }
    Ok(())
}

/// In a collection: the column must be one of its projected vectors; the
/// filter matches documents containing it (`document @> filter`).
fn collection_search(name: &str, body: &KnnRequest) -> Result<Search, ApiError> {
    let collection = collections::find(name)?;
    let column = collection.projection.get(&body.column).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "collection `{name}` projects no column `{}`",
            body.column
        ))
    })?;
    let ColumnType::Vector(dims) = column.ty else {
        return Err(ApiError::unprocessable(format!(
            "column `{}` is {}, not a vector",
            body.column,
            column.ty.name()
        )));
    };
    check_dimensions(dims, &body.vector)?;
    let mut params = vec![
        vector_param(&body.vector),
        Value::Scalar(Scalar::Int64(body.k)),
    ];
    let filter = match &body.filter {
        Some(filter) => {
            params.push(param_from_json(&Json::Object(filter.clone())));
            " AND document @> $3::jsonb"
        }
        None => "",
    };
    let column = quoted(&body.column);
    Ok(Search {
        statement: format!(
            "SELECT id, distance, document FROM (
                SELECT id, ({column} {op} $1::extensions.vector) AS distance, document
                FROM {table} WHERE {column} IS NOT NULL{filter} OFFSET 0
             ) AS s ORDER BY distance, id LIMIT $2",
            op = body.metric.operator(),
            table = quoted(name),
        ),
        params,
    })
}

/// In a table of the tenant's: the column must be a vector column; the
/// filter's keys are columns, each equal to its value. A row's `id` is its
/// `id` column (null without one); its document, the row without the vector.
fn table_search(name: &str, body: &KnnRequest) -> Result<Search, ApiError> {
    if !valid_identifier(name) {
        return Err(ApiError::not_found(format!("no table `{name}`")));
    }
    let described = sql::execute_json(
        "SELECT format_type(a.atttypid, a.atttypmod) AS type
         FROM pg_attribute a
         WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[param(quoted(name).as_str()), param(body.column.as_str())],
    )
    .map_err(sql_error)?;
    let exists = sql::execute_json(
        "SELECT to_regclass($1) IS NOT NULL AS found",
        &[param(quoted(name).as_str())],
    )
    .map_err(sql_error)?;
    if json_rows(&exists)
        .pop()
        .is_none_or(|row| row["found"] != true)
    {
        return Err(ApiError::not_found(format!("no table `{name}`")));
    }
    let Some(ty) = json_rows(&described)
        .pop()
        .and_then(|row| row["type"].as_str().map(str::to_owned))
    else {
        return Err(ApiError::unprocessable(format!(
            "table `{name}` has no column `{}`",
            body.column
        )));
    };
    let dims = ty
        .rsplit_once("vector(")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "column `{}` is {ty}, not a vector with a dimension",
                body.column
            ))
        })?;
    check_dimensions(dims, &body.vector)?;
    let mut params = vec![
        vector_param(&body.vector),
        Value::Scalar(Scalar::Int64(body.k)),
    ];
    let mut filter = String::new();
    for (key, value) in body.filter.iter().flatten() {
        if !valid_identifier(key) {
            return Err(ApiError::unprocessable(format!(
                "`{key}` is not a column name"
            )));
        }
        params.push(param_from_json(value));
        filter.push_str(&format!(" AND t.{} = ${}", quoted(key), params.len()));
    }
    let column = quoted(&body.column);
    Ok(Search {
        statement: format!(
            "SELECT id, distance, document FROM (
                SELECT to_jsonb(t) ->> 'id' AS id, (t.{column} {op} $1::extensions.vector) AS distance,
                    to_jsonb(t) - {col} AS document
                FROM {table} AS t WHERE t.{column} IS NOT NULL{filter} OFFSET 0
             ) AS s ORDER BY distance, id LIMIT $2",
            op = body.metric.operator(),
            table = quoted(name),
            col = format_args!("'{}'", body.column),
        ),
        params,
    })
}
