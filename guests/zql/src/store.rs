//! The record engine's storage: the tenant's `zatabase_records` table
//! (made on the first write), durable and buffered inserts, and flushes.
//!
//! Durability is Postgres's: a durable insert commits as usual (its WAL is
//! on disk before the answer); a buffered one commits with
//! `synchronous_commit = off` (Postgres answers before its WAL is flushed,
//! so a crash can lose it) and is marked `pending`. A flush commits the
//! clearing of those marks synchronously, which flushes the WAL of every
//! buffered insert before it, and counts them.

use zatabase_guest_kit::ApiError;
use zatabase_guest_kit::types::{ErrorKind, JsonResult, SqlError, Value};
use zatabase_guest_kit::values::json_rows;
use zatabase_guest_kit::{sql, tenant};

/// The tenant's tables, made by its first write (two first writes at once:
/// see [`tenant::create_if_missing`]).
const CREATE: &str = "
CREATE TABLE IF NOT EXISTS zatabase_records (
    id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    namespace text NOT NULL CHECK (length(namespace) BETWEEN 1 AND 255),
    data jsonb NOT NULL CHECK (jsonb_typeof(data) = 'object'),
    embedding extensions.vector,
    pending boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS zatabase_records_by_namespace ON zatabase_records (namespace, created_at);
CREATE INDEX IF NOT EXISTS zatabase_records_pending ON zatabase_records (id) WHERE pending;
CREATE TABLE IF NOT EXISTS zatabase_records_flushes (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_flush timestamptz NOT NULL,
    flushed bigint NOT NULL
)";

/// Postgres's verdict on a statement this route group built: the caller's
/// missing grant is 403, a timeout 408, an unavailable database 503, a
/// taken id 409, a deadlock or serialization failure 409 (to retry), a
/// value Postgres refuses (vectors of different
/// dimensions, a bad timestamp) 400; anything else is this route group's
/// own failure (500, logged).
pub fn sql_error(error: SqlError) -> ApiError {
    if let Some(conflict) = ApiError::retryable(&error) {
        return conflict;
    }
    match error.kind {
        ErrorKind::PermissionDenied => ApiError::new(403, error.message),
        ErrorKind::Timeout => ApiError::new(408, "the database did not answer in time"),
        ErrorKind::Unavailable => {
            ApiError::new(503, "the database is temporarily unavailable; try again")
        }
        ErrorKind::UniqueViolation => ApiError::new(409, "a record with this id already exists"),
        ErrorKind::InvalidInput | ErrorKind::CheckViolation => ApiError::bad_request(error.message),
        _ => {
            zatabase_guest_kit::log::log(
                zatabase_guest_kit::log::Level::Error,
                &format!("zql statement failed: {}", error.message),
            );
            ApiError::internal(format!(
                "the database refused the statement: {}",
                error.message
            ))
        }
    }
}

/// `undefined_table`: the tenant has never written a record (not any other
/// missing object, which is a real failure).
fn missing_table(error: &SqlError) -> bool {
    error.sqlstate.as_deref() == Some("42P01")
}

/// Runs a read; a tenant that never wrote a record has none.
pub fn read(statement: &str, params: &[Value]) -> Result<Option<JsonResult>, ApiError> {
    match sql::execute_json(statement, params) {
        Ok(result) => Ok(Some(result)),
        Err(e) if missing_table(&e) => Ok(None),
        Err(e) => Err(sql_error(e)),
    }
}

/// Runs an insert, making the tables first if this is the tenant's first.
/// A buffered insert's statement turns off its own transaction's
/// `synchronous_commit`; it runs in a transaction of its own making, since
/// a one-shot statement ends with the host's `RESET ALL`, which would turn
/// it back on before the commit.
pub fn insert(statement: &str, params: &[Value], buffered: bool) -> Result<JsonResult, ApiError> {
    let run = || {
        if !buffered {
            return sql::execute_json(statement, params);
        }
        let tx = sql::begin()?;
        let inserted = tx.execute_json(statement, params)?;
        tx.commit()?;
        Ok(inserted)
    };
    match run() {
        Err(e) if missing_table(&e) => {
            tenant::create_if_missing(CREATE).map_err(sql_error)?;
            run().map_err(sql_error)
        }
        result => result.map_err(sql_error),
    }
}

/// Flushes every buffered write to disk; how many there were.
pub fn flush() -> Result<u64, ApiError> {
    let flushed = read(
        "WITH cleared AS (
            UPDATE zatabase_records SET pending = false WHERE pending RETURNING 1
         ), noted AS (
            INSERT INTO zatabase_records_flushes (last_flush, flushed)
            SELECT now(), count(*) FROM cleared
            ON CONFLICT (singleton) DO UPDATE
            SET last_flush = EXCLUDED.last_flush,
                flushed = zatabase_records_flushes.flushed + EXCLUDED.flushed
         )
         SELECT count(*) AS flushed FROM cleared",
        &[],
    )?;
    Ok(flushed
        .map(|r| json_rows(&r))
        .transpose()?
        .and_then(|rows| rows.first().and_then(|r| r["flushed"].as_u64()))
        .unwrap_or(0))
}
