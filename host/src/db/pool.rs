//! A tenant's connections: a small LIFO pool that trusts what it knows.
//!
//! sqlx's pool pings a connection when it hands it back (and, by default,
//! before it hands it out): two extra round trips for every request, as many
//! as the request's own SQL. This pool skips them because the host knows how
//! each use ended: a connection whose last run finished (with a result or
//! with Postgres's error) is put back as is; one dropped mid-run (a deadline,
//! a lost socket) is closed, unless each of its runs was a whole transaction
//! of its own: then it is drained (the run left to finish, briefly) and put
//! back, so a client that hangs up does not cost the pool a new connection
//! and its authentication. Only a connection idle for over a second is
//! pinged before reuse (Postgres may have restarted meanwhile). Connections
//! idle past the idle timeout are closed by [`TenantPool::sweep`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::embedded::{Backend, schedule_backend};

/// How long a connection may sit idle before it is pinged on reuse.
const PING_AFTER: Duration = Duration::from_secs(1);
/// How long a run whose caller went away may take to finish before its
/// backend is ended instead ([`Pooled::drain_when_abandoned`]).
const DRAIN_WITHIN: Duration = Duration::from_secs(1);

/// Why a connection could not be had.
#[derive(Debug)]
pub enum AcquireError {
    /// Every connection stayed busy past the acquire timeout.
    TimedOut,
    Connect(sqlx::Error),
}

/// An open connection and the backend process serving it.
struct Idle {
    conn: PgConnection,
    backend_pid: i32,
    since: Instant,
}

pub struct TenantPool {
    options: PgConnectOptions,
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    /// Turns for transactions a client may hold open (one begun while the
    /// request's body streams in: an ingest's): half the connections, at
    /// least one, so however slowly clients send, the tenant's other SQL
    /// always has the rest.
    transactions: Arc<Semaphore>,
    open: AtomicU32,
    acquire_timeout: Duration,
    idle_timeout: Duration,
    /// Whether its backends are scheduled as request work
    /// ([`schedule_backend`]).
    local_server: bool,
}

impl TenantPool {
    pub fn new(
        options: PgConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
        idle_timeout: Duration,
        local_server: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            transactions: Arc::new(Semaphore::new((max_connections as usize / 2).max(1))),
            open: AtomicU32::new(0),
            acquire_timeout,
            idle_timeout,
            local_server,
        })
    }

    /// A connection: the most recently used idle one, else a new one.
    pub async fn acquire(self: &Arc<Self>) -> Result<Pooled, AcquireError> {
        self.acquire_by(tokio::time::Instant::now() + self.acquire_timeout)
            .await
    }

    /// [`Self::acquire`], waiting for a free connection until `deadline`.
    async fn acquire_by(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Result<Pooled, AcquireError> {
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| AcquireError::TimedOut)?
            .expect("the semaphore is never closed");
        let (conn, backend_pid) = match self.reuse().await {
            Some(idle) => (idle.conn, idle.backend_pid),
            None => {
                let mut conn = PgConnection::connect_with(&self.options)
                    .await
                    .map_err(AcquireError::Connect)?;
                let pid = super::backend_pid(&mut conn)
                    .await
                    .map_err(AcquireError::Connect)?;
                if self.local_server {
                    schedule_backend(pid, Backend::Request);
                }
                self.open.fetch_add(1, Ordering::Relaxed);
                (conn, pid)
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            backend_pid,
            finished: false,
            drainable: false,
            pool: self.clone(),
            permit: Some(permit),
            turn: None,
        })
    }

    /// A connection for a transaction a client may hold open, once one of
    /// the pool's turns for those is free (turn and connection within the
    /// acquire timeout); the turn goes back with the connection.
    pub async fn acquire_for_transaction(self: &Arc<Self>) -> Result<Pooled, AcquireError> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let turn = tokio::time::timeout_at(deadline, self.transactions.clone().acquire_owned())
            .await
            .map_err(|_| AcquireError::TimedOut)?
            .expect("the semaphore is never closed");
        let mut pooled = self.acquire_by(deadline).await?;
        pooled.turn = Some(turn);
        Ok(pooled)
    }

    /// The most recently used idle connection still worth using. One idle
    /// for a while is pinged first: Postgres may have restarted meanwhile,
    /// and a request should not be the one to find out. Under load nothing
    /// waits that long, so nothing is pinged.
    async fn reuse(&self) -> Option<Idle> {
        loop {
            let mut candidate = {
                let mut idle = self.idle.lock().expect("pool poisoned");
                idle.pop()?
            };
            let idle_for = candidate.since.elapsed();
            if idle_for >= self.idle_timeout {
                self.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            if idle_for < PING_AFTER {
                return Some(candidate);
            }
            // Counted out however the ping ends, the acquire cancelled
            // mid-ping (its caller gone) included, unless it succeeds.
            let mut counted = Uncount(Some(&self.open));
            if candidate.conn.ping().await.is_ok() {
                counted.0 = None;
                return Some(candidate);
            }
        }
    }

    /// Puts a connection ready for its next query back, most recent last.
    fn put_back(&self, conn: PgConnection, backend_pid: i32) {
        self.idle.lock().expect("pool poisoned").push(Idle {
            conn,
            backend_pid,
            since: Instant::now(),
        });
    }

    /// Closes a connection that cannot be reused, and ends its backend:
    /// closing the socket is not enough, since Postgres notices only when
    /// it next talks to the client, and a statement can outlive the timeout
    /// (the client may have turned `statement_timeout` off for its
    /// transaction). The backend is ended from a connection of the same
    /// tenant role, which can signal its own backends and nobody else's.
    fn discard(&self, conn: PgConnection, backend_pid: i32) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        drop(conn);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let options = self.options.clone();
            runtime.spawn(async move {
                if let Err(error) = terminate(&options, backend_pid).await {
                    tracing::warn!(%error, pid = backend_pid, "ending an abandoned tenant backend");
                }
            });
        }
    }

    /// Closes connections idle past the idle timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool poisoned");
        let before = idle.len();
        idle.retain(|c| now.duration_since(c.since) < self.idle_timeout);
        self.open
            .fetch_sub((before - idle.len()) as u32, Ordering::Relaxed);
    }

    /// Closes every idle connection (those in use close when dropped).
    pub fn close_idle(&self) {
        let mut idle = self.idle.lock().expect("pool poisoned");
        self.open.fetch_sub(idle.len() as u32, Ordering::Relaxed);
        idle.clear();
    }

    /// When its longest-idle connection was put back, if it has one.
    pub fn oldest_idle(&self) -> Option<Instant> {
        let idle = self.idle.lock().expect("pool poisoned");
        idle.first().map(|c| c.since)
    }

    /// Closes its longest-idle connection, telling its backend to end, so
    /// another tenant can have the server's slot; whether it had one.
    pub async fn close_oldest_idle(&self) -> bool {
        let oldest = {
            let mut idle = self.idle.lock().expect("pool poisoned");
            if idle.is_empty() {
                return false;
            }
            idle.remove(0)
        };
        self.open.fetch_sub(1, Ordering::Relaxed);
        let _ = oldest.conn.close().await;
        true
    }

    /// A connection of the pool's role outside the pool (and its limit):
    /// for work that outlives a request. Closed when dropped.
    pub async fn connect_unpooled(&self) -> Result<PgConnection, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.options).await?;
        if self.local_server {
            schedule_backend(super::backend_pid(&mut conn).await?, Backend::Request);
        }
        Ok(conn)
    }

    /// Open connections, idle or in use.
    pub fn size(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }
}

/// A connection in use. It goes back to the pool only if [`Pooled::finish`]
/// says its last run completed, or, for one marked with
/// [`Pooled::drain_when_abandoned`], once the run it was dropped in has;
/// otherwise it is closed.
pub struct Pooled {
    conn: Option<PgConnection>,
    backend_pid: i32,
    finished: bool,
    drainable: bool,
    pool: Arc<TenantPool>,
    /// Held until the connection is back or closed (a drain included).
    permit: Option<OwnedSemaphorePermit>,
    /// A transaction's turn ([`TenantPool::acquire_for_transaction`]),
    /// given back with the connection.
    turn: Option<OwnedSemaphorePermit>,
}

impl Pooled {
    /// Postgres's process id of this connection (for `pg_terminate_backend`).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Marks the connection reusable: the last run ended with Postgres
    /// ready for the next query.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Declares that every run on this connection is a whole transaction
    /// of its own (one simple query, no transaction control of the
    /// client's), so Postgres is out of it once it has answered, or holds
    /// it aborted after an error until rolled back. Dropped mid-run (its
    /// caller went away), the connection is then drained: the run is left
    /// up to [`DRAIN_WITHIN`] to finish, and the connection goes back to the
    /// pool; a run still going after that is ended with its backend, as any
    /// other abandoned connection's.
    pub fn drain_when_abandoned(&mut self) {
        self.drainable = true;
    }

    /// Closes the connection when dropped, drained or not: its caller
    /// found it unusable (a lost socket, a reply it could not read) or
    /// stuck past any reasonable wait.
    pub fn close_on_drop(&mut self) {
        self.finished = false;
        self.drainable = false;
    }
}

impl std::ops::Deref for Pooled {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let pid = self.backend_pid;
        if self.finished {
            self.pool.put_back(conn, pid);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if self.drainable => {
                let (pool, permit) = (self.pool.clone(), self.permit.take());
                runtime.spawn(async move {
                    // Reads what the run still sends, up to its
                    // ReadyForQuery, then one Sync's. A run that ended in
                    // an error of the client's statements (a division by
                    // zero, say) has that error read first, as the ping's.
                    // One cancelled, timed out or out of resources may have
                    // been the reset after the run's commit, stopped
                    // halfway: not put back. Then the run's transaction, if
                    // its error left it aborted and the run was dropped
                    // before its rollback, is rolled back.
                    let drained = async {
                        match conn.ping().await {
                            Err(sqlx::Error::Database(e)) if may_have_stopped_a_reset(&*e) => {
                                return Err(sqlx::Error::Database(e));
                            }
                            Ok(()) | Err(sqlx::Error::Database(_)) => {}
                            Err(other) => return Err(other),
                        }
                        leave_aborted_transaction(&mut conn).await
                    };
                    match tokio::time::timeout(DRAIN_WITHIN, drained).await {
                        Ok(Ok(())) => pool.put_back(conn, pid),
                        _ => pool.discard(conn, pid),
                    }
                    drop(permit);
                });
            }
            _ => self.pool.discard(conn, pid),
        }
    }
}

/// Rolls back the transaction `conn` is in if an error aborted it (a
/// statement then fails with `25P02`); an idle connection is left as is,
/// and Postgres's log spared a warning about a `ROLLBACK` with no
/// transaction.
pub(super) async fn leave_aborted_transaction(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    match conn.execute("SELECT 1").await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("25P02") => {
            conn.execute("ROLLBACK").await.map(drop)
        }
        other => other.map(drop),
    }
}

/// Whether `error` could have ended the reset that follows a run's commit
/// (those statements fail only so), rather than only the client's
/// statements.
fn may_have_stopped_a_reset(error: &dyn sqlx::error::DatabaseError) -> bool {
    let code = error.code().unwrap_or_default();
    ["57", "53", "55", "58", "XX"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// Takes one connection off the open count when dropped, unless defused
/// (its `Option` emptied).
struct Uncount<'a>(Option<&'a AtomicU32>);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        if let Some(open) = self.0 {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn terminate(options: &PgConnectOptions, pid: i32) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    // Only if it is still there (it usually has noticed the closed socket),
    // which spares Postgres's warning about a missing process.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .execute(&mut conn)
        .await?;
    conn.close().await
}
