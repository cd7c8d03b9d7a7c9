//! A guest's stdout and stderr, line by line into the host's log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::caps::log::{FunctionLog, LogBudget, emit};
use crate::caps::zatabase::platform::log::Level;

/// Longest line kept; longer output is split.
const MAX_LINE: usize = 16 * 1024;

/// The request a store is serving, as its output is tagged: set again
/// each time a kept instance serves another request.
#[derive(Clone)]
pub struct RequestTag(Arc<std::sync::RwLock<Arc<str>>>);

impl RequestTag {
    pub fn new(request_id: Arc<str>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(request_id)))
    }

    pub fn set(&self, request_id: Arc<str>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = request_id;
    }

    fn get(&self) -> Arc<str> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One of a guest's output streams.
#[derive(Clone)]
pub struct GuestOutput {
    component: Arc<str>,
    request_id: RequestTag,
    level: Level,
    function: Option<FunctionLog>,
    budget: LogBudget,
}

impl GuestOutput {
    pub fn stdout(
        component: Arc<str>,
        request_id: RequestTag,
        function: Option<FunctionLog>,
        budget: LogBudget,
    ) -> Self {
        Self {
            component,
            request_id,
            level: Level::Info,
            function,
            budget,
        }
    }

    pub fn stderr(
        component: Arc<str>,
        request_id: RequestTag,
        function: Option<FunctionLog>,
        budget: LogBudget,
    ) -> Self {
        Self {
            component,
            request_id,
            level: Level::Warn,
            function,
            budget,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.clone(),
            line: Vec::new(),
            request_id: None,
        })
    }
}

struct LineWriter {
    output: GuestOutput,
    line: Vec<u8>,
    /// The request the line being gathered began in: a kept instance's
    /// line finished in a later request is the earlier one's.
    request_id: Option<Arc<str>>,
}

impl LineWriter {
    fn emit(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            let request_id = self
                .request_id
                .take()
                .unwrap_or_else(|| self.output.request_id.get());
            emit(
                self.output.level,
                &self.output.component,
                &request_id,
                text.trim_end(),
                self.output.function.as_ref(),
                &self.output.budget,
            );
            self.line.clear();
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &byte in buf {
            // A long line is cut before a character's first byte, so no
            // character is split between its two parts.
            let starts_a_character = byte & 0xC0 != 0x80;
            if byte == b'\n'
                || (self.line.len() >= MAX_LINE && starts_a_character)
                || self.line.len() >= MAX_LINE + 3
            {
                self.emit();
                if byte == b'\n' {
                    continue;
                }
            }
            if self.line.is_empty() {
                self.request_id = Some(self.output.request_id.get());
            }
            self.line.push(byte);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::functions::telemetry::Telemetry;

    #[tokio::test]
    async fn a_line_is_the_request_s_it_began_in() {
        let telemetry = Arc::new(Telemetry::default());
        let tag = RequestTag::new(Arc::from("first"));
        let function = FunctionLog {
            function_id: Arc::from("f"),
            telemetry: telemetry.clone(),
        };
        let output = GuestOutput::stdout(
            Arc::from("c"),
            tag.clone(),
            Some(function),
            LogBudget::new(),
        );
        let mut stream = std::pin::Pin::from(output.async_stream());
        stream
            .write_all(b"whole\nbegun in the first ")
            .await
            .unwrap();
        // A kept instance serves the next request, and ends the line there.
        tag.set(Arc::from("second"));
        stream.write_all(b"request\nthe second's\n").await.unwrap();
        let lines = telemetry.pending_lines();
        let owned = |id: &str, message: &str| (id.to_owned(), message.to_owned());
        assert_eq!(
            lines,
            [
                owned("first", "whole"),
                owned("first", "begun in the first request"),
                owned("second", "the second's"),
            ]
        );
    }

    #[tokio::test]
    async fn a_long_line_is_cut_between_characters() {
        let telemetry = Arc::new(Telemetry::default());
        let function = FunctionLog {
            function_id: Arc::from("f"),
            telemetry: telemetry.clone(),
        };
        let output = GuestOutput::stdout(
            Arc::from("c"),
            RequestTag::new(Arc::from("r")),
            Some(function),
            LogBudget::new(),
        );
        let mut stream = std::pin::Pin::from(output.async_stream());
        // `é` is two bytes, its first the line's last before the cut.
        let long = format!("{}é", "a".repeat(MAX_LINE - 1));
        stream
            .write_all(format!("{long}x\n").as_bytes())
            .await
            .unwrap();
        let lines: Vec<String> = telemetry
            .pending_lines()
            .into_iter()
            .map(|(_, message)| message)
            .collect();
        assert_eq!(lines, [long, "x".to_owned()]);
    }
}
