//! Host capabilities: one module per `zatabase:platform` WIT interface.
//!
//! Each module has the same shape: the state a store carries for it, the
//! `Host` impl the guest calls, and `add_to_linker`. A component is linked
//! only against the capabilities its `spin.toml` entry grants; [`check_imports`]
//! refuses, at load time, a component that imports any other.

/// The most handles (open key-value stores, database connections) one
/// request may hold at once, as in Spin: each is host memory the guest's
/// own memory cap does not count.
pub const MAX_HANDLES: usize = 256;

/// A table for a request's handles of one capability, at most
/// [`MAX_HANDLES`] of them.
pub fn handle_table() -> wasmtime::component::ResourceTable {
    let mut table = wasmtime::component::ResourceTable::new();
    table.set_max_capacity(MAX_HANDLES);
    table
}

pub mod auth;
pub mod functions;
pub mod indexes;
pub mod key_value;
pub mod log;
pub mod outbound;
pub mod platform_db;
pub mod postgres;
pub mod session;
pub mod sql;
pub mod unread;
pub mod variables;

use std::collections::BTreeSet;
use std::str::FromStr;

use anyhow::bail;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::dispatch::HostState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "zatabase:platform/host",
    imports: {
        "zatabase:platform/functions.prepare": async | trappable,
        "spin:postgres/postgres@3.0.0": async | trappable,
        "spin:postgres/postgres@4.2.0": async | trappable,
        "fermyon:spin/key-value": async | trappable,
        "spin:key-value/key-value@3.0.0": trappable,
        "zatabase:platform/sql.[method]transaction.execute": async | trappable,
        "zatabase:platform/sql.[method]transaction.execute-json": async | trappable,
        "zatabase:platform/sql.[method]transaction.commit": async | trappable,
        "zatabase:platform/sql.[drop]transaction": async | trappable,
        "zatabase:platform/sql": async,
        "zatabase:platform/platform-db": async | trappable,
        "zatabase:platform/auth.hash-password": async | trappable,
        "zatabase:platform/auth": async,
        "zatabase:platform/indexes": async,
    },
    with: {
        "zatabase:platform/platform-db.transaction": platform_db::Transaction,
        "zatabase:platform/sql.transaction": sql::Transaction,
        "spin:postgres/postgres@3.0.0.connection": postgres::Connection,
        "fermyon:spin/key-value.store": key_value::Store,
        "spin:key-value/key-value@3.0.0.store": key_value::Store,
        "spin:postgres/postgres@4.2.0.connection": postgres::Connection,
        "spin:postgres/postgres@4.2.0.connection-builder": postgres::Builder,
    },
});

pub use self::zatabase::platform::types;

/// A capability a component can be granted, by its `spin.toml` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Session,
    Sql,
    PlatformDb,
    Auth,
    Functions,
    Log,
    Indexes,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Self::Session,
        Self::Sql,
        Self::PlatformDb,
        Self::Auth,
        Self::Functions,
        Self::Log,
        Self::Indexes,
    ];

    /// The name used in `spin.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Sql => "sql",
            Self::PlatformDb => "platform-db",
            Self::Auth => "auth",
            Self::Functions => "functions",
            Self::Log => "log",
            Self::Indexes => "indexes",
        }
    }

    /// The WIT interface, without version.
    pub fn interface(self) -> &'static str {
        match self {
            Self::Session => "zatabase:platform/session",
            Self::Sql => "zatabase:platform/sql",
            Self::PlatformDb => "zatabase:platform/platform-db",
            Self::Auth => "zatabase:platform/auth",
            Self::Functions => "zatabase:platform/functions",
            Self::Log => "zatabase:platform/log",
            Self::Indexes => "zatabase:platform/indexes",
        }
    }

    fn add_to_linker(self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        match self {
            Self::Session => session::add_to_linker(linker),
            Self::Sql => sql::add_to_linker(linker),
            Self::PlatformDb => platform_db::add_to_linker(linker),
            Self::Auth => auth::add_to_linker(linker),
            Self::Functions => functions::add_to_linker(linker),
            Self::Log => log::add_to_linker(linker),
            Self::Indexes => indexes::add_to_linker(linker),
        }
    }
}

impl FromStr for Capability {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match Self::ALL.into_iter().find(|c| c.name() == s) {
            Some(c) => Ok(c),
            None => bail!(
                "expected one of: {}",
                Self::ALL.map(Capability::name).join(", ")
            ),
        }
    }
}

/// Links the granted capabilities (and the shared `types` interface).
pub fn add_to_linker(
    linker: &mut Linker<HostState>,
    grants: &BTreeSet<Capability>,
) -> wasmtime::Result<()> {
    zatabase::platform::types::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |state| state,
    )?;
    for grant in grants {
        grant.add_to_linker(linker)?;
    }
    Ok(())
}

impl zatabase::platform::types::Host for HostState {}

/// Refuses a component that imports a `zatabase:platform` interface it was
/// not granted, naming the interface and where to grant it.
pub fn check_imports(
    engine: &Engine,
    component: &Component,
    id: &str,
    grants: &BTreeSet<Capability>,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        let Some(interface) = name.strip_prefix("zatabase:platform/") else {
            continue;
        };
        let interface = interface.split('@').next().unwrap_or(interface);
        if interface == "types" {
            continue;
        }
        match Capability::ALL.into_iter().find(|c| c.name() == interface) {
            Some(capability) if grants.contains(&capability) => {}
            Some(capability) => missing.push(capability.name()),
            None => bail!("component `{id}` imports `{name}`, which this host does not provide"),
        }
    }
    if !missing.is_empty() {
        missing.sort_unstable();
        bail!(
            "component `{id}` imports capabilities it is not granted: {}; grant them in \
             spin.toml under [component.{id}.tool.zatabase] capabilities",
            missing.join(", ")
        );
    }
    Ok(())
}
