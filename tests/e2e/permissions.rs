//! Permissions: /v1/permissions, /v1/permissions/effective, and what a
//! grant lets a second user do in someone else's project.

use serde_json::{Value, json};
use zatabase_tests::{Account, Host, Resp, fixture, function_fixture, scratch, unique_email};

const PASSWORD: &str = "a long enough password";

fn call(host: &Host, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
    host.call(method, path, token, body)
}

fn sql(host: &Host, token: &str, query: &str) -> Resp {
    call(
        host,
        "POST",
        "/v1/sql",
        token,
        Some(&json!({ "query": query })),
    )
}

fn grant(host: &Host, token: &str, body: Value) -> Resp {
    call(host, "PUT", "/v1/permissions", token, Some(&body))
}

fn project_of(host: &Host, account: &Account) -> String {
    let me = call(host, "GET", "/v1/whoami", &account.access_token, None).json();
    me["project_id"].as_str().unwrap().to_owned()
}

/// `who` switches into `project`, in the environment `env`.
fn switch_into(host: &Host, who: &Account, project: &str, env: &str) -> Resp {
    call(
        host,
        "POST",
        "/v1/auth/switch",
        &who.access_token,
        Some(&json!({ "environment": env, "project_id": project })),
    )
}

fn forbidden(response: &Resp, requires: &str) {
    assert_eq!(
        response.json(),
        json!({
            "error": "Forbidden",
            "message": format!("Insufficient permissions: requires {requires}"),
            "status": 403
        }),
        "{}",
        response.text()
    );
}

fn grants(host: &Host, token: &str) -> Vec<Value> {
    let listed = call(host, "GET", "/v1/permissions", token, None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    listed.json()["grants"].as_array().unwrap().clone()
}

/// A second user granted each of `grants` (grant bodies without their
/// principal) in `owner`'s project, switched into it.
fn grantee(host: &Host, owner: &Account, grants: &[Value]) -> Account {
    let user = host.signup(&unique_email("bob"), PASSWORD);
    for body in grants {
        let mut body = body.clone();
        body["principal_type"] = json!("user");
        body["principal_id"] = json!(user.user_id);
        let granted = grant(host, &owner.access_token, body);
        assert_eq!(granted.status, 201, "{}", granted.text());
    }
    let project = project_of(host, owner);
    let switched = switch_into(host, &user, &project, &owner.environment);
    assert_eq!(switched.status, 200, "{}", switched.text());
    Account::from(&switched.json())
}

#[test]
fn the_creator_administers_everything() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let effective = call(
        &host,
        "GET",
        "/v1/permissions/effective",
        &alice.access_token,
        None,
    );
    assert_eq!(effective.status, 200, "{}", effective.text());
    let effective = effective.json();
    assert_eq!(effective["user_id"], alice.user_id.as_str());
    assert_eq!(effective["project_id"], project_of(&host, &alice).as_str());
    let permissions = effective["permissions"].as_array().unwrap();
    for resource in ["Tables", "Functions", "Permissions", "Collections"] {
        assert!(
            permissions.contains(&json!({
                "resource": resource, "resource_id": "*", "actions": ["Read", "Write", "Admin"]
            })),
            "{resource}: {effective}"
        );
    }
    assert_eq!(grants(&host, &alice.access_token), Vec::<Value>::new());
    host.get("/v1/permissions").expect_error(401);
    host.get("/v1/permissions/effective").expect_error(401);
}

#[test]
fn a_grant_opens_a_project_to_another_user_and_no_further() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let bob = host.signup(&unique_email("bob"), PASSWORD);
    let project = project_of(&host, &alice);
    let env = alice.environment.clone();
    assert_eq!(
        sql(
            &host,
            &alice.access_token,
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders VALUES (1, 29.99)"
        )
        .status,
        200
    );

    // Without a grant, alice's project does not exist for bob.
    let refused = switch_into(&host, &bob, &project, &env).expect_error(404);
    assert!(refused.contains("that you can reach"), "{refused}");
    let malformed = switch_into(&host, &bob, "not-a-project", &env).expect_error(422);
    assert!(malformed.contains("project_id"), "{malformed}");

    // Read on Tables: a read-only transaction.
    let created = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables", "actions": ["Read"] }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    assert_eq!(created["actions"], json!(["Read"]));
    assert_eq!(created["resource_id"], "*");
    assert_eq!(created["granted_by"], alice.user_id.as_str());
    let switched = switch_into(&host, &bob, &project, &env);
    assert_eq!(switched.status, 200, "{}", switched.text());
    let bob_in_a = Account::from(&switched.json());
    assert_eq!(project_of(&host, &bob_in_a), project);
    let effective = call(
        &host,
        "GET",
        "/v1/permissions/effective",
        &bob_in_a.access_token,
        None,
    )
    .json();
    assert_eq!(
        effective["permissions"],
        json!([{ "resource": "Tables", "resource_id": "*", "actions": ["Read"] }])
    );
    let read = sql(
        &host,
        &bob_in_a.access_token,
        "SELECT id, total FROM orders",
    );
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["rows"], json!([{ "id": 1, "total": "29.99" }]));
    for write in [
        "INSERT INTO orders VALUES (2, 1)",
        "UPDATE orders SET total = 0",
        "DELETE FROM orders",
        "DROP TABLE orders",
        "CREATE TABLE mine (x int)",
        "SET transaction_read_only = off; INSERT INTO orders VALUES (3, 1)",
        "SET TRANSACTION READ WRITE; DELETE FROM orders",
        "SELECT 1; TRUNCATE orders",
    ] {
        forbidden(
            &sql(&host, &bob_in_a.access_token, write),
            "Write on Tables",
        );
    }
    let reset = sql(
        &host,
        &bob_in_a.access_token,
        "RESET transaction_read_only; DELETE FROM orders",
    );
    assert!(reset.expect_error(400).contains("cannot be reset"));
    // Nor do the permission routes open to a Tables grant.
    forbidden(
        &call(
            &host,
            "GET",
            "/v1/permissions",
            &bob_in_a.access_token,
            None,
        ),
        "Read on Permissions",
    );
    forbidden(
        &grant(
            &host,
            &bob_in_a.access_token,
            json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables", "actions": ["Admin"] }),
        ),
        "Admin on Permissions",
    );
    let untouched = sql(&host, &alice.access_token, "SELECT id, total FROM orders").json();
    assert_eq!(untouched["rows"], json!([{ "id": 1, "total": "29.99" }]));

    // Write: the same statements go through, at once (same host).
    let upgraded = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables", "actions": ["Write"] }),
    );
    assert_eq!(upgraded.status, 200, "{}", upgraded.text());
    assert_eq!(upgraded.json()["id"], created["id"], "replaced, not added");
    assert_eq!(
        sql(
            &host,
            &bob_in_a.access_token,
            "INSERT INTO orders VALUES (2, 5)"
        )
        .status,
        200
    );
    assert_eq!(grants(&host, &alice.access_token).len(), 1);

    // Revoked (bob keeps a grant on something else, so the project stays
    // his to enter): the exact denial of the reference, at once.
    let functions = json!({ "principal_type": "user", "principal_id": bob.user_id,
                            "resource": "Functions", "actions": ["Read"] });
    assert_eq!(
        grant(&host, &alice.access_token, functions.clone()).status,
        201
    );
    let revoked = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables", "actions": [] }),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["revoked"], true);
    forbidden(
        &sql(&host, &bob_in_a.access_token, "SELECT 1"),
        "Read on Tables",
    );
    assert_eq!(grants(&host, &alice.access_token).len(), 1);
    grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables", "actions": [] }),
    )
    .expect_error(404);
    // His last grant gone, so is his session there.
    let mut none = functions;
    none["actions"] = json!([]);
    assert_eq!(grant(&host, &alice.access_token, none).status, 200);
    assert_eq!(grants(&host, &alice.access_token), Vec::<Value>::new());
    sql(&host, &bob_in_a.access_token, "SELECT 1").expect_error(401);

    // Switching ended bob's first session. Logged in again, he is back in
    // his own project, his to administer, where alice's tables are not.
    call(&host, "GET", "/v1/whoami", &bob.access_token, None).expect_error(401);
    let login = host.post_json(
        "/v1/auth/login",
        &json!({ "email": bob.email, "password": PASSWORD }),
    );
    let bob = Account::from(&login.json());
    assert_ne!(project_of(&host, &bob), project);
    sql(&host, &bob.access_token, "SELECT count(*) AS n FROM orders").expect_error(400);
    assert_eq!(grants(&host, &bob.access_token), Vec::<Value>::new());
}

#[test]
fn a_grant_on_one_table_is_not_a_grant_on_all() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let bob_in_a = grantee(
        &host,
        &alice,
        &[json!({ "resource": "Tables", "resource_id": "orders", "actions": ["Admin"] })],
    );
    // Arbitrary SQL can touch any table, so it takes a grant on `*`.
    forbidden(
        &sql(&host, &bob_in_a.access_token, "SELECT * FROM orders"),
        "Read on Tables",
    );
}

#[test]
fn bad_grants_are_refused_and_change_nothing() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let nobody = "6f1c1a4e-0000-4000-8000-00000000000a";
    for (body, says) in [
        (
            json!({ "principal_type": "user", "principal_id": nobody, "resource": "Tables", "actions": ["Read"] }),
            "no user",
        ),
        (
            json!({ "principal_type": "user", "principal_id": "bob", "resource": "Tables", "actions": ["Read"] }),
            "UUID",
        ),
        (
            json!({ "principal_type": "team", "principal_id": nobody, "resource": "Tables", "actions": ["Read"] }),
            "teams",
        ),
        (
            json!({ "principal_type": "role", "principal_id": "member", "resource": "Tabels", "actions": ["Read"] }),
            "unknown resource",
        ),
        (
            json!({ "principal_type": "role", "principal_id": "member", "resource": "Tables", "actions": ["Drop"] }),
            "unknown action",
        ),
        (
            json!({ "principal_type": "role", "principal_id": "member", "resource": "Tables", "resource_id": "x'--", "actions": ["Read"] }),
            "resource_id",
        ),
        (
            json!({ "principal_type": "role", "principal_id": "member", "resource": "Tables" }),
            "actions",
        ),
        (
            json!({ "principal_type": "role", "principal_id": "member", "resource": "Tables", "actions": ["Read"], "extra": 1 }),
            "extra",
        ),
    ] {
        let message = grant(&host, &alice.access_token, body.clone()).expect_error(422);
        assert!(message.contains(says), "{body}: {message}");
    }
    let bearer = format!("Bearer {}", alice.access_token);
    let malformed = host.request(
        "PUT",
        "/v1/permissions",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        b"{\"principal_type\": ".to_vec(),
    );
    malformed.expect_error(400);
    assert_eq!(grants(&host, &alice.access_token), Vec::<Value>::new());

    let role = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "role", "principal_id": "member", "resource": "Functions",
                "resource_id": "hello", "actions": ["Read", "Read"] }),
    );
    assert_eq!(role.status, 201, "{}", role.text());
    assert_eq!(role.json()["actions"], json!(["Read"]));
    assert_eq!(grants(&host, &alice.access_token).len(), 1);
}

/// A session lives while its user can reach its project: revoking the
/// grant that let a user in ends the sessions it let in (and their
/// refresh), on the next request; the user's own project stays open.
#[test]
fn revoking_the_grant_that_let_a_user_in_ends_their_session_there() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let project = project_of(&host, &alice);
    let bob = grantee(
        &host,
        &alice,
        &[json!({ "resource": "Tables", "actions": ["Read"] })],
    );
    assert_eq!(
        call(&host, "GET", "/v1/whoami", &bob.access_token, None).status,
        200
    );
    let revoked = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables",
                "actions": [] }),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    call(&host, "GET", "/v1/whoami", &bob.access_token, None).expect_error(401);
    host.post_json(
        "/v1/auth/refresh",
        &json!({ "refresh_token": bob.refresh_token }),
    )
    .expect_error(401);
    // A grant on anything else keeps the project reachable.
    let carol = grantee(
        &host,
        &alice,
        &[
            json!({ "resource": "Tables", "actions": ["Read"] }),
            json!({ "resource": "Functions", "actions": ["Read"] }),
        ],
    );
    let dropped = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": carol.user_id, "resource": "Tables",
                "actions": [] }),
    );
    assert_eq!(dropped.status, 200, "{}", dropped.text());
    assert_eq!(
        call(&host, "GET", "/v1/whoami", &carol.access_token, None).status,
        200
    );
    // Bob logs in again, into his own project.
    let again = host.post_json(
        "/v1/auth/login",
        &json!({ "email": bob.email, "password": PASSWORD }),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    let token = again.json()["access_token"].as_str().unwrap().to_owned();
    let me = call(&host, "GET", "/v1/whoami", &token, None).json();
    assert_ne!(me["project_id"], json!(project), "{me}");
}

/// A project holds at most 1,000 grants (each session check loads its
/// caller's): past that a new one is 422 and stores nothing; changing or
/// revoking one still works, and a caller with many grants is still
/// checked quickly.
#[test]
fn a_project_holds_a_bounded_number_of_grants() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let bob = host.signup(&unique_email("bob"), PASSWORD);
    let project = project_of(&host, &alice);
    let table = |n: u32| format!("t{n}");
    let body = |resource_id: &str, actions: Value| {
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables",
                "resource_id": resource_id, "actions": actions })
    };
    assert_eq!(
        grant(&host, &alice.access_token, body(&table(0), json!(["Read"]))).status,
        201
    );
    host.platform_sql(&format!(
        "INSERT INTO zatabase.permission_grants
           (project_id, principal_type, principal_id, resource, resource_id, actions, granted_by)
         SELECT '{project}', 'user', '{bob}', 'Tables', 't' || n, ARRAY['Read'], '{alice}'
         FROM generate_series(1, 998) AS n",
        bob = bob.user_id,
        alice = alice.user_id,
    ));
    let last = grant(
        &host,
        &alice.access_token,
        body(&table(999), json!(["Read"])),
    );
    assert_eq!(last.status, 201, "{}", last.text());
    let refused = grant(
        &host,
        &alice.access_token,
        body(&table(1000), json!(["Read"])),
    );
    let message = refused.expect_error(422);
    assert!(message.contains("at most 1000 grants"), "{message}");
    let count = || {
        host.platform_sql(&format!(
            "SELECT count(*) FROM zatabase.permission_grants WHERE project_id = '{project}'"
        ))
    };
    assert_eq!(count(), "1000");
    let changed = grant(
        &host,
        &alice.access_token,
        body(&table(5), json!(["Write"])),
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    // Bob, with his thousand grants, is checked as any caller is.
    let switched = switch_into(&host, &bob, &project, "sandbox");
    assert_eq!(switched.status, 200, "{}", switched.text());
    let token = switched.json()["access_token"].as_str().unwrap().to_owned();
    let effective = call(&host, "GET", "/v1/permissions/effective", &token, None);
    assert_eq!(effective.status, 200, "{}", effective.text());
    assert!(effective.text().contains("\"t5\""), "{}", effective.text());
    let revoked = grant(&host, &alice.access_token, body(&table(7), json!([])));
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let room = grant(
        &host,
        &alice.access_token,
        body(&table(1000), json!(["Read"])),
    );
    assert_eq!(room.status, 201, "{}", room.text());
    assert_eq!(count(), "1000");
}

/// `who`'s request to `/fn/{name}/hello`.
fn call_function(host: &Host, who: &str, name: &str) -> Resp {
    call(host, "GET", &format!("/fn/{name}/hello"), who, None)
}

#[test]
fn a_read_only_grant_reads_and_reaches_nothing_more() {
    // One connection per tenant: each request gets the one before's.
    let host = Host::builder()
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let bob = host.signup(&unique_email("bob"), PASSWORD);
    let project = project_of(&host, &alice);
    let created = sql(
        &host,
        &alice.access_token,
        "CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders VALUES (1, 29.99)",
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let wasm = std::fs::read(function_fixture("spin5")).unwrap();
    for (name, public) in [("private", false), ("open", true)] {
        let function = call(
            &host,
            "POST",
            "/v1/functions",
            &alice.access_token,
            Some(&json!({ "name": name, "public": public })),
        );
        assert_eq!(function.status, 201, "{}", function.text());
        let id = function.json()["id"].as_str().unwrap().to_owned();
        let bearer = format!("Bearer {}", alice.access_token);
        let deployed = host.request(
            "POST",
            &format!("/v1/functions/{id}/deployments"),
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/wasm"),
            ],
            wasm.clone(),
        );
        assert_eq!(deployed.status, 201, "{}", deployed.text());
    }
    let granted = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables", "actions": ["Read"] }),
    );
    assert_eq!(granted.status, 201, "{}", granted.text());
    let switched = switch_into(&host, &bob, &project, &alice.environment);
    assert_eq!(switched.status, 200, "{}", switched.text());
    let bob_id = bob.user_id.clone();
    let bob = Account::from(&switched.json()).access_token;

    // A setting left on the connection does not change how the next
    // request is read. With backslashes escaping in plain strings, Postgres
    // once read this as a SELECT, a COMMIT, and an INSERT outside the
    // read-only transaction, where the host saw one SELECT.
    let left = sql(
        &host,
        &bob,
        "SELECT set_config('standard_conforming_strings', 'off', false)",
    );
    assert_eq!(left.status, 200, "{}", left.text());
    let read = sql(&host, &bob, r"SELECT 'a\' AS s");
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["rows"], json!([{ "s": "a\\" }]));
    sql(
        &host,
        &bob,
        "SELECT set_config('standard_conforming_strings', 'off', false)",
    );
    let smuggled = sql(
        &host,
        &bob,
        r"SELECT 'a\'' ; COMMIT; INSERT INTO orders VALUES (9, 9); --'",
    );
    // Read as the host reads it: one string, nothing run.
    assert_eq!(smuggled.status, 200, "{}", smuggled.text());
    assert_eq!(
        smuggled.json()["rows"][0]["?column?"],
        r"a\' ; COMMIT; INSERT INTO orders VALUES (9, 9); --"
    );

    // Nor does a comment Postgres ends at a carriage return, or a literal
    // it continues on the next line: the host reads them as Postgres does,
    // and refuses the COMMIT it finds.
    for hidden in [
        "SELECT 1 -- x\r; COMMIT; INSERT INTO orders VALUES (9, 9)\n",
        "SELECT E'x'\n'\\'' ; COMMIT ; INSERT INTO orders VALUES (9, 9) --'",
    ] {
        let refused = sql(&host, &bob, hidden).expect_error(400);
        assert!(
            refused.contains("is not available here"),
            "{hidden:?}: {refused}"
        );
    }
    // A parameter's literal is never continued by the client's next one:
    // Postgres reads one malformed statement, as the host did, and runs
    // nothing.
    call(
        &host,
        "POST",
        "/v1/sql",
        &bob,
        Some(&json!({
            "query": "SELECT $1\n'\\'' ; COMMIT ; INSERT INTO orders VALUES (9, 9) --'",
            "params": ["v"],
        })),
    )
    .expect_error(400);

    // Nor does a word the host's splitter once took for the start of a
    // function body hide transaction control behind it (alice may write).
    for hidden in [
        "CREATE TEMP TABLE z (begin int); COMMIT; INSERT INTO orders VALUES (8, 8); SELECT 1/0",
        "CREATE TEMP TABLE z (begin int); BEGIN; INSERT INTO orders VALUES (7, 7)",
    ] {
        let refused = sql(&host, &alice.access_token, hidden).expect_error(400);
        assert!(
            refused.contains("is not available here"),
            "{hidden}: {refused}"
        );
    }
    let after = sql(
        &host,
        &alice.access_token,
        "SELECT id FROM orders ORDER BY id",
    );
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json()["rows"], json!([{ "id": 1 }]));

    // A function that is not public needs Read on Functions at /fn too, as
    // at /v1/functions/:id/invoke; a public one answers anyone.
    forbidden(&call_function(&host, &bob, "private"), "Read on Functions");
    assert_eq!(call_function(&host, &bob, "open").status, 200);
    assert_eq!(
        call_function(&host, &alice.access_token, "private").status,
        200
    );
    let granted = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob_id, "resource": "Functions", "resource_id": "private", "actions": ["Read"] }),
    );
    assert_eq!(granted.status, 201, "{}", granted.text());
    assert_eq!(call_function(&host, &bob, "private").status, 200);
}

#[test]
fn grants_on_records_collections_and_vectors_open_their_routes_without_tables() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let created = sql(
        &host,
        &alice.access_token,
        "CREATE TABLE items (id int PRIMARY KEY, embedding extensions.vector(3)); \
         INSERT INTO items SELECT i, ARRAY[i, 1, 0]::extensions.vector FROM generate_series(1, 20) i",
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let bob = grantee(
        &host,
        &alice,
        &[
            json!({ "resource": "Records", "actions": ["Write"] }),
            json!({ "resource": "Collections", "resource_id": "notes", "actions": ["Write"] }),
            json!({ "resource": "Vectors", "resource_id": "items", "actions": ["Write"] }),
        ],
    );
    let bob_in_a = bob.access_token.clone();
    let post = |path: &str, body: Value| call(&host, "POST", path, &bob_in_a, Some(&body));

    // None of these is a grant on every table: no arbitrary SQL.
    forbidden(&sql(&host, &bob_in_a, "SELECT 1"), "Read on Tables");

    // Records: ZQL reads and writes.
    let inserted = post(
        "/api/zql/insert",
        json!({ "id": "pen", "namespace": "shop", "data": { "price": 2 } }),
    );
    assert_eq!(inserted.status, 201, "{}", inserted.text());
    let found = post("/api/zql/query", json!({ "query": "FIND", "params": {} }));
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["results"][0]["id"], "pen");

    // Collections: the one collection granted, and no other.
    let notes = post(
        "/v1/collections",
        json!({ "name": "notes", "projection": { "v": { "type": "vector(3)", "path": "$.v" } } }),
    );
    assert_eq!(notes.status, 201, "{}", notes.text());
    let bearer = format!("Bearer {bob_in_a}");
    let ingested = host.request(
        "POST",
        "/v1/collections/notes/ingest",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        br#"[{"id": "a", "v": [1, 0, 0]}, {"id": "b", "v": [0, 1, 0]}]"#.to_vec(),
    );
    assert_eq!(ingested.status, 200, "{}", ingested.text());
    assert_eq!(ingested.json()["accepted"], 2, "{}", ingested.text());
    let nearest = post(
        "/v1/knn",
        json!({ "collection": "notes", "column": "v", "vector": [0.9, 0.1, 0], "k": 1 }),
    );
    assert_eq!(nearest.status, 200, "{}", nearest.text());
    assert_eq!(nearest.json()["results"][0]["id"], "a");
    forbidden(
        &post("/v1/collections", json!({ "name": "other" })),
        "Write on Collections",
    );
    // k-NN over a table needs a grant on it.
    forbidden(
        &post(
            "/v1/knn",
            json!({ "table": "items", "column": "embedding", "vector": [1, 1, 0], "k": 1 }),
        ),
        "Read on Tables",
    );

    // Vectors: an index on the table granted.
    let build = post(
        "/v1/indexes/hnsw/build",
        json!({ "table": "items", "column": "embedding", "metric": "l2" }),
    );
    assert_eq!(build.status, 202, "{}", build.text());

    // Read on Records alone: ZQL reads in a read-only transaction.
    let narrowed = grant(
        &host,
        &alice.access_token,
        json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Records", "actions": ["Read"] }),
    );
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    forbidden(
        &post(
            "/api/zql/insert",
            json!({ "id": "cup", "namespace": "shop", "data": {} }),
        ),
        "Write on Records",
    );
    let count = post("/api/zql/query", json!({ "query": "COUNT", "params": {} }));
    assert_eq!(count.status, 200, "{}", count.text());
    assert_eq!(count.json()["results"], json!([{ "count": 1 }]));
}

#[test]
fn a_reader_of_records_and_collections_reads_a_project_that_has_none_yet() {
    let host = Host::start();
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let bob = grantee(
        &host,
        &alice,
        &[
            json!({ "resource": "Records", "actions": ["Read"] }),
            json!({ "resource": "Collections", "actions": ["Read"] }),
        ],
    )
    .access_token;

    // Nothing is made for a reader (its transaction is read-only), and
    // there is nothing to find.
    let found = call(
        &host,
        "POST",
        "/api/zql/query",
        &bob,
        Some(&json!({ "query": "COUNT", "params": {} })),
    );
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["results"], json!([{ "count": 0 }]));
    let info = call(&host, "GET", "/api/zql/info", &bob, None);
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["records"], 0, "{}", info.text());
    let listed = call(&host, "GET", "/v1/collections", &bob, None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["collections"], json!([]), "{}", listed.text());
    call(&host, "GET", "/v1/collections/notes", &bob, None).expect_error(404);
    forbidden(
        &call(&host, "GET", "/v1/indexes/hnsw", &bob, None),
        "Read on Vectors",
    );
    forbidden(
        &call(
            &host,
            "POST",
            "/v1/collections",
            &bob,
            Some(&json!({ "name": "notes" })),
        ),
        "Write on Collections",
    );
}

/// The host's own gate, with no guest check before it: the fixture runs a
/// caller's SQL without asking the session anything, behind a manifest
/// naming `sql_grants = ["Records/*"]`. Only Read on every record set lets
/// SQL run (a grant on all Tables does not), read-only without Write on
/// every record set too, and a refused write leaves nothing behind.
/// A host with the `misbehave` fixture mounted beside the auth route group
/// at `/caller-sql` and `/caller-tx` (the caller's SQL run with no check of
/// the guest's own), its `sql_grants` the one given.
fn unchecked_sql_host(sql_grants: &str) -> Host {
    let dir = scratch();
    std::fs::copy(fixture("misbehave"), dir.join("misbehave.wasm")).unwrap();
    let manifest = zatabase_tests::manifest_with_auth(
        &dir,
        &format!(
            r#"[[trigger.http]]
route = "/caller-sql"
component = "unchecked"

[[trigger.http]]
route = "/caller-tx"
component = "unchecked"

[[trigger.http]]
route = "/caller-txs"
component = "unchecked"

[component.unchecked]
source = "misbehave.wasm"
[component.unchecked.tool.zatabase]
capabilities = ["platform-db", "sql", "log"]
sql_grants = [{sql_grants:?}]
"#
        ),
    );
    Host::builder().manifest(&manifest).start()
}

#[test]
fn the_host_bounds_a_route_groups_sql_by_its_sql_grants_alone() {
    let host = unchecked_sql_host("Records/*");
    let run = |who: &Account, query: &str| {
        call(
            &host,
            "POST",
            "/caller-sql",
            &who.access_token,
            Some(&json!(query)),
        )
    };
    let alice = host.signup(&unique_email("ada"), PASSWORD);
    let created = run(
        &alice,
        "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('first')",
    );
    assert_eq!(created.status, 200, "{}", created.text());

    let tables_admin = grantee(
        &host,
        &alice,
        &[json!({ "resource": "Tables", "actions": ["Admin"] })],
    );
    forbidden(
        &run(&tables_admin, "SELECT body FROM notes"),
        "Read on Records",
    );
    let one_record_set = grantee(
        &host,
        &alice,
        &[json!({ "resource": "Records", "resource_id": "shop", "actions": ["Write"] })],
    );
    forbidden(&run(&one_record_set, "SELECT 1"), "Read on Records");

    let reader = grantee(
        &host,
        &alice,
        &[json!({ "resource": "Records", "actions": ["Read"] })],
    );
    // Write on one record set is not Write through `Records/*`.
    let reader_writing_one = grantee(
        &host,
        &alice,
        &[
            json!({ "resource": "Records", "actions": ["Read"] }),
            json!({ "resource": "Records", "resource_id": "shop", "actions": ["Write"] }),
        ],
    );
    for who in [&reader, &reader_writing_one] {
        let read = run(who, "SELECT body FROM notes");
        assert_eq!(read.status, 200, "{}", read.text());
        assert_eq!(read.json(), json!([{ "body": "first" }]));
        for write in [
            "INSERT INTO notes VALUES ('reader')",
            "SET TRANSACTION READ WRITE; INSERT INTO notes VALUES ('reader')",
            "DROP TABLE notes",
        ] {
            forbidden(&run(who, write), "Write on Records");
        }
    }

    let writer = grantee(
        &host,
        &alice,
        &[json!({ "resource": "Records", "actions": ["Write"] })],
    );
    let written = run(&writer, "INSERT INTO notes VALUES ('writer')");
    assert_eq!(written.status, 200, "{}", written.text());
    let all = run(&alice, "SELECT body FROM notes ORDER BY body");
    assert_eq!(
        all.json(),
        json!([{ "body": "first" }, { "body": "writer" }]),
        "only the writer's row landed"
    );
}

/// An instance holds at most two transactions open at once: each may hold
/// one of its tenant's turns for transactions until its timeout. Dropping
/// one makes room.
#[test]
fn an_instance_holds_only_so_many_transactions_open() {
    let host = unchecked_sql_host("Tables/*");
    let alice = host.signup(&unique_email("txs"), PASSWORD);
    let held = call(&host, "GET", "/caller-txs", &alice.access_token, None);
    assert_eq!(held.status, 200, "{}", held.text());
    let answers = held.json();
    assert_eq!(answers[0], "open");
    assert_eq!(answers[1], "open");
    assert!(
        answers[2]
            .as_str()
            .unwrap()
            .contains("at most 2 transactions open at once"),
        "{answers}"
    );
    assert_eq!(answers[3], "open", "{answers}");
}

#[test]
fn a_setting_left_inside_a_transaction_does_not_change_how_its_next_statement_is_read() {
    let host = unchecked_sql_host("Tables/*");
    let alice = host.signup(&unique_email("tx"), PASSWORD);
    let tx = |queries: &[&str]| {
        call(
            &host,
            "POST",
            "/caller-tx",
            &alice.access_token,
            Some(&json!(queries)),
        )
    };
    let created = tx(&["CREATE TABLE marks (n int)"]);
    assert_eq!(created.status, 200, "{}", created.text());
    // With backslashes escaping in plain strings (the first statement's
    // doing), Postgres would read the second as a SELECT, a COMMIT ending
    // the transaction, and an INSERT outside it. The host reads it with the
    // setting on, as one string, and so does Postgres now.
    const SMUGGLED: &str = r"SELECT 'a\'' ; COMMIT; INSERT INTO marks VALUES (9); --'";
    let read = tx(&[
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        SMUGGLED,
    ]);
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(
        read.json()[0]["?column?"],
        r"a\' ; COMMIT; INSERT INTO marks VALUES (9); --"
    );
    // A transaction that then fails leaves nothing behind.
    tx(&[
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        SMUGGLED,
        "SELECT 1/0",
    ])
    .expect_error(400);
    let marks = tx(&["SELECT count(*)::int AS n FROM marks"]);
    assert_eq!(marks.json(), json!([{ "n": 0 }]), "{}", marks.text());
}
