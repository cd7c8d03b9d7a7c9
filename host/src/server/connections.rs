//! Each client's share of `http.max_connections`: at most
//! `http.max_connections_per_client` open at once from one address (an
//! IPv6 client's /64, as the rate limit counts it), so that one client
//! holding idle keep-alive connections cannot take every slot. A trusted
//! proxy's connections carry many clients and are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a refusal is logged as a warning (the rest at debug): a proxy
/// left out of `http.trusted_proxies` is one client, and its operator
/// should hear of it.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The connections open by each client (only those with one open: the
/// map holds at most `http.max_connections` entries).
#[derive(Debug)]
pub struct PerClient {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    warned: Mutex<Option<Instant>>,
}

/// One of a client's connections, counted until dropped.
#[derive(Debug)]
pub struct Held {
    owner: Arc<PerClient>,
    client: IpAddr,
}

impl PerClient {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::new(HashMap::new()),
            warned: Mutex::new(None),
        })
    }

    /// A connection from `peer`, unless it has its share open already.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Option<Held> {
        let client = crate::net::client(peer);
        let mut open = self.open.lock().expect("connections poisoned");
        let count = open.entry(client).or_default();
        if *count >= self.limit {
            drop(open);
            self.refused(peer);
            return None;
        }
        *count += 1;
        Some(Held {
            owner: self.clone(),
            client,
        })
    }
}

impl PerClient {
    fn refused(&self, peer: IpAddr) {
        let mut warned = self.warned.lock().expect("connections poisoned");
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                client = %peer,
                limit = self.limit,
                "a client's connection refused: it holds http.max_connections_per_client \
                 (a proxy? list it in http.trusted_proxies)"
            );
        } else {
            tracing::debug!(client = %peer, "connection refused: http.max_connections_per_client reached");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("connections poisoned");
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_its_share_and_gets_it_back() {
        let per_client = PerClient::new(2);
        let one: IpAddr = "203.0.113.9".parse().unwrap();
        let first = per_client.take(one).unwrap();
        let _second = per_client.take(one).unwrap();
        assert!(per_client.take(one).is_none());
        // Another client is not held back; the same written as IPv6 is.
        assert!(per_client.take("203.0.113.10".parse().unwrap()).is_some());
        assert!(
            per_client
                .take("::ffff:203.0.113.9".parse().unwrap())
                .is_none()
        );
        drop(first);
        assert!(per_client.take(one).is_some());
        // One /64 is one client.
        let a = per_client.take("2001:db8::1".parse().unwrap()).unwrap();
        let _b = per_client.take("2001:db8::2".parse().unwrap()).unwrap();
        assert!(per_client.take("2001:db8::ffff".parse().unwrap()).is_none());
        assert!(
            per_client
                .take("2001:db8:0:1::1".parse().unwrap())
                .is_some()
        );
        drop(a);
        assert!(per_client.take("2001:db8::3".parse().unwrap()).is_some());
    }

    #[test]
    fn nothing_stays_counted_once_closed() {
        let per_client = PerClient::new(5);
        let held: Vec<Held> = (0..5u8)
            .map(|i| per_client.take(IpAddr::from([198, 51, 100, i])).unwrap())
            .collect();
        assert_eq!(per_client.open.lock().unwrap().len(), 5);
        drop(held);
        assert!(per_client.open.lock().unwrap().is_empty());
    }
}
