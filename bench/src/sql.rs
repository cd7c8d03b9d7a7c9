//! `POST /v1/sql` against the same queries sent straight to the same
//! Postgres by a native sqlx client, at the same concurrency (32).
//!
//! The host is the real `zatabase serve` on a copy of the test template
//! cluster; `ZATABASE_BENCH_WORKERS=N` overrides its worker threads (for
//! comparing against the default).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

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
            let token = crate::common::signup(&base, "sql@example.com")?;
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

    let mut results = Vec::new();
    for (name, api_query, direct_query) in [
        ("SELECT 1", "SELECT 1", "SELECT 1"),
        ("100-row SELECT", "SELECT * FROM products", hundred),
    ] {
        let body = serde_json::json!({ "query": api_query }).to_string();
        let compared = crate::native::compare(
            &format!("{base}/v1/sql"),
            &body,
            &token,
            &host.data_dir.join("sql.lua"),
            &pool,
            direct_query,
            seconds,
            CONCURRENCY,
            ROUNDS,
        )
        .await?;
        results.push((name, compared));
    }
    println!(
        "POST /v1/sql vs a native sqlx client, {CONCURRENCY} concurrent, {ROUNDS} alternating rounds of {seconds} s (means)"
    );
    println!("{}", crate::common::header("API q/s", "direct q/s"));
    for (name, c) in &results {
        println!("{}", crate::common::row(name, c));
    }
    println!("target: the API keeps >= 0.40 of the direct throughput");
    pool.close().await;
    tokio::task::spawn_blocking(move || drop(host)).await?;
    Ok(())
}
