//! `DATABASE_URL`: an external Postgres instead of the embedded one.

use serde_json::json;
use zatabase_tests::Host;
use zatabase_tests::postgres::Standalone;

#[test]
fn an_external_postgres_without_pgvector_is_refused_at_start() {
    let postgres = Standalone::start(false);
    let refused = Host::builder()
        .env("DATABASE_URL", &postgres.url())
        .try_start();
    let log = refused.err().expect("the host must not start");
    assert!(log.contains("no pgvector extension"), "{log}");
}

#[test]
fn an_external_postgres_with_pgvector_serves_tenants_over_password_logins() {
    let postgres = Standalone::start(true);
    let host = Host::builder().env("DATABASE_URL", &postgres.url()).start();
    assert!(
        !host.data_dir.join("postgres/postmaster.pid").exists(),
        "no embedded Postgres runs beside an external one"
    );
    assert_eq!(host.get("/health/ready").status, 200);
    host.sql_ok("CREATE TABLE outside (v vector(2))", &[]);
    host.sql_ok("INSERT INTO outside VALUES ($1)", &[json!([3, 4])]);
    let body = host.sql_ok("SELECT v <-> '[0,0]' AS d FROM outside", &[]);
    assert_eq!(body["rows"], json!([{ "d": 5.0 }]));
    let whoami = host.sql_ok("SELECT session_user AS login", &[]);
    let login = whoami["rows"][0]["login"].as_str().unwrap();
    assert!(
        login.starts_with("tenant_") && login.ends_with("_sandbox_login"),
        "{login}"
    );
}

#[test]
fn a_tenant_that_changes_its_own_login_locks_nothing_out() {
    let postgres = Standalone::start(true);
    let host = Host::builder()
        .env("DATABASE_URL", &postgres.url())
        .config("[pool]\ntenant_max_connections = 1\n")
        .start();
    // A role may change its own password and defaults.
    host.sql_ok(
        "RESET ROLE; ALTER ROLE CURRENT_USER PASSWORD 'mine now'; \
         ALTER ROLE CURRENT_USER SET default_transaction_read_only = on",
        &[],
    );
    // Its one connection ended, the next request logs in anew: refused
    // with the old password, the host provisions the role again (its
    // password, no defaults of the tenant's) and goes on.
    host.sql(
        "RESET ROLE; SELECT pg_terminate_backend(pg_backend_pid())",
        &[],
    )
    .expect_error(503);
    host.sql_ok("CREATE TABLE after_the_change (x int)", &[]);
}

/// A host on `postgres`; hosts sharing a database share the master key.
fn host_on(postgres: &Standalone) -> Host {
    Host::builder()
        .env("DATABASE_URL", &postgres.url())
        .env("ZATABASE_MASTER_KEY", &"0f".repeat(32))
        .start()
}

#[test]
fn a_session_ended_on_one_host_ends_on_every_host() {
    let postgres = Standalone::start(true);
    let (a, b) = (host_on(&postgres), host_on(&postgres));
    let account = a.signup(
        &zatabase_tests::unique_email("multi"),
        "a long test password",
    );
    let bearer = format!("Bearer {}", account.access_token);
    let whoami = |host: &Host| {
        host.request(
            "GET",
            "/v1/whoami",
            &[("authorization", &bearer)],
            Vec::new(),
        )
    };
    // Both hosts accept the token (and host A now trusts the session).
    assert_eq!(whoami(&a).status, 200);
    assert_eq!(whoami(&b).status, 200);
    assert_eq!(whoami(&a).status, 200);
    // Logging out through host B ends the session on host A too.
    let out = b.request(
        "POST",
        "/v1/auth/logout",
        &[("authorization", &bearer)],
        Vec::new(),
    );
    assert_eq!(out.status, 204, "{}", out.text());
    assert_eq!(whoami(&b).status, 401, "at once on the host that ended it");
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(2), || whoami(&a).status
            == 401),
        "host A still trusts a session ended on host B"
    );
}

#[test]
fn a_grant_revoked_on_one_host_is_revoked_on_every_host() {
    let postgres = Standalone::start(true);
    let (a, b) = (host_on(&postgres), host_on(&postgres));
    let password = "a long test password";
    let alice = a.signup(&zatabase_tests::unique_email("owner"), password);
    let bob = a.signup(&zatabase_tests::unique_email("guest"), password);
    let as_user = |host: &Host, method: &str, path: &str, token: &str, body: serde_json::Value| {
        let bearer = format!("Bearer {token}");
        host.request(
            method,
            path,
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&body).unwrap(),
        )
    };
    let project =
        as_user(&a, "GET", "/v1/whoami", &alice.access_token, json!(null)).json()["project_id"]
            .clone();
    let grant = |actions: serde_json::Value| {
        as_user(
            &b,
            "PUT",
            "/v1/permissions",
            &alice.access_token,
            json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Tables", "actions": actions }),
        )
    };
    assert_eq!(grant(json!(["Read"])).status, 201);
    let switched = as_user(
        &a,
        "POST",
        "/v1/auth/switch",
        &bob.access_token,
        json!({ "environment": alice.environment, "project_id": project }),
    );
    assert_eq!(switched.status, 200, "{}", switched.text());
    let bob = zatabase_tests::Account::from(&switched.json());
    let select = |host: &Host| {
        as_user(
            host,
            "POST",
            "/v1/sql",
            &bob.access_token,
            json!({ "query": "SELECT 1" }),
        )
        .status
    };
    // Host A checks the session and trusts it for a while.
    assert_eq!(select(&a), 200);
    assert_eq!(select(&a), 200);
    // Revoked through host B: host A hears of it.
    let functions = |actions: serde_json::Value| {
        as_user(
            &b,
            "PUT",
            "/v1/permissions",
            &alice.access_token,
            json!({ "principal_type": "user", "principal_id": bob.user_id, "resource": "Functions", "actions": actions }),
        )
        .status
    };
    assert_eq!(functions(json!(["Read"])), 201);
    assert_eq!(grant(json!([])).status, 200);
    assert_eq!(select(&b), 403, "at once on the host that changed it");
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(2), || select(&a) == 403),
        "host A still trusts a revoked grant"
    );
    // His last grant revoked, his session in the project ends, there too.
    assert_eq!(functions(json!([])), 200);
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(2), || select(&a) == 401),
        "host A still trusts a session its project no longer lets in"
    );
}

#[test]
fn functions_are_shared_by_hosts_and_a_cron_tick_runs_once() {
    let postgres = Standalone::start(true);
    let (a, b) = (host_on(&postgres), host_on(&postgres));
    let account = a.signup(&zatabase_tests::unique_email("fn"), "a long test password");
    let token = account.access_token;
    let created = a.call(
        "POST",
        "/v1/functions",
        &token,
        Some(&json!({ "name": "shared", "secrets": { "api_key": "s3cret-value" } })),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let wasm = std::fs::read(zatabase_tests::function_fixture("spin5")).unwrap();
    let bearer = format!("Bearer {token}");
    let deployed = a.request(
        "POST",
        &format!("/v1/functions/{id}/deployments"),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/wasm"),
        ],
        wasm,
    );
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    // Deployed through one host, served by the other (which compiles it
    // from the stored component).
    let served = b.call("GET", "/fn/shared/hello", &token, None);
    assert_eq!(served.status, 200, "{}", served.text());
    // The secret is sealed at rest (under the shared master key), and both
    // hosts open it for the function.
    let stored = postgres.query("SELECT secrets->>'api_key' FROM zatabase.functions");
    assert!(
        stored.starts_with("sealed:v2:") && !stored.contains("s3cret"),
        "{stored}"
    );
    for host in [&a, &b] {
        let read = host.call("GET", "/fn/shared/var/api_key", &token, None);
        assert_eq!(read.text(), "s3cret-value");
    }

    // A new version deployed through one host: the other, which serves the
    // function, hears of it and makes the new deployment before a request
    // asks for it (a request would otherwise wait for its compile).
    let hello = std::fs::read(zatabase_tests::function_fixture("hello")).unwrap();
    let redeployed = a.request(
        "POST",
        &format!("/v1/functions/{id}/deployments"),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/wasm"),
        ],
        hello,
    );
    assert_eq!(redeployed.status, 201, "{}", redeployed.text());
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(20), || {
            b.log().lines().any(|line| {
                line.contains("changed function made again")
                    && line.contains(&id)
                    && line.contains("version=2")
            })
        }),
        "the other host did not make the new version before a request"
    );
    let served = b.call("GET", "/fn/shared/hello", &token, None);
    assert_eq!(served.text(), "hello, world");

    // Both hosts run the scheduler; each tick must run once. The calls so
    // far are counted first (telemetry lands a quarter second behind).
    let metrics_path = format!("/v1/functions/{id}/metrics");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let calls_before = a.call("GET", &metrics_path, &token, None).json()["invocations"]
        .as_f64()
        .unwrap();
    let started = std::time::Instant::now();
    let trigger = a.call(
        "POST",
        &format!("/v1/functions/{id}/triggers"),
        &token,
        Some(&json!({ "type": "cron", "schedule": "* * * * * *", "path": "/hello" })),
    );
    assert_eq!(trigger.status, 201, "{}", trigger.text());
    std::thread::sleep(std::time::Duration::from_secs(5));
    // Let the last batches land, then count the ticks.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let elapsed = started.elapsed().as_secs_f64();
    let invocations = a.call("GET", &metrics_path, &token, None).json()["invocations"]
        .as_f64()
        .unwrap();
    let ticks = invocations - calls_before;
    assert!(
        ticks >= 3.0,
        "the trigger ran: {ticks} ticks in {elapsed:.1} s"
    );
    assert!(
        ticks <= elapsed.ceil() + 1.0,
        "{ticks} ticks in {elapsed:.1} s: a tick ran on both hosts"
    );

    // Deleted through one host, gone from the other at once.
    let deleted = a.call("DELETE", &format!("/v1/functions/{id}"), &token, None);
    assert_eq!(deleted.status, 204);
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(2), || {
            b.call("GET", "/fn/shared/hello", &token, None).status == 404
        }),
        "the other host still serves a deleted function"
    );
}
