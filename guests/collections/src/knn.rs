//! `POST /v1/knn`: the exact k nearest neighbours of a vector in a
//! collection's vector column or a table's, by L2, cosine or inner-product
//! distance (pgvector's `<->`, `<=>`, `<#>`), nearest first.
//!
//! Exact means every row is compared: the ordering is kept out of reach of
//! an approximate index (the distance is computed in a subquery Postgres
//! does not flatten), so an HNSW index never changes this answer.

use serde::Deserialize;
use serde_json::{Map, Value as Json};
use zatabase_guest_kit::access::require;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::sql;
use zatabase_guest_kit::types::{ErrorKind, JsonResult, Scalar, SqlError, Value};
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

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Metric {
    #[default]
    L2,
    Cosine,
    InnerProduct,
}

/// A nearest-neighbour search as `/v1/knn` and `/v1/indexes/hnsw/search`
/// take it: in a collection or a table, by one of its vector columns.
pub(crate) struct Query<'a> {
    pub collection: Option<&'a str>,
    pub table: Option<&'a str>,
    pub column: &'a str,
    pub vector: &'a [f64],
    pub k: i64,
    pub metric: Metric,
    pub filter: Option<&'a Map<String, Json>>,
}

/// How the neighbours are found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Every row compared; no index can change the answer.
    Exact,
    /// Ordered by the distance operator itself, so an HNSW index on the
    /// column serves it.
    Approximate,
}

impl Metric {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::L2 => "l2",
            Self::Cosine => "cosine",
            Self::InnerProduct => "inner_product",
        }
    }

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
    let search = search(
        &Query {
            collection: body.collection.as_deref(),
            table: body.table.as_deref(),
            column: &body.column,
            vector: &body.vector,
            k: body.k,
            metric: body.metric,
            filter: body.filter.as_ref(),
        },
        Order::Exact,
    )?;
    let found = sql::execute_json(&search.statement, &search.params).map_err(search_error)?;
    // The rows go out as the host wrote them, however deeply they nest;
    // cut at the host's result cap, the answer says so, as `/v1/sql` does.
    Ok(Response::json_text(
        200,
        format!("{{\"results\":{}{}}}", found.rows, truncated(&found)),
    ))
}

/// `,"truncated":true` for a result the host cut at its cap, else nothing.
pub(crate) fn truncated(found: &JsonResult) -> &'static str {
    if found.truncated {
        ",\"truncated\":true"
    } else {
        ""
    }
}

/// Postgres's verdict on a search: a table filter naming no column, or
/// holding a value its column cannot take, is the caller's to fix (422).
pub(crate) fn search_error(error: SqlError) -> ApiError {
    if error.sqlstate.as_deref() == Some("42P01") {
        return sql_error(error);
    }
    match error.kind {
        ErrorKind::UndefinedObject | ErrorKind::InvalidInput => {
            ApiError::unprocessable(format!("`filter`: {}", error.message))
        }
        _ => sql_error(error),
    }
}

/// Checks what needs no database: `k`, the vector's numbers, the column
/// name, and that exactly one of collection and table is named.
pub(crate) fn check(query: &Query) -> Result<(), ApiError> {
    if !(1..=MAX_K).contains(&query.k) {
        return Err(ApiError::unprocessable(format!(
            "`k` must be between 1 and {MAX_K}, got {}",
            query.k
        )));
    }
    // float4, as pgvector stores them.
    if query
        .vector
        .iter()
        .any(|x| !x.is_finite() || x.abs() > f64::from(f32::MAX))
    {
        return Err(ApiError::unprocessable(
            "`vector` must hold finite numbers within float4's range",
        ));
    }
    if query.metric == Metric::Cosine
        && !zatabase_guest_kit::values::has_direction(query.vector.iter().map(|x| *x as f32))
    {
        return Err(ApiError::unprocessable(
            "a zero `vector` has no direction: cosine distance is undefined for it",
        ));
    }
    if !valid_identifier(query.column) {
        return Err(ApiError::unprocessable(format!(
            "`{}` is not a column name",
            query.column
        )));
    }
    if query.collection.is_some() == query.table.is_some() {
        return Err(ApiError::unprocessable(
            "name exactly one of `collection` and `table`",
        ));
    }
    Ok(())
}

/// The statement that finds `query`'s neighbours, once the caller may read
/// where it looks.
pub(crate) fn search(query: &Query, order: Order) -> Result<Search, ApiError> {
    check(query)?;
    match (query.collection, query.table) {
        (Some(name), _) => {
            require(Resource::Collections, Some(name), Action::Read)?;
            collection_search(name, query, order)
        }
        (_, Some(name)) => {
            require(Resource::Tables, Some(name), Action::Read)?;
            table_search(name, query, order)
        }
        (None, None) => unreachable!("checked above"),
    }
}

pub(crate) struct Search {
    pub statement: String,
    pub params: Vec<Value>,
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

/// The ordering part of a search: exact keeps the distance out of reach
/// of an index (a subquery Postgres does not flatten, ties broken by id);
/// approximate orders by the operator itself, which an HNSW index serves.
fn ordered(order: Order, select: &str, from: &str, distance: &str) -> String {
    match order {
        Order::Exact => format!(
            "SELECT id, distance, document FROM (
                SELECT {select} FROM {from} OFFSET 0
             ) AS s ORDER BY distance, id LIMIT $2"
        ),
        Order::Approximate => format!("SELECT {select} FROM {from} ORDER BY {distance} LIMIT $2"),
    }
}

/// In a collection: the column must be one of its projected vectors; the
/// filter matches documents containing it (`document @> filter`).
fn collection_search(name: &str, query: &Query, order: Order) -> Result<Search, ApiError> {
    let collection = collections::find(name)?;
    let column = collection.projection.get(query.column).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "collection `{name}` projects no column `{}`",
            query.column
        ))
    })?;
    let ColumnType::Vector(dims) = column.ty else {
        return Err(ApiError::unprocessable(format!(
            "column `{}` is {}, not a vector",
            query.column,
            column.ty.name()
        )));
    };
    check_dimensions(dims, query.vector)?;
    let mut params = vec![
        vector_param(query.vector),
        Value::Scalar(Scalar::Int64(query.k)),
    ];
    let filter = match query.filter {
        Some(filter) => {
            params.push(param_from_json(&Json::Object(filter.clone())));
            " AND document @> $3::jsonb"
        }
        None => "",
    };
    let column = quoted(query.column);
    let distance = format!(
        "({column} {op} $1::extensions.vector)",
        op = query.metric.operator()
    );
    Ok(Search {
        statement: ordered(
            order,
            &format!("id, {distance} AS distance, document"),
            &format!(
                "{table} WHERE {column} IS NOT NULL{filter}",
                table = quoted(name)
            ),
            &distance,
        ),
        params,
    })
}

/// The dimension of table `name`'s vector column `column`: 404 without
/// the table, 422 without the column or when it is no `vector(N)`.
pub(crate) fn table_vector_dims(name: &str, column: &str) -> Result<u32, ApiError> {
    if !valid_identifier(name) {
        return Err(ApiError::not_found(format!("no table `{name}`")));
    }
    let described = sql::execute_json(
        "SELECT to_regclass($1) IS NOT NULL AS found,
                (SELECT format_type(a.atttypid, a.atttypmod)
                 FROM pg_attribute a
                 WHERE a.attrelid = to_regclass($1) AND a.attname = $2
                   AND a.attnum > 0 AND NOT a.attisdropped) AS type",
        &[param(quoted(name).as_str()), param(column)],
    )
    .map_err(sql_error)?;
    let row = json_rows(&described)?.pop().unwrap_or_default();
    if row["found"] != true {
        return Err(ApiError::not_found(format!("no table `{name}`")));
    }
    let Some(ty) = row["type"].as_str() else {
        return Err(ApiError::unprocessable(format!(
            "table `{name}` has no column `{column}`"
        )));
    };
    ty.strip_prefix("vector(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "column `{column}` is {ty}, not a vector with a dimension"
            ))
        })
}

/// In a table of the tenant's: the column must be a vector column; the
/// filter's keys are columns, each equal to its value. A row's `id` is its
/// `id` column (null without one); its document, the row without the vector.
fn table_search(name: &str, query: &Query, order: Order) -> Result<Search, ApiError> {
    let dims = table_vector_dims(name, query.column)?;
    check_dimensions(dims, query.vector)?;
    let mut params = vec![
        vector_param(query.vector),
        Value::Scalar(Scalar::Int64(query.k)),
    ];
    let mut filter = String::new();
    for (key, value) in query.filter.into_iter().flatten() {
        if !valid_identifier(key) {
            return Err(ApiError::unprocessable(format!(
                "`{key}` is not a column name"
            )));
        }
        if value.is_null() {
            filter.push_str(&format!(" AND t.{} IS NULL", quoted(key)));
            continue;
        }
        params.push(param_from_json(value));
        filter.push_str(&format!(" AND t.{} = ${}", quoted(key), params.len()));
    }
    let column = quoted(query.column);
    let distance = format!(
        "(t.{column} {op} $1::extensions.vector)",
        op = query.metric.operator()
    );
    Ok(Search {
        statement: ordered(
            order,
            &format!(
                "to_jsonb(t.*) ->> 'id' AS id, {distance} AS distance, to_jsonb(t.*) - '{}' AS document",
                query.column
            ),
            &format!(
                "{table} AS t WHERE t.{column} IS NOT NULL{filter}",
                table = quoted(name)
            ),
            &distance,
        ),
        params,
    })
}
