//! Postgres: the platform pool, tenants' pools, and running SQL for guests.
//!
//! The host owns every connection. Built-in route groups reach the platform
//! schema through [`PlatformSql`]; tenant SQL goes through [`TenantSql`] on a
//! pool logged in as the tenant's own role (see [`tenant`]).

pub mod decode;
pub mod embedded;
pub mod exec;
pub mod install;
pub mod json;
pub mod migrate;
pub mod notify;
pub mod pool;
pub mod sqltext;
pub mod tenant;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, Postgres};

use crate::caps::types::{ErrorKind, SqlError, Value};
use crate::secrets::MasterKey;
use embedded::Backend;
pub use exec::Fetched;
use exec::{Limits, Scope, error};
use pool::{AcquireError, TenantPool};
pub use tenant::Tenant;

/// How long past the statement timeout the host waits for Postgres before
/// it gives the connection up for lost.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);
/// How long an abandoned transaction's rollback may wait for the statement
/// it was cut off in ([`TxConn::roll_back`]).
const ROLLBACK_WITHIN: Duration = Duration::from_secs(2);

/// Platform connections opened at start-up, so the first requests do not
/// wait for one: the two listeners (sessions, functions) take two of them
/// for good, two stay idle.
const WARM_CONNECTIONS: u32 = 4;
/// The waits before a tenant tries again a connection the server had no
/// slot left for, once another tenant's idle connection was closed for it.
const SLOT_WAITS_MS: [u64; 5] = [10, 25, 50, 100, 200];

/// Whether Postgres refused a connection because every slot it leaves
/// ordinary roles is taken (53300 also says a role or a database is at its
/// own `CONNECTION LIMIT`, which no other tenant's connection frees). By
/// the message, the code being shared: a server whose messages are in
/// another language is taken for not full.
fn server_full(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code().as_deref() == Some("53300")
        && (e.message().starts_with("sorry, too many clients")
            || e.message()
                .starts_with("remaining connection slots are reserved"))
}

/// A statement run once on each new platform connection, with its number
/// of text parameters (each given the nil UUID, which matches nothing): a
/// fresh Postgres backend loads each table's catalog entries the first
/// time a statement names it and its indexes and statistics the first time
/// one is planned, and sqlx describes each statement once per connection;
/// a few milliseconds that would otherwise land on the first requests after
/// a start (a session check, a function lookup).
pub type WarmStatement = (&'static str, usize);

/// What warm statements are run with.
const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// How long a platform connection may sit idle before it is pinged on reuse.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub platform_max_connections: u32,
    pub tenant_max_connections: u32,
    pub acquire_timeout: Duration,
    pub tenant_idle_timeout: Duration,
    /// The server is the embedded Postgres, on this machine and the host's
    /// to manage: the processes serving the host's connections are then
    /// scheduled as batch work ([`embedded::schedule_backend`]).
    pub local_server: bool,
}

/// The server process behind `conn`.
async fn backend_pid(conn: &mut PgConnection) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
}

/// The database: connections, limits, and the key tenant passwords derive from.
pub struct Db {
    platform: PgPool,
    options: PgConnectOptions,
    database: String,
    tenants: Mutex<HashMap<String, Arc<TenantPool>>>,
    /// Tenants this host has made sure exist.
    provisioned: Mutex<std::collections::HashSet<String>>,
    types: decode::TypeCache,
    limits: Limits,
    key: MasterKey,
    pools: PoolConfig,
    /// Whether tenants are kept from session-level advisory locks
    /// (migration 0011); until known, assume not.
    session_locks_revoked: AtomicBool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Connection counts, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub platform_size: u32,
    pub platform_idle: usize,
    pub tenant_pools: usize,
    pub tenant_size: u32,
}

impl Db {
    /// Connects the platform pool. `options` name the server, the database
    /// and the platform role.
    pub async fn connect(
        options: PgConnectOptions,
        pools: PoolConfig,
        limits: Limits,
        key: MasterKey,
        warm: &'static [WarmStatement],
    ) -> anyhow::Result<Arc<Self>> {
        let database = options
            .get_database()
            .context("the database URL names no database")?
            .to_owned();
        // Statements are never logged: the SQL the host renders can hold
        // parameter values (hashes, digests, user data).
        let options = options.disable_statement_logging();
        let local_server = pools.local_server;
        let platform = PgPoolOptions::new()
            .max_connections(pools.platform_max_connections)
            .acquire_timeout(pools.acquire_timeout)
            // sqlx pings a connection before handing it out by default: a
            // round trip before every platform query. Only one idle for a
            // while is worth it (Postgres may have restarted meanwhile).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if local_server {
                        embedded::schedule_backend(backend_pid(conn).await?, Backend::Request);
                    }
                    for (statement, params) in warm {
                        let mut query = sqlx::query(*statement);
                        for _ in 0..*params {
                            query = query.bind(NIL_UUID);
                        }
                        // Before the tables exist (a first start) this fails,
                        // harmlessly: the connection is only colder.
                        if let Err(error) = query.fetch_optional(&mut *conn).await {
                            tracing::debug!(%error, "warming a platform connection");
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(
                options
                    .clone()
                    .application_name("zatabase")
                    .options(exec::SESSION_SETTINGS)
                    .options([("search_path", "zatabase, extensions, public")]),
            )
            .await
            .context("connecting to Postgres")?;
        Ok(Arc::new(Self {
            platform,
            options,
            database,
            tenants: Mutex::new(HashMap::new()),
            provisioned: Mutex::new(std::collections::HashSet::new()),
            types: decode::TypeCache::default(),
            limits,
            key,
            pools,
            session_locks_revoked: AtomicBool::new(false),
        }))
    }

    /// Opens `WARM_CONNECTIONS` platform connections ahead of the first
    /// requests (after the migrations, so their warm-up finds the tables),
    /// and leaves them idle in the pool.
    pub async fn warm_up(&self) {
        let mut held = Vec::new();
        for _ in 0..WARM_CONNECTIONS.min(self.pools.platform_max_connections) {
            match self.platform.acquire().await {
                Ok(conn) => held.push(conn),
                Err(error) => {
                    tracing::warn!(%error, "opening a platform connection ahead of requests");
                    break;
                }
            }
        }
    }

    /// Fails with a clear message when the server lacks pgvector.
    pub async fn check_pgvector(&self) -> anyhow::Result<()> {
        let available: Option<(String,)> = sqlx::query_as(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'",
        )
        .fetch_optional(&self.platform)
        .await?;
        if available.is_none() {
            bail!(
                "this Postgres server has no pgvector extension; Zatabase needs it. Install \
                 pgvector on the server (see https://github.com/pgvector/pgvector), or unset \
                 DATABASE_URL to use the embedded Postgres, which ships it"
            );
        }
        Ok(())
    }

    /// Applies the platform's migrations (schema `zatabase`).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        migrate::run(&self.platform).await?;
        self.check_master_key().await?;
        // Whether migration 0011 took: if tenants can still take
        // session-level advisory locks, each request releases them first.
        let revoked: bool = sqlx::query_scalar(
            "SELECT NOT has_function_privilege('public', 'pg_catalog.pg_advisory_lock(bigint)', 'EXECUTE')
                AND NOT has_function_privilege('public', 'pg_catalog.pg_try_advisory_lock(bigint)', 'EXECUTE')",
        )
        .fetch_one(&self.platform)
        .await?;
        if !revoked {
            tracing::warn!(
                "tenants can take session-level advisory locks on this server (the platform role could not revoke them): each request releases them first"
            );
        }
        self.session_locks_revoked.store(revoked, Ordering::Relaxed);
        Ok(())
    }

    /// Refuses a master key other than the one this database was set up
    /// with (recorded by the first host to start; see migration 0015).
    async fn check_master_key(&self) -> anyhow::Result<()> {
        let check = self.key.derive("master-key-check");
        sqlx::query(
            "INSERT INTO zatabase.installation (master_key_check) VALUES ($1)
             ON CONFLICT (only_row) DO NOTHING",
        )
        .bind(&check)
        .execute(&self.platform)
        .await?;
        let recorded: String =
            sqlx::query_scalar("SELECT master_key_check FROM zatabase.installation")
                .fetch_one(&self.platform)
                .await?;
        anyhow::ensure!(
            recorded == check,
            "this database was set up with another master key: functions' secrets and tenants' \
             passwords derive from it. Start with the key it was set up with \
             (ZATABASE_MASTER_KEY, or master.key in the data directory)"
        );
        Ok(())
    }

    /// Whether every migration the binary knows is applied.
    pub async fn migrations_applied(&self) -> anyhow::Result<bool> {
        migrate::all_applied(&self.platform).await
    }

    /// Whether Postgres answers.
    pub async fn ping(&self) -> bool {
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&self.platform),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Creates a tenant's schema and roles if missing.
    pub async fn provision(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let mut conn = self.platform.acquire().await?;
        tenant::provision(
            &mut conn,
            tenant,
            &self.tenant_password(tenant),
            &self.database,
            self.pools.tenant_max_connections * 4,
        )
        .await
        .with_context(|| format!("provisioning tenant `{}`", tenant.key))
    }

    /// Provisions a tenant the first time this host acts in it (creating
    /// its schema and roles is idempotent, so a racing host is harmless).
    pub async fn ensure_tenant(&self, tenant: &Tenant) -> anyhow::Result<()> {
        let known = self
            .provisioned
            .lock()
            .expect("provisioned set poisoned")
            .contains(&tenant.key);
        if !known {
            self.provision(tenant).await?;
            self.provisioned
                .lock()
                .expect("provisioned set poisoned")
                .insert(tenant.key.clone());
        }
        Ok(())
    }

    fn tenant_password(&self, tenant: &Tenant) -> String {
        self.key
            .derive(&format!("postgres-login:{}", tenant.login_role))
    }

    /// The pool logged in as the tenant's role, created on first use. Its
    /// connections start with the output formats, the statement timeout and
    /// the tenant's `search_path` as their session defaults, which is what
    /// `RESET ALL` returns to before every request.
    fn tenant_pool(&self, tenant: &Tenant) -> Arc<TenantPool> {
        let mut pools = self.tenants.lock().expect("tenant pool map poisoned");
        pools
            .entry(tenant.key.clone())
            .or_insert_with(|| {
                let search_path = format!("\"{}\", extensions", tenant.schema);
                let timeout = format!("{}ms", self.limits.statement_timeout.as_millis());
                TenantPool::new(
                    self.options
                        .clone()
                        .application_name("zatabase-tenant")
                        // A tenant's tables change under any statement (a
                        // `DO` block, a function): a prepared description
                        // kept on the connection could outlive its table's
                        // shape. Its statements go over the simple protocol
                        // anyway; nothing worth caching is prepared here.
                        .statement_cache_capacity(0)
                        .username(&tenant.login_role)
                        .password(&self.tenant_password(tenant))
                        .options(exec::SESSION_SETTINGS)
                        .options([
                            ("search_path", search_path.as_str()),
                            ("statement_timeout", timeout.as_str()),
                            // A tenant's notices (`RAISE NOTICE`, `WARNING`)
                            // have no reader: not sent (and never logged,
                            // `init_logging`), whatever it sets for itself.
                            ("client_min_messages", "error"),
                        ]),
                    self.pools.tenant_max_connections,
                    self.pools.acquire_timeout,
                    self.pools.tenant_idle_timeout,
                    self.pools.local_server,
                )
            })
            .clone()
    }

    /// Closes the longest-idle connection of a tenant other than `except`
    /// (for a tenant the server has no slot left for); whether there was
    /// one.
    async fn close_idle_elsewhere(&self, except: &str) -> bool {
        let oldest = {
            let pools = self.tenants.lock().expect("tenant pool map poisoned");
            pools
                .iter()
                .filter(|(key, _)| key.as_str() != except)
                .filter_map(|(_, pool)| Some((pool.oldest_idle()?, pool.clone())))
                .min_by_key(|(since, _)| *since)
                .map(|(_, pool)| pool)
        };
        match oldest {
            Some(pool) => pool.close_oldest_idle().await,
            None => false,
        }
    }

    /// Closes tenant connections idle past their timeout.
    pub fn sweep_idle(&self) {
        let pools: Vec<_> = self
            .tenants
            .lock()
            .expect("tenant pool map poisoned")
            .values()
            .cloned()
            .collect();
        for pool in pools {
            pool.sweep();
        }
    }

    pub fn stats(&self) -> PoolStats {
        let pools = self.tenants.lock().expect("tenant pool map poisoned");
        PoolStats {
            platform_size: self.platform.size(),
            platform_idle: self.platform.num_idle(),
            tenant_pools: pools.len(),
            tenant_size: pools.values().map(|p| p.size()).sum(),
        }
    }

    /// The platform pool, for the host's own queries.
    pub fn platform_pool(&self) -> &PgPool {
        &self.platform
    }

    /// A platform connection of its own, for a background writer; on the
    /// embedded Postgres its server process runs as [`Backend::Background`].
    pub async fn background_connection(&self) -> sqlx::Result<PgConnection> {
        let mut conn = PgConnection::connect_with(
            &self
                .options
                .clone()
                .application_name("zatabase-background")
                .options([("search_path", "zatabase, extensions, public")]),
        )
        .await?;
        if self.pools.local_server {
            embedded::schedule_backend(backend_pid(&mut conn).await?, Backend::Background);
        }
        Ok(conn)
    }

    /// Closes every pool. Queries still running (a request cut off at its
    /// deadline leaves one behind) get a few seconds; Postgres's own shutdown
    /// ends the rest.
    pub async fn close(&self) {
        if tokio::time::timeout(Duration::from_secs(3), self.close_pools())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy at shutdown; leaving them to Postgres");
        }
    }

    async fn close_pools(&self) {
        for pool in self
            .tenants
            .lock()
            .expect("tenant pool map poisoned")
            .drain()
        {
            pool.1.close_idle();
        }
        self.platform.close().await;
    }
}

/// Runs the platform's SQL on `conn`, bounded by the statement timeout
/// plus a grace period; past it the connection is closed rather than
/// returned to the pool in an unknown state.
async fn run_platform(
    db: &Db,
    conn: &mut PoolConnection<Postgres>,
    statement: &str,
    params: &[Value],
) -> Result<Fetched, SqlError> {
    let limits = db.platform_limits();
    let work = exec::run(conn, &db.types, platform_scope(), limits, statement, params);
    match tokio::time::timeout(limits.statement_timeout + TIMEOUT_GRACE, work).await {
        Ok(result) => result,
        Err(_) => {
            conn.close_on_drop();
            Err(error(
                ErrorKind::Timeout,
                "the database did not answer in time",
            ))
        }
    }
}

/// A tenant pool's failure to hand out a connection.
fn pool_error(e: AcquireError) -> SqlError {
    match e {
        AcquireError::TimedOut => acquire_error(sqlx::Error::PoolTimedOut),
        AcquireError::Connect(e) => acquire_error(e),
    }
}

fn acquire_error(e: sqlx::Error) -> SqlError {
    match e {
        sqlx::Error::PoolTimedOut => error(
            ErrorKind::Unavailable,
            "no database connection became free in time",
        ),
        // Every slot the server leaves tenants is taken (by this host's
        // tenants, or another's), or the tenant's role has as many open as
        // it may (across hosts): load, not a fault.
        sqlx::Error::Database(e) if server_full(&*e) => error(
            ErrorKind::Unavailable,
            "the database has no connection free for another tenant now; try again shortly",
        ),
        sqlx::Error::Database(e) if e.code().as_deref() == Some("53300") => error(
            ErrorKind::Unavailable,
            "the tenant has as many database connections open as it may; try again shortly",
        ),
        other => {
            tracing::error!(error = %other, "acquiring a database connection");
            error(ErrorKind::Unavailable, "the database is unreachable")
        }
    }
}

/// SQL in one tenant, for the `sql` capability.
#[derive(Clone)]
pub struct TenantSql {
    db: Arc<Db>,
    tenant: Arc<Tenant>,
}

impl TenantSql {
    pub fn new(db: Arc<Db>, tenant: Arc<Tenant>) -> Self {
        Self { db, tenant }
    }

    /// Runs `statement`; `read_only` in a read-only transaction.
    pub async fn execute(
        &self,
        statement: &str,
        params: &[Value],
        read_only: bool,
    ) -> Result<Fetched, SqlError> {
        let mut conn = self.connect().await?;
        // Each run a transaction of its own (no transaction control gets
        // past `exec::read`): a client that hangs up mid-run leaves a
        // connection worth draining, not closing.
        conn.drain_when_abandoned();
        let scope = Scope {
            role: Some(&self.tenant.owner_role),
            // The connection's own default (see `Db::tenant_pool`).
            search_path: None,
            reset_session: true,
            release_locks: !self.db.session_locks_revoked.load(Ordering::Relaxed),
            read_only,
        };
        let limits = self.db.limits;
        let work = exec::run(&mut conn, &self.db.types, scope, limits, statement, params);
        match tokio::time::timeout(limits.statement_timeout + TIMEOUT_GRACE, work).await {
            Ok(result) => {
                // Postgres answered, with rows or with its error (one with
                // a SQLSTATE, whatever its class: a statement may raise any
                // code it likes): the connection is ready for the next
                // request. A lost socket, a result the host could not read
                // or an error Postgres ended the session with (FATAL,
                // PANIC: mapped without a SQLSTATE) says otherwise: not
                // drained either, but closed.
                let unusable = match &result {
                    Ok(fetched) => fetched.reset_failed(),
                    Err(e) => {
                        e.sqlstate.is_none()
                            && matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Internal)
                    }
                };
                if unusable {
                    conn.close_on_drop();
                } else {
                    conn.finish();
                }
                result
            }
            // Silent well past its own statement timeout: not worth a
            // drain; closed and its backend ended (see `pool::Pooled`).
            Err(_) => {
                conn.close_on_drop();
                Err(error(
                    ErrorKind::Timeout,
                    "the database did not answer in time",
                ))
            }
        }
    }
}

impl TenantSql {
    /// A connection of the tenant's pool, the tenant provisioned first.
    async fn connect(&self) -> Result<pool::Pooled, SqlError> {
        self.connect_for(false).await
    }

    /// A connection of the tenant's pool; `transaction`: for one a client
    /// may hold open, taking one of the pool's turns for those.
    async fn connect_for(&self, transaction: bool) -> Result<pool::Pooled, SqlError> {
        if let Err(e) = self.db.ensure_tenant(&self.tenant).await {
            tracing::error!(error = format!("{e:#}"), "tenant provisioning failed");
            return Err(error(
                ErrorKind::Unavailable,
                "the tenant's database is not ready",
            ));
        }
        let pool = self.db.tenant_pool(&self.tenant);
        let acquire = || async {
            if transaction {
                pool.acquire_for_transaction().await
            } else {
                pool.acquire().await
            }
        };
        let mut tries = 0;
        loop {
            match acquire().await {
                // The login role's password is not the one the host derives:
                // a tenant may change its own (`RESET ROLE; ALTER ROLE
                // CURRENT_USER PASSWORD ...`). Provisioned again, it is the
                // host's once more.
                Err(AcquireError::Connect(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("28P01") =>
                {
                    break;
                }
                // The server has no slot left for tenants: another tenant's
                // longest-idle connection gives its up. Its backend ends a
                // moment after, so the connect is tried again a few times,
                // waiting longer each time, and a second one is given up
                // only when the first was not enough.
                Err(AcquireError::Connect(sqlx::Error::Database(e)))
                    if server_full(&*e) && tries < SLOT_WAITS_MS.len() =>
                {
                    let given_up = match tries {
                        0 | 3 => self.db.close_idle_elsewhere(&self.tenant.key).await,
                        _ => false,
                    };
                    if tries == 0 && !given_up {
                        // No other tenant has one idle: nothing to wait for.
                        return Err(pool_error(AcquireError::Connect(sqlx::Error::Database(e))));
                    }
                    tokio::time::sleep(Duration::from_millis(SLOT_WAITS_MS[tries])).await;
                    tries += 1;
                }
                other => return other.map_err(pool_error),
            }
        }
        tracing::warn!(tenant = %self.tenant.key, "a tenant's login was refused; provisioning it again");
        if let Err(e) = self.db.provision(&self.tenant).await {
            tracing::error!(error = format!("{e:#}"), "tenant provisioning failed");
        }
        acquire().await.map_err(pool_error)
    }

    /// The tenant this runs in.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// An advisory lock key for the platform's own `purpose` in this
    /// tenant, for work that runs as the tenant's role. Advisory keys are
    /// one space for the whole database and tenants may take
    /// transaction-level ones, so the key is derived from the master key:
    /// no tenant can name it, and so none can hold it.
    pub fn private_lock_key(&self, purpose: &str) -> i64 {
        let derived = self
            .db
            .key
            .derive(&format!("advisory-lock:{purpose}:{}", self.tenant.schema));
        let bytes = hex::decode(&derived[..16]).expect("derive writes hex");
        i64::from_be_bytes(bytes.try_into().expect("eight bytes"))
    }

    /// A connection of the tenant's login role outside its pool, for work
    /// that outlives a request (an index build): without the statement
    /// timeout, with the configured `maintenance_work_mem`. The login role
    /// has the owner role's rights; objects meant for the tenant's SQL are
    /// created after `SET LOCAL ROLE` to the owner. Closed, never pooled,
    /// when dropped. `purpose` is its `application_name` (the host's own
    /// constant), by which its work is counted (`pg_stat_activity`).
    pub async fn dedicated(&self, purpose: &'static str) -> Result<PgConnection, SqlError> {
        if let Err(e) = self.db.ensure_tenant(&self.tenant).await {
            tracing::error!(error = format!("{e:#}"), "tenant provisioning failed");
            return Err(error(
                ErrorKind::Unavailable,
                "the tenant's database is not ready",
            ));
        }
        let mut conn = self
            .db
            .tenant_pool(&self.tenant)
            .connect_unpooled()
            .await
            .map_err(acquire_error)?;
        let settings = format!(
            "SET statement_timeout = 0; SET maintenance_work_mem = '{}MB'; SET application_name = {}",
            self.db.limits.index_build_memory_mb,
            sqltext::quote_literal(purpose).expect("the host's names hold no NUL")
        );
        conn.execute(sqlx::raw_sql(AssertSqlSafe(settings)))
            .await
            .map_err(acquire_error)?;
        Ok(conn)
    }

    /// Opens a transaction in the tenant (`read_only`: a read-only one),
    /// on a connection whose session state an earlier request may have
    /// left is cleared first. `held_by_client`: one that may stay open as
    /// long as a client takes (its request's body streams in meanwhile),
    /// which waits for one of the pool's turns for those.
    pub async fn begin(&self, read_only: bool, held_by_client: bool) -> Result<Tx, SqlError> {
        let mut conn = self.connect_for(held_by_client).await?;
        conn.execute("SELECT extensions.zatabase_reset_session()")
            .await
            .map_err(acquire_error)?;
        conn.execute("BEGIN").await.map_err(acquire_error)?;
        Ok(Tx {
            conn: Some(TxConn::Tenant(conn)),
            db: self.db.clone(),
            tenant: Some((self.tenant.clone(), read_only)),
            failed: false,
        })
    }
}

const PLATFORM_SEARCH_PATH: [&str; 2] = ["zatabase", "extensions"];

/// The most rows one platform query returns: `sql.max_rows` is the
/// operator's bound on tenants' results, not on the platform's own lists
/// (which page with `LIMIT` themselves).
const PLATFORM_MAX_ROWS: usize = 100_000;
/// Likewise for bytes: the platform's largest values are components
/// (10 MiB each).
const PLATFORM_MAX_BYTES: usize = 256 << 20;

impl Db {
    fn platform_limits(&self) -> Limits {
        Limits {
            max_rows: PLATFORM_MAX_ROWS,
            max_result_bytes: PLATFORM_MAX_BYTES,
            ..self.limits
        }
    }
}

fn platform_scope() -> Scope<'static> {
    Scope {
        role: None,
        search_path: Some(&PLATFORM_SEARCH_PATH),
        reset_session: false,
        release_locks: false,
        read_only: false,
    }
}

/// SQL in the platform schema, for the `platform-db` capability.
#[derive(Clone)]
pub struct PlatformSql {
    db: Arc<Db>,
}

impl PlatformSql {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    pub async fn execute(&self, statement: &str, params: &[Value]) -> Result<Fetched, SqlError> {
        let mut conn = self.db.platform.acquire().await.map_err(acquire_error)?;
        run_platform(&self.db, &mut conn, statement, params).await
    }

    pub async fn begin(&self) -> Result<Tx, SqlError> {
        let mut conn = self.db.platform.acquire().await.map_err(acquire_error)?;
        conn.execute("BEGIN").await.map_err(acquire_error)?;
        Ok(Tx {
            conn: Some(TxConn::Platform(conn)),
            db: self.db.clone(),
            tenant: None,
            failed: false,
        })
    }
}

/// An open transaction held across guest calls: the platform's
/// (`platform-db`) or a tenant's (`sql`).
pub struct Tx {
    /// `None` once committed or rolled back.
    conn: Option<TxConn>,
    db: Arc<Db>,
    /// The tenant, and whether the transaction is read-only; `None` for the
    /// platform's.
    tenant: Option<(Arc<Tenant>, bool)>,
    failed: bool,
}

/// A transaction's connection, from the platform pool or a tenant's.
enum TxConn {
    Platform(PoolConnection<Postgres>),
    Tenant(pool::Pooled),
}

impl TxConn {
    fn conn(&mut self) -> &mut sqlx::PgConnection {
        match self {
            Self::Platform(conn) => conn,
            Self::Tenant(conn) => conn,
        }
    }

    /// Ends the connection rather than reuse it (its state is unknown).
    fn discard(self) {
        match self {
            Self::Platform(mut conn) => conn.close_on_drop(),
            // Dropped unfinished, a tenant connection is closed.
            Self::Tenant(_) => {}
        }
    }

    /// Back to its pool: its last command completed.
    fn release(self) {
        if let Self::Tenant(mut conn) = self {
            conn.finish();
        }
    }

    /// Rolls back; the connection goes back only if that worked within
    /// [`ROLLBACK_WITHIN`]. A statement still running (its request was cut
    /// off mid-statement, and the statement may have turned its timeout
    /// off) is not waited for: the connection is closed instead, a tenant's
    /// backend ended with it (see `pool::Pooled`).
    async fn roll_back(mut self) {
        match tokio::time::timeout(ROLLBACK_WITHIN, self.conn().execute("ROLLBACK")).await {
            Ok(Ok(_)) => self.release(),
            Ok(Err(_)) => self.discard(),
            Err(_) => {
                tracing::warn!(
                    within = ?ROLLBACK_WITHIN,
                    "a transaction's rollback waited on a statement still running; its connection is closed"
                );
                self.discard();
            }
        }
    }
}

impl Tx {
    pub async fn execute(
        &mut self,
        statement: &str,
        params: &[Value],
    ) -> Result<Fetched, SqlError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(error(ErrorKind::InvalidInput, "the transaction has ended"));
        };
        let (scope, limits) = match &self.tenant {
            None => (platform_scope(), self.db.platform_limits()),
            Some((tenant, read_only)) => (
                Scope {
                    role: Some(&tenant.owner_role),
                    search_path: None,
                    reset_session: false,
                    release_locks: false,
                    read_only: *read_only,
                },
                self.db.limits,
            ),
        };
        let work = exec::run(
            conn.conn(),
            &self.db.types,
            scope,
            limits,
            statement,
            params,
        );
        let result =
            match tokio::time::timeout(limits.statement_timeout + TIMEOUT_GRACE, work).await {
                Ok(result) => result,
                Err(_) => {
                    if let Some(conn) = self.conn.take() {
                        conn.discard();
                    }
                    Err(error(
                        ErrorKind::Timeout,
                        "the database did not answer in time",
                    ))
                }
            };
        self.failed |= result.is_err();
        result
    }

    /// Commits, or rolls back and says so if a statement failed before.
    pub async fn commit(&mut self) -> Result<(), SqlError> {
        let Some(mut conn) = self.conn.take() else {
            return Err(error(ErrorKind::InvalidInput, "the transaction has ended"));
        };
        if self.failed {
            conn.roll_back().await;
            return Err(error(
                ErrorKind::InvalidInput,
                "the transaction was rolled back because a statement in it failed",
            ));
        }
        // A tenant's connection is reset as it commits (see
        // `exec::COMMIT_AND_RESET`); the platform's runs only the route
        // groups' own SQL, and keeps its prepared statements.
        let commit = match &conn {
            TxConn::Tenant(_) => exec::COMMIT_AND_RESET,
            TxConn::Platform(_) => "COMMIT",
        };
        // Statements completed, to tell a failed commit from a reset that
        // failed after it (a statement cancelled by a sibling request): the
        // latter committed, and only the connection is lost.
        let mut completed = 0;
        let outcome = {
            use futures::TryStreamExt;
            let mut stream = conn.conn().fetch_many(sqlx::raw_sql(commit));
            loop {
                match stream.try_next().await {
                    Ok(Some(sqlx::Either::Left(_))) => completed += 1,
                    Ok(Some(sqlx::Either::Right(_))) => {}
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        };
        match outcome {
            Ok(()) => {
                conn.release();
                Ok(())
            }
            Err(e) if completed > 0 => {
                tracing::warn!(error = %e, "a tenant connection's reset failed after its commit; closing it");
                conn.discard();
                Ok(())
            }
            Err(e) => {
                conn.discard();
                Err(exec::map_error(e, &exec::Positions::none()))
            }
        }
    }

    /// Rolls back unless committed; used when the guest drops the handle.
    pub async fn finish(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.roll_back().await;
        }
    }
}

impl Drop for Tx {
    /// A handle lost without `finish` (the guest trapped, the request was
    /// cut off) still must not return an open transaction to the pool.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(conn.roll_back())),
                // No runtime to roll back on (a host shutting down): the
                // connection is closed, its transaction with it.
                Err(_) => conn.discard(),
            }
        }
    }
}
