//! Sessions and refresh tokens past any use, deleted: each host sweeps
//! every hour (migration 0018 indexes what it looks for).
//!
//! - A spent refresh token is kept a day after it was spent: presented
//!   again within that day, it ends its session's family (reuse detection,
//!   `guests/auth/src/sessions.rs`); after it, it is an unknown token, as
//!   in Supabase's auth server, which keeps spent tokens as long.
//! - A session is kept three days past its expiry or its revocation; its
//!   tokens go with it.
//!
//! Rows go in batches, each its own statement, so a sweep never holds a
//! long transaction or many locks.

use std::time::Duration;

use sqlx::PgPool;

const EVERY: Duration = Duration::from_secs(3600);
const BATCH: u64 = 10_000;

/// Sweeps every [`EVERY`], until the process ends.
pub async fn run(pool: PgPool) {
    let mut every = tokio::time::interval(EVERY);
    loop {
        every.tick().await;
        match sweep(&pool).await {
            Ok((0, 0)) => {}
            Ok((tokens, sessions)) => {
                tracing::info!(
                    tokens,
                    sessions,
                    "expired sessions and spent tokens deleted"
                )
            }
            Err(error) => tracing::warn!(%error, "deleting expired sessions"),
        }
    }
}

/// One sweep: how many spent refresh tokens and ended sessions it deleted.
pub async fn sweep(pool: &PgPool) -> sqlx::Result<(u64, u64)> {
    let tokens = in_batches(
        pool,
        "DELETE FROM zatabase.refresh_tokens WHERE digest IN (
           SELECT digest FROM zatabase.refresh_tokens
           WHERE used_at < now() - interval '1 day' LIMIT $1)",
    )
    .await?;
    let sessions = in_batches(
        pool,
        "DELETE FROM zatabase.sessions WHERE id IN (
           SELECT id FROM zatabase.sessions WHERE expires_at < now() - interval '3 days'
           UNION
           SELECT id FROM zatabase.sessions WHERE revoked_at < now() - interval '3 days'
           LIMIT $1)",
    )
    .await?;
    Ok((tokens, sessions))
}

async fn in_batches(pool: &PgPool, statement: &'static str) -> sqlx::Result<u64> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(statement)
            .bind(BATCH as i64)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += done;
        if done < BATCH {
            return Ok(deleted);
        }
    }
}
