//! The `kv-counter` template: counters in the function's key-value store
//! (`spin_sdk::key_value`, store `default`).
//!
//! | request | answer |
//! |---|---|
//! | `POST /<name>` | 200 `{"counter", "count"}`, one more |
//! | `GET /<name>` | 200 `{"counter", "count"}` (0 when never counted) |
//! | `DELETE /<name>` | 204, the counter gone |
//!
//! `/` is the counter named by the `default_counter` variable. A read and
//! its write are two calls: concurrent increments of one counter can lose
//! a count (Spin's key-value interface has no atomic increment).

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;
use spin_sdk::variables;

fn answer(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .build()
}

fn count(store: &Store, key: &str) -> anyhow::Result<u64> {
    Ok(match store.get(key)? {
        Some(bytes) => String::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("`{key}` in the store does not hold a count"))?,
        None => 0,
    })
}

fn error(status: u16, message: &str) -> Response {
    let reason = match status {
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let body = serde_json::json!({ "error": reason, "message": message, "status": status });
    answer(status, body.to_string())
}

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    // A failure of the store (or a value in it that is not a count) is
    // answered in the platform's error shape.
    serve(request).unwrap_or_else(|e| error(500, &e.to_string()))
}

fn serve(request: Request) -> anyhow::Result<Response> {
    let path = request
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| request.path())
        .trim_matches('/')
        .to_owned();
    let name = if path.is_empty() {
        variables::get("default_counter").unwrap_or_else(|_| "hits".to_owned())
    } else {
        path
    };
    // Names a URL carries as they are (so also JSON strings as they are).
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"._~-".contains(&b);
    if name.is_empty() || name.len() > 200 || !name.bytes().all(plain) {
        return Ok(error(
            404,
            "a counter is named by 1 to 200 letters, digits, `.`, `_`, `~` or `-`",
        ));
    }
    let store = Store::open_default()?;
    let key = format!("counter:{name}");
    let body = |n: u64| format!(r#"{{"counter":{:?},"count":{n}}}"#, name);
    Ok(match request.method() {
        Method::Post => {
            let next = count(&store, &key)? + 1;
            store.set(&key, next.to_string().as_bytes())?;
            answer(200, body(next))
        }
        Method::Get => answer(200, body(count(&store, &key)?)),
        Method::Delete => {
            store.delete(&key)?;
            Response::builder().status(204).build()
        }
        _ => error(405, "POST, GET or DELETE"),
    })
}
