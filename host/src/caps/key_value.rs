//! `fermyon:spin/key-value@2.0.0` (spin-sdk 5's `key_value`): one store per
//! function, `default`, kept in the function's own tenant (table
//! `zatabase_kv` of its schema, created on first use), so Postgres keeps
//! one tenant's keys from another's; each call is one statement as the
//! tenant's role.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};

use super::fermyon::spin::key_value::{self, Error, Host, HostStore};
use super::types::{ErrorKind, QueryResult, Scalar, SqlError, Value};
use crate::db::{Db, Fetched, TenantSql};
use crate::dispatch::{FunctionContext, HostState};

/// Spin's default store, the only one a function has.
const DEFAULT_STORE: &str = "default";
const MAX_KEY_BYTES: usize = 1024;
const MAX_VALUE_BYTES: usize = 1 << 20;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS zatabase_kv (
    function_id uuid NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function_id, key))";

/// The host side of a `store`: the tenant and the function it belongs to.
pub struct Store {
    tenant: TenantSql,
    function_id: Arc<str>,
}

impl Store {
    /// Runs `statement` (`$1` the function's id); creates the table the
    /// first time it is missing.
    async fn run(&self, statement: &str, mut params: Vec<Value>) -> Result<QueryResult, Error> {
        params.insert(0, Value::Scalar(Scalar::Text(self.function_id.to_string())));
        let first = self.tenant.execute(statement, &params, false).await;
        let fetched = match first {
            Err(SqlError {
                kind: ErrorKind::UndefinedObject,
                ..
            }) => {
                self.tenant
                    .execute(CREATE, &[], false)
                    .await
                    .map_err(failed)?;
                self.tenant.execute(statement, &params, false).await
            }
            other => other,
        };
        fetched.and_then(Fetched::typed).map_err(failed)
    }
}

/// Per-request state: the function being run, if it is one.
pub struct KeyValueState {
    pub db: Arc<Db>,
    pub function: Option<Arc<FunctionContext>>,
    pub table: ResourceTable,
}

fn failed(error: SqlError) -> Error {
    Error::Other(error.message)
}

fn key_param(key: String) -> Result<Value, Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Other(format!(
            "a key is at most {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(Value::Scalar(Scalar::Text(key)))
}

impl KeyValueState {
    /// Runs `statement` on `store` with `$2` the key and `extra` after it.
    async fn keyed(
        &mut self,
        store: &Resource<Store>,
        key: String,
        statement: &str,
        extra: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let key = match key_param(key) {
            Ok(key) => key,
            Err(e) => return Ok(Err(e)),
        };
        let mut params = vec![key];
        params.extend(extra);
        Ok(self.table.get(store)?.run(statement, params).await)
    }
}

impl Host for KeyValueState {}

impl HostStore for KeyValueState {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<Store>, Error>> {
        let Some(function) = &self.function else {
            return Ok(Err(Error::AccessDenied));
        };
        if label != DEFAULT_STORE {
            return Ok(Err(Error::NoSuchStore));
        }
        let store = Store {
            tenant: TenantSql::new(self.db.clone(), function.tenant.clone()),
            function_id: function.log.function_id.clone(),
        };
        Ok(Ok(self.table.push(store)?))
    }

    async fn get(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let result = self
            .keyed(
                &store,
                key,
                "SELECT value FROM zatabase_kv WHERE function_id = $1::uuid AND key = $2",
                vec![],
            )
            .await?;
        Ok(result.map(|found| match found.rows.into_iter().next() {
            Some(row) => match row.into_iter().next() {
                Some(Value::Scalar(Scalar::Bytes(bytes))) => Some(bytes),
                _ => None,
            },
            None => None,
        }))
    }

    async fn set(
        &mut self,
        store: Resource<Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(Error::Other(format!(
                "a value is at most {MAX_VALUE_BYTES} bytes"
            ))));
        }
        let result = self
            .keyed(
                &store,
                key,
                "INSERT INTO zatabase_kv (function_id, key, value) VALUES ($1::uuid, $2, $3)
                 ON CONFLICT (function_id, key)
                 DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                vec![Value::Scalar(Scalar::Bytes(value))],
            )
            .await?;
        Ok(result.map(|_| ()))
    }

    async fn delete(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let result = self
            .keyed(
                &store,
                key,
                "DELETE FROM zatabase_kv WHERE function_id = $1::uuid AND key = $2",
                vec![],
            )
            .await?;
        Ok(result.map(|_| ()))
    }

    async fn exists(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let result = self
            .keyed(
                &store,
                key,
                "SELECT 1 FROM zatabase_kv WHERE function_id = $1::uuid AND key = $2",
                vec![],
            )
            .await?;
        Ok(result.map(|found| !found.rows.is_empty()))
    }

    async fn get_keys(
        &mut self,
        store: Resource<Store>,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let result = self
            .table
            .get(&store)?
            .run(
                "SELECT key FROM zatabase_kv WHERE function_id = $1::uuid ORDER BY key",
                vec![],
            )
            .await;
        Ok(result.map(|found| {
            found
                .rows
                .into_iter()
                .filter_map(|row| match row.into_iter().next() {
                    Some(Value::Scalar(Scalar::Text(key))) => Some(key),
                    _ => None,
                })
                .collect()
        }))
    }

    async fn drop(&mut self, store: Resource<Store>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    key_value::add_to_linker::<HostState, HasSelf<KeyValueState>>(linker, |state| {
        &mut state.key_value
    })
}
