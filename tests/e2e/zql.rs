//! ZQL (`/api/zql/*`): golden queries over a fixed data set, every route's
//! round trip, errors with their position, tenants kept apart, and what a
//! crash keeps (durable and flushed inserts) when the host is killed.

use std::time::Duration;

use rustix::process::Signal;
use serde_json::{Value, json};
use zatabase_tests::{Host, Resp, alive, eventually, unique_email};

fn post(host: &Host, token: &str, path: &str, body: Value) -> Resp {
    host.call("POST", path, token, Some(&body))
}

fn zql(host: &Host, token: &str, query: &str, params: Value) -> Resp {
    post(
        host,
        token,
        "/api/zql/query",
        json!({ "query": query, "params": params }),
    )
}

fn results(host: &Host, token: &str, query: &str, params: Value) -> Value {
    let answer = zql(host, token, query, params);
    assert!(
        answer.status == 200 || answer.status == 201,
        "{query}: {}",
        answer.text()
    );
    answer.json()["results"].clone()
}

fn ids(results: &Value) -> Vec<String> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The fixed data set of the golden tests.
fn shop(host: &Host, token: &str) {
    for (id, namespace, data, vector) in [
        (
            "pen",
            "shop",
            json!({ "name": "pen", "price": 2, "tags": ["office"], "maker": { "country": "de" } }),
            Some(json!([1, 0, 0])),
        ),
        (
            "ink",
            "shop",
            json!({ "name": "ink", "price": 7.5, "maker": { "country": "fr" } }),
            Some(json!([0.9, 0.1, 0])),
        ),
        (
            "pad",
            "shop",
            json!({ "name": "pad", "price": 4, "stock": { "count": 0 }, "maker": { "country": "de" } }),
            Some(json!([0, 1, 0])),
        ),
        (
            "mug",
            "shop",
            json!({ "name": "mug", "price": "n/a", "tags": ["home", "office"] }),
            None,
        ),
        (
            "owl",
            "zoo",
            json!({ "name": "owl", "price": 100 }),
            Some(json!([0, 0, 1])),
        ),
    ] {
        let mut body = json!({ "id": id, "namespace": namespace, "data": data });
        if let Some(vector) = vector {
            body["vector"] = vector;
        }
        let inserted = post(host, token, "/api/zql/insert", body);
        assert_eq!(inserted.status, 201, "{}", inserted.text());
        assert_eq!(inserted.json(), json!({ "id": id }));
    }
}

#[test]
fn golden_queries_over_a_fixed_data_set() {
    let host = Host::start();
    let token = host.token();
    // Before any record: reads find nothing, writes change nothing.
    assert_eq!(results(&host, &token, "FIND", json!({})), json!([]));
    assert_eq!(
        results(&host, &token, "COUNT", json!({})),
        json!([{ "count": 0 }])
    );
    // Aggregates answer as over an empty table: one row ungrouped, no
    // groups grouped.
    let before = "AGGREGATE sum(price) AS total, max(price), count(tags), count(*) IN shop";
    let over_none = json!([{ "total": null, "max(price)": null, "count(tags)": 0, "count": 0 }]);
    assert_eq!(results(&host, &token, before, json!({})), over_none);
    let grouped = "AGGREGATE count(*) AS n GROUP BY maker.country";
    assert_eq!(results(&host, &token, grouped, json!({})), json!([]));
    shop(&host, &token);
    assert_eq!(
        results(
            &host,
            &token,
            &format!("{before} WHERE price > 1000"),
            json!({})
        ),
        over_none,
        "the same over a table with no such records"
    );

    for (query, params, expected) in [
        (
            "FIND IN shop ORDER BY @id",
            json!({}),
            vec!["ink", "mug", "pad", "pen"],
        ),
        (
            "FIND ORDER BY @id LIMIT 2 OFFSET 3",
            json!({}),
            vec!["pad", "pen"],
        ),
        (
            "FIND IN shop WHERE price > 3 ORDER BY price",
            json!({}),
            vec!["pad", "ink"],
        ),
        ("find in shop where price > '3'", json!({}), vec!["mug"]),
        (
            "FIND IN shop WHERE price BETWEEN 2 AND 4 ORDER BY price DESC",
            json!({}),
            vec!["pad", "pen"],
        ),
        (
            "FIND IN shop WHERE NOT price BETWEEN 2 AND 4 ORDER BY @id",
            json!({}),
            vec!["ink", "mug"],
        ),
        ("FIND WHERE EXISTS stock.count", json!({}), vec!["pad"]),
        (
            "FIND IN shop WHERE NOT EXISTS tags ORDER BY @id",
            json!({}),
            vec!["ink", "pad"],
        ),
        (
            "FIND WHERE tags[0] IN ('office', $other) ORDER BY @id",
            json!({ "other": "home" }),
            vec!["mug", "pen"],
        ),
        (
            "FIND WHERE tags = ['home', 'office']",
            json!({}),
            vec!["mug"],
        ),
        (
            "FIND WHERE maker.country = 'de' AND (price < 3 OR name = 'pad') ORDER BY name",
            json!({}),
            vec!["pad", "pen"],
        ),
        (
            "FIND WHERE maker.country != 'de' ORDER BY @id",
            json!({}),
            vec!["ink"],
        ),
        (
            "FIND WHERE @namespace = 'zoo' OR @id IN ('pen')  ORDER BY @id",
            json!({}),
            vec!["owl", "pen"],
        ),
        (
            "FIND WHERE @created_at > '2000-01-01T00:00:00Z' AND name = $n",
            json!({ "n": "owl" }),
            vec!["owl"],
        ),
        (
            "FIND IN shop ORDER BY maker.country DESC, @id",
            json!({}),
            vec!["ink", "pad", "pen", "mug"],
        ),
        ("FIND NEAR [1, 0, 0] TOP 2", json!({}), vec!["pen", "ink"]),
        (
            "FIND IN shop WHERE price > 3 NEAR [1, 0, 0] TOP 2",
            json!({}),
            vec!["ink", "pad"],
        ),
        (
            "FIND IN shop NEAR $v USING cosine TOP 10",
            json!({ "v": [0, 1, 0.1] }),
            vec!["pad", "ink", "pen"],
        ),
        ("GET 'ink'", json!({}), vec!["ink"]),
        ("GET $id", json!({ "id": "nothing" }), vec![]),
    ] {
        let found = results(&host, &token, query, params);
        assert_eq!(ids(&found), expected, "{query}: {found}");
    }
    // NEAR answers its distances, nearest first.
    let near = results(&host, &token, "FIND NEAR [1, 0, 0] TOP 2", json!({}));
    assert_eq!(near[0]["score"], 0.0);
    assert!(
        (near[1]["score"].as_f64().unwrap() - 0.14142).abs() < 1e-4,
        "{near}"
    );
    assert_eq!(near[0]["data"]["name"], "pen");

    for (query, expected) in [
        ("COUNT IN shop", json!([{ "count": 4 }])),
        ("count where price >= 4", json!([{ "count": 3 }])),
        (
            "AGGREGATE sum(price) AS total, max(price), count(tags), count(*) IN shop",
            json!([{ "total": 13.5, "max(price)": 7.5, "count(tags)": 2, "count": 4 }]),
        ),
        (
            "AGGREGATE count(*) AS n, avg(price) AS mean GROUP BY maker.country",
            json!([
                { "maker.country": "de", "n": 2, "mean": 3 },
                { "maker.country": "fr", "n": 1, "mean": 7.5 },
                { "maker.country": null, "n": 2, "mean": 100 },
            ]),
        ),
    ] {
        assert_eq!(
            results(&host, &token, query, json!({})),
            expected,
            "{query}"
        );
    }

    // Writes answer what they changed.
    let updated = zql(
        &host,
        &token,
        "UPDATE IN shop SET price = 3, stock.count = 5 WHERE name = $n",
        json!({ "n": "pad" }),
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["affected"], 1);
    let pad = host.call("GET", "/api/zql/record/pad", &token, None).json();
    assert_eq!(pad["data"]["price"], 3);
    assert_eq!(pad["data"]["stock"], json!({ "count": 5 }));
    assert_ne!(pad["updated_at"], pad["created_at"], "{pad}");
    let deleted = zql(&host, &token, "DELETE IN shop WHERE price > 5", json!({}));
    assert_eq!(deleted.json()["affected"], 1);
    let inserted = zql(
        &host,
        &token,
        "INSERT INTO shop {name: 'cup', price: 1} VECTOR [0.5, 0.5, 0]",
        json!({}),
    );
    assert_eq!(inserted.status, 201, "{}", inserted.text());
    let cup = inserted.json()["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(cup.len(), 36, "a generated UUID: {cup}");
    assert_eq!(
        ids(&results(
            &host,
            &token,
            "FIND IN shop WHERE price < 5 ORDER BY price LIMIT 2",
            json!({})
        )),
        [cup.as_str(), "pen"]
    );
    assert_eq!(
        zql(&host, &token, "DELETE ID $id", json!({ "id": cup })).json()["affected"],
        1
    );
}

#[test]
fn every_route_round_trips_and_bad_input_is_refused() {
    let host = Host::start();
    let token = host.token();
    shop(&host, &token);

    let record = host.call("GET", "/api/zql/record/pen", &token, None);
    assert_eq!(record.status, 200, "{}", record.text());
    let record = record.json();
    assert_eq!(record["namespace"], "shop");
    assert_eq!(record["data"]["tags"], json!(["office"]));
    let vector: Vec<f64> = record["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(vector, [1.0, 0.0, 0.0]);
    assert!(record["created_at"].is_string() && record["updated_at"].is_string());
    let mug = host.call("GET", "/api/zql/record/mug", &token, None).json();
    assert!(mug.get("vector").is_none(), "{mug}");

    let found = post(
        &host,
        &token,
        "/api/zql/search",
        json!({ "namespace": "shop", "vector": [1, 0, 0], "k": 2, "filter": "price >= $min", "params": { "min": 3 } }),
    );
    assert_eq!(found.status, 200, "{}", found.text());
    let found = found.json();
    assert_eq!(ids(&found["results"]), ["ink", "pad"]);
    assert_eq!(found["results"][0]["data"]["name"], "ink");
    assert!(
        found["results"][0]["score"].as_f64().unwrap()
            < found["results"][1]["score"].as_f64().unwrap()
    );
    let cosine = post(
        &host,
        &token,
        "/api/zql/search",
        json!({ "vector": [0, 0, 2], "k": 1, "metric": "cosine" }),
    )
    .json();
    assert_eq!(ids(&cosine["results"]), ["owl"]);

    let info = host.call("GET", "/api/zql/info", &token, None).json();
    assert_eq!(info["records"], 5, "{info}");
    assert_eq!(info["pending"], 0);
    assert_eq!(
        info["namespaces"],
        json!([
            { "namespace": "shop", "records": 4, "with_vector": 3, "pending": 0 },
            { "namespace": "zoo", "records": 1, "with_vector": 1, "pending": 0 },
        ])
    );
    assert!(info["storage_bytes"].as_i64().unwrap() > 0);
    assert!(info["indexes"].as_array().unwrap().len() >= 2, "{info}");

    assert_eq!(
        host.call("DELETE", "/api/zql/record/pen", &token, None)
            .status,
        204
    );
    host.call("GET", "/api/zql/record/pen", &token, None)
        .expect_error(404);
    host.call("DELETE", "/api/zql/record/pen", &token, None)
        .expect_error(404);

    // Bad input: each refused with its reason, nothing written.
    for (query, params, fragment) in [
        ("FIND WHERE price >", json!({}), "line 1, column 19"),
        (
            "FIND\n  WHERE price = 1 LIMT 3",
            json!({}),
            "expected the end of the query, found `LIMT` at line 2, column 19",
        ),
        (
            "SELECT * FROM zatabase_records",
            json!({}),
            "expected FIND, COUNT, AGGREGATE, GET, INSERT, UPDATE or DELETE",
        ),
        (
            "FIND WHERE name = $missing",
            json!({}),
            "parameter `$missing` is not given",
        ),
        (
            "FIND NEAR [1, 0] TOP 2",
            json!({}),
            "different vector dimensions",
        ),
        ("FIND LIMIT 100000", json!({}), "LIMIT must be an integer"),
        (
            "INSERT {name: 'x'} ID 7",
            json!({}),
            "a record id must be a string",
        ),
        (
            "FIND WHERE @created_at > 'yesterday-ish'",
            json!({}),
            "timestamp",
        ),
    ] {
        let message = zql(&host, &token, query, params).expect_error(400);
        assert!(message.contains(fragment), "{query}: {message}");
    }
    let taken = post(
        &host,
        &token,
        "/api/zql/insert",
        json!({ "id": "ink", "data": { "name": "again" } }),
    )
    .expect_error(409);
    assert!(taken.contains("already exists"), "{taken}");
    for (path, body, status) in [
        ("/api/zql/insert", json!({ "data": [1, 2] }), 422),
        (
            "/api/zql/insert",
            json!({ "data": {}, "colour": "red" }),
            422,
        ),
        (
            "/api/zql/search",
            json!({ "vector": [1, 0, 0], "k": 0 }),
            422,
        ),
        (
            // Deeper than a record may nest (it could not be read back).
            "/api/zql/insert",
            json!({ "data": (0..101).fold(json!(1), |inner, _| json!({ "a": inner })) }),
            422,
        ),
        (
            // Each parameter shallow enough, the record they make not.
            "/api/zql/query",
            json!({
                "query": "INSERT INTO n {a: {b: $p}}",
                "params": { "p": (0..99).fold(json!(1), |inner, _| json!([inner])) }
            }),
            422,
        ),
        (
            "/api/zql/query",
            json!({
                "query": "UPDATE IN n SET a.b = $p WHERE @id = 'x'",
                "params": { "p": (0..99).fold(json!(1), |inner, _| json!([inner])) }
            }),
            422,
        ),
        (
            "/api/zql/search",
            json!({ "vector": [1, 0, 0], "k": 1, "metric": "hamming" }),
            422,
        ),
        (
            "/api/zql/search",
            json!({ "vector": [1, 0, 0], "k": 1, "filter": "price >" }),
            400,
        ),
        ("/api/zql/query", json!({ "params": {} }), 422),
    ] {
        post(&host, &token, path, body).expect_error(status);
    }
    assert_eq!(
        host.call("GET", "/api/zql/info", &token, None).json()["records"],
        4
    );

    // Another tenant sees nothing of it.
    let other = host
        .signup(&unique_email("zql-peer"), "a long test password")
        .access_token;
    host.call("GET", "/api/zql/record/ink", &other, None)
        .expect_error(404);
    host.call("DELETE", "/api/zql/record/ink", &other, None)
        .expect_error(404);
    assert_eq!(results(&host, &other, "FIND", json!({})), json!([]));
    assert_eq!(
        zql(&host, &other, "DELETE WHERE EXISTS name", json!({})).json()["affected"],
        0
    );
    assert_eq!(
        host.call("GET", "/api/zql/info", &other, None).json()["records"],
        0
    );
    assert_eq!(
        host.call("GET", "/api/zql/info", &token, None).json()["records"],
        4
    );
    host.request("GET", "/api/zql/info", &[], Vec::new())
        .expect_error(401);
}

/// A large read answers: the rows pass through as the host wrote them,
/// not held again as parsed values (10,000 records of 400 small numbers
/// each parse to about eight times their text, past the route group's
/// 64 MiB, which answered 500). Searches keep each record's fields as
/// written too.
#[test]
fn a_large_read_is_answered_not_dropped() {
    let host = Host::start();
    let token = host.token();
    assert_eq!(
        post(
            &host,
            &token,
            "/api/zql/insert",
            json!({ "id": "first", "data": { "n": 0 }, "vector": [1, 0] }),
        )
        .status,
        201
    );
    host.sql_ok(
        "INSERT INTO zatabase_records (id, namespace, data, embedding)
         SELECT 'r' || i, 'default',
                jsonb_build_object('tags', (SELECT jsonb_agg(j) FROM generate_series(1, 400) j)),
                '[0,1]'
         FROM generate_series(1, 10000) i",
        &[],
    );
    let found = zql(&host, &token, "FIND LIMIT 10000", json!({}));
    assert_eq!(found.status, 200, "{}", found.text());
    let found = found.json();
    let rows = found["results"].as_array().unwrap();
    assert!(rows.len() > 1000, "{} rows", rows.len());
    assert_eq!(
        rows.len() == 10000,
        found.get("truncated").is_none(),
        "cut results say so"
    );
    assert_eq!(rows[1]["data"]["tags"].as_array().unwrap().len(), 400);

    let near = post(
        &host,
        &token,
        "/api/zql/search",
        json!({ "vector": [1, 0], "k": 3 }),
    );
    assert_eq!(near.status, 200, "{}", near.text());
    let near = near.json();
    assert_eq!(near["results"][0]["id"], "first", "{}", near["results"][0]);
    let fields: Vec<&String> = near["results"][0].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["data", "id", "score"]);
    assert_eq!(near["results"][0]["data"], json!({ "n": 0 }));
    assert_eq!(near["results"][0]["score"], 0.0);
    assert_eq!(near["results"][1]["data"]["tags"][399], 400);
}

#[test]
fn a_killed_host_keeps_every_durable_and_flushed_insert() {
    let mut host = Host::start();
    let token = host.token();
    for n in 0..20 {
        let durable = post(
            &host,
            &token,
            "/api/zql/insert",
            json!({ "id": format!("durable-{n}"), "namespace": "kept", "data": { "n": n } }),
        );
        assert_eq!(durable.status, 201, "{}", durable.text());
        let buffered = post(
            &host,
            &token,
            "/api/zql/insert",
            json!({ "id": format!("flushed-{n}"), "namespace": "kept", "data": { "n": n }, "durable": false }),
        );
        assert_eq!(buffered.status, 201, "{}", buffered.text());
    }
    let info = host.call("GET", "/api/zql/info", &token, None).json();
    assert_eq!(info["pending"], 20, "{info}");
    assert_eq!(info["last_flush"], Value::Null);
    let flushed = post(&host, &token, "/api/zql/flush", json!({}));
    assert_eq!(flushed.json(), json!({ "flushed": 20 }));
    assert_eq!(
        post(&host, &token, "/api/zql/flush", json!({})).json(),
        json!({ "flushed": 0 })
    );
    let info = host.call("GET", "/api/zql/info", &token, None).json();
    assert_eq!(
        (info["pending"].clone(), info["flushed_total"].clone()),
        (json!(0), json!(20))
    );
    assert!(info["last_flush"].is_string(), "{info}");
    // Buffered and never flushed: the crash may or may not keep these.
    for n in 0..20 {
        post(
            &host,
            &token,
            "/api/zql/insert",
            json!({ "id": format!("unflushed-{n}"), "namespace": "maybe", "data": { "n": n }, "durable": false }),
        );
    }
    // The last durable insert answers just before the kill.
    let last = post(
        &host,
        &token,
        "/api/zql/insert",
        json!({ "id": "durable-last", "namespace": "kept", "data": {} }),
    );
    assert_eq!(last.status, 201);

    host.keep_data();
    let postgres = host.postgres_pid().unwrap();
    host.stop_with(Signal::KILL);
    assert!(eventually(Duration::from_secs(30), || !alive(postgres)));
    let data_dir = host.data_dir.clone();
    drop(host);
    let again = Host::builder().data_dir(&data_dir).start();
    again.use_token(&token);
    let kept = results(&again, &token, "COUNT IN kept", json!({}));
    assert_eq!(
        kept,
        json!([{ "count": 41 }]),
        "every durable and flushed insert"
    );
    drop(again);
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}

#[test]
fn first_writes_at_once_all_land_and_no_other_tenant_can_hold_them_up() {
    let host = Host::start();
    let token = host.token();
    let schema = host.sql_ok("SELECT current_schema() AS s", &[])["rows"][0]["s"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another tenant holds, for longer than the writes below take, the
    // advisory key the store's creation once waited on (computable by
    // anyone from the schema's name).
    let peer = host.signup(&unique_email("zql-holder"), "a long test password");
    std::thread::scope(|scope| {
        let holder = scope.spawn(|| {
            host.call(
                "POST",
                "/v1/sql",
                &peer.access_token,
                Some(&json!({
                    "query": "SELECT pg_advisory_xact_lock(hashtext($1)), pg_sleep(6)",
                    "params": [format!("{schema}.zatabase_records")],
                })),
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        // The tenant's first writes, eight at once: each may be the one
        // that makes its tables.
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let token = &token;
                let host = &host;
                scope.spawn(move || {
                    let body =
                        json!({ "id": format!("r{i}"), "namespace": "first", "data": { "i": i } });
                    post(host, token, "/api/zql/insert", body)
                })
            })
            .collect();
        for writer in writers {
            let inserted = writer.join().unwrap();
            assert_eq!(inserted.status, 201, "{}", inserted.text());
        }
        assert!(
            !holder.is_finished(),
            "the writes waited for another tenant's lock"
        );
        assert_eq!(holder.join().unwrap().status, 200);
    });
    let counted = host.sql_ok("SELECT count(*) AS n FROM zatabase_records", &[]);
    assert_eq!(counted["rows"][0]["n"], 8, "{counted}");
}
