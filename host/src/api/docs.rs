//! `/v1/docs`: Swagger UI, served from assets compiled into the binary (the
//! `utoipa-swagger-ui-vendored` crate's copy); nothing comes from the network.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::{Html, IntoResponse, Response};
use http::{StatusCode, header};

use super::error::ApiError;

const CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui.css"));
const BUNDLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui-bundle.js"));
const INIT: &str = r##"window.onload = () => {
  window.ui = SwaggerUIBundle({ url: "/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
};"##;

pub async fn index() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Zatabase API</title>
  <link rel="stylesheet" href="/v1/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/v1/docs/swagger-ui-bundle.js"></script>
  <script src="/v1/docs/init.js"></script>
</body>
</html>"#,
    )
}

/// A compiled-in asset; a name that is not one (or not UTF-8 once decoded)
/// is a 404 in the error shape.
pub async fn asset(file: Result<Path<String>, PathRejection>) -> Response {
    let file = file.map_or_else(|_| "(not UTF-8)".to_owned(), |Path(file)| file);
    let (content_type, body): (&str, &'static [u8]) = match file.as_str() {
        "swagger-ui.css" => ("text/css; charset=utf-8", CSS),
        "swagger-ui-bundle.js" => ("text/javascript; charset=utf-8", BUNDLE),
        "init.js" => ("text/javascript; charset=utf-8", INIT.as_bytes()),
        _ => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such file: /v1/docs/{file}"),
            )
            .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
