//! The platform's notification channels: how every host hears at once that
//! a session ended, a grant changed or a function changed.
//!
//! Postgres lets any role `NOTIFY` any channel it can name, tenants among
//! them, so a channel's name on the wire is its public name followed by a
//! secret of the database (migration 0013, in schema `zatabase`, which no
//! tenant can read). Hosts ask for those names when they start listening.

use prometheus_client::metrics::counter::Counter;
use sqlx::postgres::{PgListener, PgPool};

use crate::metrics::Metrics;

/// A session ended (payload: the session id).
pub const SESSION_ENDED: &str = "zatabase_session_ended";
/// A project's grants or an organization's members changed (payload: the
/// project or organization id).
pub const ACCESS_CHANGED: &str = "zatabase_access_changed";
/// A function's settings or active deployment changed, or it was deleted
/// (payload: the function id).
pub const FUNCTION_CHANGED: &str = "zatabase_function_changed";

/// A connection listening on some of the platform's channels.
pub struct Listener {
    listener: PgListener,
    /// Each channel: its public name, its name on the wire, and how many
    /// notifications it brought.
    channels: Vec<(&'static str, String, Counter)>,
}

impl Listener {
    /// Listens on `channels` (public names).
    pub async fn start(
        pool: &PgPool,
        channels: &[&'static str],
        metrics: &Metrics,
    ) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        let mut named = Vec::with_capacity(channels.len());
        for &channel in channels {
            let private: String = sqlx::query_scalar("SELECT zatabase.channel($1)")
                .bind(channel)
                .fetch_one(pool)
                .await?;
            listener.listen(&private).await?;
            named.push((channel, private, metrics.notifications(channel)));
        }
        Ok(Self {
            listener,
            channels: named,
        })
    }

    /// The next notification, as its channel's public name and its
    /// payload; `None` when the connection was lost (notifications may
    /// have been missed meanwhile).
    pub async fn next(&mut self) -> Result<Option<(&'static str, String)>, sqlx::Error> {
        loop {
            let Some(notification) = self.listener.try_recv().await? else {
                return Ok(None);
            };
            let Some((public, _, received)) = self
                .channels
                .iter()
                .find(|(_, private, _)| private == notification.channel())
            else {
                continue;
            };
            received.inc();
            return Ok(Some((public, notification.payload().to_owned())));
        }
    }
}
