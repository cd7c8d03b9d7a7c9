//! Login and signup throttling, in fixed windows, in this host's memory:
//!
//! - failed logins of an account from one client address (an IPv6 client's
//!   /64, [`crate::net::client`]): `per_account`; from all addresses
//!   together, [`ACCOUNT_WIDE`] times that. A stranger's wrong guesses lock
//!   the account for the stranger's address, not for its owner's, until
//!   they come from many addresses;
//! - failed logins from one address, whatever the account: `per_ip`;
//! - password checks from one address, logins and signups alike, whether
//!   they succeed or not: `checks_per_ip`. Each costs a password hash, one
//!   a core at a time, so an address cannot keep the hashing busy (and
//!   other users' logins waiting) with its own accounts.
//!
//! Past a limit, attempts are refused (429) until the window ends. An
//! attempt counts as failed from the moment it is let through until it is
//! known to have succeeded: a check that only read the counters let any
//! number of concurrent guesses pass before the first failure was counted.
//! Accounts are keyed by a digest of the email, so a client's oversized
//! "email" costs the table 32 bytes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Past this many entries, a table drops the ones whose window has ended;
/// after that, once it has doubled since (so that pruning a table full of
/// live windows, as many addresses' failures make it, is not done again at
/// every count).
const PRUNE_PAST: usize = 100_000;

/// An account's failed logins from all addresses together, as a multiple of
/// those allowed from one.
pub const ACCOUNT_WIDE: u32 = 20;

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u32,
}

/// The limits, each per window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failed logins of an account from one address.
    pub per_account: u32,
    /// Failed logins from one address.
    pub per_ip: u32,
    /// Logins and signups from one address.
    pub checks_per_ip: u32,
    pub window: Duration,
}

#[derive(Debug)]
pub struct LoginThrottle {
    limits: Limits,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Failures by account (sha256 of the email) and address.
    account_from: Table<([u8; 32], IpAddr)>,
    /// Failures by account.
    accounts: Table<[u8; 32]>,
    /// Failures by address.
    failures: Table<IpAddr>,
    /// Password checks by address.
    checks: Table<IpAddr>,
}

/// Windows by key, and the size past which ended ones are dropped next.
#[derive(Debug)]
struct Table<K> {
    windows: HashMap<K, Window>,
    prune_at: usize,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            windows: HashMap::new(),
            prune_at: PRUNE_PAST,
        }
    }
}

impl<K: Eq + Hash> Table<K> {
    fn get(&self, key: &K) -> Option<&Window> {
        self.windows.get(key)
    }

    /// Drops the windows ended by `now`, when the table has grown enough.
    fn prune(&mut self, now: Instant, length: Duration) {
        if self.windows.len() > self.prune_at {
            self.windows
                .retain(|_, w| now.saturating_duration_since(w.started) < length);
            self.prune_at = (self.windows.len() * 2).max(PRUNE_PAST);
        }
    }
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Starts a login attempt for `email` from `ip`: `Err(seconds)` when a
    /// counter is exhausted, else the attempt is counted as failed until
    /// [`Self::succeeded`] says otherwise.
    pub fn begin(&self, email: &str, ip: IpAddr) -> Result<(), u32> {
        self.begin_at(email, ip, Instant::now())
    }

    /// Starts a signup from `ip`: `Err(seconds)` when the address has had
    /// its password checks.
    pub fn begin_signup(&self, ip: IpAddr) -> Result<(), u32> {
        self.begin_signup_at(ip, Instant::now())
    }

    /// The attempt begun for `email` from `ip` succeeded: the account's
    /// failures are forgotten, and this attempt is no failure of the
    /// address (it stays one of its password checks).
    pub fn succeeded(&self, email: &str, ip: IpAddr) {
        let ip = crate::net::client(ip);
        let account = key(email);
        let mut counts = self.counts.lock().expect("throttle poisoned");
        counts.accounts.windows.remove(&account);
        counts.account_from.windows.remove(&(account, ip));
        if let Some(window) = counts.failures.windows.get_mut(&ip) {
            window.count = window.count.saturating_sub(1);
        }
    }

    fn begin_at(&self, email: &str, ip: IpAddr, now: Instant) -> Result<(), u32> {
        // An IPv6 client is its /64, as for the rate limit.
        let ip = crate::net::client(ip);
        let account = key(email);
        let limits = self.limits;
        let mut counts = self.counts.lock().expect("throttle poisoned");
        let Counts {
            account_from,
            accounts,
            failures,
            checks,
        } = &mut *counts;
        let waits = [
            self.wait(account_from.get(&(account, ip)), limits.per_account, now),
            self.wait(
                accounts.get(&account),
                limits.per_account.saturating_mul(ACCOUNT_WIDE),
                now,
            ),
            self.wait(failures.get(&ip), limits.per_ip, now),
            self.wait(checks.get(&ip), limits.checks_per_ip, now),
        ];
        if let Some(seconds) = waits.into_iter().flatten().max() {
            return Err(seconds);
        }
        self.count(account_from, (account, ip), now);
        self.count(accounts, account, now);
        self.count(failures, ip, now);
        self.count(checks, ip, now);
        Ok(())
    }

    fn begin_signup_at(&self, ip: IpAddr, now: Instant) -> Result<(), u32> {
        let ip = crate::net::client(ip);
        let mut counts = self.counts.lock().expect("throttle poisoned");
        if let Some(seconds) = self.wait(counts.checks.get(&ip), self.limits.checks_per_ip, now) {
            return Err(seconds);
        }
        self.count(&mut counts.checks, ip, now);
        Ok(())
    }

    /// Seconds to wait, when `window` has reached `limit`.
    fn wait(&self, window: Option<&Window>, limit: u32, now: Instant) -> Option<u32> {
        let window = window?;
        let elapsed = now.saturating_duration_since(window.started);
        (elapsed < self.limits.window && window.count >= limit)
            .then(|| (self.limits.window - elapsed).as_secs().max(1) as u32)
    }

    /// One more of `key` in its window (a new one if it ended).
    fn count<K: Eq + Hash>(&self, table: &mut Table<K>, key: K, now: Instant) {
        let length = self.limits.window;
        table.prune(now, length);
        let window = table.windows.entry(key).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.saturating_duration_since(window.started) >= length {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        window.count += 1;
    }
}

fn key(email: &str) -> [u8; 32] {
    Sha256::digest(email.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_account: u32, per_ip: u32, checks_per_ip: u32) -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_account,
            per_ip,
            checks_per_ip,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn a_table_of_live_windows_is_not_pruned_at_every_count() {
        let length = Duration::from_secs(60);
        let t0 = Instant::now();
        let live = Window {
            started: t0,
            count: 1,
        };
        let mut table = Table::<usize>::default();
        table
            .windows
            .extend((0..=PRUNE_PAST).map(|k| (k, Window { ..live })));
        table.prune(t0, length);
        assert_eq!(table.windows.len(), PRUNE_PAST + 1, "every window lives");
        assert_eq!(
            table.prune_at,
            2 * (PRUNE_PAST + 1),
            "not looked at again soon"
        );
        table.prune(t0, length);
        assert_eq!(table.prune_at, 2 * (PRUNE_PAST + 1));
        // Past the new mark, and the windows ended: they go.
        table
            .windows
            .extend((PRUNE_PAST + 1..=2 * (PRUNE_PAST + 1)).map(|k| (k, Window { ..live })));
        table.prune(t0 + length, length);
        assert!(table.windows.is_empty());
        assert_eq!(table.prune_at, PRUNE_PAST);
    }

    #[test]
    fn accounts_and_addresses_are_throttled_separately() {
        let throttle = throttle(2, 3, 100);
        let (a, b) = ("a@x.io", "b@x.io");
        let ip: IpAddr = [10, 0, 0, 1].into();
        let owner: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        assert!(throttle.begin_at(a, ip, t0).is_ok());
        assert!(throttle.begin_at(a, ip, t0).is_ok());
        assert!(
            throttle.begin_at(a, ip, t0).is_err(),
            "the account is throttled for this address"
        );
        assert!(
            throttle.begin_at(a, owner, t0).is_ok(),
            "and not for another"
        );
        assert!(throttle.begin_at(b, ip, t0).is_ok());
        assert!(
            throttle.begin_at("c@x.io", ip, t0).is_err(),
            "the address is throttled"
        );
        let later = t0 + Duration::from_secs(61);
        assert!(throttle.begin_at(a, ip, later).is_ok(), "windows end");
    }

    #[test]
    fn an_account_guessed_at_from_many_addresses_is_throttled_for_all() {
        let throttle = throttle(1, 100, 100);
        let t0 = Instant::now();
        for n in 0..ACCOUNT_WIDE {
            let ip: IpAddr = [10, 0, 1, n as u8].into();
            assert!(throttle.begin_at("a@x.io", ip, t0).is_ok(), "{n}");
        }
        let owner: IpAddr = [10, 0, 2, 1].into();
        assert!(throttle.begin_at("a@x.io", owner, t0).is_err());
        assert!(throttle.begin_at("b@x.io", owner, t0).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let throttle = throttle(5, 3, 100);
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
        let throttle = throttle(3, 6, 100);
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
    fn logins_and_signups_share_an_addresss_password_checks() {
        let throttle = throttle(5, 20, 3);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        assert!(throttle.begin_signup_at(ip, t0).is_ok());
        assert!(throttle.begin_at("a@x.io", ip, t0).is_ok());
        throttle.succeeded("a@x.io", ip);
        assert!(throttle.begin_signup_at(ip, t0).is_ok());
        // A success took no check back.
        assert!(throttle.begin_signup_at(ip, t0).is_err());
        assert!(throttle.begin_at("a@x.io", ip, t0).is_err());
        let other: IpAddr = [10, 0, 0, 2].into();
        assert!(throttle.begin_signup_at(other, t0).is_ok());
        let later = t0 + Duration::from_secs(61);
        assert!(throttle.begin_signup_at(ip, later).is_ok(), "windows end");
    }

    #[test]
    fn an_oversized_email_is_kept_as_a_digest() {
        let throttle = throttle(1, 10, 100);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let long = "a".repeat(1 << 20);
        assert!(throttle.begin(&long, ip).is_ok());
        assert!(throttle.begin(&long, ip).is_err());
        assert!(throttle.begin(&long[1..], ip).is_ok());
    }
}
