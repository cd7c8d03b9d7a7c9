//! `/v1/indexes/hnsw`: approximate nearest-neighbour indexes (pgvector's
//! HNSW) on a vector column of a table or a collection, built in the
//! background, and the searches they serve.
//!
//! One index per (table, column). The host builds it (`indexes`
//! capability) and keeps its state in the tenant's `zatabase_indexes`
//! table, which these routes read: `building` with its progress, `ready`,
//! or `failed` with Postgres's reason. A `building` row whose heartbeat
//! stopped lost its host, and reads as failed.

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use zatabase_guest_kit::access::require;
use zatabase_guest_kit::indexes::{self, HnswBuild};
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::sql;
use zatabase_guest_kit::types::{ErrorKind, Scalar, Value};
use zatabase_guest_kit::values::{json_rows, param};
use zatabase_guest_kit::{ApiError, Params, Request, Response};

use crate::knn::{self, Metric, Order, Query};
use crate::projection::valid_identifier;
use crate::sql_error;

/// Defaults that favour recall: on uniformly random 128-d vectors (the
/// hardest case) they find 0.98-0.99 of the true 10 nearest, where
/// pgvector's own (m 16, ef_construction 64, ef_search 40) find 0.56.
/// Real embeddings reach high recall with less; `ef_search` per search
/// trades recall for speed.
const DEFAULT_M: u32 = 24;
const DEFAULT_EF_CONSTRUCTION: u32 = 128;
pub const DEFAULT_EF_SEARCH: u32 = 400;
const MAX_EF_SEARCH: u32 = 1000;
/// The most dimensions pgvector indexes for `vector`.
const MAX_DIMENSIONS: u32 = 2000;
/// Must match the host's (`caps/indexes.rs`).
const STALE_AFTER_SECS: u32 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildRequest {
    table: String,
    column: String,
    #[serde(default)]
    metric: Metric,
    m: Option<u32>,
    ef_construction: Option<u32>,
}

/// `POST /v1/indexes/hnsw/build`: 202 with the build's state, which
/// `GET .../stats` follows to `ready` or `failed`.
pub fn build(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: BuildRequest = request.json()?;
    require(Resource::Vectors, Some(&body.table), Action::Write)?;
    if !valid_identifier(&body.column) {
        return Err(ApiError::unprocessable(format!(
            "`{}` is not a column name",
            body.column
        )));
    }
    let dims = knn::table_vector_dims(&body.table, &body.column)?;
    if dims > MAX_DIMENSIONS {
        return Err(ApiError::unprocessable(format!(
            "an HNSW index takes at most {MAX_DIMENSIONS} dimensions; `{}` has {dims}",
            body.column
        )));
    }
    let build = HnswBuild {
        table: body.table,
        column: body.column,
        metric: match body.metric {
            Metric::L2 => indexes::Metric::L2,
            Metric::Cosine => indexes::Metric::Cosine,
            Metric::InnerProduct => indexes::Metric::InnerProduct,
        },
        m: body.m.unwrap_or(DEFAULT_M),
        // At least twice `m`, as pgvector requires: a larger `m` alone is
        // not refused over a value the caller never sent.
        ef_construction: body
            .ef_construction
            .unwrap_or(DEFAULT_EF_CONSTRUCTION.max(body.m.unwrap_or(DEFAULT_M).saturating_mul(2))),
    };
    indexes::build_hnsw(&build).map_err(|e| match e.kind {
        ErrorKind::InvalidInput => ApiError::unprocessable(e.message),
        ErrorKind::Conflict => ApiError::new(409, e.message),
        _ => sql_error(e),
    })?;
    let state = find(&build.table, &build.column)?
        .map(shape)
        .ok_or_else(|| ApiError::internal("the build was recorded but cannot be read"))?;
    Ok(Response::json(202, &state).with_header(
        "location",
        format!("/v1/indexes/hnsw/{}/{}/stats", build.table, build.column),
    ))
}

/// An index's state as the API shows it, with its size and rows once it
/// exists. A ready index that is gone (its table or column dropped, through
/// this API or plain SQL) is no index.
const DESCRIBE: &str = "
SELECT i.table_name AS table, i.column_name AS column, i.index_name AS index,
       i.metric, i.m, i.ef_construction,
       CASE WHEN i.status = 'building' AND i.heartbeat_at < now() - make_interval(secs => $1)
            THEN 'failed' ELSE i.status END AS status,
       CASE WHEN i.status = 'building' AND i.heartbeat_at < now() - make_interval(secs => $1)
            THEN 'the build stopped: the host running it went away' ELSE i.error END AS reason,
       i.phase, i.progress, i.build_ms, i.started_at, i.finished_at,
       i.replaces_metric, to_regclass(quote_ident(i.replaces)) IS NOT NULL AS fallback,
       CASE WHEN i.status = 'ready' THEN pg_relation_size(c.oid) END AS size_bytes,
       CASE WHEN i.status = 'ready' THEN c.reltuples::bigint END AS rows
FROM zatabase_indexes i
LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(i.index_name))
WHERE (i.status <> 'ready' OR c.oid IS NOT NULL)";

/// The state of the index on `table`.`column` (as read), if one was ever
/// built.
fn find(table: &str, column: &str) -> Result<Option<Json>, ApiError> {
    // Builds take identifiers only: any other name (a NUL in it, say) has
    // no index, and is not sent to Postgres.
    if !valid_identifier(table) || !valid_identifier(column) {
        return Ok(None);
    }
    Ok(all(Some((table, column)))?.pop())
}

/// Every index (or the one on a table and column), as read.
fn all(only: Option<(&str, &str)>) -> Result<Vec<Json>, ApiError> {
    let mut params = vec![Value::Scalar(Scalar::Int64(i64::from(STALE_AFTER_SECS)))];
    let statement = match only {
        Some((table, column)) => {
            params.extend([param(table), param(column)]);
            format!("{DESCRIBE} AND i.table_name = $2 AND i.column_name = $3")
        }
        None => format!("{DESCRIBE} ORDER BY i.table_name, i.column_name"),
    };
    let found = match sql::execute_json(&statement, &params) {
        Ok(found) => found,
        // No build was ever asked for in this tenant.
        Err(e) if e.kind == ErrorKind::UndefinedObject => return Ok(Vec::new()),
        Err(e) => return Err(sql_error(e)),
    };
    json_rows(&found)
}

/// A row as the API shows it: parameters together, progress only while
/// building, the reason only when failed, size and rows only when ready.
fn shape(row: Json) -> Json {
    let status = row["status"].as_str().unwrap_or_default().to_owned();
    let mut out = json!({
        "table": row["table"],
        "column": row["column"],
        "index": row["index"],
        "metric": row["metric"],
        "parameters": { "m": row["m"], "ef_construction": row["ef_construction"] },
        "status": status,
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "build_time_ms": row["build_ms"],
    });
    let fields = out.as_object_mut().expect("built as an object");
    match status.as_str() {
        "building" => {
            fields.insert("progress".into(), row["progress"].clone());
            fields.insert("phase".into(), row["phase"].clone());
        }
        "failed" => {
            fields.insert("reason".into(), row["reason"].clone());
        }
        _ => {
            fields.insert("size_bytes".into(), row["size_bytes"].clone());
            fields.insert("rows".into(), row["rows"].clone());
        }
    }
    out
}

/// `GET /v1/indexes/hnsw`
pub fn list(_: &Request, _: &Params) -> Result<Response, ApiError> {
    require(Resource::Vectors, None, Action::Read)?;
    let indexes: Vec<Json> = all(None)?.into_iter().map(shape).collect();
    Ok(Response::json(200, &json!({ "indexes": indexes })))
}

/// `GET /v1/indexes/hnsw/:table/:column/stats`
pub fn stats(_: &Request, params: &Params) -> Result<Response, ApiError> {
    let (table, column) = (params.get("table"), params.get("column"));
    require(Resource::Vectors, Some(table), Action::Read)?;
    let state = find(table, column)?.ok_or_else(|| no_index(table, column))?;
    Ok(Response::json(200, &shape(state)))
}

fn no_index(table: &str, column: &str) -> ApiError {
    ApiError::not_found(format!(
        "no HNSW index on `{table}`.`{column}`; build one with POST /v1/indexes/hnsw/build"
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    collection: Option<String>,
    table: Option<String>,
    column: String,
    vector: Vec<f64>,
    k: i64,
    metric: Option<Metric>,
    filter: Option<Map<String, Json>>,
    ef_search: Option<u32>,
}

/// `POST /v1/indexes/hnsw/search`: the k nearest by the column's ready
/// index (with `ef_search` candidates), nearest first. A filter is applied
/// while the index is walked (pgvector's strict iterative scan, which
/// stops after `hnsw.max_scan_tuples`), so it yields k rows when k match
/// among the rows it scans.
pub fn search(request: &Request, _: &Params) -> Result<Response, ApiError> {
    let body: SearchRequest = request.json()?;
    let mut query = Query {
        collection: body.collection.as_deref(),
        table: body.table.as_deref(),
        column: &body.column,
        vector: &body.vector,
        k: body.k,
        metric: body.metric.unwrap_or_default(),
        filter: body.filter.as_ref(),
    };
    knn::check(&query)?;
    // Never fewer candidates than neighbours asked for.
    let ef_search = body
        .ef_search
        .unwrap_or_else(|| DEFAULT_EF_SEARCH.max(u32::try_from(body.k).unwrap_or(0)));
    if !(1..=MAX_EF_SEARCH).contains(&ef_search) {
        return Err(ApiError::unprocessable(format!(
            "`ef_search` must be between 1 and {MAX_EF_SEARCH}, got {ef_search}"
        )));
    }
    if i64::from(ef_search) < body.k {
        // pgvector returns at most `ef_search` rows: fewer than asked for.
        return Err(ApiError::unprocessable(format!(
            "`ef_search` ({ef_search}) must be at least `k` ({})",
            body.k
        )));
    }
    let table = query.collection.or(query.table).unwrap_or_default();
    require(Resource::Vectors, Some(table), Action::Read)?;
    let index = find(table, &body.column)?.ok_or_else(|| no_index(table, &body.column))?;
    // While a rebuild runs, or after one failed, the index it replaces
    // still serves.
    let built_for = match index["status"].as_str() {
        Some("ready") => index["metric"].as_str(),
        _ if index["fallback"] == true => index["replaces_metric"].as_str(),
        _ => None,
    };
    match index["status"].as_str() {
        _ if built_for.is_some() => {}
        Some("building") => {
            return Err(ApiError::new(
                409,
                format!(
                    "the HNSW index on `{table}`.`{}` is still building ({:.0}% done)",
                    body.column,
                    index["progress"].as_f64().unwrap_or(0.0) * 100.0
                ),
            ));
        }
        _ => {
            return Err(ApiError::new(
                409,
                format!(
                    "the last build of the HNSW index on `{table}`.`{}` failed: {}; build it again",
                    body.column,
                    index["reason"].as_str().unwrap_or("unknown reason")
                ),
            ));
        }
    }
    let built_for = built_for.unwrap_or_default();
    match body.metric {
        Some(metric) if metric.name() != built_for => {
            return Err(ApiError::unprocessable(format!(
                "the HNSW index on `{table}`.`{}` orders by {built_for}, not {}",
                body.column,
                metric.name()
            )));
        }
        Some(_) => {}
        None => {
            query.metric = match built_for {
                "cosine" => Metric::Cosine,
                "inner_product" => Metric::InnerProduct,
                _ => Metric::L2,
            };
        }
    }
    let search = knn::search(&query, Order::Approximate)?;
    let tx = sql::begin().map_err(sql_error)?;
    let mut settings = vec![format!("set_config('hnsw.ef_search', '{ef_search}', true)")];
    if query.filter.is_some() {
        settings.push("set_config('hnsw.iterative_scan', 'strict_order', true)".to_owned());
    }
    tx.execute(&format!("SELECT {}", settings.join(", ")), &[])
        .map_err(sql_error)?;
    let found = tx
        .execute_json(&search.statement, &search.params)
        .map_err(knn::search_error)?;
    drop(tx);
    // The rows go out as the host wrote them, however deeply they nest.
    Ok(Response::json_text(
        200,
        format!(
            "{{\"results\":{},\"ef_search\":{ef_search}{}}}",
            found.rows,
            knn::truncated(&found)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_shows_what_its_status_means() {
        let row = |status: &str| {
            json!({
                "table": "items", "column": "embedding", "index": "items_embedding_hnsw_1",
                "metric": "l2", "m": 16, "ef_construction": 64, "status": status,
                "reason": "out of memory", "phase": "building index: loading tuples",
                "progress": 0.5, "build_ms": 12, "size_bytes": 8192, "rows": 100,
                "started_at": "2026-01-01T00:00:00Z", "finished_at": null,
            })
        };
        let building = shape(row("building"));
        assert_eq!(building["progress"], 0.5);
        assert_eq!(
            building["parameters"],
            json!({ "m": 16, "ef_construction": 64 })
        );
        assert!(building.get("reason").is_none() && building.get("rows").is_none());
        let failed = shape(row("failed"));
        assert_eq!(failed["reason"], "out of memory");
        assert!(failed.get("progress").is_none());
        let ready = shape(row("ready"));
        assert_eq!(
            (ready["rows"].clone(), ready["size_bytes"].clone()),
            (json!(100), json!(8192))
        );
        assert!(ready.get("progress").is_none() && ready.get("reason").is_none());
    }
}
