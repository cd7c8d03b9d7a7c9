//! `zatabase:platform/indexes`: HNSW index builds that outlive the request
//! that starts them.
//!
//! `build-hnsw` records the build in the tenant's `zatabase_indexes` table
//! (one row per table and column) and returns; a host task then runs
//! `CREATE INDEX CONCURRENTLY ... USING hnsw` on a connection of the
//! tenant's own role, outside its pool and without the statement timeout.
//! A second connection of the same role reads the build's progress from
//! `pg_stat_progress_create_index` every [`HEARTBEAT`] and writes it to the
//! row with a heartbeat; the row ends `ready` or `failed` with Postgres's
//! reason. A host that dies mid-build leaves a row whose heartbeat stops:
//! readers treat one older than [`STALE_AFTER_SECS`] as failed, and the next
//! build of the column drops what it left behind.
//!
//! Postgres keeps the tenant's boundaries here as everywhere: every
//! statement runs as the tenant's role on names quoted into its schema.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor, Row};
use wasmtime::component::{HasSelf, Linker};

use super::sql::SqlState;
use super::types::{ErrorKind, SqlError};
use super::zatabase::platform::indexes::{self, HnswBuild, Metric};
use super::zatabase::platform::session::{Action, Resource};
use crate::auth::access::denial;
use crate::db::exec::{Positions, error, map_error};
use crate::db::tenant::ident;
use crate::db::{Tenant, TenantSql};
use crate::dispatch::HostState;

/// How often a running build reports progress and that it is alive.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// A `building` row whose heartbeat is older than this lost its host (the
/// collections route group reads it the same way).
pub const STALE_AFTER_SECS: u32 = 30;

/// Builds one tenant may run at once (each takes cores and memory).
const MAX_BUILDS_PER_TENANT: i64 = 2;

/// The `application_name` of a build's connection and of its watcher's:
/// running builds are counted by their connections, which the tenant
/// cannot remove, rather than by rows of its table, which it can.
const BUILDING: &str = "zatabase-hnsw-build";
/// A build's connection until its registration passes the limit: one still
/// waiting for the tenant's lock is not a build running.
const PENDING: &str = "zatabase-hnsw-pending";
const WATCHING: &str = "zatabase-hnsw-watch";

/// pgvector's bounds on `m` and `ef_construction`, and on the dimensions
/// an HNSW index of `vector` takes.
const M: std::ops::RangeInclusive<u32> = 2..=100;
const EF_CONSTRUCTION: std::ops::RangeInclusive<u32> = 4..=1000;

const CREATE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS {schema}.zatabase_indexes (
    table_name text NOT NULL,
    column_name text NOT NULL,
    index_name text NOT NULL,
    replaces text,
    replaces_metric text,
    metric text NOT NULL,
    m integer NOT NULL,
    ef_construction integer NOT NULL,
    status text NOT NULL CHECK (status IN ('building', 'ready', 'failed')),
    phase text,
    progress double precision NOT NULL DEFAULT 0,
    error text,
    build_id uuid NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    finished_at timestamptz,
    build_ms bigint,
    PRIMARY KEY (table_name, column_name)
);
ALTER TABLE {schema}.zatabase_indexes ADD COLUMN IF NOT EXISTS replaces_metric text";

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Self::L2 => "l2",
            Self::Cosine => "cosine",
            Self::InnerProduct => "inner_product",
        }
    }

    fn operator_class(self) -> &'static str {
        match self {
            Self::L2 => "extensions.vector_l2_ops",
            Self::Cosine => "extensions.vector_cosine_ops",
            Self::InnerProduct => "extensions.vector_ip_ops",
        }
    }
}

impl indexes::Host for SqlState {
    async fn build_hnsw(&mut self, build: HnswBuild) -> Result<(), SqlError> {
        let Some(tenant) = &self.tenant else {
            return Err(error(
                ErrorKind::PermissionDenied,
                "this request acts in no tenant",
            ));
        };
        if !self
            .access
            .allows(Resource::Vectors, Some(&build.table), Action::Write)
        {
            return Err(error(
                ErrorKind::PermissionDenied,
                denial(Resource::Vectors, Action::Write),
            ));
        }
        check(&build)?;
        // Both connections first: a build must not start without the one
        // that reports it alive.
        let mut conn = tenant.dedicated(PENDING).await?;
        let watcher = tenant.dedicated(WATCHING).await?;
        let lock = tenant.private_lock_key("indexes");
        let job = register(&mut conn, tenant.tenant(), lock, &build)
            .await
            .map_err(|e| map_error(e, &Positions::none()))??;
        tokio::spawn(run(conn, watcher, tenant.clone(), build, job));
        Ok(())
    }
}

fn invalid(message: String) -> SqlError {
    error(ErrorKind::InvalidInput, message)
}

/// What the host checks itself; the table and column are Postgres's to
/// check (a build on anything else fails with its reason).
fn check(build: &HnswBuild) -> Result<(), SqlError> {
    for name in [&build.table, &build.column] {
        if name.is_empty() || name.len() > 63 || name.contains('\0') {
            return Err(invalid(format!("`{name}` is not a Postgres name")));
        }
    }
    if !M.contains(&build.m) {
        return Err(invalid(format!(
            "`m` must be between {} and {}, got {}",
            M.start(),
            M.end(),
            build.m
        )));
    }
    if !EF_CONSTRUCTION.contains(&build.ef_construction) || build.ef_construction < 2 * build.m {
        return Err(invalid(format!(
            "`ef_construction` must be between {} and {} and at least twice `m`, got {}",
            EF_CONSTRUCTION.start(),
            EF_CONSTRUCTION.end(),
            build.ef_construction
        )));
    }
    Ok(())
}

/// A registered build: its index's name, and what it clears away.
struct Job {
    build_id: uuid::Uuid,
    index_name: String,
    /// The ready index this one replaces, dropped once this one is ready
    /// (searches use it meanwhile), and the metric it was built for.
    replaces: Option<(String, String)>,
    /// What a build that failed or lost its host may have left (an invalid
    /// index), or a replaced index whose drop failed: dropped before this
    /// build starts.
    leftover: Vec<String>,
}

/// `<table>_<column>_hnsw_<8 hex>`, within Postgres's 63 bytes.
fn index_name(table: &str, column: &str, build_id: uuid::Uuid) -> String {
    let mut stem = format!("{table}_{column}");
    let mut cut = stem.len().min(63 - "_hnsw_".len() - 8);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    stem.truncate(cut);
    let hex = build_id.simple().to_string();
    format!("{stem}_hnsw_{}", &hex[..8])
}

/// Records the build as `building`, in one transaction serialized per
/// tenant: refused while the column's build runs or the tenant runs its
/// most.
async fn register(
    conn: &mut PgConnection,
    tenant: &Tenant,
    lock: i64,
    build: &HnswBuild,
) -> Result<Result<Job, SqlError>, sqlx::Error> {
    let schema = ident(&tenant.schema);
    let mut tx = conn.begin().await?;
    // A tenant's registrations one at a time (its table may not exist
    // yet), under a key no tenant can name (`private_lock_key`).
    sqlx::query("SELECT pg_catalog.pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(&mut *tx)
        .await?;
    // The table belongs to the owner role, which the tenant's SQL acts as.
    tx.execute(sqlx::raw_sql(AssertSqlSafe(format!(
        "SET LOCAL ROLE {}",
        ident(&tenant.owner_role)
    ))))
    .await?;
    tx.execute(sqlx::raw_sql(AssertSqlSafe(
        CREATE_TABLE.replace("{schema}", &schema),
    )))
    .await?;
    let stale = format!("now() - interval '{STALE_AFTER_SECS} seconds'");
    let existing = sqlx::query(AssertSqlSafe(format!(
        "SELECT status, index_name, metric, replaces, replaces_metric,
                heartbeat_at > {stale} AS alive
         FROM {schema}.zatabase_indexes WHERE table_name = $1 AND column_name = $2"
    )))
    .bind(&build.table)
    .bind(&build.column)
    .fetch_optional(&mut *tx)
    .await?;
    let (mut replaces, mut leftover) = (None, Vec::new());
    if let Some(row) = existing {
        let status: String = row.try_get("status")?;
        let index: String = row.try_get("index_name")?;
        let metric: String = row.try_get("metric")?;
        let previous = row
            .try_get::<Option<String>, _>("replaces")?
            .zip(row.try_get::<Option<String>, _>("replaces_metric")?);
        match status.as_str() {
            "building" if row.try_get::<bool, _>("alive")? => {
                return Ok(Err(error(
                    ErrorKind::Conflict,
                    format!(
                        "an HNSW index on `{}`.`{}` is being built; wait until it is ready or failed",
                        build.table, build.column
                    ),
                )));
            }
            "ready" => {
                replaces = Some((index, metric));
                leftover.extend(previous.map(|(name, _)| name));
            }
            // Failed, or its host went away: what it left goes first; the
            // index it was to replace is still there, and still replaced.
            _ => {
                leftover.push(index);
                replaces = previous;
            }
        }
    }
    // Builds running on any host: the connections of the tenant's login
    // role that say they build, this one aside. A tenant naming its own
    // connections so only lowers its own limit.
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity
         WHERE usename = session_user AND application_name = $1
           AND pid <> pg_catalog.pg_backend_pid()",
    )
    .bind(BUILDING)
    .fetch_one(&mut *tx)
    .await?;
    if running >= MAX_BUILDS_PER_TENANT {
        return Ok(Err(error(
            ErrorKind::Conflict,
            format!(
                "{running} index builds are running in this project, the most at once; \
                 wait until one is ready or failed"
            ),
        )));
    }
    // Counted from now on, by every host, while the lock is still held
    // (a setting made in a transaction is seen at once, and undone with
    // it if it rolls back).
    tx.execute(sqlx::raw_sql(AssertSqlSafe(format!(
        "SET application_name = '{BUILDING}'"
    ))))
    .await?;
    let build_id = uuid::Uuid::new_v4();
    let index_name = index_name(&build.table, &build.column, build_id);
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {schema}.zatabase_indexes AS i
            (table_name, column_name, index_name, replaces, replaces_metric, metric, m,
             ef_construction, status, phase, progress, error, build_id, started_at, heartbeat_at,
             finished_at, build_ms)
         VALUES ($1, $2, $3, $4, $9, $5, $6, $7, 'building', 'waiting to start', 0, NULL, $8::uuid,
                 now(), now(), NULL, NULL)
         ON CONFLICT (table_name, column_name) DO UPDATE SET
            index_name = EXCLUDED.index_name, replaces = EXCLUDED.replaces,
            replaces_metric = EXCLUDED.replaces_metric,
            metric = EXCLUDED.metric, m = EXCLUDED.m, ef_construction = EXCLUDED.ef_construction,
            status = EXCLUDED.status, phase = EXCLUDED.phase, progress = 0, error = NULL,
            build_id = EXCLUDED.build_id, started_at = now(), heartbeat_at = now(),
            finished_at = NULL, build_ms = NULL"
    )))
    .bind(&build.table)
    .bind(&build.column)
    .bind(&index_name)
    .bind(replaces.as_ref().map(|(name, _)| name))
    .bind(build.metric.name())
    .bind(build.m as i32)
    .bind(build.ef_construction as i32)
    .bind(build_id.to_string())
    .bind(replaces.as_ref().map(|(_, metric)| metric))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(Job {
        build_id,
        index_name,
        replaces,
        leftover,
    }))
}

/// Runs a registered build to its end and records how it ended.
async fn run(
    mut conn: PgConnection,
    watcher: PgConnection,
    tenant: TenantSql,
    build: HnswBuild,
    job: Job,
) {
    let started = Instant::now();
    let schema = ident(&tenant.tenant().schema);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(watch(
        watcher,
        schema.clone(),
        build.clone(),
        job.build_id,
        stopped,
    ));
    let outcome = async {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
        let _ = stop.send(pid);
        for leftover in &job.leftover {
            drop_index(&mut conn, &schema, leftover).await?;
        }
        let statement = format!(
            "CREATE INDEX CONCURRENTLY {index} ON {schema}.{table} USING hnsw ({column} {class}) \
             WITH (m = {m}, ef_construction = {ef})",
            index = ident(&job.index_name),
            table = ident(&build.table),
            column = ident(&build.column),
            class = build.metric.operator_class(),
            m = build.m,
            ef = build.ef_construction,
        );
        conn.execute(sqlx::raw_sql(AssertSqlSafe(statement)))
            .await
            .map(drop)
    }
    .await;
    watcher.abort();
    let _ = watcher.await;
    let build_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let recorded = match &outcome {
        Ok(()) => {
            let marked = finish(&mut conn, &schema, &build, &job, build_ms, None).await;
            // The replaced index is forgotten only once it is gone; a drop
            // that failed is retried by the next build.
            if let Some((old, _)) = &job.replaces {
                match drop_index(&mut conn, &schema, old).await {
                    Ok(()) => {
                        if let Err(e) = forget_replaced(&mut conn, &schema, &job).await {
                            tracing::warn!(error = %e, "forgetting the replaced HNSW index");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, index = old, "dropping the replaced HNSW index")
                    }
                }
            }
            marked
        }
        Err(e) => {
            let reason = reason(e);
            tracing::info!(
                table = build.table,
                column = build.column,
                reason,
                "HNSW build failed"
            );
            // A failed concurrent build leaves an invalid index behind.
            if let Err(e) = drop_index(&mut conn, &schema, &job.index_name).await {
                tracing::warn!(error = %e, index = job.index_name, "dropping a failed HNSW index");
            }
            finish(&mut conn, &schema, &build, &job, build_ms, Some(&reason)).await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, table = build.table, column = build.column, "recording an HNSW build");
    }
    let _ = conn.close().await;
}

/// Why a build failed, in Postgres's words when it gave them.
fn reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

async fn drop_index(conn: &mut PgConnection, schema: &str, name: &str) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP INDEX CONCURRENTLY IF EXISTS {schema}.{}",
        ident(name)
    ))))
    .await
    .map(drop)
}

async fn finish(
    conn: &mut PgConnection,
    schema: &str,
    build: &HnswBuild,
    job: &Job,
    build_ms: i64,
    failure: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {schema}.zatabase_indexes SET
            status = CASE WHEN $4::text IS NULL THEN 'ready' ELSE 'failed' END,
            error = $4, phase = NULL,
            progress = CASE WHEN $4::text IS NULL THEN 1 ELSE progress END,
            finished_at = now(), heartbeat_at = now(), build_ms = $5
         WHERE table_name = $1 AND column_name = $2 AND build_id = $3::uuid"
    )))
    .bind(&build.table)
    .bind(&build.column)
    .bind(job.build_id.to_string())
    .bind(failure)
    .bind(build_ms)
    .execute(conn)
    .await
    .map(drop)
}

async fn forget_replaced(
    conn: &mut PgConnection,
    schema: &str,
    job: &Job,
) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {schema}.zatabase_indexes SET replaces = NULL, replaces_metric = NULL
         WHERE build_id = $1::uuid"
    )))
    .bind(job.build_id.to_string())
    .execute(conn)
    .await
    .map(drop)
}

/// Reports the build's phase and progress, and that it is alive, until
/// it ends. `pg_stat_progress_create_index` shows a backend's progress to
/// its own login role, which this connection is too.
async fn watch(
    mut conn: PgConnection,
    schema: String,
    build: HnswBuild,
    build_id: uuid::Uuid,
    pid: tokio::sync::oneshot::Receiver<i32>,
) {
    let Ok(pid) = pid.await else { return };
    // The heap scan is the graph's construction (each row is inserted as
    // it is read); validation, the second pass of a concurrent build, is
    // the last tenth.
    let progress = "
        SELECT phase, CASE
            WHEN phase LIKE 'building index%' THEN 0.9 * fraction
            WHEN phase LIKE 'index validation%' THEN 0.9 + 0.1 * fraction
            WHEN phase IN ('waiting for old snapshots', 'waiting for readers before marking dead',
                           'waiting for readers before dropping') THEN 1
        END AS progress
        FROM (
            SELECT phase, CASE
                WHEN blocks_total > 0 THEN blocks_done::float8 / blocks_total
                WHEN tuples_total > 0 THEN tuples_done::float8 / tuples_total
                ELSE 0
            END AS fraction
            FROM pg_stat_progress_create_index WHERE pid = $1
        ) AS p";
    let update = format!(
        "UPDATE {schema}.zatabase_indexes SET heartbeat_at = now(),
            phase = COALESCE($4, phase), progress = GREATEST(progress, COALESCE($5, 0))
         WHERE table_name = $1 AND column_name = $2 AND build_id = $3::uuid AND status = 'building'"
    );
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        ticker.tick().await;
        let beat = async {
            let (phase, fraction) = match sqlx::query(progress)
                .bind(pid)
                .fetch_optional(&mut conn)
                .await?
            {
                Some(row) => (
                    row.try_get::<Option<String>, _>("phase")?,
                    row.try_get::<Option<f64>, _>("progress")?,
                ),
                None => (None, None),
            };
            sqlx::query(AssertSqlSafe(update.as_str()))
                .bind(&build.table)
                .bind(&build.column)
                .bind(build_id.to_string())
                .bind(phase)
                .bind(fraction)
                .execute(&mut conn)
                .await
        };
        if let Err(e) = beat.await {
            tracing::warn!(error = %e, "recording an HNSW build's progress");
        }
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    indexes::add_to_linker::<HostState, HasSelf<SqlState>>(linker, |state| &mut state.sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(m: u32, ef_construction: u32) -> HnswBuild {
        HnswBuild {
            table: "items".into(),
            column: "embedding".into(),
            metric: Metric::Cosine,
            m,
            ef_construction,
        }
    }

    #[test]
    fn parameters_keep_pgvectors_bounds() {
        assert!(check(&build(16, 64)).is_ok());
        assert!(check(&build(2, 4)).is_ok());
        for (m, ef) in [(1, 64), (101, 1000), (16, 31), (16, 1001), (2, 3)] {
            assert!(check(&build(m, ef)).is_err(), "m {m} ef {ef}");
        }
        let mut nameless = build(16, 64);
        nameless.table = String::new();
        assert!(check(&nameless).is_err());
        nameless.table = "x".repeat(64);
        assert!(check(&nameless).is_err());
    }

    #[test]
    fn index_names_fit_postgres() {
        let id = uuid::Uuid::parse_str("0123abcd-0000-4000-8000-000000000000").unwrap();
        assert_eq!(
            index_name("items", "embedding", id),
            "items_embedding_hnsw_0123abcd"
        );
        let long = index_name(&"t".repeat(63), &"é".repeat(31), id);
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("_hnsw_0123abcd"), "{long}");
    }
}
