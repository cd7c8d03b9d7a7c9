//! `spin:postgres/postgres@3.0.0` (spin-sdk 5's `pg3`): a function's SQL
//! through Spin's interface. Every connection reaches the function's own
//! tenant, as its own role, whatever address the guest names; each call is
//! one transaction, as with `zatabase:platform/sql`.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};

use super::spin::postgres::postgres::{
    self, Column, DbDataType, DbValue, Error, Host, HostConnection, ParameterValue, RowSet,
};
use super::types::{QueryResult, Scalar, SqlError, Value};
use crate::db::{Db, Fetched, TenantSql};
use crate::dispatch::{FunctionContext, HostState};

/// The host side of a `connection`: the tenant it reaches.
pub struct Connection {
    tenant: TenantSql,
}

/// Per-request state: the function being run, if it is one.
pub struct PostgresState {
    pub db: Arc<Db>,
    pub function: Option<Arc<FunctionContext>>,
    pub table: ResourceTable,
}

impl PostgresState {
    async fn run(
        &mut self,
        connection: &Resource<Connection>,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<Fetched, Error>> {
        let params = match params
            .into_iter()
            .map(parameter)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(params) => params,
            Err(error) => return Ok(Err(error)),
        };
        let connection = self.table.get(connection)?;
        Ok(connection
            .tenant
            .execute(statement, &params, false)
            .await
            .map_err(failed))
    }
}

impl Host for PostgresState {}

impl HostConnection for PostgresState {
    async fn open(
        &mut self,
        _address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let Some(function) = &self.function else {
            return Ok(Err(Error::ConnectionFailed(
                "only a function can open a database connection".to_owned(),
            )));
        };
        let connection = Connection {
            tenant: TenantSql::new(self.db.clone(), function.tenant.clone()),
        };
        Ok(Ok(self.table.push(connection)?))
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        Ok(self
            .run(&connection, &statement, params)
            .await?
            .and_then(|fetched| fetched.typed().map_err(failed))
            .map(row_set))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        Ok(self
            .run(&connection, &statement, params)
            .await?
            .and_then(|fetched| fetched.typed().map_err(failed))
            .map(|result| result.affected_rows))
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

fn failed(error: SqlError) -> Error {
    let mut message = error.message;
    if let Some(detail) = error.detail {
        message = format!("{message} ({detail})");
    }
    Error::QueryFailed(message)
}

fn parameter(value: ParameterValue) -> Result<Value, Error> {
    let scalar = match value {
        ParameterValue::DbNull => return Ok(Value::Null),
        ParameterValue::Boolean(b) => Scalar::Boolean(b),
        ParameterValue::Int8(n) => Scalar::Int16(n.into()),
        ParameterValue::Int16(n) => Scalar::Int16(n),
        ParameterValue::Int32(n) => Scalar::Int32(n),
        ParameterValue::Int64(n) => Scalar::Int64(n),
        ParameterValue::Floating32(f) => Scalar::Float32(f),
        ParameterValue::Floating64(f) => Scalar::Float64(f),
        ParameterValue::Str(s) => Scalar::Text(s),
        ParameterValue::Binary(b) => Scalar::Bytes(b),
        ParameterValue::Date((y, m, d)) => Scalar::Date(format!("{y:04}-{m:02}-{d:02}")),
        ParameterValue::Time((h, mi, s, ns)) => {
            Scalar::Time(format!("{h:02}:{mi:02}:{s:02}.{ns:09}"))
        }
        ParameterValue::Datetime((y, m, d, h, mi, s, ns)) => Scalar::Timestamp(format!(
            "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ns:09}"
        )),
        ParameterValue::Timestamp(seconds) => Scalar::Timestamptz(civil(seconds)),
    };
    Ok(Value::Scalar(scalar))
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SS+00:00`.
fn civil(seconds: i64) -> String {
    let (year, month, day) = crate::functions::cron::civil(seconds.div_euclid(86_400));
    let rest = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn row_set(result: QueryResult) -> RowSet {
    RowSet {
        columns: result
            .columns
            .iter()
            .map(|c| Column {
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

fn data_type(name: &str) -> DbDataType {
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

fn db_value(value: Value) -> DbValue {
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

fn date(text: &str) -> Option<(i32, u8, u8)> {
    let mut parts = text.splitn(3, '-');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.get(..2)?.parse().ok()?,
    ))
}

fn time(text: &str) -> Option<(u8, u8, u8, u32)> {
    let clock = text.split(['+', 'Z']).next()?;
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
    let (day, clock) = text.split_once('T')?;
    let (y, m, d) = date(day)?;
    let (h, mi, s, ns) = time(clock)?;
    Some((y, m, d, h, mi, s, ns))
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    postgres::add_to_linker::<HostState, HasSelf<PostgresState>>(linker, |state| {
        &mut state.postgres
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_become_utc_dates() {
        assert_eq!(civil(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(civil(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(civil(-1), "1969-12-31T23:59:59+00:00");
    }

    #[test]
    fn times_are_read_back_into_spin_tuples() {
        assert_eq!(date("2024-03-01"), Some((2024, 3, 1)));
        assert_eq!(time("12:30:05.25"), Some((12, 30, 5, 250_000_000)));
        assert_eq!(
            datetime("2024-03-01T12:30:05+00:00"),
            Some((2024, 3, 1, 12, 30, 5, 0))
        );
    }
}
