//! Running users' functions: `/fn/:function_name/*path` (every method) and
//! `POST /v1/functions/:id/invoke`. Managing them (`/v1/functions...`) is
//! the functions route group's; running them is the host's, since a route
//! group cannot start another component.
//!
//! `/fn/:name` resolves in the caller's project and environment, from the
//! bearer token. Without a token, only a `public` function answers, its
//! project named by `X-Zatabase-Project` (id or slug) or by the `Host`
//! header (`<project-slug>.<functions.base_domain>`), its environment by
//! `X-Zatabase-Environment` (`live` unless said). Anything else is 404.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, Uri, header};

use super::ApiError;
use crate::auth::{Access, AuthError};
use crate::caps::zatabase::platform::session::{Action, Principal, Resource};
use crate::dispatch::{ForeignAuthorization, RequestContext};
use crate::functions::telemetry::Call;
use crate::functions::{Deployment, Function, Lookup};
use crate::server::{AppState, Caller, RequestId, RouteGroup, principal};

const PROJECT_HEADER: HeaderName = HeaderName::from_static("x-zatabase-project");
const ENVIRONMENT_HEADER: HeaderName = HeaderName::from_static("x-zatabase-environment");
/// Set by the platform on a triggered call (`cron`), with the schedule that
/// fired; never taken from a client.
pub(crate) const TRIGGER_HEADER: HeaderName = HeaderName::from_static("x-zatabase-trigger");
pub(crate) const SCHEDULE_HEADER: HeaderName = HeaderName::from_static("x-zatabase-schedule");

/// A client's request loses the headers only the platform may send, so a
/// function can trust them.
fn strip_platform_headers(request: &mut Request) {
    let headers = request.headers_mut();
    headers.remove(TRIGGER_HEADER);
    headers.remove(SCHEDULE_HEADER);
}

/// `ANY /fn/:function_name/*path`.
pub async fn call(state: &AppState, mut request: Request) -> Response {
    strip_platform_headers(&mut request);
    let (name, path_info) = split_fn_path(request.uri().path());
    let name = name.to_owned();
    let path_info = path_info.to_owned();
    let token = request.extensions().get::<Caller>().cloned();
    // A credential that is not the platform's (Basic, an API key, another
    // issuer's token) is the function's own business: a public function
    // answers as to anyone and gets the header as sent. Without one to
    // answer, it is refused as any bad token is.
    let foreign = match &token {
        Some(Caller::Rejected(error))
            if !request
                .headers()
                .get_all(header::AUTHORIZATION)
                .iter()
                .any(|value| state.auth.claims_to_be_ours(value.as_bytes())) =>
        {
            Some(*error)
        }
        _ => None,
    };
    // A `Host` that names a project's subdomain decides the project: no
    // header or token puts another project's function at its origin.
    let subdomain = subdomain_project(state, &request);
    let anonymous = anonymous_project(&request, subdomain.as_deref())
        .and_then(|project| Ok((project, anonymous_environment(&request)?)));
    let outcome = async {
        let caller = match foreign {
            Some(_) => None,
            None => caller(state, token).await?,
        };
        let lookup = match &caller {
            Some((principal, _)) => Lookup::Name {
                project_id: principal.project_id.clone(),
                environment: principal.environment.clone(),
                name: name.clone(),
            },
            None => {
                let (project, environment) = anonymous?;
                Lookup::Public {
                    project,
                    environment,
                    name: name.clone(),
                }
            }
        };
        let function = resolve(state, &lookup, &name).await?;
        if subdomain
            .as_deref()
            .is_some_and(|slug| slug != function.project_slug)
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("function `{name}` not found"),
            ));
        }
        // A public function answers anyone; any other needs Read on it,
        // as `invoke` does (a token must not reach less than no token).
        if let Some((_, access)) = &caller
            && !function.public
        {
            access
                .check(Resource::Functions, Some(&function.name), Action::Read)
                .map_err(|message| ApiError::new(StatusCode::FORBIDDEN, message))?;
        }
        Ok::<_, ApiError>((caller, function))
    }
    .await;
    match (outcome, foreign) {
        (Ok((caller, function)), foreign) => {
            if foreign.is_some() {
                request.extensions_mut().insert(ForeignAuthorization);
            }
            let mut response = run(state, caller, &function, &path_info, request).await;
            // Which function answered a URL depends on these too: a cache
            // must not hand one caller's answer to another.
            response.headers_mut().append(
                header::VARY,
                HeaderValue::from_static(
                    "Authorization, X-Zatabase-Project, X-Zatabase-Environment",
                ),
            );
            response
        }
        (Err(error), Some(rejected))
            if matches!(
                error.status,
                StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND
            ) =>
        {
            super::refuse(ApiError::unauthorized(rejected), request).await
        }
        (Err(error), _) => super::refuse(error, request).await,
    }
}

/// `POST /v1/functions/:id/invoke`: the function's response to the request
/// body, sent to it as `POST /fn/<name>` with the same content type.
pub async fn invoke(state: AppState, mut request: Request) -> Response {
    strip_platform_headers(&mut request);
    let segment = request
        .uri()
        .path()
        .trim_start_matches("/v1/functions/")
        .trim_end_matches("/invoke");
    // One spelling of each id (any the uuid crate reads, `urn:uuid:` too,
    // which Postgres does not; percent-encoded or not), so that its
    // spellings are one cached lookup; anything else is no function (404).
    let raw = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|raw| raw.into_owned())
        .unwrap_or_default();
    let id = uuid::Uuid::parse_str(&raw)
        .map(|id| id.hyphenated().to_string())
        .unwrap_or(raw);
    let token = request.extensions().get::<Caller>().cloned();
    let outcome = async {
        let Some((principal, access)) = caller(&state, token).await? else {
            return Err(ApiError::unauthorized(AuthError::Missing));
        };
        let lookup = Lookup::Id {
            project_id: principal.project_id.clone(),
            environment: principal.environment.clone(),
            id: id.clone(),
        };
        let function = resolve(&state, &lookup, &id).await?;
        access
            .check(Resource::Functions, Some(&function.name), Action::Read)
            .map_err(|message| ApiError::new(StatusCode::FORBIDDEN, message))?;
        Ok((Some((principal, access)), function))
    }
    .await;
    match outcome {
        Ok((caller, function)) => {
            let (mut parts, body) = request.into_parts();
            parts.uri = Uri::try_from(format!("/fn/{}", function.name)).unwrap_or_default();
            let request = Request::from_parts(parts, body);
            run(&state, caller, &function, "/", request).await
        }
        Err(error) => super::refuse(error, request).await,
    }
}

/// `/fn/name/a/b` → (`name`, `/a/b`); `/fn/name` → (`name`, `/`).
fn split_fn_path(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix("/fn/").unwrap_or_default();
    match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    }
}

/// The authenticated caller, if the request carries a token (which must
/// then be valid and its session live).
async fn caller(
    state: &AppState,
    token: Option<Caller>,
) -> Result<Option<(Principal, Arc<Access>)>, ApiError> {
    match token {
        Some(Caller::Anonymous) | None => Ok(None),
        token => principal(state, false, token).await,
    }
}

/// The project whose subdomain the request's `Host` names
/// (`<slug>.<functions.base_domain>`), if one is configured and it does.
fn subdomain_project(state: &AppState, request: &Request) -> Option<String> {
    let base = state.config.functions.base_domain.as_ref()?;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            let name = h.split(':').next().unwrap_or(h);
            name.trim_end_matches('.').to_ascii_lowercase()
        });
    let slug = host?
        .strip_suffix(base.as_str())?
        .strip_suffix('.')?
        .to_owned();
    (!slug.is_empty() && !slug.contains('.')).then_some(slug)
}

/// The project an anonymous call names: its subdomain's, else the
/// `X-Zatabase-Project` header's.
fn anonymous_project(request: &Request, subdomain: Option<&str>) -> Result<String, ApiError> {
    if let Some(slug) = subdomain {
        return Ok(slug.to_owned());
    }
    if let Some(project) = request.headers().get(&PROJECT_HEADER) {
        return project
            .to_str()
            .map(|p| p.trim().to_ascii_lowercase())
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "X-Zatabase-Project is not text"));
    }
    Err(ApiError::unauthorized(AuthError::Missing))
}

fn anonymous_environment(request: &Request) -> Result<String, ApiError> {
    match request.headers().get(&ENVIRONMENT_HEADER) {
        None => Ok("live".to_owned()),
        Some(value) => match value.to_str() {
            Ok(env @ ("live" | "sandbox")) => Ok(env.to_owned()),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "X-Zatabase-Environment must be `live` or `sandbox`",
            )),
        },
    }
}

async fn resolve(
    state: &AppState,
    lookup: &Lookup,
    named: &str,
) -> Result<Arc<Function>, ApiError> {
    match state.functions.resolve(lookup).await {
        Ok(Some(function)) => Ok(function),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("function `{named}` not found"),
        )),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "resolving a function");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the function could not be loaded; try again",
            ))
        }
    }
}

/// Runs the function's active deployment on `request`, with Spin's request
/// headers (`spin-path-info` and friends) so spin-sdk routers work as they
/// do on Spin.
pub(crate) async fn run(
    state: &AppState,
    caller: Option<(Principal, Arc<Access>)>,
    function: &Function,
    path_info: &str,
    mut request: Request,
) -> Response {
    let Some(deployment) = &function.deployment else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("function `{}` has no active deployment", function.name),
        )
        .into_response();
    };
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| Arc::from("-"), |id| id.0.clone());
    let client = crate::server::client_address(&request);
    // The platform's routing headers chose the function; they are not part
    // of the request the function was sent (nor work for it to parse).
    let headers = request.headers_mut();
    headers.remove(PROJECT_HEADER);
    headers.remove(ENVIRONMENT_HEADER);
    spin_headers(&mut request, function, path_info, client);
    let Deployment {
        component, context, ..
    } = &**deployment;
    let ctx = RequestContext::new(request_id, caller, client, Some(context.clone()));
    let request_id = ctx.request_id.clone();
    let cold = state.functions.cold(deployment);
    let head = request.method() == http::Method::HEAD;
    let started = std::time::Instant::now();
    let response = match state.dispatcher.dispatch(component, ctx, request).await {
        Ok(response) => response,
        Err(error) => ApiError::dispatch_failed(error, &request_id).into_response(),
    };
    // Recorded when the body has gone out: a function that fails after
    // its head is an error, and its time is the whole call's.
    let call = Call {
        function_id: &function.id,
        status: response.status().as_u16(),
        started,
        cold,
        head,
    };
    let telemetry = state.functions.telemetry();
    let mut response = response.map(|body| telemetry.record_when_sent(call, body));
    response
        .extensions_mut()
        .insert(RouteGroup(component.requests.clone()));
    response
}

fn spin_headers(
    request: &mut Request<Body>,
    function: &Function,
    path_info: &str,
    client: std::net::IpAddr,
) {
    // Names made at compile time, values with one allocation each (the
    // function's routes none: they are made when it is resolved).
    const FULL_URL: HeaderName = HeaderName::from_static("spin-full-url");
    const PATH_INFO: HeaderName = HeaderName::from_static("spin-path-info");
    const MATCHED_ROUTE: HeaderName = HeaderName::from_static("spin-matched-route");
    const RAW_COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-raw-component-route");
    const COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-component-route");
    const BASE_PATH: HeaderName = HeaderName::from_static("spin-base-path");
    const CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");
    let full_url = {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut url = String::with_capacity("http://".len() + host.len() + target.len());
        url.push_str("http://");
        url.push_str(host);
        url.push_str(target);
        url
    };
    let values = [
        (FULL_URL, HeaderValue::try_from(full_url)),
        (PATH_INFO, HeaderValue::try_from(path_info)),
        (MATCHED_ROUTE, Ok(function.matched_route.clone())),
        (RAW_COMPONENT_ROUTE, Ok(HeaderValue::from_static("/..."))),
        (COMPONENT_ROUTE, Ok(HeaderValue::from_static(""))),
        (BASE_PATH, Ok(function.base_path.clone())),
        // Spin's is the peer's socket address; a client named by a proxy
        // has no port of its own, so neither does this one.
        (
            CLIENT_ADDR,
            HeaderValue::try_from(std::net::SocketAddr::new(client, 0).to_string()),
        ),
    ];
    let headers = request.headers_mut();
    // Grow the map once, not rehash it on the way.
    headers.reserve(values.len());
    for (name, value) in values {
        if let Ok(value) = value {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_fn_path;

    #[test]
    fn fn_paths_split_into_name_and_path_info() {
        assert_eq!(split_fn_path("/fn/hello"), ("hello", "/"));
        assert_eq!(split_fn_path("/fn/hello/"), ("hello", "/"));
        assert_eq!(split_fn_path("/fn/hello/a/b"), ("hello", "/a/b"));
    }
}
