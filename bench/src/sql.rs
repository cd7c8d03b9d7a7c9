//! `POST /v1/sql` against the same queries sent straight to the same
//! Postgres by a native sqlx client, at the same concurrency (32).
//!
//! The host is the real `zatabase serve` on a copy of the test template
//! cluster; `ZATABASE_BENCH_WORKERS=N` overrides its worker threads (for
//! comparing against the default).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::wrk;

const CONCURRENCY: u64 = 32;
const ROUNDS: usize = 3;

fn post(url: &str, token: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let mut response = ureq::post(url)
        .header("authorization", &format!("Bearer {token}"))
        .send_json(body)?;
    Ok(response.body_mut().read_json()?)
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    // The real `zatabase serve`, with its own runtime and the product's
    // defaults (its worker count included), so the anchor's client below
    // does not share threads with it.
    let host = tokio::task::spawn_blocking(|| {
        zatabase_tests::Host::builder()
            .config(
                &format!(
                    "{}[rate_limit]\nenabled = false\n[postgres]\nshared_buffers = \"128MB\"\nmax_connections = 200\n",
                    std::env::var("ZATABASE_BENCH_WORKERS")
                        .map(|n| format!("worker_threads = {n}\n"))
                        .unwrap_or_default()
                ),
            )
            .start()
    })
    .await?;
    let base = host.base.clone();
    let tenant_connections = zatabase::config::Config::default()
        .pool
        .tenant_max_connections;

    let setup = tokio::task::spawn_blocking({
        let base = base.clone();
        move || -> anyhow::Result<(String, String)> {
            let mut signup = ureq::post(&format!("{base}/v1/auth/signup")).send_json(
                serde_json::json!({ "email": "sql@example.com", "password": "bench password 123" }),
            )?;
            let signup: serde_json::Value = signup.body_mut().read_json()?;
            let token = signup["access_token"].as_str().unwrap_or_default().to_owned();
            let url = format!("{base}/v1/sql");
            post(&url, &token, serde_json::json!({ "query":
                "CREATE TABLE products (id int PRIMARY KEY, name text, price numeric(10,2), added timestamptz);
                 INSERT INTO products SELECT n, 'product ' || n, n * 1.25, now() FROM generate_series(1, 100) n" }))?;
            let schema = post(&url, &token, serde_json::json!({ "query": "SELECT current_schema() AS s" }))?;
            Ok((token, schema["rows"][0]["s"].as_str().unwrap_or_default().to_owned()))
        }
    })
    .await??;
    let (token, schema) = setup;

    // The anchor's client: the same Postgres (its Unix socket, as the
    // platform role), a pool as large as a tenant's.
    let options = PgConnectOptions::new()
        .socket(host.data_dir.join("postgres"))
        .username("zatabase")
        .database("zatabase");
    let pool = PgPoolOptions::new()
        .max_connections(tenant_connections)
        .connect_with(options)
        .await?;
    let hundred: &'static str =
        Box::leak(format!("SELECT * FROM \"{schema}\".products").into_boxed_str());

    let header = format!("Authorization: Bearer {token}");
    let mut results = Vec::new();
    for (name, api_query, direct_query) in [
        ("SELECT 1", "SELECT 1", "SELECT 1"),
        ("100-row SELECT", "SELECT * FROM products", hundred),
    ] {
        let script = host.data_dir.join("sql.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = '{{\"query\":\"{api_query}\"}}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
            ),
        )?;
        let url = format!("{base}/v1/sql");
        let extra = vec![
            "-H".to_owned(),
            header.clone(),
            "-s".to_owned(),
            script.display().to_string(),
        ];
        let run_api = |secs: u64| {
            let (url, extra) = (url.clone(), extra.clone());
            tokio::task::spawn_blocking(move || {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                wrk::run_args(&url, secs, CONCURRENCY, 2, &extra)
            })
        };
        run_api(2).await??;
        crate::native::load(&pool, direct_query, 2, CONCURRENCY).await;
        // Alternating rounds, so a slow spell of the machine hits both sides.
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let api = run_api(seconds).await??;
            anyhow::ensure!(api.errors == 0, "{name}: {} errors", api.errors);
            let native = crate::native::load(&pool, direct_query, seconds, CONCURRENCY).await;
            rounds.push(((api.requests_per_sec, api.p50_us, api.p99_us), native));
        }
        results.push((name, rounds));
    }
    println!(
        "POST /v1/sql vs a native sqlx client, {CONCURRENCY} concurrent, {ROUNDS} alternating rounds of {seconds} s (means)"
    );
    println!(
        "{:<16} {:>12} {:>9} {:>9} {:>12} {:>9} {:>9} {:>7}  per round",
        "", "API q/s", "p50 µs", "p99 µs", "direct q/s", "p50 µs", "p99 µs", "ratio"
    );
    let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len() as f64;
    for (name, rounds) in &results {
        let api = |i: usize| mean(rounds.iter().map(|(a, _)| [a.0, a.1, a.2][i]).collect());
        let native = |i: usize| mean(rounds.iter().map(|(_, n)| [n.0, n.1, n.2][i]).collect());
        let per_round: Vec<String> = rounds
            .iter()
            .map(|(a, n)| format!("{:.2}", a.0 / n.0))
            .collect();
        println!(
            "{name:<16} {:>12.0} {:>9.0} {:>9.0} {:>12.0} {:>9.0} {:>9.0} {:>7.2}  {}",
            api(0),
            api(1),
            api(2),
            native(0),
            native(1),
            native(2),
            api(0) / native(0),
            per_round.join(" ")
        );
    }
    println!("target: the API keeps >= 0.40 of the direct throughput");
    pool.close().await;
    tokio::task::spawn_blocking(move || drop(host)).await?;
    Ok(())
}
