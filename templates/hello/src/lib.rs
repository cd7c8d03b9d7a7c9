//! The `hello` template: `<greeting>, world! (you called <path>)` for every
//! request, the greeting read from the function's `greeting` variable.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::variables;

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    let greeting = variables::get("greeting").unwrap_or_else(|_| "Hello".to_owned());
    let path = request
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| request.path())
        .to_owned();
    Response::builder()
        .status(200)
        .header("content-type", "text/plain; charset=utf-8")
        .body(format!("{greeting}, world! (you called {path})"))
        .build()
}
