//! The cross-cutting layers: the edge every request passes (id, caller,
//! metrics, logs), the rate limit, the body limit, and panics.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tracing::Instrument;

use super::AppState;
use super::proxy::ClientAddress;
use crate::api::ApiError;
use crate::auth::AuthError;
use crate::caps::zatabase::platform::session::Principal;
use crate::metrics::{GroupSeries, Metrics};

/// The request's id: the client's `x-request-id` when it is sane, else new.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// What the request's `Authorization` header established; set by
/// [`authenticate`] on every request. Whether a route needs more is the
/// route's business (see `server::serve_component`).
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// The token verified (signature, issuer, audience, lifetime); its
    /// session is checked where a route needs the principal.
    Verified(Principal),
    Rejected(AuthError),
}

/// The client's address: the socket's peer, or the client a trusted proxy
/// names (see [`super::proxy`]).
pub fn client_address(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ClientAddress>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0)
}

/// What the `Authorization` header establishes (a verified token is not
/// yet a live session: routes that need the principal check that).
fn authenticate(state: &AppState, request: &Request) -> Caller {
    match request.headers().get(header::AUTHORIZATION) {
        None => Caller::Anonymous,
        Some(value) => match state.auth.verify_header(value.as_bytes()) {
            Ok(principal) => Caller::Verified(principal),
            Err(error) => Caller::Rejected(error),
        },
    }
}

/// Which route group answered (its request series), for metrics and logs;
/// set on responses.
#[derive(Clone)]
pub struct RouteGroup(pub Arc<GroupSeries>);

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// How the ids of cron ticks' requests begin.
pub const CRON_REQUEST_ID_PREFIX: &str = "cron-";

/// The client's `x-request-id` when it is sane, else a new one. Ids of
/// the host's own cron ticks (`cron-…`) are not a client's to choose: a
/// function's log would show a caller's lines as its schedule's.
fn request_id(request: &Request) -> Arc<str> {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && !v.starts_with(CRON_REQUEST_ID_PREFIX)
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(
            || {
                let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
                Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text))
            },
            Arc::from,
        )
}

/// Which origins may read the API's responses from a browser: every one
/// (`*`, the default) or those listed (`http.cors_allowed_origins`).
pub struct CorsPolicy {
    any: bool,
    origins: Vec<HeaderValue>,
}

/// The response headers a browser's script may read.
const EXPOSED: HeaderValue = HeaderValue::from_static(
    "x-request-id,x-ratelimit-limit,x-ratelimit-remaining,x-ratelimit-reset,retry-after",
);

impl CorsPolicy {
    pub fn new(origins: &[String]) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().filter_map(|o| o.parse().ok()).collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`, if
    /// it is allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        origin.filter(|o| self.origins.contains(o)).cloned()
    }
}

/// The outermost layer: gives every request its id and its [`Caller`],
/// answers CORS preflights, and on the way back stamps the id and the CORS
/// headers on the response, counts and times it by route group and status
/// (refusals included), and logs server errors.
///
/// Written as a service rather than with `axum::middleware::from_fn` and
/// `tower_http`'s CORS layer: `from_fn` clones and boxes everything inside
/// it on every request, and hyper clones the whole stack for every request
/// too, so each layer's state was copied several times per request.
#[derive(Clone)]
pub struct EdgeLayer(pub AppState);

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            state: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    state: AppState,
    inner: S,
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = request_id(&request);
        let headers = request.headers();
        let allow_origin = self.state.cors.allow(headers.get(header::ORIGIN));
        // A CORS preflight, as the Fetch standard defines it; any other
        // OPTIONS request is the route's. A function may answer its own
        // (see `EdgeFuture`); the platform answers the rest.
        let preflight = request.method() == http::Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let function = request.uri().path().starts_with("/fn/");
        let inner = (!preflight || function).then(|| {
            let caller = authenticate(&self.state, &request);
            request.extensions_mut().insert(RequestId(id.clone()));
            request.extensions_mut().insert(caller);
            // A span costs a few microseconds a request (its fields
            // formatted, entered and left at every poll), so only when
            // debugging; the lines that matter without it (a failed
            // component, a server error) name the id themselves.
            let span = tracing::debug_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
            self.inner.call(request).instrument(span)
        });
        EdgeFuture {
            inner,
            preflight,
            function,
            id,
            allow_origin,
            vary: !self.state.cors.any,
            started: Instant::now(),
            metrics: self.state.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Edge`]'s response: the inner one (none for a preflight the
    /// platform answers), stamped, counted and logged.
    ///
    /// A function's response that carries `Access-Control-Allow-Origin`
    /// keeps its CORS headers as the function set them: the function
    /// decides who reads it (credentials, its own exposed headers). A
    /// preflight sent to a function that does not answer it so gets the
    /// platform's answer.
    pub struct EdgeFuture<F> {
        #[pin]
        inner: Option<tracing::instrument::Instrumented<F>>,
        preflight: bool,
        // A `/fn/...` call: the function's CORS headers may stand. (Not
        // `/v1/functions/:id/invoke`, a platform route answering with a
        // function's response.)
        function: bool,
        id: Arc<str>,
        allow_origin: Option<HeaderValue>,
        vary: bool,
        started: Instant,
        metrics: Arc<Metrics>,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let preflight = *this.preflight;
        let answered = match this.inner.as_pin_mut() {
            Some(inner) => {
                let Ok(response) = std::task::ready!(inner.poll(cx));
                Some(response)
            }
            None => None,
        };
        let own_cors = *this.function
            && answered.as_ref().is_some_and(|r| {
                r.headers()
                    .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            });
        let mut response = match answered {
            Some(response) if own_cors => response,
            Some(mut response) if !preflight => {
                // The platform's policy applies: none of a function's own
                // (`Allow-Credentials` above all) stays beside it.
                let headers = response.headers_mut();
                if headers
                    .keys()
                    .any(|name| name.as_str().starts_with("access-control-"))
                {
                    for name in [
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        header::ACCESS_CONTROL_ALLOW_METHODS,
                        header::ACCESS_CONTROL_ALLOW_ORIGIN,
                        header::ACCESS_CONTROL_EXPOSE_HEADERS,
                        header::ACCESS_CONTROL_MAX_AGE,
                    ] {
                        headers.remove(name);
                    }
                }
                response
            }
            _ => {
                let mut response = StatusCode::OK.into_response();
                let headers = response.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("*"),
                );
                // `*` covers every header but `Authorization` (the Fetch
                // standard's rule), which a browser app sends to every
                // authenticated route: it is named too.
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("*, authorization"),
                );
                // Kept by browsers ten minutes (their own cap is two hours
                // at most), not five seconds, their default without it.
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                response
            }
        };
        let elapsed = this.started.elapsed();
        let status = response.status();
        let series = response
            .extensions()
            .get::<RouteGroup>()
            .map_or(this.metrics.host(), |g| &g.0);
        series.observe(status.as_u16(), elapsed);
        let group = series.name();
        if status.is_server_error() {
            tracing::warn!(
                request_id = &**this.id,
                status = status.as_u16(),
                group,
                elapsed_ms = elapsed.as_millis() as u64,
                "answered"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                group,
                elapsed_us = elapsed.as_micros() as u64,
                "answered"
            );
        }
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(this.id) {
            headers.insert(X_REQUEST_ID.clone(), value);
        }
        if own_cors {
            // The function's own policy, as it set it.
        } else if let Some(origin) = this.allow_origin.take() {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if !preflight {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
            }
        }
        if *this.vary && !own_cors {
            // The answer depends on the origin: caches must not mix them.
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        Poll::Ready(Ok(response))
    }
}

/// Health and metrics are never rate limited: probes must always get through.
fn exempt(path: &str) -> bool {
    path == "/health" || path == "/healthz" || path == "/health/ready" || path == "/metrics"
}

/// The accounts route group's paths, among them those that answer
/// credentials (an email and password, a refresh token) rather than a
/// bearer token. All of the group's, not those spelled exactly: its router
/// reads `/v1/auth//login` as a login too, and whatever reaches the group
/// begins with these bytes (the host's route matches the path as sent).
fn takes_credentials(path: &str) -> bool {
    path.starts_with("/v1/auth/")
}

pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = &state.rate_limiter else {
        return next.run(request).await;
    };
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    // Per organization for authenticated callers, per address otherwise.
    // The accounts routes (some take credentials instead of a token) are
    // always per address: a token they ignore (any old one of any
    // organization) must not move a client's signups and logins off its
    // address's count.
    let key = match request.extensions().get::<Caller>() {
        Some(Caller::Verified(principal)) if !takes_credentials(request.uri().path()) => {
            format!("org:{}", principal.organization_id)
        }
        _ => super::ratelimit::address_key(client_address(&request)),
    };
    let quota = limiter.check(key);
    let mut response = if quota.allowed {
        next.run(request).await
    } else {
        let wait = quota.reset.saturating_sub(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit of {} requests exceeded; retry in {wait} s",
                quota.limit
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(wait))
        .into_response()
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(quota.reset));
    response
}

/// Runs `handler` on `request` with its body cut at `limit` bytes. Bodies
/// above the limit answer 413: without the handler when `Content-Length`
/// says so (a small body read and dropped first: [`discard_small_body`]),
/// or as soon as a streamed body crosses it (whatever the handler made of the
/// cut-off body is replaced). A handler that answered before the body
/// crossed it (a function streaming its answer as it reads) has its answer
/// cut instead ([`CutIfCrossed`]): its head is gone, and an answer that
/// ended cleanly would pass for one made of the whole body.
///
/// The limit is the host's (`http.body_limit_bytes`) or, on a route group's
/// routes, the route group's own (`body_limit_mb` in spin.toml). It is a
/// call in the handlers that read bodies rather than a layer on every
/// route: a layer costs a boxed service and future per request.
pub async fn body_limit<F: Future<Output = Response>>(
    limit: usize,
    request: Request,
    handler: impl FnOnce(Request) -> F,
) -> Response {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body exceeds the limit of {limit} bytes"),
        )
        .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        discard_small_body(declared, request).await;
        return too_large();
    }
    if http_body::Body::is_end_stream(request.body()) {
        // No body (a GET, or a declared length of 0): nothing to count.
        return handler(request).await;
    }
    let state = Arc::new(AtomicU8::new(READING));
    let request = request.map(|body| {
        Body::new(Watched {
            inner: http_body_util::Limited::new(body, limit),
            state: state.clone(),
        })
    });
    let response = handler(request).await;
    match state.load(Ordering::Relaxed) {
        CROSSED => too_large(),
        // Read to its end (a route group's buffered body): nothing left
        // to cross.
        ENDED => response,
        _ => response.map(|inner| Body::new(CutIfCrossed { inner, state })),
    }
}

/// The largest declared body read and dropped before its 413 is sent, and
/// how long that may take.
const DISCARD_UP_TO: u64 = 1 << 20;
const DISCARD_WITHIN: Duration = Duration::from_secs(2);

/// Reads and drops a refused body the client declared small enough to be
/// cheap, unless the client waits for `100 Continue` before sending it.
/// Otherwise hyper, finding part of the body unread after the 413, closes
/// the connection with bytes still in flight: the kernel answers them with
/// a reset, and a client still writing may see that reset before the 413.
async fn discard_small_body(declared: u64, request: Request) {
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared > DISCARD_UP_TO || expects_continue {
        return;
    }
    let mut body = request.into_body();
    let drained =
        async { while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {} };
    let _ = tokio::time::timeout(DISCARD_WITHIN, drained).await;
}

/// How far a limited request body has been read.
const READING: u8 = 0;
const ENDED: u8 = 1;
const CROSSED: u8 = 2;

pin_project_lite::pin_project! {
    /// A request body cut at the limit, which says when it ends or
    /// crosses it.
    struct Watched {
        #[pin]
        inner: http_body_util::Limited<Body>,
        state: Arc<AtomicU8>,
    }
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                this.state.store(CROSSED, Ordering::Relaxed);
            }
            None => this.state.store(ENDED, Ordering::Relaxed),
            Some(Ok(_)) if this.inner.is_end_stream() => {
                this.state.store(ENDED, Ordering::Relaxed);
            }
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// An answer sent while its request's body may still be read: it ends
    /// in an error if that body crosses the limit, so hyper closes the
    /// connection before the answer's end (no last chunk; fewer bytes than
    /// its `Content-Length`) and the client sees it cut.
    struct CutIfCrossed {
        #[pin]
        inner: Body,
        state: Arc<AtomicU8>,
    }
}

impl http_body::Body for CutIfCrossed {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let crossed = || {
            Poll::Ready(Some(Err(axum::Error::new(
                "the request body crossed the limit after the answer began",
            ))))
        };
        if this.state.load(Ordering::Relaxed) == CROSSED {
            return crossed();
        }
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() && this.state.load(Ordering::Relaxed) == CROSSED {
            return crossed();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A panic in a handler answers 500 in the error shape.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}
