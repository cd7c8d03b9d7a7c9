//! One write for a small response whose body the guest has already
//! written.
//!
//! A guest hands over its response before its body is complete (the body
//! is a stream it goes on writing), so hyper sends the head at once and the
//! body in later writes: two or three writes, and as many wake-ups of the
//! client, for a response of a few bytes. Before the response leaves, the
//! guest is driven a few more turns on the same task while its body is
//! read; a body that ends within [`MAX_BYTES`] goes out whole with its
//! length, in the head's write. A body still being written after those
//! turns (the guest waits on something) goes out as it comes, what was
//! read first.

use std::pin::Pin;
use std::task::Poll;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;

/// The most of a body gathered before the head goes out.
const MAX_BYTES: usize = 64 * 1024;
/// Turns of the guest (each a poll of its run, then a yield) to wait for
/// its body.
const TURNS: usize = 4;

/// `response` with as much of its body as the guest writes within a few
/// turns of `run` already in hand; `run` back unless it finished.
pub async fn written_body<F>(
    response: http::Response<Body>,
    mut run: Pin<Box<F>>,
) -> (http::Response<Body>, Option<Pin<Box<F>>>)
where
    F: Future + ?Sized,
{
    if http_body::Body::is_end_stream(response.body()) {
        return (response, Some(run));
    }
    let (parts, mut body) = response.into_parts();
    let mut gathered = BytesMut::new();
    let mut running = true;
    let mut ended = false;
    'turns: for turn in 0..TURNS {
        if running && poll_once(run.as_mut()).await.is_some() {
            running = false;
        }
        loop {
            match poll_once(body.frame()).await {
                None => break,
                Some(None) => {
                    ended = true;
                    break 'turns;
                }
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        gathered.extend_from_slice(&data);
                        if gathered.len() > MAX_BYTES {
                            break 'turns;
                        }
                    }
                    // Trailers: the rest goes as it is.
                    Err(frame) => {
                        let rest = Prefixed {
                            first: Some(Frame::data(gathered.freeze())),
                            then: Some(frame),
                            rest: body,
                        };
                        return (
                            http::Response::from_parts(parts, Body::new(rest)),
                            running.then_some(run),
                        );
                    }
                },
                Some(Some(Err(error))) => {
                    // The client gets what was written, then the error.
                    let rest = Prefixed {
                        first: Some(Frame::data(gathered.freeze())),
                        then: None,
                        rest: Body::new(Failed(Some(error))),
                    };
                    return (
                        http::Response::from_parts(parts, Body::new(rest)),
                        running.then_some(run),
                    );
                }
            }
        }
        if turn + 1 < TURNS {
            tokio::task::yield_now().await;
        }
    }
    let body = if ended {
        // The guest's body is all in hand: letting go of it tells the guest
        // its response was read, and a guest with nothing left to do
        // returns within a turn or two. Waiting for that here, before the
        // response leaves, puts a kept instance back in its pool before the
        // client can send its next request (which would otherwise, on
        // another worker, find the pool empty and start a new instance).
        drop(body);
        for _ in 0..TURNS {
            if !running {
                break;
            }
            if poll_once(run.as_mut()).await.is_some() {
                running = false;
            } else {
                tokio::task::yield_now().await;
            }
        }
        Body::from(gathered.freeze())
    } else {
        Body::new(Prefixed {
            first: Some(Frame::data(gathered.freeze())),
            then: None,
            rest: body,
        })
    };
    (
        http::Response::from_parts(parts, body),
        running.then_some(run),
    )
}

/// Polls `future` once: its output if it is ready now.
async fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// What was gathered, then the rest of the body.
struct Prefixed {
    first: Option<Frame<Bytes>>,
    then: Option<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        loop {
            if let Some(frame) = self.first.take() {
                if frame.data_ref().is_some_and(Bytes::is_empty) {
                    continue;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            if let Some(frame) = self.then.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            return Pin::new(&mut self.rest).poll_frame(cx);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.then.is_none() && self.rest.is_end_stream()
    }
}

/// A body that fails once with the error it was given.
struct Failed(Option<axum::Error>);

impl http_body::Body for Failed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Poll::Ready(self.0.take().map(Err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(chunks: Vec<&'static str>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn a_written_body_goes_with_its_length() {
        let response = http::Response::new(streamed(vec!["hello, ", "world"]));
        let (response, run) = written_body(response, Box::pin(std::future::pending::<()>())).await;
        assert!(run.is_some(), "the run goes on");
        assert_eq!(
            http_body::Body::size_hint(response.body()).exact(),
            Some(12)
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "hello, world");
    }

    #[tokio::test]
    async fn a_body_still_being_written_streams_after_what_was_read() {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        sender
            .send(Ok(Bytes::from_static(b"first ")))
            .await
            .unwrap();
        let body = Body::from_stream(tokio_stream_from(receiver));
        let (response, run) = written_body(http::Response::new(body), Box::pin(async {})).await;
        assert!(run.is_none(), "a finished run is not handed back");
        assert_eq!(http_body::Body::size_hint(response.body()).exact(), None);
        sender
            .send(Ok(Bytes::from_static(b"then more")))
            .await
            .unwrap();
        drop(sender);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "first then more");
    }

    fn tokio_stream_from<T>(
        mut receiver: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures::Stream<Item = T> {
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }
}
