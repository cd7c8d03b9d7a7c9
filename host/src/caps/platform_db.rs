//! `zatabase:platform/platform-db`: the platform's own schema, for the
//! built-in route groups only (spin.toml grants it; user functions never get
//! it).
//!
//! A transaction is a host resource: the guest holds a handle, the host holds
//! the connection. Dropping the handle without `commit` rolls back.

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};

use super::types::{JsonResult, QueryResult, SqlError, Value};
use super::zatabase::platform::platform_db::{self, Host, HostTransaction};
use crate::db::{Fetched, PlatformSql, Tx};
use crate::dispatch::HostState;

/// The host side of a `transaction` resource.
pub type Transaction = Tx;

/// Per-request state of the capability.
pub struct PlatformDbState {
    pub db: PlatformSql,
    pub table: ResourceTable,
}

impl Host for PlatformDbState {
    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, SqlError>> {
        Ok(self
            .db
            .execute(&statement, &params)
            .await
            .and_then(Fetched::typed))
    }

    async fn execute_json(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<JsonResult, SqlError>> {
        Ok(self
            .db
            .execute(&statement, &params)
            .await
            .and_then(Fetched::json))
    }

    async fn begin(&mut self) -> wasmtime::Result<Result<Resource<Transaction>, SqlError>> {
        match self.db.begin().await {
            Ok(tx) => Ok(Ok(self.table.push(tx)?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

impl HostTransaction for PlatformDbState {
    async fn execute(
        &mut self,
        tx: Resource<Transaction>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, SqlError>> {
        let tx = self.table.get_mut(&tx)?;
        Ok(tx
            .execute(&statement, &params)
            .await
            .and_then(Fetched::typed))
    }

    async fn commit(
        &mut self,
        tx: Resource<Transaction>,
    ) -> wasmtime::Result<Result<(), SqlError>> {
        let tx = self.table.get_mut(&tx)?;
        Ok(tx.commit().await)
    }

    async fn drop(&mut self, tx: Resource<Transaction>) -> wasmtime::Result<()> {
        let tx = self.table.delete(tx)?;
        tx.finish().await;
        Ok(())
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    platform_db::add_to_linker::<HostState, HasSelf<PlatformDbState>>(linker, |state| {
        &mut state.platform_db
    })
}
