//! The JSON form of SQL values, shared by every route group that returns rows.
//!
//! | Postgres                         | JSON                                   |
//! |----------------------------------|----------------------------------------|
//! | int2, int4, int8                 | number                                 |
//! | float4, float8                   | number; NaN and ±Infinity as strings   |
//! | numeric                          | string (exact)                         |
//! | bool                             | true / false                           |
//! | text, varchar, char, uuid        | string                                 |
//! | date, time, timestamp(tz)        | ISO 8601 string                        |
//! | interval                         | ISO 8601 duration string               |
//! | json, jsonb                      | JSON                                   |
//! | bytea                            | base64 string                          |
//! | vector                           | array of numbers                       |
//! | arrays                           | arrays of the above                    |
//! | NULL                             | null                                   |
//! | anything else                    | its Postgres text form                 |

use serde_json::{Map, Number, Value as Json};

use crate::types::{Column, QueryResult, Scalar, Value};

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

/// The JSON form of a column value.
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Scalar(scalar) => scalar_to_json(scalar),
        Value::Array(items) => Json::Array(
            items
                .iter()
                .map(|item| item.as_ref().map_or(Json::Null, scalar_to_json))
                .collect(),
        ),
    }
}

/// A result's rows as JSON objects keyed by column name.
pub fn rows_to_json(result: &QueryResult) -> Vec<Json> {
    result
        .rows
        .iter()
        .map(|row| {
            let object: Map<String, Json> = result
                .columns
                .iter()
                .zip(row)
                .map(|(column, value)| (column.name.clone(), value_to_json(value)))
                .collect();
            Json::Object(object)
        })
        .collect()
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

fn scalar_to_json(scalar: &Scalar) -> Json {
    match scalar {
        Scalar::Boolean(b) => Json::Bool(*b),
        Scalar::Int16(i) => Json::from(*i),
        Scalar::Int32(i) => Json::from(*i),
        Scalar::Int64(i) => Json::from(*i),
        Scalar::Float32(f) => float_to_json(f64::from(*f)),
        Scalar::Float64(f) => float_to_json(*f),
        Scalar::Json(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
        }
        Scalar::Bytes(bytes) => Json::String(base64(bytes)),
        Scalar::Vector(items) => {
            Json::Array(items.iter().map(|f| float_to_json(f64::from(*f))).collect())
        }
        Scalar::Numeric(s)
        | Scalar::Text(s)
        | Scalar::Uuid(s)
        | Scalar::Date(s)
        | Scalar::Time(s)
        | Scalar::Timestamp(s)
        | Scalar::Timestamptz(s)
        | Scalar::Interval(s)
        | Scalar::Other(s) => Json::String(s.clone()),
    }
}

fn float_to_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".to_owned()),
        None if f > 0.0 => Json::String("Infinity".to_owned()),
        None => Json::String("-Infinity".to_owned()),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn floats_that_json_cannot_hold_become_strings() {
        assert_eq!(float_to_json(f64::NAN), Json::String("NaN".into()));
        assert_eq!(
            float_to_json(f64::INFINITY),
            Json::String("Infinity".into())
        );
        assert_eq!(
            float_to_json(f64::NEG_INFINITY),
            Json::String("-Infinity".into())
        );
        assert_eq!(float_to_json(1.5), serde_json::json!(1.5));
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
