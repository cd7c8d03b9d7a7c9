//! `zatabase:platform/functions`: checking and compiling users' components,
//! for the functions route group (spin.toml grants it; functions never get it).
//!
//! The route group stores deployments in the platform tables itself; what it
//! cannot do without the host's engine is decide whether a component can run
//! here and compile it, and tell this host a function changed.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::zatabase::platform::functions::{self, Bounds as Limits, ComponentInfo, Host, Template};
use crate::dispatch::HostState;
use crate::functions::Functions;

/// Per-request state of the capability.
pub struct FunctionsState {
    pub functions: Arc<Functions>,
}

impl Host for FunctionsState {
    fn limits(&mut self) -> Limits {
        self.functions.limits()
    }

    async fn prepare(&mut self, wasm: Vec<u8>) -> wasmtime::Result<Result<ComponentInfo, String>> {
        // The host's own failure traps the request (a 500), logged.
        self.functions.prepare(wasm).await.map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "an upload could not be checked");
            wasmtime::Error::msg(format!("{e:#}"))
        })
    }

    fn templates(&mut self) -> Vec<Template> {
        self.functions.templates()
    }

    fn template_component(&mut self, name: String) -> Option<Vec<u8>> {
        self.functions.template_component(&name).map(<[u8]>::to_vec)
    }

    fn next_run(&mut self, schedule: String, after: i64) -> Result<i64, String> {
        let schedule: crate::functions::cron::Schedule = schedule.parse()?;
        schedule
            .next_after(after)
            .ok_or_else(|| "the schedule never fires".to_owned())
    }

    fn forget(&mut self, function_id: String) {
        self.functions.forget(&function_id);
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    functions::add_to_linker::<HostState, HasSelf<FunctionsState>>(linker, |state| {
        &mut state.functions
    })
}
