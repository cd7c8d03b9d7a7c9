//! Fixed-window rate limits per client, with the reference's headers:
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (the
//! window's end, Unix seconds). Limits are per host process.

use std::collections::HashMap;
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

/// Counts requests per client key.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window_secs: u64,
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window_secs: u64) -> Self {
        Self {
            limit,
            window_secs,
            windows: Mutex::new(HashMap::new()),
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
        let mut windows = self.windows.lock().expect("rate limiter poisoned");
        // Forget clients whose window has passed, now and then.
        if windows.len() > 10_000 {
            windows.retain(|_, (w, _)| *w == window);
        }
        let entry = windows.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        let allowed = entry.1 < self.limit;
        if allowed {
            entry.1 += 1;
        }
        Quota {
            limit: self.limit,
            remaining: self.limit - entry.1,
            reset: (window + 1) * self.window_secs,
            allowed,
        }
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
}
