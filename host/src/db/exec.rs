//! Running a client's SQL: one round trip, one transaction, typed results.
//!
//! The statements go over the simple query protocol behind one prefix
//! statement that resets what an earlier request may have left on the pooled
//! connection and scopes this one (role, and for the platform `search_path`
//! and the statement timeout) with transaction-local settings. Postgres runs
//! a multi-statement query string as one implicit transaction: an error
//! anywhere rolls all of it back, so nothing is ever half-applied.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use sqlx::postgres::{PgConnection, PgDatabaseError, PgErrorPosition, PgRow, PgSeverity};
use sqlx::{AssertSqlSafe, Column, Connection, Either, Executor, Row, SqlSafeStr, ValueRef};

use super::decode::{TypeCache, TypeDesc};
use super::sqltext::{self, Statement, Substitution};
use crate::caps::types::{self as wit, ErrorKind, QueryResult, Scalar, SqlError, Value};

/// Limits applied to every statement.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub statement_timeout: Duration,
    pub max_rows: usize,
    pub max_result_bytes: usize,
    pub index_build_memory_mb: u32,
}

/// Who the statements run as.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `SET LOCAL ROLE` to this role, if any.
    pub role: Option<&'a str>,
    /// Schemas, unquoted, in order; `None` keeps the connection's default.
    pub search_path: Option<&'a [&'a str]>,
    /// Whether the run leaves nothing of its session state behind: it
    /// commits, then resets the connection, in its own round trip (so the
    /// next run finds it clean).
    pub reset_session: bool,
    /// With `reset_session`: whether session-level advisory locks must be
    /// released too (the client may still take them: see migration 0011).
    pub release_locks: bool,
    pub read_only: bool,
}

/// Commands that would step outside the one-transaction-per-call model or
/// leave state on a shared connection.
const REFUSED: &[&str] = &[
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ABORT",
    "ROLLBACK",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DISCARD",
    "LISTEN",
    "UNLISTEN",
    "COPY",
];

/// An error of the given kind, not raised by Postgres.
pub fn error(kind: ErrorKind, message: impl Into<String>) -> SqlError {
    SqlError {
        kind,
        sqlstate: None,
        message: message.into(),
        detail: None,
        hint: None,
        position: None,
    }
}

/// Runs `sql` with `params` on `conn` in `scope`.
pub async fn run(
    conn: &mut PgConnection,
    types: &TypeCache,
    scope: Scope<'_>,
    limits: Limits,
    sql: &str,
    params: &[Value],
) -> Result<Fetched, SqlError> {
    let statements = read(sql, params)?;
    for statement in statements.iter().filter(|s| s.routine_body) {
        parses_alone(conn, sql, statement).await?;
    }
    let literals = render_params(conn, types, &statements, params).await?;
    let (body, substitutions) = sqltext::interpolate(sql, &statements, &literals);
    let (prefix, prefix_statements) = prefix(scope, limits);
    let suffix = match (scope.reset_session, scope.role) {
        (true, _) => SUFFIX,
        (false, Some(_)) => TX_SUFFIX,
        // The platform's own SQL.
        (false, None) => "",
    };
    let sent = format!("{prefix}{body}{suffix}");
    let target = prefix_statements + statements.len() - 1;
    let positions = Positions {
        prefix_chars: prefix.chars().count(),
        substitutions: &substitutions,
    };

    let raw = match collect(conn, sent, target, limits).await {
        Ok(raw) => raw,
        // Past the client's statements and the host's COMMIT (statement
        // `target + 1`) is the reset: the client's statements are committed
        // and their result is whole, but a reset that failed halfway (a
        // statement cancelled by a sibling request, say) leaves what the
        // request set on the connection, which the next request would
        // inherit. Answered, and the connection closed by its owner.
        Err(failed) if scope.reset_session && failed.completed > target + 1 => {
            tracing::warn!(error = %failed.error, "a tenant connection's reset failed after its commit; closing it");
            RawResult {
                reset_failed: true,
                ..failed.partial
            }
        }
        Err(failed) => {
            let mapped = map_error(failed.error, &positions);
            if scope.reset_session && mapped.sqlstate.is_some() {
                let completed = failed.completed;
                // Failed inside the transaction the prefix's `BEGIN` opened
                // (the `BEGIN` done, the `COMMIT` not reached): Postgres
                // skipped the rest of the string and holds the transaction
                // aborted. Failed at the `COMMIT`: rolled back if the commit
                // itself failed (a deferred constraint), aborted if a cancel
                // or timeout came as it started. Failed at the `BEGIN`
                // because a transaction was left aborted: should never be,
                // healed all the same.
                let rolled_back = if (1..=target).contains(&completed) {
                    conn.execute("ROLLBACK").await.map(drop)
                } else if completed == target + 1
                    || (completed == 0 && mapped.sqlstate.as_deref() == Some("25P02"))
                {
                    super::pool::leave_aborted_transaction(conn).await
                } else {
                    Ok(())
                };
                if let Err(e) = rolled_back {
                    tracing::warn!(error = %e, "rolling back a failed tenant run");
                    return Err(error(
                        ErrorKind::Unavailable,
                        "the database connection was lost",
                    ));
                }
            }
            return Err(mapped);
        }
    };
    let mut result = raw
        .resolve(conn, types)
        .await
        .map_err(|e| map_error(e, &Positions::none()))?;
    if statements
        .iter()
        .any(|s| matches!(s.command.as_deref(), Some("CREATE" | "ALTER" | "DROP")))
    {
        // Cached statement descriptions may describe dropped or changed objects.
        let _ = conn.clear_cached_statements().await;
    }
    let last = statements.last().expect("at least one statement");
    if result.columns.is_empty() && returns_rows(last) {
        // No row came back to carry the shape: ask Postgres for it.
        result.columns = describe(conn, types, last.text).await.unwrap_or_default();
    }
    Ok(result)
}

/// Has Postgres parse `statement` of `sql` on its own (nothing runs): it
/// holds a `BEGIN ATOMIC` body, whose semicolons the host read as the
/// body's, and Postgres refuses to parse more than one statement at once.
/// So whatever the host's lexer made of the body, nothing it took for one
/// statement runs as several (sqltext's `split` says why this is checked).
async fn parses_alone(
    conn: &mut PgConnection,
    sql: &str,
    statement: &Statement<'_>,
) -> Result<(), SqlError> {
    let Err(e) = described(conn, statement.text).await else {
        return Ok(());
    };
    // Positions count from the statement's start, in the query as sent.
    let in_statement = Positions {
        prefix_chars: 0,
        substitutions: &[],
    };
    let mut error = map_error(e, &in_statement);
    if let Some(position) = &mut error.position {
        let before = sql[..statement.start].chars().count();
        *position = position.saturating_add(u32::try_from(before).unwrap_or(u32::MAX));
    }
    if error.sqlstate.as_deref() == Some("42601") && error.message.contains("multiple commands") {
        error.kind = ErrorKind::Syntax;
        error.message = "Postgres reads more than one statement where the host reads a \
                         `BEGIN ATOMIC` body; send the statements one by one"
            .to_owned();
    }
    Err(error)
}

/// Postgres's description of `text`: Parse and Describe, nothing runs.
/// sqlx names the statement even on a connection whose statement cache is
/// off (a tenant's), and never closes it there, so it is deallocated at
/// once; the pooled connection would otherwise keep every statement
/// described on it for its whole life. Where sqlx caches statements (the
/// platform's connections), it closes what it evicts, and `DEALLOCATE ALL`
/// would pull its cached statements from under it.
async fn described(
    conn: &mut PgConnection,
    text: &str,
) -> Result<sqlx::postgres::PgStatement, sqlx::Error> {
    let statement = conn
        .prepare(AssertSqlSafe(text.to_owned()).into_sql_str())
        .await?;
    if conn.cached_statements_size() == 0 {
        // It fails only where the Parse before it would have (an aborted
        // transaction, a lost connection).
        let _ = sqlx::raw_sql(AssertSqlSafe("DEALLOCATE ALL"))
            .execute(&mut *conn)
            .await;
    }
    Ok(statement)
}

/// Whether a statement can return rows (the only ones worth describing).
fn returns_rows(statement: &Statement<'_>) -> bool {
    matches!(
        statement.command.as_deref(),
        Some("SELECT" | "WITH" | "VALUES" | "TABLE" | "SHOW" | "EXPLAIN")
    ) || statement.text.to_ascii_uppercase().contains("RETURNING")
}

/// The columns a statement returns, from Postgres's description of it
/// (parse analysis only: nothing runs).
async fn describe(
    conn: &mut PgConnection,
    types: &TypeCache,
    text: &str,
) -> Option<Vec<wit::Column>> {
    let statement = described(conn, text).await.ok()?;
    let columns = sqlx::Statement::columns(&statement);
    let oids: Vec<u32> = columns
        .iter()
        .map(|c| c.type_info().oid().map_or(0, |o| o.0))
        .collect();
    types.resolve(conn, &oids).await.ok()?;
    Some(
        columns
            .iter()
            .zip(oids)
            .map(|(column, oid)| wit::Column {
                name: column.name().to_owned(),
                type_name: types
                    .get(oid)
                    .map_or_else(|| format!("oid:{oid}"), |t| t.name.clone()),
            })
            .collect(),
    )
}

/// Splits and checks the query text before anything is sent.
pub fn read<'a>(sql: &'a str, params: &[Value]) -> Result<Vec<Statement<'a>>, SqlError> {
    // Postgres refuses the message itself (a protocol error, as if the
    // connection had failed): the client's mistake, said as one.
    if sql.contains('\0') {
        return Err(error(
            ErrorKind::Syntax,
            "the query cannot contain NUL characters",
        ));
    }
    let statements = sqltext::split(sql).map_err(|e| error(ErrorKind::Syntax, e.to_string()))?;
    if statements.is_empty() {
        return Err(error(ErrorKind::Syntax, "the query holds no statement"));
    }
    for statement in &statements {
        let command = statement.command.as_deref().unwrap_or_default();
        let rollback_to = command == "ROLLBACK" && statement.second.as_deref() == Some("TO");
        if REFUSED.contains(&command) && !rollback_to {
            return Err(error(
                ErrorKind::Syntax,
                format!(
                    "`{command}` is not available here: each request runs as one transaction of its own"
                ),
            ));
        }
    }
    let used = statements
        .iter()
        .flat_map(|s| s.params.iter().map(|(_, n)| *n))
        .max()
        .unwrap_or(0);
    if !params.is_empty() && statements.len() > 1 {
        return Err(error(
            ErrorKind::InvalidInput,
            "parameters can only be used with a single statement",
        ));
    }
    if used > params.len() {
        return Err(error(
            ErrorKind::InvalidInput,
            format!(
                "the statement uses ${used} but {} parameter(s) were given",
                params.len()
            ),
        ));
    }
    if params.len() > used {
        return Err(error(
            ErrorKind::InvalidInput,
            format!(
                "{} parameter(s) were given but the statement uses {used}",
                params.len()
            ),
        ));
    }
    Ok(statements)
}

/// Settings every connection starts with (startup parameters, so they are
/// the session defaults `RESET ALL` returns to, whatever a role's own
/// defaults say): the output formats the decoder reads, and string literals
/// as the host's lexer reads them (`sqltext`: a backslash in `'...'` is
/// just a backslash), which decides what is refused.
pub const SESSION_SETTINGS: [(&str, &str); 6] = [
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "iso_8601"),
    ("TimeZone", "UTC"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "1"),
    ("standard_conforming_strings", "on"),
];

/// Sent after a client's statements on a connection that is reset: Postgres
/// lexes a whole query string before it runs any of it, so the reset at the
/// start of the next request comes too late for a setting that changes how
/// that request is read (`standard_conforming_strings`, `client_encoding`).
/// The transaction is committed first, then everything reset: code runs at
/// commit too (a `WITH HOLD` cursor's query is run to its end, deferred
/// triggers fire), and what it set at session level would outlive a reset
/// made before it. A failed request skips the rest of the string; its
/// transaction, and what it set with it, is rolled back (`run`).
const SUFFIX: &str = "\n;COMMIT;RESET ALL;CLOSE ALL;UNLISTEN *;DISCARD TEMP;DEALLOCATE ALL";

/// A transaction that spans requests (`Tx`) committed, and its connection
/// reset as [`SUFFIX`] does, in one round trip.
pub const COMMIT_AND_RESET: &str =
    "COMMIT;RESET ALL;CLOSE ALL;UNLISTEN *;DISCARD TEMP;DEALLOCATE ALL";

/// Sent after a client's statements inside a transaction that spans
/// requests (`Tx`), where resetting everything would undo the client's own
/// settings for its next statement: just what decides how that statement
/// is read. A failed statement's transaction is aborted, and its settings
/// with it.
const TX_SUFFIX: &str = "\n;SET standard_conforming_strings = on;SET client_encoding = 'UTF8'";

/// The statements sent before the client's, and how many there are.
///
/// Utility commands wherever they do: Postgres runs one for a fraction of
/// what a `SELECT` costs it (a `SELECT` of `set_config` and a reset
/// function was about a third of Postgres's work per `SELECT 1` request).
/// The one `SELECT` kept is for read-only transactions: it takes the
/// transaction's first snapshot, after which Postgres refuses to make the
/// transaction read-write again.
fn prefix(scope: Scope<'_>, limits: Limits) -> (String, usize) {
    let mut text = String::with_capacity(192);
    let mut count = 0;
    let mut add = |statement: &str| {
        text.push_str(statement);
        text.push_str(";\n");
        count += 1;
    };
    // A reset connection needs no reset before: every request on it ended
    // with one after its commit ([`SUFFIX`], [`COMMIT_AND_RESET`]), or
    // failed, and had what it set (settings, temporary tables, cursors,
    // listens) rolled back with its transaction. What outlives a rollback
    // is the tenant's own (a connection serves one tenant): a statement it
    // prepared inside a function, which the next commit deallocates; and
    // session-level advisory locks, revoked from tenants (migration 0011)
    // or else released here.
    // An explicit transaction, ended by the suffix's `COMMIT`: a `COMMIT`
    // ending the implicit one of a multi-statement string has Postgres
    // log a warning ("there is no transaction in progress"), a line in
    // the server's log for every request.
    if scope.reset_session {
        add("BEGIN");
    }
    if scope.reset_session && scope.release_locks {
        add("SELECT pg_catalog.pg_advisory_unlock_all()");
    }
    // Names and values are the host's own, never a client's; quoted anyway.
    if let Some(role) = scope.role {
        add(&format!("SET LOCAL ROLE {}", super::tenant::ident(role)));
    }
    if let Some(path) = scope.search_path {
        let path: Vec<String> = path.iter().map(|s| super::tenant::ident(s)).collect();
        add(&format!("SET LOCAL search_path TO {}", path.join(", ")));
    }
    if !scope.reset_session {
        // A reset connection is back at its default timeout already.
        add(&format!(
            "SET LOCAL statement_timeout = {}",
            limits.statement_timeout.as_millis()
        ));
    }
    if scope.read_only {
        add("SELECT pg_catalog.set_config('transaction_read_only', 'on', true)");
    }
    (text, count)
}

/// The kept statement's result, as Postgres's text.
struct RawResult {
    /// Name and type OID of each column.
    columns: Vec<(String, u32)>,
    /// As Postgres sent them: each value's text stays in the receive buffer
    /// until it is typed or written as JSON.
    rows: Vec<PgRow>,
    affected_rows: u64,
    truncated: bool,
    /// `Limits::max_result_bytes`, which typing the values keeps to too.
    max_bytes: usize,
    /// Whether the reset after the commit failed: see [`Fetched::reset_failed`].
    reset_failed: bool,
}

/// A run that failed: why, how many statements had completed, and what had
/// been collected by then.
struct Failed {
    error: sqlx::Error,
    completed: usize,
    partial: RawResult,
}

impl RawResult {
    /// Describes the columns, looking up any type OID not known yet.
    async fn resolve(
        self,
        conn: &mut PgConnection,
        types: &TypeCache,
    ) -> Result<Fetched, sqlx::Error> {
        let oids: Vec<u32> = self.columns.iter().map(|(_, oid)| *oid).collect();
        types.resolve(conn, &oids).await?;
        let descs: Vec<Arc<TypeDesc>> = oids
            .iter()
            .map(|oid| {
                types.get(*oid).unwrap_or_else(|| {
                    Arc::new(TypeDesc {
                        name: format!("oid:{oid}"),
                        decoder: super::decode::Decoder::Other,
                        array_delimiter: None,
                    })
                })
            })
            .collect();
        Ok(Fetched {
            columns: self
                .columns
                .into_iter()
                .zip(&descs)
                .map(|((name, _), desc)| wit::Column {
                    name,
                    type_name: desc.name.clone(),
                })
                .collect(),
            descs,
            rows: self.rows,
            affected_rows: self.affected_rows,
            truncated: self.truncated,
            max_bytes: self.max_bytes,
            reset_failed: self.reset_failed,
        })
    }
}

/// A statement's result: its columns typed, its values still Postgres's
/// text until the caller asks for them typed or as JSON.
pub struct Fetched {
    pub columns: Vec<wit::Column>,
    descs: Vec<Arc<TypeDesc>>,
    rows: Vec<PgRow>,
    affected_rows: u64,
    truncated: bool,
    max_bytes: usize,
    reset_failed: bool,
}

impl Fetched {
    /// The client's statements committed, but the reset after them did not
    /// finish: the connection must not serve another request.
    pub fn reset_failed(&self) -> bool {
        self.reset_failed
    }

    /// Every value typed. An array's elements become a value each, so a
    /// row is measured again as typed ([`typed_bytes`]), against the same
    /// cap: the rows past it are cut and the result marked truncated.
    pub fn typed(self) -> Result<QueryResult, SqlError> {
        let mut bytes = 0usize;
        let mut truncated = self.truncated;
        let mut rows = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            let size = typed_bytes(row, &self.descs);
            if bytes + size > self.max_bytes {
                truncated = true;
                break;
            }
            bytes += size;
            rows.push(
                self.descs
                    .iter()
                    .enumerate()
                    .map(|(i, desc)| {
                        Ok(match cell_text(row, i)? {
                            None => Value::Null,
                            Some(text) => desc.decoder.value(desc.array_delimiter, text),
                        })
                    })
                    .collect::<Result<_, SqlError>>()?,
            );
        }
        Ok(QueryResult {
            columns: self.columns,
            rows,
            affected_rows: self.affected_rows,
            truncated,
        })
    }

    /// The rows as the API's JSON text: an array of objects keyed by column
    /// name (a name used twice keeps its last column, as a JSON parser would).
    /// The text is held to the same cap as the rows were read under: JSON
    /// can be six times the value (a control character is `\u0001`), and a
    /// key is written for every value. The rows past it are cut and the
    /// result marked truncated; a value is written whole before it is
    /// measured, so the most held is a value's JSON past the cap.
    pub fn json(self) -> Result<wit::JsonResult, SqlError> {
        let keys: Vec<Option<String>> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let shadowed = self.columns[i + 1..].iter().any(|c| c.name == column.name);
                (!shadowed).then(|| super::json::string(&column.name))
            })
            .collect();
        let mut out =
            Vec::with_capacity((64 + self.rows.len() * 16 * keys.len().max(1)).min(self.max_bytes));
        let mut truncated = self.truncated;
        out.push(b'[');
        'rows: for (r, row) in self.rows.iter().enumerate() {
            let start = out.len();
            if r > 0 {
                out.push(b',');
            }
            out.push(b'{');
            let mut first = true;
            for (i, (desc, key)) in self.descs.iter().zip(&keys).enumerate() {
                let Some(key) = key else { continue };
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(key.as_bytes());
                out.push(b':');
                match cell_text(row, i)? {
                    None => out.extend_from_slice(b"null"),
                    Some(text) => desc
                        .decoder
                        .write_json(desc.array_delimiter, text, &mut out),
                }
                // With the `}` and `]` still to come.
                if out.len() + 2 > self.max_bytes {
                    out.truncate(start);
                    truncated = true;
                    break 'rows;
                }
            }
            out.push(b'}');
        }
        out.push(b']');
        Ok(wit::JsonResult {
            columns: self.columns,
            rows: String::from_utf8(out).expect("JSON written from strings is UTF-8"),
            affected_rows: self.affected_rows,
            truncated,
        })
    }
}

/// Streams the results, keeping the rows of statement number `target` up
/// to the row and byte caps (the first rows; the result is then marked
/// truncated). Rows past the caps are read and dropped, so the host never
/// holds more than the caps whatever the statement returns.
async fn collect(
    conn: &mut PgConnection,
    sent: String,
    target: usize,
    limits: Limits,
) -> Result<RawResult, Failed> {
    let mut index = 0;
    let mut bytes = 0usize;
    let mut result = RawResult {
        columns: Vec::new(),
        rows: Vec::new(),
        affected_rows: 0,
        truncated: false,
        max_bytes: limits.max_result_bytes,
        reset_failed: false,
    };
    let mut stream = sqlx::raw_sql(AssertSqlSafe(sent)).fetch_many(&mut *conn);
    loop {
        let item = match stream.try_next().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(error) => {
                return Err(Failed {
                    error,
                    completed: index,
                    partial: result,
                });
            }
        };
        match item {
            Either::Left(done) => {
                if index == target {
                    result.affected_rows = done.rows_affected();
                }
                index += 1;
            }
            Either::Right(row) if index == target => {
                if result.columns.is_empty() {
                    result.columns = row
                        .columns()
                        .iter()
                        .map(|c| (c.name().to_owned(), c.type_info().oid().map_or(0, |o| o.0)))
                        .collect();
                }
                // Once cut, the rest is only read past, not measured.
                let room = !result.truncated && result.rows.len() < limits.max_rows;
                match room.then(|| row_bytes(&row)) {
                    Some(size) if bytes + size <= limits.max_result_bytes => {
                        bytes += size;
                        result.rows.push(row);
                    }
                    _ => result.truncated = true,
                }
            }
            Either::Right(_) => {}
        }
    }
    Ok(result)
}

/// What holding one value costs beside its bytes (sqlx's offsets into the
/// row, the typed value made of it): without it, a result of empty strings
/// or NULLs would be free, and a million of them are not.
const VALUE_OVERHEAD: usize = 48;

/// The bytes a row's values take as they arrived, each with its overhead.
fn row_bytes(row: &PgRow) -> usize {
    (0..row.len())
        .map(|i| {
            VALUE_OVERHEAD
                + row
                    .try_get_raw(i)
                    .ok()
                    .and_then(|raw| raw.as_bytes().ok())
                    .map_or(0, <[u8]>::len)
        })
        .sum()
}

/// What holding one array element typed costs beside its bytes (its own
/// string while split, the typed value in the array).
const ELEMENT_OVERHEAD: usize = 64;

/// [`row_bytes`] as the row is typed: an array's every element counts
/// [`ELEMENT_OVERHEAD`] too (each delimiter counted as one more element,
/// quoted or not), or `{0,0,...}` would hold 60 times its size.
fn typed_bytes(row: &PgRow, descs: &[Arc<TypeDesc>]) -> usize {
    let elements: usize = descs
        .iter()
        .enumerate()
        .filter_map(|(i, desc)| {
            let delimiter = u8::try_from(desc.array_delimiter?).ok()?;
            let text = row.try_get_raw(i).ok()?.as_bytes().ok()?;
            Some(1 + text.iter().filter(|&&b| b == delimiter).count())
        })
        .sum();
    row_bytes(row).saturating_add(elements.saturating_mul(ELEMENT_OVERHEAD))
}

/// The text of column `i` of `row`, `None` for NULL.
fn cell_text(row: &PgRow, i: usize) -> Result<Option<&str>, SqlError> {
    let raw = row
        .try_get_raw(i)
        .map_err(|e| error(ErrorKind::Internal, e.to_string()))?;
    if raw.is_null() {
        return Ok(None);
    }
    raw.as_str()
        .map(Some)
        .map_err(|e| error(ErrorKind::Internal, format!("a value is not UTF-8: {e}")))
}

/// Literals for the parameters. A JSON array bound to an array-typed
/// parameter becomes a Postgres array, its elements delimited as that type's
/// are; anything else keeps its text form and Postgres parses it as the
/// parameter's type.
async fn render_params(
    conn: &mut PgConnection,
    types: &TypeCache,
    statements: &[Statement<'_>],
    params: &[Value],
) -> Result<Vec<String>, SqlError> {
    let needs_types = params.iter().any(|p| match p {
        Value::Scalar(Scalar::Json(j)) => j.trim_start().starts_with('['),
        Value::Array(_) => true,
        _ => false,
    });
    let mut array_delimiters = vec![None; params.len()];
    if needs_types {
        let statement = described(conn, statements[0].text).await.map_err(|e| {
            let positions = Positions {
                prefix_chars: 0,
                substitutions: &[],
            };
            map_error(e, &positions)
        })?;
        if let Some(Either::Left(infos)) = sqlx::Statement::parameters(&statement) {
            let oids: Vec<u32> = infos.iter().map(|i| i.oid().map_or(0, |o| o.0)).collect();
            types
                .resolve(conn, &oids)
                .await
                .map_err(|e| map_error(e, &Positions::none()))?;
            for (slot, oid) in array_delimiters.iter_mut().zip(oids) {
                *slot = types.get(oid).and_then(|t| t.array_delimiter);
            }
        }
    }
    params
        .iter()
        .zip(array_delimiters)
        .map(|(param, delimiter)| literal(param, delimiter))
        .collect()
}

/// A parameter's literal; `array_delimiter` is set when the parameter is an
/// array type's.
fn literal(value: &Value, array_delimiter: Option<char>) -> Result<String, SqlError> {
    let text = match value {
        Value::Null => return Ok("NULL".to_owned()),
        Value::Scalar(Scalar::Json(json)) => match array_delimiter {
            Some(delimiter) => json_to_array_literal(json, delimiter)?,
            None => json.clone(),
        },
        Value::Scalar(scalar) => scalar_text(scalar),
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|item| match item {
                    None => "NULL".to_owned(),
                    Some(scalar) => array_element(&scalar_text(scalar)),
                })
                .collect();
            let delimiter = array_delimiter.unwrap_or(',').to_string();
            format!("{{{}}}", items.join(&delimiter))
        }
    };
    sqltext::quote_literal(&text).map_err(|e| SqlError {
        // As Postgres says it of a NUL (character_not_in_repertoire).
        sqlstate: Some("22021".to_owned()),
        ..error(ErrorKind::InvalidInput, e)
    })
}

/// The text form Postgres reads for a value.
fn scalar_text(scalar: &Scalar) -> String {
    match scalar {
        Scalar::Boolean(b) => b.to_string(),
        Scalar::Int16(i) => i.to_string(),
        Scalar::Int32(i) => i.to_string(),
        Scalar::Int64(i) => i.to_string(),
        Scalar::Float32(f) => float_text(*f),
        Scalar::Float64(f) => float_text(*f),
        Scalar::Bytes(bytes) => format!("\\x{}", hex::encode(bytes)),
        Scalar::Vector(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|f| float_text(*f))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Scalar::Numeric(s)
        | Scalar::Text(s)
        | Scalar::Uuid(s)
        | Scalar::Date(s)
        | Scalar::Time(s)
        | Scalar::Timestamp(s)
        | Scalar::Timestamptz(s)
        | Scalar::Interval(s)
        | Scalar::Json(s)
        | Scalar::Other(s) => s.clone(),
    }
}

/// A float's text at its own width (a `real`'s 0.1 is `0.1`).
fn float_text<F: std::fmt::Display + Into<f64> + Copy>(value: F) -> String {
    let f: f64 = value.into();
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        value.to_string()
    }
}

/// An element of an array literal, double-quoted.
fn array_element(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `[1, "a", [2, null]]` → `{"1","a",{"2",NULL}}`.
fn json_to_array_literal(json: &str, delimiter: char) -> Result<String, SqlError> {
    fn element(value: &serde_json::Value, delimiter: &str) -> String {
        match value {
            serde_json::Value::Null => "NULL".to_owned(),
            serde_json::Value::Array(items) => {
                let items: Vec<String> = items.iter().map(|i| element(i, delimiter)).collect();
                format!("{{{}}}", items.join(delimiter))
            }
            serde_json::Value::String(s) => array_element(s),
            other => array_element(&other.to_string()),
        }
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        error(
            ErrorKind::InvalidInput,
            format!("invalid JSON parameter: {e}"),
        )
    })?;
    Ok(element(&value, &delimiter.to_string()))
}

/// Where Postgres's error positions point, and how to map them back.
pub struct Positions<'a> {
    prefix_chars: usize,
    substitutions: &'a [Substitution],
}

impl Positions<'static> {
    /// For statements the host sent itself: positions are not reported.
    pub fn none() -> Self {
        Self {
            prefix_chars: usize::MAX,
            substitutions: &[],
        }
    }
}

/// A driver error as the guest sees it.
pub fn map_error(e: sqlx::Error, positions: &Positions<'_>) -> SqlError {
    match e {
        sqlx::Error::Database(db) => {
            let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() else {
                return error(ErrorKind::Internal, db.message().to_owned());
            };
            let position = match pg.position() {
                Some(PgErrorPosition::Original(p)) if p > positions.prefix_chars => {
                    let offset = p - 1 - positions.prefix_chars;
                    u32::try_from(sqltext::original_offset(offset, positions.substitutions) + 1)
                        .ok()
                }
                _ => None,
            };
            // An error Postgres ends the session with (FATAL, PANIC) is
            // the connection's loss, whatever its code; any other is an
            // answer, after which the connection is ready (a statement can
            // raise any SQLSTATE it likes, `XX000` or `08006` included, so
            // the code says nothing of the connection). The connection's
            // owner closes it on an error without a SQLSTATE.
            let fatal = matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic);
            SqlError {
                kind: if fatal {
                    ErrorKind::Unavailable
                } else {
                    kind_of(pg.code())
                },
                sqlstate: (!fatal).then(|| pg.code().to_owned()),
                message: pg.message().to_owned(),
                detail: pg.detail().map(str::to_owned),
                hint: pg.hint().map(str::to_owned),
                position,
            }
        }
        sqlx::Error::PoolTimedOut => error(
            ErrorKind::Unavailable,
            "no database connection became free in time",
        ),
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            tracing::error!(error = %e, "database unreachable");
            error(ErrorKind::Unavailable, "the database is unreachable")
        }
        other => {
            tracing::error!(error = %other, "database driver error");
            error(ErrorKind::Internal, "internal database error")
        }
    }
}

/// SQLSTATE to error kind. Class 22 (data exceptions), 0A, 2x, 42 (the rest)
/// and other client-caused classes are `invalid-input`.
fn kind_of(sqlstate: &str) -> ErrorKind {
    match sqlstate {
        "42601" | "42000" => ErrorKind::Syntax,
        "42P01" | "42703" | "42883" | "42704" | "3F000" | "42P02" | "3D000" => {
            ErrorKind::UndefinedObject
        }
        "42501" | "25006" | "42939" => ErrorKind::PermissionDenied,
        "23505" => ErrorKind::UniqueViolation,
        "23503" => ErrorKind::ForeignKeyViolation,
        "23502" => ErrorKind::NotNullViolation,
        "23514" | "44000" => ErrorKind::CheckViolation,
        "23P01" | "42P07" | "42710" | "42P06" | "42723" | "42701" | "42P04" | "40001" | "40P01" => {
            ErrorKind::Conflict
        }
        "57014" | "55P03" => ErrorKind::Timeout,
        s if s.starts_with("08") || s.starts_with("53") || s.starts_with("57P") => {
            ErrorKind::Unavailable
        }
        s if s.starts_with("XX") || s.starts_with("58") => ErrorKind::Internal,
        _ => ErrorKind::InvalidInput,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Scalar(Scalar::Text(s.to_owned()))
    }

    #[test]
    fn refuses_transaction_control_and_session_commands() {
        for sql in [
            "commit",
            "select 1; begin",
            "ROLLBACK",
            "copy t to stdout",
            "listen x",
        ] {
            let e = read(sql, &[]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Syntax, "{sql}");
        }
        assert!(read("savepoint a; rollback to savepoint a", &[]).is_ok());
    }

    #[test]
    fn parameters_must_match_placeholders() {
        assert!(read("select $1", &[text("a")]).is_ok());
        assert_eq!(
            read("select $2", &[text("a")]).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        assert_eq!(
            read("select 1", &[text("a")]).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        assert_eq!(
            read("select $1; select 2", &[text("a")]).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        assert_eq!(
            read("  -- nothing\n", &[]).unwrap_err().kind,
            ErrorKind::Syntax
        );
    }

    #[test]
    fn literals_are_quoted_text_forms() {
        assert_eq!(literal(&Value::Null, None).unwrap(), "NULL");
        assert_eq!(literal(&text("o'k"), None).unwrap(), "E'o''k'");
        assert_eq!(
            literal(&Value::Scalar(Scalar::Float64(f64::NEG_INFINITY)), None).unwrap(),
            "E'-Infinity'"
        );
        assert_eq!(
            literal(&Value::Scalar(Scalar::Bytes(vec![1, 255])), None).unwrap(),
            r"E'\\x01ff'"
        );
        let json = Value::Scalar(Scalar::Json(r#"[1,"a\"b",null,[2]]"#.to_owned()));
        assert_eq!(
            literal(&json, Some(',')).unwrap(),
            r#"E'{"1","a\\"b",NULL,{"2"}}'"#
        );
        assert_eq!(literal(&json, None).unwrap(), r#"E'[1,"a\\"b",null,[2]]'"#);
        let array = Value::Array(vec![Some(Scalar::Int64(1)), None]);
        assert_eq!(literal(&array, None).unwrap(), r#"E'{"1",NULL}'"#);
        // `box[]` delimits its elements with `;`.
        let boxes = Value::Scalar(Scalar::Json(
            r#"["(1,1),(0,0)",["(2,2),(1,1)",null]]"#.to_owned(),
        ));
        assert_eq!(
            literal(&boxes, Some(';')).unwrap(),
            r#"E'{"(1,1),(0,0)";{"(2,2),(1,1)";NULL}}'"#
        );
        assert_eq!(literal(&array, Some(';')).unwrap(), r#"E'{"1";NULL}'"#);
    }

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(kind_of("42601"), ErrorKind::Syntax);
        assert_eq!(kind_of("42P01"), ErrorKind::UndefinedObject);
        assert_eq!(kind_of("42501"), ErrorKind::PermissionDenied);
        assert_eq!(kind_of("23505"), ErrorKind::UniqueViolation);
        assert_eq!(kind_of("57014"), ErrorKind::Timeout);
        assert_eq!(kind_of("22P02"), ErrorKind::InvalidInput);
        assert_eq!(kind_of("08006"), ErrorKind::Unavailable);
        assert_eq!(kind_of("XX000"), ErrorKind::Internal);
    }
}
