//! Login throttling: failed attempts counted per account and per client
//! address in a fixed window; past the limit, attempts are refused (429)
//! until the window ends. Counters live in this host's memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    accounts: Mutex<HashMap<String, Window>>,
    addresses: Mutex<HashMap<IpAddr, Window>>,
}

impl LoginThrottle {
    pub fn new(per_account: u32, per_ip: u32, window: Duration) -> Self {
        Self {
            per_account,
            per_ip,
            window,
            accounts: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` when either counter is exhausted.
    pub fn allowed(&self, email: &str, ip: IpAddr) -> Result<(), u32> {
        self.allowed_at(email, ip, Instant::now())
    }

    /// Seconds to wait, when `window` has reached `limit` failures.
    fn wait(&self, window: Option<&Window>, limit: u32, now: Instant) -> Option<u32> {
        let window = window?;
        let elapsed = now.saturating_duration_since(window.started);
        (elapsed < self.window && window.failures >= limit)
            .then(|| (self.window - elapsed).as_secs().max(1) as u32)
    }

    fn allowed_at(&self, email: &str, ip: IpAddr, now: Instant) -> Result<(), u32> {
        let accounts = self.accounts.lock().expect("throttle poisoned");
        let account = self.wait(accounts.get(email), self.per_account, now);
        drop(accounts);
        let addresses = self.addresses.lock().expect("throttle poisoned");
        let address = self.wait(addresses.get(&ip), self.per_ip, now);
        match account.max(address) {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    pub fn record(&self, email: &str, ip: IpAddr, success: bool) {
        self.record_at(email, ip, success, Instant::now());
    }

    fn record_at(&self, email: &str, ip: IpAddr, success: bool, now: Instant) {
        let mut accounts = self.accounts.lock().expect("throttle poisoned");
        if success {
            accounts.remove(email);
            return;
        }
        let window = self.window;
        let bump = |window_entry: &mut Window| {
            if now.saturating_duration_since(window_entry.started) >= window {
                *window_entry = Window {
                    started: now,
                    failures: 0,
                };
            }
            window_entry.failures += 1;
        };
        if accounts.len() > 100_000 {
            accounts.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        bump(accounts.entry(email.to_owned()).or_insert(Window {
            started: now,
            failures: 0,
        }));
        drop(accounts);
        let mut addresses = self.addresses.lock().expect("throttle poisoned");
        if addresses.len() > 100_000 {
            addresses.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        bump(addresses.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        }));
    }
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
        throttle.record_at(a, ip, false, t0);
        assert!(throttle.allowed_at(a, ip, t0).is_ok());
        throttle.record_at(a, ip, false, t0);
        assert!(
            throttle.allowed_at(a, other, t0).is_err(),
            "the account is throttled"
        );
        assert!(throttle.allowed_at(b, other, t0).is_ok());
        throttle.record_at(b, ip, false, t0);
        assert!(
            throttle.allowed_at("c@x.io", ip, t0).is_err(),
            "the address is throttled"
        );
        assert!(throttle.allowed_at("c@x.io", other, t0).is_ok());
        let later = t0 + Duration::from_secs(61);
        assert!(throttle.allowed_at(a, ip, later).is_ok(), "windows end");
        throttle.record_at(b, other, true, t0);
        assert!(throttle.allowed_at(b, other, t0).is_ok());
    }
}
