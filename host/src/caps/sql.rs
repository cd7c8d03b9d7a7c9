//! `zatabase:platform/sql`: SQL in the caller's tenant.
//!
//! The statement runs on a connection logged in as the tenant's own role,
//! inside a transaction that also sets `ROLE`, `search_path` and the
//! statement timeout (see `db::exec`), so Postgres enforces the tenant's
//! boundaries whatever SQL the guest sends. The caller's permissions decide
//! the rest, here and not only in the guest, through the grants the route
//! group's manifest names (`sql_grants`: `Tables/*` for `/v1/sql`,
//! `Records/*` for ZQL, ...): Read through none of them, no SQL; Read
//! without Write, a read-only transaction. The guest narrows that to the
//! objects it touches.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};

use super::types::{ErrorKind, JsonResult, QueryResult, SqlError, Value};
use super::zatabase::platform::session::{Action, Resource};
use super::zatabase::platform::sql::{self, Host, HostTransaction};
use crate::auth::Access;
use crate::auth::access::{ReadOnly, SqlGrant, denial};
use crate::db::exec::error;
use crate::db::{Fetched, TenantSql, Tx};
use crate::dispatch::HostState;

/// The host side of a `transaction`: a connection held in the tenant.
pub struct Transaction {
    tx: Tx,
    read_only: bool,
}

/// Per-request state of the capability: the tenant the request acts in, if
/// it acts in one, what the caller may do there, the grants through which
/// the component reaches it, and its open transactions.
pub struct SqlState {
    pub tenant: Option<TenantSql>,
    pub access: Arc<Access>,
    pub grants: Arc<[SqlGrant]>,
    pub table: ResourceTable,
    /// Whether the request's body streams in as the guest reads it: then
    /// a transaction it opens may be held as long as the client takes to
    /// send, and takes one of the tenant pool's turns for that.
    pub body_streams: bool,
    /// Transactions begun and not yet dropped, at most
    /// [`MAX_OPEN_TRANSACTIONS`]: one request (a function's, whose body
    /// streams) could otherwise hold every one of its tenant's turns for
    /// transactions until its timeout.
    pub open_transactions: usize,
}

/// Transactions one instance may hold open at once.
pub const MAX_OPEN_TRANSACTIONS: usize = 2;

impl SqlState {
    /// The tenant, if the caller's grants allow any SQL, and whether only
    /// reading: none, no SQL; Read without Write, read-only.
    fn scope(&self) -> Result<(&TenantSql, bool), SqlError> {
        let Some(tenant) = &self.tenant else {
            return Err(error(
                ErrorKind::PermissionDenied,
                "this request acts in no tenant",
            ));
        };
        let ReadOnly(read_only) = self
            .access
            .sql_mode(&self.grants)
            .map_err(|denied| error(ErrorKind::PermissionDenied, denied))?;
        Ok((tenant, read_only))
    }

    fn written(&self) -> Resource {
        self.access.written(&self.grants)
    }

    /// Runs the caller's SQL in a transaction of its own.
    async fn run(&mut self, statement: &str, params: &[Value]) -> Result<Fetched, SqlError> {
        let (tenant, read_only) = self.scope()?;
        let result = tenant.execute(statement, params, read_only).await;
        denied_write(result, read_only, self.written())
    }
}

/// A write refused by a read-only transaction is the caller's missing
/// Write grant on `resource` (25006: a write in a read-only transaction;
/// 25001: an attempt to make it read-write again).
fn denied_write(
    result: Result<Fetched, SqlError>,
    read_only: bool,
    resource: Resource,
) -> Result<Fetched, SqlError> {
    match result {
        Err(e) if read_only && matches!(e.sqlstate.as_deref(), Some("25006" | "25001")) => {
            Err(SqlError {
                kind: ErrorKind::PermissionDenied,
                message: denial(resource, Action::Write),
                detail: None,
                hint: None,
                position: None,
                ..e
            })
        }
        result => result,
    }
}

impl Host for SqlState {
    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> Result<QueryResult, SqlError> {
        self.run(&statement, &params).await.and_then(Fetched::typed)
    }

    async fn execute_json(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> Result<JsonResult, SqlError> {
        self.run(&statement, &params).await.and_then(Fetched::json)
    }

    async fn begin(&mut self) -> Result<wasmtime::component::Resource<Transaction>, SqlError> {
        if self.open_transactions >= MAX_OPEN_TRANSACTIONS {
            return Err(error(
                ErrorKind::Unavailable,
                format!(
                    "an instance holds at most {MAX_OPEN_TRANSACTIONS} transactions open at once; \
                     commit or drop one first"
                ),
            ));
        }
        let (tenant, read_only) = self.scope()?;
        let tx = tenant.begin(read_only, self.body_streams).await?;
        let pushed = self
            .table
            .push(Transaction { tx, read_only })
            .map_err(|e| error(ErrorKind::Internal, e.to_string()))?;
        self.open_transactions += 1;
        Ok(pushed)
    }
}

impl HostTransaction for SqlState {
    async fn execute(
        &mut self,
        tx: wasmtime::component::Resource<Transaction>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, SqlError>> {
        let written = self.written();
        let transaction = self.table.get_mut(&tx)?;
        let result = transaction.tx.execute(&statement, &params).await;
        Ok(denied_write(result, transaction.read_only, written).and_then(Fetched::typed))
    }

    async fn execute_json(
        &mut self,
        tx: wasmtime::component::Resource<Transaction>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<JsonResult, SqlError>> {
        let written = self.written();
        let transaction = self.table.get_mut(&tx)?;
        let result = transaction.tx.execute(&statement, &params).await;
        Ok(denied_write(result, transaction.read_only, written).and_then(Fetched::json))
    }

    async fn commit(
        &mut self,
        tx: wasmtime::component::Resource<Transaction>,
    ) -> wasmtime::Result<Result<(), SqlError>> {
        Ok(self.table.get_mut(&tx)?.tx.commit().await)
    }

    async fn drop(
        &mut self,
        tx: wasmtime::component::Resource<Transaction>,
    ) -> wasmtime::Result<()> {
        let transaction = self.table.delete(tx)?;
        self.open_transactions -= 1;
        transaction.tx.finish().await;
        Ok(())
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    sql::add_to_linker::<HostState, HasSelf<SqlState>>(linker, |state| &mut state.sql)
}
