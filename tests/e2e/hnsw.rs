//! HNSW indexes (`/v1/indexes/hnsw`): built in the background with their
//! progress and state visible, searched with a recall checked against the
//! exact answer, and refused clearly when asked for the impossible.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zatabase_tests::{Host, Resp, unique_email};

fn call(host: &Host, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
    host.call(method, path, token, body)
}

/// Follows an index's stats until it leaves `building`; returns the last
/// state and every progress seen on the way.
fn wait_for_build(host: &Host, token: &str, table: &str, column: &str) -> (Value, Vec<f64>) {
    let path = format!("/v1/indexes/hnsw/{table}/{column}/stats");
    let started = Instant::now();
    let mut progress = Vec::new();
    loop {
        let stats = call(host, "GET", &path, token, None);
        assert_eq!(stats.status, 200, "{}", stats.text());
        let stats = stats.json();
        if stats["status"] != "building" {
            return (stats, progress);
        }
        let done = stats["progress"]
            .as_f64()
            .expect("a build shows its progress");
        assert!((0.0..=1.0).contains(&done), "{stats}");
        assert!(stats["phase"].is_string(), "{stats}");
        progress.push(done);
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the build did not end: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A deterministic pseudo-random vector (xorshift) in [-1, 1).
fn vector(seed: u64, dims: usize) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dims)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f64 / 1000.0 - 1.0
        })
        .collect()
}

fn ids(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn hnsw_recall_at_10_is_at_least_0_95_on_20k_random_vectors() {
    let host = Host::start();
    let token = host.token();
    host.sql_ok(
        "CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(128))",
        &[],
    );
    // Each row its own random vector (the subquery refers to the row).
    host.sql_ok(
        "INSERT INTO items
         SELECT i, (SELECT array_agg(random() * 2 - 1)::vector(128) FROM generate_series(1, 128) WHERE i > 0)
         FROM generate_series(1, 20000) AS i",
        &[],
    );

    let started = call(
        &host,
        "POST",
        "/v1/indexes/hnsw/build",
        &token,
        Some(&json!({ "table": "items", "column": "embedding", "metric": "l2" })),
    );
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(
        started.header("location"),
        Some("/v1/indexes/hnsw/items/embedding/stats")
    );
    let started = started.json();
    assert_eq!(started["status"], "building", "{started}");
    assert_eq!(
        started["parameters"],
        json!({ "m": 24, "ef_construction": 128 })
    );
    // One build of a column at a time.
    let again = call(
        &host,
        "POST",
        "/v1/indexes/hnsw/build",
        &token,
        Some(&json!({ "table": "items", "column": "embedding" })),
    )
    .expect_error(409);
    assert!(again.contains("being built"), "{again}");
    // Searching waits for a ready index.
    let early =
        json!({ "table": "items", "column": "embedding", "vector": vector(1, 128), "k": 10 });
    let waiting = call(
        &host,
        "POST",
        "/v1/indexes/hnsw/search",
        &token,
        Some(&early),
    );
    if waiting.status != 200 {
        assert!(waiting.expect_error(409).contains("still building"));
    }

    let (stats, progress) = wait_for_build(&host, &token, "items", "embedding");
    assert_eq!(stats["status"], "ready", "{stats}");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {progress:?}"
    );
    assert_eq!(stats["rows"], 20000, "{stats}");
    assert!(
        stats["size_bytes"].as_i64().unwrap() > 20000 * 128 * 4,
        "{stats}"
    );
    assert!(stats["build_time_ms"].as_i64().unwrap() > 0, "{stats}");
    assert_eq!(stats["metric"], "l2");
    let listed = call(&host, "GET", "/v1/indexes/hnsw", &token, None).json();
    assert_eq!(listed["indexes"], json!([stats]), "{listed}");
    // Postgres plans the search on the index.
    let plan = host.sql_ok(
        "EXPLAIN SELECT id FROM items ORDER BY embedding <-> $1::vector LIMIT 10",
        &[json!(vector(1, 128))],
    );
    assert!(
        plan.to_string().contains(stats["index"].as_str().unwrap()),
        "{plan}"
    );

    // recall@10 at the default ef_search, against the exact answer.
    let queries = 40;
    let mut found = 0;
    for seed in 0..queries {
        let query = json!({
            "table": "items", "column": "embedding", "vector": vector(seed + 100, 128), "k": 10,
        });
        let exact = call(&host, "POST", "/v1/knn", &token, Some(&query));
        assert_eq!(exact.status, 200, "{}", exact.text());
        let approximate = call(
            &host,
            "POST",
            "/v1/indexes/hnsw/search",
            &token,
            Some(&query),
        );
        assert_eq!(approximate.status, 200, "{}", approximate.text());
        let approximate = approximate.json();
        let distances: Vec<f64> = approximate["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["distance"].as_f64().unwrap())
            .collect();
        assert_eq!(distances.len(), 10);
        assert!(distances.windows(2).all(|w| w[0] <= w[1]), "nearest first");
        let exact = ids(&exact.json());
        found += ids(&approximate)
            .iter()
            .filter(|id| exact.contains(id))
            .count();
    }
    let recall = found as f64 / (queries * 10) as f64;
    assert!(recall >= 0.95, "recall@10 {recall}");

    // Fewer candidates than neighbours would answer fewer than k.
    let few = json!({
        "table": "items", "column": "embedding", "vector": vector(1, 128), "k": 10, "ef_search": 5,
    });
    let refused =
        call(&host, "POST", "/v1/indexes/hnsw/search", &token, Some(&few)).expect_error(422);
    assert!(refused.contains("at least `k`"), "{refused}");

    // A dropped table takes its index with it, whatever dropped it: none is
    // listed, and a table made again under the name has none to search.
    host.sql_ok(
        "DROP TABLE items; CREATE TABLE items (id text PRIMARY KEY, embedding vector(128))",
        &[],
    );
    let listed = call(&host, "GET", "/v1/indexes/hnsw", &token, None).json();
    assert_eq!(listed["indexes"], json!([]), "{listed}");
    call(
        &host,
        "POST",
        "/v1/indexes/hnsw/search",
        &token,
        Some(&early),
    )
    .expect_error(404);
}

#[test]
fn hnsw_builds_and_searches_refuse_what_cannot_be_done() {
    let host = Host::start();
    let token = host.token();
    host.sql_ok(
        "CREATE TABLE docs (id text PRIMARY KEY, kind text, embedding vector(3), title text);
         INSERT INTO docs VALUES ('a', 'x', '[1,0,0]', 'A'), ('b', 'y', '[0,1,0]', 'B'),
                                 ('c', 'x', '[0,0,1]', 'C'), ('d', 'x', '[1,1,0]', 'D');
         CREATE VIEW docs_view AS SELECT * FROM docs",
        &[],
    );
    let build = |body: Value| call(&host, "POST", "/v1/indexes/hnsw/build", &token, Some(&body));
    for (body, status, fragment) in [
        (
            json!({ "table": "nothing", "column": "embedding" }),
            404,
            "no table `nothing`",
        ),
        (
            json!({ "table": "docs", "column": "nothing" }),
            422,
            "no column `nothing`",
        ),
        (
            json!({ "table": "docs", "column": "title" }),
            422,
            "not a vector",
        ),
        (
            json!({ "table": "docs", "column": "embedding", "m": 1 }),
            422,
            "`m` must be",
        ),
        (
            json!({ "table": "docs", "column": "embedding", "m": 16, "ef_construction": 20 }),
            422,
            "at least twice `m`",
        ),
        (
            json!({ "table": "docs", "column": "embedding", "metric": "hamming" }),
            422,
            "hamming",
        ),
        (json!({ "table": "docs" }), 422, "column"),
    ] {
        let message = build(body.clone()).expect_error(status);
        assert!(message.contains(fragment), "{body}: {message}");
    }
    let none = call(&host, "GET", "/v1/indexes/hnsw", &token, None).json();
    assert_eq!(none, json!({ "indexes": [] }), "refusals record nothing");
    call(
        &host,
        "GET",
        "/v1/indexes/hnsw/docs/embedding/stats",
        &token,
        None,
    )
    .expect_error(404);
    let search = |body: Value| {
        call(
            &host,
            "POST",
            "/v1/indexes/hnsw/search",
            &token,
            Some(&body),
        )
    };
    let unbuilt =
        search(json!({ "table": "docs", "column": "embedding", "vector": [1, 0, 0], "k": 2 }))
            .expect_error(404);
    assert!(unbuilt.contains("POST /v1/indexes/hnsw/build"), "{unbuilt}");

    // Postgres's refusal ends the build as failed, with its reason.
    // (A large `m` alone takes an `ef_construction` of twice it.)
    assert_eq!(
        build(json!({ "table": "docs_view", "column": "embedding", "m": 80 })).status,
        202
    );
    let (failed, _) = wait_for_build(&host, &token, "docs_view", "embedding");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["parameters"],
        json!({ "m": 80, "ef_construction": 160 })
    );
    assert!(
        failed["reason"].as_str().unwrap().contains("docs_view"),
        "{failed}"
    );
    let message =
        search(json!({ "table": "docs_view", "column": "embedding", "vector": [1, 0, 0], "k": 1 }))
            .expect_error(409);
    assert!(message.contains("failed"), "{message}");

    // A cosine index answers cosine searches, filtered ones included.
    assert_eq!(
        build(json!({ "table": "docs", "column": "embedding", "metric": "cosine", "m": 4, "ef_construction": 8 }))
            .status,
        202
    );
    let (ready, _) = wait_for_build(&host, &token, "docs", "embedding");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["parameters"], json!({ "m": 4, "ef_construction": 8 }));
    let found = search(json!({
        "table": "docs", "column": "embedding", "vector": [1, 0.1, 0], "k": 2, "filter": { "kind": "x" },
    }));
    assert_eq!(found.status, 200, "{}", found.text());
    let found = found.json();
    assert_eq!(ids(&found), ["a", "d"], "{found}");
    assert_eq!(found["results"][0]["document"]["title"], "A");
    for (body, status, fragment) in [
        (
            json!({ "table": "docs", "column": "embedding", "vector": [1, 0], "k": 2 }),
            422,
            "dimension mismatch",
        ),
        (
            json!({ "table": "docs", "column": "embedding", "vector": [1, 0, 0], "k": 0 }),
            422,
            "`k`",
        ),
        (
            json!({ "table": "docs", "column": "embedding", "vector": [1, 0, 0], "k": 1001 }),
            422,
            "`k`",
        ),
        (
            json!({ "table": "docs", "column": "embedding", "vector": [1, 0, 0], "k": 1, "metric": "l2" }),
            422,
            "orders by cosine",
        ),
        (
            json!({ "table": "docs", "column": "embedding", "vector": [1, 0, 0], "k": 1, "ef_search": 0 }),
            422,
            "`ef_search`",
        ),
    ] {
        let message = search(body.clone()).expect_error(status);
        assert!(message.contains(fragment), "{body}: {message}");
    }

    // Rebuilt with other parameters: the new index replaces the old.
    let old = ready["index"].as_str().unwrap().to_owned();
    assert_eq!(
        build(json!({ "table": "docs", "column": "embedding", "metric": "l2" })).status,
        202
    );
    let (rebuilt, _) = wait_for_build(&host, &token, "docs", "embedding");
    assert_eq!(rebuilt["status"], "ready", "{rebuilt}");
    assert_ne!(rebuilt["index"], old);
    // The old one is dropped once the new one is ready (concurrently, so
    // it may take a moment).
    let mut left = Value::Null;
    assert!(
        zatabase_tests::eventually(Duration::from_secs(10), || {
            left = host.sql_ok(
                "SELECT count(*) AS n FROM pg_indexes WHERE tablename = 'docs' AND indexdef LIKE '%hnsw%'",
                &[],
            );
            left["rows"][0]["n"] == 1
        }),
        "{left}"
    );

    // Another tenant sees none of it and reaches nothing.
    let other = host
        .signup(&unique_email("hnsw-peer"), "a long test password")
        .access_token;
    let listed = call(&host, "GET", "/v1/indexes/hnsw", &other, None).json();
    assert_eq!(listed, json!({ "indexes": [] }));
    call(
        &host,
        "GET",
        "/v1/indexes/hnsw/docs/embedding/stats",
        &other,
        None,
    )
    .expect_error(404);
    call(
        &host,
        "POST",
        "/v1/indexes/hnsw/build",
        &other,
        Some(&json!({ "table": "docs", "column": "embedding" })),
    )
    .expect_error(404);
    call(
        &host,
        "POST",
        "/v1/indexes/hnsw/search",
        &other,
        Some(&json!({ "table": "docs", "column": "embedding", "vector": [1, 0, 0], "k": 1 })),
    )
    .expect_error(404);
    let anonymous = host.request("GET", "/v1/indexes/hnsw", &[], Vec::new());
    anonymous.expect_error(401);
}

/// A tenant runs at most two builds at once, counted by their connections
/// to Postgres: deleting the rows of its `zatabase_indexes` (its own table)
/// does not make room for a third.
#[test]
fn a_tenant_cannot_forge_its_way_past_the_limit_on_builds() {
    let host = Host::start();
    let token = host.token();
    host.sql_ok(
        "CREATE TABLE t1 (embedding vector(2)); CREATE TABLE t2 (embedding vector(2));
         CREATE TABLE t3 (embedding vector(2))",
        &[],
    );
    let build = &|table: &str| {
        call(
            &host,
            "POST",
            "/v1/indexes/hnsw/build",
            &token,
            Some(&json!({ "table": table, "column": "embedding" })),
        )
    };
    let barrier = &std::sync::Barrier::new(3);
    let refused = std::thread::scope(|scope| {
        // A writer holding its locks for a while: CREATE INDEX CONCURRENTLY
        // waits for it, so the builds below stay running meanwhile.
        let writer = scope.spawn(|| {
            host.sql_ok(
                "INSERT INTO t1 VALUES ('[1,0]'); INSERT INTO t2 VALUES ('[1,0]');
                 INSERT INTO t3 VALUES ('[1,0]'); SELECT pg_sleep(5)",
                &[],
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        // Three at once: the two the limit allows start.
        let statuses: Vec<u16> = ["t1", "t2", "t3"]
            .map(|table| {
                scope.spawn(move || {
                    barrier.wait();
                    build(table).status
                })
            })
            .into_iter()
            .map(|started| started.join().unwrap())
            .collect();
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [202, 202, 409], "{statuses:?}");
        let refused = ["t1", "t2", "t3"][statuses.iter().position(|s| *s == 409).unwrap()];
        host.sql_ok("DELETE FROM zatabase_indexes", &[]);
        let message = build(refused).expect_error(409);
        assert!(message.contains("2 index builds are running"), "{message}");
        writer.join().unwrap();
        refused
    });
    // Once they are done, there is room again.
    let started = Instant::now();
    loop {
        let third = build(refused);
        if third.status == 202 {
            break;
        }
        assert_eq!(third.status, 409, "{}", third.text());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            third.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (built, _) = wait_for_build(&host, &token, refused, "embedding");
    assert_eq!(built["status"], "ready", "{built}");
}
