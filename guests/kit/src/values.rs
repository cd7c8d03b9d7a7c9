//! SQL values in and out of route groups: parameters from JSON, typed cells
//! to read, and results in their JSON form.
//!
//! The JSON form of values (the README's type table) is written by the
//! host: `sql.execute-json` and `platform-db.execute-json` hand back rows
//! already as JSON text, so the mapping lives in one place
//! (`host/src/db/json.rs`) and no value crosses into the guest one by one.

use serde_json::Value as Json;

use crate::types::{Column, JsonResult, QueryResult, Scalar, Value};

/// A parameter from its JSON form: numbers stay numbers, strings are text
/// (Postgres parses them into the target type), objects and arrays are JSON
/// (the host turns an array into a Postgres array or a vector when the
/// parameter's type asks for one).
pub fn param_from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Scalar(Scalar::Boolean(*b)),
        Json::Number(n) => Value::Scalar(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Scalar::Int64(i),
            (None, Some(f)) if n.is_f64() => Scalar::Float64(f),
            // An integer beyond i64: keep it exact.
            _ => Scalar::Numeric(n.to_string()),
        }),
        Json::String(s) => Value::Scalar(Scalar::Text(s.clone())),
        Json::Array(_) | Json::Object(_) => Value::Scalar(Scalar::Json(json.to_string())),
    }
}

/// How deeply a document the API stores may nest (MongoDB's bound too).
/// Rows come back to a route group wrapped a few levels deeper, and its
/// JSON parser stops at 128.
pub const MAX_DEPTH: usize = 100;

/// How deeply `json` nests: 0 for a scalar, 1 for a flat array or object.
pub fn depth(json: &Json) -> usize {
    match json {
        Json::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Json::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The rows of a JSON result, parsed (for a route group that reshapes them;
/// one that answers them as they are embeds `rows` as text). Fails only on
/// a value nested deeper than a route group reads (stored by plain SQL).
pub fn json_rows(result: &JsonResult) -> Result<Vec<Json>, crate::ApiError> {
    serde_json::from_str(&result.rows).map_err(|e| {
        crate::ApiError::internal(format!(
            "a stored value could not be read back: {e} (documents nest at most {MAX_DEPTH} levels)"
        ))
    })
}

/// The value of column `name` in row `row`, if both exist.
pub fn cell<'a>(result: &'a QueryResult, row: usize, name: &str) -> Option<&'a Value> {
    let index = result.columns.iter().position(|c| c.name == name)?;
    result.rows.get(row)?.get(index)
}

/// A value's text when it is one of the text-like scalars (text, uuid,
/// numeric, dates and times, json), else `None` (null included).
pub fn text(value: &Value) -> Option<&str> {
    match value {
        Value::Scalar(
            Scalar::Text(s)
            | Scalar::Uuid(s)
            | Scalar::Numeric(s)
            | Scalar::Date(s)
            | Scalar::Time(s)
            | Scalar::Timestamp(s)
            | Scalar::Timestamptz(s)
            | Scalar::Interval(s)
            | Scalar::Json(s)
            | Scalar::Other(s),
        ) => Some(s),
        _ => None,
    }
}

/// A value's truth when it is a boolean.
pub fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Scalar(Scalar::Boolean(b)) => Some(*b),
        _ => None,
    }
}

/// Whether a vector has a direction as pgvector computes it: its norm,
/// summed in float4, is not zero (`[1e-30, 0]` has none there: its square
/// underflows). Without one, every cosine distance to it is NaN.
pub fn has_direction(vector: impl IntoIterator<Item = f32>) -> bool {
    vector.into_iter().map(|x| x * x).sum::<f32>() > 0.0
}

/// A text parameter.
pub fn param(text: impl Into<String>) -> Value {
    Value::Scalar(Scalar::Text(text.into()))
}

/// Columns as `[{"name", "type"}]`.
pub fn columns_to_json(columns: &[Column]) -> Json {
    Json::Array(
        columns
            .iter()
            .map(|c| serde_json::json!({ "name": c.name, "type": c.type_name }))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_too_small_for_float4_has_no_direction() {
        assert!(has_direction([0.0, 1e-19]));
        for none in [&[0.0, 0.0][..], &[1e-30, 0.0], &[-1e-23, 1e-23]] {
            assert!(!has_direction(none.iter().copied()), "{none:?}");
        }
    }

    #[test]
    fn params_keep_their_json_kind() {
        assert!(matches!(
            param_from_json(&serde_json::json!(7)),
            Value::Scalar(Scalar::Int64(7))
        ));
        assert!(
            matches!(param_from_json(&serde_json::json!(0.5)), Value::Scalar(Scalar::Float64(f)) if f == 0.5)
        );
        assert!(
            matches!(param_from_json(&serde_json::json!(u64::MAX)), Value::Scalar(Scalar::Numeric(s)) if s == "18446744073709551615")
        );
        assert!(
            matches!(param_from_json(&serde_json::json!([1, 2])), Value::Scalar(Scalar::Json(s)) if s == "[1,2]")
        );
        assert!(matches!(
            param_from_json(&serde_json::json!(null)),
            Value::Null
        ));
    }
}
