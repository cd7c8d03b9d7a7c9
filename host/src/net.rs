//! Sets of IP addresses, as the configuration names them, and the client
//! a request's address stands for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A set of addresses named in the configuration: `private`, or a CIDR
/// block (`10.0.0.0/8`, `fd00::/8`, a single address). What no function's
/// outbound request reaches (`functions.blocked_networks`); the proxies whose
/// `X-Forwarded-For` is believed (`http.trusted_proxies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Network {
    /// Loopback, RFC 1918 private, link-local (the cloud metadata address
    /// among them), shared (CGNAT), unique-local, multicast, unspecified
    /// and reserved addresses.
    Private,
    Block {
        network: IpAddr,
        prefix: u8,
    },
}

/// The client an address stands for, as the rate limit and the login
/// throttle count them: an IPv4 address (an IPv4-mapped IPv6 one
/// included), or an IPv6 address's /64, which one client usually holds
/// whole (counted per address, it would have 2^64 counters to spread its
/// requests over).
pub fn client(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text == "private" {
            return Ok(Self::Private);
        }
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.as_str(), None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is neither `private` nor an address or CIDR block"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0 to {bits}"))?,
        };
        // An IPv4 block written as IPv6 (`::ffff:10.0.0.0/104`) is that
        // IPv4 block, as the addresses it is checked against are.
        Ok(match network {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Self::Block {
                    network: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Self::Block { network, prefix },
            },
            _ => Self::Block { network, prefix },
        })
    }
}

impl Network {
    /// Whether this is a block of every address of its family (`/0`).
    pub fn is_everything(&self) -> bool {
        matches!(self, Self::Block { prefix: 0, .. })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that
        // IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (*self, ip) {
            (Self::Private, IpAddr::V4(v4)) => private_v4(v4),
            (Self::Private, IpAddr::V6(v6)) => private_v6(v6),
            (Self::Block { network, prefix }, ip) => {
                let ((width, network), (ip_width, ip)) = (bits(network), bits(ip));
                // The bits past the prefix are shifted out; nothing left to
                // differ is a match (a prefix of 0 matches every address).
                width == ip_width
                    && (network ^ ip)
                        .checked_shr(width - u32::from(prefix))
                        .unwrap_or(0)
                        == 0
            }
        }
    }
}

/// An address's width in bits, and its bits.
fn bits(ip: IpAddr) -> (u32, u128) {
    match ip {
        IpAddr::V4(v4) => (32, u32::from(v4).into()),
        IpAddr::V6(v6) => (128, v6.into()),
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b == 18 || b == 19))
        // Reserved, 240.0.0.0/4.
        || a >= 240
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local, fc00::/7; link-local, fe80::/10; site-local (old),
        // fec0::/10.
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
        // Local-use NAT64, 64:ff9b:1::/48.
        || segments[..3] == [0x64, 0xff9b, 1]
        // 6to4 (2002::/16), NAT64 (64:ff9b::/96) and IPv4-compatible
        // (::/96) addresses carry an IPv4 address.
        || (segments[0] == 0x2002 && private_v4(embedded_v4(segments[1], segments[2])))
        || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            && private_v4(embedded_v4(segments[6], segments[7])))
        || (segments[..6] == [0; 6] && private_v4(embedded_v4(segments[6], segments[7])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> Network {
        Network::try_from(text.to_owned()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn private_covers_every_internal_range_and_no_public_address() {
        let private = network("private");
        for internal in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00::1",
            "fe80::1",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
            "64:ff9b:1::8.8.8.8",
            "::7f00:1",
            "fec0::1",
        ] {
            assert!(private.contains(ip(internal)), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2002:0808:0808::",
        ] {
            assert!(!private.contains(ip(public)), "{public}");
        }
    }

    #[test]
    fn blocks_are_cidr_prefixes() {
        let block = network("203.0.113.0/24");
        assert!(block.contains(ip("203.0.113.77")));
        assert!(!block.contains(ip("203.0.114.1")));
        assert!(block.contains(ip("::ffff:203.0.113.1")));
        let mapped = network("::ffff:203.0.113.0/120");
        assert_eq!(mapped, block);
        assert!(mapped.contains(ip("203.0.113.9")));
        assert!(network("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!network("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!(network("198.51.100.7").contains(ip("198.51.100.7")));
        assert!(!network("198.51.100.7").contains(ip("198.51.100.8")));
        assert!(network("0.0.0.0/0").contains(ip("8.8.8.8")));
        for bad in [
            "",
            "local",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
        ] {
            assert!(Network::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
