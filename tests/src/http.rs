//! A plain HTTP client for tests: statuses are answers, not errors.

use std::io::Read;

use serde_json::Value;

use crate::Host;

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into()
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// Asserts the API error shape with this status, and returns the message.
    pub fn expect_error(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            self.text()
        );
        let body = self.json();
        assert_eq!(body["status"], status, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        let message = body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {body}"));
        assert!(!message.is_empty(), "{body}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error bodies are JSON"
        );
        message.to_owned()
    }
}

impl Host {
    fn http_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> ureq::http::request::Builder {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
    }

    /// Sends a request with a body (or none) and reads the whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let request = self.http_request(method, path, headers).body(body).unwrap();
        let mut response = self
            .agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Resp::read(&mut response)
    }

    /// Sends a body of unknown length (chunked).
    pub fn request_streamed(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Read + Send + 'static,
    ) -> Resp {
        self.try_request_streamed(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Host::request_streamed`], or the transport error.
    pub fn try_request_streamed(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Read + Send + 'static,
    ) -> Result<Resp, String> {
        let mut reader = body;
        let request = self
            .http_request(method, path, headers)
            .body(ureq::SendBody::from_reader(&mut reader))
            .unwrap();
        let mut response = self.agent.run(request).map_err(|e| e.to_string())?;
        Ok(Resp::read(&mut response))
    }

    /// A request with `token` as its bearer and `body`, if any, as JSON.
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("authorization", bearer.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.request(
            method,
            path,
            &headers,
            body.map(|b| serde_json::to_vec(b).unwrap())
                .unwrap_or_default(),
        )
    }

    /// A GET without credentials.
    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], Vec::new())
    }

    /// A JSON POST without credentials.
    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(body).unwrap(),
        )
    }

    /// The helpers' access token: the one set with [`Host::use_token`], or a
    /// new account's (signed up on first use).
    pub fn token(&self) -> String {
        let mut token = self.token.lock().unwrap();
        if let Some(token) = &*token {
            return token.clone();
        }
        let account = self.signup(&unique_email("tester"), "a long test password");
        *token = Some(account.access_token.clone());
        account.access_token
    }

    /// Makes the helpers act with `token`.
    pub fn use_token(&self, token: &str) {
        *self.token.lock().unwrap() = Some(token.to_owned());
    }

    /// A request with the helpers' bearer token added.
    pub fn authed(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let bearer = format!("Bearer {}", self.token());
        let mut all = headers.to_vec();
        all.push(("authorization", &bearer));
        self.request(method, path, &all, body)
    }

    /// A GET with the helpers' bearer token.
    pub fn authed_get(&self, path: &str) -> Resp {
        self.authed("GET", path, &[], Vec::new())
    }

    /// A JSON POST with the helpers' bearer token.
    pub fn authed_post(&self, path: &str, body: &Value) -> Resp {
        self.authed(
            "POST",
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(body).unwrap(),
        )
    }

    /// `POST /v1/auth/signup`, asserting it succeeds.
    pub fn signup(&self, email: &str, password: &str) -> Account {
        let response = self.post_json(
            "/v1/auth/signup",
            &serde_json::json!({ "email": email, "password": password }),
        );
        assert_eq!(response.status, 201, "signup: {}", response.text());
        Account::from(&response.json())
    }

    /// `POST /v1/sql` as the helpers' account, and the response.
    pub fn sql(&self, query: &str, params: &[Value]) -> Resp {
        self.authed_post(
            "/v1/sql",
            &serde_json::json!({ "query": query, "params": params }),
        )
    }

    /// `POST /v1/sql`, asserting success; returns the body.
    pub fn sql_ok(&self, query: &str, params: &[Value]) -> Value {
        let response = self.sql(query, params);
        assert_eq!(response.status, 200, "{query}: {}", response.text());
        response.json()
    }
}

/// What a token-issuing endpoint answered.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
    pub environment: String,
}

impl From<&Value> for Account {
    fn from(body: &Value) -> Self {
        let text = |pointer: &str| {
            body.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no {pointer} in {body}"))
                .to_owned()
        };
        Self {
            user_id: text("/user/id"),
            email: text("/user/email"),
            access_token: text("/access_token"),
            refresh_token: text("/refresh_token"),
            environment: text("/environment"),
        }
    }
}

/// An email address no other test uses.
pub fn unique_email(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}@example.com",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Resp {
    fn read(response: &mut ureq::http::Response<ureq::Body>) -> Self {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_vec()
            .unwrap_or_default();
        Self {
            status,
            headers,
            body,
        }
    }
}
