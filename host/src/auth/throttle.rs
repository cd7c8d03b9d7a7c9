//! Login throttling: failed attempts counted per account and per client
//! address (an IPv6 client's /64, [`crate::net::client`]) in a fixed window; past the limit, attempts are refused (429)
//! until the window ends. Counters live in this host's memory.
//!
//! An attempt counts as failed from the moment it is let through until it
//! is known to have succeeded: a check that only read the counters let any
//! number of concurrent guesses pass before the first failure was counted.
//! Accounts are keyed by a digest of the email, so a client's oversized
//! "email" costs the table 32 bytes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Past this many entries, a table drops the ones whose window has ended.
const PRUNE_PAST: usize = 100_000;

#[derive(Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug)]
pub struct LoginThrottle {
    per_account: u32,
    per_ip: u32,
    window: Duration,
    /// Accounts by sha256 of the email, and addresses; in that locking order.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    accounts: HashMap<[u8; 32], Window>,
    addresses: HashMap<IpAddr, Window>,
}

impl LoginThrottle {
    pub fn new(per_account: u32, per_ip: u32, window: Duration) -> Self {
        Self {
            per_account,
            per_ip,
            window,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Starts a login attempt for `email` from `ip`: `Err(seconds)` when
    /// either counter is exhausted, else the attempt is counted as failed
    /// until [`Self::succeeded`] says otherwise.
    pub fn begin(&self, email: &str, ip: IpAddr) -> Result<(), u32> {
        self.begin_at(email, ip, Instant::now())
    }

    /// The attempt begun for `email` from `ip` succeeded: the account's
    /// failures are forgotten, and this attempt is no failure of the address.
    pub fn succeeded(&self, email: &str, ip: IpAddr) {
        let ip = crate::net::client(ip);
        let mut counts = self.counts.lock().expect("throttle poisoned");
        counts.accounts.remove(&key(email));
        if let Some(window) = counts.addresses.get_mut(&ip) {
            window.failures = window.failures.saturating_sub(1);
        }
    }

    fn begin_at(&self, email: &str, ip: IpAddr, now: Instant) -> Result<(), u32> {
        // An IPv6 client is its /64, as for the rate limit.
        let ip = crate::net::client(ip);
        let account = key(email);
        let mut counts = self.counts.lock().expect("throttle poisoned");
        let waits = self
            .wait(counts.accounts.get(&account), self.per_account, now)
            .max(self.wait(counts.addresses.get(&ip), self.per_ip, now));
        if let Some(seconds) = waits {
            return Err(seconds);
        }
        let Counts {
            accounts,
            addresses,
        } = &mut *counts;
        self.count(accounts, account, now);
        self.count(addresses, ip, now);
        Ok(())
    }

    /// Seconds to wait, when `window` has reached `limit` failures.
    fn wait(&self, window: Option<&Window>, limit: u32, now: Instant) -> Option<u32> {
        let window = window?;
        let elapsed = now.saturating_duration_since(window.started);
        (elapsed < self.window && window.failures >= limit)
            .then(|| (self.window - elapsed).as_secs().max(1) as u32)
    }

    /// One more failure of `key` in its window (a new one if it ended).
    fn count<K: Eq + Hash>(&self, table: &mut HashMap<K, Window>, key: K, now: Instant) {
        if table.len() > PRUNE_PAST {
            table.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
        }
        let window = table.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.started) >= self.window {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

fn key(email: &str) -> [u8; 32] {
    Sha256::digest(email.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_addresses_are_throttled_separately() {
        let throttle = LoginThrottle::new(2, 3, Duration::from_secs(60));
        let (a, b) = ("a@x.io", "b@x.io");
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        assert!(throttle.begin_at(a, ip, t0).is_ok());
        assert!(throttle.begin_at(a, ip, t0).is_ok());
        assert!(
            throttle.begin_at(a, other, t0).is_err(),
            "the account is throttled"
        );
        assert!(throttle.begin_at(b, other, t0).is_ok());
        assert!(throttle.begin_at(b, ip, t0).is_ok());
        assert!(
            throttle.begin_at("c@x.io", ip, t0).is_err(),
            "the address is throttled"
        );
        let later = t0 + Duration::from_secs(61);
        assert!(throttle.begin_at(a, ip, later).is_ok(), "windows end");
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let throttle = LoginThrottle::new(5, 3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3u16 {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            assert!(throttle.begin_at(&format!("{i}@x.io"), ip, t0).is_ok());
        }
        let same_network: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(throttle.begin_at("z@x.io", same_network, t0).is_err());
        let next_network: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(throttle.begin_at("z@x.io", next_network, t0).is_ok());
        // A success from another address of the /64 takes one off it.
        throttle.succeeded("0@x.io", same_network);
        assert!(throttle.begin_at("y@x.io", same_network, t0).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_until_they_succeed() {
        let throttle = LoginThrottle::new(3, 6, Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        // Three concurrent guesses, none finished: the fourth waits.
        for _ in 0..3 {
            assert!(throttle.begin_at("a@x.io", ip, t0).is_ok());
        }
        assert!(throttle.begin_at("a@x.io", ip, t0).is_err());
        // A success forgets the account's failures and is none of the
        // address's.
        throttle.succeeded("a@x.io", ip);
        for _ in 0..3 {
            assert!(throttle.begin_at("a@x.io", ip, t0).is_ok());
        }
        for n in 0..3 {
            assert_eq!(
                throttle.begin_at(&format!("{n}@x.io"), ip, t0).is_ok(),
                n < 1,
                "the address has 5 failures (a success took one off), then 6"
            );
        }
    }

    #[test]
    fn an_oversized_email_is_kept_as_a_digest() {
        let throttle = LoginThrottle::new(1, 10, Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let long = "a".repeat(1 << 20);
        assert!(throttle.begin(&long, ip).is_ok());
        assert!(throttle.begin(&long, ip).is_err());
        assert!(throttle.begin(&long[1..], ip).is_ok());
    }
}
