//! SQL in the function's tenant: its project environment's own schema, as
//! its own Postgres role. Each call is one transaction; several statements
//! in one call run together and the last one's rows come back. Parameters
//! are `$1..$n` (one statement), given as JSON values: numbers, strings,
//! booleans and null as themselves (Postgres reads a string as the
//! parameter's type), arrays as arrays or vectors, objects as JSON.
//!
//! Rows arrive in the API's JSON form (`/v1/sql`'s type table) and are
//! deserialised into your type:
//!
//! ```no_run
//! #[derive(serde::Deserialize)]
//! struct Note { id: i64, body: String }
//! let notes: Vec<Note> = zatabase_sdk::sql::query(
//!     "SELECT id, body FROM notes WHERE body ILIKE $1",
//!     &[serde_json::json!("%milk%")],
//! )?;
//! # Ok::<(), zatabase_sdk::sql::Error>(())
//! ```

use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::bindings::zatabase::platform::sql as wit;
use crate::bindings::zatabase::platform::types::{Scalar, SqlError, Value};

pub use crate::bindings::zatabase::platform::types::ErrorKind;

/// Why a statement failed: Postgres's message, classified.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    /// SQLSTATE, when Postgres raised it.
    pub code: Option<String>,
    pub message: String,
    pub detail: Option<String>,
    /// 1-based character position in the statement, when Postgres said.
    pub position: Option<u32>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<SqlError> for Error {
    fn from(error: SqlError) -> Self {
        Self {
            kind: error.kind,
            code: error.sqlstate,
            message: error.message,
            detail: error.detail,
            position: error.position,
        }
    }
}

fn param(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Scalar(Scalar::Boolean(*b)),
        Json::Number(n) => Value::Scalar(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Scalar::Int64(i),
            (None, Some(f)) if n.is_f64() => Scalar::Float64(f),
            _ => Scalar::Numeric(n.to_string()),
        }),
        Json::String(s) => Value::Scalar(Scalar::Text(s.clone())),
        Json::Array(_) | Json::Object(_) => Value::Scalar(Scalar::Json(json.to_string())),
    }
}

/// The rows of the (last) statement, each deserialised into `T` (a struct
/// with the columns as fields, or `serde_json::Value`).
///
/// A result past the host's caps (`sql.max_rows`, `sql.max_result_bytes`)
/// is an error of kind `InvalidInput`, never some of its rows as if they
/// were all: add a `LIMIT`, or page. The statement ran all the same (an
/// `INSERT ... RETURNING` past the caps has inserted its rows).
pub fn query<T: DeserializeOwned>(statement: &str, params: &[Json]) -> Result<Vec<T>, Error> {
    let params: Vec<Value> = params.iter().map(param).collect();
    let result = wit::execute_json(statement, &params)?;
    if result.truncated {
        return Err(Error {
            kind: ErrorKind::InvalidInput,
            code: None,
            message: "the result is larger than the host returns at once; add a LIMIT or page \
                      through it"
                .to_owned(),
            detail: None,
            position: None,
        });
    }
    serde_json::from_str(&result.rows).map_err(|e| Error {
        kind: ErrorKind::InvalidInput,
        code: None,
        message: format!("the rows do not fit the type asked for: {e}"),
        detail: None,
        position: None,
    })
}

/// The rows the (last) statement wrote (INSERT, UPDATE, DELETE) or returned.
pub fn execute(statement: &str, params: &[Json]) -> Result<u64, Error> {
    let params: Vec<Value> = params.iter().map(param).collect();
    Ok(wit::execute_json(statement, &params)?.affected_rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_keep_their_json_kind() {
        assert!(matches!(param(&Json::Null), Value::Null));
        assert!(matches!(
            param(&serde_json::json!(7)),
            Value::Scalar(Scalar::Int64(7))
        ));
        assert!(
            matches!(param(&serde_json::json!(1.5)), Value::Scalar(Scalar::Float64(f)) if f == 1.5)
        );
        assert!(
            matches!(param(&serde_json::json!("x")), Value::Scalar(Scalar::Text(s)) if s == "x")
        );
        assert!(
            matches!(param(&serde_json::json!([1, 2])), Value::Scalar(Scalar::Json(s)) if s == "[1,2]")
        );
        assert!(matches!(
            param(&serde_json::json!(18446744073709551615u64)),
            Value::Scalar(Scalar::Numeric(s)) if s == "18446744073709551615"
        ));
    }
}
