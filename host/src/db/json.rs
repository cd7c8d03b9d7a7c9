//! The API's JSON form of SQL values, written straight to text.
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
//!
//! The host writes rows in this form itself (`sql.execute-json`), so a route
//! group answering JSON never receives the values one by one.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::IgnoredAny;

use crate::caps::types::{Scalar, Value};

/// `text` as a JSON string literal.
pub fn string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// Appends the JSON form of `value`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Scalar(scalar) => write_scalar(out, scalar),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match item {
                    Some(scalar) => write_scalar(out, scalar),
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.push(b']');
        }
    }
}

fn write_scalar(out: &mut Vec<u8>, scalar: &Scalar) {
    let _ = match scalar {
        Scalar::Boolean(b) => write!(out, "{b}"),
        Scalar::Int16(i) => write!(out, "{i}"),
        Scalar::Int32(i) => write!(out, "{i}"),
        Scalar::Int64(i) => write!(out, "{i}"),
        Scalar::Float32(f) => {
            write_float(out, f64::from(*f));
            Ok(())
        }
        Scalar::Float64(f) => {
            write_float(out, *f);
            Ok(())
        }
        // Postgres's json and jsonb text is JSON; checked all the same, so
        // nothing here can break the document.
        Scalar::Json(text) if serde_json::from_str::<IgnoredAny>(text).is_ok() => {
            out.extend_from_slice(text.as_bytes());
            Ok(())
        }
        Scalar::Bytes(bytes) => write_string(out, &STANDARD.encode(bytes)),
        Scalar::Vector(items) => {
            out.push(b'[');
            for (i, f) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_float(out, f64::from(*f));
            }
            out.push(b']');
            Ok(())
        }
        Scalar::Json(s)
        | Scalar::Numeric(s)
        | Scalar::Text(s)
        | Scalar::Uuid(s)
        | Scalar::Date(s)
        | Scalar::Time(s)
        | Scalar::Timestamp(s)
        | Scalar::Timestamptz(s)
        | Scalar::Interval(s)
        | Scalar::Other(s) => write_string(out, s),
    };
}

fn write_string(out: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    serde_json::to_writer(out, text).map_err(std::io::Error::other)
}

/// A finite float as a JSON number (`1.0`, `2.5`), the others as strings.
fn write_float(out: &mut Vec<u8>, f: f64) {
    let _ = if f.is_finite() {
        serde_json::to_writer(out, &f).map_err(std::io::Error::other)
    } else if f.is_nan() {
        write_string(out, "NaN")
    } else if f > 0.0 {
        write_string(out, "Infinity")
    } else {
        write_string(out, "-Infinity")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, &value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_kind_has_its_form() {
        let s = |scalar| json(Value::Scalar(scalar));
        assert_eq!(s(Scalar::Boolean(true)), "true");
        assert_eq!(s(Scalar::Int64(-7)), "-7");
        assert_eq!(s(Scalar::Float64(1.0)), "1.0");
        assert_eq!(s(Scalar::Float32(2.5)), "2.5");
        assert_eq!(s(Scalar::Float64(f64::NAN)), "\"NaN\"");
        assert_eq!(s(Scalar::Float64(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(s(Scalar::Numeric("29.99".into())), "\"29.99\"");
        assert_eq!(s(Scalar::Text("a\"b\\\n".into())), r#""a\"b\\\n""#);
        assert_eq!(s(Scalar::Json("{\"a\": [1, 2]}".into())), "{\"a\": [1, 2]}");
        assert_eq!(s(Scalar::Json("not json".into())), "\"not json\"");
        assert_eq!(s(Scalar::Bytes(vec![0, 255])), "\"AP8=\"");
        assert_eq!(s(Scalar::Vector(vec![1.0, 2.5])), "[1.0,2.5]");
        assert_eq!(
            json(Value::Array(vec![Some(Scalar::Int32(1)), None])),
            "[1,null]"
        );
        assert_eq!(json(Value::Null), "null");
    }
}
