//! The client's address when the host stands behind proxies it trusts
//! (`http.trusted_proxies`): a request from one of them names its client in
//! `X-Forwarded-For`. The rate limit, the login throttle and a function's
//! `spin-client-addr` all see that address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::HeaderName;

use crate::net::Network;

/// The request's client, as [`TrustedProxies::client`] decided it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    pub fn new(networks: Vec<Network>) -> Self {
        Self(networks)
    }

    /// Whether requests from `peer` may name their client.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(peer))
    }

    /// The client of a request that `peer`, a trusted proxy, sent: walking
    /// `X-Forwarded-For` from its right end (the hop nearest this host),
    /// the first address that is not itself a trusted proxy. Anything to
    /// its left was written by that client and proves nothing. An entry
    /// that is not an address ends the walk where it stands (the last
    /// address believed is the client), as does a header that is absent.
    /// An entry may carry its client's port, as some proxies write it
    /// (`203.0.113.9:51234`, `[2001:db8::1]:443`).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        // Bytes, not text: what the client wrote on the left may be
        // anything, and must not cost the entries the proxies appended.
        let entries = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','));
        for entry in entries {
            if !self.trusts(client) {
                break;
            }
            let address = std::str::from_utf8(entry).ok().and_then(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
            });
            match address {
                Some(address) => client = address,
                None => break,
            }
        }
        match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            networks
                .iter()
                .map(|n| Network::try_from((*n).to_owned()).unwrap())
                .collect(),
        )
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let none = TrustedProxies::default();
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            none.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            some.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        // The client wrote the leftmost entry itself: it proves nothing.
        let headers = forwarded(&["1.1.1.1, 203.0.113.9, 10.0.0.7"]);
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let headers = forwarded(&["1.1.1.1", "203.0.113.9", "10.0.0.7"]);
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.9"));
        // Only proxies: the leftmost is as far as is known.
        let headers = forwarded(&["10.1.1.1, 10.0.0.7"]);
        assert_eq!(trusted.client(peer, &headers), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(trusted.client(peer, &HeaderMap::new()), peer);
        // Garbage ends the walk at the last address believed.
        let headers = forwarded(&["203.0.113.9, unknown, 10.0.0.7"]);
        assert_eq!(trusted.client(peer, &headers), ip("10.0.0.7"));
        let headers = forwarded(&["198.51.100.4:80:80"]);
        assert_eq!(trusted.client(peer, &headers), peer);
        // With the client's port, as some proxies write it.
        let headers = forwarded(&["198.51.100.4:80"]);
        assert_eq!(trusted.client(peer, &headers), ip("198.51.100.4"));
        let headers = forwarded(&["[2001:db8::1]:443, 10.0.0.7:8080"]);
        assert_eq!(trusted.client(peer, &headers), ip("2001:db8::1"));
        // What the client wrote cannot hide what the proxy appended.
        let mut headers = HeaderMap::new();
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap(),
        );
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.9"));
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.9"));
        // IPv6, and IPv4 written as IPv6.
        let headers = forwarded(&["2001:db8::1"]);
        assert_eq!(trusted.client(peer, &headers), ip("2001:db8::1"));
        let headers = forwarded(&["::ffff:203.0.113.9"]);
        assert_eq!(trusted.client(peer, &headers), ip("203.0.113.9"));
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.2"), &forwarded(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
    }
}
