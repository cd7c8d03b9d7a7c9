//! Collections: ingest and exact KNN through the API against the same work
//! done straight on the same Postgres, in one run.
//!
//! - Ingest: 100,000 documents with 128-dimension vectors as NDJSON into a
//!   collection projecting the vector, against `psql \copy` of the same
//!   documents (id, document, vector) into a plain table.
//! - Exact KNN (k = 10, L2): `POST /v1/knn` against the same exact query
//!   sent by a native sqlx client, 32 concurrent, alternating rounds.
//! - HNSW build: `POST /v1/indexes/hnsw/build` until its stats say ready,
//!   against a direct `CREATE INDEX ... USING hnsw` of the same table,
//!   alternating.
//! - HNSW KNN (k = 10): `POST /v1/indexes/hnsw/search` against the same
//!   ordered query with the same `ef_search`, sent directly.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::vector_text;

const DOCUMENTS: usize = 100_000;
const DIMENSIONS: usize = 128;
const CONCURRENCY: u64 = 32;
const ROUNDS: usize = 3;
const BUILD_ROUNDS: usize = 2;

fn vector(seed: u64) -> Vec<f64> {
    crate::common::vector(seed, DIMENSIONS)
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
            let token = crate::common::signup(&base, "collections@example.com")?;
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
            Ok((
                token,
                schema["rows"][0]["s"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                elapsed,
            ))
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
    // The anchor's client, as large as a tenant's pool; `hnsw.ef_search` is
    // the API's default (exact queries do not read it).
    let ef_search = 400;
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
                .database("zatabase")
                .options([("hnsw.ef_search", ef_search.to_string())]),
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
    let body = serde_json::json!({ "collection": "docs", "column": "embedding", "vector": query, "k": 10 });
    let target = Target {
        base: &base,
        token: &token,
        work: &work,
        pool: &pool,
        seconds,
    };
    let line = target.compare("knn", &body, direct_sql).await?;
    println!("exact KNN k=10 over {DOCUMENTS}, {line} (target >= 0.50)");

    // HNSW build: through the API (202, then its stats until ready) against
    // a direct CREATE INDEX of the same table with the same parameters and
    // maintenance_work_mem (the host's default for builds), alternating.
    let (m, ef_construction) = (24, 128);
    let memory = zatabase::config::Config::default()
        .sql
        .index_build_memory_mb;
    run_psql(&format!("VACUUM ANALYZE \"{schema}\".docs"))?;
    let mut builds = Vec::new();
    for _ in 0..BUILD_ROUNDS {
        let started = Instant::now();
        run_psql(&format!(
            "SET maintenance_work_mem = '{memory}MB'; \
             CREATE INDEX anchor_hnsw ON \"{schema}\".docs USING hnsw (embedding extensions.vector_l2_ops) \
             WITH (m = {m}, ef_construction = {ef_construction})"
        ))?;
        let direct = started.elapsed();
        run_psql(&format!("DROP INDEX \"{schema}\".anchor_hnsw"))?;
        let started = Instant::now();
        let build_ms = tokio::task::spawn_blocking({
            let (base, token) = (base.clone(), token.clone());
            move || build_through_api(&base, &token, m, ef_construction)
        })
        .await??;
        builds.push((
            started.elapsed().as_secs_f64(),
            build_ms as f64 / 1000.0,
            direct.as_secs_f64(),
        ));
    }
    let mean =
        |i: usize| builds.iter().map(|b| [b.0, b.1, b.2][i]).sum::<f64>() / builds.len() as f64;
    let per_round: Vec<String> = builds.iter().map(|b| format!("{:.2}", b.0 / b.2)).collect();
    println!(
        "HNSW build over {DOCUMENTS} (m {m}, ef_construction {ef_construction}, maintenance_work_mem {memory} MB), {BUILD_ROUNDS} rounds: API {:.1} s to ready (the build itself {:.1} s, CREATE INDEX CONCURRENTLY); direct CREATE INDEX {:.1} s; ratio x{:.2} ({}) (target <= 1.10)",
        mean(0),
        mean(1),
        mean(2),
        mean(0) / mean(2),
        per_round.join(" "),
    );

    // HNSW search: the API (its default ef_search) against the same
    // ordered query on the same index, sent directly with the same
    // ef_search.
    let direct_sql: &'static str = Box::leak(
        format!(
            "SELECT id, (embedding OPERATOR(extensions.<->) '{v}'::extensions.vector) AS distance, document
             FROM \"{schema}\".docs WHERE embedding IS NOT NULL
             ORDER BY embedding OPERATOR(extensions.<->) '{v}'::extensions.vector LIMIT 10",
            v = vector_text(&query)
        )
        .into_boxed_str(),
    );
    let line = target
        .compare("indexes/hnsw/search", &body, direct_sql)
        .await?;
    println!("HNSW KNN k=10 (ef_search {ef_search}) over {DOCUMENTS}, {line} (target >= 0.50)");
    pool.close().await;
    tokio::task::spawn_blocking(move || drop(host)).await?;
    Ok(())
}

/// Starts an HNSW build of `docs.embedding` and follows its stats until it
/// is ready; returns the build time the host recorded (ms).
fn build_through_api(base: &str, token: &str, m: u32, ef_construction: u32) -> anyhow::Result<i64> {
    let bearer = format!("Bearer {token}");
    let mut started = ureq::post(&format!("{base}/v1/indexes/hnsw/build"))
        .header("authorization", &bearer)
        .send_json(serde_json::json!({
            "table": "docs", "column": "embedding", "m": m, "ef_construction": ef_construction,
        }))?;
    anyhow::ensure!(
        started.status() == 202,
        "build: {}",
        started.body_mut().read_to_string()?
    );
    loop {
        let mut stats = ureq::get(&format!("{base}/v1/indexes/hnsw/docs/embedding/stats"))
            .header("authorization", &bearer)
            .call()?;
        let stats: serde_json::Value = stats.body_mut().read_json()?;
        match stats["status"].as_str() {
            Some("ready") => return Ok(stats["build_time_ms"].as_i64().unwrap_or_default()),
            Some("building") => std::thread::sleep(Duration::from_millis(20)),
            _ => anyhow::bail!("build: {stats}"),
        }
    }
}

/// Where the API side of a comparison runs, and the anchor's pool.
#[derive(Clone, Copy)]
struct Target<'a> {
    base: &'a str,
    token: &'a str,
    work: &'a std::path::Path,
    pool: &'a sqlx::PgPool,
    seconds: u64,
}

impl Target<'_> {
    /// `POST /v1/<route>` with `body` against `direct_sql`; the summary.
    async fn compare(
        &self,
        route: &str,
        body: &serde_json::Value,
        direct_sql: &'static str,
    ) -> anyhow::Result<String> {
        let c = crate::native::compare(
            &format!("{}/v1/{route}", self.base),
            &body.to_string(),
            self.token,
            &self.work.join(format!("{}.lua", route.replace('/', "-"))),
            self.pool,
            direct_sql,
            self.seconds,
            CONCURRENCY,
            ROUNDS,
        )
        .await?;
        Ok(format!(
            "{CONCURRENCY} concurrent, {ROUNDS} rounds of {} s: API {:.0} q/s (p50 {:.0} µs, p99 {:.0} µs); direct {:.0} q/s (p50 {:.0} µs, p99 {:.0} µs); ratio {:.2} ({}); p99 x{:.2}",
            self.seconds,
            c.api[0],
            c.api[1],
            c.api[2],
            c.direct[0],
            c.direct[1],
            c.direct[2],
            c.ratio(),
            c.per_round(),
            c.api[2] / c.direct[2],
        ))
    }
}
