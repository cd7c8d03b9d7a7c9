//! `zatabase:platform/sql`: SQL in the caller's tenant.
//!
//! The statement runs on a connection logged in as the tenant's own role,
//! inside a transaction that also sets `ROLE`, `search_path` and the
//! statement timeout (see `db::exec`), so Postgres enforces the tenant's
//! boundaries whatever SQL the guest sends. The caller's permissions on
//! `Tables` decide the rest, here and not only in the guest: none, no SQL;
//! Read without Write, a read-only transaction.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::types::{ErrorKind, JsonResult, QueryResult, SqlError, Value};
use super::zatabase::platform::session::{Action, Resource};
use super::zatabase::platform::sql::{self, Host};
use crate::auth::Access;
use crate::auth::access::denial;
use crate::db::exec::error;
use crate::db::{Fetched, TenantSql};
use crate::dispatch::HostState;

/// Per-request state of the capability: the tenant the request acts in, if
/// it acts in one, and what the caller may do there.
pub struct SqlState {
    pub tenant: Option<TenantSql>,
    pub access: Arc<Access>,
}

impl SqlState {
    /// Runs the caller's SQL if its grants on Tables allow: none, no SQL;
    /// Read without Write, a read-only transaction.
    async fn run(&self, statement: &str, params: &[Value]) -> Result<Fetched, SqlError> {
        let Some(tenant) = &self.tenant else {
            return Err(error(
                ErrorKind::PermissionDenied,
                "this request acts in no tenant",
            ));
        };
        if !self.access.allows(Resource::Tables, None, Action::Read) {
            return Err(error(
                ErrorKind::PermissionDenied,
                denial(Resource::Tables, Action::Read),
            ));
        }
        let read_only = !self.access.allows(Resource::Tables, None, Action::Write);
        match tenant.execute(statement, params, read_only).await {
            // 25006: a write in a read-only transaction; 25001: an attempt to
            // make it read-write again.
            Err(e) if read_only && matches!(e.sqlstate.as_deref(), Some("25006" | "25001")) => {
                Err(SqlError {
                    kind: ErrorKind::PermissionDenied,
                    message: denial(Resource::Tables, Action::Write),
                    detail: None,
                    hint: None,
                    position: None,
                    ..e
                })
            }
            result => result,
        }
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
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    sql::add_to_linker::<HostState, HasSelf<SqlState>>(linker, |state| &mut state.sql)
}
