//! Postgres's text output into typed values.
//!
//! Queries run with `DateStyle = ISO, YMD`, `IntervalStyle = iso_8601`,
//! `TimeZone = UTC` and `bytea_output = hex` (see `exec`), so the text forms
//! are already close to the API's: this module types them and makes the last
//! adjustments (a `T` in timestamps, `+00:00` offsets, bytea to bytes).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::postgres::PgConnection;

use crate::caps::types::{Scalar, Value};

/// How one column's values are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Boolean,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Numeric,
    Text,
    Bytes,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Vector,
    Other,
}

impl Decoder {
    /// The decoder for a (base) type name.
    fn for_name(name: &str) -> Self {
        match name {
            "bool" => Self::Boolean,
            "int2" => Self::Int16,
            "int4" => Self::Int32,
            "int8" | "oid" => Self::Int64,
            "float4" => Self::Float32,
            "float8" => Self::Float64,
            "numeric" => Self::Numeric,
            "text" | "varchar" | "bpchar" | "char" | "name" | "citext" | "unknown" => Self::Text,
            "bytea" => Self::Bytes,
            "uuid" => Self::Uuid,
            "date" => Self::Date,
            "time" | "timetz" => Self::Time,
            "timestamp" => Self::Timestamp,
            "timestamptz" => Self::Timestamptz,
            "interval" => Self::Interval,
            "json" | "jsonb" => Self::Json,
            "vector" => Self::Vector,
            _ => Self::Other,
        }
    }

    /// Types one non-null value; text that does not parse as the type says
    /// stays text (`other`), so nothing is lost.
    pub fn scalar(self, text: &str) -> Scalar {
        let other = || Scalar::Other(text.to_owned());
        match self {
            Self::Boolean => match text {
                "t" => Scalar::Boolean(true),
                "f" => Scalar::Boolean(false),
                _ => other(),
            },
            Self::Int16 => text.parse().map_or_else(|_| other(), Scalar::Int16),
            Self::Int32 => text.parse().map_or_else(|_| other(), Scalar::Int32),
            Self::Int64 => text.parse().map_or_else(|_| other(), Scalar::Int64),
            Self::Float32 => text.parse().map_or_else(|_| other(), Scalar::Float32),
            Self::Float64 => text.parse().map_or_else(|_| other(), Scalar::Float64),
            Self::Numeric => Scalar::Numeric(text.to_owned()),
            Self::Text => Scalar::Text(text.to_owned()),
            Self::Bytes => text
                .strip_prefix("\\x")
                .and_then(|hex| hex::decode(hex).ok())
                .map_or_else(other, Scalar::Bytes),
            Self::Uuid => Scalar::Uuid(text.to_owned()),
            Self::Date => Scalar::Date(text.to_owned()),
            // A `timetz`'s whole-hour offset completed as a timestamp's is
            // (`+00` → `+00:00`, as Postgres's `to_json` writes it); a
            // `time` has no offset to complete.
            Self::Time => Scalar::Time(iso_timestamp(text, true).collect()),
            Self::Timestamp => Scalar::Timestamp(iso_timestamp(text, false).collect()),
            Self::Timestamptz => Scalar::Timestamptz(iso_timestamp(text, true).collect()),
            Self::Interval => Scalar::Interval(text.to_owned()),
            Self::Json => Scalar::Json(text.to_owned()),
            Self::Vector => parse_vector(text).map_or_else(other, Scalar::Vector),
            Self::Other => other(),
        }
    }

    /// Types a column value: a scalar, or (with the delimiter between its
    /// elements) an array of them.
    pub fn value(self, array_delimiter: Option<char>, text: &str) -> Value {
        let Some(delimiter) = array_delimiter else {
            return Value::Scalar(self.scalar(text));
        };
        match parse_array(text, delimiter) {
            Some(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| item.map(|t| self.scalar(&t)))
                    .collect(),
            ),
            // Multi-dimensional or decorated arrays keep their text form
            // here (a typed value is one-dimensional); their JSON form
            // (`json.rs`) nests.
            None => Value::Scalar(Scalar::Other(text.to_owned())),
        }
    }
}

/// A column type as the API reports and decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDesc {
    /// `int4`, `text[]`, `vector`, ...
    pub name: String,
    pub decoder: Decoder,
    /// For an array type, the character between its elements in Postgres's
    /// text: the element type's `typdelim` (`,` for all built-ins but `box`,
    /// whose text holds commas and is delimited by `;`).
    pub array_delimiter: Option<char>,
}

impl TypeDesc {
    /// `name` is the type's own name, `base` the name to decode by (the
    /// element's for arrays, the base type's for domains).
    fn new(name: &str, base: &str, array_delimiter: Option<char>) -> Self {
        Self {
            name: if array_delimiter.is_some() {
                format!("{base}[]")
            } else {
                name.to_owned()
            },
            decoder: Decoder::for_name(base),
            array_delimiter,
        }
    }
}

/// Built-in types by OID (`pg_type.dat`; these OIDs are fixed).
const BUILTIN: &[(u32, &str, bool)] = &[
    (16, "bool", false),
    (17, "bytea", false),
    (18, "char", false),
    (19, "name", false),
    (20, "int8", false),
    (21, "int2", false),
    (23, "int4", false),
    (25, "text", false),
    (26, "oid", false),
    (114, "json", false),
    (700, "float4", false),
    (701, "float8", false),
    (705, "unknown", false),
    (1042, "bpchar", false),
    (1043, "varchar", false),
    (1082, "date", false),
    (1083, "time", false),
    (1114, "timestamp", false),
    (1184, "timestamptz", false),
    (1186, "interval", false),
    (1266, "timetz", false),
    (1700, "numeric", false),
    (2950, "uuid", false),
    (3802, "jsonb", false),
    (1000, "bool", true),
    (1001, "bytea", true),
    (1002, "char", true),
    (1003, "name", true),
    (1005, "int2", true),
    (1007, "int4", true),
    (1009, "text", true),
    (1014, "bpchar", true),
    (1015, "varchar", true),
    (1016, "int8", true),
    (1021, "float4", true),
    (1022, "float8", true),
    (1028, "oid", true),
    (1115, "timestamp", true),
    (1182, "date", true),
    (1183, "time", true),
    (1185, "timestamptz", true),
    (1187, "interval", true),
    (1231, "numeric", true),
    (1270, "timetz", true),
    (2951, "uuid", true),
    (199, "json", true),
    (3807, "jsonb", true),
];

/// Type descriptions by OID: the built-ins, plus any other type (pgvector's,
/// a tenant's enums and domains) looked up in `pg_type` the first time a
/// result carries it. Shared by all connections to one database.
#[derive(Debug)]
pub struct TypeCache {
    types: RwLock<HashMap<u32, Arc<TypeDesc>>>,
}

impl Default for TypeCache {
    fn default() -> Self {
        let types = BUILTIN
            .iter()
            .map(|&(oid, name, array)| {
                let delimiter = array.then_some(',');
                (oid, Arc::new(TypeDesc::new(name, name, delimiter)))
            })
            .collect();
        Self {
            types: RwLock::new(types),
        }
    }
}

impl TypeCache {
    pub fn get(&self, oid: u32) -> Option<Arc<TypeDesc>> {
        self.types
            .read()
            .expect("type cache poisoned")
            .get(&oid)
            .cloned()
    }

    /// Looks up the OIDs not known yet.
    ///
    /// This runs on a tenant's connection, in whatever session state its
    /// last statement left (a `search_path` that puts its own schema before
    /// `pg_catalog`, its own `=` operators), and its answer is shared by
    /// every tenant: every operator is `pg_catalog`'s, only the OIDs asked
    /// for are kept, and a type is decoded by its base's name only when that
    /// base is the platform's (`pg_catalog`, or `extensions` for pgvector),
    /// so a tenant's type named `jsonb` stays text.
    pub async fn resolve(&self, conn: &mut PgConnection, oids: &[u32]) -> Result<(), sqlx::Error> {
        let missing: Vec<i64> = oids
            .iter()
            .filter(|oid| self.get(**oid).is_none())
            .map(|oid| i64::from(*oid))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // A domain is read as the type under it, and an array (or a domain
        // over one) by its elements' type and delimiter: `chain` walks from
        // each type asked for through domains and at most one array to the
        // type `r` its values are made of.
        let rows: Vec<(i64, String, String, bool, Option<String>)> = sqlx::query_as(
            "WITH RECURSIVE chain(asked, oid, delimiter) AS ( \
                 SELECT t.oid, t.oid, NULL::pg_catalog.text FROM pg_catalog.pg_type t \
                 WHERE t.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.int8[]::pg_catalog.oid[]) \
               UNION ALL \
                 SELECT c.asked, \
                        CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd'::pg_catalog.\"char\" \
                             THEN t.typbasetype ELSE t.typelem END, \
                        CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd'::pg_catalog.\"char\" \
                             THEN c.delimiter ELSE e.typdelim::pg_catalog.text END \
                 FROM chain c \
                 JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) c.oid \
                 LEFT JOIN pg_catalog.pg_type e ON e.oid OPERATOR(pg_catalog.=) t.typelem \
                 WHERE t.typtype OPERATOR(pg_catalog.=) 'd'::pg_catalog.\"char\" \
                    OR (c.delimiter IS NULL AND e.oid IS NOT NULL \
                        AND t.typcategory OPERATOR(pg_catalog.=) 'A'::pg_catalog.\"char\")) \
             SELECT t.oid::pg_catalog.int8, t.typname::pg_catalog.text, r.typname::pg_catalog.text, \
                    n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,extensions}'::pg_catalog.name[]), \
                    c.delimiter \
             FROM chain c \
             JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) c.asked \
             JOIN pg_catalog.pg_type r ON r.oid OPERATOR(pg_catalog.=) c.oid \
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.typnamespace \
             WHERE r.typtype OPERATOR(pg_catalog.<>) 'd'::pg_catalog.\"char\" \
               AND NOT (c.delimiter IS NULL AND r.typelem OPERATOR(pg_catalog.<>) '0'::pg_catalog.oid \
                        AND r.typcategory OPERATOR(pg_catalog.=) 'A'::pg_catalog.\"char\")",
        )
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?;
        let mut types = self.types.write().expect("type cache poisoned");
        for (oid, name, base, platforms, delimiter) in rows {
            let Ok(oid) = u32::try_from(oid) else {
                continue;
            };
            if !missing.contains(&i64::from(oid)) {
                continue;
            }
            // An array's elements are delimited by one ASCII character.
            let delimiter = delimiter.map(|d| d.chars().next().unwrap_or(','));
            let mut desc = TypeDesc::new(&name, &base, delimiter);
            if !platforms {
                desc.decoder = Decoder::Other;
            }
            types.insert(oid, Arc::new(desc));
        }
        Ok(())
    }
}

/// Postgres's ISO text of a timestamp (or a time) as ISO 8601, in pieces to
/// append:
/// `T` for the space between date and time and, with `offset`, a
/// whole-hour offset completed (`+00` → `+00:00`; `+05:30` and `infinity`
/// stay as they are). A year before Christ keeps its ` BC` suffix, as
/// Postgres's own JSON has it (`to_json`): Postgres reads no signed year,
/// so that form is the one that goes back in.
pub fn iso_timestamp(text: &str, offset: bool) -> impl Iterator<Item = &str> {
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(text) => (text, true),
        None => (text, false),
    };
    let (date, time) = match text.split_once(' ') {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let bytes = text.as_bytes();
    let n = bytes.len();
    let whole_hour = offset
        && n >= 3
        && matches!(bytes[n - 3], b'+' | b'-')
        && bytes[n - 2].is_ascii_digit()
        && bytes[n - 1].is_ascii_digit();
    [
        Some(date),
        time.map(|_| "T"),
        time,
        whole_hour.then_some(":00"),
        bc.then_some(" BC"),
    ]
    .into_iter()
    .flatten()
}

fn parse_vector(text: &str) -> Option<Vec<f32>> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|x| x.trim().parse().ok()).collect()
}

/// A one-dimensional array literal `{a,"b c",NULL}` into its elements,
/// `delimiter` between them. Returns `None` for anything else (nested or
/// dimension-decorated arrays).
fn parse_array(text: &str, delimiter: char) -> Option<Vec<Option<String>>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        match chars.peek() {
            Some('{') => return None,
            Some('"') => items.push(Some(quoted_element(&mut chars)?)),
            _ => items.push(unquoted_element(&mut chars, delimiter)),
        }
        match chars.next() {
            Some(c) if c == delimiter => continue,
            None => return Some(items),
            Some(_) => return None,
        }
    }
}

/// The characters of an array's text, read element by element.
pub(super) type ArrayChars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// A `"..."` element of an array's text (at its opening quote), its
/// backslash escapes undone; `None` if it never closes.
pub(super) fn quoted_element(chars: &mut ArrayChars<'_>) -> Option<String> {
    chars.next();
    let mut item = String::new();
    loop {
        match chars.next()? {
            '\\' => item.push(chars.next()?),
            '"' => return Some(item),
            c => item.push(c),
        }
    }
}

/// An unquoted element of an array's text, up to the `delimiter` or `}`
/// after it; `None` for `NULL`.
pub(super) fn unquoted_element(chars: &mut ArrayChars<'_>, delimiter: char) -> Option<String> {
    let mut item = String::new();
    while let Some(&c) = chars.peek() {
        if c == delimiter || c == '}' {
            break;
        }
        item.push(c);
        chars.next();
    }
    let item = item.trim();
    (!item.eq_ignore_ascii_case("NULL")).then(|| item.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_known_by_oid() {
        let cache = TypeCache::default();
        let int4_array = cache.get(1007).unwrap();
        assert_eq!(
            (
                int4_array.name.as_str(),
                int4_array.decoder,
                int4_array.array_delimiter
            ),
            ("int4[]", Decoder::Int32, Some(','))
        );
        assert_eq!(cache.get(1184).unwrap().decoder, Decoder::Timestamptz);
        assert!(cache.get(99999).is_none());
    }

    #[test]
    fn timestamps_become_iso_8601() {
        assert!(
            matches!(Decoder::Timestamptz.scalar("2024-01-02 03:04:05.5+00"),
            Scalar::Timestamptz(s) if s == "2024-01-02T03:04:05.5+00:00")
        );
        assert!(
            matches!(Decoder::Timestamptz.scalar("2024-01-02 03:04:05+05:30"),
            Scalar::Timestamptz(s) if s == "2024-01-02T03:04:05+05:30")
        );
        assert!(matches!(Decoder::Timestamp.scalar("2024-01-02 03:04:05"),
            Scalar::Timestamp(s) if s == "2024-01-02T03:04:05"));
        // As Postgres's `to_json` writes them, and reads them back.
        assert!(
            matches!(Decoder::Timestamptz.scalar("0044-03-15 12:00:00+00 BC"),
            Scalar::Timestamptz(s) if s == "0044-03-15T12:00:00+00:00 BC")
        );
        assert!(
            matches!(Decoder::Timestamp.scalar("0044-03-15 12:00:00 BC"),
            Scalar::Timestamp(s) if s == "0044-03-15T12:00:00 BC")
        );
    }

    #[test]
    fn arrays_split_with_quotes_and_nulls() {
        assert_eq!(
            parse_array(r#"{1,NULL,"a,b","q\"x",""}"#, ',').unwrap(),
            vec![
                Some("1".into()),
                None,
                Some("a,b".into()),
                Some("q\"x".into()),
                Some(String::new())
            ]
        );
        assert_eq!(
            parse_array("{}", ',').unwrap(),
            Vec::<Option<String>>::new()
        );
        assert!(parse_array("{{1,2},{3,4}}", ',').is_none());
        assert!(parse_array("[1:2]={1,2}", ',').is_none());
        // `box[]`: the elements hold commas and are delimited by `;`.
        assert_eq!(
            parse_array(r#"{(1,1),(0,0);NULL;"(2,2),(1,1)"}"#, ';').unwrap(),
            vec![Some("(1,1),(0,0)".into()), None, Some("(2,2),(1,1)".into())]
        );
    }

    #[test]
    fn bytea_vectors_and_bad_text() {
        assert!(matches!(Decoder::Bytes.scalar("\\x00ff"), Scalar::Bytes(b) if b == [0, 255]));
        assert!(
            matches!(Decoder::Vector.scalar("[1,2.5,-3]"), Scalar::Vector(v) if v == [1.0, 2.5, -3.0])
        );
        assert!(matches!(Decoder::Int32.scalar("x"), Scalar::Other(s) if s == "x"));
        assert!(matches!(Decoder::Float64.scalar("NaN"), Scalar::Float64(f) if f.is_nan()));
        assert!(
            matches!(Decoder::Float64.scalar("-Infinity"), Scalar::Float64(f) if f == f64::NEG_INFINITY)
        );
    }
}
