//! What users' functions did, for `/v1/functions/:id/logs` and `/metrics`:
//! each invocation (status, duration, cold or not) and each line a
//! function logged (stdout, stderr, `zatabase:platform/log`).
//!
//! Requests only push onto an in-memory batch; a background task writes
//! the batch every quarter second in one statement per table, so a function
//! call never waits on a write. A host keeps at most `MAX_PENDING_BYTES` of
//! unwritten lines (Postgres away, a function logging without pause) and
//! drops the rest, counting them in its log. Rows older than seven days are
//! pruned.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sqlx::PgPool;

use crate::caps::zatabase::platform::log::Level;

const FLUSH_EVERY: Duration = Duration::from_millis(250);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const MAX_PENDING_BYTES: usize = 8 << 20;
const MAX_PENDING_INVOCATIONS: usize = 100_000;

#[derive(Default)]
struct Pending {
    invocations: Vec<Invocation>,
    logs: Vec<Line>,
    log_bytes: usize,
    dropped: u64,
}

struct Invocation {
    function_id: String,
    request_id: String,
    status: i16,
    duration_us: i64,
    cold: bool,
    at: SystemTime,
}

struct Line {
    function_id: String,
    request_id: String,
    level: &'static str,
    message: String,
    at: SystemTime,
}

#[derive(Default)]
pub struct Telemetry {
    pending: Mutex<Pending>,
}

impl Telemetry {
    /// A line the function `function_id` logged while serving `request_id`.
    pub fn log(&self, function_id: &str, request_id: &str, level: Level, message: &str) {
        let mut pending = self.pending.lock().expect("telemetry poisoned");
        if pending.log_bytes + message.len() > MAX_PENDING_BYTES {
            pending.dropped += 1;
            return;
        }
        pending.log_bytes += message.len();
        pending.logs.push(Line {
            function_id: function_id.to_owned(),
            request_id: request_id.to_owned(),
            level: match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            },
            message: message.to_owned(),
            at: SystemTime::now(),
        });
    }

    /// One call of the function `function_id`, answered with `status`.
    pub fn invocation(
        &self,
        function_id: &str,
        request_id: &str,
        status: u16,
        duration: Duration,
        cold: bool,
    ) {
        let mut pending = self.pending.lock().expect("telemetry poisoned");
        if pending.invocations.len() >= MAX_PENDING_INVOCATIONS {
            pending.dropped += 1;
            return;
        }
        pending.invocations.push(Invocation {
            function_id: function_id.to_owned(),
            request_id: request_id.to_owned(),
            status: i16::try_from(status).unwrap_or(i16::MAX),
            duration_us: i64::try_from(duration.as_micros()).unwrap_or(i64::MAX),
            cold,
            at: SystemTime::now(),
        });
    }

    /// Writes what is pending; until the process ends.
    pub async fn run(&self, pool: PgPool) {
        let mut last_prune = std::time::Instant::now();
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            self.flush(&pool).await;
            if last_prune.elapsed() > PRUNE_EVERY {
                last_prune = std::time::Instant::now();
                for table in ["function_invocations", "function_logs"] {
                    let prune = format!(
                        "DELETE FROM zatabase.{table} WHERE at < now() - interval '7 days'"
                    );
                    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(prune)).execute(&pool).await
                    {
                        tracing::warn!(%error, table, "pruning function telemetry");
                    }
                }
            }
        }
    }

    /// Writes what is pending now (also at shut-down). A batch that fails
    /// is dropped and said so: telemetry never holds up requests.
    pub async fn flush(&self, pool: &PgPool) {
        let Pending {
            invocations,
            logs,
            dropped,
            ..
        } = std::mem::take(&mut *self.pending.lock().expect("telemetry poisoned"));
        if dropped > 0 {
            tracing::warn!(dropped, "function telemetry dropped (too much pending)");
        }
        if !invocations.is_empty() {
            let written = sqlx::query(
                "INSERT INTO zatabase.function_invocations
                   (function_id, request_id, status, duration_us, cold, at)
                 SELECT u.function_id, u.request_id, u.status, u.duration_us, u.cold, to_timestamp(u.at)
                 FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::int8[], $5::bool[], $6::float8[])
                   AS u (function_id, request_id, status, duration_us, cold, at)
                 WHERE EXISTS (SELECT 1 FROM zatabase.functions f WHERE f.id = u.function_id)",
            )
            .bind(invocations.iter().map(|i| i.function_id.as_str()).collect::<Vec<_>>())
            .bind(invocations.iter().map(|i| i.request_id.as_str()).collect::<Vec<_>>())
            .bind(invocations.iter().map(|i| i.status).collect::<Vec<_>>())
            .bind(invocations.iter().map(|i| i.duration_us).collect::<Vec<_>>())
            .bind(invocations.iter().map(|i| i.cold).collect::<Vec<_>>())
            .bind(invocations.iter().map(|i| timestamp(i.at)).collect::<Vec<_>>())
            .execute(pool)
            .await;
            if let Err(error) = written {
                tracing::warn!(%error, count = invocations.len(), "writing function invocations");
            }
        }
        if !logs.is_empty() {
            let written = sqlx::query(
                "INSERT INTO zatabase.function_logs (function_id, request_id, level, message, at)
                 SELECT u.function_id, u.request_id, u.level, u.message, to_timestamp(u.at)
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[])
                   WITH ORDINALITY AS u (function_id, request_id, level, message, at, n)
                 WHERE EXISTS (SELECT 1 FROM zatabase.functions f WHERE f.id = u.function_id)
                 ORDER BY n",
            )
            .bind(
                logs.iter()
                    .map(|l| l.function_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                logs.iter()
                    .map(|l| l.request_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(logs.iter().map(|l| l.level).collect::<Vec<_>>())
            .bind(
                logs.iter()
                    .map(|l| l.message.replace('\0', ""))
                    .collect::<Vec<_>>(),
            )
            .bind(logs.iter().map(|l| timestamp(l.at)).collect::<Vec<_>>())
            .execute(pool)
            .await;
            if let Err(error) = written {
                tracing::warn!(%error, count = logs.len(), "writing function logs");
            }
        }
    }
}

/// Seconds since the epoch, for `to_timestamp` (sqlx binds it without a
/// date-time crate).
fn timestamp(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
