//! `POST /v1/collections/:name/ingest`: documents as NDJSON
//! (`application/x-ndjson`) or a JSON array (`application/json`), read as
//! they arrive and written in batches.
//!
//! The rule: good documents are kept, bad ones are reported and skipped. A
//! document is checked on its own (an object; `id`, when present, a string
//! or an integer; each projected value fits its column) before anything is
//! written, so a batch never fails on one document and a document is never
//! half-applied. All batches are one transaction, committed at the end: a
//! request that fails (a dropped connection, a timeout) writes nothing.
//! A document with an `id` already stored replaces it (upsert); within one
//! request the last document with an id wins.

use serde_json::{Value as Json, json};
use zatabase_guest_kit::access::require;
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::sql::{self, Transaction};
use zatabase_guest_kit::types::{Scalar, Value};
use zatabase_guest_kit::values;
use zatabase_guest_kit::{ApiError, BodyReader, Params, Request, Response};

use crate::collections::{self, Collection, quoted};
use crate::projection;
use crate::sql_error;

/// Documents per statement, and the JSON bytes that close a batch early.
const BATCH_DOCUMENTS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;
/// The largest document.
const MAX_DOCUMENT: usize = 4 << 20;
/// Errors listed in the answer (all are counted).
const MAX_ERRORS: usize = 100;
/// The longest document id, in characters (as ZQL's record ids).
const MAX_ID_CHARS: usize = 255;
const CHUNK: u64 = 256 << 10;

/// What is done with each document found in the body: its line (or
/// position) and its text.
type OnDocument<'a> = dyn FnMut(u64, &[u8]) -> Result<(), ApiError> + 'a;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    JsonArray,
}

struct Outcome {
    accepted: u64,
    rejected: u64,
    errors: Vec<Json>,
}

impl Outcome {
    fn reject(&mut self, line: u64, message: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors
                .push(json!({ "line": line, "message": message }));
        }
    }
}

/// A batch being filled: documents by line, as JSON text.
struct Batch<'a> {
    tx: &'a Transaction,
    statement: String,
    version: i64,
    documents: Vec<String>,
    bytes: usize,
}

impl Batch<'_> {
    fn push(&mut self, document: String) -> Result<(), ApiError> {
        self.bytes += document.len();
        self.documents.push(document);
        if self.documents.len() >= BATCH_DOCUMENTS || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ApiError> {
        if self.documents.is_empty() {
            return Ok(());
        }
        let array = format!("[{}]", self.documents.join(","));
        self.tx
            .execute(
                &self.statement,
                &[
                    Value::Scalar(Scalar::Json(array)),
                    Value::Scalar(Scalar::Int64(self.version)),
                ],
            )
            .map_err(sql_error)?;
        self.documents.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// The upsert of a batch (`$1` a JSON array of documents, `$2` the
/// projection version): ids kept or generated, projected columns computed,
/// the last of several documents with one id kept.
fn statement(collection: &Collection) -> String {
    let table = quoted(&collection.name);
    let mut columns = vec!["id", "document", "projection_version"]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let mut values = vec![
        "coalesce(e.doc ->> 'id', gen_random_uuid()::text)".to_owned(),
        "e.doc".to_owned(),
        "$2".to_owned(),
    ];
    let mut updates = vec![
        "document = EXCLUDED.document".to_owned(),
        "projection_version = EXCLUDED.projection_version".to_owned(),
        "updated_at = now()".to_owned(),
    ];
    for column in collection.projection.values() {
        let name = quoted(&column.name);
        columns.push(name.clone());
        values.push(projection::expression(
            column,
            "e.doc",
            projection::Fit::Checked,
        ));
        updates.push(format!("{name} = EXCLUDED.{name}"));
    }
    format!(
        "INSERT INTO {table} ({}) SELECT {} FROM (
            SELECT DISTINCT ON (doc ? 'id', coalesce(doc ->> 'id', n::text)) doc, n
            FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS a(doc, n)
            ORDER BY doc ? 'id', coalesce(doc ->> 'id', n::text), n DESC
         ) AS e
         ON CONFLICT (id) DO UPDATE SET {}",
        columns.join(", "),
        values.join(", "),
        updates.join(", ")
    )
}

/// Checks one document; its JSON text to store, or why it is rejected.
fn check(text: &[u8], collection: &Collection) -> Result<String, String> {
    if text.len() > MAX_DOCUMENT {
        return Err(format!("the document exceeds {MAX_DOCUMENT} bytes"));
    }
    let document: Json = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    storable(text)?;
    let Json::Object(fields) = &document else {
        return Err("a document must be a JSON object".to_owned());
    };
    if values::depth(&document) > values::MAX_DEPTH {
        return Err(format!(
            "the document nests deeper than {} levels",
            values::MAX_DEPTH
        ));
    }
    match fields.get("id") {
        None => {}
        // Postgres's index keeps keys to a third of a page: a long id
        // would fail the whole batch.
        Some(Json::String(id)) if (1..=MAX_ID_CHARS).contains(&id.chars().count()) => {}
        Some(Json::String(_)) => {
            return Err(format!("`id` must be 1-{MAX_ID_CHARS} characters"));
        }
        Some(Json::Number(n)) if n.is_i64() || n.is_u64() => {}
        Some(_) => return Err("`id` must be a string or an integer".to_owned()),
    }
    for column in collection.projection.values() {
        projection::check(&document, column)?;
    }
    // Sent as it came (it parsed as this very object); Postgres stores it
    // as jsonb either way.
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// Numbers past these Postgres's `jsonb` refuses (`numeric`'s range): a
/// value of 10^131072 or more, more than 16383 digits after the point, or
/// an exponent past `i32::MAX / 2` whatever the digits (`0e2000000000`).
const MAX_LEADING_EXPONENT: i64 = 131_071;
const MAX_SCALE: i64 = 16_383;
const MAX_EXPONENT: i64 = 1_073_741_823;

/// Whether the text of a JSON document (valid JSON) is one Postgres's
/// `jsonb` takes as written: no `\u0000` escape in a string, no number
/// out of `numeric`'s range. serde_json reads `1e-20000` as 0 and keeps
/// `\\u0000` (an escaped backslash) apart from a NUL; Postgres, given the
/// text, would refuse the whole batch.
fn storable(text: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        if text[i + 1..].starts_with(b"u0000") {
                            return Err("`\\u0000` cannot be stored (Postgres's jsonb has no NUL)"
                                .to_owned());
                        }
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                number_in_range(&text[start..i])?;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Whether a JSON number's text is in the range of Postgres's `numeric`.
fn number_in_range(number: &[u8]) -> Result<(), String> {
    let number = number.strip_prefix(b"-").unwrap_or(number);
    let (mantissa, exponent) = match number.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(at) => (&number[..at], &number[at + 1..]),
        None => (number, &b""[..]),
    };
    let (negative, digits) = match exponent.first() {
        Some(b'-') => (true, &exponent[1..]),
        Some(b'+') => (false, &exponent[1..]),
        _ => (false, exponent),
    };
    let magnitude = digits.iter().fold(0i64, |n, d| {
        n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    let exponent = if negative { -magnitude } else { magnitude };
    let (whole, fraction) = match mantissa.iter().position(|b| *b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &b""[..]),
    };
    let scale = i64::try_from(fraction.len())
        .unwrap_or(i64::MAX)
        .saturating_sub(exponent);
    // The power of ten of the first digit that is not zero.
    let leading = match whole.iter().position(|d| *d != b'0') {
        Some(at) => i64::try_from(whole.len() - at - 1).unwrap_or(i64::MAX),
        None => match fraction.iter().position(|d| *d != b'0') {
            Some(at) => -1 - i64::try_from(at).unwrap_or(i64::MAX),
            None => i64::MIN,
        },
    };
    if scale > MAX_SCALE
        || leading.saturating_add(exponent) > MAX_LEADING_EXPONENT
        || magnitude > MAX_EXPONENT
    {
        let shown = String::from_utf8_lossy(&number[..number.len().min(40)]).into_owned();
        return Err(format!(
            "the number `{shown}` is out of Postgres's range \
             (below 1e131072, at most 16383 digits after the point)"
        ));
    }
    Ok(())
}

/// `POST /v1/collections/:name/ingest`
pub fn ingest(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let name = params.get("name");
    require(Resource::Collections, Some(name), Action::Write)?;
    let mime = request
        .header("content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let format = match mime.as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => Format::Ndjson,
        "application/json" => Format::JsonArray,
        _ => {
            return Err(ApiError::new(
                415,
                "expected NDJSON (`Content-Type: application/x-ndjson`) or a JSON array \
                 (`application/json`)",
            ));
        }
    };
    let Some(body) = request.body_reader() else {
        return Err(ApiError::bad_request(
            "the request body is empty; expected documents",
        ));
    };

    let tx = sql::begin().map_err(sql_error)?;
    let collection = collections::find_locked(&tx, name, "SHARE")?;
    let mut batch = Batch {
        tx: &tx,
        statement: statement(&collection),
        version: collection.version,
        documents: Vec::new(),
        bytes: 0,
    };
    let mut outcome = Outcome {
        accepted: 0,
        rejected: 0,
        errors: Vec::new(),
    };
    let mut on_document = |line: u64, text: &[u8]| -> Result<(), ApiError> {
        match check(text, &collection) {
            Ok(document) => {
                outcome.accepted += 1;
                batch.push(document)
            }
            Err(message) => {
                outcome.reject(line, message);
                Ok(())
            }
        }
    };
    match format {
        Format::Ndjson => split_lines(body, &mut on_document)?,
        Format::JsonArray => split_array(body, &mut on_document)?,
    }
    batch.flush()?;
    drop(batch);
    tx.commit().map_err(sql_error)?;
    Ok(Response::json(
        200,
        &json!({
            "accepted": outcome.accepted,
            "rejected": outcome.rejected,
            "errors": outcome.errors,
        }),
    ))
}

/// Calls `each` with every non-blank line and its 1-based number.
fn split_lines(body: &BodyReader, each: &mut OnDocument<'_>) -> Result<(), ApiError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut line = 0u64;
    let mut emit = |text: &[u8], line: u64| {
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        each(line, text)
    };
    while let Some(chunk) = body.next_chunk(CHUNK)? {
        let mut start = 0;
        for (i, byte) in chunk.iter().enumerate() {
            if *byte == b'\n' {
                line += 1;
                if pending.is_empty() {
                    emit(&chunk[start..i], line)?;
                } else {
                    pending.extend_from_slice(&chunk[start..i]);
                    emit(&pending, line)?;
                    pending.clear();
                }
                start = i + 1;
            }
        }
        pending.extend_from_slice(&chunk[start..]);
        if pending.len() > MAX_DOCUMENT + 1 {
            // Keep what shows it is too long; the rest of the line is dropped.
            pending.truncate(MAX_DOCUMENT + 1);
        }
    }
    if !pending.is_empty() {
        emit(&pending, line + 1)?;
    }
    Ok(())
}

/// Calls `each` with every element of a top-level JSON array and its
/// 1-based position, found by scanning (strings and nesting tracked)
/// without holding the whole array.
fn split_array(body: &BodyReader, each: &mut OnDocument<'_>) -> Result<(), ApiError> {
    let mut scanner = ArrayScanner::default();
    while let Some(chunk) = body.next_chunk(CHUNK)? {
        scanner.feed(&chunk, each)?;
    }
    scanner.finish()
}

#[derive(Default)]
struct ArrayScanner {
    started: bool,
    ended: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
    position: u64,
}

impl ArrayScanner {
    fn feed(&mut self, chunk: &[u8], each: &mut OnDocument<'_>) -> Result<(), ApiError> {
        for &byte in chunk {
            if self.ended {
                if !byte.is_ascii_whitespace() {
                    return Err(ApiError::bad_request(
                        "malformed JSON: data after the array",
                    ));
                }
                continue;
            }
            if !self.started {
                match byte {
                    b'[' => self.started = true,
                    b if b.is_ascii_whitespace() => {}
                    _ => {
                        return Err(ApiError::bad_request(
                            "a JSON body must be an array of documents",
                        ));
                    }
                }
                continue;
            }
            if self.in_string {
                // Past the cap the element is only scanned: its size is
                // known to be too large, and one long string must not
                // hold the whole body.
                if self.element.len() <= MAX_DOCUMENT {
                    self.element.push(byte);
                }
                match (self.escaped, byte) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => {
                    self.in_string = true;
                    self.element.push(byte);
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    self.element.push(byte);
                }
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    self.element.push(byte);
                }
                b',' | b']' if self.depth == 0 => {
                    self.emit(each)?;
                    if byte == b']' {
                        self.ended = true;
                    }
                }
                _ => self.element.push(byte),
            }
            if self.element.len() > MAX_DOCUMENT + 1 {
                self.element.truncate(MAX_DOCUMENT + 1);
            }
        }
        Ok(())
    }

    fn emit(&mut self, each: &mut OnDocument<'_>) -> Result<(), ApiError> {
        let text = std::mem::take(&mut self.element);
        if text.iter().all(u8::is_ascii_whitespace) {
            // `[]`, or a stray comma: nothing to count.
            return Ok(());
        }
        self.position += 1;
        each(self.position, &text)
    }

    fn finish(self) -> Result<(), ApiError> {
        if !self.ended {
            return Err(ApiError::bad_request(
                "malformed JSON: the array is not closed",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str) -> Result<Vec<(u64, String)>, ApiError> {
        let mut scanner = ArrayScanner::default();
        let mut seen = Vec::new();
        let mut each = |n: u64, t: &[u8]| {
            seen.push((n, String::from_utf8_lossy(t).trim().to_owned()));
            Ok(())
        };
        // Fed in small pieces, as a body arrives.
        for piece in text.as_bytes().chunks(3) {
            scanner.feed(piece, &mut each)?;
        }
        scanner.finish()?;
        Ok(seen)
    }

    #[test]
    fn one_long_string_holds_no_more_than_a_document() {
        let mut scanner = ArrayScanner::default();
        let mut sizes = Vec::new();
        let mut each = |_: u64, t: &[u8]| {
            sizes.push(t.len());
            Ok(())
        };
        scanner.feed(br#"[{"a": ""#, &mut each).unwrap();
        let chunk = vec![b'x'; 256 << 10];
        for _ in 0..40 {
            scanner.feed(&chunk, &mut each).unwrap();
            assert!(scanner.element.len() <= MAX_DOCUMENT + 1);
        }
        scanner.feed(br#""}, {"b": 1}]"#, &mut each).unwrap();
        scanner.finish().unwrap();
        // The long one is cut past the cap (and refused as too large);
        // the next is whole.
        assert_eq!(sizes, [MAX_DOCUMENT + 1, 9]);
    }

    #[test]
    fn numbers_and_escapes_are_checked_as_postgres_reads_them() {
        for ok in [
            r#"{"a": 1e-16383}"#,
            r#"{"a": 1e131071, "b": 0.5e131072, "c": -0.0001e3}"#,
            r#"{"a": 123.456e-16380, "b": 1E+5, "c": 0}"#,
            r#"{"a": "\\u0000", "b": "\"1e-20000\"", "1e-99999": true}"#,
        ] {
            assert_eq!(storable(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in [
            r#"{"a": 1e-16384}"#,
            r#"{"a": 1.5e-16383}"#,
            r#"{"a": 0e-20000}"#,
            r#"{"a": [1, {"b": -1e131072}]}"#,
            r#"{"a": 1e-99999999999999999999999}"#,
            r#"{"a": 0e2000000000}"#,
            r#"{"a": 0.0e1073741824}"#,
            r#"{"a": "x\u0000"}"#,
            r#"{"\u0000": 1}"#,
        ] {
            assert!(storable(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn documents_are_checked_one_by_one() {
        let collection = Collection {
            name: "c".to_owned(),
            projection: Default::default(),
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        };
        assert_eq!(
            check(br#"{"id": 3, "a": 1}"#, &collection).unwrap(),
            r#"{"id": 3, "a": 1}"#
        );
        assert!(
            check(b"[1]", &collection)
                .unwrap_err()
                .contains("JSON object")
        );
        assert!(
            check(br#"{"id": 1.5}"#, &collection)
                .unwrap_err()
                .contains("`id`")
        );
        assert!(
            check(br#"{"id": null}"#, &collection)
                .unwrap_err()
                .contains("`id`")
        );
        assert!(
            check(br#"{"a": "\u0000"}"#, &collection)
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            check(b"{", &collection)
                .unwrap_err()
                .starts_with("not JSON")
        );
    }

    #[test]
    fn arrays_split_into_their_elements() {
        let found = elements(r#" [ {"a": [1, {"b": "],}"}]}, {"c": "\"x\\"}, 7 ] "#).unwrap();
        assert_eq!(
            found,
            vec![
                (1, r#"{"a": [1, {"b": "],}"}]}"#.to_owned()),
                (2, r#"{"c": "\"x\\"}"#.to_owned()),
                (3, "7".to_owned()),
            ]
        );
        assert!(elements("[]").unwrap().is_empty());
        assert!(elements(r#"{"a": 1}"#).is_err());
        assert!(elements(r#"[{"a": 1}"#).is_err());
        assert!(elements(r#"[1] 2"#).is_err());
    }
}
