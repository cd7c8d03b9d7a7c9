//! Outbound HTTP (`wasi:http/outgoing-handler`): a function reaches only the
//! hosts its `allowed_outbound_hosts` names; route groups reach none.
//!
//! The check is on the request's own scheme, host and port, as the host
//! will connect to them. A guest cannot widen it: `Host` is a forbidden
//! header (wasmtime's default list), a request without an authority names
//! no allowed host, and there is no `self` (Spin's CVE-2024-32980 let a
//! relative URL reach the app's own routes).
//!
//! Whatever a function's list says, the operator's `blocked_networks` (by
//! default `private`: loopback, private, link-local, shared and unique-local
//! addresses) are never reached: the name is resolved here, every address it
//! resolves to checked, and the request sent to those addresses only
//! ([`send`]), so a name that resolves elsewhere a moment later (DNS
//! rebinding) changes nothing.
//!
//! An instance has at most [`MAX_CONNECTIONS`] requests connecting and
//! waiting for their answer's head at once; more wait their turn, up to
//! [`MAX_ADMITTED`] exchanges open in all (an answer's body not yet read
//! keeps its exchange open), past which a request fails at once
//! (`connection-limit-reached`): requests fired without waiting for their
//! answers would otherwise hold sockets and tasks of the host's without
//! bound.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::net::Network;

mod send;

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

/// What every function's outbound HTTP goes through, built once: the
/// networks it never reaches, and the certificate authorities its HTTPS
/// trusts (Mozilla's, as `webpki-roots` carries them, and the operator's
/// `functions.root_certificates`).
pub struct Egress {
    blocked: Vec<Network>,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl Egress {
    pub fn new(blocked: Vec<Network>, root_certificates: &[PathBuf]) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for path in root_certificates {
            let read = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| {
                    anyhow::anyhow!("functions.root_certificates: {}: {error}", path.display())
                })?;
            anyhow::ensure!(
                !read.is_empty(),
                "functions.root_certificates: {} holds no PEM certificate",
                path.display()
            );
            for certificate in read {
                roots.add(certificate).map_err(|error| {
                    anyhow::anyhow!("functions.root_certificates: {}: {error}", path.display())
                })?;
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            blocked,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// A URI's host without the brackets an IPv6 address is written in.
fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The addresses `uri`'s host resolves to, once every one of them is
/// checked against `blocked`; a name is looked up as `tenant`'s.
async fn destinations(
    uri: &http::Uri,
    blocked: &[Network],
    within: Duration,
    tenant: &str,
) -> Result<Vec<SocketAddr>, Error> {
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = uri.host().unwrap_or_default();
    let bare = unbracketed(host);
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => lookup(bare, port, within, tenant).await?,
    };
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    if let Some(denied) = addresses
        .iter()
        .find(|address| blocked.iter().any(|network| network.contains(address.ip())))
    {
        tracing::info!(
            destination = %destination(uri),
            address = %denied.ip(),
            "outbound request denied: a blocked network"
        );
        return Err(Error::DestinationIpProhibited);
    }
    Ok(addresses)
}

/// Name lookups under way at once, host-wide. `getaddrinfo` runs on tokio's
/// blocking threads and cannot be cancelled: a lookup given up at its
/// timeout still holds its thread until the resolver gives up too (tens of
/// seconds against a name server that never answers). Bounded, the lookups
/// of functions whose names do not resolve cannot take the blocking pool
/// that password hashing, component loads and file I/O share.
const MAX_LOOKUPS: usize = 64;
static LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LOOKUPS);
/// Of those, what one tenant's functions may hold at once: a project whose
/// names never resolve waits on its own lookups, not on every tenant's.
const MAX_TENANT_LOOKUPS: usize = 16;
static TENANT_LOOKUPS: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// One of a tenant's lookups under way, until dropped.
struct TenantLookup(String);

impl TenantLookup {
    fn begin(tenant: &str) -> Option<Self> {
        let mut under_way = TENANT_LOOKUPS.lock().expect("lookups poisoned");
        let count = under_way.entry(tenant.to_owned()).or_default();
        if *count >= MAX_TENANT_LOOKUPS {
            return None;
        }
        *count += 1;
        Some(Self(tenant.to_owned()))
    }
}

impl Drop for TenantLookup {
    fn drop(&mut self) {
        let mut under_way = TENANT_LOOKUPS.lock().expect("lookups poisoned");
        if let Some(count) = under_way.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                under_way.remove(&self.0);
            }
        }
    }
}

/// The addresses `host` resolves to, within `within` (waiting for a free
/// lookup included), looked up as `tenant`'s. The lookup holds its turns
/// until it ends, even one given up.
async fn lookup(
    host: &str,
    port: u16,
    within: Duration,
    tenant: &str,
) -> Result<Vec<SocketAddr>, Error> {
    let failed = |error: String| Error::DnsError {
        rcode: Some(error),
        info_code: None,
    };
    let tenants_turn = TenantLookup::begin(tenant).ok_or_else(|| {
        failed(format!(
            "this project has {MAX_TENANT_LOOKUPS} name lookups under way already"
        ))
    })?;
    let deadline = tokio::time::Instant::now() + within;
    let permit = tokio::time::timeout_at(deadline, LOOKUPS.acquire())
        .await
        .map_err(|_| Error::DnsTimeout)?
        .map_err(|_| Error::InternalError(Some("name lookups are closed".to_owned())))?;
    let host = host.to_owned();
    let lookup = tokio::spawn(async move {
        let _held = (permit, tenants_turn);
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(Iterator::collect)
    });
    match tokio::time::timeout_at(deadline, lookup).await {
        Err(_) => Err(Error::DnsTimeout),
        Ok(Err(joined)) => Err(failed(joined.to_string())),
        Ok(Ok(resolved)) => resolved.map_err(|error| failed(error.to_string())),
    }
}

/// Bounds on an outbound request the guest did not bound itself, so a
/// silent peer cannot hold a request past its own timeout for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);

/// Requests one instance has connecting and waiting for an answer at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Exchanges one instance has open (waiting to connect, under way, or
/// answered with a body not yet read).
pub const MAX_ADMITTED: usize = 256;

/// What a log line says of a request's destination: its scheme, host and
/// port, never its path and query (a key in them is the function's secret)
/// nor user info.
fn destination(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("?");
    let host = uri.host().unwrap_or_default();
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// The `wasi:http` hooks of one instance: its allow-list (empty: nothing)
/// and, for a function, the way out (a route group has none).
pub struct OutboundHttp {
    pub allowed: Arc<[AllowedHost]>,
    pub egress: Option<Arc<Egress>>,
    /// Whose function this is (its tenant's key), for its name lookups.
    tenant: Arc<str>,
    /// Requests connecting, and exchanges open (see the module's doc).
    connections: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
}

impl OutboundHttp {
    pub fn new(allowed: Arc<[AllowedHost]>, egress: Option<Arc<Egress>>, tenant: &str) -> Self {
        Self {
            allowed,
            egress,
            tenant: Arc::from(tenant),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            admitted: Arc::new(Semaphore::new(MAX_ADMITTED)),
        }
    }

    fn permits(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        // What is reached must be exactly the host checked: no user info
        // for anything to read as the host instead.
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host();
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
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, send::Exchange), Error>> + Send>
    {
        _ = fut;
        let egress = match &self.egress {
            Some(egress) if self.permits(request.uri()) => egress.clone(),
            _ => {
                tracing::info!(
                    destination = %destination(request.uri()),
                    "outbound request denied: not an allowed host"
                );
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        let connections = self.connections.clone();
        let tenant = self.tenant.clone();
        let options = options.unwrap_or_default();
        let timeouts = send::Timeouts {
            connect: options.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            first_byte: options.first_byte_timeout.unwrap_or(RESPONSE_TIMEOUT),
            between_bytes: options.between_bytes_timeout.unwrap_or(RESPONSE_TIMEOUT),
        };
        Box::new(async move {
            let Ok(connection) = connections.acquire_owned().await else {
                return Err(Error::ConnectionLimitReached);
            };
            let uri = request.uri();
            let addresses = destinations(uri, &egress.blocked, timeouts.connect, &tenant).await?;
            let tls = match uri.scheme() == Some(&Scheme::HTTPS) {
                true => Some((
                    &egress.tls,
                    send::server_name(uri.host().unwrap_or_default())?,
                )),
                false => None,
            };
            let (response, rest) = send::send(request, &addresses, tls, timeouts).await?;
            // Connected and answered: the next request may connect. The
            // exchange stays admitted until it is over (its body read, or
            // dropped); a guest holding answers it has not read yet so
            // never stops its other requests from connecting.
            drop(connection);
            let rest: send::Exchange = Box::new(async move {
                let _admitted = admitted;
                Box::into_pin(rest).await
            });
            Ok((response, rest))
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
        OutboundHttp::new(allowed.into(), None, "t").permits(&uri.parse().unwrap())
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

    #[test]
    fn user_info_in_the_authority_is_refused() {
        assert!(permits(
            &["http://api.example.com"],
            "http://api.example.com/"
        ));
        for uri in [
            "http://x@api.example.com/",
            "http://evil:80@api.example.com/",
            "http://api.example.com:80@api.example.com/",
        ] {
            assert!(!permits(&["http://api.example.com"], uri), "{uri}");
        }
    }
}

#[cfg(test)]
mod blocked_networks {
    use super::*;

    fn network(text: &str) -> Network {
        Network::try_from(text.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn a_name_resolving_into_a_blocked_network_is_refused() {
        let blocked = [Network::Private];
        let within = Duration::from_secs(5);
        for uri in [
            "http://localhost:8080/",
            "http://127.0.0.1/",
            "http://[::1]:80/",
            "http://2130706433/",
            "https://169.254.169.254/latest/meta-data/",
        ] {
            assert!(
                matches!(
                    destinations(&uri.parse().unwrap(), &blocked, within, "t").await,
                    Err(Error::DestinationIpProhibited)
                ),
                "{uri}"
            );
        }
        // What is reached is the addresses checked, on the URI's port.
        let uri = "https://localhost:8443/x".parse().unwrap();
        let checked = destinations(&uri, &[network("203.0.113.0/24")], within, "t")
            .await
            .unwrap();
        assert!(!checked.is_empty());
        for address in checked {
            assert!(address.ip().is_loopback(), "{address}");
            assert_eq!(address.port(), 8443);
        }
        let uri = "http://[::1]/".parse().unwrap();
        assert_eq!(
            destinations(&uri, &[], within, "t").await.unwrap(),
            ["[::1]:80".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn name_lookups_wait_for_a_free_one_within_their_timeout() {
        let uri: http::Uri = "http://localhost:8080/".parse().unwrap();
        let within = Duration::from_millis(200);
        let all = LOOKUPS
            .acquire_many(u32::try_from(MAX_LOOKUPS).unwrap())
            .await
            .unwrap();
        assert!(matches!(
            destinations(&uri, &[], within, "t").await,
            Err(Error::DnsTimeout)
        ));
        // An address needs no lookup.
        let literal = "http://127.0.0.1:8080/".parse().unwrap();
        assert!(destinations(&literal, &[], within, "t").await.is_ok());
        drop(all);
        assert!(
            !destinations(&uri, &[], within, "t")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_tenant_holds_at_most_its_share_of_the_lookups() {
        let mine: Vec<_> = (0..MAX_TENANT_LOOKUPS)
            .map(|_| TenantLookup::begin("mine").unwrap())
            .collect();
        assert!(TenantLookup::begin("mine").is_none());
        let other = TenantLookup::begin("other").unwrap();
        drop(mine);
        assert!(TenantLookup::begin("mine").is_some());
        drop(other);
        assert!(!TENANT_LOOKUPS.lock().unwrap().contains_key("other"));
    }

    #[test]
    fn root_certificates_must_be_pem_certificates() {
        let dir = std::env::temp_dir().join(format!("zatabase-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = Egress::new(vec![], &[empty]).err().unwrap().to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        let missing = dir.join("missing.pem");
        let error = Egress::new(vec![], &[missing]).err().unwrap().to_string();
        assert!(error.contains("missing.pem"), "{error}");
        assert!(Egress::new(vec![Network::Private], &[]).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
