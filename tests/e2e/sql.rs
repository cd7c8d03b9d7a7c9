//! `POST /v1/sql` through the real `sql` route group, in the development
//! tenant: results, errors, limits, and the tenant's walls.

use std::time::Duration;

use serde_json::json;
use zatabase_tests::{Host, eventually, unique_email};

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
    // Single precision as Postgres writes it, not widened to a double's
    // digits (0.10000000149011612); arrays of any dimension nest.
    let more = host.sql_ok(
        "SELECT 0.1::float4 AS r, '[0.1,0.3]'::extensions.vector AS v, \
         '{{1,2},{3,NULL}}'::int[] AS grid, '[0:1]={5,6}'::int[] AS shifted, \
         ARRAY[['a,b'],['c\"d']] AS words, '12:30:00.5'::time AS t, \
         '12:30:00+00'::timetz AS tz, '12:30:00-05:30'::timetz AS tz2",
        &[],
    );
    // A time's offset reads as a timestamp's does (and as Postgres's own
    // `to_json` writes it).
    assert_eq!(
        more["rows"][0],
        json!({
            "r": 0.1, "v": [0.1, 0.3], "grid": [[1, 2], [3, null]], "shifted": [5, 6],
            "words": [["a,b"], ["c\"d"]], "t": "12:30:00.5", "tz": "12:30:00+00:00",
            "tz2": "12:30:00-05:30"
        })
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
fn several_statements_answer_with_the_last_ones_rows() {
    let host = Host::start();
    // A rule's parenthesised actions hold semicolons that end no statement
    // (Postgres reads four here): the rows are still the last statement's.
    let created = host.sql_ok(
        "CREATE TABLE audit (v int); CREATE TABLE items (v int); \
         CREATE RULE copy AS ON INSERT TO items DO ALSO \
           (INSERT INTO audit VALUES (NEW.v); INSERT INTO audit VALUES (NEW.v * 10)); \
         SELECT 'last' AS which",
        &[],
    );
    assert_eq!(created["rows"], json!([{ "which": "last" }]));
    let audited = host.sql_ok(
        "INSERT INTO items VALUES (2); SELECT v FROM audit ORDER BY v",
        &[],
    );
    assert_eq!(audited["rows"], json!([{ "v": 2 }, { "v": 20 }]));
    // A semicolon inside parentheses anywhere else is Postgres's syntax
    // error, and nothing before it ran.
    host.sql("INSERT INTO items VALUES (3); SELECT (1; SELECT 2)", &[])
        .expect_error(400);
    assert_eq!(
        host.sql_ok("SELECT count(*) AS n FROM audit", &[])["rows"],
        json!([{ "n": 2 }])
    );
}

#[test]
fn errors_map_to_statuses_and_nothing_is_half_applied() {
    let host = Host::start();
    // Positions count in the client's text, whatever the host sent before
    // it or put in place of its parameters.
    let syntax = host.sql("SELECT 1 FROM FROM", &[]).expect_error(400);
    assert!(
        syntax.contains("syntax error") && syntax.contains("(at character 15)"),
        "{syntax}"
    );
    let with_params = host
        .sql(
            "SELECT $1::text, $2::int FROM FROM",
            &[json!("a long parameter value"), json!(7)],
        )
        .expect_error(400);
    assert!(with_params.contains("(at character 31)"), "{with_params}");
    let nowhere = host.sql("SELECT * FROM nowhere", &[]).expect_error(400);
    assert!(
        nowhere.contains("relation \"nowhere\" does not exist"),
        "{nowhere}"
    );
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
    // A NUL is the client's mistake, not a failed database.
    let nul = host.sql("SELECT 1\u{0}", &[]).expect_error(400);
    assert!(nul.contains("NUL"), "{nul}");
    // Several statements are one transaction: a failure undoes the others.
    let failed = host
        .sql(
            "CREATE TABLE half (x int); INSERT INTO half VALUES (1); SELECT 1/0",
            &[],
        )
        .expect_error(400);
    assert!(failed.contains("division by zero"), "{failed}");
    let gone = host.sql("SELECT * FROM half", &[]).expect_error(400);
    assert!(gone.contains("relation \"half\" does not exist"), "{gone}");
    // Transaction control would step outside that transaction.
    for statement in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SELECT 1; COMMIT; DROP TABLE uniq",
        // `case` as a label opens no CASE: the body ends at its END.
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END; \
         COMMIT; DROP TABLE uniq",
        // `begin, atomic` are names, not a body's start.
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = begin, atomic \
         RETURN 1; COMMIT; DROP TABLE uniq",
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
    // A body Postgres parses on its own first: its error points into the
    // whole query; a good body's function is made.
    let in_body = host
        .sql(
            "SELECT 1; CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELEC 1; END",
            &[],
        )
        .expect_error(400);
    assert!(in_body.contains("(at character 69)"), "{in_body}");
    host.sql_ok(
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN /* a */ ATOMIC SELECT 1; SELECT 2; END",
        &[],
    );
    assert_eq!(
        host.sql_ok("SELECT g() AS g", &[])["rows"],
        json!([{ "g": 2 }])
    );
}

#[test]
fn statements_the_host_describes_do_not_stay_prepared() {
    // One connection: every statement below ran on the one that is read.
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    host.sql_ok("CREATE TABLE arr (a int[])", &[]);
    // An array parameter (its type is asked for), an empty result (its
    // columns are), a routine body (Postgres parses it alone first).
    host.sql_ok("INSERT INTO arr VALUES ($1)", &[json!([1, 2])]);
    host.sql_ok("SELECT * FROM arr WHERE false", &[]);
    host.sql_ok(
        "CREATE FUNCTION h() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        &[],
    );
    let left = host.sql_ok("SELECT count(*) AS n FROM pg_prepared_statements", &[]);
    assert_eq!(left["rows"], json!([{ "n": 0 }]));
}

#[test]
fn timeouts_cut_long_statements_and_the_pool_recovers() {
    // One connection: the request after the cut one runs on it.
    let host = Host::builder()
        .config("[sql]\nstatement_timeout_ms = 300\n[pool]\ntenant_max_connections = 1\n")
        .start();
    let backend = || {
        host.sql_ok(
            "SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS timeout",
            &[],
        )["rows"][0]
            .clone()
    };
    let before = backend();
    // The configured timeout, not Postgres's default nor the host's.
    assert_eq!(before["timeout"], "300ms", "{before}");
    let message = host.sql("SELECT pg_sleep(600)", &[]).expect_error(408);
    assert!(message.contains("statement timeout"), "{message}");
    assert_eq!(backend(), before, "the connection did not survive the cut");
    for _ in 0..10 {
        host.sql_ok("SELECT 1", &[]);
    }
}

#[test]
fn an_error_a_statement_raises_keeps_its_connection() {
    // Any SQLSTATE can be raised: one of the classes that mean a lost
    // connection, sent by a statement, is an answer like any other, and the
    // connection serves the next request (closing it on each would cost a
    // backend and a login a statement).
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    let backend = || host.sql_ok("SELECT pg_backend_pid() AS pid", &[])["rows"][0]["pid"].clone();
    let before = backend();
    for (code, status) in [
        ("XX000", 500),
        ("08006", 503),
        ("57P01", 503),
        ("53300", 503),
    ] {
        let raised = host
            .sql(
                &format!("DO $$BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END$$"),
                &[],
            )
            .expect_error(status);
        assert!(raised.contains("raised"), "{code}: {raised}");
        assert_eq!(backend(), before, "{code} cost the connection");
    }
}

#[test]
fn a_statement_cancelled_by_its_own_tenant_leaves_the_connection_usable() {
    // A cancel (a sibling's `pg_cancel_backend`, here the statement's own)
    // leaves the run's transaction aborted: it is rolled back before the
    // connection serves the next request. (One that lands on the host's
    // `COMMIT` is rolled back too, but no statement can place it there.)
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    for _ in 0..3 {
        // As the login role, which may signal its own backends.
        let cancelled = host.sql(
            "RESET ROLE; DO $$DECLARE x bool; BEGIN x := pg_cancel_backend(pg_backend_pid()); END$$",
            &[],
        );
        assert_eq!(cancelled.status, 408, "{}", cancelled.text());
        assert_eq!(
            host.sql_ok("SELECT 1 AS one", &[])["rows"],
            json!([{ "one": 1 }])
        );
    }
}

#[test]
fn what_runs_at_commit_cannot_change_how_the_next_request_is_read() {
    // A held cursor's query runs as its transaction commits: a session
    // setting it makes there must not outlive the request, or Postgres
    // reads the next one (on the same connection) otherwise than the host.
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    // Read with standard strings, `'a\''` is `a\'` and the string goes
    // on; with backslash escapes, it ends there. Read as UTF-8, `E'Á\'`
    // escapes the quote; read as Shift-JIS, the backslash is half of a
    // character and the quote ends the string.
    let quoted = "SELECT 'a\\'' ; COMMIT; CREATE TABLE injected (x int); --' AS s";
    let quoted_value = "a\\' ; COMMIT; CREATE TABLE injected (x int); --";
    let escaped = "SELECT E'\u{c1}\\' ; COMMIT; CREATE TABLE injected (x int); --' AS s";
    let escaped_value = "\u{c1}' ; COMMIT; CREATE TABLE injected (x int); --";
    for (poison, read, value) in [
        (
            "DECLARE c CURSOR WITH HOLD FOR \
             SELECT set_config('standard_conforming_strings', 'off', false)",
            quoted,
            quoted_value,
        ),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT set_config('client_encoding', 'SJIS', false)",
            escaped,
            escaped_value,
        ),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1 FROM pg_catalog.pg_class; \
             DO $$BEGIN EXECUTE 'PREPARE left_behind AS SELECT 1'; END$$",
            quoted,
            quoted_value,
        ),
    ] {
        host.sql_ok(poison, &[]);
        assert_eq!(
            host.sql_ok(read, &[])["rows"],
            json!([{ "s": value }]),
            "{poison}"
        );
        let left = host.sql_ok(
            "SELECT (SELECT count(*) FROM pg_cursors) AS cursors,
               (SELECT count(*) FROM pg_prepared_statements) AS prepared,
               to_regclass('injected') IS NULL AS clean",
            &[],
        );
        assert_eq!(
            left["rows"],
            json!([{ "cursors": 0, "prepared": 0, "clean": true }]),
            "{poison}"
        );
    }
}

#[test]
fn a_tenants_notices_are_not_logged() {
    let host = Host::start();
    // With a line break, a notice logged as it came would forge a line.
    host.sql_ok(
        "SET client_min_messages = notice; DO $$BEGIN \
           RAISE WARNING E'x\\n2026-01-01T00:00:00Z  INFO zatabase: forged warning'; \
           RAISE NOTICE 'forged notice'; END$$",
        &[],
    );
    host.sql_ok("SELECT 1", &[]);
    let log = host.log();
    assert!(!log.contains("forged"), "{log}");
}

#[test]
fn requests_leave_no_line_in_the_servers_log() {
    let host = Host::start();
    let postgres_log =
        || std::fs::read_to_string(host.data_dir.join("postgres.log")).unwrap_or_default();
    let before = postgres_log().len();
    host.sql_ok("CREATE TABLE quiet (id int PRIMARY KEY)", &[]);
    for n in 0..5 {
        host.sql_ok("INSERT INTO quiet VALUES ($1)", &[json!(n)]);
        host.sql("INSERT INTO quiet VALUES (0)", &[])
            .expect_error(409);
        host.sql_ok("SELECT count(*) AS n FROM quiet", &[]);
    }
    // Postgres logs what it logs of a request's error (the level is its
    // configuration's); a request that succeeds has nothing to say. Its
    // log reaches the file through a pipe and a thread: given a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let written = postgres_log()[before..].to_owned();
    let warnings: Vec<&str> = written.lines().filter(|l| l.contains("WARNING")).collect();
    assert!(warnings.is_empty(), "{written}");
}

#[test]
fn a_statement_that_turns_its_timeout_off_is_still_cut_and_its_backend_ended() {
    let host = Host::builder()
        .config("[sql]\nstatement_timeout_ms = 300\n")
        .start();
    // Postgres would let this run for ten minutes; the host cuts it at the
    // timeout plus its grace period and ends the backend running it.
    host.sql("SET LOCAL statement_timeout = 0; SELECT pg_sleep(600)", &[])
        .expect_error(408);
    let running = || {
        host.sql_ok(
            // As the login role, which sees its own backends' queries.
            "RESET ROLE; SELECT count(*) AS n FROM pg_stat_activity \
             WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()",
            &[],
        )["rows"][0]["n"]
            .as_i64()
            .unwrap()
    };
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(5), || running() == 0),
        "the abandoned statement is still running"
    );
    host.sql_ok("SELECT 1", &[]);
}

#[test]
fn a_client_that_hangs_up_mid_statement_leaves_its_connection_to_the_pool() {
    use std::io::Write;
    use std::time::Duration;
    let host = Host::start();
    // The backends running `query` now.
    let running = |query: &str| -> Vec<i64> {
        let found = host.sql_ok(
            // As the login role, which sees its own backends' queries.
            &format!(
                "RESET ROLE; SELECT pid FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE '%{query}%' AND pid <> pg_backend_pid()"
            ),
            &[],
        );
        found["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["pid"].as_i64().unwrap())
            .collect()
    };
    // Sends `query`, hangs up while Postgres runs it, and says which
    // backend runs it.
    let hang_up_during = |query: &str| -> i64 {
        let token = host.token();
        let body = json!({ "query": query }).to_string();
        let address = host.base.trim_start_matches("http://").to_owned();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "POST /v1/sql HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut pid = None;
        assert!(
            zatabase_tests::eventually(Duration::from_secs(5), || {
                pid = running(query).first().copied();
                pid.is_some()
            }),
            "`{query}` never started"
        );
        pid.unwrap()
    };

    // The abandoned statement finishes a moment later, and its connection,
    // back in the pool last, serves the next request. So does one whose
    // abandoned statement ends in an error (a division by zero once the nap
    // is over).
    for (query, what) in [
        ("SELECT pg_sleep(0.3) AS short_nap", "the connection"),
        (
            "SELECT 1 / length(pg_sleep(0.3)::text) AS erring_nap",
            "the connection whose run failed",
        ),
    ] {
        let pid = hang_up_during(query);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            host.sql_ok("SELECT pg_backend_pid() AS pid", &[])["rows"][0]["pid"],
            json!(pid),
            "{what} was closed, not drained back into the pool"
        );
    }

    // One still running after the drain's short wait is ended with its
    // backend instead of holding the connection.
    hang_up_during("SELECT pg_sleep(600) AS long_nap");
    assert!(
        zatabase_tests::eventually(Duration::from_secs(5), || running("long_nap").is_empty()),
        "the abandoned statement is still running"
    );
    host.sql_ok("SELECT 1", &[]);
}

#[test]
fn a_pooled_connection_whose_backend_died_is_not_handed_to_a_request() {
    let host = Host::start();
    // Two requests at once: the tenant's pool holds two connections.
    let both = |query: &'static str| {
        std::thread::scope(|scope| {
            let requests: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| host.sql(query, &[]).status))
                .collect();
            requests
                .into_iter()
                .map(|r| r.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(both("SELECT pg_sleep(0.3)"), [200, 200]);
    // From one of them, end the other's backend, as a Postgres restart or an
    // administrator would. The login role may signal its own backends.
    let ended = host.sql_ok(
        "RESET ROLE; SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE usename = session_user AND pid <> pg_backend_pid()",
        &[],
    );
    assert_eq!(ended["rows"][0]["n"], 1, "{ended}");
    // Once idle for a while, a connection is checked before it is used.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(both("SELECT 1"), [200, 200]);
}

#[test]
fn results_are_capped() {
    let host = Host::builder().config("[sql]\nmax_rows = 5\n").start();
    let body = host.sql_ok("SELECT generate_series(1, 50) AS n", &[]);
    assert_eq!(body["rows"].as_array().unwrap().len(), 5);
    assert_eq!(body["truncated"], true);
    let small = host.sql_ok("SELECT generate_series(1, 5) AS n", &[]);
    assert!(small.get("truncated").is_none(), "{small}");
    // The cap is on tenants' results, not on the platform's own lists.
    let token = host.token();
    for n in 0..7 {
        let body = json!({ "name": format!("listed-{n}") });
        let created = host.call("POST", "/v1/functions", &token, Some(&body));
        assert_eq!(created.status, 201, "{}", created.text());
    }
    let listed = host.call("GET", "/v1/functions", &token, None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["functions"].as_array().unwrap().len(), 7);
}

#[test]
fn results_are_capped_in_bytes_too() {
    // Few rows, each large: the host holds no more than its byte cap of
    // them, whatever the statement returns (here 75 MB past 4 MiB).
    let host = Host::builder()
        .config("[sql]\nmax_result_bytes = 4194304\n")
        .start();
    let body = host.sql_ok(
        "SELECT n, repeat('x', 1500000) AS filler FROM generate_series(1, 50) AS n",
        &[],
    );
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "two rows of 1.5 MB fit in 4 MiB");
    assert_eq!(rows[1]["n"], 2);
    assert_eq!(body["truncated"], true);
    // The cap counts what is kept, from the first row on.
    let fits = host.sql_ok("SELECT repeat('x', 4000000) AS one", &[]);
    assert_eq!(fits["rows"].as_array().unwrap().len(), 1);
    assert!(fits.get("truncated").is_none(), "{}", fits["truncated"]);
    // A first row past the cap: none kept, said so.
    let over = host.sql_ok("SELECT repeat('x', 5000000) AS one", &[]);
    assert_eq!(over["rows"], json!([]));
    assert_eq!(over["truncated"], true);
    // The cap holds for the JSON written, six times a control character's
    // byte: of three rows of 400 kB of them (2.4 MB as JSON each), one.
    let escaped = host.sql_ok(
        "SELECT n, repeat(chr(1), 400000) AS v FROM generate_series(1, 3) AS n",
        &[],
    );
    assert_eq!(escaped["rows"].as_array().unwrap().len(), 1);
    assert_eq!(escaped["rows"][0]["v"].as_str().unwrap().len(), 400_000);
    assert_eq!(escaped["truncated"], true);
    // Empty values are not free: holding each costs the host memory.
    let empties: Vec<String> = (0..100).map(|n| format!("'' AS e{n}")).collect();
    let many = host.sql_ok(
        &format!(
            "SELECT {} FROM generate_series(1, 10000)",
            empties.join(", ")
        ),
        &[],
    );
    assert_eq!(many["truncated"], true);
    let kept = many["rows"].as_array().unwrap().len();
    assert!((100..10_000).contains(&kept), "{kept} rows kept");
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
    // Each attack is refused by Postgres itself, for the reason named: a
    // refusal for any other reason (a typo, a missing object) fails here.
    let zatabase = "permission denied for schema zatabase";
    let attacks: Vec<(String, u16, String)> = vec![
        (
            "SELECT * FROM zatabase._sqlx_migrations".into(),
            403,
            zatabase.into(),
        ),
        (
            "RESET ROLE; SELECT * FROM zatabase._sqlx_migrations".into(),
            403,
            zatabase.into(),
        ),
        (
            "SELECT email FROM zatabase.users".into(),
            403,
            zatabase.into(),
        ),
        (
            "SET ROLE zatabase".into(),
            403,
            "permission denied to set role \"zatabase\"".into(),
        ),
        (
            "SET SESSION AUTHORIZATION zatabase".into(),
            403,
            "permission denied to set session authorization".into(),
        ),
        (
            "SELECT pg_read_file('/etc/passwd')".into(),
            403,
            "permission denied for function pg_read_file".into(),
        ),
        // The host refuses COPY outright; Postgres refuses it to the
        // tenant's role too, as a function's dynamic SQL shows.
        (
            "COPY (SELECT 1) TO PROGRAM 'id'".into(),
            400,
            "`COPY` is not available here".into(),
        ),
        (
            "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''id'''; END $$".into(),
            403,
            "permission denied to COPY to or from an external program".into(),
        ),
        (
            "CREATE EXTENSION dblink".into(),
            403,
            "permission denied to create extension \"dblink\"".into(),
        ),
        (
            "SELECT dblink_connect('dbname=zatabase')".into(),
            400,
            "function dblink_connect(unknown) does not exist".into(),
        ),
        (
            "CREATE ROLE intruder".into(),
            403,
            "permission denied to create role".into(),
        ),
        (
            "CREATE TABLE zatabase.planted (x int)".into(),
            403,
            zatabase.into(),
        ),
        // Never reaches the privilege check (no transaction may hold it);
        // the roles' attributes below say it would fail there too.
        (
            "CREATE DATABASE elsewhere".into(),
            400,
            "CREATE DATABASE cannot run inside a transaction block".into(),
        ),
        // A schema the role may not use is skipped in the search path.
        (
            "SET search_path = zatabase, public; SELECT * FROM users".into(),
            400,
            "relation \"users\" does not exist".into(),
        ),
        (
            "SELECT set_config('search_path', 'zatabase', false); SELECT * FROM sessions".into(),
            400,
            "relation \"sessions\" does not exist".into(),
        ),
        (
            "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'".into(),
            403,
            "permission denied for schema public".into(),
        ),
        (
            "CREATE FUNCTION zatabase.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'".into(),
            403,
            zatabase.into(),
        ),
        (
            "CREATE TABLE public.planted (x int)".into(),
            403,
            "permission denied for schema public".into(),
        ),
        (
            "SELECT rolpassword FROM pg_authid".into(),
            403,
            "permission denied for table pg_authid".into(),
        ),
        (
            "ALTER SCHEMA extensions OWNER TO CURRENT_USER".into(),
            403,
            "must be owner of schema extensions".into(),
        ),
        (
            "DROP EXTENSION vector".into(),
            403,
            "must be owner of extension vector".into(),
        ),
        (
            format!("ALTER ROLE {login} SUPERUSER"),
            403,
            "permission denied to alter role".into(),
        ),
        (
            format!("GRANT {role} TO zatabase"),
            403,
            "permission denied to grant role".into(),
        ),
    ];
    for (attack, status, says) in &attacks {
        let message = host.sql(attack, &[]).expect_error(*status);
        assert!(message.contains(says.as_str()), "{attack}: {message}");
    }
    // And nothing of them exists: checked as the platform's superuser.
    let left = host.platform_sql(&format!(
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'intruder')
              + (SELECT count(*) FROM pg_proc WHERE proname = 'planted')
              + (SELECT count(*) FROM pg_database WHERE datname = 'elsewhere')
              + (SELECT count(*) FROM pg_extension WHERE extname = 'dblink')
              + (SELECT count(*) FROM pg_roles WHERE rolname IN ('{login}', '{role}')
                   AND (rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls OR rolreplication))
              + (SELECT count(*) FROM pg_auth_members WHERE roleid = '{role}'::regrole
                   AND member = 'zatabase'::regrole)
              + (CASE WHEN to_regclass('zatabase.planted') IS NULL THEN 0 ELSE 1 END)
              + (CASE WHEN to_regclass('public.planted') IS NULL THEN 0 ELSE 1 END),
           (SELECT count(*) FROM pg_extension WHERE extname = 'vector'),
           (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'extensions')"
    ));
    assert_eq!(left, "0|1|zatabase", "left behind by the attacks");
    // After RESET ROLE the session is the login role, still walled in.
    let reset = host.sql_ok("RESET ROLE; SELECT current_user AS role", &[]);
    assert_eq!(reset["rows"], json!([{ "role": login }]));
}

#[test]
fn empty_results_still_carry_their_columns() {
    let host = Host::start();
    host.sql_ok(
        "CREATE TABLE shapes (id serial PRIMARY KEY, label text, emb vector(2))",
        &[],
    );
    let columns = |body: &serde_json::Value| body["columns"].clone();
    let empty = host.sql_ok("SELECT id, label, emb FROM shapes WHERE false", &[]);
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(
        columns(&empty),
        json!([
            { "name": "id", "type": "int4" },
            { "name": "label", "type": "text" },
            { "name": "emb", "type": "vector" }
        ])
    );
    let with_params = host.sql_ok("SELECT label FROM shapes WHERE id = $1", &[json!(42)]);
    assert_eq!(
        columns(&with_params),
        json!([{ "name": "label", "type": "text" }])
    );
    let returning = host.sql_ok(
        "UPDATE shapes SET label = 'x' WHERE false RETURNING id",
        &[],
    );
    assert_eq!(
        columns(&returning),
        json!([{ "name": "id", "type": "int4" }])
    );
    assert_eq!(returning["affected_rows"], 0);
    let after_ddl = host.sql_ok("CREATE TABLE later (n int8); SELECT n FROM later", &[]);
    assert_eq!(
        columns(&after_ddl),
        json!([{ "name": "n", "type": "int8" }])
    );
    let write = host.sql_ok("INSERT INTO shapes (label) VALUES ('a')", &[]);
    assert_eq!(columns(&write), json!([]));
    assert_eq!(write["affected_rows"], 1);
    // A table changed where no CREATE, ALTER or DROP shows (a DO block):
    // its shape is described as it is now, not as a connection last saw it.
    let before = host.sql_ok("SELECT * FROM later WHERE false", &[]);
    assert_eq!(columns(&before), json!([{ "name": "n", "type": "int8" }]));
    host.sql_ok(
        "DO $$ BEGIN EXECUTE 'ALTER TABLE later ADD COLUMN label text'; END $$",
        &[],
    );
    let after = host.sql_ok("SELECT * FROM later WHERE false", &[]);
    assert_eq!(
        columns(&after),
        json!([{ "name": "n", "type": "int8" }, { "name": "label", "type": "text" }])
    );
}

#[test]
fn every_mapped_type_round_trips_through_parameters() {
    let host = Host::start();
    host.sql_ok(
        "CREATE TABLE typed (i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, b bool, \
         t text, vc varchar(10), ch char(3), u uuid, d date, tm time, ts timestamp, tstz timestamptz, \
         iv interval, j json, jb jsonb, by bytea, v vector(3), ai int4[], at text[], ad date[])",
        &[],
    );
    let params = [
        json!(-7),
        json!(70000),
        json!(9007199254740993i64),
        json!(1.5),
        json!(-2.25),
        json!("12345678901234567890.000001"),
        json!(true),
        json!("héllo 'quoted' \\ back"),
        json!("short"),
        json!("ab"),
        json!("6f1c1a4e-0000-4000-8000-000000000001"),
        json!("2024-02-29"),
        json!("23:59:58.5"),
        json!("2024-02-29 12:00:00"),
        json!("2024-02-29T12:00:00+02:00"),
        json!("-1 day 3 hours"),
        json!({ "a": [1, null] }),
        json!({ "b": { "c": true } }),
        json!("\\x00ff10"),
        json!([0.5, -1, 2]),
        json!([1, null, 3]),
        json!(["x", "y,z", "\"q\""]),
        json!(["2024-01-01"]),
    ];
    let placeholders: Vec<String> = (1..=params.len()).map(|n| format!("${n}")).collect();
    host.sql_ok(
        &format!("INSERT INTO typed VALUES ({})", placeholders.join(", ")),
        &params,
    );
    let row = host.sql_ok("SELECT * FROM typed", &[])["rows"][0].clone();
    assert_eq!(
        row,
        json!({
            "i2": -7, "i4": 70000, "i8": 9007199254740993i64, "f4": 1.5, "f8": -2.25,
            "n": "12345678901234567890.000001", "b": true, "t": "héllo 'quoted' \\ back",
            "vc": "short", "ch": "ab ", "u": "6f1c1a4e-0000-4000-8000-000000000001",
            "d": "2024-02-29", "tm": "23:59:58.5", "ts": "2024-02-29T12:00:00",
            "tstz": "2024-02-29T10:00:00+00:00", "iv": "P-1DT3H", "j": { "a": [1, null] },
            "jb": { "b": { "c": true } }, "by": "AP8Q", "v": [0.5, -1.0, 2.0],
            "ai": [1, null, 3], "at": ["x", "y,z", "\"q\""], "ad": ["2024-01-01"]
        })
    );
    // Special values and nulls.
    let special = host.sql_ok(
        "SELECT 'NaN'::numeric AS n, 'Infinity'::float8 AS inf, '-Infinity'::float4 AS ninf, \
         'infinity'::timestamptz AS forever, ''::bytea AS nothing, NULL::int AS null_int, \
         ARRAY[]::int[] AS empty, '{{1,2},{3,4}}'::int[] AS grid, \
         '1 year 1 mon 2 days 0.5 seconds'::interval AS months, '-90 minutes'::interval AS back",
        &[],
    )["rows"][0]
        .clone();
    assert_eq!(
        special,
        json!({
            "n": "NaN", "inf": "Infinity", "ninf": "-Infinity", "forever": "infinity",
            "nothing": "", "null_int": null, "empty": [], "grid": [[1, 2], [3, 4]],
            "months": "P1Y1M2DT0.5S", "back": "PT-1H-30M"
        })
    );
    // Before Christ: as Postgres's own `to_json` writes it, a form it reads
    // back (it reads no signed year).
    let ancient = host.sql_ok(
        "SELECT '0044-03-15 12:00:00+00 BC'::timestamptz AS tstz, \
         '0044-03-15 12:00:00 BC'::timestamp AS ts, '0044-03-15 BC'::date AS d",
        &[],
    )["rows"][0]
        .clone();
    assert_eq!(
        ancient,
        json!({
            "tstz": "0044-03-15T12:00:00+00:00 BC", "ts": "0044-03-15T12:00:00 BC",
            "d": "0044-03-15 BC"
        })
    );
    let back = host.sql_ok(
        "SELECT $1::timestamptz = '0044-03-15 12:00:00+00 BC' AS tstz, \
         $2::timestamp = '0044-03-15 12:00:00 BC' AS ts, $3::date = '0044-03-15 BC' AS d, \
         to_json($1::timestamptz)::text = to_json('0044-03-15 12:00:00+00 BC'::timestamptz)::text AS same",
        &[
            ancient["tstz"].clone(),
            ancient["ts"].clone(),
            ancient["d"].clone(),
        ],
    );
    assert_eq!(
        back["rows"],
        json!([{ "tstz": true, "ts": true, "d": true, "same": true }])
    );
    // `box[]` delimits its elements with `;` (each box's text holds commas):
    // an array of two boxes is two elements, both ways.
    host.sql_ok("CREATE TABLE shapes (b box[])", &[]);
    host.sql_ok(
        "INSERT INTO shapes VALUES ($1)",
        &[json!(["(1,1),(0,0)", null, "(3,3),(2,2)"])],
    );
    let boxes = host.sql_ok(
        "SELECT b, array_length(b, 1) AS n, ARRAY[box '((2,2),(1,1))', NULL] AS literal FROM shapes",
        &[],
    );
    assert_eq!(
        boxes["rows"],
        json!([{
            "b": ["(1,1),(0,0)", null, "(3,3),(2,2)"], "n": 3,
            "literal": ["(2,2),(1,1)", null]
        }])
    );
    assert_eq!(boxes["columns"][0]["type"], "box[]");
    // A value of the wrong type is the client's error, and nothing is written.
    host.sql(
        "INSERT INTO typed (i4) VALUES ($1)",
        &[json!("not a number")],
    )
    .expect_error(400);
    host.sql("INSERT INTO typed (v) VALUES ($1)", &[json!([1, 2])])
        .expect_error(400);
    assert_eq!(
        host.sql_ok("SELECT count(*) AS n FROM typed", &[])["rows"],
        json!([{ "n": 1 }])
    );
}

#[test]
fn what_a_request_leaves_on_its_connection_is_gone_for_the_next() {
    // One connection, so every request below gets the one before's.
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    let first = host.sql_ok(
        "SELECT current_user AS role, current_schema() AS schema, current_setting('statement_timeout') AS timeout",
        &[],
    );
    let login = host.sql_ok("SELECT session_user AS login", &[])["rows"][0]["login"]
        .as_str()
        .unwrap()
        .to_owned();
    for left in [
        "SET statement_timeout = '1min'".to_owned(),
        "SET search_path = public".to_owned(),
        format!("SELECT set_config('role', '{login}', false)"),
        "SET ROLE NONE".to_owned(),
        // Temporary tables are the login role's (the owner role may not).
        "RESET ROLE; CREATE TEMP TABLE scratch (x int)".to_owned(),
        "DECLARE held CURSOR WITH HOLD FOR SELECT 1".to_owned(),
    ] {
        host.sql_ok(&left, &[]);
        let next = host.sql_ok(
            "SELECT current_user AS role, current_schema() AS schema, current_setting('statement_timeout') AS timeout",
            &[],
        );
        assert_eq!(next["rows"], first["rows"], "after `{left}`");
        // Nothing of the temporary table or the cursor is left either.
        host.sql_ok("RESET ROLE; CREATE TEMP TABLE scratch (x int)", &[]);
        host.sql_ok("DECLARE held CURSOR WITH HOLD FOR SELECT 1", &[]);
    }
    // A lock that would outlive the request is not the tenant's to take;
    // one that ends with its transaction is.
    for session_lock in [
        "SELECT pg_advisory_lock(42)",
        "SELECT pg_try_advisory_lock(42)",
        "SELECT pg_advisory_lock_shared(1, 2)",
    ] {
        host.sql(session_lock, &[]).expect_error(403);
    }
    let locked = host.sql_ok("SELECT pg_try_advisory_xact_lock(42) AS locked", &[]);
    assert_eq!(locked["rows"], json!([{ "locked": true }]));
}

#[test]
fn a_tenant_cannot_change_how_results_are_typed_for_anyone() {
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    // Its own `=` for the operand types the host's type lookup compares,
    // found first on the search path it leaves behind, and a type named
    // like a built-in one.
    host.sql_ok(
        "CREATE FUNCTION yes_oid(oid, oid) RETURNS bool LANGUAGE sql AS 'SELECT true';
         CREATE OPERATOR = (LEFTARG = oid, RIGHTARG = oid, FUNCTION = yes_oid);
         CREATE FUNCTION yes_char(\"char\", \"char\") RETURNS bool LANGUAGE sql AS 'SELECT true';
         CREATE OPERATOR = (LEFTARG = \"char\", RIGHTARG = \"char\", FUNCTION = yes_char);
         CREATE TYPE mood AS ENUM ('fine');
         CREATE TYPE jsonb AS ENUM ('not json');
         CREATE DOMAIN tags AS text[];
         CREATE DOMAIN positive AS int4 CHECK (VALUE > 0);
         CREATE DOMAIN small AS positive CHECK (VALUE < 10)",
        &[],
    );
    let schema = host.sql_ok("SELECT current_schema() AS s", &[])["rows"][0]["s"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = host.sql_ok(
        &format!(
            "SELECT set_config('search_path', '\"{schema}\", pg_catalog', false);
             SELECT 'fine'::mood AS mood, 'not json'::\"{schema}\".jsonb AS j"
        ),
        &[],
    );
    assert_eq!(own["rows"], json!([{ "mood": "fine", "j": "not json" }]));
    assert_eq!(own["columns"][1]["type"], "jsonb");
    // A domain reads as the type under it: an array, or a domain's domain.
    let domains = host.sql_ok(
        "SELECT ARRAY['a', 'b,c']::tags AS tags, 5::small AS small, ARRAY[5::small] AS smalls",
        &[],
    );
    assert_eq!(
        domains["rows"],
        json!([{ "tags": ["a", "b,c"], "small": 5, "smalls": [5] }])
    );

    // Another tenant's results are typed as ever.
    host.use_token(
        &host
            .signup(&unique_email("other"), "a long test password")
            .access_token,
    );
    let other = host.sql_ok(
        "SELECT ARRAY[1, 2]::int4[] AS a, '{\"k\": [1]}'::jsonb AS j, ARRAY['x']::text[] AS t, 'c'::\"char\" AS c",
        &[],
    );
    assert_eq!(
        other["rows"],
        json!([{ "a": [1, 2], "j": { "k": [1] }, "t": ["x"], "c": "c" }])
    );
}

/// How many notifications on the platform channel `channel` the host has
/// received (its metrics).
fn notifications(host: &Host, channel: &str) -> u64 {
    let text = host.get("/metrics").text();
    let prefix = format!("zatabase_platform_notifications_total{{channel=\"{channel}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

const CHANNELS: [&str; 3] = [
    "zatabase_session_ended",
    "zatabase_access_changed",
    "zatabase_function_changed",
];

/// The host's notification counters once they have stopped moving: the
/// same over a second (four reads 250 ms apart). The steps before are
/// committed when their responses arrive, so their notifications are on
/// the wire by then; a second is ample for the host to count them even on
/// a loaded machine, where the fixed 300 ms this replaces was not.
fn settled_notifications(host: &Host) -> [u64; 3] {
    let mut last = CHANNELS.map(|c| notifications(host, c));
    let mut quiet = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while quiet < 4 {
        std::thread::sleep(Duration::from_millis(250));
        let now = CHANNELS.map(|c| notifications(host, c));
        quiet = if now == last { quiet + 1 } else { 0 };
        assert!(
            std::time::Instant::now() < deadline,
            "the notification counters kept moving: {now:?}"
        );
        last = now;
    }
    last
}

#[test]
fn a_tenant_cannot_notify_the_platforms_channels() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), "a long enough password");
    let mallory = host.signup(&unique_email("mallory"), "a long enough password");
    let project = host
        .call("GET", "/v1/whoami", &alice.access_token, None)
        .json()["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let function = host.call(
        "POST",
        "/v1/functions",
        &alice.access_token,
        Some(&json!({ "name": "quiet" })),
    );
    assert_eq!(function.status, 201, "{}", function.text());
    let function = function.json()["id"].as_str().unwrap().to_owned();
    let before = settled_notifications(&host);

    // Every channel by its public name, with payloads that would void
    // alice's sessions and function: Postgres lets any role send them, and
    // no host hears them.
    let sent = host.call(
        "POST",
        "/v1/sql",
        &mallory.access_token,
        Some(&json!({
            "query": "SELECT pg_notify('zatabase_access_changed', $1), \
                      pg_notify('zatabase_session_ended', 'any'), \
                      pg_notify('zatabase_function_changed', $2)",
            "params": [project, function],
        })),
    );
    assert_eq!(sent.status, 200, "{}", sent.text());
    // The names hosts listen on are not to be found.
    for (query, status, reason) in [
        (
            "SELECT zatabase.channel('zatabase_access_changed')",
            403,
            "permission denied for schema zatabase",
        ),
        (
            "SELECT secret FROM zatabase.notify_secret",
            403,
            "permission denied for schema zatabase",
        ),
    ] {
        let refused = host
            .call(
                "POST",
                "/v1/sql",
                &mallory.access_token,
                Some(&json!({ "query": query })),
            )
            .expect_error(status);
        assert!(refused.contains(reason), "{query}: {refused}");
    }
    // Nor in what Postgres shows of the hosts' listening connections.
    let seen = host.call(
        "POST",
        "/v1/sql",
        &mallory.access_token,
        Some(&json!({ "query":
            "SELECT count(*) AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query ILIKE '%LISTEN%zatabase%'" })),
    );
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.json()["rows"][0]["n"], 0, "{}", seen.text());

    // Real changes are heard: one each, after the sends above.
    let granted = host.call(
        "PUT",
        "/v1/permissions",
        &alice.access_token,
        Some(&json!({ "principal_type": "user", "principal_id": mallory.user_id, "resource": "Records", "actions": ["Read"] })),
    );
    assert_eq!(granted.status, 201, "{}", granted.text());
    let deleted = host.call(
        "DELETE",
        &format!("/v1/functions/{function}"),
        &alice.access_token,
        None,
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert!(
        eventually(Duration::from_secs(5), || {
            notifications(&host, CHANNELS[1]) > before[1]
                && notifications(&host, CHANNELS[2]) > before[2]
        }),
        "the real changes were not heard"
    );
    // Each listening connection hears notifications in commit order, so
    // once the real changes are counted the spoofed sends (committed
    // before them) would have been too.
    let after = CHANNELS.map(|c| notifications(&host, c));
    assert_eq!(
        after,
        [before[0], before[1] + 1, before[2] + 1],
        "{CHANNELS:?}: only the real changes"
    );
}
