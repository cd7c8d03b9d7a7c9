//! A route group's buffered entry point, `zatabase:platform/route`: the
//! request, its body read by the host, goes in as one value and the
//! response comes back as the call's result.
//!
//! Route groups answer small JSON requests with small JSON responses.
//! Over `wasi:http` that exchange is some twenty resource calls (the
//! request's fields, its body and stream, the response's fields, body,
//! stream, the out-parameter) and two body channels; here it is one call.
//! A request whose body is larger than [`BUFFERED_BODY_MAX`] or of unknown
//! length still goes through `wasi:http/incoming-handler`, which reads it as
//! it arrives (a bulk ingest).

use axum::body::Body;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "zatabase:platform/route-entry",
        exports: { default: async },
    });
}

pub use generated::exports::zatabase::platform::route::{Request, Response};
pub use generated::{RouteEntry, RouteEntryIndices};

/// The interface a route group exports to be called this way.
pub const EXPORT: &str = "zatabase:platform/route@0.1.0";

/// Where a route group's exports are in its instances: both handlers, found
/// once when it loads (an instance built for either path serves both).
pub struct Indices {
    pub proxy: wasmtime_wasi_http::p2::bindings::ProxyIndices,
    pub entry: RouteEntryIndices,
}

/// Where a route group's buffered entry point is: `None` when it does not
/// export one (it is then served over `wasi:http` alone), an error when it
/// exports one of another shape.
pub fn indices<T>(
    engine: &crate::engine::Engine,
    component: &wasmtime::component::Component,
    pre: &wasmtime::component::InstancePre<T>,
) -> anyhow::Result<Option<Indices>> {
    let exported = component
        .component_type()
        .exports(engine.wasmtime())
        .any(|(name, _)| name == EXPORT);
    if !exported {
        return Ok(None);
    }
    let entry = RouteEntryIndices::new(pre)
        .map_err(|e| anyhow::anyhow!("its `{EXPORT}` export does not match the host's: {e}"))?;
    let proxy = wasmtime_wasi_http::p2::bindings::ProxyIndices::new(pre)?;
    Ok(Some(Indices { proxy, entry }))
}

/// The largest body the host reads before calling the route group.
pub const BUFFERED_BODY_MAX: u64 = 1 << 20;

/// Whether `request` goes through the buffered entry point: it has no body,
/// or one of a declared length within [`BUFFERED_BODY_MAX`]. (The exact
/// size, not the upper bound: under the host's body limit a chunked body's
/// upper bound is the limit, which may be below that.)
pub fn buffers<B: http_body::Body>(request: &http::Request<B>) -> bool {
    request
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= BUFFERED_BODY_MAX)
}

/// Why a request's body could not be read (the client's doing: 400).
#[derive(Debug)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

/// `request` as the route group takes it, its body read whole. The headers
/// a guest never sees over `wasi:http` (hop-by-hop ones, `host`) stay out
/// here too.
pub async fn request(request: http::Request<Body>) -> Result<Request, BodyError> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| BodyError(format!("could not read the request body: {e}")))?
        .to_bytes();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !forbidden(name))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    Ok(Request {
        method: parts.method.as_str().to_ascii_uppercase(),
        path_with_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers,
        body: body.into(),
    })
}

/// The route group's answer as an HTTP response. A header the guest may
/// not set (hop-by-hop, `content-length`: the host knows the length) is
/// left out; a malformed status or header is the route group's bug.
pub fn response(answer: Response) -> anyhow::Result<http::Response<Body>> {
    let status = StatusCode::from_u16(answer.status)
        .map_err(|_| anyhow::anyhow!("the component answered status {}", answer.status))?;
    let mut response = http::Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.reserve(answer.headers.len());
    for (name, value) in answer.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow::anyhow!("the component answered a header named {name:?}"))?;
        if forbidden(&name) || name == http::header::CONTENT_LENGTH {
            continue;
        }
        let value = HeaderValue::try_from(value)
            .map_err(|_| anyhow::anyhow!("the component answered a malformed `{name}` header"))?;
        headers.append(name, value);
    }
    Ok(response)
}

fn forbidden(name: &HeaderName) -> bool {
    wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[tokio::test]
    async fn a_request_goes_in_whole_without_its_hop_by_hop_headers() {
        let incoming = http::Request::post("/v1/sql?x=1")
            .header("host", "example.com")
            .header("connection", "keep-alive")
            .header("content-type", "application/json")
            .body(Body::from("{\"query\":\"SELECT 1\"}"))
            .unwrap();
        assert!(buffers(&incoming));
        let record = request(incoming).await.unwrap();
        assert_eq!(record.method, "POST");
        assert_eq!(record.path_with_query, "/v1/sql?x=1");
        assert_eq!(
            record.headers,
            vec![("content-type".to_owned(), b"application/json".to_vec())]
        );
        assert_eq!(record.body, b"{\"query\":\"SELECT 1\"}");
    }

    #[test]
    fn only_small_bodies_of_known_length_are_read_first() {
        let empty = http::Request::get("/").body(Body::empty()).unwrap();
        assert!(buffers(&empty));
        let large = http::Request::post("/")
            .body(Body::from(vec![0u8; BUFFERED_BODY_MAX as usize + 1]))
            .unwrap();
        assert!(!buffers(&large));
        let chunks = || futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("x"))]);
        let unknown = http::Request::post("/")
            .body(Body::from_stream(chunks()))
            .unwrap();
        assert!(!buffers(&unknown));
        // As the body limit wraps them: a chunked body stays unknown, a
        // declared one keeps its length.
        let limited = |body: Body| {
            http::Request::post("/").body(Body::new(http_body_util::Limited::new(body, 1024)))
        };
        assert!(!buffers(&limited(Body::from_stream(chunks())).unwrap()));
        assert!(buffers(&limited(Body::from("{}")).unwrap()));
    }

    #[test]
    fn a_response_keeps_its_headers_but_not_the_ones_the_host_owns() {
        let response = response(Response {
            status: 201,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("content-length".to_owned(), "999".to_owned()),
                ("connection".to_owned(), "close".to_owned()),
                ("location".to_owned(), "/v1/x".to_owned()),
            ],
            body: b"{}".to_vec(),
        })
        .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers().len(), 2);
        assert_eq!(response.headers()["location"], "/v1/x");
        assert_eq!(response.body().size_hint().exact(), Some(2));
        for bad in [
            Response {
                status: 1000,
                headers: vec![],
                body: vec![],
            },
            Response {
                status: 200,
                headers: vec![("bad name".to_owned(), "x".to_owned())],
                body: vec![],
            },
            Response {
                status: 200,
                headers: vec![("x".to_owned(), "a\nb".to_owned())],
                body: vec![],
            },
        ] {
            assert!(super::response(bad).is_err());
        }
    }
}
