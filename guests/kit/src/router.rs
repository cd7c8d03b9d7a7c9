//! Method-and-path routing inside a route group.
//!
//! The host has already chosen this component from `spin.toml`; the router
//! picks the handler. A path that matches no route answers 404, a path that
//! matches with another method 405 with an `Allow` header.

use crate::{ApiError, Request, Response};

/// A route handler.
pub type Handler = fn(&Request, &Params) -> Result<Response, ApiError>;

/// Path parameters captured by `:name` segments, percent-decoded.
#[derive(Debug, Default)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// The captured value of `:name`. Routes name their parameters, so asking
    /// for one the route lacks is a programming error and panics.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("route has no parameter `{name}`"))
    }
}

enum Segment {
    Literal(&'static str),
    Param(&'static str),
}

struct Route {
    method: &'static str,
    segments: Vec<Segment>,
    handler: Handler,
}

/// An ordered table of routes.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. `pattern` is like `/v1/collections/:name`.
    pub fn route(mut self, method: &'static str, pattern: &'static str, handler: Handler) -> Self {
        let segments = pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix(':') {
                Some(name) => Segment::Param(name),
                None => Segment::Literal(s),
            })
            .collect();
        self.routes.push(Route {
            method,
            segments,
            handler,
        });
        self
    }

    /// Dispatches a request to its handler and turns errors into responses.
    pub fn handle(&self, request: &Request) -> Response {
        let parts: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
        let mut allowed: Vec<&'static str> = Vec::new();
        for route in &self.routes {
            let Some(params) = matches(&route.segments, &parts) else {
                continue;
            };
            if route.method == request.method || (route.method == "GET" && request.method == "HEAD")
            {
                return (route.handler)(request, &params).unwrap_or_else(Response::from);
            }
            allowed.push(route.method);
        }
        if allowed.is_empty() {
            return ApiError::not_found(format!(
                "no route for {} {}",
                request.method, request.path
            ))
            .into();
        }
        allowed.dedup();
        let allow = allowed.join(", ");
        Response::from(ApiError::new(
            405,
            format!(
                "{} is not allowed on {}; allowed: {allow}",
                request.method, request.path
            ),
        ))
        .with_header("allow", allow)
    }
}

fn matches(segments: &[Segment], parts: &[&str]) -> Option<Params> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut params = Params::default();
    for (segment, part) in segments.iter().zip(parts) {
        match segment {
            Segment::Literal(literal) if literal == part => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.0.push((name, percent_decode(part)?)),
        }
    }
    Some(params)
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &Request, params: &Params) -> Result<Response, ApiError> {
        Ok(Response::json(200, &params.get("name")))
    }

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            ..Request::default()
        }
    }

    #[test]
    fn routes_by_method_and_path() {
        let router = Router::new().route("GET", "/v1/things/:name", ok);
        let response = router.handle(&request("GET", "/v1/things/a%20b"));
        assert_eq!(response.status, 200);
        assert_eq!(response.body, br#""a b""#);
        assert_eq!(router.handle(&request("GET", "/v1/things")).status, 404);
        let wrong = router.handle(&request("DELETE", "/v1/things/x"));
        assert_eq!(wrong.status, 405);
        assert!(
            wrong
                .headers
                .contains(&("allow".to_owned(), "GET".to_owned()))
        );
    }

    #[test]
    fn bad_percent_encoding_is_not_a_match() {
        let router = Router::new().route("GET", "/v1/things/:name", ok);
        assert_eq!(router.handle(&request("GET", "/v1/things/%zz")).status, 404);
    }
}
