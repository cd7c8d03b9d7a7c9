//! The HTTP server: application state, the router, the layer stack, and
//! serving with a graceful drain.

mod connections;
mod middleware;
pub mod proxy;
pub mod ratelimit;
mod stall;

use std::collections::HashMap;
use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::Service;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::{self, ApiError};
use crate::auth::{Access, Auth, AuthError};
use crate::caps::zatabase::platform::session::Principal;
use crate::config::Config;
use crate::db::Db;
use crate::dispatch::{Dispatcher, LoadedComponent, RequestContext, Services};
use crate::functions::{Functions, sealing};
use crate::manifest::App;
use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::tasks::Tasks;
pub use middleware::{CRON_REQUEST_ID_PREFIX, Caller, RequestId, RouteGroup, client_address};
use ratelimit::RateLimiter;

/// What handlers share.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub app: Arc<App>,
    pub db: Arc<Db>,
    pub metrics: Arc<Metrics>,
    pub dispatcher: Dispatcher,
    pub functions: Arc<Functions>,
    pub components: HashMap<String, Arc<LoadedComponent>>,
    pub openapi: Arc<serde_json::Value>,
    pub rate_limiter: Option<RateLimiter>,
    pub cors: middleware::CorsPolicy,
    pub readiness: api::health::Probe,
    pub tasks: Tasks,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(platform: &Platform) -> Self {
        let services = Services {
            db: platform.db.clone(),
            auth: platform.auth.clone(),
            functions: platform.functions.clone(),
            tasks: platform.tasks.clone(),
        };
        let config = platform.config.clone();
        Self(Arc::new(Shared {
            rate_limiter: config.rate_limit.enabled.then(|| {
                RateLimiter::new(config.rate_limit.requests, config.rate_limit.window_secs)
            }),
            cors: middleware::CorsPolicy::new(&config.http.cors_allowed_origins),
            readiness: api::health::Probe::default(),
            openapi: Arc::new(api::openapi::assemble(&platform.app)),
            app: Arc::new(App {
                name: platform.app.name.clone(),
                components: platform.app.components.clone(),
                routes: platform.app.routes.clone(),
                features: platform.app.features.clone(),
            }),
            db: platform.db.clone(),
            auth: platform.auth.clone(),
            metrics: platform.metrics.clone(),
            dispatcher: Dispatcher::new(platform.engine.clone(), services),
            functions: platform.functions.clone(),
            components: platform.components.clone(),
            tasks: platform.tasks.clone(),
            config,
        }))
    }
}

/// The whole HTTP application: the routes behind the layers every request
/// passes, outermost first: the edge (request id, the caller from a bearer
/// token if there is one, CORS preflights; on the way back CORS headers, so
/// a browser can read even a 429, and metrics and logs, which see
/// everything, refusals included) → rate limit (when enabled; per
/// organization for a verified caller) → panic catcher → [`front`] (body
/// limits are per route).
///
/// The layers wrap the router once rather than each of its routes
/// (`Router::layer`), so a request pays for each layer once, not for a boxed
/// copy of it per route it could have matched (measured: 49 → 40 µs of host
/// CPU per `/fn` request without three per-route layers).
pub fn app(
    state: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    app_with(state, Router::new())
}

/// [`app`] with `extra` routes mounted beside the host's own, under the
/// same layers (used by the benchmarks to compare a native handler with a
/// component on equal terms).
pub fn app_with(
    state: AppState,
    extra: Router<AppState>,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let rate_limit = state
        .rate_limiter
        .is_some()
        .then(|| axum::middleware::from_fn_with_state(state.clone(), middleware::rate_limit));
    tower::ServiceBuilder::new()
        .layer(middleware::EdgeLayer(state.clone()))
        .option_layer(rate_limit)
        .map_response(IntoResponse::into_response)
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .service(front(state.clone(), routes(state, extra)))
}

/// `/fn/<name>...` straight to the functions gateway, a route group's
/// route without parameters (`/v1/sql`) straight to its component,
/// everything else (a bare `/fn/` too: 404) to the router. These are the
/// hot paths, and their routing is a prefix or an exact path: skipping the
/// router's match, its extensions and its boxed per-route service saves
/// ~1.5 µs of host CPU per request (5 % of a `/fn` call, measured).
fn front(
    state: AppState,
    router: Router,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let functions = state.config.feature_enabled("functions");
    let exact = exact_routes(&state);
    // One reference count per request, not one per part.
    let shared = Arc::new((state, router, exact));
    tower::service_fn(move |request: Request| {
        let shared = shared.clone();
        async move {
            let (state, router, exact) = &*shared;
            let path = request.uri().path();
            let named = path
                .strip_prefix("/fn/")
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
            if functions && named {
                Ok(call_function(state, request).await)
            } else if let Some((component, limit)) = exact.get(path) {
                Ok(middleware::body_limit(*limit, request, |request| {
                    serve_component(state.clone(), component.clone(), request)
                })
                .await)
            } else {
                router.clone().call(request).await
            }
        }
    })
}

/// Route group routes without parameters, by path: their component and
/// body limit (the router keeps them too; the front answers them first).
fn exact_routes(state: &AppState) -> HashMap<String, (Arc<LoadedComponent>, usize)> {
    let host_limit = state.config.http.body_limit_bytes;
    let mut exact = HashMap::new();
    for route in &state.app.routes {
        let component = state.components[&route.component].clone();
        let limit = component.body_limit.unwrap_or(host_limit);
        for path in route.axum_paths() {
            if !path.contains('{') {
                exact.insert(path, (component.clone(), limit));
            }
        }
    }
    exact
}

/// Every route: the host's own, `extra`, and one per route group route.
/// The routes that read a body limit it themselves; the host's own
/// (health, metrics, docs) never read one.
fn routes(state: AppState, extra: Router<AppState>) -> Router {
    let mut router = api::routes().merge(extra);
    if state.config.feature_enabled("functions") {
        router = router.route(
            "/v1/functions/{id}/invoke",
            axum::routing::post(invoke_function),
        );
    }
    let host_limit = state.config.http.body_limit_bytes;
    for route in &state.app.routes {
        let component = state.components[&route.component].clone();
        let limit = component.body_limit.unwrap_or(host_limit);
        for path in route.axum_paths() {
            let component = component.clone();
            router = router.route(
                &path,
                any(move |State(state): State<AppState>, request: Request| {
                    let component = component.clone();
                    middleware::body_limit(limit, request, move |request| {
                        serve_component(state, component, request)
                    })
                }),
            );
        }
    }
    router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state)
}

async fn call_function(state: &AppState, request: Request) -> Response {
    let limit = state.config.http.body_limit_bytes;
    middleware::body_limit(limit, request, |request| {
        api::functions::call(state, request)
    })
    .await
}

async fn invoke_function(State(state): State<AppState>, request: Request) -> Response {
    let limit = state.config.http.body_limit_bytes;
    middleware::body_limit(limit, request, |request| {
        api::functions::invoke(state, request)
    })
    .await
}

async fn serve_component(
    state: AppState,
    component: Arc<LoadedComponent>,
    request: Request,
) -> Response {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| Arc::from("-"), |id| id.0.clone());
    let public = component
        .public_routes
        .iter()
        .any(|p| p == request.uri().path());
    let caller = request.extensions().get::<Caller>().cloned();
    let client = middleware::client_address(&request);
    let mut response = match principal(&state, public, caller).await {
        Ok(caller) => match seal_secrets(&state, &component, caller.as_ref(), request).await {
            Ok(request) => {
                let ctx = RequestContext::new(request_id.clone(), caller, client, None);
                match state.dispatcher.dispatch(&component, ctx, request).await {
                    Ok(response) => response,
                    Err(error) => ApiError::dispatch_failed(error, &request_id).into_response(),
                }
            }
            Err(error) => error.into_response(),
        },
        Err(error) => api::refuse(error, request).await,
    };
    response
        .extensions_mut()
        .insert(RouteGroup(component.requests.clone()));
    response
}

/// The caller a component route acts for, and what it may do: none on the
/// component's public routes, else a verified token whose session is live,
/// or 401.
pub(crate) async fn principal(
    state: &AppState,
    public: bool,
    caller: Option<Caller>,
) -> Result<Option<(Principal, Arc<Access>)>, ApiError> {
    if public {
        return Ok(None);
    }
    let principal = match caller {
        Some(Caller::Verified(principal)) => principal,
        Some(Caller::Rejected(error)) => return Err(ApiError::unauthorized(error)),
        Some(Caller::Anonymous) | None => return Err(ApiError::unauthorized(AuthError::Missing)),
    };
    match state.auth.session_access(&state.db, &principal).await {
        Ok(Some(access)) => Ok(Some((principal, access))),
        Ok(None) => Err(ApiError::unauthorized(AuthError::SessionEnded)),
        Err(error) => {
            tracing::error!(%error, "checking a session");
            Err(ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "the session could not be checked; try again",
            ))
        }
    }
}

/// The request with the secrets it carries sealed, when it goes to the
/// functions route group (which stores them and must never hold one in the
/// clear; see `functions::sealing`); any other request as it is.
async fn seal_secrets(
    state: &AppState,
    component: &LoadedComponent,
    caller: Option<&(Principal, Arc<Access>)>,
    request: Request,
) -> Result<Request, ApiError> {
    if component.id() != "functions" {
        return Ok(request);
    }
    match (
        sealing::carrying(request.method(), request.uri().path()),
        caller,
    ) {
        (Some(carrying), Some((principal, _))) => {
            state
                .functions
                .seal_request(principal, carrying, request, component.timeout())
                .await
        }
        _ => Ok(request),
    }
}

/// The largest request head, and about the read buffer a connection may
/// grow to (hyper's default, 408 KiB, let 10,000 slow clients hold 4 GB
/// with heads alone); a larger head is a 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves until SIGINT or SIGTERM, then drains in-flight requests (and the
/// rest of the host's [`Tasks`]) for up to the grace period, and cuts what
/// is left.
///
/// The accept loop is the host's own rather than `axum::serve`, which sets
/// no timer, so hyper drops its header-read timeout, and caps nothing: a
/// client that opened connections and sent half a header (or nothing)
/// held a socket, a task and a read buffer each for good, until the host
/// ran out of file descriptors. Here a connection has
/// `http.header_read_timeout_ms` to send each request's head (the wait
/// for the next one on a kept-alive connection included), and past
/// `http.max_connections` a new connection is closed at once, so those
/// being served keep their share, as is one past its client's
/// `http.max_connections_per_client` ([`connections`]). A client that stops reading its answers
/// is cut after `http.send_timeout_ms` without progress ([`stall`]), and
/// a request's head may take at most [`MAX_HEAD_BYTES`] of buffer.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = state.config.shutdown_grace();
    let max_connections = state.config.http.max_connections;
    let state_per_client = state.config.http.max_connections_per_client;
    let send_timeout = Duration::from_millis(state.config.http.send_timeout_ms);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(
            state.config.http.header_read_timeout_ms,
        ))
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let proxies = Arc::new(proxy::TrustedProxies::new(
        state.config.http.trusted_proxies.clone(),
    ));
    let tasks = state.tasks.clone();
    let shared = state.clone();
    let delay = Duration::from_secs(state.config.http.shutdown_delay_secs);
    let app = app(state);
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let per_client = connections::PerClient::new(state_per_client);
    let mut shutdown = std::pin::pin!(shutdown);
    // Told to stop with a delay: readiness says so at once, and the host
    // accepts and serves on until the delay is over (a load balancer
    // polling readiness stops sending first), then drains.
    let mut closing: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let (tcp, client) = tokio::select! {
            () = &mut shutdown, if closing.is_none() => {
                shared.readiness.drain();
                if delay.is_zero() {
                    break;
                }
                tracing::info!(?delay, "stopping: not ready from now on; the listener closes after the delay");
                closing = Some(Box::pin(tokio::time::sleep(delay)));
                continue;
            }
            () = async { closing.as_mut().expect("closing").await }, if closing.is_some() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: what is served goes on.
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tracing::trace!(%client, "connection accepted");
        let peer = client.ip();
        let trusted = proxies.trusts(peer);
        let held = if trusted {
            None
        } else {
            let Some(held) = per_client.take(peer) else {
                continue;
            };
            Some(held)
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%client, "connection refused: http.max_connections reached");
            continue;
        };
        // Responses whose length is not known up front (a function
        // streaming its body) go out in several writes: without
        // TCP_NODELAY the last one waits for the client's delayed ACK
        // (40 ms on Linux).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let proxy = trusted.then(|| proxies.clone());
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            let client = match &proxy {
                Some(proxies) => proxies.client(peer, request.headers()),
                None => peer,
            };
            request
                .extensions_mut()
                .insert(proxy::ClientAddress(client));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
        let connection = http
            .serve_connection(
                hyper_util::rt::TokioIo::new(stall::SendDeadline::new(tcp, send_timeout)),
                service,
            )
            .with_upgrades();
        let stopping = tasks.stopping();
        tasks.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop((permit, held));
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if !tasks.stop(grace).await {
        tracing::warn!(
            ?grace,
            "grace period over; the remaining connections and guest runs were cut"
        );
    }
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on
/// the first of them.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
