//! The anchor of the SQL-shaped benchmarks: the same statement sent
//! straight to Postgres by a native sqlx client.

use std::time::{Duration, Instant};

/// `concurrency` loops of `sql` on `pool` for `seconds`: (queries/s, p50
/// µs, p99 µs); zeros when no query finished in time.
pub async fn load(
    pool: &sqlx::PgPool,
    sql: &'static str,
    seconds: u64,
    concurrency: u64,
) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .expect("direct query");
                std::hint::black_box(rows);
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all.sort();
    if all.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_secs_f64() * 1e6;
    (all.len() as f64 / seconds as f64, at(0.5), at(0.99))
}
