//! ZQL: durable and buffered inserts, and `NEAR … TOP 10`, through the API
//! against the equivalent SQL sent straight to the same Postgres by a
//! native sqlx client, in one run. Postgres runs with fsync on (the
//! product's default), so durability costs what it costs in production.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{self, vector_text};

const CONCURRENCY: u64 = 32;
const ROUNDS: usize = 3;
/// Records searched by the `NEAR` comparison.
const RECORDS: usize = 10_000;
const DIMENSIONS: usize = 128;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let host = tokio::task::spawn_blocking(|| {
        zatabase_tests::Host::builder()
            .config(
                "[rate_limit]\nenabled = false\n\
                 [postgres]\nfsync = true\nshared_buffers = \"128MB\"\nmax_connections = 200\n",
            )
            .start()
    })
    .await?;
    let base = host.base.clone();
    let work = host.data_dir.join("bench-zql");
    std::fs::create_dir_all(&work)?;

    // A tenant, its records table (made by the first insert) and the
    // records the searches rank.
    let (token, schema) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || -> anyhow::Result<(String, String)> {
            let mut signup = ureq::post(&format!("{base}/v1/auth/signup")).send_json(
                serde_json::json!({ "email": "zql@example.com", "password": "bench password 123" }),
            )?;
            let signup: serde_json::Value = signup.body_mut().read_json()?;
            let token = signup["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let bearer = format!("Bearer {token}");
            ureq::post(&format!("{base}/api/zql/insert"))
                .header("authorization", &bearer)
                .send_json(serde_json::json!({ "namespace": "warmup", "data": {} }))?;
            let mut seeded = ureq::post(&format!("{base}/v1/sql"))
                .header("authorization", &bearer)
                .send_json(serde_json::json!({ "query": format!(
                    "INSERT INTO zatabase_records (id, namespace, data, embedding)
                     SELECT 'r' || i, 'search', jsonb_build_object('n', i, 'kind', i % 10),
                            (SELECT array_agg(random() * 2 - 1)::vector({DIMENSIONS})
                             FROM generate_series(1, {DIMENSIONS}) WHERE i > 0)
                     FROM generate_series(1, {RECORDS}) AS i;
                     SELECT current_schema() AS s"
                ) }))?;
            let seeded: serde_json::Value = seeded.body_mut().read_json()?;
            Ok((
                token,
                seeded["rows"][0]["s"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        }
    })
    .await??;

    let socket = host.data_dir.join("postgres");
    let pool = |asynchronous: bool| {
        let options = PgConnectOptions::new()
            .socket(&socket)
            .username("zatabase")
            .database("zatabase")
            .options([(
                "synchronous_commit",
                if asynchronous { "off" } else { "on" },
            )]);
        PgPoolOptions::new()
            .max_connections(
                zatabase::config::Config::default()
                    .pool
                    .tenant_max_connections,
            )
            .connect_with(options)
    };
    let durable_pool = pool(false).await?;
    let buffered_pool = pool(true).await?;

    let data = serde_json::json!({ "title": "a record", "n": 7, "tags": ["a", "b"] });
    let embedding = common::vector(1, DIMENSIONS);
    let insert_sql: &'static str = Box::leak(
        format!(
            "INSERT INTO \"{schema}\".zatabase_records (id, namespace, data, embedding, pending)
             VALUES (gen_random_uuid()::text, 'bench', '{data}'::jsonb, '{}'::extensions.vector, false)",
            vector_text(&embedding)
        )
        .into_boxed_str(),
    );
    let buffered_sql: &'static str =
        Box::leak(insert_sql.replace(", false)", ", true)").into_boxed_str());
    let query = common::vector(2, DIMENSIONS);
    let near_sql: &'static str = Box::leak(
        format!(
            "SELECT id, namespace, data, created_at, updated_at,
                    (embedding OPERATOR(extensions.<->) '{v}'::extensions.vector) AS score
             FROM \"{schema}\".zatabase_records
             WHERE namespace = 'search' AND embedding IS NOT NULL
             ORDER BY score, id LIMIT 10",
            v = vector_text(&query)
        )
        .into_boxed_str(),
    );

    let compare = |route: &'static str,
                   body: serde_json::Value,
                   pool: &'static sqlx::PgPool,
                   sql: &'static str| {
        let (base, token, work) = (base.clone(), token.clone(), work.clone());
        async move {
            crate::native::compare(
                &format!("{base}/api/zql/{route}"),
                &body.to_string(),
                &token,
                &work.join(format!("{route}.lua")),
                pool,
                sql,
                seconds,
                CONCURRENCY,
                ROUNDS,
            )
            .await
        }
    };
    let durable_pool: &'static sqlx::PgPool = Box::leak(Box::new(durable_pool));
    let buffered_pool: &'static sqlx::PgPool = Box::leak(Box::new(buffered_pool));
    let record = serde_json::json!({ "namespace": "bench", "data": data, "vector": embedding });
    let mut buffered_record = record.clone();
    buffered_record["durable"] = false.into();
    let near = serde_json::json!({
        "query": format!("FIND IN search NEAR {} TOP 10", vector_text(&query)),
    });
    let lines = [
        (
            "durable insert",
            compare("insert", record, durable_pool, insert_sql).await?,
        ),
        (
            "buffered insert",
            compare("insert", buffered_record, buffered_pool, buffered_sql).await?,
        ),
        (
            "NEAR … TOP 10",
            compare("query", near, durable_pool, near_sql).await?,
        ),
    ];
    println!(
        "ZQL vs the equivalent SQL from a native sqlx client, {CONCURRENCY} concurrent, {ROUNDS} alternating rounds of {seconds} s (means; fsync on; NEAR over {RECORDS} records of {DIMENSIONS}-d)"
    );
    println!("{}", common::header("API /s", "direct /s"));
    for (name, c) in &lines {
        println!("{}", common::row(name, c));
    }
    tokio::task::spawn_blocking(move || drop(host)).await?;
    Ok(())
}
