//! Which sessions are live, and what their callers may do: checked in the
//! database and trusted for a few seconds.
//!
//! A session ends on some host (logout, switch, refresh-token reuse): that
//! host forgets it at once (`auth.forget-session`), and a trigger on
//! `zatabase.sessions` notifies every host on `zatabase_session_ended`.
//! Permissions change the same way: the host that changed them forgets the
//! project's or organization's sessions (`auth.forget-access`), and triggers
//! notify every host on `zatabase_access_changed` (each channel under a
//! name no tenant can send to: `db::notify`). While this host is not
//! listening (starting, or its listener connection lost), it trusts nothing
//! and asks the database every time.
//!
//! A check read from the database before a change, and remembered after the
//! change was forgotten, would outlive it: every forget moves the cache to a
//! new generation, and a check begun in an older one is not remembered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;

use super::access::Access;
use crate::db::notify::{ACCESS_CHANGED, Listener, SESSION_ENDED};
use crate::metrics::Metrics;

/// A live session as checked: until when to trust the check, the project
/// and organization whose permission changes void it, and its access.
struct Entry {
    until: Instant,
    project: String,
    organization: String,
    access: Arc<Access>,
}

pub struct SessionCache {
    ttl: Duration,
    live: Mutex<Live>,
    listening: AtomicBool,
}

#[derive(Default)]
struct Live {
    entries: HashMap<String, Entry>,
    /// Moved on by every forget.
    generation: u64,
}

impl Live {
    fn forgetting(&mut self) -> &mut HashMap<String, Entry> {
        self.generation += 1;
        &mut self.entries
    }
}

/// When a check against the database began: see [`SessionCache::remember`].
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            live: Mutex::new(Live::default()),
            listening: AtomicBool::new(false),
        }
    }

    /// Taken before a session is read from the database, and handed to
    /// [`Self::remember`] with what was read.
    pub fn generation(&self) -> Generation {
        Generation(self.live.lock().expect("session cache poisoned").generation)
    }

    /// The access of `session`, if it was checked live recently enough to
    /// trust.
    pub fn trusted(&self, session: &str) -> Option<Arc<Access>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.live
            .lock()
            .expect("session cache poisoned")
            .entries
            .get(session)
            .filter(|entry| entry.until > Instant::now())
            .map(|entry| entry.access.clone())
    }

    /// Records a live check begun at `checked`; trusted until the TTL or
    /// `remaining` (the session's own lifetime), whichever is sooner. Not
    /// recorded if anything was forgotten since it began: it may have read
    /// what was forgotten.
    pub fn remember(
        &self,
        checked: Generation,
        session: &str,
        remaining: Duration,
        project: &str,
        organization: &str,
        access: Arc<Access>,
    ) {
        if self.ttl.is_zero() || !self.listening.load(Ordering::Acquire) {
            return;
        }
        let until = Instant::now() + self.ttl.min(remaining);
        let mut live = self.live.lock().expect("session cache poisoned");
        if live.generation != checked.0 {
            return;
        }
        let entries = &mut live.entries;
        if entries.len() > 100_000 {
            let now = Instant::now();
            entries.retain(|_, entry| entry.until > now);
        }
        entries.insert(
            session.to_owned(),
            Entry {
                until,
                project: project.to_owned(),
                organization: organization.to_owned(),
                access,
            },
        );
    }

    pub fn forget(&self, session: &str) {
        self.live
            .lock()
            .expect("session cache poisoned")
            .forgetting()
            .remove(session);
    }

    /// Forgets every session in the project or organization `scope`.
    pub fn forget_scope(&self, scope: &str) {
        self.live
            .lock()
            .expect("session cache poisoned")
            .forgetting()
            .retain(|_, entry| entry.project != scope && entry.organization != scope);
    }

    fn forget_all(&self) {
        self.live
            .lock()
            .expect("session cache poisoned")
            .forgetting()
            .clear();
    }

    /// Listens for ended sessions and changed permissions until the process
    /// ends, reconnecting after a failure (and trusting nothing meanwhile).
    pub async fn listen(&self, pool: PgPool, metrics: &Metrics) {
        if self.ttl.is_zero() {
            return;
        }
        loop {
            match self.listen_once(&pool, metrics).await {
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
    async fn listen_once(&self, pool: &PgPool, metrics: &Metrics) -> Result<(), sqlx::Error> {
        let mut listener = Listener::start(pool, &[SESSION_ENDED, ACCESS_CHANGED], metrics).await?;
        self.forget_all();
        self.listening.store(true, Ordering::Release);
        while let Some((channel, payload)) = listener.next().await? {
            match channel {
                SESSION_ENDED => self.forget(&payload),
                _ => self.forget_scope(&payload),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remember(cache: &SessionCache, session: &str, remaining: Duration) {
        let checked = cache.generation();
        cache.remember(
            checked,
            session,
            remaining,
            "p",
            "o",
            Arc::new(Access::admin()),
        );
    }

    #[test]
    fn trusts_only_while_listening_and_forgets() {
        let cache = SessionCache::new(Duration::from_secs(10));
        remember(&cache, "s", Duration::from_secs(60));
        assert!(
            cache.trusted("s").is_none(),
            "not listening yet: nothing is remembered"
        );
        cache.listening.store(true, Ordering::Release);
        remember(&cache, "s", Duration::from_secs(60));
        assert!(cache.trusted("s").is_some());
        cache.forget("s");
        assert!(cache.trusted("s").is_none());
        remember(&cache, "short", Duration::ZERO);
        assert!(
            cache.trusted("short").is_none(),
            "never past the session's own end"
        );
        remember(&cache, "s", Duration::from_secs(60));
        cache.listening.store(false, Ordering::Release);
        assert!(
            cache.trusted("s").is_none(),
            "a lost listener trusts nothing"
        );
    }

    #[test]
    fn a_change_of_permissions_voids_its_scope_only() {
        let cache = SessionCache::new(Duration::from_secs(10));
        cache.listening.store(true, Ordering::Release);
        let access = Arc::new(Access::none());
        for (session, project, organization) in
            [("a", "p1", "o1"), ("b", "p2", "o1"), ("c", "p3", "o2")]
        {
            let checked = cache.generation();
            let minute = Duration::from_secs(60);
            cache.remember(
                checked,
                session,
                minute,
                project,
                organization,
                access.clone(),
            );
        }
        cache.forget_scope("p1");
        assert!(cache.trusted("a").is_none());
        assert!(cache.trusted("b").is_some());
        cache.forget_scope("o1");
        assert!(cache.trusted("b").is_none());
        assert!(cache.trusted("c").is_some());
    }

    #[test]
    fn a_check_that_began_before_a_forget_is_not_remembered() {
        let cache = SessionCache::new(Duration::from_secs(10));
        cache.listening.store(true, Ordering::Release);
        let minute = Duration::from_secs(60);
        // Read from the database, then the permissions change and are
        // forgotten before the read is remembered: it must not be.
        let checked = cache.generation();
        cache.forget_scope("p");
        cache.remember(checked, "s", minute, "p", "o", Arc::new(Access::admin()));
        assert!(cache.trusted("s").is_none());
        let checked = cache.generation();
        cache.forget("another session");
        cache.remember(checked, "s", minute, "p", "o", Arc::new(Access::admin()));
        assert!(cache.trusted("s").is_none());
        let checked = cache.generation();
        cache.remember(checked, "s", minute, "p", "o", Arc::new(Access::admin()));
        assert!(cache.trusted("s").is_some());
    }
}
