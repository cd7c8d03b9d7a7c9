//! The smallest spin-sdk 7 function (WASI 0.3): `hello, world` to every request.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(_request: Request) -> impl IntoResponse {
    http::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("hello, world".to_owned())
        .unwrap()
}
