//! `zatabase:platform/sql`: SQL in the caller's tenant.
//!
//! The statement runs on a connection logged in as the tenant's own role,
//! inside a transaction that also sets `ROLE`, `search_path` and the
//! statement timeout (see `db::exec`), so Postgres enforces the tenant's
//! boundaries whatever SQL the guest sends.

use wasmtime::component::{HasSelf, Linker};

use super::types::{ErrorKind, QueryResult, SqlError, Value};
use super::zatabase::platform::sql::{self, Host};
use crate::db::TenantSql;
use crate::dispatch::HostState;

/// Per-request state of the capability: the tenant the request acts in, if
/// it acts in one.
pub struct SqlState {
    pub tenant: Option<TenantSql>,
}

impl Host for SqlState {
    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> Result<QueryResult, SqlError> {
        let Some(tenant) = &self.tenant else {
            return Err(SqlError {
                kind: ErrorKind::PermissionDenied,
                sqlstate: None,
                message: "this request acts in no tenant".to_owned(),
                detail: None,
                hint: None,
                position: None,
            });
        };
        tenant.execute(&statement, &params).await
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    sql::add_to_linker::<HostState, HasSelf<SqlState>>(linker, |state| &mut state.sql)
}
