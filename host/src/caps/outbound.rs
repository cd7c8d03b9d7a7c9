//! Outbound HTTP (`wasi:http/outgoing-handler`): a function reaches only the
//! hosts its `allowed_outbound_hosts` names; route groups reach none.
//!
//! The check is on the request's own scheme, host and port, as the host
//! will connect to them. A guest cannot widen it: `Host` is a forbidden
//! header (wasmtime's default list), a request without an authority names
//! no allowed host, and there is no `self` (Spin's CVE-2024-32980 let a
//! relative URL reach the app's own routes).

use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, with `*`
/// allowed for the scheme, the port, the whole host or its leftmost labels
/// (`*.example.com`: any subdomain, not the domain itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
    any_port: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    Subdomains(String),
}

impl AllowedHost {
    /// Parses an entry (the functions route group has checked its form).
    pub fn parse(entry: &str) -> Option<Self> {
        let (scheme, rest) = entry.split_once("://")?;
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_owned()),
            _ => return None,
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            HostPattern::Subdomains(domain.to_owned())
        } else {
            HostPattern::Exact(host)
        };
        let (port, any_port) = match port {
            Some("*") => (None, true),
            Some(port) => (Some(port.parse().ok()?), false),
            None => (None, false),
        };
        Some(Self {
            scheme,
            host,
            port,
            any_port,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        if !self.any_port && self.port.unwrap_or(default_port) != port {
            return false;
        }
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => host == exact,
            HostPattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
        }
    }
}

/// The `wasi:http` hooks of one request: its allow-list (empty: nothing).
pub struct OutboundHttp {
    pub allowed: Arc<[AllowedHost]>,
}

/// Bounds on an outbound request the guest did not bound itself, so a
/// silent peer cannot hold a request past its own timeout for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl OutboundHttp {
    fn permits(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => "https",
            Some(s) if *s == Scheme::HTTP => "http",
            _ => return false,
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = host.to_ascii_lowercase();
        self.allowed.iter().any(|a| a.allows(scheme, &host, port))
    }
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        _ = fut;
        if !self.permits(request.uri()) {
            tracing::info!(uri = %request.uri(), "outbound request denied: not an allowed host");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let mut options = options.unwrap_or_default();
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permits(entries: &[&str], uri: &str) -> bool {
        let allowed: Vec<AllowedHost> = entries
            .iter()
            .map(|e| AllowedHost::parse(e).unwrap())
            .collect();
        OutboundHttp {
            allowed: allowed.into(),
        }
        .permits(&uri.parse().unwrap())
    }

    #[test]
    fn only_named_hosts_ports_and_schemes_pass() {
        assert!(permits(
            &["https://api.example.com"],
            "https://api.example.com/v1"
        ));
        assert!(permits(
            &["https://api.example.com"],
            "https://API.example.com:443/"
        ));
        assert!(!permits(
            &["https://api.example.com"],
            "http://api.example.com/"
        ));
        assert!(!permits(
            &["https://api.example.com"],
            "https://api.example.com:8443/"
        ));
        assert!(!permits(
            &["https://api.example.com"],
            "https://api.example.com.evil.net/"
        ));
        assert!(!permits(
            &["https://api.example.com"],
            "https://evil.net/?api.example.com"
        ));
        assert!(permits(
            &["https://*.example.com"],
            "https://a.b.example.com/"
        ));
        assert!(!permits(&["https://*.example.com"], "https://example.com/"));
        assert!(!permits(
            &["https://*.example.com"],
            "https://badexample.com/"
        ));
        assert!(permits(
            &["http://127.0.0.1:8080"],
            "http://127.0.0.1:8080/x"
        ));
        assert!(!permits(
            &["http://127.0.0.1:8080"],
            "http://127.0.0.1:8081/x"
        ));
        assert!(permits(&["*://example.com:*"], "http://example.com:1234/"));
        assert!(!permits(&[], "https://example.com/"));
    }

    #[test]
    fn a_request_without_an_authority_names_no_host() {
        assert!(!permits(&["*://*:*"], "/relative/path"));
    }
}
