//! `zatabase:platform/log`: a guest's log lines in the host's log, tagged
//! with the component and the request id.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::zatabase::platform::log::{self, Host, Level};
use crate::dispatch::HostState;
use crate::functions::telemetry::Telemetry;

/// The longest message kept; longer ones are cut, so a guest cannot flood
/// the log with one call.
const MAX_MESSAGE: usize = 16 * 1024;

/// Per-request state of the capability.
pub struct LogState {
    pub component: Arc<str>,
    pub request_id: Arc<str>,
    /// Set for a user's function: its lines are also its own logs.
    pub function: Option<FunctionLog>,
}

/// Where a function's lines go besides the host's log: its
/// `/v1/functions/:id/logs`.
#[derive(Clone)]
pub struct FunctionLog {
    pub function_id: Arc<str>,
    pub telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for FunctionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionLog")
            .field("function_id", &self.function_id)
            .finish_non_exhaustive()
    }
}

impl Host for LogState {
    fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        emit(
            level,
            &self.component,
            &self.request_id,
            &message,
            self.function.as_ref(),
        );
    }
}

/// Writes one guest log line into the host's tracing output (and a
/// function's own logs).
pub fn emit(
    level: Level,
    component: &str,
    request_id: &str,
    message: &str,
    function: Option<&FunctionLog>,
) {
    if let Some(function) = function {
        function
            .telemetry
            .log(&function.function_id, request_id, level, message);
    }
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(target: "zatabase::guest", $level, component, request_id, "{message}")
        };
    }
    match level {
        Level::Trace => event!(tracing::Level::TRACE),
        Level::Debug => event!(tracing::Level::DEBUG),
        Level::Info => event!(tracing::Level::INFO),
        Level::Warn => event!(tracing::Level::WARN),
        Level::Error => event!(tracing::Level::ERROR),
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, HasSelf<LogState>>(linker, |state| &mut state.log)
}
