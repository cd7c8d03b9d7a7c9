//! Fixed-window rate limits per client, with the reference's headers:
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (the
//! window's end, Unix seconds). Limits are per host process.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a client may still do in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the window resets.
    pub reset: u64,
    pub allowed: bool,
}

/// Addresses counted in one window; past it, a new address shares one of
/// [`OVERFLOW_BUCKETS`] counts (bounded memory, whatever number of addresses
/// a client has). Organizations are always counted on their own: an
/// organization takes a signup, which is rate limited itself, and a client
/// filling the table must not move them onto a shared count.
const MAX_CLIENTS: usize = 200_000;
/// How many counts addresses past [`MAX_CLIENTS`] share, picked by a keyed
/// hash: one client filling the table shares a count with a few of the
/// addresses that come after, not with all of them.
const OVERFLOW_BUCKETS: u64 = 4096;

/// Counts requests per client key.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window_secs: u64,
    counts: Mutex<Counts>,
    /// Keys the overflow buckets' hash, so no one can aim at another's.
    overflow: RandomState,
}

/// The current window's counts: every key shares the window (they are
/// fixed, from the epoch), so a new window starts them all again.
#[derive(Debug, Default)]
struct Counts {
    window: u64,
    by_key: HashMap<String, u32>,
}

impl RateLimiter {
    pub fn new(limit: u32, window_secs: u64) -> Self {
        Self {
            limit,
            window_secs,
            counts: Mutex::new(Counts::default()),
            overflow: RandomState::new(),
        }
    }

    /// Counts one request from `key` (an organization or an address) now.
    pub fn check(&self, key: String) -> Quota {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.check_at(key, now)
    }

    fn check_at(&self, key: String, now: u64) -> Quota {
        let window = now / self.window_secs;
        let mut counts = self.counts.lock().expect("rate limiter poisoned");
        if counts.window != window {
            counts.window = window;
            counts.by_key.clear();
        }
        let key = if counts.by_key.len() >= MAX_CLIENTS
            && !key.starts_with("org:")
            && !counts.by_key.contains_key(&key)
        {
            self.overflow_key(&key)
        } else {
            key
        };
        let count = counts.by_key.entry(key).or_insert(0);
        let allowed = *count < self.limit;
        if allowed {
            *count += 1;
        }
        Quota {
            limit: self.limit,
            remaining: self.limit - *count,
            reset: (window + 1) * self.window_secs,
            allowed,
        }
    }
}

impl RateLimiter {
    /// The shared count an address past [`MAX_CLIENTS`] is counted in.
    fn overflow_key(&self, key: &str) -> String {
        let bucket = self.overflow.hash_one(key) % OVERFLOW_BUCKETS;
        format!("overflow:{bucket}")
    }
}

/// The key of a client address: an IPv6 client is its /64 (one host's
/// usual allocation, which it can fill with addresses), an IPv4 one (or
/// IPv4 mapped into IPv6) its address.
pub fn address_key(address: std::net::IpAddr) -> String {
    match crate::net::client(address) {
        v4 @ std::net::IpAddr::V4(_) => format!("ip:{v4}"),
        v6 @ std::net::IpAddr::V6(_) => format!("ip:{v6}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_then_refuses_then_resets() {
        let limiter = RateLimiter::new(2, 60);
        let ip = || "ip:127.0.0.1".to_owned();
        let other = || "org:1".to_owned();
        let first = limiter.check_at(ip(), 120);
        assert_eq!(
            (first.remaining, first.reset, first.allowed),
            (1, 180, true)
        );
        assert!(limiter.check_at(ip(), 121).allowed);
        let refused = limiter.check_at(ip(), 179);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert!(limiter.check_at(other(), 130).allowed);
        assert!(limiter.check_at(ip(), 180).allowed);
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_addresses_past_the_cap_share_hashed_counts() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key(mapped), "ip:10.0.0.1");
        let limiter = RateLimiter::new(1, 60);
        for n in 0..MAX_CLIENTS {
            limiter.check_at(format!("ip:{n}"), 0);
        }
        // Two new addresses of one overflow bucket share its count; one of
        // another bucket has its own, and an organization is counted alone.
        let bucket = |key: &str| limiter.overflow_key(key);
        let first = "ip:new".to_owned();
        let (mut same, mut other) = (None, None);
        for n in 0.. {
            let key = format!("ip:new-{n}");
            if bucket(&key) == bucket(&first) {
                same.get_or_insert(key);
            } else {
                other.get_or_insert(key);
            }
            if same.is_some() && other.is_some() {
                break;
            }
        }
        assert!(limiter.check_at(first, 0).allowed);
        assert!(!limiter.check_at(same.clone().unwrap(), 0).allowed);
        assert!(limiter.check_at(other.unwrap(), 0).allowed);
        assert!(limiter.check_at("org:late".to_owned(), 0).allowed);
        assert!(!limiter.check_at("org:late".to_owned(), 0).allowed);
        assert!(limiter.check_at(same.unwrap(), 60).allowed, "a new window");
    }
}
