//! The `webhook` template: a POST whose body's HMAC-SHA256 under the
//! `signing_secret` variable matches the signature header (`sha256=<hex>`
//! or bare hex; header named by `signature_header`, GitHub's
//! `x-hub-signature-256` by default) is accepted with 200;
//! a missing or wrong signature is 401, another method 405. The comparison
//! is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::variables;

fn json(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

/// The platform's error shape.
fn error(status: u16, message: &str) -> Response {
    let reason = match status {
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    json(
        status,
        serde_json::json!({ "error": reason, "message": message, "status": status }),
    )
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    if *request.method() != Method::Post {
        return error(405, "send the webhook with POST");
    }
    // An empty key is one anyone can sign with: refused, not used.
    let Some(secret) = variables::get("signing_secret")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        return error(500, "the signing secret is not set");
    };
    let header =
        variables::get("signature_header").unwrap_or_else(|_| "x-hub-signature-256".into());
    let signature = request
        .header(&header)
        .and_then(|v| v.as_str())
        .map(|s| s.trim().trim_start_matches("sha256="))
        .and_then(decode_hex);
    let Some(signature) = signature else {
        return error(401, &format!("no valid `{header}` signature"));
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(request.body());
    if mac.verify_slice(&signature).is_err() {
        return error(401, "the signature does not match the body");
    }
    let event = serde_json::from_slice::<serde_json::Value>(request.body()).ok();
    json(
        200,
        serde_json::json!({
            "received": true,
            "bytes": request.body().len(),
            "type": event.as_ref().and_then(|e| e.get("type")).cloned(),
        }),
    )
}
