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

/// Means of alternating rounds of the API under wrk and of the anchor:
/// `[queries/s, p50 µs, p99 µs]` each, and each round's throughput ratio.
pub struct Comparison {
    pub api: [f64; 3],
    pub direct: [f64; 3],
    pub per_round: Vec<f64>,
}

impl Comparison {
    pub fn ratio(&self) -> f64 {
        self.api[0] / self.direct[0]
    }

    pub fn per_round(&self) -> String {
        let rounds: Vec<String> = self.per_round.iter().map(|r| format!("{r:.2}")).collect();
        rounds.join(" ")
    }
}

/// `POST url` with the JSON `body` and `token` under wrk against `sql` on
/// `pool`, both at `concurrency`: a 2 s warm-up each, then `rounds`
/// alternating rounds of `seconds` (so a slow spell of the machine hits
/// both sides). `script` is where wrk's request script is written.
#[allow(clippy::too_many_arguments)]
pub async fn compare(
    url: &str,
    body: &str,
    token: &str,
    script: &std::path::Path,
    pool: &sqlx::PgPool,
    sql: &'static str,
    seconds: u64,
    concurrency: u64,
    rounds: usize,
) -> anyhow::Result<Comparison> {
    std::fs::write(
        script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let extra = vec![
        "-H".to_owned(),
        format!("Authorization: Bearer {token}"),
        "-s".to_owned(),
        script.display().to_string(),
    ];
    let run_api = |secs: u64| {
        let (url, extra) = (url.to_owned(), extra.clone());
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            crate::wrk::run_args(&url, secs, concurrency, 2, &extra)
        })
    };
    run_api(2).await??;
    load(pool, sql, 2, concurrency).await;
    let mut measured = Vec::new();
    for _ in 0..rounds {
        let api = run_api(seconds).await??;
        anyhow::ensure!(api.errors == 0, "{url}: {} errors", api.errors);
        let direct = load(pool, sql, seconds, concurrency).await;
        measured.push((
            [api.requests_per_sec, api.p50_us, api.p99_us],
            [direct.0, direct.1, direct.2],
        ));
    }
    let mean = |side: usize| {
        let mut sum = [0.0; 3];
        for round in &measured {
            let values = if side == 0 { round.0 } else { round.1 };
            for (s, v) in sum.iter_mut().zip(values) {
                *s += v / measured.len() as f64;
            }
        }
        sum
    };
    Ok(Comparison {
        api: mean(0),
        direct: mean(1),
        per_round: measured.iter().map(|(a, d)| a[0] / d[0]).collect(),
    })
}
