//! Collections (`/v1/collections`): tables of JSON documents in the
//! caller's tenant, their projections, streamed ingest, and exact
//! nearest-neighbour search (`/v1/knn`) checked against brute force.

use serde_json::{Value, json};
use zatabase_tests::{Host, Resp, unique_email};

fn call(host: &Host, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
    host.call(method, path, token, body)
}

fn ingest(host: &Host, token: &str, name: &str, content_type: &str, body: &str) -> Resp {
    let bearer = format!("Bearer {token}");
    host.request_streamed(
        "POST",
        &format!("/v1/collections/{name}/ingest"),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", content_type),
        ],
        std::io::Cursor::new(body.as_bytes().to_vec()),
    )
}

/// Creates the collection `body` describes, which must succeed.
fn create_collection(host: &Host, token: &str, body: Value) {
    let created = call(host, "POST", "/v1/collections", token, Some(&body));
    assert_eq!(created.status, 201, "{}", created.text());
}

fn count(host: &Host, table: &str) -> i64 {
    host.sql_ok(&format!("SELECT count(*) AS n FROM {table}"), &[])["rows"][0]["n"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_collection_is_a_table_its_ingest_keeps_the_good_lines() {
    let host = Host::start();
    let token = host.token();
    let created = call(
        &host,
        "POST",
        "/v1/collections",
        &token,
        Some(&json!({
            "name": "articles",
            "projection": {
                "title": { "type": "text", "path": "$.title" },
                "year": { "type": "integer", "path": "$.meta.year" },
                "embedding": { "type": "vector(3)", "path": "$.embedding" }
            }
        })),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    assert_eq!(created["document_count"], 0);
    assert_eq!(
        created["projection"]["year"],
        json!({ "type": "integer", "path": "$.meta.year" })
    );

    // Bad settings write nothing.
    let again = json!({ "name": "articles" });
    call(&host, "POST", "/v1/collections", &token, Some(&again)).expect_error(409);
    for (body, fragment) in [
        (json!({ "name": "Bad Name" }), "not a collection name"),
        (json!({ "name": "zatabase_kv" }), "not a collection name"),
        (
            json!({ "name": "other", "projection": { "x": { "type": "vector(0)", "path": "$.x" } } }),
            "vector(N)",
        ),
        (
            json!({ "name": "other", "projection": { "x": { "type": "text", "path": "x" } } }),
            "path `x`",
        ),
        (
            json!({ "name": "other", "projection": { "id": { "type": "text", "path": "$.x" } } }),
            "reserved",
        ),
    ] {
        let message = call(&host, "POST", "/v1/collections", &token, Some(&body)).expect_error(422);
        assert!(message.contains(fragment), "{body}: {message}");
    }
    let listed = call(&host, "GET", "/v1/collections", &token, None).json();
    assert_eq!(
        listed["collections"].as_array().unwrap().len(),
        1,
        "{listed}"
    );

    // A malformed line in the middle: it is reported, the others are kept.
    let ndjson = [
        r#"{"id": "a", "title": "First", "meta": {"year": 2021}, "embedding": [1, 0, 0]}"#,
        r#"{"id": "b", "title": "Second", "embedding": [0, 1, 0]}"#,
        r#"{"id": "c", "title": "#,
        "",
        r#"{"id": "d", "embedding": [1, 2]}"#,
        r#"{"id": "e", "meta": {"year": "soon"}}"#,
        r#"[1, 2]"#,
        r#"{"id": 7, "title": "Seventh"}"#,
        r#"{"title": "no id"}"#,
    ]
    .join("\n");
    let answer = ingest(&host, &token, "articles", "application/x-ndjson", &ndjson);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["accepted"], 4, "{answer}");
    assert_eq!(answer["rejected"], 4, "{answer}");
    let lines: Vec<(i64, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_i64().unwrap(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        [3, 5, 6, 7],
        "{lines:?}"
    );
    assert!(lines[0].1.starts_with("not JSON"), "{lines:?}");
    assert!(
        lines[1].1.contains("expected 3 dimensions, got 2"),
        "{lines:?}"
    );
    assert!(lines[2].1.contains("expected an integer"), "{lines:?}");
    assert!(lines[3].1.contains("JSON object"), "{lines:?}");
    assert_eq!(count(&host, "articles"), 4);
    let rows = host.sql_ok(
        "SELECT id, title, year, embedding::text AS embedding FROM articles WHERE id IN ('a', 'b', '7') ORDER BY id",
        &[],
    )["rows"]
        .clone();
    assert_eq!(
        rows,
        json!([
            { "id": "7", "title": "Seventh", "year": null, "embedding": null },
            { "id": "a", "title": "First", "year": 2021, "embedding": "[1,0,0]" },
            { "id": "b", "title": "Second", "year": null, "embedding": "[0,1,0]" },
        ])
    );

    // A JSON array; an id already stored is replaced (upsert), and within a
    // request the last document with an id wins.
    let array = json!([
        { "id": "a", "title": "First, again", "meta": { "year": 2024 } },
        { "id": "f", "title": "Sixth" },
        { "id": "f", "title": "Sixth, last" },
        "not an object"
    ]);
    let answer = ingest(
        &host,
        &token,
        "articles",
        "application/json",
        &array.to_string(),
    )
    .json();
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(
        answer["errors"],
        json!([{ "line": 4, "message": "a document must be a JSON object" }])
    );
    let a = host.sql_ok(
        "SELECT title, year, document->'meta' AS meta FROM articles WHERE id = 'a'",
        &[],
    );
    assert_eq!(
        a["rows"][0],
        json!({ "title": "First, again", "year": 2024, "meta": { "year": 2024 } })
    );
    assert_eq!(
        host.sql_ok("SELECT title FROM articles WHERE id = 'f'", &[])["rows"],
        json!([{ "title": "Sixth, last" }])
    );
    assert_eq!(count(&host, "articles"), 5);

    // Bad requests.
    ingest(&host, &token, "articles", "text/plain", "{}").expect_error(415);
    ingest(&host, &token, "nope", "application/x-ndjson", "{}").expect_error(404);
    let unclosed = ingest(
        &host,
        &token,
        "articles",
        "application/json",
        r#"[{"id": "z"}"#,
    );
    assert!(unclosed.expect_error(400).contains("not closed"));
    assert_eq!(
        count(&host, "articles"),
        5,
        "a failed ingest writes nothing"
    );

    let described = call(&host, "GET", "/v1/collections/articles", &token, None).json();
    assert_eq!(described["document_count"], 5, "{described}");
    assert!(described["size_bytes"].as_i64().unwrap() > 0, "{described}");
    assert_eq!(described["backfill"]["status"], "complete");
    assert!(
        described["indexes"][0]["definition"]
            .as_str()
            .unwrap()
            .contains("(id)"),
        "{described}"
    );

    let deleted = call(&host, "DELETE", "/v1/collections/articles", &token, None);
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    call(&host, "GET", "/v1/collections/articles", &token, None).expect_error(404);
    host.sql("SELECT 1 FROM articles", &[]).expect_error(400);
}

#[test]
fn what_postgres_would_refuse_is_the_clients_mistake_not_a_500() {
    let host = Host::start();
    let token = host.token();
    // Two first collections of a tenant at once: both are made.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let creates: Vec<_> = ["first_a", "first_b"]
            .into_iter()
            .map(|name| {
                let (host, token) = (&host, &token);
                scope.spawn(move || {
                    call(
                        host,
                        "POST",
                        "/v1/collections",
                        token,
                        Some(&json!({ "name": name })),
                    )
                    .status
                })
            })
            .collect();
        creates.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(statuses, [201, 201]);

    // A number Postgres's jsonb cannot hold is one rejected document; an
    // escaped backslash before `u0000` is no NUL.
    let ndjson = [
        r#"{"id": "kept"}"#,
        r#"{"id": "tiny", "x": 1e-20000}"#,
        r#"{"id": "path", "p": "C:\\u0000dir"}"#,
    ]
    .join("\n");
    let answer = ingest(&host, &token, "first_a", "application/x-ndjson", &ndjson);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(
        (answer["accepted"].as_i64(), answer["rejected"].as_i64()),
        (Some(2), Some(1)),
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["line"], 2, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("out of Postgres's range"),
        "{answer}"
    );
    let stored = host.sql_ok(
        "SELECT document->>'p' AS p FROM first_a WHERE id = 'path'",
        &[],
    );
    assert_eq!(stored["rows"][0]["p"], "C:\\u0000dir");

    // A backfill of a vector past float4's range: NULL there, not a PUT
    // that fails every time.
    let ingested = ingest(
        &host,
        &token,
        "first_b",
        "application/x-ndjson",
        "{\"id\": \"far\", \"v\": [1e39, 0], \"null\": {\"NULL\": \"here\"}}\n{\"id\": \"near\", \"v\": [1, 0]}",
    );
    assert_eq!(ingested.status, 200, "{}", ingested.text());
    let put = call(
        &host,
        "PUT",
        "/v1/collections/first_b/projection",
        &token,
        Some(&json!({ "projection": {
            "v": { "type": "vector(2)", "path": "$.v" },
            "word": { "type": "text", "path": "$.null.NULL" }
        } })),
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let rows = host.sql_ok(
        "SELECT id, v::text AS v, word FROM first_b ORDER BY id",
        &[],
    );
    assert_eq!(
        rows["rows"],
        json!([
            { "id": "far", "v": null, "word": "here" },
            { "id": "near", "v": "[1,0]", "word": null }
        ])
    );

    // A name a type already has; a projection past 100 columns.
    host.sql_ok("CREATE TYPE mood AS ENUM ('ok')", &[]);
    let taken = call(
        &host,
        "POST",
        "/v1/collections",
        &token,
        Some(&json!({ "name": "mood" })),
    )
    .expect_error(409);
    assert!(taken.contains("already exists"), "{taken}");
    let wide: serde_json::Map<String, Value> = (0..101)
        .map(|n| {
            (
                format!("c{n}"),
                json!({ "type": "text", "path": format!("$.c{n}") }),
            )
        })
        .collect();
    call(
        &host,
        "POST",
        "/v1/collections",
        &token,
        Some(&json!({ "name": "wide", "projection": wide })),
    )
    .expect_error(422);

    // An index name Postgres cannot take has no index.
    host.call("GET", "/v1/indexes/hnsw/a%00/v/stats", &token, None)
        .expect_error(404);
    call(
        &host,
        "POST",
        "/v1/indexes/hnsw/search",
        &token,
        Some(&json!({ "table": "a\u{0}", "column": "v", "vector": [1], "k": 1 })),
    )
    .expect_error(404);
}

#[test]
fn ingest_takes_bodies_past_the_hosts_limit_and_other_routes_do_not() {
    let host = Host::builder()
        .config("[http]\nbody_limit_bytes = 65536\n")
        .start();
    let token = host.token();
    let body = json!({ "name": "bulk" });
    assert_eq!(
        call(&host, "POST", "/v1/collections", &token, Some(&body)).status,
        201
    );
    // A declared empty body is refused (the host reads it first: still
    // nothing to read).
    let bearer = format!("Bearer {token}");
    let empty = host.request(
        "POST",
        "/v1/collections/bulk/ingest",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/x-ndjson"),
        ],
        Vec::new(),
    );
    assert!(
        empty.expect_error(400).contains("empty"),
        "{}",
        empty.text()
    );
    // About 1.2 MB, far past the host's limit of 64 KiB.
    let padding = "x".repeat(1000);
    let ndjson: String = (0..1200)
        .map(|n| format!("{}\n", json!({ "id": n, "padding": padding })))
        .collect();
    let answer = ingest(&host, &token, "bulk", "application/x-ndjson", &ndjson);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["accepted"], 1200);
    assert_eq!(count(&host, "bulk"), 1200);

    // The host's limit still holds for the other route groups.
    let big = format!("SELECT '{}'", "y".repeat(100_000));
    host.sql(&big, &[]).expect_error(413);
    // The route group's other routes read bodies whole, at most 16 MiB.
    let huge = json!({ "collection": "bulk", "column": "v", "vector": [0.5], "k": 1, "pad": "z".repeat(17 << 20) });
    let refused = host.try_request_streamed(
        "POST",
        "/v1/knn",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        std::io::Cursor::new(huge.to_string().into_bytes()),
    );
    // As with the host's own limit, the answer may race the client still
    // sending (see tests/e2e/http.rs): refused either way.
    match refused {
        Ok(response) => assert!(
            response.expect_error(413).contains("16777216"),
            "{}",
            response.text()
        ),
        Err(error) => assert!(
            error.contains("disconnected") || error.contains("reset") || error.contains("pipe"),
            "{error}"
        ),
    }
}

#[test]
fn a_projection_change_backfills_the_documents_already_stored() {
    let host = Host::start();
    let token = host.token();
    let body = json!({ "name": "events" });
    assert_eq!(
        call(&host, "POST", "/v1/collections", &token, Some(&body)).status,
        201
    );
    let ndjson: String = (0..2500)
        .map(|n| {
            let size = match n {
                7 => json!("big"),
                // Past 18 digits, within bigint; past bigint.
                8 => json!(1_000_000_000_000_000_000_i64),
                9 => json!(1e20),
                n => json!(n),
            };
            format!(
                "{}\n",
                json!({ "id": n, "size": size, "kind": format!("k{}", n % 3) })
            )
        })
        .collect();
    let answer = ingest(&host, &token, "events", "application/x-ndjson", &ndjson).json();
    assert_eq!(answer["accepted"], 2500, "{answer}");

    let projection = json!({ "projection": {
        "size": { "type": "integer", "path": "$.size" },
        "kind": { "type": "text", "path": "$.kind" }
    }});
    let changed = call(
        &host,
        "PUT",
        "/v1/collections/events/projection",
        &token,
        Some(&projection),
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(
        changed.json()["backfill"],
        json!({ "status": "complete", "pending": 0 })
    );
    let rows = host.sql_ok(
        "SELECT count(size) AS sized, count(*) FILTER (WHERE kind = 'k1') AS k1, sum(size) AS total FROM events",
        &[],
    )["rows"][0]
        .clone();
    // The documents whose size is no integer, or none a bigint holds, get NULL.
    assert_eq!(rows["sized"], 2498, "{rows}");
    assert_eq!(rows["k1"], 833, "{rows}");
    // sum(bigint) is numeric: a string, exact.
    assert_eq!(
        rows["total"],
        json!(((0..2500).sum::<i64>() - 7 - 8 - 9 + 1_000_000_000_000_000_000).to_string()),
        "{rows}"
    );
    let got = call(
        &host,
        "GET",
        "/v1/collections/events/projection",
        &token,
        None,
    )
    .json();
    assert_eq!(got["projection"], projection["projection"]);

    // Dropping a column and changing another's path.
    let projection = json!({ "projection": { "kind": { "type": "text", "path": "$.id" } } });
    let changed = call(
        &host,
        "PUT",
        "/v1/collections/events/projection",
        &token,
        Some(&projection),
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(
        host.sql_ok("SELECT kind FROM events WHERE id = '42'", &[])["rows"],
        json!([{ "kind": "42" }])
    );
    host.sql("SELECT size FROM events", &[]).expect_error(400);

    let bad = json!({ "projection": { "x": { "type": "integer" } } });
    call(
        &host,
        "PUT",
        "/v1/collections/events/projection",
        &token,
        Some(&bad),
    )
    .expect_error(422);
    call(
        &host,
        "PUT",
        "/v1/collections/none/projection",
        &token,
        Some(&projection),
    )
    .expect_error(404);
}

/// A deterministic pseudo-random sequence (xorshift), for reproducible vectors.
fn vectors(count: usize, dims: usize) -> Vec<Vec<f64>> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            (0..dims)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Two decimals, so the JSON and the float4 agree exactly.
                    ((state % 2001) as f64 - 1000.0) / 100.0
                })
                .collect()
        })
        .collect()
}

fn distance(metric: &str, a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match metric {
        "l2" => a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt(),
        "cosine" => {
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            1.0 - dot / (norm(a) * norm(b))
        }
        "inner_product" => -dot,
        _ => unreachable!(),
    }
}

#[test]
fn exact_knn_equals_brute_force_for_every_metric() {
    let host = Host::start();
    let token = host.token();
    let body = json!({
        "name": "points",
        "projection": { "embedding": { "type": "vector(8)", "path": "$.v" } }
    });
    assert_eq!(
        call(&host, "POST", "/v1/collections", &token, Some(&body)).status,
        201
    );
    let points = vectors(300, 8);
    let ndjson: String = points
        .iter()
        .enumerate()
        .map(|(n, v)| {
            let group = if n % 2 == 0 { "even" } else { "odd" };
            format!(
                "{}\n",
                json!({ "id": format!("p{n:03}"), "v": v, "group": group })
            )
        })
        .collect();
    assert_eq!(
        ingest(&host, &token, "points", "application/x-ndjson", &ndjson).json()["accepted"],
        300
    );
    let query = &vectors(301, 8)[300];

    for metric in ["l2", "cosine", "inner_product"] {
        let mut expected: Vec<(f64, String)> = points
            .iter()
            .enumerate()
            .map(|(n, v)| (distance(metric, query, v), format!("p{n:03}")))
            .collect();
        expected.sort_by(|a, b| a.0.total_cmp(&b.0));
        for target in [
            json!({ "collection": "points" }),
            json!({ "table": "points" }),
        ] {
            let mut request =
                json!({ "column": "embedding", "vector": query, "k": 10, "metric": metric });
            request
                .as_object_mut()
                .unwrap()
                .extend(target.as_object().unwrap().clone());
            let found = call(&host, "POST", "/v1/knn", &token, Some(&request));
            assert_eq!(found.status, 200, "{}", found.text());
            let results = found.json()["results"].as_array().unwrap().clone();
            assert_eq!(results.len(), 10);
            for (result, (want, id)) in results.iter().zip(&expected) {
                assert_eq!(result["id"], json!(id), "{metric} {target}: {results:?}");
                let got = result["distance"].as_f64().unwrap();
                assert!(
                    (got - want).abs() < 1e-3 * want.abs().max(1.0),
                    "{metric}: {got} vs {want}"
                );
            }
            // A collection's document; a table's row (the vector left out).
            let document = match target.get("table") {
                Some(_) => &results[0]["document"]["document"],
                None => &results[0]["document"],
            };
            assert!(document["group"].is_string(), "{results:?}");
            assert!(
                results[0]["document"].get("embedding").is_none(),
                "{results:?}"
            );
        }
    }

    // A filter is applied before ranking.
    let request = json!({ "collection": "points", "column": "embedding", "vector": query, "k": 5, "filter": { "group": "odd" } });
    let results = call(&host, "POST", "/v1/knn", &token, Some(&request)).json()["results"].clone();
    let mut odd: Vec<(f64, String)> = points
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 2 == 1)
        .map(|(n, v)| (distance("l2", query, v), format!("p{n:03}")))
        .collect();
    odd.sort_by(|a, b| a.0.total_cmp(&b.0));
    let odd: Vec<String> = odd.into_iter().take(5).map(|(_, id)| id).collect();
    let got: Vec<String> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, odd);

    // Bad searches.
    let search = |changes: Value| {
        let mut request =
            json!({ "collection": "points", "column": "embedding", "vector": query, "k": 3 });
        request
            .as_object_mut()
            .unwrap()
            .extend(changes.as_object().unwrap().clone());
        call(&host, "POST", "/v1/knn", &token, Some(&request))
    };
    let mismatch = search(json!({ "vector": [1, 2, 3] })).expect_error(422);
    assert!(mismatch.contains("dimension mismatch"), "{mismatch}");
    assert!(search(json!({ "k": 0 })).expect_error(422).contains("`k`"));
    assert!(
        search(json!({ "k": 1001 }))
            .expect_error(422)
            .contains("`k`")
    );
    search(json!({ "collection": "nowhere" })).expect_error(404);
    search(json!({ "column": "group" })).expect_error(422);
    search(json!({ "metric": "manhattan" })).expect_error(422);
    search(json!({ "table": "points" })).expect_error(422);

    // Another tenant sees none of it.
    let other = host
        .signup(&unique_email("other"), "a long test password")
        .access_token;
    let request = json!({ "collection": "points", "column": "embedding", "vector": query, "k": 3 });
    call(&host, "POST", "/v1/knn", &other, Some(&request)).expect_error(404);
    call(&host, "GET", "/v1/collections/points", &other, None).expect_error(404);
    let request = json!({ "table": "points", "column": "embedding", "vector": query, "k": 3 });
    call(&host, "POST", "/v1/knn", &other, Some(&request)).expect_error(404);
}

#[test]
fn collections_refuse_no_token_malformed_and_mistyped_bodies() {
    let host = Host::start();
    let token = host.token();
    let body = json!({ "name": "notes" });
    assert_eq!(
        call(&host, "POST", "/v1/collections", &token, Some(&body)).status,
        201
    );

    // No token: 401 on every route, nothing done.
    for (method, path) in [
        ("GET", "/v1/collections"),
        ("POST", "/v1/collections"),
        ("GET", "/v1/collections/notes"),
        ("DELETE", "/v1/collections/notes"),
        ("GET", "/v1/collections/notes/projection"),
        ("PUT", "/v1/collections/notes/projection"),
        ("POST", "/v1/collections/notes/ingest"),
        ("POST", "/v1/knn"),
    ] {
        host.request(method, path, &[], Vec::new())
            .expect_error(401);
    }

    let bearer = format!("Bearer {token}");
    let send = |method: &str, path: &str, body: &str| {
        host.request(
            method,
            path,
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            body.as_bytes().to_vec(),
        )
    };
    // Malformed JSON: 400; the right JSON of the wrong shape: 422.
    for (method, path) in [
        ("POST", "/v1/collections"),
        ("PUT", "/v1/collections/notes/projection"),
        ("POST", "/v1/knn"),
    ] {
        send(method, path, "{not json").expect_error(400);
    }
    for (method, path, body) in [
        ("POST", "/v1/collections", r#"{"name": 5}"#),
        ("POST", "/v1/collections", r#"{"name": "x", "extra": true}"#),
        (
            "PUT",
            "/v1/collections/notes/projection",
            r#"{"projection": []}"#,
        ),
        (
            "POST",
            "/v1/knn",
            r#"{"collection": "notes", "column": "v", "vector": "no", "k": 1}"#,
        ),
        (
            "POST",
            "/v1/knn",
            r#"{"collection": "notes", "column": "v", "vector": [1], "k": "1"}"#,
        ),
    ] {
        send(method, path, body).expect_error(422);
    }
    // Unknown names: 404.
    call(&host, "GET", "/v1/collections/nope", &token, None).expect_error(404);
    call(&host, "DELETE", "/v1/collections/nope", &token, None).expect_error(404);
    call(
        &host,
        "GET",
        "/v1/collections/nope/projection",
        &token,
        None,
    )
    .expect_error(404);
    call(&host, "DELETE", "/v1/collections/Bad-Name", &token, None).expect_error(404);
    // Nothing above changed the collection.
    let listed = call(&host, "GET", "/v1/collections", &token, None).json();
    assert_eq!(
        listed["collections"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(listed["collections"][0]["projection"], json!({}));
}

/// `{"a": {"a": … 1 …}}`, `levels` objects deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

#[test]
fn what_cannot_be_stored_or_read_back_is_refused_by_line_and_searches_check_their_input() {
    let host = Host::start();
    let token = host.token();
    let body = json!({
        "name": "docs",
        "projection": {
            "e": { "type": "vector(3)", "path": "$.e" },
            "first": { "type": "vector(2)", "path": "$.vs.0" },
            "n": { "type": "integer", "path": "$.a[0]" }
        }
    });
    assert_eq!(
        call(&host, "POST", "/v1/collections", &token, Some(&body)).status,
        201
    );

    // Each of these once failed the whole request (a 500 and nothing
    // stored) or was stored but broke every search that found it.
    let deep = json!({ "id": "deep", "e": [1, 0, 0], "d": nested(99) });
    let too_deep = json!({ "id": "too-deep", "e": [1, 0, 0], "d": nested(110) });
    let long_id = json!({ "id": "x".repeat(4000), "e": [0, 1, 0] });
    let key_as_index = json!({ "id": "k", "vs": [[1, 2, 3]] });
    let index_as_key = json!({ "id": "i", "a": { "0": "x" } });
    let fine = json!({ "id": "fine", "vs": [[1, 2]], "a": { "0": 5 } });
    let ndjson = [deep, too_deep, long_id, key_as_index, index_as_key, fine]
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let answer = ingest(&host, &token, "docs", "application/x-ndjson", &ndjson);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["accepted"], 2, "{answer}");
    let errors: Vec<(i64, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_i64().unwrap(), e["message"].to_string()))
        .collect();
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3, 4, 5]);
    assert!(errors[0].1.contains("deeper than 100 levels"), "{errors:?}");
    assert!(errors[1].1.contains("1-255 characters"), "{errors:?}");
    assert!(
        errors[2].1.contains("expected 2 dimensions, got 3"),
        "{errors:?}"
    );
    assert!(errors[3].1.contains("expected an integer"), "{errors:?}");
    let stored = host.sql_ok(
        "SELECT id, first::text AS first, n FROM docs ORDER BY id",
        &[],
    )["rows"]
        .clone();
    assert_eq!(
        stored,
        json!([
            { "id": "deep", "first": null, "n": null },
            { "id": "fine", "first": "[1,2]", "n": 5 },
        ])
    );

    // The deepest document stored comes back whole from a search.
    let search = json!({ "collection": "docs", "column": "e", "vector": [1, 0, 0], "k": 5 });
    let found = call(&host, "POST", "/v1/knn", &token, Some(&search));
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["results"][0]["document"]["d"], nested(99));

    // Search input Postgres would refuse is the caller's error, not ours.
    host.sql_ok(
        "CREATE TABLE items (id int, price numeric, e vector(3));
         INSERT INTO items VALUES (1, 10, '[1,0,0]'), (2, NULL, '[0,1,0]')",
        &[],
    );
    for (body, fragment) in [
        (
            json!({ "collection": "docs", "column": "e", "vector": [1e39, 0, 0], "k": 1 }),
            "float4",
        ),
        (
            json!({ "collection": "docs", "column": "e", "vector": [0, 0, 0], "k": 1, "metric": "cosine" }),
            "zero",
        ),
        (
            // Its norm is zero in float4, as pgvector sums it.
            json!({ "collection": "docs", "column": "e", "vector": [1e-30, 0, 0], "k": 1, "metric": "cosine" }),
            "zero",
        ),
        (
            json!({ "table": "items", "column": "e", "vector": [1, 0, 0], "k": 1, "filter": { "nope": 1 } }),
            "nope",
        ),
        (
            json!({ "table": "items", "column": "e", "vector": [1, 0, 0], "k": 1, "filter": { "price": "abc" } }),
            "abc",
        ),
    ] {
        let refused = call(&host, "POST", "/v1/knn", &token, Some(&body)).expect_error(422);
        assert!(refused.contains(fragment), "{body}: {refused}");
    }
    // A null filter value is IS NULL.
    let body = json!({ "table": "items", "column": "e", "vector": [1, 0, 0], "k": 5, "filter": { "price": null } });
    let found = call(&host, "POST", "/v1/knn", &token, Some(&body));
    assert_eq!(found.status, 200, "{}", found.text());
    let ids: Vec<Value> = found.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!("2")]);
}

#[test]
fn names_that_would_shadow_or_collide_are_refused_and_odd_tables_still_answer() {
    let host = Host::start();
    let token = host.token();
    let create = |body: Value| call(&host, "POST", "/v1/collections", &token, Some(&body));
    // pgvector's types would be hidden behind a table of that name.
    for name in ["vector", "halfvec", "sparsevec"] {
        let message = create(json!({ "name": name })).expect_error(422);
        assert!(message.contains("pgvector"), "{name}: {message}");
    }
    // Postgres's own columns cannot be projected.
    for column in ["xmin", "ctid", "tableoid"] {
        let message = create(json!({
            "name": "sys",
            "projection": { column: { "type": "text", "path": "$.x" } }
        }))
        .expect_error(422);
        assert!(message.contains(column), "{column}: {message}");
    }
    // A table with a column named `t` is searched as a whole row.
    host.sql_ok(
        "CREATE TABLE docs (id text, t text, emb extensions.vector(2));
         INSERT INTO docs VALUES ('a', 'tee', '[1,0]')",
        &[],
    );
    let found = call(
        &host,
        "POST",
        "/v1/knn",
        &token,
        Some(&json!({ "table": "docs", "column": "emb", "vector": [1, 0], "k": 1 })),
    );
    assert_eq!(found.status, 200, "{}", found.text());
    let found = found.json();
    assert_eq!(found["results"][0]["id"], "a", "{found}");
    assert_eq!(found["results"][0]["document"]["t"], "tee", "{found}");
    // A collection whose table was dropped through SQL is listed as such,
    // and can be deleted.
    assert_eq!(
        create(json!({
            "name": "gone",
            "projection": { "embedding": { "type": "vector(2)", "path": "$.e" } }
        }))
        .status,
        201
    );
    host.sql_ok("DROP TABLE gone", &[]);
    // What needs its table says it is gone (409), not a server fault.
    let answers = [
        ingest(
            &host,
            &token,
            "gone",
            "application/json",
            r#"[{"id": "a"}]"#,
        ),
        call(
            &host,
            "POST",
            "/v1/knn",
            &token,
            Some(&json!({ "collection": "gone", "column": "embedding", "vector": [1, 0], "k": 1 })),
        ),
        call(
            &host,
            "PUT",
            "/v1/collections/gone/projection",
            &token,
            Some(&json!({ "projection": { "x": { "type": "text", "path": "$.x" } } })),
        ),
    ];
    for answer in answers {
        let message = answer.expect_error(409);
        assert!(message.contains("outside this API"), "{message}");
    }
    let listed = call(&host, "GET", "/v1/collections", &token, None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    assert_eq!(listed["collections"][0]["table_missing"], true, "{listed}");
    assert_eq!(
        call(&host, "DELETE", "/v1/collections/gone", &token, None).status,
        204
    );
    // So is one whose row SQL wrote with a name the API would refuse: its
    // name is quoted as written, not spliced in.
    host.sql_ok(
        r#"INSERT INTO zatabase_collections (name) VALUES ('a"b')"#,
        &[],
    );
    let listed = call(&host, "GET", "/v1/collections", &token, None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    let odd = listed["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "a\"b")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(odd["table_missing"], true, "{listed}");
}

#[test]
fn a_search_cut_at_the_result_cap_says_so() {
    let host = Host::builder()
        .config("[sql]\nmax_result_bytes = 4194304\n")
        .start();
    let token = host.token();
    create_collection(
        &host,
        &token,
        json!({
            "name": "big",
            "projection": { "embedding": { "type": "vector(2)", "path": "$.embedding" } }
        }),
    );
    let filler = "x".repeat(1 << 20);
    let lines: Vec<String> = (0..6)
        .map(|i| json!({ "id": i, "embedding": [1, i], "filler": filler }).to_string())
        .collect();
    let ingested = ingest(
        &host,
        &token,
        "big",
        "application/x-ndjson",
        &lines.join("\n"),
    );
    assert_eq!(ingested.status, 200, "{}", ingested.text());
    let search = |k: u32| {
        call(
            &host,
            "POST",
            "/v1/knn",
            &token,
            Some(&json!({ "collection": "big", "column": "embedding", "vector": [1, 0], "k": k })),
        )
        .json()
    };
    let cut = search(6);
    assert_eq!(cut["truncated"], true, "truncated missing");
    assert!(cut["results"].as_array().unwrap().len() < 6);
    let whole = search(2);
    assert_eq!(whole["results"].as_array().unwrap().len(), 2);
    assert_eq!(whole.get("truncated"), None);
}

/// An ingest streams its body into one transaction, which a client sending
/// slowly holds open. Such transactions take turns for half the tenant's
/// connections: two slow ingests on a pool of two leave the project's other
/// SQL a connection (the second waits for its turn, then gives up), and
/// other transactions need no turn.
#[test]
fn slow_ingests_leave_the_tenants_other_sql_a_connection() {
    use std::io::{Read, Write};
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 2\nacquire_timeout_ms = 1000\n")
        .start();
    let token = host.token();
    create_collection(&host, &token, json!({ "name": "slow" }));
    let address = host.base.trim_start_matches("http://").to_owned();
    let chunk = |line: &str| format!("{:x}\r\n{line}\r\n", line.len());
    // Chunked, so the body is streamed to the route group as it comes.
    let open = || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST /v1/collections/slow/ingest HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}",
            chunk("{\"id\": \"a\"}\n")
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
    };
    let answer = |mut stream: std::net::TcpStream| {
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    let mut first = open();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let second = open();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let other = host.sql("SELECT 1 AS one", &[]);
    assert_eq!(other.status, 200, "{}", other.text());
    // A transaction no client holds open (its request's body read first)
    // takes no turn.
    create_collection(&host, &token, json!({ "name": "quick" }));
    let waited = answer(second);
    assert!(waited.starts_with("HTTP/1.1 503"), "{waited}");
    first
        .write_all(format!("{}0\r\n\r\n", chunk("{\"id\": \"b\"}\n")).as_bytes())
        .unwrap();
    let done = answer(first);
    assert!(done.starts_with("HTTP/1.1 200"), "{done}");
    assert!(done.contains("\"accepted\":2"), "{done}");
}
