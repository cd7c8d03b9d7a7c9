//! Spin's PostgreSQL interface, in both of its versions: `spin:postgres@3.0.0`
//! (spin-sdk 5's `pg3`) and `spin:postgres@4.2.0` (spin-sdk 7's `pg`, with
//! async calls and streamed rows). Every connection reaches the function's
//! own tenant, as its own role, whatever address the guest names; each call
//! is one transaction, as with `zatabase:platform/sql`.

use std::sync::Arc;

use wasmtime::component::{
    Accessor, FutureReader, HasSelf, Linker, Resource, ResourceTable, StreamReader,
};

use super::spin::postgres3_0_0::postgres as v3;
use super::spin::postgres4_2_0::postgres as v4;
use super::types::{ErrorKind, QueryResult, Scalar, SqlError, Value};
use super::unread::{Reserved, Unread};
use crate::db::{Db, Fetched, TenantSql};
use crate::dispatch::{FunctionContext, HostState};

/// The host side of a `connection` (either version): the tenant it reaches.
#[derive(Clone)]
pub struct Connection {
    tenant: TenantSql,
}

impl Connection {
    async fn run(&self, statement: &str, params: &[Value]) -> Result<QueryResult, SqlError> {
        self.tenant
            .execute(statement, params, false)
            .await
            .and_then(Fetched::typed)
    }
}

/// Per-request state: the function being run, if it is one.
pub struct PostgresState {
    pub db: Arc<Db>,
    pub function: Option<Arc<FunctionContext>>,
    pub table: ResourceTable,
    /// Rows streamed to the guest and not read yet.
    pub unread: Unread,
}

impl PostgresState {
    /// A connection to the function's tenant, or why there is none.
    fn connect(&mut self) -> wasmtime::Result<Result<Resource<Connection>, String>> {
        let Some(function) = &self.function else {
            return Ok(Err(
                "only a function can open a database connection".to_owned()
            ));
        };
        let connection = Connection {
            tenant: TenantSql::new(self.db.clone(), function.tenant.clone()),
        };
        Ok(self.table.push(connection).map_err(|_| {
            format!(
                "this request already holds {} open connections, the most it may",
                super::MAX_HANDLES
            )
        }))
    }

    fn connection(&self, connection: &Resource<Connection>) -> wasmtime::Result<Connection> {
        Ok(self.table.get(connection)?.clone())
    }

    async fn run_v3(
        &mut self,
        connection: &Resource<Connection>,
        statement: &str,
        params: Vec<v3::ParameterValue>,
    ) -> wasmtime::Result<Result<QueryResult, v3::Error>> {
        let params: Vec<Value> = match params.into_iter().map(parameter).collect() {
            Ok(params) => params,
            Err(bad) => return Ok(Err(v3::Error::BadParameter(bad))),
        };
        let connection = self.connection(connection)?;
        Ok(connection.run(statement, &params).await.map_err(failed))
    }
}

// ---------------------------------------------------------------------------
// spin:postgres/postgres@3.0.0 (spin-sdk 5)
// ---------------------------------------------------------------------------

impl v3::Host for PostgresState {}

impl v3::HostConnection for PostgresState {
    async fn open(
        &mut self,
        _address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v3::Error>> {
        Ok(self.connect()?.map_err(v3::Error::ConnectionFailed))
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> wasmtime::Result<Result<v3::RowSet, v3::Error>> {
        Ok(self
            .run_v3(&connection, &statement, params)
            .await?
            .and_then(|result| {
                if result.truncated {
                    Err(v3::Error::Other(overflow(result.rows.len())))
                } else {
                    Ok(row_set(result))
                }
            }))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, v3::Error>> {
        Ok(self
            .run_v3(&connection, &statement, params)
            .await?
            .map(|result| result.affected_rows))
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

/// Why a query's rows are not returned: more came than the host's caps
/// (`sql.max_rows` rows, `sql.max_result_bytes` bytes) let it hold, which
/// it reached after `kept` rows. Said rather than cut short silently, as
/// Spin's interface has no way to say a result is partial.
fn overflow(kept: usize) -> String {
    if kept == 0 {
        return "a row of the result is larger than this host returns at once \
                (`sql.max_result_bytes`); select smaller values. A statement that writes has \
                made its changes all the same"
            .to_owned();
    }
    format!(
        "the result has more than the {kept} rows that fit in what this host returns at once; \
         select fewer (LIMIT, or a narrower WHERE) or smaller values. A statement that writes \
         has made its changes all the same"
    )
}

/// How Spin's own host says an error Postgres did not raise: no
/// connection (the database unreachable, the pool exhausted), or a
/// parameter the statement cannot take (their count); else `None`, a
/// failed query.
enum HostSide {
    ConnectionFailed,
    BadParameter,
}

fn host_side(error: &SqlError) -> Option<HostSide> {
    match (&error.sqlstate, error.kind) {
        (None, ErrorKind::Unavailable) => Some(HostSide::ConnectionFailed),
        (None, ErrorKind::InvalidInput) => Some(HostSide::BadParameter),
        _ => None,
    }
}

fn failed(error: SqlError) -> v3::Error {
    let side = host_side(&error);
    let mut message = error.message;
    if let Some(detail) = error.detail {
        message = format!("{message} ({detail})");
    }
    match side {
        Some(HostSide::ConnectionFailed) => v3::Error::ConnectionFailed(message),
        Some(HostSide::BadParameter) => v3::Error::BadParameter(message),
        None => v3::Error::QueryFailed(message),
    }
}

/// A parameter as the host binds it, or why it cannot be.
fn parameter(value: v3::ParameterValue) -> Result<Value, String> {
    use v3::ParameterValue as P;
    let scalar = match value {
        P::DbNull => return Ok(Value::Null),
        P::Boolean(b) => Scalar::Boolean(b),
        P::Int8(n) => Scalar::Int16(n.into()),
        P::Int16(n) => Scalar::Int16(n),
        P::Int32(n) => Scalar::Int32(n),
        P::Int64(n) => Scalar::Int64(n),
        P::Floating32(f) => Scalar::Float32(f),
        P::Floating64(f) => Scalar::Float64(f),
        P::Str(s) => Scalar::Text(s),
        P::Binary(b) => Scalar::Bytes(b),
        P::Date(d) => Scalar::Date(date_text(d)),
        P::Time(t) => Scalar::Time(time_text(t)?),
        P::Datetime(dt) => Scalar::Timestamp(datetime_text(dt)?),
        P::Timestamp(seconds) => Scalar::Timestamptz(civil(seconds)),
    };
    Ok(Value::Scalar(scalar))
}

/// Spin's date tuple as Postgres reads it: its astronomical year 0 is 1 BC
/// (Postgres reads no signed year).
fn date_text((y, m, d): (i32, u8, u8)) -> String {
    let (year, era) = year_text(y);
    format!("{year}-{m:02}-{d:02}{era}")
}

/// A year as four digits, and ` BC` for a year before 1.
fn year_text(y: i32) -> (String, &'static str) {
    if y > 0 {
        (format!("{y:04}"), "")
    } else {
        (format!("{:04}", 1 - i64::from(y)), " BC")
    }
}

/// A time of day, to the microsecond Postgres keeps: the nanoseconds past
/// it are dropped, as Spin's own host does (written out, Postgres would
/// round `23:59:59.9999995` up to the next day). Nanoseconds past a
/// second are refused (`.1500000000` would read as 0.15 s).
fn time_text((h, mi, s, ns): (u8, u8, u8, u32)) -> Result<String, String> {
    if ns >= 1_000_000_000 {
        return Err(format!(
            "a time's nanoseconds must be under 1,000,000,000, not {ns}"
        ));
    }
    Ok(format!("{h:02}:{mi:02}:{s:02}.{:06}", ns / 1000))
}

fn datetime_text(
    (y, m, d, h, mi, s, ns): (i32, u8, u8, u8, u8, u8, u32),
) -> Result<String, String> {
    let (year, era) = year_text(y);
    Ok(format!(
        "{year}-{m:02}-{d:02}T{}{era}",
        time_text((h, mi, s, ns))?
    ))
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SS+00:00` (` BC` after it for a year
/// before 1, as Postgres reads it).
fn civil(seconds: i64) -> String {
    let (year, month, day) = crate::functions::cron::civil(seconds.div_euclid(86_400));
    let (year, era) = year_text(i32::try_from(year).unwrap_or(i32::MIN));
    let rest = seconds.rem_euclid(86_400);
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00{era}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn row_set(result: QueryResult) -> v3::RowSet {
    v3::RowSet {
        columns: result
            .columns
            .iter()
            .map(|c| v3::Column {
                name: c.name.clone(),
                data_type: data_type(&c.type_name),
            })
            .collect(),
        rows: result
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(db_value).collect())
            .collect(),
    }
}

fn data_type(name: &str) -> v3::DbDataType {
    use v3::DbDataType;
    match name {
        "bool" => DbDataType::Boolean,
        "int2" => DbDataType::Int16,
        "int4" => DbDataType::Int32,
        "int8" => DbDataType::Int64,
        "float4" => DbDataType::Floating32,
        "float8" => DbDataType::Floating64,
        "text" | "varchar" | "bpchar" | "name" | "uuid" | "numeric" | "json" | "jsonb" => {
            DbDataType::Str
        }
        "bytea" => DbDataType::Binary,
        "date" => DbDataType::Date,
        "time" => DbDataType::Time,
        "timestamp" | "timestamptz" => DbDataType::Datetime,
        _ => DbDataType::Other,
    }
}

fn db_value(value: Value) -> v3::DbValue {
    use v3::DbValue;
    match value {
        Value::Null => DbValue::DbNull,
        Value::Array(_) => {
            let mut json = Vec::new();
            crate::db::json::write_value(&mut json, &value);
            DbValue::Str(String::from_utf8_lossy(&json).into_owned())
        }
        Value::Scalar(scalar) => match scalar {
            Scalar::Boolean(b) => DbValue::Boolean(b),
            Scalar::Int16(n) => DbValue::Int16(n),
            Scalar::Int32(n) => DbValue::Int32(n),
            Scalar::Int64(n) => DbValue::Int64(n),
            Scalar::Float32(f) => DbValue::Floating32(f),
            Scalar::Float64(f) => DbValue::Floating64(f),
            Scalar::Bytes(b) => DbValue::Binary(b),
            Scalar::Date(text) => date(&text).map_or(DbValue::Str(text), DbValue::Date),
            Scalar::Time(text) => time(&text).map_or(DbValue::Str(text), DbValue::Time),
            Scalar::Timestamp(text) | Scalar::Timestamptz(text) => {
                datetime(&text).map_or(DbValue::Str(text), DbValue::Datetime)
            }
            Scalar::Vector(v) => DbValue::Str(format!(
                "[{}]",
                v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")
            )),
            Scalar::Numeric(s)
            | Scalar::Text(s)
            | Scalar::Uuid(s)
            | Scalar::Interval(s)
            | Scalar::Json(s)
            | Scalar::Other(s) => DbValue::Str(s),
        },
    }
}

/// A date's text (`2024-03-01`, `0044-03-15 BC`) as Spin's tuple, whose
/// year is astronomical as chrono's is (1 BC is year 0).
fn date(text: &str) -> Option<(i32, u8, u8)> {
    let (text, bc) = before_christ(text);
    let mut parts = text.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    Some((
        if bc { 1 - year } else { year },
        parts.next()?.parse().ok()?,
        parts.next()?.get(..2)?.parse().ok()?,
    ))
}

/// The text without Postgres's ` BC` suffix, and whether it had one.
fn before_christ(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(text) => (text, true),
        None => (text, false),
    }
}

/// A time's text as Spin's tuple, which holds no offset: a time at UTC
/// (the session's zone) only; one with another offset (a `timetz`, or a
/// statement that set another zone) stays text rather than be shifted.
fn time(text: &str) -> Option<(u8, u8, u8, u32)> {
    let clock = match text.find(['+', '-', 'Z']) {
        Some(at) if matches!(&text[at..], "Z" | "+00" | "+00:00") => &text[..at],
        Some(_) => return None,
        None => text,
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':');
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{:0<9}", fraction.get(..fraction.len().min(9))?)
            .parse()
            .ok()?
    };
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        nanos,
    ))
}

fn datetime(text: &str) -> Option<(i32, u8, u8, u8, u8, u8, u32)> {
    let (text, bc) = before_christ(text);
    let (day, clock) = text.split_once('T')?;
    let (y, m, d) = date(day)?;
    let y = if bc { 1 - y } else { y };
    let (h, mi, s, ns) = time(clock)?;
    Some((y, m, d, h, mi, s, ns))
}

// ---------------------------------------------------------------------------
// spin:postgres/postgres@4.2.0 (spin-sdk 7)
// ---------------------------------------------------------------------------

/// A `connection-builder`: the address it was given (any address reaches
/// the function's tenant; a CA root is accepted and has nothing to verify).
pub struct Builder;

type V4 = HasSelf<PostgresState>;

impl v4::Host for PostgresState {}

impl v4::HostConnectionBuilder for PostgresState {
    async fn new(&mut self, _address: String) -> wasmtime::Result<Resource<Builder>> {
        Ok(self.table.push(Builder)?)
    }

    async fn set_ca_root(
        &mut self,
        _builder: Resource<Builder>,
        _certificate: String,
    ) -> wasmtime::Result<Result<(), v4::Error>> {
        Ok(Ok(()))
    }

    async fn build(
        &mut self,
        _builder: Resource<Builder>,
    ) -> wasmtime::Result<Result<Resource<Connection>, v4::Error>> {
        Ok(self.connect()?.map_err(v4::Error::ConnectionFailed))
    }

    async fn drop(&mut self, builder: Resource<Builder>) -> wasmtime::Result<()> {
        self.table.delete(builder)?;
        Ok(())
    }
}

impl v4::HostConnection for PostgresState {
    async fn open(
        &mut self,
        _address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v4::Error>> {
        Ok(self.connect()?.map_err(v4::Error::ConnectionFailed))
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> wasmtime::Result<Result<v4::RowSet, v4::Error>> {
        let connection = self.connection(&connection)?;
        Ok(query_v4(&connection, &statement, params)
            .await
            .map(|(columns, rows)| v4::RowSet { columns, rows }))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, v4::Error>> {
        let connection = self.connection(&connection)?;
        Ok(execute_v4(&connection, &statement, params).await)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl<T> v4::HostConnectionBuilderWithStore<T> for V4 {
    async fn build_async(
        accessor: &Accessor<T, Self>,
        _builder: Resource<Builder>,
    ) -> wasmtime::Result<Result<Resource<Connection>, v4::Error>> {
        Ok(accessor
            .with(|mut access| access.get().connect())?
            .map_err(v4::Error::ConnectionFailed))
    }
}

impl<T> v4::HostConnectionWithStore<T> for V4 {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        _address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v4::Error>> {
        Ok(accessor
            .with(|mut access| access.get().connect())?
            .map_err(v4::Error::ConnectionFailed))
    }

    /// The rows are read in one statement (under the host's row cap), then
    /// streamed to the guest.
    async fn query_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> wasmtime::Result<
        Result<
            (
                Vec<v4::Column>,
                StreamReader<Vec<v4::DbValue>>,
                FutureReader<Result<(), v4::Error>>,
            ),
            v4::Error,
        >,
    > {
        let (connection, unread, arguments) =
            match begin_call(accessor, &connection, &statement, &params)? {
                Ok(begun) => begun,
                Err(refused) => return Ok(Err(refused)),
            };
        let queried = query_v4(&connection, &statement, params).await;
        drop(arguments);
        let (columns, rows) = match queried {
            Ok(result) => result,
            Err(error) => return Ok(Err(error)),
        };
        let bytes = rows.iter().flatten().map(db_value_bytes).sum();
        let rows = match unread.stream(rows, bytes) {
            Ok(rows) => rows,
            Err(refused) => {
                return Ok(Err(v4::Error::Other(format!(
                    "the statement ran (a statement that writes has made its changes), but its \
                     rows cannot be handed over: {refused}"
                ))));
            }
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, rows)?;
            let done = FutureReader::new(&mut access, async { wasmtime::error::Ok(Ok(())) })?;
            Ok(Ok((columns, rows, done)))
        })
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, v4::Error>> {
        let (connection, _, _arguments) =
            match begin_call(accessor, &connection, &statement, &params)? {
                Ok(begun) => begun,
                Err(refused) => return Ok(Err(refused)),
            };
        Ok(execute_v4(&connection, &statement, params).await)
    }
}

/// What an async call runs with: its connection, the store's unread
/// bound, and its statement and parameters counted against their own bound
/// while it runs ([`Unread::hold`]); refused, before it runs, past it.
#[allow(clippy::type_complexity)]
fn begin_call<T>(
    accessor: &Accessor<T, V4>,
    connection: &Resource<Connection>,
    statement: &str,
    params: &[v4::ParameterValue],
) -> wasmtime::Result<Result<(Connection, Unread, Reserved), v4::Error>> {
    let (connection, unread) = accessor.with(|mut access| {
        let state = access.get();
        wasmtime::error::Ok((state.connection(connection)?, state.unread.clone()))
    })?;
    let bytes = statement.len() + params.iter().map(parameter_bytes).sum::<usize>();
    Ok(match unread.hold(bytes) {
        Ok(held) => Ok((connection, unread, held)),
        Err(refused) => Err(v4::Error::Other(refused)),
    })
}

/// What a parameter holds of the host: its own size and what it points to.
fn parameter_bytes(value: &v4::ParameterValue) -> usize {
    use v4::ParameterValue as P;
    let strings = |items: &[Option<String>]| {
        items
            .iter()
            .map(|s| std::mem::size_of::<Option<String>>() + s.as_ref().map_or(0, String::len))
            .sum()
    };
    let bound =
        |bound: &Option<(String, v4::RangeBoundKind)>| bound.as_ref().map_or(0, |(s, _)| s.len());
    std::mem::size_of::<v4::ParameterValue>()
        + match value {
            P::Str(s) | P::Decimal(s) | P::Uuid(s) => s.len(),
            P::Binary(b) | P::Jsonb(b) => b.len(),
            P::ArrayStr(items) | P::ArrayDecimal(items) => strings(items),
            P::ArrayInt32(items) => items.len() * std::mem::size_of::<Option<i32>>(),
            P::ArrayInt64(items) => items.len() * std::mem::size_of::<Option<i64>>(),
            P::RangeDecimal((lower, upper)) => bound(lower) + bound(upper),
            _ => 0,
        }
}

/// What a value holds of the host: its own size and what it points to.
fn db_value_bytes(value: &v4::DbValue) -> usize {
    use v4::DbValue as V;
    let strings = |items: &[Option<String>]| {
        items
            .iter()
            .map(|s| std::mem::size_of::<Option<String>>() + s.as_ref().map_or(0, String::len))
            .sum()
    };
    std::mem::size_of::<v4::DbValue>()
        + match value {
            V::Str(s) | V::Decimal(s) | V::Uuid(s) => s.len(),
            V::Binary(b) | V::Jsonb(b) => b.len(),
            V::ArrayStr(items) | V::ArrayDecimal(items) => strings(items),
            V::ArrayInt32(items) => items.len() * std::mem::size_of::<Option<i32>>(),
            V::ArrayInt64(items) => items.len() * std::mem::size_of::<Option<i64>>(),
            V::Unsupported(b) => b.len(),
            _ => 0,
        }
}

async fn run_v4(
    connection: &Connection,
    statement: &str,
    params: Vec<v4::ParameterValue>,
) -> Result<QueryResult, v4::Error> {
    let params = params
        .into_iter()
        .map(parameter_v4)
        .collect::<Result<Vec<_>, _>>()
        .map_err(v4::Error::BadParameter)?;
    connection.run(statement, &params).await.map_err(failed_v4)
}

async fn query_v4(
    connection: &Connection,
    statement: &str,
    params: Vec<v4::ParameterValue>,
) -> Result<(Vec<v4::Column>, Vec<Vec<v4::DbValue>>), v4::Error> {
    let result = run_v4(connection, statement, params).await?;
    if result.truncated {
        return Err(v4::Error::Other(overflow(result.rows.len())));
    }
    let columns: Vec<v4::Column> = result
        .columns
        .iter()
        .map(|c| v4::Column {
            name: c.name.clone(),
            data_type: data_type_v4(&c.type_name),
        })
        .collect();
    let rows = result
        .rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .zip(&result.columns)
                .map(|(value, column)| db_value_v4(value, &column.type_name))
                .collect()
        })
        .collect();
    Ok((columns, rows))
}

async fn execute_v4(
    connection: &Connection,
    statement: &str,
    params: Vec<v4::ParameterValue>,
) -> Result<u64, v4::Error> {
    Ok(run_v4(connection, statement, params).await?.affected_rows)
}

/// Postgres's own error, with its SQLSTATE, as spin-sdk 7 reads it.
fn failed_v4(error: SqlError) -> v4::Error {
    let as_text = match &error.detail {
        Some(detail) => format!("{} ({detail})", error.message),
        None => error.message.clone(),
    };
    match host_side(&error) {
        Some(HostSide::ConnectionFailed) => return v4::Error::ConnectionFailed(as_text),
        Some(HostSide::BadParameter) => return v4::Error::BadParameter(as_text),
        None => {}
    }
    v4::Error::QueryFailed(match error.sqlstate {
        Some(code) => v4::QueryError::DbError(v4::DbError {
            as_text,
            severity: "ERROR".to_owned(),
            code,
            message: error.message,
            detail: error.detail,
            extras: error
                .hint
                .map(|h| vec![("hint".to_owned(), h)])
                .unwrap_or_default(),
        }),
        None => v4::QueryError::Text(as_text),
    })
}

/// A parameter as the host binds it, or why it cannot be.
fn parameter_v4(value: v4::ParameterValue) -> Result<Value, String> {
    use v4::ParameterValue as P;
    let scalar = match value {
        P::DbNull => return Ok(Value::Null),
        P::Boolean(b) => Scalar::Boolean(b),
        P::Int8(n) => Scalar::Int16(n.into()),
        P::Int16(n) => Scalar::Int16(n),
        P::Int32(n) => Scalar::Int32(n),
        P::Int64(n) => Scalar::Int64(n),
        P::Floating32(f) => Scalar::Float32(f),
        P::Floating64(f) => Scalar::Float64(f),
        P::Str(s) => Scalar::Text(s),
        P::Binary(b) => Scalar::Bytes(b),
        P::Date(d) => Scalar::Date(date_text(d)),
        P::Time(t) => Scalar::Time(time_text(t)?),
        P::Datetime(dt) => Scalar::Timestamp(datetime_text(dt)?),
        P::Timestamp(seconds) => Scalar::Timestamptz(civil(seconds)),
        P::Uuid(s) => Scalar::Uuid(s),
        P::Jsonb(bytes) => Scalar::Json(
            String::from_utf8(bytes).map_err(|_| "a jsonb parameter is not UTF-8".to_owned())?,
        ),
        P::Decimal(s) => Scalar::Numeric(s),
        P::RangeInt32((lower, upper)) => Scalar::Other(range_text(lower, upper)),
        P::RangeInt64((lower, upper)) => Scalar::Other(range_text(lower, upper)),
        P::RangeDecimal((lower, upper)) => Scalar::Other(range_text(lower, upper)),
        P::ArrayInt32(items) => return Ok(array(items, Scalar::Int32)),
        P::ArrayInt64(items) => return Ok(array(items, Scalar::Int64)),
        P::ArrayDecimal(items) => return Ok(array(items, Scalar::Numeric)),
        P::ArrayStr(items) => return Ok(array(items, Scalar::Text)),
        P::Interval(v4::Interval {
            micros,
            days,
            months,
        }) => Scalar::Interval(interval_text(months, days, micros)),
    };
    Ok(Value::Scalar(scalar))
}

/// An interval as Postgres reads it, its time as seconds with a fraction:
/// Postgres before 15 reads each field as a 32-bit number, so `micros`
/// written as microseconds failed past 35 minutes.
fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let (seconds, fraction) = (
        (micros / 1_000_000).unsigned_abs(),
        (micros % 1_000_000).unsigned_abs(),
    );
    format!("{months} mons {days} days {sign}{seconds}.{fraction:06} seconds")
}

fn array<T>(items: Vec<Option<T>>, scalar: fn(T) -> Scalar) -> Value {
    Value::Array(items.into_iter().map(|item| item.map(scalar)).collect())
}

/// A range literal: `[1,5)`, `(,10]`.
fn range_text<T: std::fmt::Display>(
    lower: Option<(T, v4::RangeBoundKind)>,
    upper: Option<(T, v4::RangeBoundKind)>,
) -> String {
    use v4::RangeBoundKind::{Exclusive, Inclusive};
    let (open, low) = match lower {
        Some((v, Inclusive)) => ('[', v.to_string()),
        Some((v, Exclusive)) => ('(', v.to_string()),
        None => ('(', String::new()),
    };
    let (close, high) = match upper {
        Some((v, Inclusive)) => (']', v.to_string()),
        Some((v, Exclusive)) => (')', v.to_string()),
        None => (')', String::new()),
    };
    format!("{open}{low},{high}{close}")
}

fn data_type_v4(name: &str) -> v4::DbDataType {
    use v4::DbDataType as T;
    match name {
        "bool" => T::Boolean,
        "int2" => T::Int16,
        "int4" => T::Int32,
        "int8" => T::Int64,
        "float4" => T::Floating32,
        "float8" => T::Floating64,
        "text" | "varchar" | "bpchar" | "name" => T::Str,
        "bytea" => T::Binary,
        "date" => T::Date,
        "time" => T::Time,
        "timestamp" | "timestamptz" => T::Datetime,
        "uuid" => T::Uuid,
        "json" | "jsonb" => T::Jsonb,
        "numeric" => T::Decimal,
        "int4range" => T::RangeInt32,
        "int8range" => T::RangeInt64,
        "numrange" => T::RangeDecimal,
        "int2[]" | "int4[]" => T::ArrayInt32,
        "int8[]" => T::ArrayInt64,
        "numeric[]" => T::ArrayDecimal,
        "text[]" | "varchar[]" | "bpchar[]" => T::ArrayStr,
        "interval" => T::Interval,
        other => T::Other(other.to_owned()),
    }
}

fn db_value_v4(value: Value, type_name: &str) -> v4::DbValue {
    use v4::DbValue as V;
    let unsupported = |value: &Value| {
        let mut text = Vec::new();
        crate::db::json::write_value(&mut text, value);
        V::Unsupported(text)
    };
    match value {
        Value::Null => V::DbNull,
        Value::Array(items) => match data_type_v4(type_name) {
            v4::DbDataType::ArrayInt32 => V::ArrayInt32(
                items
                    .iter()
                    .map(|item| match item {
                        Some(Scalar::Int16(n)) => Some(i32::from(*n)),
                        Some(Scalar::Int32(n)) => Some(*n),
                        _ => None,
                    })
                    .collect(),
            ),
            v4::DbDataType::ArrayInt64 => V::ArrayInt64(
                items
                    .iter()
                    .map(|item| match item {
                        Some(Scalar::Int64(n)) => Some(*n),
                        _ => None,
                    })
                    .collect(),
            ),
            v4::DbDataType::ArrayDecimal | v4::DbDataType::ArrayStr => {
                let texts = items
                    .iter()
                    .map(|item| match item {
                        Some(Scalar::Numeric(s) | Scalar::Text(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                if type_name == "numeric[]" {
                    V::ArrayDecimal(texts)
                } else {
                    V::ArrayStr(texts)
                }
            }
            _ => unsupported(&Value::Array(items)),
        },
        Value::Scalar(scalar) => match scalar {
            Scalar::Boolean(b) => V::Boolean(b),
            Scalar::Int16(n) => V::Int16(n),
            Scalar::Int32(n) => V::Int32(n),
            Scalar::Int64(n) => V::Int64(n),
            Scalar::Float32(f) => V::Floating32(f),
            Scalar::Float64(f) => V::Floating64(f),
            Scalar::Bytes(b) => V::Binary(b),
            Scalar::Text(s) => V::Str(s),
            Scalar::Uuid(s) => V::Uuid(s),
            Scalar::Json(s) => V::Jsonb(s.into_bytes()),
            Scalar::Numeric(s) => V::Decimal(s),
            Scalar::Date(text) => date(&text).map_or(V::Str(text), V::Date),
            Scalar::Time(text) => time(&text).map_or(V::Str(text), V::Time),
            Scalar::Timestamp(text) | Scalar::Timestamptz(text) => {
                datetime(&text).map_or(V::Str(text), V::Datetime)
            }
            Scalar::Interval(text) => match interval(&text) {
                Some(interval) => V::Interval(interval),
                None => V::Unsupported(text.into_bytes()),
            },
            Scalar::Other(text) => match type_name {
                "int4range" => range(&text)
                    .map(|(l, u)| V::RangeInt32((l, u)))
                    .unwrap_or(V::Unsupported(text.into_bytes())),
                "int8range" => range(&text)
                    .map(|(l, u)| V::RangeInt64((l, u)))
                    .unwrap_or(V::Unsupported(text.into_bytes())),
                "numrange" => range::<String>(&text)
                    .map(|(l, u)| V::RangeDecimal((l, u)))
                    .unwrap_or(V::Unsupported(text.into_bytes())),
                _ => V::Unsupported(text.into_bytes()),
            },
            Scalar::Vector(_) => unsupported(&Value::Scalar(scalar)),
        },
    }
}

type Bound<T> = Option<(T, v4::RangeBoundKind)>;

/// Reads a range's text form (`[1,5)`, `(,10]`); not `empty`, which Spin cannot say.
fn range<T: std::str::FromStr>(text: &str) -> Option<(Bound<T>, Bound<T>)> {
    use v4::RangeBoundKind::{Exclusive, Inclusive};
    // Spin's tuple has no empty range: `(None, None)` is the unbounded one.
    if text == "empty" {
        return None;
    }
    let lower_kind = match text.chars().next()? {
        '[' => Inclusive,
        '(' => Exclusive,
        _ => return None,
    };
    let upper_kind = match text.chars().last()? {
        ']' => Inclusive,
        ')' => Exclusive,
        _ => return None,
    };
    let (low, high) = text.get(1..text.len() - 1)?.split_once(',')?;
    let bound = |s: &str, kind| -> Option<Bound<T>> {
        let s = s.trim_matches('"');
        if s.is_empty() {
            Some(None)
        } else {
            Some(Some((s.parse().ok()?, kind)))
        }
    };
    Some((bound(low, lower_kind)?, bound(high, upper_kind)?))
}

/// Reads an ISO 8601 interval as Postgres writes it (`P1Y2M3DT4H5M6.5S`).
fn interval(text: &str) -> Option<v4::Interval> {
    let rest = text.strip_prefix('P')?;
    let (date, clock) = rest.split_once('T').unwrap_or((rest, ""));
    let mut result = v4::Interval {
        micros: 0,
        days: 0,
        months: 0,
    };
    let mut number = String::new();
    for c in date.chars() {
        if c.is_ascii_digit() || c == '-' || c == '+' {
            number.push(c);
            continue;
        }
        let n: i32 = number.parse().ok()?;
        number.clear();
        match c {
            'Y' => result.months += n * 12,
            'M' => result.months += n,
            'W' => result.days += n * 7,
            'D' => result.days += n,
            _ => return None,
        }
    }
    for c in clock.chars() {
        if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' {
            number.push(c);
            continue;
        }
        let n: f64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'H' => 3_600_000_000.0,
            'M' => 60_000_000.0,
            'S' => 1_000_000.0,
            _ => return None,
        };
        result.micros += (n * unit).round() as i64;
    }
    number.is_empty().then_some(result)
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v3::add_to_linker::<HostState, HasSelf<PostgresState>>(linker, |state| &mut state.postgres)?;
    v4::add_to_linker::<HostState, V4>(linker, |state| &mut state.postgres)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_become_utc_dates() {
        assert_eq!(civil(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(civil(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(civil(-1), "1969-12-31T23:59:59+00:00");
        // Before year 1, as Postgres reads it (it has no year 0).
        assert_eq!(civil(-62_135_596_800), "0001-01-01T00:00:00+00:00");
        assert_eq!(civil(-62_135_596_801), "0001-12-31T23:59:59+00:00 BC");
    }

    #[test]
    fn errors_postgres_did_not_raise_are_said_as_spin_says_them() {
        use crate::db::exec::error;
        let unavailable = || error(ErrorKind::Unavailable, "the database is unreachable");
        let miscounted = || {
            error(
                ErrorKind::InvalidInput,
                "the statement uses $2 but 1 parameter(s) were given",
            )
        };
        assert!(
            matches!(failed_v4(unavailable()), v4::Error::ConnectionFailed(m) if m.contains("unreachable"))
        );
        assert!(matches!(failed_v4(miscounted()), v4::Error::BadParameter(m) if m.contains("$2")));
        assert!(matches!(
            failed(unavailable()),
            v3::Error::ConnectionFailed(_)
        ));
        assert!(matches!(failed(miscounted()), v3::Error::BadParameter(_)));
        // Postgres's own: a failed query, its code kept.
        let raised = || SqlError {
            sqlstate: Some("22P02".to_owned()),
            ..error(
                ErrorKind::InvalidInput,
                "invalid input syntax for type integer",
            )
        };
        assert!(matches!(
            failed_v4(raised()),
            v4::Error::QueryFailed(v4::QueryError::DbError(e)) if e.code == "22P02"
        ));
        assert!(matches!(failed(raised()), v3::Error::QueryFailed(_)));
    }

    #[test]
    fn intervals_are_written_as_seconds() {
        assert_eq!(
            interval_text(1, 2, 3_723_500_000),
            "1 mons 2 days 3723.500000 seconds"
        );
        assert_eq!(
            interval_text(0, 0, -1_500),
            "0 mons 0 days -0.001500 seconds"
        );
        assert_eq!(
            interval_text(-1, -2, i64::MIN),
            "-1 mons -2 days -9223372036854.775808 seconds"
        );
    }

    #[test]
    fn nanoseconds_past_a_second_are_refused() {
        // Truncated to microseconds, not rounded into the next second.
        assert_eq!(
            time_text((12, 0, 0, 999_999_999)).unwrap(),
            "12:00:00.999999"
        );
        assert_eq!(
            datetime_text((2024, 12, 31, 23, 59, 59, 999_999_500)).unwrap(),
            "2024-12-31T23:59:59.999999"
        );
        assert!(time_text((12, 0, 0, 1_500_000_000)).is_err());
        assert!(datetime_text((2024, 1, 1, 12, 0, 0, 1_000_000_000)).is_err());
    }

    #[test]
    fn times_are_read_back_into_spin_tuples() {
        assert_eq!(date("2024-03-01"), Some((2024, 3, 1)));
        assert_eq!(time("12:30:05.25"), Some((12, 30, 5, 250_000_000)));
        assert_eq!(
            datetime("2024-03-01T12:30:05+00:00"),
            Some((2024, 3, 1, 12, 30, 5, 0))
        );
        // An offset the tuple cannot hold leaves the value as text.
        assert_eq!(time("12:30:05+00:00"), Some((12, 30, 5, 0)));
        assert_eq!(time("12:30:05-05"), None);
        assert_eq!(time("12:30:05+05:30"), None);
        assert_eq!(datetime("2024-03-01T12:30:05+02:00"), None);
    }

    #[test]
    fn intervals_are_read_from_postgres_iso_form() {
        let read = |text| interval(text).map(|i| (i.months, i.days, i.micros));
        assert_eq!(read("P1Y2M3DT4H5M6.5S"), Some((14, 3, 14_706_500_000)));
        assert_eq!(read("PT0S"), Some((0, 0, 0)));
        assert_eq!(read("P-1M-2DT-1S"), Some((-1, -2, -1_000_000)));
        assert_eq!(read("1 day"), None);
        assert_eq!(read("P1X"), None);
    }

    #[test]
    fn dates_before_christ_keep_their_era() {
        assert_eq!(date("2024-03-01"), Some((2024, 3, 1)));
        assert_eq!(date("0044-03-15 BC"), Some((-43, 3, 15)));
        assert_eq!(date("0001-01-01 BC"), Some((0, 1, 1)));
        assert_eq!(
            datetime("0044-03-15T12:30:00+00:00 BC"),
            Some((-43, 3, 15, 12, 30, 0, 0))
        );
        assert_eq!(
            datetime("2024-03-01T12:30:00.5"),
            Some((2024, 3, 1, 12, 30, 0, 500_000_000))
        );
        // And back as Postgres reads them.
        assert_eq!(date_text((-43, 3, 15)), "0044-03-15 BC");
        assert_eq!(date_text((0, 1, 1)), "0001-01-01 BC");
        assert_eq!(date_text((2024, 3, 1)), "2024-03-01");
        assert_eq!(
            datetime_text((-43, 3, 15, 12, 30, 0, 0)).unwrap(),
            "0044-03-15T12:30:00.000000 BC"
        );
    }

    #[test]
    fn ranges_round_trip_through_their_text_form() {
        use v4::RangeBoundKind::{Exclusive, Inclusive};
        assert_eq!(
            range::<i32>("[1,5)"),
            Some((Some((1, Inclusive)), Some((5, Exclusive))))
        );
        assert_eq!(range::<i64>("(,10]"), Some((None, Some((10, Inclusive)))));
        assert_eq!(range::<i32>("empty"), None);
        assert_eq!(range::<i32>("[a,b)"), None);
        assert_eq!(
            range_text(Some((1, Inclusive)), Some((5, Exclusive))),
            "[1,5)"
        );
        assert_eq!(range_text::<i32>(None, Some((7, Inclusive))), "(,7]");
    }
}
