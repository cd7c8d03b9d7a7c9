//! Function secrets are sealed by the host on their way in: the functions
//! route group's guest, which stores them, only ever holds them sealed.
//!
//! Three routes carry secrets: `POST /v1/functions` and
//! `PUT /v1/functions/:id` (`secrets`), and
//! `POST /v1/functions/templates/:name/install` (the template's parameters
//! marked `secret`). Before such a request is dispatched, the host reads
//! its JSON body, checks each secret value (what the guest would have
//! checked: its size, no NUL), and writes it back sealed under the caller's
//! tenant and the secret's name ([`secret_context`]). Anything else in the
//! body is the guest's to judge; a body that is not a JSON object goes on
//! untouched, for the guest to refuse.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use http::{Method, StatusCode};
use serde_json::Value;

use super::Functions;
use crate::api::ApiError;
use crate::caps::zatabase::platform::session::Principal;

/// The most bytes of one variable's or secret's value (the route group
/// checks variables to the same bound).
const MAX_VALUE_BYTES: usize = 16 * 1024;
/// The most secrets (or template parameters) a request may carry, as the
/// route group allows: checked before any is sealed, each seal costing a
/// random draw and an encryption (and growing the body several times).
const MAX_ENTRIES: usize = 100;

/// What a sealed secret is bound to: its tenant and its name. A value
/// copied into another tenant's function, or under another name, does not
/// open.
pub fn secret_context(project_id: &str, environment: &str, name: &str) -> String {
    format!(
        "function-secret\0{}\0{environment}\0{name}",
        project_id.to_ascii_lowercase()
    )
}

/// Which secrets a request to the functions route group may carry.
#[derive(Debug, PartialEq, Eq)]
pub enum Carrying {
    /// A function's settings: its `secrets`.
    Settings,
    /// An install of template `name`: its secret parameters (and any
    /// `secrets` beside them).
    Install(String),
}

/// Whether `method` on `path` (a request the functions route group will
/// answer) may carry secrets, and which. Matched loosely, so that nothing
/// the route group takes for a write of secrets escapes: any method
/// (compared without case) that may have a body, on any path; segments
/// compared percent-decoded, as the route group's router decodes them.
/// Sealing a `secrets` field of a route that takes none is harmless: the
/// route refuses the unknown field.
pub fn carrying(method: &Method, path: &str) -> Option<Carrying> {
    let method = method.as_str().to_ascii_uppercase();
    if matches!(
        method.as_str(),
        "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE"
    ) {
        return None;
    }
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s).unwrap_or_default())
        .collect();
    match segments
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["v1", "functions", "templates", name, "install"] => {
            Some(Carrying::Install((*name).to_owned()))
        }
        ["v1", "functions", ..] => Some(Carrying::Settings),
        _ => None,
    }
}

/// `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(Into::into)
}

impl Functions {
    /// `request` with every secret it carries sealed for `caller`'s tenant,
    /// or the error that a secret's value earns.
    /// The body must arrive `within` (the route group's own timeout, which
    /// bounds its reading of a body too): hyper times the head, not the
    /// body, and a body that stops coming would hold its connection for good.
    pub async fn seal_request(
        &self,
        caller: &Principal,
        carrying: Carrying,
        request: Request,
        within: Duration,
    ) -> Result<Request, ApiError> {
        let (mut parts, body) = request.into_parts();
        // The body's limit was set by the caller; crossing it answers 413.
        let bytes = tokio::time::timeout(within, axum::body::to_bytes(body, usize::MAX))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request's body did not arrive within {} ms",
                        within.as_millis()
                    ),
                )
            })?
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            })?;
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(Request::from_parts(parts, Body::from(bytes)));
        };
        let seal = |name: &str, value: &str| {
            let context = secret_context(&caller.project_id, &caller.environment, name);
            self.secrets.seal(value, &context)
        };
        // Values to seal, counted (a `null` removing a secret costs nothing,
        // and more than 100 strings are more than the merge can keep).
        for field in ["secrets", "parameters"] {
            if let Some(Value::Object(entries)) = body.get(field)
                && entries.values().filter(|v| v.is_string()).count() > MAX_ENTRIES
            {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "`{field}` may hold at most {MAX_ENTRIES} values; the host refuses more before sealing any"
                    ),
                ));
            }
        }
        let seal_settings = |body: &mut serde_json::Map<String, Value>| {
            if let Some(Value::Object(secrets)) = body.get_mut("secrets") {
                for (name, value) in secrets.iter_mut() {
                    if let Value::String(text) = value {
                        check(&format!("`secrets.{name}`"), text)?;
                        *value = Value::String(seal(name, text));
                    }
                }
            }
            Ok::<(), ApiError>(())
        };
        match carrying {
            Carrying::Settings => seal_settings(&mut body)?,
            Carrying::Install(template) => {
                seal_settings(&mut body)?;
                let secret: Vec<&str> = self
                    .templates
                    .iter()
                    .filter(|t| t.info.name == template)
                    .flat_map(|t| &t.info.parameters)
                    .filter(|p| p.secret)
                    .map(|p| p.name.as_str())
                    .collect();
                if let Some(Value::Object(parameters)) = body.get_mut("parameters") {
                    for (name, value) in parameters.iter_mut() {
                        if let (true, Value::String(text)) =
                            (secret.contains(&name.as_str()), &*value)
                        {
                            let what = format!("template `{template}`: the parameter `{name}`");
                            if text.trim().is_empty() {
                                return Err(ApiError::new(
                                    StatusCode::UNPROCESSABLE_ENTITY,
                                    format!("{what} must not be empty"),
                                ));
                            }
                            check(&what, text)?;
                            *value = Value::String(seal(name, text));
                        }
                    }
                }
            }
        }
        let sealed = serde_json::to_vec(&body).expect("a JSON value serializes");
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Ok(Request::from_parts(parts, Body::from(sealed)))
    }
}

/// What the route group checks of a variable's value, for a secret it will
/// only see sealed.
fn check(what: &str, value: &str) -> Result<(), ApiError> {
    let unprocessable = |why: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why);
    if value.len() > MAX_VALUE_BYTES {
        return Err(unprocessable(format!(
            "{what} is longer than {MAX_VALUE_BYTES} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(unprocessable(format!(
            "{what} must not contain NUL characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_that_carry_secrets() {
        let post = Method::POST;
        let method = |m: &str| Method::from_bytes(m.as_bytes()).unwrap();
        for (method, path) in [
            (post.clone(), "/v1/functions"),
            (post.clone(), "/v1/functions/"),
            (Method::PUT, "/v1/functions/abc"),
            (Method::PUT, "/v1/functions/abc/"),
            (method("put"), "/v1/functions/abc"),
            (Method::PATCH, "/v1/functions/abc"),
            (post.clone(), "/v1/functions/abc/triggers"),
            (post.clone(), "/v1//functions/abc"),
            (post.clone(), "/v1/%66unctions"),
        ] {
            assert_eq!(
                carrying(&method, path),
                Some(Carrying::Settings),
                "{method} {path}"
            );
        }
        for path in [
            "/v1/functions/templates/webhook/install",
            "/v1/functions/templates/web%68ook/install",
            "/v1/functions/templat%65s/webhook/install",
        ] {
            assert_eq!(
                carrying(&method("post"), path),
                Some(Carrying::Install("webhook".to_owned())),
                "{path}"
            );
        }
        for (method, path) in [
            (Method::GET, "/v1/functions"),
            (Method::GET, "/v1/functions/abc"),
            (method("delete"), "/v1/functions/abc"),
            (post.clone(), "/v1/sql"),
            (post.clone(), "/v1/functionsx"),
        ] {
            assert_eq!(carrying(&method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn contexts_differ_by_tenant_and_name() {
        let a = secret_context("P", "live", "key");
        assert_eq!(a, secret_context("p", "live", "key"));
        assert_ne!(a, secret_context("p", "sandbox", "key"));
        assert_ne!(a, secret_context("q", "live", "key"));
        assert_ne!(a, secret_context("p", "live", "other"));
    }
}
