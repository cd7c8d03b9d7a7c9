//! A function's settings: what a create or update request may say, checked
//! before anything is written.

use std::collections::BTreeMap;

use serde::Deserialize;
use zatabase_guest_kit::ApiError;
use zatabase_guest_kit::functions::Bounds;

/// `POST /v1/functions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub variables: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub allowed_outbound_hosts: Option<Vec<String>>,
}

/// `PUT /v1/functions/:id`: every field optional; `variables` and
/// `allowed_outbound_hosts` replace the old ones, `secrets` merge (a `null`
/// removes one), since secrets cannot be read back to resend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub variables: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub allowed_outbound_hosts: Option<Vec<String>>,
}

/// A function's settings, complete and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub name: String,
    pub description: String,
    pub variables: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub public: bool,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub allowed_outbound_hosts: Vec<String>,
}

const MAX_VARIABLES: usize = 100;
const MAX_VALUE_BYTES: usize = 16 * 1024;
/// The longest variable name (Spin sets none; this bounds what a function's
/// row stores and every listing returns).
const MAX_NAME_BYTES: usize = 128;
/// How a secret reaches this route group: the host seals every secret a
/// request carries before the request is dispatched here
/// (`host/src/functions/sealing.rs`), so no secret is ever held here in
/// the clear.
const SEALED: &str = "sealed:v2:";

/// The longest a sealed value of at most `MAX_VALUE_BYTES` can be: its
/// nonce and tag, in base64, after the prefix.
const MAX_SEALED_BYTES: usize = SEALED.len() + (12 + MAX_VALUE_BYTES + 16).div_ceil(3) * 4;

/// Refuses a secret value the host did not seal: it never should reach
/// here, and must never be stored.
fn check_sealed<'a>(values: impl Iterator<Item = &'a String>) -> Result<(), ApiError> {
    if values
        .into_iter()
        .any(|v| !v.starts_with(SEALED) || v.len() > MAX_SEALED_BYTES)
    {
        return Err(ApiError::internal(
            "a secret reached the route group unsealed",
        ));
    }
    Ok(())
}

impl Settings {
    pub fn from_create(request: CreateRequest, bounds: &Bounds) -> Result<Self, ApiError> {
        check_sealed(request.secrets.iter().flat_map(|s| s.values()))?;
        let settings = Self {
            name: request.name,
            description: request.description.unwrap_or_default(),
            variables: request.variables.unwrap_or_default(),
            secrets: request.secrets.unwrap_or_default(),
            public: request.public.unwrap_or(false),
            timeout_ms: request
                .timeout_ms
                .unwrap_or(u64::from(bounds.default_timeout_ms)),
            memory_mb: request
                .memory_mb
                .unwrap_or(u64::from(bounds.default_memory_mb)),
            allowed_outbound_hosts: request.allowed_outbound_hosts.unwrap_or_default(),
        };
        settings.check(bounds)?;
        Ok(settings)
    }

    /// These settings changed by `request`.
    pub fn updated(mut self, request: UpdateRequest, bounds: &Bounds) -> Result<Self, ApiError> {
        check_sealed(request.secrets.iter().flat_map(|s| s.values()).flatten())?;
        if let Some(name) = request.name {
            self.name = name;
        }
        if let Some(description) = request.description {
            self.description = description;
        }
        if let Some(variables) = request.variables {
            self.variables = variables;
        }
        for (key, value) in request.secrets.unwrap_or_default() {
            match value {
                Some(value) => self.secrets.insert(key, value),
                None => self.secrets.remove(&key),
            };
        }
        if let Some(public) = request.public {
            self.public = public;
        }
        if let Some(timeout_ms) = request.timeout_ms {
            self.timeout_ms = timeout_ms;
        }
        if let Some(memory_mb) = request.memory_mb {
            self.memory_mb = memory_mb;
        }
        if let Some(hosts) = request.allowed_outbound_hosts {
            self.allowed_outbound_hosts = hosts;
        }
        // A limit the request leaves alone is not held to a maximum the
        // operator lowered since (the host clamps it when it runs the
        // function): rotating a secret must not need a new timeout.
        let bounds = Bounds {
            max_timeout_ms: match request.timeout_ms {
                None => bounds.max_timeout_ms.max(clamp(self.timeout_ms)),
                Some(_) => bounds.max_timeout_ms,
            },
            max_memory_mb: match request.memory_mb {
                None => bounds.max_memory_mb.max(clamp(self.memory_mb)),
                Some(_) => bounds.max_memory_mb,
            },
            ..*bounds
        };
        self.check(&bounds)?;
        Ok(self)
    }

    fn check(&self, bounds: &Bounds) -> Result<(), ApiError> {
        check_name(&self.name)?;
        if self.description.chars().count() > 1000 {
            return Err(ApiError::unprocessable(
                "`description` must be at most 1000 characters",
            ));
        }
        // Postgres stores no NUL in text or jsonb.
        if self.description.contains('\0') {
            return Err(ApiError::unprocessable(
                "`description` must not contain NUL characters",
            ));
        }
        for (field, map) in [("variables", &self.variables), ("secrets", &self.secrets)] {
            if map.len() > MAX_VARIABLES {
                return Err(ApiError::unprocessable(format!(
                    "`{field}` may hold at most {MAX_VARIABLES} entries"
                )));
            }
            for (key, value) in map {
                if !variable_name(key) {
                    return Err(ApiError::unprocessable(format!(
                        "`{field}.{}`: a variable name is at most {MAX_NAME_BYTES} lower-case \
                         letters, digits and single `_`s, starting with a letter and ending \
                         with a letter or digit (Spin's rule)",
                        key.chars().take(MAX_NAME_BYTES).collect::<String>()
                    )));
                }
                // The host checked a secret's value before sealing it.
                let sealed = field == "secrets";
                if !sealed && value.len() > MAX_VALUE_BYTES {
                    return Err(ApiError::unprocessable(format!(
                        "`{field}.{key}` is longer than {MAX_VALUE_BYTES} bytes"
                    )));
                }
                if !sealed && value.contains('\0') {
                    return Err(ApiError::unprocessable(format!(
                        "`{field}.{key}` must not contain NUL characters"
                    )));
                }
            }
        }
        if let Some(both) = self
            .variables
            .keys()
            .find(|k| self.secrets.contains_key(*k))
        {
            return Err(ApiError::unprocessable(format!(
                "`{both}` is both a variable and a secret; a name can be only one"
            )));
        }
        if self.timeout_ms == 0 || self.timeout_ms > u64::from(bounds.max_timeout_ms) {
            return Err(ApiError::unprocessable(format!(
                "`timeout_ms` must be between 1 and {}",
                bounds.max_timeout_ms
            )));
        }
        if self.memory_mb == 0 || self.memory_mb > u64::from(bounds.max_memory_mb) {
            return Err(ApiError::unprocessable(format!(
                "`memory_mb` must be between 1 and {}",
                bounds.max_memory_mb
            )));
        }
        if self.allowed_outbound_hosts.len() > 50 {
            return Err(ApiError::unprocessable(
                "`allowed_outbound_hosts` may hold at most 50 entries",
            ));
        }
        for host in &self.allowed_outbound_hosts {
            check_outbound_host(host)?;
        }
        Ok(())
    }
}

/// A function name: URL-safe, 1-63 characters of `[a-z0-9_-]`, starting
/// with a letter or digit.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "`name` must be 1-63 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit",
        ))
    }
}

/// Spin's rule for a variable name (lower-case letters, digits and single
/// underscores, from a letter to a letter or digit), within a length.
fn variable_name(name: &str) -> bool {
    name.len() <= MAX_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An allowed outbound host, as Spin writes them: `scheme://host[:port]`,
/// scheme `http`, `https` or `*`, host a name, `*.`-prefixed name or `*`,
/// port a number or `*`. Nothing after the authority.
pub fn check_outbound_host(entry: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        ApiError::unprocessable(format!(
            "`allowed_outbound_hosts` entry `{entry}`: {why}; write `https://api.example.com`, \
             `https://*.example.com` or `http://localhost:8080`"
        ))
    };
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or_else(|| invalid("no scheme"))?;
    if !matches!(scheme, "http" | "https" | "*") {
        return Err(invalid("the scheme must be `http`, `https` or `*`"));
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err(invalid("only a scheme, a host and a port are allowed"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if let Some(port) = port
        && port != "*"
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(invalid("the port must be a number or `*`"));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid_name = host == "*"
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !valid_name {
        return Err(invalid("the host must be a name, `*.` and a name, or `*`"));
    }
    Ok(())
}

/// A stored limit as a bound (stored values are 32-bit).
fn clamp(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            default_timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            default_memory_mb: 64,
            max_memory_mb: 512,
            max_deployments: 100,
            max_functions: 1000,
        }
    }

    fn create(json: serde_json::Value) -> Result<Settings, ApiError> {
        Settings::from_create(serde_json::from_value(json).unwrap(), &bounds())
    }

    #[test]
    fn defaults_come_from_the_host() {
        let settings = create(serde_json::json!({"name": "hello"})).unwrap();
        assert_eq!(settings.timeout_ms, 10_000);
        assert_eq!(settings.memory_mb, 64);
        assert!(!settings.public);
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            serde_json::json!({"name": "Hello"}),
            serde_json::json!({"name": "-x"}),
            serde_json::json!({"name": "a/b"}),
            serde_json::json!({"name": ""}),
            serde_json::json!({"name": "x", "timeout_ms": 0}),
            serde_json::json!({"name": "x", "timeout_ms": 60_001}),
            serde_json::json!({"name": "x", "memory_mb": 513}),
            serde_json::json!({"name": "x", "variables": {"Key": "v"}}),
            serde_json::json!({"name": "x", "variables": {"key_": "v"}}),
            serde_json::json!({"name": "x", "variables": {"a__b": "v"}}),
            serde_json::json!({"name": "x", "variables": {("k".repeat(129)): "v"}}),
            serde_json::json!({"name": "x", "variables": {"k": "a\u{0}b"}}),
            serde_json::json!({"name": "x", "description": "a\u{0}b"}),
            serde_json::json!({"name": "x", "variables": {"k": "v"}, "secrets": {"k": "sealed:v2:s"}}),
            serde_json::json!({"name": "x", "allowed_outbound_hosts": ["example.com"]}),
            serde_json::json!({"name": "x", "allowed_outbound_hosts": ["https://example.com/path"]}),
            serde_json::json!({"name": "x", "allowed_outbound_hosts": ["ftp://example.com"]}),
            serde_json::json!({"name": "x", "allowed_outbound_hosts": ["https://example.com:0"]}),
        ] {
            let error = create(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(error.status, 422, "{bad}");
        }
    }

    #[test]
    fn outbound_hosts_in_spin_form_pass() {
        for good in [
            "https://api.example.com",
            "https://*.example.com",
            "http://localhost:8080",
            "*://example.com:*",
            "http://127.0.0.1:3000",
        ] {
            check_outbound_host(good).unwrap_or_else(|e| panic!("{good}: {}", e.message));
        }
    }

    #[test]
    fn secrets_arrive_sealed_or_not_at_all() {
        let sealed = format!("{SEALED}x");
        let settings = create(serde_json::json!({"name": "x", "secrets": {"a": sealed}})).unwrap();
        assert_eq!(settings.secrets["a"], sealed);
        assert_eq!(
            create(serde_json::json!({"name": "x", "secrets": {"a": "in the clear"}}))
                .unwrap_err()
                .status,
            500
        );
        let update: UpdateRequest =
            serde_json::from_value(serde_json::json!({"secrets": {"b": "in the clear"}})).unwrap();
        assert_eq!(settings.updated(update, &bounds()).unwrap_err().status, 500);
    }

    #[test]
    fn a_limit_left_alone_is_not_held_to_a_lowered_maximum() {
        let settings = create(serde_json::json!({"name": "x", "timeout_ms": 60_000})).unwrap();
        let lowered = Bounds {
            max_timeout_ms: 30_000,
            ..bounds()
        };
        let update =
            |json: serde_json::Value| -> UpdateRequest { serde_json::from_value(json).unwrap() };
        let kept = settings
            .clone()
            .updated(update(serde_json::json!({"description": "d"})), &lowered)
            .unwrap();
        assert_eq!(kept.timeout_ms, 60_000);
        let raised = settings.updated(update(serde_json::json!({"timeout_ms": 50_000})), &lowered);
        assert_eq!(raised.unwrap_err().status, 422);
    }

    #[test]
    fn updates_merge_secrets_and_replace_the_rest() {
        let settings = create(serde_json::json!({
            "name": "x", "variables": {"a": "1"}, "secrets": {"s": "sealed:v2:1", "t": "sealed:v2:2"}
        }))
        .unwrap();
        let update: UpdateRequest = serde_json::from_value(serde_json::json!({
            "variables": {"b": "2"}, "secrets": {"s": null, "u": "sealed:v2:3"}
        }))
        .unwrap();
        let updated = settings.updated(update, &bounds()).unwrap();
        assert_eq!(updated.variables.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(updated.secrets.keys().collect::<Vec<_>>(), ["t", "u"]);
    }
}
