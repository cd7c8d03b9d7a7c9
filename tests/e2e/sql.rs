//! `POST /v1/sql` through the real `sql` route group, in the development
//! tenant: results, errors, limits, and the tenant's walls.

use serde_json::json;
use zatabase_tests::Host;

#[test]
fn values_come_back_typed() {
    let host = Host::start();
    let body = host.sql_ok(
        "SELECT 1::int2 AS i2, 2::int4 AS i4, 3::int8 AS i8, 1.5::float8 AS f, 'NaN'::float8 AS nan, \
         29.99::numeric AS n, true AS b, 'x'::text AS t, '6f1c1a4e-0000-4000-8000-000000000001'::uuid AS u, \
         '2024-03-01'::date AS d, '2024-03-01 12:30:00+00'::timestamptz AS ts, \
         '1 day 02:00:00'::interval AS iv, '{\"a\":[1,2]}'::jsonb AS j, '\\x00ff'::bytea AS bytes, \
         ARRAY[1,NULL,3] AS arr, '[1,2.5,3]'::extensions.vector AS v, NULL::text AS nothing, \
         '192.168.0.1'::inet AS other",
        &[],
    );
    assert_eq!(
        body["rows"][0],
        json!({
            "i2": 1, "i4": 2, "i8": 3, "f": 1.5, "nan": "NaN", "n": "29.99", "b": true, "t": "x",
            "u": "6f1c1a4e-0000-4000-8000-000000000001", "d": "2024-03-01",
            "ts": "2024-03-01T12:30:00+00:00", "iv": "P1DT2H", "j": { "a": [1, 2] }, "bytes": "AP8=",
            "arr": [1, null, 3], "v": [1.0, 2.5, 3.0], "nothing": null, "other": "192.168.0.1"
        })
    );
    let types: Vec<&str> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(&types[..4], ["int2", "int4", "int8", "float8"]);
    assert!(
        types.contains(&"vector") && types.contains(&"int4[]") && types.contains(&"inet"),
        "{types:?}"
    );
}

#[test]
fn parameters_are_values_never_sql() {
    let host = Host::start();
    host.sql_ok("CREATE TABLE notes (id serial PRIMARY KEY, body text, tags text[], emb vector(2), meta jsonb)", &[]);
    let evil = "x'); DROP TABLE notes; --\\";
    let inserted = host.sql_ok(
        "INSERT INTO notes (body, tags, emb, meta) VALUES ($1, $2, $3, $4) RETURNING body, tags, emb, meta",
        &[json!(evil), json!(["a", "b,c", "\"q\""]), json!([0.5, 1]), json!({ "k": "v" })],
    );
    assert_eq!(
        inserted["rows"][0],
        json!({ "body": evil, "tags": ["a", "b,c", "\"q\""], "emb": [0.5, 1.0], "meta": { "k": "v" } })
    );
    assert_eq!(inserted["affected_rows"], 1);
    let count = host.sql_ok(
        "SELECT count(*) AS n FROM notes WHERE body = $1",
        &[json!(evil)],
    );
    assert_eq!(count["rows"], json!([{ "n": 1 }]));
    host.sql("SELECT $1, $2", &[json!(1)]).expect_error(400);
    host.sql("SELECT 1", &[json!(1)]).expect_error(400);
    host.sql("SELECT $1; SELECT 2", &[json!(1)])
        .expect_error(400);
}

#[test]
fn errors_map_to_statuses_and_nothing_is_half_applied() {
    let host = Host::start();
    let syntax = host.sql("SELECT 1 FROM FROM", &[]).expect_error(400);
    assert!(
        syntax.contains("syntax error") && syntax.contains("at character"),
        "{syntax}"
    );
    host.sql("SELECT * FROM nowhere", &[]).expect_error(400);
    host.sql_ok(
        "CREATE TABLE uniq (k text UNIQUE, n int CHECK (n > 0))",
        &[],
    );
    host.sql_ok("INSERT INTO uniq VALUES ('a', 1)", &[]);
    host.sql("INSERT INTO uniq VALUES ('a', 2)", &[])
        .expect_error(409);
    host.sql("INSERT INTO uniq VALUES ('b', -1)", &[])
        .expect_error(422);
    host.sql("SELECT 'abc'::int", &[]).expect_error(400);
    // Several statements are one transaction: a failure undoes the others.
    host.sql(
        "CREATE TABLE half (x int); INSERT INTO half VALUES (1); SELECT 1/0",
        &[],
    )
    .expect_error(400);
    host.sql("SELECT * FROM half", &[]).expect_error(400);
    // Transaction control would step outside that transaction.
    for statement in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SELECT 1; COMMIT; DROP TABLE uniq",
    ] {
        let message = host.sql(statement, &[]).expect_error(400);
        assert!(
            message.contains("not available here"),
            "{statement}: {message}"
        );
    }
    assert_eq!(
        host.sql_ok("SELECT count(*) AS n FROM uniq", &[])["rows"],
        json!([{ "n": 1 }])
    );
}

#[test]
fn timeouts_cut_long_statements_and_the_pool_recovers() {
    let host = Host::builder()
        .config("[sql]\nstatement_timeout_ms = 300\n")
        .start();
    let message = host.sql("SELECT pg_sleep(600)", &[]).expect_error(408);
    assert!(message.contains("statement timeout"), "{message}");
    for _ in 0..10 {
        host.sql_ok("SELECT 1", &[]);
    }
}

#[test]
fn results_are_capped() {
    let host = Host::builder().config("[sql]\nmax_rows = 5\n").start();
    let body = host.sql_ok("SELECT generate_series(1, 50) AS n", &[]);
    assert_eq!(body["rows"].as_array().unwrap().len(), 5);
    assert_eq!(body["truncated"], true);
    let small = host.sql_ok("SELECT generate_series(1, 5) AS n", &[]);
    assert!(small.get("truncated").is_none(), "{small}");
}

#[test]
fn the_tenant_cannot_leave_its_schema() {
    let host = Host::start();
    let whoami = host.sql_ok(
        "SELECT current_user AS role, current_schema() AS schema, session_user AS login",
        &[],
    );
    let role = whoami["rows"][0]["role"].as_str().unwrap().to_owned();
    let schema = whoami["rows"][0]["schema"].as_str().unwrap().to_owned();
    let login = whoami["rows"][0]["login"].as_str().unwrap().to_owned();
    assert!(
        schema.starts_with("tenant_") && schema.ends_with("_sandbox"),
        "{schema}"
    );
    assert_eq!(role, format!("{schema}_owner"));
    assert_eq!(login, format!("{schema}_login"));
    for attack in &[
        "SELECT * FROM zatabase._sqlx_migrations".to_owned(),
        "RESET ROLE; SELECT * FROM zatabase._sqlx_migrations".to_owned(),
        "SELECT email FROM zatabase.users".to_owned(),
        "SET ROLE zatabase".to_owned(),
        "SET SESSION AUTHORIZATION zatabase".to_owned(),
        "SELECT pg_read_file('/etc/passwd')".to_owned(),
        "COPY (SELECT 1) TO PROGRAM 'id'".to_owned(),
        "CREATE EXTENSION dblink".to_owned(),
        "CREATE ROLE intruder".to_owned(),
        "CREATE TABLE zatabase.planted (x int)".to_owned(),
        "CREATE DATABASE elsewhere".to_owned(),
        format!("ALTER ROLE {login} SUPERUSER"),
        format!("GRANT {role} TO PUBLIC"),
    ] {
        let response = host.sql(attack, &[]);
        assert!(
            response.status == 403 || response.status == 400,
            "{attack}: {} {}",
            response.status,
            response.text()
        );
        response.expect_error(response.status);
    }
    // After RESET ROLE the session is the login role, still walled in.
    let reset = host.sql_ok("RESET ROLE; SELECT current_user AS role", &[]);
    assert_eq!(reset["rows"], json!([{ "role": login }]));
}
