//! A connection whose client stops reading is closed.
//!
//! hyper bounds how long a client takes to send a request's head, and
//! nothing else: a client that sends requests and never reads the answers
//! (their bytes fill its receive window, then the host's send buffer) held
//! its connection, its permit among `http.max_connections` and the whole
//! answer for good. Here a write that makes no progress for
//! `http.send_timeout_ms` fails, and hyper closes the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pin_project_lite::pin_project! {
    pub struct SendDeadline<S> {
        #[pin]
        inner: S,
        limit: Duration,
        // Armed when a write first waits, disarmed by any progress: a
        // connection whose writes go straight through never makes one.
        stalled: Option<Pin<Box<Sleep>>>,
    }
}

impl<S> SendDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }
}

/// `poll` as is, unless it waits and has been waiting for `limit`.
fn bounded<T>(
    stalled: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
    poll: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if poll.is_ready() {
        *stalled = None;
        return poll;
    }
    let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    ready!(timer.as_mut().poll(cx));
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "the client read nothing of its answer in time",
    )))
}

impl<S: AsyncWrite> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write(cx, buf);
        bounded(this.stalled, *this.limit, cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write_vectored(cx, bufs);
        bounded(this.stalled, *this.limit, cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.inner.poll_flush(cx);
        bounded(this.stalled, *this.limit, cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.inner.poll_shutdown(cx);
        bounded(this.stalled, *this.limit, cx, poll)
    }
}

impl<S: AsyncRead> AsyncRead for SendDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}
