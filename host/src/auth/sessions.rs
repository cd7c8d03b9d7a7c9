//! Which sessions are live, checked in the database and trusted for a few
//! seconds.
//!
//! A session ends on some host (logout, switch, refresh-token reuse): that
//! host forgets it at once (`auth.forget-session`), and a trigger on
//! `zatabase.sessions` notifies every host on `zatabase_session_ended`. While
//! this host is not listening (starting, or its listener connection lost),
//! it trusts nothing and asks the database every time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPool};

const CHANNEL: &str = "zatabase_session_ended";

pub struct SessionCache {
    ttl: Duration,
    live: Mutex<HashMap<String, Instant>>,
    listening: AtomicBool,
}

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            live: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
        }
    }

    /// Whether `session` was checked live recently enough to trust.
    pub fn trusted(&self, session: &str) -> bool {
        if !self.listening.load(Ordering::Acquire) {
            return false;
        }
        self.live
            .lock()
            .expect("session cache poisoned")
            .get(session)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Records a live check; trusted until the TTL or `remaining` (the
    /// session's own lifetime), whichever is sooner.
    pub fn remember(&self, session: &str, remaining: Duration) {
        if self.ttl.is_zero() || !self.listening.load(Ordering::Acquire) {
            return;
        }
        let until = Instant::now() + self.ttl.min(remaining);
        let mut live = self.live.lock().expect("session cache poisoned");
        if live.len() > 100_000 {
            let now = Instant::now();
            live.retain(|_, until| *until > now);
        }
        live.insert(session.to_owned(), until);
    }

    pub fn forget(&self, session: &str) {
        self.live
            .lock()
            .expect("session cache poisoned")
            .remove(session);
    }

    fn forget_all(&self) {
        self.live.lock().expect("session cache poisoned").clear();
    }

    /// Listens for ended sessions until the process ends, reconnecting
    /// after a failure (and trusting nothing meanwhile).
    pub async fn listen(&self, pool: PgPool) {
        if self.ttl.is_zero() {
            return;
        }
        loop {
            match self.listen_once(&pool).await {
                Ok(()) => tracing::warn!(
                    "session listener connection lost; checking every session until it is back"
                ),
                Err(error) => {
                    tracing::warn!(%error, "session listener failed; checking every session until it is back")
                }
            }
            self.listening.store(false, Ordering::Release);
            self.forget_all();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Returns when the connection is lost (notifications may have been
    /// missed, so the caller drops the cache).
    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        self.forget_all();
        self.listening.store(true, Ordering::Release);
        while let Some(notification) = listener.try_recv().await? {
            self.forget(notification.payload());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusts_only_while_listening_and_forgets() {
        let cache = SessionCache::new(Duration::from_secs(10));
        cache.remember("s", Duration::from_secs(60));
        assert!(
            !cache.trusted("s"),
            "not listening yet: nothing is remembered"
        );
        cache.listening.store(true, Ordering::Release);
        cache.remember("s", Duration::from_secs(60));
        assert!(cache.trusted("s"));
        cache.forget("s");
        assert!(!cache.trusted("s"));
        cache.remember("short", Duration::ZERO);
        assert!(!cache.trusted("short"), "never past the session's own end");
        cache.remember("s", Duration::from_secs(60));
        cache.listening.store(false, Ordering::Release);
        assert!(!cache.trusted("s"), "a lost listener trusts nothing");
    }
}
