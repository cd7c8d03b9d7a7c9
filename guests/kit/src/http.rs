//! Buffered HTTP requests and responses over `wasi:http`.
//!
//! Route groups take small JSON bodies (the host caps them), so reading the
//! whole body before handling keeps handlers plain functions. A route that
//! takes bulk data instead reads its body as it arrives ([`BodyReader`]; see
//! [`crate::RouteGroup::streams`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ApiError;
use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;

/// A request body read as it arrives, chunk by chunk; or, when the host
/// has read it already, handed out from memory the same way.
pub struct BodyReader {
    source: Source,
    /// Whether the handler read up to the end.
    ended: std::cell::Cell<bool>,
}

enum Source {
    Stream {
        // Declared first: the stream must go before the body it came from.
        stream: crate::bindings::wasi::io::streams::InputStream,
        _body: IncomingBody,
    },
    /// The whole body, and how much of it has been read.
    Memory {
        body: Vec<u8>,
        read: std::cell::Cell<usize>,
    },
}

impl BodyReader {
    /// A body the host read in full.
    fn in_memory(body: Vec<u8>) -> Self {
        Self {
            source: Source::Memory {
                body,
                read: std::cell::Cell::new(0),
            },
            ended: std::cell::Cell::new(false),
        }
    }

    /// The next chunk (at most `max` bytes), or `None` at the end.
    pub fn next_chunk(&self, max: u64) -> Result<Option<Vec<u8>>, ApiError> {
        let stream = match &self.source {
            Source::Stream { stream, .. } => stream,
            Source::Memory { body, read } => {
                let from = read.get();
                if from == body.len() {
                    self.ended.set(true);
                    return Ok(None);
                }
                let to = from + (body.len() - from).min(usize::try_from(max).unwrap_or(usize::MAX));
                read.set(to);
                return Ok(Some(body[from..to].to_vec()));
            }
        };
        match stream.blocking_read(max) {
            Ok(chunk) => Ok(Some(chunk)),
            Err(StreamError::Closed) => {
                self.ended.set(true);
                Ok(None)
            }
            Err(StreamError::LastOperationFailed(e)) => Err(ApiError::bad_request(format!(
                "could not read the request body: {}",
                e.to_debug_string()
            ))),
        }
    }
}

/// What a handler that answered without reading its body still reads of
/// it, so that the client's connection stays usable for its next request
/// (the host closes a connection whose request body was left unread, and a
/// client still sending gets a broken pipe instead of the answer).
const DISCARD_AT_MOST: u64 = 64 * 1024;
const DISCARD_WAIT_NS: u64 = 1_000_000_000;

impl BodyReader {
    /// Reads and drops the rest of a small body the handler left unread:
    /// up to [`DISCARD_AT_MOST`] bytes, waiting at most a second.
    pub(crate) fn discard_rest(&self) {
        use crate::bindings::wasi::clocks::monotonic_clock;
        use crate::bindings::wasi::io::poll;
        let Source::Stream { stream, .. } = &self.source else {
            return;
        };
        if self.ended.get() {
            return;
        }
        let readable = stream.subscribe();
        let timeout = monotonic_clock::subscribe_duration(DISCARD_WAIT_NS);
        let mut left = DISCARD_AT_MOST;
        loop {
            match stream.read(left) {
                Ok(chunk) if chunk.is_empty() => {
                    poll::poll(&[&readable, &timeout]);
                    if timeout.ready() {
                        return;
                    }
                }
                Ok(chunk) => match left.checked_sub(chunk.len() as u64) {
                    Some(rest) if rest > 0 => left = rest,
                    _ => return,
                },
                Err(StreamError::Closed) => {
                    self.ended.set(true);
                    return;
                }
                Err(StreamError::LastOperationFailed(_)) => return,
            }
        }
    }
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyReader")
    }
}

/// An incoming request, body read in full (or, for a streaming route,
/// left to read through [`Request::body_reader`]).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Upper case, e.g. `POST`.
    pub method: String,
    /// The path without the query, e.g. `/v1/sql`.
    pub path: String,
    pub query: Option<String>,
    /// Header names are lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The unread body of a streaming route.
    pub(crate) stream: Option<std::rc::Rc<BodyReader>>,
}

impl Request {
    /// The body as it arrives, on a route that streams
    /// ([`crate::RouteGroup::streams`]).
    pub fn body_reader(&self) -> Option<&BodyReader> {
        self.stream.as_deref()
    }

    pub(crate) fn from_incoming(
        request: IncomingRequest,
        streams: fn(&str, &str) -> bool,
    ) -> Result<Self, ApiError> {
        let method = match request.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Other(other) => other.to_ascii_uppercase(),
        };
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (path, query) = match path_with_query.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (path_with_query, None),
        };
        let headers: Vec<(String, Vec<u8>)> = request
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        // Not opening the body stream saves the host a body reader. A
        // request has a body when it declares a length, or (chunked, whose
        // header the host does not pass on) when its method carries one.
        let declared: Option<u64> = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok())
            .unwrap_or(None);
        let carries_body = matches!(method.as_str(), "POST" | "PUT" | "PATCH");
        let (body, stream) = if !declared.map_or(carries_body, |n| n > 0) {
            (Vec::new(), None)
        } else if streams(&method, &path) {
            let (body, stream) = open_body(&request)?;
            let reader = BodyReader {
                source: Source::Stream {
                    stream,
                    _body: body,
                },
                ended: std::cell::Cell::new(false),
            };
            (Vec::new(), Some(std::rc::Rc::new(reader)))
        } else {
            (read_body(&request, declared)?, None)
        };
        Ok(Self {
            method,
            path,
            query,
            headers,
            body,
            stream,
        })
    }

    /// A request the host read whole, handed over through the `route`
    /// export.
    pub(crate) fn from_route(
        request: crate::bindings::exports::zatabase::platform::route::Request,
        streams: fn(&str, &str) -> bool,
    ) -> Self {
        let method = request.method.to_ascii_uppercase();
        let (path, query) = match request.path_with_query.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (request.path_with_query, None),
        };
        let headers = request
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        // A streaming route reads the body the same way, from memory (and,
        // as over wasi:http, finds none when there is none).
        let (body, stream) = if streams(&method, &path) && !request.body.is_empty() {
            let reader = BodyReader::in_memory(request.body);
            (Vec::new(), Some(std::rc::Rc::new(reader)))
        } else {
            (request.body, None)
        };
        Self {
            method,
            path,
            query,
            headers,
            body,
            stream,
        }
    }

    /// The first value of a header, if it is present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The first value of the query parameter `name`, percent-decoded (`+`
    /// is a space), if it is given. A value that does not decode (`%FF`,
    /// `%zz`) is a 400, never taken for an absent one: a filter the caller
    /// sent must not be dropped.
    pub fn query_param(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(query) = self.query.as_deref() else {
            return Ok(None);
        };
        let found = query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (crate::router::percent_decode(key)? == name).then_some(value)
        });
        found
            .map(|value| {
                crate::router::percent_decode(&value.replace('+', " ")).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "the query parameter `{name}` is not valid percent-encoded UTF-8"
                    ))
                })
            })
            .transpose()
    }

    /// Refuses a query parameter other than those in `known`: a misspelt
    /// filter must not be taken for no filter.
    pub fn only_query_params(&self, known: &[&str]) -> Result<(), ApiError> {
        let Some(query) = self.query.as_deref() else {
            return Ok(());
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            let key = crate::router::percent_decode(key).unwrap_or_else(|| key.to_owned());
            if !known.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{key}`; this endpoint takes {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The body as JSON of type `T`.
    ///
    /// Wrong or missing content type answers 415, malformed JSON 400, and JSON
    /// of the wrong shape (missing field, wrong type) 422.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let content_type = self.header("content-type").unwrap_or_default();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::new(
                415,
                "expected a JSON body with `Content-Type: application/json`",
            ));
        }
        if self.body.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; expected JSON",
            ));
        }
        serde_json::from_slice(&self.body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                ApiError::unprocessable(format!("invalid request body: {e}"))
            }
            _ => ApiError::bad_request(format!("malformed JSON: {e}")),
        })
    }
}

/// The most a route that reads its body whole takes (a route group whose
/// spin.toml raises `body_limit_mb` for a streaming route keeps this bound
/// on its other routes).
const MAX_BUFFERED_BODY: usize = 16 << 20;

/// The request's body and the stream that reads it.
fn open_body(
    request: &IncomingRequest,
) -> Result<
    (
        IncomingBody,
        crate::bindings::wasi::io::streams::InputStream,
    ),
    ApiError,
> {
    let body = request
        .consume()
        .map_err(|()| ApiError::internal("request body already consumed"))?;
    let stream = body
        .stream()
        .map_err(|()| ApiError::internal("request body stream unavailable"))?;
    Ok((body, stream))
}

/// The whole body; `declared` is its length when the request says it (the
/// host has checked it), so reading stops there rather than asking once
/// more only to learn the stream has ended.
fn read_body(request: &IncomingRequest, declared: Option<u64>) -> Result<Vec<u8>, ApiError> {
    let (body, stream) = open_body(request)?;
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n.min(64 * 1024) as usize));
    while declared.is_none_or(|n| (bytes.len() as u64) < n) {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_BUFFERED_BODY {
                    return Err(ApiError::new(
                        413,
                        format!(
                            "the request body exceeds {MAX_BUFFERED_BODY} bytes, the most a route \
                             that reads its body whole takes"
                        ),
                    ));
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(ApiError::bad_request(format!(
                    "could not read the request body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    // No trailers are read: dropping the body is all it takes.
    drop(stream);
    drop(body);
    Ok(bytes)
}

/// A response to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("serializing JSON to memory cannot fail");
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body,
        }
    }

    /// A JSON response whose body is already JSON text (the caller vouches
    /// for it, typically because the host wrote it).
    pub fn json_text(status: u16, body: String) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.into_bytes(),
        }
    }

    /// 204 with no body.
    pub fn no_content() -> Self {
        Self {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The response as the `route` export returns it (the host adds the
    /// content length).
    pub(crate) fn into_route(
        self,
    ) -> crate::bindings::exports::zatabase::platform::route::Response {
        crate::bindings::exports::zatabase::platform::route::Response {
            status: self.status,
            headers: self.headers,
            body: self.body,
        }
    }

    pub(crate) fn send(self, out: ResponseOutparam) {
        let mut entries: Vec<(String, Vec<u8>)> = self
            .headers
            .into_iter()
            .map(|(n, v)| (n, v.into_bytes()))
            .collect();
        entries.push((
            "content-length".to_owned(),
            self.body.len().to_string().into_bytes(),
        ));
        let headers = Fields::from_list(&entries).unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(headers);
        // Only an out-of-range status fails here; the router never makes one.
        let _ = response.set_status_code(self.status);
        let body = response.body().expect("a new response has a body");
        let stream = body.write().expect("a new body has a stream");
        // A body that fits the stream's buffer is written before the response
        // is handed over, so the host sends head and body in one write.
        let small = stream
            .check_write()
            .is_ok_and(|permit| self.body.len() as u64 <= permit);
        if small {
            if !self.body.is_empty() && stream.write(&self.body).is_err() {
                return;
            }
            drop(stream);
            let _ = OutgoingBody::finish(body, None);
            ResponseOutparam::set(out, Ok(response));
            return;
        }
        ResponseOutparam::set(out, Ok(response));
        // wasi:http caps one write at 4096 bytes.
        for chunk in self.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away; nothing more to do.
                return;
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn query_parameters_are_decoded() {
        let request = Request {
            query: Some("limit=10&q=a+b%21&empty&limit=20".to_owned()),
            ..Request::default()
        };
        let param = |name: &str| request.query_param(name).unwrap();
        assert_eq!(param("limit").as_deref(), Some("10"));
        assert_eq!(param("q").as_deref(), Some("a b!"));
        assert_eq!(param("empty").as_deref(), Some(""));
        assert_eq!(param("missing"), None);
        for bad in ["id=%FF", "id=%zz", "id=a%"] {
            let request = Request {
                query: Some(bad.to_owned()),
                ..Request::default()
            };
            assert_eq!(request.query_param("id").unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn unknown_query_parameters_are_refused() {
        let with = |query: &str| Request {
            query: Some(query.to_owned()),
            ..Request::default()
        };
        let known = ["limit", "before"];
        for fine in ["", "limit=1", "limit=1&before=x", "&limit=1&", "lim%69t=2"] {
            assert!(with(fine).only_query_params(&known).is_ok(), "{fine}");
        }
        assert!(Request::default().only_query_params(&known).is_ok());
        for bad in ["limt=1", "limit=1&request=2", "x", "limit=1&%FF=2"] {
            let refused = with(bad).only_query_params(&known).unwrap_err();
            assert_eq!(refused.status, 400, "{bad}");
        }
    }
}
