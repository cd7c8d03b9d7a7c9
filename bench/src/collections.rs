//! Collections: ingest and exact KNN through the API against the same work
//! done straight on the same Postgres, in one run.
//!
//! - Ingest: 100,000 documents with 128-dimension vectors as NDJSON into a
//!   collection projecting the vector, against `psql \copy` of the same
//!   documents (id, document, vector) into a plain table.
//! - Exact KNN (k = 10, L2): `POST /v1/knn` against the same exact query
//!   sent by a native sqlx client, 32 concurrent, alternating rounds.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::wrk;

const DOCUMENTS: usize = 100_000;
const DIMENSIONS: usize = 128;
const CONCURRENCY: u64 = 32;
const ROUNDS: usize = 3;

/// A deterministic vector of two-decimal components.
fn vector(seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIMENSIONS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state % 2001) as f64 - 1000.0) / 1000.0
        })
        .collect()
}

fn vector_text(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(f64::to_string).collect();
    format!("[{}]", items.join(","))
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let host = tokio::task::spawn_blocking(|| {
        zatabase_tests::Host::builder()
            .config(
                "[rate_limit]\nenabled = false\n\
                 [postgres]\nshared_buffers = \"256MB\"\nmax_connections = 200\n",
            )
            .start()
    })
    .await?;
    let base = host.base.clone();
    let work = host.data_dir.join("bench-collections");
    std::fs::create_dir_all(&work)?;

    // The same documents for both sides.
    let mut ndjson = Vec::with_capacity(DOCUMENTS * 900);
    let mut copy = Vec::with_capacity(DOCUMENTS * 1700);
    for n in 0..DOCUMENTS {
        let v = vector(n as u64);
        let document = serde_json::json!({ "id": format!("d{n}"), "title": format!("document {n}"), "embedding": v });
        writeln!(ndjson, "{document}")?;
        // COPY text format: tab-separated; JSON and vectors hold no tabs,
        // and a backslash in JSON text must be doubled (there are none).
        writeln!(copy, "d{n}\t{document}\t{}", vector_text(&v))?;
    }
    let copy_file = work.join("documents.tsv");
    std::fs::write(&copy_file, &copy)?;
    let ndjson_bytes = ndjson.len();

    let (token, schema, ingest_time) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || -> anyhow::Result<(String, String, Duration)> {
            let mut signup = ureq::post(&format!("{base}/v1/auth/signup")).send_json(
                serde_json::json!({ "email": "collections@example.com", "password": "bench password 123" }),
            )?;
            let signup: serde_json::Value = signup.body_mut().read_json()?;
            let token = signup["access_token"].as_str().unwrap_or_default().to_owned();
            let bearer = format!("Bearer {token}");
            ureq::post(&format!("{base}/v1/collections"))
                .header("authorization", &bearer)
                .send_json(serde_json::json!({
                    "name": "docs",
                    "projection": { "embedding": { "type": "vector(128)", "path": "$.embedding" } }
                }))?;
            let started = Instant::now();
            let mut answer = ureq::post(&format!("{base}/v1/collections/docs/ingest"))
                .header("authorization", &bearer)
                .header("content-type", "application/x-ndjson")
                .config()
                .timeout_global(Some(Duration::from_secs(600)))
                .build()
                .send(&ndjson[..])?;
            let elapsed = started.elapsed();
            let answer: serde_json::Value = answer.body_mut().read_json()?;
            anyhow::ensure!(answer["accepted"] == DOCUMENTS, "ingest: {answer}");
            let mut schema = ureq::post(&format!("{base}/v1/sql"))
                .header("authorization", &bearer)
                .send_json(serde_json::json!({ "query": "SELECT current_schema() AS s" }))?;
            let schema: serde_json::Value = schema.body_mut().read_json()?;
            Ok((token, schema["rows"][0]["s"].as_str().unwrap_or_default().to_owned(), elapsed))
        }
    })
    .await??;

    // The anchor: psql's \copy into a plain table of the same shape.
    let psql = zatabase_tests::postgres::bin_dir().join("psql");
    let socket = host.data_dir.join("postgres");
    let run_psql = |command: &str| -> anyhow::Result<()> {
        let output = Command::new(&psql)
            .args([
                "-h",
                &socket.display().to_string(),
                "-U",
                "zatabase",
                "-d",
                "zatabase",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                command,
            ])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    run_psql(
        "CREATE TABLE public.anchor_docs (id text PRIMARY KEY, document jsonb NOT NULL, embedding extensions.vector(128))",
    )?;
    let started = Instant::now();
    run_psql(&format!(
        "\\copy public.anchor_docs (id, document, embedding) FROM '{}'",
        copy_file.display()
    ))?;
    let copy_time = started.elapsed();

    println!(
        "ingest {DOCUMENTS} documents with {DIMENSIONS}-d vectors ({} MB NDJSON): API {:.1} s = {:.0} docs/s; psql \\copy {:.1} s = {:.0} docs/s; ratio {:.2} (target >= 0.50)",
        ndjson_bytes >> 20,
        ingest_time.as_secs_f64(),
        DOCUMENTS as f64 / ingest_time.as_secs_f64(),
        copy_time.as_secs_f64(),
        DOCUMENTS as f64 / copy_time.as_secs_f64(),
        copy_time.as_secs_f64() / ingest_time.as_secs_f64()
    );
    // Exact KNN: the API against the statement it runs, sent directly.
    let query = vector(u64::MAX);
    let pool = PgPoolOptions::new()
        .max_connections(
            zatabase::config::Config::default()
                .pool
                .tenant_max_connections,
        )
        .connect_with(
            PgConnectOptions::new()
                .socket(&socket)
                .username("zatabase")
                .database("zatabase"),
        )
        .await?;
    let direct_sql: &'static str = Box::leak(
        format!(
            "SELECT id, distance, document FROM (
                SELECT id, (embedding OPERATOR(extensions.<->) '{v}'::extensions.vector) AS distance, document
                FROM \"{schema}\".docs WHERE embedding IS NOT NULL OFFSET 0
             ) AS s ORDER BY distance, id LIMIT 10",
            v = vector_text(&query)
        )
        .into_boxed_str(),
    );
    let script = work.join("knn.lua");
    let body = serde_json::json!({ "collection": "docs", "column": "embedding", "vector": query, "k": 10 });
    std::fs::write(
        &script,
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
    let url = format!("{base}/v1/knn");
    let run_api = |secs: u64| {
        let (url, extra) = (url.clone(), extra.clone());
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            wrk::run_args(&url, secs, CONCURRENCY, 2, &extra)
        })
    };
    run_api(2).await??;
    crate::native::load(&pool, direct_sql, 2, CONCURRENCY).await;
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let api = run_api(seconds).await??;
        anyhow::ensure!(api.errors == 0, "knn: {} errors", api.errors);
        let native = crate::native::load(&pool, direct_sql, seconds, CONCURRENCY).await;
        rounds.push(((api.requests_per_sec, api.p50_us, api.p99_us), native));
    }

    let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len() as f64;
    let api = |i: usize| mean(rounds.iter().map(|(a, _)| [a.0, a.1, a.2][i]).collect());
    let native = |i: usize| mean(rounds.iter().map(|(_, n)| [n.0, n.1, n.2][i]).collect());
    let per_round: Vec<String> = rounds
        .iter()
        .map(|(a, n)| format!("{:.2}", a.0 / n.0))
        .collect();
    println!(
        "exact KNN k=10 over {DOCUMENTS}, {CONCURRENCY} concurrent, {ROUNDS} rounds of {seconds} s: API {:.0} q/s (p50 {:.0} µs, p99 {:.0} µs); direct {:.0} q/s (p50 {:.0} µs, p99 {:.0} µs); ratio {:.2} ({}); p99 x{:.2} (target >= 0.50)",
        api(0),
        api(1),
        api(2),
        native(0),
        native(1),
        native(2),
        api(0) / native(0),
        per_round.join(" "),
        api(2) / native(2),
    );
    pool.close().await;
    tokio::task::spawn_blocking(move || drop(host)).await?;
    Ok(())
}
