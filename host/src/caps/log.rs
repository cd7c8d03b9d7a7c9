//! `zatabase:platform/log`: a guest's log lines in the host's log, tagged
//! with the component and the request id.
//!
//! A request writes at most [`REQUEST_LOG_BYTES`] of lines (its `log`
//! calls, stdout and stderr together); past that one line says so and the
//! rest are dropped, so one function looping over `println!` fills neither
//! the operator's log nor the telemetry every function shares. In the
//! host's log a line break in a message is written `\n`, so a guest cannot
//! forge lines there.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::{HasSelf, Linker};

use super::zatabase::platform::log::{self, Host, Level};
use crate::dispatch::HostState;
use crate::functions::telemetry::Telemetry;

/// The longest message kept; longer ones are cut, so a guest cannot flood
/// the log with one call.
const MAX_MESSAGE: usize = 16 * 1024;

/// Bytes of log lines one request may write.
pub const REQUEST_LOG_BYTES: usize = 1 << 20;

/// What a line costs beside its text (its record in the host's log and in
/// the telemetry): an empty line is not free.
const LINE_OVERHEAD: usize = 64;

/// What a request has left of its [`REQUEST_LOG_BYTES`]: shared by its
/// `log` capability and its output streams, filled again for each request
/// a kept instance serves.
#[derive(Debug, Clone)]
pub struct LogBudget(Arc<AtomicUsize>);

/// Whether a line may be written.
#[derive(Debug, PartialEq, Eq)]
enum Spent {
    Written,
    /// This line ran the budget out: a notice goes instead.
    RanOut,
    Dropped,
}

impl LogBudget {
    pub fn new() -> Self {
        Self(Arc::new(AtomicUsize::new(REQUEST_LOG_BYTES)))
    }

    pub fn refill(&self) {
        self.0.store(REQUEST_LOG_BYTES, Ordering::Relaxed);
    }

    fn spend(&self, bytes: usize) -> Spent {
        match self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left.saturating_sub(bytes))
            }) {
            Ok(left) if left > bytes => Spent::Written,
            Ok(_) => Spent::RanOut,
            Err(_) => Spent::Dropped,
        }
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-request state of the capability.
pub struct LogState {
    pub component: Arc<str>,
    pub request_id: Arc<str>,
    pub budget: LogBudget,
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
            &self.budget,
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
    budget: &LogBudget,
) {
    let (level, message) = match budget.spend(message.len() + LINE_OVERHEAD) {
        Spent::Written => (level, message),
        Spent::RanOut => (
            Level::Warn,
            "this request wrote more than 1 MiB of log lines; the rest are dropped",
        ),
        Spent::Dropped => return,
    };
    if let Some(function) = function {
        function
            .telemetry
            .log(&function.function_id, request_id, level, message);
    }
    let message: Cow<'_, str> = if message.contains(['\n', '\r']) {
        Cow::Owned(message.replace('\n', "\\n").replace('\r', "\\r"))
    } else {
        Cow::Borrowed(message)
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_writes_its_budget_then_one_notice() {
        let budget = LogBudget::new();
        assert_eq!(budget.spend(REQUEST_LOG_BYTES - 10), Spent::Written);
        assert_eq!(budget.spend(9), Spent::Written);
        // The line that takes what is left says so instead.
        assert_eq!(budget.spend(1), Spent::RanOut);
        assert_eq!(budget.spend(1), Spent::Dropped);
        budget.refill();
        assert_eq!(budget.spend(REQUEST_LOG_BYTES - 10), Spent::Written);
        assert_eq!(budget.spend(11), Spent::RanOut);
        assert_eq!(budget.spend(0), Spent::Dropped);
    }
}
