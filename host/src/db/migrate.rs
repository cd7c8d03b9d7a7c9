//! The platform's versioned migrations, compiled into the binary and applied
//! at start-up into schema `zatabase` (sqlx's migrator, its table moved into
//! that schema; an advisory lock serialises hosts starting together).

use std::borrow::Cow;

use sqlx::PgPool;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Every migration, in order. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "platform",
        include_str!("../../migrations/0001_platform.sql"),
    ),
    (
        2,
        "accounts",
        include_str!("../../migrations/0002_accounts.sql"),
    ),
    (
        3,
        "session notify",
        include_str!("../../migrations/0003_session_notify.sql"),
    ),
    (
        4,
        "permissions",
        include_str!("../../migrations/0004_permissions.sql"),
    ),
    (
        5,
        "session reset",
        include_str!("../../migrations/0005_session_reset.sql"),
    ),
    (
        6,
        "functions",
        include_str!("../../migrations/0006_functions.sql"),
    ),
    (
        7,
        "function telemetry",
        include_str!("../../migrations/0007_function_telemetry.sql"),
    ),
    (
        8,
        "function triggers",
        include_str!("../../migrations/0008_function_triggers.sql"),
    ),
    (
        9,
        "telemetry without foreign keys",
        include_str!("../../migrations/0009_telemetry_without_foreign_keys.sql"),
    ),
    (
        10,
        "invocation batches",
        include_str!("../../migrations/0010_invocation_batches.sql"),
    ),
    (
        11,
        "session advisory locks",
        include_str!("../../migrations/0011_session_advisory_locks.sql"),
    ),
    (
        12,
        "platform ddl locks",
        include_str!("../../migrations/0012_platform_ddl_locks.sql"),
    ),
    (
        13,
        "private channels",
        include_str!("../../migrations/0013_private_channels.sql"),
    ),
    (
        14,
        "session families",
        include_str!("../../migrations/0014_session_families.sql"),
    ),
    (
        15,
        "master key check",
        include_str!("../../migrations/0015_master_key_check.sql"),
    ),
    (
        16,
        "telemetry prune indexes",
        include_str!("../../migrations/0016_telemetry_prune_indexes.sql"),
    ),
    (
        17,
        "invocation minutes",
        include_str!("../../migrations/0017_invocation_minutes.sql"),
    ),
    (
        18,
        "session expiry",
        include_str!("../../migrations/0018_session_expiry.sql"),
    ),
    (
        19,
        "emails nfc",
        include_str!("../../migrations/0019_emails_nfc.sql"),
    ),
    (
        20,
        "project reach",
        include_str!("../../migrations/0020_project_reach.sql"),
    ),
    (
        21,
        "refresh retry",
        include_str!("../../migrations/0021_refresh_retry.sql"),
    ),
];

const TABLE: &str = "zatabase._sqlx_migrations";

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(TABLE);
    migrator.create_schema("zatabase");
    migrator
}

pub async fn run(pool: &PgPool) -> anyhow::Result<()> {
    migrator().run(pool).await?;
    Ok(())
}

/// Whether the newest migration this binary knows has been applied.
pub async fn all_applied(pool: &PgPool) -> anyhow::Result<bool> {
    let latest = MIGRATIONS.last().map_or(0, |(v, _, _)| *v);
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM zatabase._sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    Ok(applied == Some(latest))
}
