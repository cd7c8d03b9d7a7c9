//! A collection's projection: document fields as typed columns.
//!
//! `{"<column>": {"type": "<type>", "path": "$.a.b"}}`. Each projected column
//! is a real column of the collection's table, filled from the document when
//! it is written (and backfilled when the projection changes), so it can be
//! indexed, filtered on, and searched by vector.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use zatabase_guest_kit::ApiError;

/// Largest vector dimension pgvector indexes (and accepts here).
pub const MAX_DIMENSIONS: u32 = 16_000;

/// Columns every collection table has (its own, and Postgres's system
/// columns); a projection cannot name them.
pub const RESERVED: [&str; 11] = [
    "id",
    "document",
    "created_at",
    "updated_at",
    "projection_version",
    "tableoid",
    "xmin",
    "cmin",
    "xmax",
    "cmax",
    "ctid",
];

/// A column type of a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Numeric,
    Boolean,
    Timestamp,
    Jsonb,
    Vector(u32),
}

impl ColumnType {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "text" => Self::Text,
            "integer" => Self::Integer,
            "numeric" => Self::Numeric,
            "boolean" => Self::Boolean,
            "timestamp" => Self::Timestamp,
            "jsonb" => Self::Jsonb,
            other => {
                let dims = other
                    .strip_prefix("vector(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| (1..=MAX_DIMENSIONS).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "unknown type `{other}`: expected text, integer, numeric, boolean, \
                             timestamp, jsonb or vector(N) with 1 <= N <= {MAX_DIMENSIONS}"
                        )
                    })?;
                Self::Vector(dims)
            }
        })
    }

    pub fn name(self) -> String {
        match self {
            Self::Text => "text".to_owned(),
            Self::Integer => "integer".to_owned(),
            Self::Numeric => "numeric".to_owned(),
            Self::Boolean => "boolean".to_owned(),
            Self::Timestamp => "timestamp".to_owned(),
            Self::Jsonb => "jsonb".to_owned(),
            Self::Vector(n) => format!("vector({n})"),
        }
    }

    /// The column's Postgres type.
    pub fn sql(self) -> String {
        match self {
            Self::Text => "text".to_owned(),
            Self::Integer => "bigint".to_owned(),
            Self::Numeric => "numeric".to_owned(),
            Self::Boolean => "boolean".to_owned(),
            Self::Timestamp => "timestamptz".to_owned(),
            Self::Jsonb => "jsonb".to_owned(),
            Self::Vector(n) => format!("extensions.vector({n})"),
        }
    }
}

/// One projected column as the API spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    #[serde(rename = "type")]
    pub ty: String,
    pub path: String,
}

/// A checked projected column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// The path's keys and array indexes, in order.
    pub path: Vec<PathStep>,
    pub spec: ColumnSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

/// A checked projection, by column name.
pub type Projection = BTreeMap<String, Column>;

/// Whether `name` is a usable identifier: lower-case letter first, then
/// lower-case letters, digits or `_`, at most 63 bytes.
pub fn valid_identifier(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The most columns a projection names.
pub const MAX_COLUMNS: usize = 100;

/// Checks a projection as the API received it.
pub fn parse(specs: &BTreeMap<String, ColumnSpec>) -> Result<Projection, ApiError> {
    if specs.len() > MAX_COLUMNS {
        return Err(ApiError::unprocessable(format!(
            "a projection has at most {MAX_COLUMNS} columns, got {}",
            specs.len()
        )));
    }
    let mut projection = Projection::new();
    for (name, spec) in specs {
        if !valid_identifier(name) {
            return Err(ApiError::unprocessable(format!(
                "projection column `{name}`: a name is 1-63 of a-z, 0-9 and _, starting with a letter"
            )));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "projection column `{name}`: the name is reserved ({})",
                RESERVED.join(", ")
            )));
        }
        let ty = ColumnType::parse(&spec.ty)
            .map_err(|e| ApiError::unprocessable(format!("projection column `{name}`: {e}")))?;
        let path = parse_path(&spec.path)
            .map_err(|e| ApiError::unprocessable(format!("projection column `{name}`: {e}")))?;
        projection.insert(
            name.clone(),
            Column {
                name: name.clone(),
                ty,
                path,
                spec: ColumnSpec {
                    ty: ty.name(),
                    path: spec.path.clone(),
                },
            },
        );
    }
    Ok(projection)
}

/// `$.a.b[2].c` into its steps; keys are letters, digits, `_` and `-`.
pub fn parse_path(path: &str) -> Result<Vec<PathStep>, String> {
    let bad =
        || format!("path `{path}`: expected `$` then `.key` or `[index]` steps, e.g. `$.a.b[0]`");
    let mut rest = path.strip_prefix('$').ok_or_else(bad)?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad());
            }
            steps.push(PathStep::Key(key.to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let (index, tail) = after.split_once(']').ok_or_else(bad)?;
            steps.push(PathStep::Index(index.parse().map_err(|_| bad())?));
            rest = tail;
        } else {
            return Err(bad());
        }
    }
    if steps.is_empty() {
        return Err(format!("path `{path}`: name a field, e.g. `$.title`"));
    }
    Ok(steps)
}

/// The API form of a projection.
pub fn specs(projection: &Projection) -> BTreeMap<String, ColumnSpec> {
    projection
        .iter()
        .map(|(name, column)| (name.clone(), column.spec.clone()))
        .collect()
}

/// The value at a column's path in `document` (None when absent), read
/// as Postgres's `#>` reads it in the statement that stores it: a step is
/// a key on an object and an index on an array (negative from the end),
/// whether it was written `.0` or `[0]`.
pub fn extract<'a>(document: &'a Json, path: &[PathStep]) -> Option<&'a Json> {
    let mut value = document;
    for step in path {
        let text = match step {
            PathStep::Key(key) => std::borrow::Cow::Borrowed(key.as_str()),
            PathStep::Index(index) => std::borrow::Cow::Owned(index.to_string()),
        };
        value = match value {
            Json::Object(fields) => fields.get(text.as_ref())?,
            Json::Array(items) => {
                let index: i64 = text.parse().ok()?;
                let index = if index < 0 {
                    i64::try_from(items.len()).ok()? + index
                } else {
                    index
                };
                items.get(usize::try_from(index).ok()?)?
            }
            _ => return None,
        };
    }
    Some(value)
}

/// Checks that `document`'s value for `column` can be stored in it, so a
/// write never fails on a projected value; null or absent is NULL.
pub fn check(document: &Json, column: &Column) -> Result<(), String> {
    let Some(value) = extract(document, &column.path).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let field = &column.spec.path;
    let fail = |expected: &str| {
        Err(format!(
            "{field} (column `{}`): expected {expected}, got {}",
            column.name,
            kind(value)
        ))
    };
    match column.ty {
        ColumnType::Text | ColumnType::Jsonb => Ok(()),
        ColumnType::Integer => match value.as_i64() {
            Some(_) => Ok(()),
            None => fail("an integer"),
        },
        ColumnType::Numeric => match value {
            Json::Number(_) => Ok(()),
            _ => fail("a number"),
        },
        ColumnType::Boolean => match value {
            Json::Bool(_) => Ok(()),
            _ => fail("a boolean"),
        },
        ColumnType::Timestamp => match value.as_str() {
            Some(text) if looks_like_timestamp(text) => Ok(()),
            _ => fail("an ISO 8601 date or timestamp string"),
        },
        ColumnType::Vector(dims) => match value.as_array() {
            Some(items) if items.len() != dims as usize => Err(format!(
                "{field} (column `{}`): expected {dims} dimensions, got {}",
                column.name,
                items.len()
            )),
            // float4, as pgvector stores them.
            Some(items)
                if items
                    .iter()
                    .all(|i| i.as_f64().is_some_and(|x| x.abs() <= f64::from(f32::MAX))) =>
            {
                Ok(())
            }
            _ => fail(&format!("an array of {dims} numbers")),
        },
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM[:SS[.f]]`
/// and a zone (`Z`, or an offset as [`zone_offset_fits`] reads one), each
/// field within its range and the day within its month: what Postgres's
/// `timestamptz` reads of ISO 8601 (it reads more, `2024-3-1` say), so a document it would refuse is reported here (its column
/// would otherwise be NULL without a word).
fn looks_like_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    let number = |at: usize, width: usize| -> Option<u32> {
        let digits = bytes.get(at..at + width)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (Some(year), Some(month), Some(day)) = (number(0, 4), number(5, 2), number(8, 2)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if year == 0 || bytes[4] != b'-' || bytes[7] != b'-' || !(1..=days).contains(&day) {
        return false;
    }
    if bytes.len() == 10 {
        return true;
    }
    let (Some(hour), Some(minute)) = (number(11, 2), number(14, 2)) else {
        return false;
    };
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[13] != b':' || minute > 59 {
        return false;
    }
    let mut at = 16;
    let mut second = 0;
    let mut fraction = false;
    if bytes.get(at) == Some(&b':') {
        let Some(s) = number(at + 1, 2) else {
            return false;
        };
        second = s;
        at += 3;
        if bytes.get(at) == Some(&b'.') {
            let digits = bytes[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                return false;
            }
            fraction = bytes[at + 1..at + 1 + digits].iter().any(|d| *d != b'0');
            at += 1 + digits;
        }
    }
    // 24:00:00 is the next midnight; 60 a leap second.
    let time_fits =
        hour < 24 && second <= 60 || hour == 24 && minute == 0 && second == 0 && !fraction;
    if !time_fits {
        return false;
    }
    match &bytes[at..] {
        [] | [b'Z' | b'z'] => true,
        [b'+' | b'-', offset @ ..] => zone_offset_fits(offset),
        _ => false,
    }
}

/// A zone offset after its sign as Postgres reads one: `H`, `HH`, `HMM`,
/// `HHMM`, or `H[H][:M[M][:S[S]]]`; at most 15 hours, 59 minutes and 59
/// seconds.
fn zone_offset_fits(offset: &[u8]) -> bool {
    let field = |digits: &[u8], max: u32| {
        (1..=2).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit)
            && digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')) <= max
    };
    let maxima = [15, 59, 59];
    if offset.contains(&b':') {
        let parts: Vec<&[u8]> = offset.split(|b| *b == b':').collect();
        parts.len() <= 3 && parts.iter().zip(maxima).all(|(part, max)| field(part, max))
    } else {
        match offset.len() {
            1 | 2 => field(offset, 15),
            3 | 4 => {
                let (hours, minutes) = offset.split_at(offset.len() - 2);
                field(hours, 15) && field(minutes, 59)
            }
            _ => false,
        }
    }
}

/// The largest float4 written in full, or a little under it: a vector's
/// element past it is out of pgvector's range.
const FLOAT4_MAX: &str = "340282340000000000000000000000000000000";

/// How a projected value is computed from a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The document was checked ([`check`]): cast directly.
    Checked,
    /// The document was not: a value that does not fit is NULL.
    Lenient,
}

/// The SQL expression computing `column` from the JSON document `source`
/// (an SQL expression of type jsonb), never failing on a value: ingest
/// checks each document first ([`check`]) and casts what it checked; a
/// backfill takes documents as they are, and a value that does not fit the
/// type gives NULL. Timestamps are always tested (a checked one can still
/// name a day the calendar has not).
pub fn expression(column: &Column, source: &str, fit: Fit) -> String {
    // Keys hold only [A-Za-z0-9_-]: safe inside a text[] literal, each
    // element double-quoted (unquoted, a key `null` is a NULL element).
    let path: Vec<String> = column
        .path
        .iter()
        .map(|step| match step {
            PathStep::Key(key) => format!("\"{key}\""),
            PathStep::Index(index) => format!("\"{index}\""),
        })
        .collect();
    let value = format!("({source} #> '{{{}}}')", path.join(","));
    let text = format!("({value} #>> '{{}}')");
    if fit == Fit::Checked {
        match column.ty {
            ColumnType::Integer | ColumnType::Numeric | ColumnType::Boolean => {
                return format!(
                    "({source} #>> '{{{}}}')::{}",
                    path.join(","),
                    column.ty.sql()
                );
            }
            ColumnType::Vector(_) => {
                return format!("(nullif({value}, 'null'))::text::{}", column.ty.sql());
            }
            _ => {}
        }
    }
    match column.ty {
        ColumnType::Text => format!("CASE WHEN jsonb_typeof({value}) <> 'null' THEN {text} END"),
        ColumnType::Jsonb => format!("CASE WHEN jsonb_typeof({value}) <> 'null' THEN {value} END"),
        ColumnType::Integer => format!(
            "CASE WHEN jsonb_typeof({value}) = 'number' AND pg_input_is_valid({text}, 'bigint') \
             THEN {text}::bigint END"
        ),
        ColumnType::Numeric => {
            format!("CASE WHEN jsonb_typeof({value}) = 'number' THEN {text}::numeric END")
        }
        ColumnType::Boolean => {
            format!("CASE WHEN jsonb_typeof({value}) = 'boolean' THEN {text}::boolean END")
        }
        ColumnType::Timestamp => format!(
            "CASE WHEN jsonb_typeof({value}) = 'string' AND pg_input_is_valid({text}, 'timestamptz') \
             THEN {text}::timestamptz END"
        ),
        // pgvector's input has no soft errors (`pg_input_is_valid` raises
        // them): each element is tested against float4's range here.
        ColumnType::Vector(dims) => format!(
            "CASE WHEN jsonb_typeof({value}) = 'array' AND jsonb_array_length({value}) = {dims} \
             AND NOT jsonb_path_exists({value}, '$[*] ? (@.type() != \"number\" \
               || @ > {FLOAT4_MAX} || @ < -{FLOAT4_MAX})') \
             THEN {value}::text::{} END",
            column.ty.sql()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(ty: &str, path: &str) -> Column {
        let specs = BTreeMap::from([(
            "c".to_owned(),
            ColumnSpec {
                ty: ty.to_owned(),
                path: path.to_owned(),
            },
        )]);
        parse(&specs).unwrap().remove("c").unwrap()
    }

    #[test]
    fn paths_parse_into_steps() {
        assert_eq!(
            parse_path("$.a.b[2].c-d").unwrap(),
            vec![
                PathStep::Key("a".into()),
                PathStep::Key("b".into()),
                PathStep::Index(2),
                PathStep::Key("c-d".into())
            ]
        );
        for bad in ["a.b", "$", "$.", "$.a'b", "$[x]", "$.a[1", "$..a"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_read_as_postgres_reads_them() {
        let read =
            |path: &str, document: Json| extract(&document, &parse_path(path).unwrap()).cloned();
        // A key step indexes an array, an index step names an object's key.
        assert_eq!(read("$.vs.0", json!({"vs": [[1, 2]]})), Some(json!([1, 2])));
        assert_eq!(read("$.a[0]", json!({"a": {"0": "x"}})), Some(json!("x")));
        assert_eq!(read("$.a.-1", json!({"a": [1, 2, 3]})), Some(json!(3)));
        assert_eq!(read("$.a.-4", json!({"a": [1, 2, 3]})), None);
        assert_eq!(read("$.a.x", json!({"a": [1]})), None);
        assert_eq!(read("$.a.b", json!({"a": "text"})), None);
        // So the check refuses what the cast would fail on.
        assert!(check(&json!({"vs": [[1, 2]]}), &column("vector(3)", "$.vs.0")).is_err());
        assert!(check(&json!({"a": {"0": "x"}}), &column("integer", "$.a[0]")).is_err());
    }

    #[test]
    fn types_parse_and_refuse_nonsense() {
        assert_eq!(
            ColumnType::parse("vector(3)").unwrap(),
            ColumnType::Vector(3)
        );
        for bad in ["vector(0)", "vector(16001)", "vector", "int", "vector(x)"] {
            assert!(ColumnType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_checked_against_their_column() {
        let doc = json!({"n": 3, "f": 1.5, "s": "x", "v": [1, 2], "t": "2024-03-01T10:00:00Z", "b": true});
        assert!(check(&doc, &column("integer", "$.n")).is_ok());
        assert!(check(&doc, &column("integer", "$.f")).is_err());
        assert!(check(&doc, &column("numeric", "$.s")).is_err());
        assert!(check(&doc, &column("vector(2)", "$.v")).is_ok());
        let wrong = check(&doc, &column("vector(3)", "$.v")).unwrap_err();
        assert!(wrong.contains("expected 3 dimensions, got 2"), "{wrong}");
        assert!(check(&doc, &column("timestamp", "$.t")).is_ok());
        assert!(check(&doc, &column("timestamp", "$.s")).is_err());
        for good in [
            "2024-02-29",
            "2024-03-01 10:00",
            "2024-03-01t10:00:59.123456",
            "2024-12-31T23:59:60Z",
            "2024-03-01T24:00:00+01",
            "2024-03-01T10:00:00-0530",
            "2024-03-01T10:00:00.5+15:59",
            "2024-03-01T10:00:00+5",
            "2024-03-01T10:00:00+530",
            "2024-03-01T10:00:00+05:30:00",
            "2024-03-01T10:00:00+5:3",
        ] {
            assert!(looks_like_timestamp(good), "{good}");
        }
        for bad in [
            "2023-02-29",
            "2024-02-30",
            "2024-13-01",
            "2024-04-31",
            "0000-01-01",
            "2024-00-10",
            "2024-03-01T25:00",
            "2024-03-01T24:00:01",
            "2024-03-01T10:60",
            "2024-03-01T10:00:61",
            "2024-03-01T10:00:00.",
            "2024-03-01T10:00:00+16:00",
            "2024-03-01T10:00:00+01:60",
            "2024-03-01T10:00::",
            "2024-03-01T10:00:00Zz",
            "2024-3-01",
            "2024-03-01X10:00",
            "2024-03-01T10:00:00+053000",
            "2024-03-01T10:00:00+05:60",
            "2024-03-01T10:00:00+05:30:00:00",
            "2024-03-01T10:00:00+",
            "2024-03-01T10:00+€1",
            "2024-03-01T10:00:00+1:",
        ] {
            assert!(!looks_like_timestamp(bad), "{bad}");
        }
        assert!(check(&doc, &column("boolean", "$.b")).is_ok());
        assert!(check(&doc, &column("integer", "$.missing")).is_ok());
    }

    #[test]
    fn expressions_read_the_path() {
        let integer = expression(&column("integer", "$.a[0].b"), "d", Fit::Lenient);
        assert!(integer.contains(r#"(d #> '{"a","0","b"}')"#), "{integer}");
        let null = expression(&column("text", "$.null.NULL"), "d", Fit::Checked);
        assert!(null.contains(r#"(d #> '{"null","NULL"}')"#), "{null}");
        assert!(integer.ends_with("::bigint END"), "{integer}");
        let vector = expression(&column("vector(2)", "$.e"), "d", Fit::Lenient);
        assert!(
            vector.contains(r#"jsonb_array_length((d #> '{"e"}')) = 2"#),
            "{vector}"
        );
        assert!(
            vector.ends_with("::text::extensions.vector(2) END"),
            "{vector}"
        );
    }
}
