//! Spin's key-value store, in both of its versions: `fermyon:spin/key-value@2.0.0`
//! (spin-sdk 5) and `spin:key-value/key-value@3.0.0` (spin-sdk 7, async).
//! One store per function, `default`, kept in the function's own tenant
//! (table `zatabase_kv` of its schema, created on first use), so Postgres
//! keeps one tenant's keys from another's; each call is one statement as
//! the tenant's role (listing the keys, one per thousand of them).

use std::sync::Arc;

use wasmtime::component::{
    Accessor, FutureReader, HasSelf, Linker, Resource, ResourceTable, StreamReader,
};

use super::fermyon::spin::key_value as v2;
use super::spin::key_value::key_value as v3;
use super::types::{ErrorKind, QueryResult, Scalar, SqlError, Value};
use super::unread::{Reserved, Unread};
use crate::db::{Db, Fetched, TenantSql};
use crate::dispatch::{FunctionContext, HostState};

/// Spin's default store, the only one a function has.
const DEFAULT_STORE: &str = "default";
const MAX_KEY_BYTES: usize = 1024;
const MAX_VALUE_BYTES: usize = 1 << 20;
/// Keys listed per statement (below any row cap an operator would set),
/// and the most one listing holds in all.
const KEYS_PER_PAGE: usize = 1000;
const MAX_LISTED_BYTES: usize = 64 << 20;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS zatabase_kv (
    function_id uuid NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function_id, key))";

/// Why a call failed, whichever version asked.
enum Failure {
    AccessDenied,
    NoSuchStore,
    StoreTableFull,
    Other(String),
}

impl From<Failure> for v2::Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::AccessDenied => Self::AccessDenied,
            Failure::NoSuchStore => Self::NoSuchStore,
            Failure::StoreTableFull => Self::StoreTableFull,
            Failure::Other(message) => Self::Other(message),
        }
    }
}

impl From<Failure> for v3::Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::AccessDenied => Self::AccessDenied,
            Failure::NoSuchStore => Self::NoSuchStore,
            Failure::StoreTableFull => Self::StoreTableFull,
            Failure::Other(message) => Self::Other(message),
        }
    }
}

/// The host side of a `store` (either version): the tenant and the
/// function it belongs to.
#[derive(Clone)]
pub struct Store {
    tenant: TenantSql,
    function_id: Arc<str>,
}

impl Store {
    /// Runs `statement` (`$1` the function's id); creates the table the
    /// first time it is missing.
    async fn run(&self, statement: &str, mut params: Vec<Value>) -> Result<QueryResult, Failure> {
        params.insert(0, Value::Scalar(Scalar::Text(self.function_id.to_string())));
        let first = self.tenant.execute(statement, &params, false).await;
        let fetched = match first {
            Err(SqlError {
                kind: ErrorKind::UndefinedObject,
                ..
            }) => {
                match self.tenant.execute(CREATE, &[], false).await {
                    // Another call created it at the same moment
                    // (`IF NOT EXISTS` does not cover a concurrent create).
                    Ok(_)
                    | Err(SqlError {
                        kind: ErrorKind::UniqueViolation,
                        ..
                    }) => {}
                    Err(error) => return Err(failed(error)),
                }
                self.tenant.execute(statement, &params, false).await
            }
            other => other,
        };
        fetched.and_then(Fetched::typed).map_err(failed)
    }

    /// Runs `statement` with `$2` the key and `extra` after it.
    async fn keyed(
        &self,
        key: String,
        statement: &str,
        extra: Vec<Value>,
    ) -> Result<QueryResult, Failure> {
        if key.len() > MAX_KEY_BYTES {
            return Err(Failure::Other(format!(
                "a key is at most {MAX_KEY_BYTES} bytes"
            )));
        }
        let mut params = vec![Value::Scalar(Scalar::Text(key))];
        params.extend(extra);
        self.run(statement, params).await
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Failure> {
        let found = self
            .keyed(
                key,
                "SELECT value FROM zatabase_kv WHERE function_id = $1::uuid AND key = $2",
                vec![],
            )
            .await?;
        if found.truncated {
            // Written past the value limit through SQL: too large for one
            // result, which is not the same as missing.
            return Err(Failure::Other(
                "the value is larger than one result may be; it was written past the store's limit"
                    .to_owned(),
            ));
        }
        Ok(match found.rows.into_iter().next() {
            Some(row) => match row.into_iter().next() {
                Some(Value::Scalar(Scalar::Bytes(bytes))) => Some(bytes),
                _ => None,
            },
            None => None,
        })
    }

    async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Failure> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(Failure::Other(format!(
                "a value is at most {MAX_VALUE_BYTES} bytes"
            )));
        }
        self.keyed(
            key,
            "INSERT INTO zatabase_kv (function_id, key, value) VALUES ($1::uuid, $2, $3)
             ON CONFLICT (function_id, key)
             DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            vec![Value::Scalar(Scalar::Bytes(value))],
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, key: String) -> Result<(), Failure> {
        self.keyed(
            key,
            "DELETE FROM zatabase_kv WHERE function_id = $1::uuid AND key = $2",
            vec![],
        )
        .await
        .map(|_| ())
    }

    async fn exists(&self, key: String) -> Result<bool, Failure> {
        let found = self
            .keyed(
                key,
                "SELECT 1 FROM zatabase_kv WHERE function_id = $1::uuid AND key = $2",
                vec![],
            )
            .await?;
        Ok(!found.rows.is_empty())
    }

    /// Every key, in order: read a page at a time (each page after the
    /// last key of the one before), so the host's row cap on a result
    /// does not cut the list short. Each page is counted in `reserved` as
    /// it arrives.
    async fn keys(&self, reserved: &mut Reserved) -> Result<Vec<String>, Failure> {
        let mut keys: Vec<String> = Vec::new();
        let mut listed_bytes = 0;
        loop {
            // Each page starts after the last key listed.
            let (after, params) = match keys.last() {
                None => ("", vec![]),
                Some(last) => (
                    " AND key > $2",
                    vec![Value::Scalar(Scalar::Text(last.clone()))],
                ),
            };
            let page = self
                .run(
                    &format!(
                        "SELECT key FROM zatabase_kv WHERE function_id = $1::uuid{after}
                         ORDER BY key LIMIT {KEYS_PER_PAGE}"
                    ),
                    params,
                )
                .await?;
            let full = page.rows.len() == KEYS_PER_PAGE || page.truncated;
            let read = page.rows.len();
            if read == 0 && page.truncated {
                // A key written past the key limit through SQL, too large
                // for a result: the listing would end short without a word.
                return Err(Failure::Other(
                    "a key is larger than one result may be; it was written past the store's limit"
                        .to_owned(),
                ));
            }
            let before = listed_bytes;
            for row in page.rows {
                if let Some(Value::Scalar(Scalar::Text(key))) = row.into_iter().next() {
                    // A short key costs its `String` too.
                    listed_bytes += key.len() + std::mem::size_of::<String>();
                    keys.push(key);
                }
            }
            reserved
                .grow(listed_bytes - before)
                .map_err(Failure::Other)?;
            if listed_bytes > MAX_LISTED_BYTES {
                return Err(Failure::Other(format!(
                    "the store's keys come to more than {} MiB, more than one listing returns",
                    MAX_LISTED_BYTES >> 20
                )));
            }
            if read == 0 || !full {
                return Ok(keys);
            }
        }
    }
}

/// Per-request state: the function being run, if it is one.
pub struct KeyValueState {
    pub db: Arc<Db>,
    pub function: Option<Arc<FunctionContext>>,
    pub table: ResourceTable,
    /// Keys streamed to the guest and not read yet.
    pub unread: Unread,
}

fn failed(error: SqlError) -> Failure {
    Failure::Other(error.message)
}

impl KeyValueState {
    fn open(&mut self, label: &str) -> wasmtime::Result<Result<Resource<Store>, Failure>> {
        let Some(function) = &self.function else {
            return Ok(Err(Failure::AccessDenied));
        };
        if label != DEFAULT_STORE {
            return Ok(Err(Failure::NoSuchStore));
        }
        let store = Store {
            tenant: TenantSql::new(self.db.clone(), function.tenant.clone()),
            function_id: function.log.function_id.clone(),
        };
        // Past `caps::MAX_HANDLES` open stores (Spin answers the same).
        Ok(self.table.push(store).map_err(|_| Failure::StoreTableFull))
    }

    fn store(&self, store: &Resource<Store>) -> wasmtime::Result<Store> {
        Ok(self.table.get(store)?.clone())
    }
}

impl v2::Host for KeyValueState {}

impl v2::HostStore for KeyValueState {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<Store>, v2::Error>> {
        Ok(KeyValueState::open(self, &label)?.map_err(Into::into))
    }

    async fn get(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, v2::Error>> {
        Ok(self.store(&store)?.get(key).await.map_err(Into::into))
    }

    async fn set(
        &mut self,
        store: Resource<Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v2::Error>> {
        Ok(self
            .store(&store)?
            .set(key, value)
            .await
            .map_err(Into::into))
    }

    async fn delete(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), v2::Error>> {
        Ok(self.store(&store)?.delete(key).await.map_err(Into::into))
    }

    async fn exists(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v2::Error>> {
        Ok(self.store(&store)?.exists(key).await.map_err(Into::into))
    }

    async fn get_keys(
        &mut self,
        store: Resource<Store>,
    ) -> wasmtime::Result<Result<Vec<String>, v2::Error>> {
        // One call at a time: nothing else reads meanwhile.
        let mut reserved = Unread::default().reserve();
        Ok(self
            .store(&store)?
            .keys(&mut reserved)
            .await
            .map_err(Into::into))
    }

    async fn drop(&mut self, store: Resource<Store>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// The 3.0.0 interface is async: each call takes what it needs from the
/// store's state, then awaits the database without holding the store, so
/// the guest's other tasks run meanwhile.
type V3 = HasSelf<KeyValueState>;

/// A call's key and value counted against the store's bound while it
/// runs ([`Unread::hold`]): a WASI 0.3 guest can start any number at once,
/// each copied into host memory as it starts.
fn hold<T>(accessor: &Accessor<T, V3>, bytes: usize) -> Result<Reserved, v3::Error> {
    accessor
        .with(|mut access| access.get().unread.clone())
        .hold(bytes)
        .map_err(v3::Error::Other)
}

fn with_store<T>(accessor: &Accessor<T, V3>, store: &Resource<Store>) -> wasmtime::Result<Store> {
    accessor.with(|mut access| access.get().store(store))
}

impl v3::Host for KeyValueState {}

impl v3::HostStore for KeyValueState {
    fn drop(&mut self, store: Resource<Store>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl<T> v3::HostStoreWithStore<T> for V3 {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<Store>, v3::Error>> {
        Ok(accessor
            .with(|mut access| access.get().open(&label))?
            .map_err(Into::into))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, v3::Error>> {
        let _held = match hold(accessor, key.len()) {
            Ok(held) => held,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(with_store(accessor, &store)?
            .get(key)
            .await
            .map_err(Into::into))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let bytes = key.len() + value.len();
        let _held = match hold(accessor, bytes) {
            Ok(held) => held,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(with_store(accessor, &store)?
            .set(key, value)
            .await
            .map_err(Into::into))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let _held = match hold(accessor, key.len()) {
            Ok(held) => held,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(with_store(accessor, &store)?
            .delete(key)
            .await
            .map_err(Into::into))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v3::Error>> {
        let _held = match hold(accessor, key.len()) {
            Ok(held) => held,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(with_store(accessor, &store)?
            .exists(key)
            .await
            .map_err(Into::into))
    }

    /// The keys are read page by page, counted as unread as they come,
    /// then streamed to the guest.
    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<Store>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), v3::Error>>)> {
        let unread = accessor.with(|mut access| access.get().unread.clone());
        let mut reserved = unread.reserve();
        let listed = with_store(accessor, &store)?.keys(&mut reserved).await;
        let (keys, outcome) = match listed {
            Ok(keys) => (reserved.stream(keys), Ok(())),
            Err(failure) => (
                unread
                    .stream(Vec::new(), 0)
                    .expect("nothing is always allowed"),
                Err(v3::Error::from(failure)),
            ),
        };
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, keys)?;
            let outcome =
                FutureReader::new(&mut access, async move { wasmtime::error::Ok(outcome) })?;
            Ok((keys, outcome))
        })
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v2::add_to_linker::<HostState, HasSelf<KeyValueState>>(linker, |state| &mut state.key_value)?;
    v3::add_to_linker::<HostState, HasSelf<KeyValueState>>(linker, |state| &mut state.key_value)
}
