//! The `collections` route group: JSON document collections in the caller's
//! tenant, their projections, streamed ingest, and exact nearest-neighbour
//! search, exact (`/v1/knn`) and by HNSW index (`/v1/indexes/hnsw`).
//!
//! A collection is a table of the tenant's own schema (`id`, `document`,
//! the projected columns, times), queryable through `/v1/sql` too; its
//! settings are a row of the tenant's `zatabase_collections` table. Every
//! statement goes through the host's `sql` capability, as the tenant's role;
//! index builds, which outlive a request, through its `indexes` capability.

// Natively (unit tests, lints) nothing calls the route group: its entry
// point is the component export, which exists on wasm32 only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod collections;
mod hnsw;
mod ingest;
mod knn;
mod projection;

use zatabase_guest_kit::types::{ErrorKind, SqlError};
use zatabase_guest_kit::{ApiError, Request, Response, RouteGroup, Router};

struct Collections;

impl RouteGroup for Collections {
    fn handle(request: Request) -> Response {
        Router::new()
            .route("GET", "/v1/collections", collections::list)
            .route("POST", "/v1/collections", collections::create)
            .route("GET", "/v1/collections/:name", collections::get)
            .route("DELETE", "/v1/collections/:name", collections::delete)
            .route(
                "GET",
                "/v1/collections/:name/projection",
                collections::get_projection,
            )
            .route(
                "PUT",
                "/v1/collections/:name/projection",
                collections::put_projection,
            )
            .route("POST", "/v1/collections/:name/ingest", ingest::ingest)
            .route("POST", "/v1/knn", knn::knn)
            .route("GET", "/v1/indexes/hnsw", hnsw::list)
            .route("POST", "/v1/indexes/hnsw/build", hnsw::build)
            .route("POST", "/v1/indexes/hnsw/search", hnsw::search)
            .route("GET", "/v1/indexes/hnsw/:table/:column/stats", hnsw::stats)
            .handle(&request)
    }

    /// Ingest reads its documents as they arrive.
    fn streams(method: &str, path: &str) -> bool {
        method == "POST" && path.ends_with("/ingest")
    }
}

zatabase_guest_kit::route_group!(Collections);

/// Postgres's verdict on a statement this route group built: the caller's
/// missing grant is 403, a timeout 408, an unavailable database 503, a
/// deadlock or serialization failure 409 (to retry); any
/// other failure is this route group's to answer for (500, logged).
pub(crate) fn sql_error(error: SqlError) -> ApiError {
    if let Some(conflict) = ApiError::retryable(&error) {
        return conflict;
    }
    match error.kind {
        ErrorKind::PermissionDenied => ApiError::new(403, error.message),
        ErrorKind::Timeout => ApiError::new(408, "the database did not answer in time"),
        ErrorKind::Unavailable => {
            ApiError::new(503, "the database is temporarily unavailable; try again")
        }
        // undefined_table: the tenant dropped a table this request needs
        // through `/v1/sql` (a collection's so gone is listed with
        // `table_missing` and can only be deleted).
        _ if error.sqlstate.as_deref() == Some("42P01") => ApiError::new(
            409,
            format!(
                "{} (dropped outside this API, as through `/v1/sql`; a collection whose table \
                 is gone can only be deleted)",
                error.message
            ),
        ),
        // too_many_columns: every projection change drops and adds columns,
        // and Postgres counts dropped ones towards its 1600.
        _ if error.sqlstate.as_deref() == Some("54011") => ApiError::unprocessable(
            "the collection's table has used up Postgres's 1600 columns (dropped ones count); \
             copy its documents into a new collection",
        ),
        _ => {
            zatabase_guest_kit::log::log(
                zatabase_guest_kit::log::Level::Error,
                &format!("collections statement failed: {}", error.message),
            );
            ApiError::internal(format!(
                "the database refused the statement: {}",
                error.message
            ))
        }
    }
}
