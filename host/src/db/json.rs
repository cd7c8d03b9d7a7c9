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

use super::decode::{ArrayChars, Decoder, quoted_element, unquoted_element};
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

impl Decoder {
    /// Appends the JSON form of a non-null column value given as Postgres's
    /// text: what `write_value` writes for `self.value(array_delimiter, text)`,
    /// without building the value where the text already is its JSON form
    /// (integers, json) or a JSON string's content (text, uuid, numeric,
    /// dates, times, intervals).
    pub fn write_json(self, array_delimiter: Option<char>, text: &str, out: &mut Vec<u8>) {
        if let Some(delimiter) = array_delimiter {
            let mark = out.len();
            if write_array(self, delimiter, text, out).is_some() {
                return;
            }
            // Not an array's text after all: written as the text it is.
            out.truncate(mark);
        } else {
            let verbatim = match self {
                Decoder::Text
                | Decoder::Uuid
                | Decoder::Numeric
                | Decoder::Date
                | Decoder::Interval => {
                    let _ = write_string(out, text);
                    return;
                }
                // Digits, separators and perhaps `infinity` or `BC`: their
                // ISO form is a JSON string's content as it is.
                Decoder::Timestamp | Decoder::Timestamptz | Decoder::Time
                    if text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                        && !text.contains(['"', '\\']) =>
                {
                    out.push(b'"');
                    let offset = self != Decoder::Timestamp;
                    for piece in super::decode::iso_timestamp(text, offset) {
                        out.extend_from_slice(piece.as_bytes());
                    }
                    out.push(b'"');
                    return;
                }
                Decoder::Boolean => match text {
                    "t" => Some("true"),
                    "f" => Some("false"),
                    _ => None,
                },
                // Postgres writes integers as `-?[0-9]+`, their JSON form.
                Decoder::Int16 => integer(text, text.parse::<i16>().is_ok()),
                Decoder::Int32 => integer(text, text.parse::<i32>().is_ok()),
                Decoder::Int64 => integer(text, text.parse::<i64>().is_ok()),
                Decoder::Json if serde_json::from_str::<IgnoredAny>(text).is_ok() => Some(text),
                _ => None,
            };
            if let Some(json) = verbatim {
                out.extend_from_slice(json.as_bytes());
                return;
            }
        }
        write_value(out, &self.value(array_delimiter, text));
    }
}

/// An array's text as JSON arrays, nested as deep as its dimensions (a
/// lower bound's decoration, `[0:1]=`, dropped), each element typed by
/// `decoder`, `delimiter` between them; `None` if the text is not an array's.
fn write_array(decoder: Decoder, delimiter: char, text: &str, out: &mut Vec<u8>) -> Option<()> {
    let body = match text.strip_prefix('[') {
        Some(_) => &text[text.find('=')? + 1..],
        None => text,
    };
    let mut chars = body.chars().peekable();
    write_dimension(decoder, delimiter, &mut chars, out)?;
    chars.next().is_none().then_some(())
}

/// One `{...}` of an array's text.
fn write_dimension(
    decoder: Decoder,
    delimiter: char,
    chars: &mut ArrayChars<'_>,
    out: &mut Vec<u8>,
) -> Option<()> {
    if chars.next()? != '{' {
        return None;
    }
    out.push(b'[');
    if chars.peek() == Some(&'}') {
        chars.next();
        out.push(b']');
        return Some(());
    }
    loop {
        match *chars.peek()? {
            '{' => write_dimension(decoder, delimiter, chars, out)?,
            '"' => write_scalar(out, &decoder.scalar(&quoted_element(chars)?)),
            _ => match unquoted_element(chars, delimiter) {
                Some(item) => write_scalar(out, &decoder.scalar(&item)),
                None => out.extend_from_slice(b"null"),
            },
        }
        match chars.next()? {
            c if c == delimiter => out.push(b','),
            '}' => {
                out.push(b']');
                return Some(());
            }
            _ => return None,
        }
    }
}

fn integer(text: &str, parses: bool) -> Option<&str> {
    (parses && !text.starts_with('+')).then_some(text)
}

fn write_scalar(out: &mut Vec<u8>, scalar: &Scalar) {
    let _ = match scalar {
        Scalar::Boolean(b) => write!(out, "{b}"),
        Scalar::Int16(i) => write!(out, "{i}"),
        Scalar::Int32(i) => write!(out, "{i}"),
        Scalar::Int64(i) => write!(out, "{i}"),
        Scalar::Float32(f) => {
            write_float(out, *f);
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
                write_float(out, *f);
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
/// A float in the shortest form that reads back as the same value of its
/// own width: a `real`'s 0.1 is `0.1`, not the `0.10000000149011612` it
/// would be widened to a double first.
fn write_float<F: serde::Serialize + Into<f64> + Copy>(out: &mut Vec<u8>, value: F) {
    let f: f64 = value.into();
    let _ = if f.is_finite() {
        serde_json::to_writer(out, &value).map_err(std::io::Error::other)
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
    fn arrays_of_any_dimension_nest() {
        let array = |decoder: Decoder, text: &str| {
            let mut out = Vec::new();
            decoder.write_json(Some(','), text, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(array(Decoder::Int32, "{1,NULL,3}"), "[1,null,3]");
        assert_eq!(array(Decoder::Int32, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
        assert_eq!(array(Decoder::Int32, "[0:1]={1,2}"), "[1,2]");
        assert_eq!(array(Decoder::Int32, "{}"), "[]");
        assert_eq!(
            array(Decoder::Text, r#"{{"a,b","c\"d"},{NULL,"NULL"}}"#),
            r#"[["a,b","c\"d"],[null,"NULL"]]"#
        );
        // Not an array's text: kept as text.
        assert_eq!(array(Decoder::Int32, "{1,2"), r#""{1,2""#);
        // `box[]`'s elements are delimited by `;` and hold commas.
        let mut boxes = Vec::new();
        Decoder::Other.write_json(Some(';'), "{(1,1),(0,0);NULL;\"(2,2),(1,1)\"}", &mut boxes);
        assert_eq!(
            String::from_utf8(boxes).unwrap(),
            r#"["(1,1),(0,0)",null,"(2,2),(1,1)"]"#
        );
    }

    #[test]
    fn every_kind_has_its_form() {
        let s = |scalar| json(Value::Scalar(scalar));
        assert_eq!(s(Scalar::Boolean(true)), "true");
        assert_eq!(s(Scalar::Int64(-7)), "-7");
        assert_eq!(s(Scalar::Float64(1.0)), "1.0");
        assert_eq!(s(Scalar::Float32(2.5)), "2.5");
        assert_eq!(s(Scalar::Float32(0.1)), "0.1");
        assert_eq!(s(Scalar::Vector(vec![0.1, -1.5])), "[0.1,-1.5]");
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

    #[test]
    fn the_fast_path_writes_what_the_typed_path_writes() {
        use Decoder::*;
        let cases: &[(Decoder, Option<char>, &str)] = &[
            (Text, None, "a \"quoted\" line\n"),
            (Uuid, None, "6f1c1a4e-0000-4000-8000-00000000000a"),
            (Numeric, None, "29.99"),
            (Date, None, "2024-03-01"),
            (Interval, None, "P1DT2H"),
            (Boolean, None, "t"),
            (Boolean, None, "f"),
            (Int16, None, "-32768"),
            (Int16, None, "70000"),
            (Int32, None, "+5"),
            (Int64, None, "9223372036854775807"),
            (Json, None, "{\"a\": [1, 2]}"),
            (Json, None, "{broken"),
            (Float64, None, "NaN"),
            (Timestamptz, None, "2024-03-01 12:30:00+00"),
            (Timestamptz, None, "2024-03-01 12:30:00.123456+05:30"),
            (Timestamptz, None, "1900-01-01 00:00:00+00:09:21"),
            (Timestamptz, None, "0044-03-15 12:00:00+00 BC"),
            (Timestamptz, None, "-infinity"),
            (Timestamp, None, "2024-03-01 12:30:00.5"),
            (Timestamp, None, "infinity"),
            (Time, None, "12:30:00.5"),
            (Time, None, "12:30:00+00"),
            (Time, None, "12:30:00-05:30"),
            (Time, Some(','), "{12:30:00+02,NULL}"),
            (Timestamp, None, "odd \"text\""),
            (Timestamptz, Some(','), "{\"2024-03-01 12:30:00+00\",NULL}"),
            (Int32, Some(','), "{1,NULL,3}"),
            (Other, Some(';'), "{(1,1),(0,0);(2,2),(1,1)}"),
        ];
        for (decoder, delimiter, text) in cases {
            let mut fast = Vec::new();
            decoder.write_json(*delimiter, text, &mut fast);
            let typed = json(decoder.value(*delimiter, text));
            let fast = String::from_utf8(fast).unwrap();
            let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
            assert_eq!(parsed(&fast), parsed(&typed), "{decoder:?} {text}");
        }
        let mut out = Vec::new();
        Timestamptz.write_json(None, "2024-03-01 12:30:00+00", &mut out);
        assert_eq!(out, b"\"2024-03-01T12:30:00+00:00\"");
        out.clear();
        Time.write_json(None, "12:30:00+00", &mut out);
        assert_eq!(out, b"\"12:30:00+00:00\"");
    }
}
