//! Users' functions: `/v1/functions` (the functions route group), deploying
//! real components (spin-sdk 5 and spin-sdk 7 functions from
//! `tests/functions/spin5` and `spin7`), and calling them at `/fn/:name/*`
//! and `/v1/functions/:id/invoke`.

use serde_json::{Value, json};
use zatabase_tests::{Host, Resp, fixture, function_fixture, unique_email};

fn spin5() -> Vec<u8> {
    std::fs::read(function_fixture("spin5")).unwrap()
}

fn spin7() -> Vec<u8> {
    std::fs::read(function_fixture("spin7")).unwrap()
}

fn call(host: &Host, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
    host.call(method, path, token, body)
}

fn create(host: &Host, token: &str, body: Value) -> Value {
    let created = call(host, "POST", "/v1/functions", token, Some(&body));
    assert_eq!(created.status, 201, "{}", created.text());
    created.json()
}

fn deploy(host: &Host, token: &str, id: &str, wasm: Vec<u8>) -> Resp {
    let bearer = format!("Bearer {token}");
    host.request(
        "POST",
        &format!("/v1/functions/{id}/deployments"),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/wasm"),
        ],
        wasm,
    )
}

/// A function created with `settings` and `wasm` deployed to it; its id.
fn deployed(host: &Host, token: &str, settings: Value, wasm: Vec<u8>) -> String {
    let id = create(host, token, settings)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployed = deploy(host, token, &id, wasm);
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    id
}

fn fn_get(host: &Host, token: &str, path: &str) -> Resp {
    call(host, "GET", path, token, None)
}

/// A function's deployments as (version, active), newest first.
fn versions(host: &Host, token: &str, id: &str) -> Vec<(i64, bool)> {
    fn_get(host, token, &format!("/v1/functions/{id}/deployments")).json()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_i64().unwrap(),
                d["active"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn activate(host: &Host, token: &str, id: &str, deployment: &str) -> Resp {
    call(
        host,
        "POST",
        &format!("/v1/functions/{id}/deployments/{deployment}/activate"),
        token,
        None,
    )
}

/// Method, path, query, headers and body reach function `name`'s `/echo`;
/// the caller's token and the platform's own headers (routing, and those a
/// trigger's call carries) do not.
fn assert_echoes(host: &Host, token: &str, name: &str, method_line: &str) -> Resp {
    let bearer = format!("Bearer {token}");
    let echo = host.request(
        "PATCH",
        &format!("/fn/{name}/echo?x=1&y=two"),
        &[
            ("authorization", bearer.as_str()),
            ("x-probe", "probe-value"),
            ("x-zatabase-project", "ignored-with-a-token"),
            ("x-zatabase-environment", "sandbox"),
            ("x-zatabase-trigger", "cron"),
            ("x-zatabase-schedule", "* * * * *"),
        ],
        b"the body".to_vec(),
    );
    assert_eq!(echo.status, 201, "{}", echo.text());
    let text = echo.text();
    for line in [
        method_line,
        "path_info=/echo",
        "query=x=1&y=two",
        "x-probe=probe-value",
        "authorization=\n",
        "routing=\n",
        "body=the body",
    ] {
        assert!(text.contains(line), "`{line}` not in:\n{text}");
    }
    echo
}

/// Function `name` reads its variable `greeting` and its secret `api_key`
/// (`s3cret`) as Spin variables; an undefined one is its 404.
fn assert_variables(host: &Host, token: &str, name: &str, greeting: &str) {
    let var = |variable: &str| fn_get(host, token, &format!("/fn/{name}/var/{variable}"));
    assert_eq!(var("greeting").text(), greeting);
    assert_eq!(var("api_key").text(), "s3cret");
    assert_eq!(var("missing").status, 404);
}

#[test]
fn a_spin_sdk_5_function_deploys_and_answers_at_fn() {
    let host = Host::start();
    let token = host.token();
    let function = create(
        &host,
        &token,
        json!({
            "name": "greeter",
            "description": "says hello",
            "variables": { "greeting": "bonjour" },
            "secrets": { "api_key": "s3cret" }
        }),
    );
    let id = function["id"].as_str().unwrap().to_owned();
    assert_eq!(
        function["secrets"],
        json!(["api_key"]),
        "secrets by name only"
    );
    assert!(!function.to_string().contains("s3cret"), "{function}");
    assert_eq!(function["active_deployment"], Value::Null);
    assert_eq!(function["url"], "/fn/greeter");

    // Not deployed yet: 404 that says so.
    let message = fn_get(&host, &token, "/fn/greeter/hello").expect_error(404);
    assert!(message.contains("no active deployment"), "{message}");

    let wasm = spin5();
    let deployed = deploy(&host, &token, &id, wasm.clone());
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    let deployed = deployed.json();
    assert_eq!(deployed["version"], 1);
    assert_eq!(deployed["active"], true);
    assert_eq!(deployed["size"], wasm.len() as u64);
    assert_eq!(deployed["sha256"].as_str().unwrap().len(), 64);
    assert!(
        deployed["handler"]
            .as_str()
            .unwrap()
            .starts_with("wasi:http/incoming-handler@0.2."),
        "{deployed}"
    );

    let hello = fn_get(&host, &token, "/fn/greeter/hello");
    assert_eq!(hello.status, 200, "{}", hello.text());
    assert_eq!(hello.text(), "hello from spin-sdk 5");

    let echo = assert_echoes(&host, &token, "greeter", "method=Method::Patch");
    assert_eq!(echo.header("x-echoed"), Some("yes"));
    let full_url = format!("{}/fn/greeter/echo?x=1&y=two", host.base);
    for line in [
        format!("uri={full_url}\n"),
        // Spin's request headers.
        format!("full_url={full_url}\n"),
        "base_path=/fn/greeter\n".to_owned(),
        "matched_route=/fn/greeter/...\n".to_owned(),
    ] {
        assert!(
            echo.text().contains(&line),
            "`{line}` not in {}",
            echo.text()
        );
    }

    // Variables and secrets are the function's Spin variables.
    assert_variables(&host, &token, "greeter", "bonjour");
    assert_eq!(
        fn_get(&host, &token, "/fn/greeter/var/Bad-Name").status,
        400
    );

    // The fixture imports Spin's Redis interface, which this host does not
    // provide: it still deployed and serves; using Redis fails clearly, as
    // an error the function handles (its 502), not a trap.
    let redis = fn_get(&host, &token, "/fn/greeter/redis");
    unsupported_redis(&redis);
    assert_eq!(fn_get(&host, &token, "/fn/greeter/hello").status, 200);
    // `wasi:config/store` is Spin's other way to the same variables.
    assert_eq!(
        fn_get(&host, &token, "/fn/greeter/config").text(),
        r#"greeting=Some("bonjour") missing=None names=api_key,greeting"#
    );
    // Handles are host memory: a request holds at most 256 stores, and the
    // next open is refused as Spin refuses it, not a trap.
    assert_eq!(
        fn_get(&host, &token, "/fn/greeter/stores").text(),
        "opened=256 refused=Error::StoreTableFull"
    );
    // spin-sdk 5's `pg4` imports postgres@4.0.0, which the host's 4.2.0
    // serves: the query runs in the function's own tenant, whatever
    // address it names.
    let pg4 = fn_get(&host, &token, "/fn/greeter/pg4");
    assert_eq!(pg4.status, 200, "{}", pg4.text());
    let schema = pg4.text();
    assert!(
        schema.starts_with("n=42 schema=tenant_") && schema.ends_with("_sandbox"),
        "{schema}"
    );

    // A settings change reaches the next request.
    let updated = call(
        &host,
        "PUT",
        &format!("/v1/functions/{id}"),
        &token,
        Some(&json!({ "variables": { "greeting": "hola" }, "secrets": { "api_key": null } })),
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["secrets"], json!([]));
    assert_eq!(
        fn_get(&host, &token, "/fn/greeter/var/greeting").text(),
        "hola"
    );
    assert_eq!(fn_get(&host, &token, "/fn/greeter/var/api_key").status, 404);

    // Invoke: the JSON body goes to the function as POST /fn/<name>.
    let invoked = call(
        &host,
        "POST",
        &format!("/v1/functions/{id}/invoke"),
        &token,
        Some(&json!({ "n": 1 })),
    );
    assert_eq!(invoked.status, 201, "{}", invoked.text());
    let text = invoked.text();
    assert!(
        text.contains("method=Method::Post") && text.contains("body={\"n\":1}"),
        "{text}"
    );
    assert!(text.contains("path_info=/\n"), "{text}");
    // The id in any spelling of a UUID; anything else is no function.
    let upper = id.to_uppercase();
    let simple = id.replace('-', "");
    for spelling in [
        upper.as_str(),
        &format!("urn:uuid:{id}"),
        &format!("urn%3Auuid%3A{id}"),
        &simple,
    ] {
        let invoked = call(
            &host,
            "POST",
            &format!("/v1/functions/{spelling}/invoke"),
            &token,
            Some(&json!({ "n": 2 })),
        );
        assert_eq!(invoked.status, 201, "{spelling}: {}", invoked.text());
    }
    call(
        &host,
        "POST",
        "/v1/functions/urn:uuid:nope/invoke",
        &token,
        Some(&json!({})),
    )
    .expect_error(404);
}

#[test]
fn a_spin_sdk_7_function_runs_on_wasi_0_3_with_spins_interfaces() {
    // Loopback is a blocked network by default; this test's server is there.
    let host = Host::builder()
        .config("[functions]\nblocked_networks = []\n")
        .start();
    let token = host.token();
    let port = pong_server();
    let function = create(
        &host,
        &token,
        json!({
            "name": "async",
            "variables": { "greeting": "hej" },
            "secrets": { "api_key": "s3cret" },
            "allowed_outbound_hosts": [format!("http://127.0.0.1:{port}")],
            "timeout_ms": 1000
        }),
    );
    let id = function["id"].as_str().unwrap().to_owned();
    let deployed = deploy(&host, &token, &id, spin7());
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    assert_eq!(deployed.json()["handler"], "wasi:http/handler@0.3.0");

    assert_eq!(
        fn_get(&host, &token, "/fn/async/hello").text(),
        "hello from spin-sdk 7"
    );

    assert_echoes(&host, &token, "async", "method=PATCH");
    // The client's address as the socket says: this host trusts no proxy.
    let echoed = fn_echo(&host, &token, "async", "203.0.113.5");
    assert!(echoed.contains("client=127.0.0.1:0\n"), "{echoed}");
    // spin:variables@3.0.0
    assert_variables(&host, &token, "async", "hej");
    let bearer = format!("Bearer {token}");

    // spin:key-value@3.0.0: kept between requests, keys streamed back.
    assert_eq!(
        fn_get(&host, &token, "/fn/async/kv").text(),
        "calls=1 keys=calls,seen"
    );
    assert_eq!(
        fn_get(&host, &token, "/fn/async/kv").text(),
        "calls=2 keys=calls,seen"
    );

    // spin:postgres@4.2.0: a table of the tenant's own, rows streamed back,
    // and the same table through /v1/sql.
    let first = fn_get(&host, &token, "/fn/async/pg");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.text(), "inserted=1\n1:from spin-sdk 7");
    assert_eq!(
        fn_get(&host, &token, "/fn/async/pg").text(),
        "inserted=1\n1:from spin-sdk 7\n2:from spin-sdk 7"
    );
    let counted = call(
        &host,
        "POST",
        "/v1/sql",
        &token,
        Some(&json!({ "query": "SELECT count(*) AS n FROM spin7_notes" })),
    );
    assert_eq!(counted.json()["rows"][0]["n"], 2, "{}", counted.text());

    // Each of Postgres 4.2's types, as a column and as a parameter.
    let typed = fn_get(&host, &token, "/fn/async/pg-types");
    assert_eq!(typed.status, 200, "{}", typed.text());
    let typed = typed.text();
    for line in [
        r#"uuid=DbValue::Uuid("7c9e6679-7425-40de-944b-e07fc1f90ae7")"#,
        r#"jsonb=Jsonb({"a": 1})"#,
        r#"decimal=DbValue::Decimal("29.99")"#,
        "int4s=DbValue::ArrayInt32([Some(1), None, Some(3)])",
        r#"texts=DbValue::ArrayStr([Some("x"), Some("y")])"#,
        "interval=DbValue::Interval(Interval { micros: 3500000, days: 2, months: 1 })",
        "range=DbValue::RangeInt32((Some((1, RangeBoundKind::Inclusive)), Some((5, RangeBoundKind::Exclusive))))",
        "date=DbValue::Date((2024, 3, 1))",
        "bool=DbValue::Boolean(true)",
        "null=DbValue::DbNull",
        r#"p_uuid=DbValue::Uuid("00000000-0000-0000-0000-000000000001")"#,
        r#"p_decimal=DbValue::Decimal("-0.5")"#,
        "p_int8s=DbValue::ArrayInt64([Some(1), None])",
        "p_interval=DbValue::Interval(Interval { micros: 1500000, days: 1, months: 2 })",
        "p_range=DbValue::RangeInt64((Some((10, RangeBoundKind::Inclusive)), None))",
        "p_jsonb=Jsonb([true])",
    ] {
        assert!(
            typed.lines().any(|l| l == line),
            "`{line}` not in:\n{typed}"
        );
    }

    // A body the guest goes on writing after it has returned its response.
    let streamed = fn_get(&host, &token, "/fn/async/stream");
    assert_eq!(streamed.status, 200);
    let lines: Vec<String> = streamed.text().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 100, "{lines:?}");
    assert_eq!(lines[99], "chunk 99");

    // Outbound HTTP through wasi:http/client@0.3.0, under the same allow-list.
    let fetch = |target: &str| {
        host.request(
            "GET",
            "/fn/async/fetch",
            &[("authorization", bearer.as_str()), ("x-target", target)],
            vec![],
        )
    };
    let reached = fetch(&format!("http://127.0.0.1:{port}/ping"));
    assert_eq!(reached.text(), "status=200 body=pong");
    for target in [
        format!("http://localhost:{port}/ping"),
        format!("http://127.0.0.1:{}/ping", port.wrapping_add(1)),
        host.url("/health"),
    ] {
        let denied = fetch(&target);
        assert_eq!(denied.status, 502, "{target}: {}", denied.text());
        assert!(
            denied.text().starts_with("outbound failed"),
            "{}",
            denied.text()
        );
    }

    // Spin's Redis is linked but not provided: a clear error, no trap at
    // load nor at the call.
    unsupported_redis(&fn_get(&host, &token, "/fn/async/redis"));

    // Faults: a trap is a 500, a spin past the timeout a 504; it serves on.
    let trapped = fn_get(&host, &token, "/fn/async/panic").expect_error(500);
    assert!(trapped.contains("async"), "{trapped}");
    let started = std::time::Instant::now();
    fn_get(&host, &token, "/fn/async/loop").expect_error(504);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(fn_get(&host, &token, "/fn/async/hello").status, 200);
}

/// What function `name`'s `/echo` answers to a request forwarded for
/// `forwarded_for`.
fn fn_echo(host: &Host, token: &str, name: &str, forwarded_for: &str) -> String {
    let bearer = format!("Bearer {token}");
    let echo = host.request(
        "GET",
        &format!("/fn/{name}/echo"),
        &[
            ("authorization", bearer.as_str()),
            ("x-forwarded-for", forwarded_for),
        ],
        Vec::new(),
    );
    assert_eq!(echo.status, 201, "{}", echo.text());
    echo.text()
}

#[test]
fn behind_a_trusted_proxy_a_function_sees_the_client_it_forwards() {
    let host = Host::builder()
        .config("[http]\ntrusted_proxies = [\"127.0.0.0/8\"]\n")
        .start();
    let token = host.token();
    deployed(&host, &token, json!({ "name": "proxied" }), spin7());
    // The nearest address that is not a trusted proxy; the leftmost, the
    // client's own claim, counts for nothing.
    let echoed = fn_echo(
        &host,
        &token,
        "proxied",
        "198.51.100.7, 203.0.113.5, 127.0.0.9",
    );
    assert!(echoed.contains("client=203.0.113.5:0\n"), "{echoed}");
    let echoed = fn_echo(&host, &token, "proxied", "2001:db8::5");
    assert!(echoed.contains("client=[2001:db8::5]:0\n"), "{echoed}");
    // A proxy that writes its client's port (Azure's gateway does).
    let echoed = fn_echo(&host, &token, "proxied", "203.0.113.6:51234");
    assert!(echoed.contains("client=203.0.113.6:0\n"), "{echoed}");
    let echoed = fn_echo(&host, &token, "proxied", "not an address");
    assert!(echoed.contains("client=127.0.0.1:0\n"), "{echoed}");
}

/// A kept instance unused for `components.idle_instance_secs` is dropped,
/// and what it held with it (a WASI 0.3 function's sockets and handles):
/// the next request gets a fresh one.
#[test]
fn an_instance_idle_past_its_time_is_dropped() {
    let host = Host::builder()
        .config("[components]\nidle_instance_secs = 2\n")
        .start();
    let token = host.token();
    deployed(&host, &token, json!({ "name": "kept" }), spin7());
    let served = || fn_get(&host, &token, "/fn/kept/served").text();
    assert_eq!(served(), "1");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(served(), "2", "within its idle time, the instance serves");
    // Idle for 2 s, swept every second.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(served(), "1", "past it, a fresh instance serves");
}

#[test]
fn a_wasi_0_3_instance_serves_requests_in_turn_until_it_fails() {
    let host = Host::start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "kept" }), spin7());
    // An instance goes back to the idle pool once its response is sent,
    // which can be a moment after the client has it when the guest still
    // has work to finish (the client may be quicker than the host's task
    // on a busy machine). An idle caller, as between a user's clicks,
    // finds it there.
    let idle = || std::thread::sleep(std::time::Duration::from_millis(500));
    let served = || {
        let text = fn_get(&host, &token, "/fn/kept/served").text();
        idle();
        text
    };
    assert_eq!(served(), "1");
    assert_eq!(
        served(),
        "2",
        "the instance that answered serves the next request"
    );

    // A change that leaves what the instance was made from alone keeps it
    // (the host forgets the function at every change, at once on the
    // change's own request and again when its notification arrives).
    let put = |settings: Value| {
        let updated = call(
            &host,
            "PUT",
            &format!("/v1/functions/{id}"),
            &token,
            Some(&settings),
        );
        assert_eq!(updated.status, 200, "{}", updated.text());
    };
    put(json!({ "description": "counts its requests" }));
    assert_eq!(served(), "3", "a description changes no instance");
    // One that changes what the function reads starts a new one: the old
    // may have kept what its variables said.
    put(json!({ "variables": { "greeting": "hola" } }));
    assert_eq!(served(), "1", "new variables, a new instance");
    assert_eq!(
        fn_get(&host, &token, "/fn/kept/var/greeting").text(),
        "hola"
    );
    idle();

    // Each request's output carries its own request id, though one
    // instance wrote both lines.
    let first = fn_get(&host, &token, "/fn/kept/log");
    idle();
    let second = fn_get(&host, &token, "/fn/kept/log");
    idle();
    for (response, line) in [
        (&first, "request 3 of this instance"),
        (&second, "request 4 of this instance"),
    ] {
        let request_id = response.header("x-request-id").unwrap();
        let path = format!("/v1/functions/{id}/logs?request_id={request_id}");
        let mut logs = Value::Null;
        assert!(
            zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
                logs = fn_get(&host, &token, &path).json();
                logs["logs"].as_array().is_some_and(|l| l.len() == 1)
            }),
            "{logs}"
        );
        assert_eq!(logs["logs"][0]["message"], line, "{logs}");
    }

    // A trap ends the instance: the next request starts a new one.
    fn_get(&host, &token, "/fn/kept/panic").expect_error(500);
    idle();
    assert_eq!(served(), "1");
    // So does a redeploy.
    assert_eq!(served(), "2");
    assert_eq!(deploy(&host, &token, &id, spin7()).status, 201);
    assert_eq!(served(), "1");
}

#[test]
fn the_smallest_spin_function_answers_every_method_and_path() {
    let host = Host::start();
    let token = host.token();
    let id = create(&host, &token, json!({ "name": "hello" }))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wasm = std::fs::read(function_fixture("hello")).unwrap();
    assert_eq!(deploy(&host, &token, &id, wasm).status, 201);
    let bearer = format!("Bearer {token}");
    for (method, path) in [
        ("GET", "/fn/hello"),
        ("POST", "/fn/hello/"),
        ("DELETE", "/fn/hello/a/b?c=d"),
        // Not a CORS preflight (no Origin): the function's to answer.
        ("OPTIONS", "/fn/hello/x"),
    ] {
        let answer = host.request(method, path, &[("authorization", bearer.as_str())], vec![]);
        assert_eq!(answer.status, 200, "{method} {path}: {}", answer.text());
        assert_eq!(answer.text(), "hello, world");
    }
    fn_get(&host, &token, "/fn/nobody/hello").expect_error(404);
}

#[test]
fn bad_deployments_are_refused_and_the_previous_version_keeps_serving() {
    let host = Host::start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "steady" }), spin5());

    let garbage = deploy(&host, &token, &id, b"definitely not wasm".to_vec()).expect_error(422);
    assert!(garbage.contains("not a WebAssembly component"), "{garbage}");
    let core = deploy(&host, &token, &id, b"\0asm\x01\0\0\0".to_vec()).expect_error(422);
    assert!(core.contains("core WebAssembly module"), "{core}");
    let truncated = spin5()[..1000].to_vec();
    let broken = deploy(&host, &token, &id, truncated).expect_error(422);
    assert!(broken.contains("does not validate"), "{broken}");
    // A route group of the platform imports platform-db, which functions
    // are not given: refused, naming it.
    let platform = std::fs::read(fixture("misbehave")).unwrap();
    let refused = deploy(&host, &token, &id, platform).expect_error(422);
    assert!(refused.contains("platform-db"), "{refused}");

    let bearer = format!("Bearer {token}");
    let wrong_type = host.request(
        "POST",
        &format!("/v1/functions/{id}/deployments"),
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "text/plain"),
        ],
        spin5(),
    );
    wrong_type.expect_error(415);
    deploy(&host, &token, &id, Vec::new()).expect_error(400);
    // The host failing to compile a good component (its compile cache
    // unwritable) is its own fault, a 500, not the upload's 422.
    let cache = host.data_dir.join("cache/components");
    let aside = host.data_dir.join("cache/components-aside");
    std::fs::rename(&cache, &aside).unwrap();
    std::fs::write(&cache, b"not a directory").unwrap();
    let unwritable = deploy(&host, &token, &id, std::fs::read(fixture("hello")).unwrap());
    std::fs::remove_file(&cache).unwrap();
    std::fs::rename(&aside, &cache).unwrap();
    unwritable.expect_error(500);

    // A component whose memory starts larger than the function's
    // `memory_mb` could run no call: refused at deploy, at install, and
    // when a change of `memory_mb` would leave the active version so.
    let lowered = call(
        &host,
        "PUT",
        &format!("/v1/functions/{id}"),
        &token,
        Some(&json!({ "memory_mb": 1 })),
    )
    .expect_error(422);
    assert!(
        lowered.contains("active version") && lowered.contains("starts with"),
        "{lowered}"
    );
    assert_eq!(
        fn_get(&host, &token, &format!("/v1/functions/{id}")).json()["memory_mb"],
        64
    );
    let tight = create(&host, &token, json!({ "name": "tight", "memory_mb": 1 }))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = deploy(&host, &token, &tight, spin5()).expect_error(422);
    assert!(
        refused.contains("starts with") && refused.contains("`memory_mb` (1)"),
        "{refused}"
    );
    assert!(versions(&host, &token, &tight).is_empty());
    let installed = call(
        &host,
        "POST",
        "/v1/functions/templates/hello/install",
        &token,
        Some(&json!({ "function_name": "tiny", "memory_mb": 1 })),
    )
    .expect_error(422);
    assert!(installed.contains("starts with"), "{installed}");
    let names: Vec<Value> = fn_get(&host, &token, "/v1/functions").json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert!(!names.contains(&json!("tiny")), "{names:?}");

    let listed = fn_get(&host, &token, &format!("/v1/functions/{id}/deployments")).json();
    assert_eq!(
        listed["deployments"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(
        fn_get(&host, &token, "/fn/steady/hello").text(),
        "hello from spin-sdk 5"
    );
}

#[test]
fn an_older_deployment_can_be_activated_again() {
    let host = Host::start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "versions" }), spin5());
    // Version 2: another component (answers JSON to everything).
    let v2 = deploy(&host, &token, &id, std::fs::read(fixture("hello")).unwrap());
    assert_eq!(v2.status, 201, "{}", v2.text());
    assert_eq!(v2.json()["version"], 2);
    let served = fn_get(&host, &token, "/fn/versions/hello");
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.json(), json!({ "hello": "world" }));

    let back = activate(&host, &token, &id, "1");
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(back.json()["version"], 1);
    assert_eq!(
        fn_get(&host, &token, "/fn/versions/hello").text(),
        "hello from spin-sdk 5"
    );
    assert_eq!(versions(&host, &token, &id), [(2, false), (1, true)]);
    activate(&host, &token, &id, "7").expect_error(404);

    // A version is checked again when it is activated, as an upload is:
    // one this host can no longer run (here, its stored bytes broken, as a
    // host upgrade could leave an old component) is refused, naming it, and
    // the active version keeps serving.
    let v2_sha = v2.json()["sha256"].as_str().unwrap().to_owned();
    host.platform_sql(&format!(
        "UPDATE zatabase.function_blobs SET wasm = '\\x00' WHERE sha256 = '{v2_sha}'"
    ));
    let refused = activate(&host, &token, &id, "2").expect_error(422);
    assert!(refused.contains("version 2 cannot run"), "{refused}");
    assert_eq!(versions(&host, &token, &id), [(2, false), (1, true)]);
    assert_eq!(
        fn_get(&host, &token, "/fn/versions/hello").text(),
        "hello from spin-sdk 5"
    );
}

/// `wasm` with a custom section holding `tag`: the same component under
/// another content address.
fn tagged(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return;
            }
        }
    }
    let name = b"zatabase-test";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

#[test]
fn old_deployments_past_the_limit_go_and_so_do_their_unused_components() {
    let host = Host::builder()
        .config("[functions]\nmax_deployments = 2\n")
        .start();
    let token = host.token();
    let hello = std::fs::read(fixture("hello")).unwrap();
    let id = create(&host, &token, json!({ "name": "kept" }))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut shas = Vec::new();
    for version in 1..=3 {
        let deployed = deploy(&host, &token, &id, tagged(&hello, &format!("v{version}")));
        assert_eq!(deployed.status, 201, "{}", deployed.text());
        assert_eq!(deployed.json()["version"], version);
        shas.push(deployed.json()["sha256"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        shas.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    assert_eq!(versions(&host, &token, &id), [(3, true), (2, false)]);
    let stored = |sha: &str| {
        host.platform_sql(&format!(
            "SELECT count(*) FROM zatabase.function_blobs WHERE sha256 = '{sha}'"
        ))
    };
    assert_eq!(stored(&shas[0]), "0", "version 1's component is unused");
    assert_eq!(stored(&shas[1]), "1");
    activate(&host, &token, &id, "1").expect_error(404);

    // Rolled back to version 2, whose component another function shares:
    // the next deploy removes version 2's deployment (the active one is the
    // new version), not the component the other still serves.
    let back = activate(&host, &token, &id, "2");
    assert_eq!(back.status, 200, "{}", back.text());
    deployed(
        &host,
        &token,
        json!({ "name": "sharing" }),
        tagged(&hello, "v2"),
    );
    let v4 = deploy(&host, &token, &id, tagged(&hello, "v4"));
    assert_eq!(v4.status, 201, "{}", v4.text());
    assert_eq!(versions(&host, &token, &id), [(4, true), (3, false)]);
    assert_eq!(
        stored(&shas[1]),
        "1",
        "the other function's component stays"
    );
    let shared = fn_get(&host, &token, "/fn/sharing/hello");
    assert_eq!(shared.status, 200, "{}", shared.text());
    assert_eq!(shared.json(), json!({ "hello": "world" }));
    assert_eq!(fn_get(&host, &token, "/fn/kept/hello").status, 200);
}

#[test]
fn a_failing_function_gets_the_right_status_and_others_keep_serving() {
    let host = Host::start();
    let token = host.token();
    deployed(
        &host,
        &token,
        json!({ "name": "faulty", "timeout_ms": 1000, "memory_mb": 16 }),
        spin5(),
    );

    // A panic aborts: the trap is the `unreachable` it compiles to.
    let trapped = fn_get(&host, &token, "/fn/faulty/panic").expect_error(500);
    assert!(
        trapped.contains("`faulty` failed:") && trapped.contains("unreachable"),
        "{trapped}"
    );
    let started = std::time::Instant::now();
    fn_get(&host, &token, "/fn/faulty/loop").expect_error(504);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let hog = fn_get(&host, &token, "/fn/faulty/alloc").expect_error(500);
    assert!(hog.contains("memory"), "{hog}");
    // Host memory a guest holds outside its own limit is bounded too: a
    // header map's size, and how many resources it keeps at once.
    // Past either, wasi:http traps the guest.
    let big = fn_get(&host, &token, "/fn/faulty/fields-big").expect_error(500);
    assert!(big.contains("total size of fields exceeds limit"), "{big}");
    let hoard = fn_get(&host, &token, "/fn/faulty/fields-many").expect_error(500);
    assert!(hoard.contains("resource table has no free keys"), "{hoard}");
    assert_eq!(fn_get(&host, &token, "/fn/faulty/hello").status, 200);
}

#[test]
fn functions_belong_to_their_tenant_and_deleting_one_stops_it() {
    let host = Host::start();
    let owner = host.token();
    let id = deployed(
        &host,
        &owner,
        json!({ "name": "mine", "public": false }),
        spin5(),
    );
    let project = fn_get(&host, &owner, "/v1/whoami").json()["project_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Another organization's user: the id and the name are 404 to them.
    let other = host
        .signup(&unique_email("other"), "a long test password")
        .access_token;
    fn_get(&host, &other, &format!("/v1/functions/{id}")).expect_error(404);
    deploy(&host, &other, &id, spin5()).expect_error(404);
    call(
        &host,
        "DELETE",
        &format!("/v1/functions/{id}"),
        &other,
        None,
    )
    .expect_error(404);
    call(
        &host,
        "POST",
        &format!("/v1/functions/{id}/invoke"),
        &other,
        Some(&json!({})),
    )
    .expect_error(404);
    fn_get(&host, &other, "/fn/mine/hello").expect_error(404);
    assert_eq!(
        fn_get(&host, &other, "/v1/functions").json()["functions"],
        json!([])
    );
    // Nothing of the refused calls reached the owner's function.
    let deployments = fn_get(&host, &owner, &format!("/v1/functions/{id}/deployments")).json();
    assert_eq!(
        deployments["deployments"].as_array().map(Vec::len),
        Some(1),
        "{deployments}"
    );
    // Their own function of the same name is theirs alone: each caller's
    // `/fn/mine` is the function of their own tenant.
    let theirs = create(&host, &other, json!({ "name": "mine" }))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hello = std::fs::read(fixture("hello")).unwrap();
    assert_eq!(deploy(&host, &other, &theirs, hello).status, 201);
    assert_eq!(
        fn_get(&host, &other, "/fn/mine/hello").json(),
        json!({ "hello": "world" })
    );
    assert_eq!(
        fn_get(&host, &owner, "/fn/mine/hello").text(),
        "hello from spin-sdk 5"
    );

    // Anonymous: only a public function, its project (and environment:
    // sessions start in `sandbox`, anonymous calls default to `live`) named.
    host.get("/fn/mine/hello").expect_error(401);
    // A path naming no function is no route at all.
    host.get("/fn/").expect_error(404);
    host.get("/fn//hello").expect_error(404);
    let anonymous = |environment: &str| {
        host.request(
            "GET",
            "/fn/mine/hello",
            &[
                ("x-zatabase-project", project.as_str()),
                ("x-zatabase-environment", environment),
            ],
            vec![],
        )
    };
    anonymous("sandbox").expect_error(404);
    // With a credential of its own kind (not the platform's): refused as a
    // bad token is, since no public function answers.
    let with_authorization = |authorization: &str| {
        host.request(
            "GET",
            "/fn/mine/echo",
            &[
                ("x-zatabase-project", project.as_str()),
                ("x-zatabase-environment", "sandbox"),
                ("authorization", authorization),
            ],
            vec![],
        )
    };
    const BASIC: &str = "Basic dXNlcjpwYXNz";
    assert!(
        with_authorization(BASIC)
            .expect_error(401)
            .contains("malformed")
    );
    let public = call(
        &host,
        "PUT",
        &format!("/v1/functions/{id}"),
        &owner,
        Some(&json!({ "public": true })),
    );
    assert_eq!(public.status, 200, "{}", public.text());
    assert_eq!(public.json()["public"], true);
    let answered = anonymous("sandbox");
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(answered.text(), "hello from spin-sdk 5");
    // Public, it answers such a caller, and reads the header as sent.
    let echo = with_authorization(BASIC);
    assert_eq!(echo.status, 201, "{}", echo.text());
    assert!(
        echo.text().contains(&format!("authorization={BASIC}\n")),
        "{}",
        echo.text()
    );
    // A token that names the platform's key but does not verify (here its
    // signature altered) is the platform's to refuse, and never reaches
    // the function.
    let forged = {
        let (signed, signature) = owner.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("Bearer {signed}.{flipped}{}", &signature[1..])
    };
    assert!(
        with_authorization(&forged)
            .expect_error(401)
            .contains("invalid token")
    );
    // However the platform's own token is written (no scheme, another
    // scheme, beside another credential), it is not the function's.
    for ours in [
        owner.to_string(),
        format!("Token {owner}"),
        format!("{BASIC}, Bearer {owner}"),
    ] {
        with_authorization(&ours).expect_error(401);
    }
    let invocations = || {
        host.platform_sql(&format!(
            "SELECT coalesce(sum(invocations), 0) FROM zatabase.function_invocation_minutes
             WHERE function_id = '{id}'"
        ))
    };
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(10), || invocations() != "0"),
        "the invocation was never stored"
    );
    anonymous("live").expect_error(404);
    host.request(
        "GET",
        "/fn/mine/hello",
        &[("x-zatabase-project", project.as_str())],
        vec![],
    )
    .expect_error(404);
    anonymous("staging").expect_error(400);

    let deleted = call(
        &host,
        "DELETE",
        &format!("/v1/functions/{id}"),
        &owner,
        None,
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    fn_get(&host, &owner, "/fn/mine/hello").expect_error(404);
    anonymous("sandbox").expect_error(404);
    fn_get(&host, &owner, &format!("/v1/functions/{id}")).expect_error(404);
    // Its telemetry went with it (a trigger, not a foreign key: migration 0009).
    assert_eq!(invocations(), "0");
}

#[test]
fn bad_function_settings_are_refused_and_write_nothing() {
    let host = Host::start();
    let token = host.token();
    let taken = create(&host, &token, json!({ "name": "taken" }));
    let bearer = format!("Bearer {token}");
    let malformed = host.request(
        "POST",
        "/v1/functions",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        b"{\"name\": ".to_vec(),
    );
    malformed.expect_error(400);
    for (body, status) in [
        (json!({ "name": "taken" }), 409),
        (json!({ "name": "Bad Name" }), 422),
        (json!({ "name": "x", "unknown": 1 }), 422),
        (json!({ "name": "x", "timeout_ms": 0 }), 422),
        (json!({ "name": "x", "timeout_ms": 3_600_000 }), 422),
        (json!({ "name": "x", "memory_mb": 1_000_000 }), 422),
        (json!({ "name": "x", "variables": { "k": 1 } }), 422),
        (
            json!({ "name": "x", "variables": { "k": "a" }, "secrets": { "k": "b" } }),
            422,
        ),
        (
            json!({ "name": "x", "allowed_outbound_hosts": ["example.com/path"] }),
            422,
        ),
        // Spin's names, and nothing Postgres cannot store.
        (json!({ "name": "x", "variables": { "key_": "v" } }), 422),
        (json!({ "name": "x", "variables": { "a__b": "v" } }), 422),
        (json!({ "name": "x", "variables": { "k": "a\u{0}b" } }), 422),
        (json!({ "name": "x", "description": "a\u{0}b" }), 422),
    ] {
        let answer = call(&host, "POST", "/v1/functions", &token, Some(&body));
        answer.expect_error(status);
    }
    // Secrets are counted before the host seals any (each seal costs an
    // encryption and grows the body); a PUT's nulls, which remove, are not.
    for count in [101, 200_000] {
        let secrets: serde_json::Map<_, _> =
            (0..count).map(|n| (format!("k{n}"), json!(""))).collect();
        let body = json!({ "name": "x", "secrets": secrets });
        let refused = call(&host, "POST", "/v1/functions", &token, Some(&body)).expect_error(422);
        assert!(refused.contains("before sealing"), "{refused}");
    }
    let taken_id = taken["id"].as_str().unwrap();
    let mut renamed: serde_json::Map<_, _> =
        (0..60).map(|n| (format!("old{n}"), Value::Null)).collect();
    renamed.extend((0..60).map(|n| (format!("new{n}"), json!("v"))));
    let put = call(
        &host,
        "PUT",
        &format!("/v1/functions/{taken_id}"),
        &token,
        Some(&json!({ "secrets": renamed })),
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let listed = fn_get(&host, &token, "/v1/functions").json();
    let names: Vec<&str> = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["taken"]);
    fn_get(&host, &token, "/v1/functions/not-a-uuid").expect_error(404);

    // No token, no functions API; malformed and mistyped bodies elsewhere too.
    let id = listed["functions"][0]["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", "/v1/functions".to_owned()),
        ("POST", "/v1/functions".to_owned()),
        ("GET", "/v1/functions/templates".to_owned()),
        ("POST", "/v1/functions/templates/hello/install".to_owned()),
        ("POST", format!("/v1/functions/{id}/invoke")),
        ("POST", format!("/v1/functions/{id}/deployments")),
        ("GET", format!("/v1/functions/{id}/triggers")),
        ("GET", format!("/v1/functions/{id}/logs")),
    ] {
        host.request(method, &path, &[], Vec::new())
            .expect_error(401);
    }
    let json_headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    for path in [
        "/v1/functions/templates/hello/install".to_owned(),
        format!("/v1/functions/{id}/triggers"),
    ] {
        host.request("POST", &path, &json_headers, b"{".to_vec())
            .expect_error(400);
    }
    call(
        &host,
        "POST",
        &format!("/v1/functions/{id}/triggers"),
        &token,
        Some(&json!({ "type": "cron", "schedule": 5 })),
    )
    .expect_error(422);
    call(
        &host,
        "POST",
        "/v1/functions/templates/hello/install",
        &token,
        Some(&json!({ "function_name": "y", "parameters": { "greeting": 1 } })),
    )
    .expect_error(422);
    assert_eq!(
        fn_get(&host, &token, "/v1/functions").json()["functions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// What a fixture's `/redis` answers on this host: Spin's Redis refused
/// as the interface's own error, which the fixture turns into its 502.
fn unsupported_redis(response: &Resp) {
    let text = response.text();
    assert_eq!(response.status, 502, "{text}");
    assert!(
        text.starts_with("redis failed")
            && text.contains("not supported on this platform")
            && text.contains("redis"),
        "{text}"
    );
}

/// What the host's log says of an outbound request's destination: its
/// scheme, host and port, never its path, query or user info.
fn logged_destination(target: &str) -> String {
    let (scheme, rest) = target.split_once("://").unwrap();
    let authority = rest.split(['/', '?']).next().unwrap();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("destination={scheme}://{authority}")
}

/// A loopback HTTP server answering `pong` to every request, for as long as
/// the test runs; its port.
fn pong_server() -> u16 {
    slow_server(std::time::Duration::ZERO).0
}

#[test]
fn outbound_http_reaches_only_the_allowed_hosts() {
    // Loopback is a blocked network by default; this test's servers are there.
    let host = Host::builder()
        .config("[functions]\nblocked_networks = []\n")
        .start();
    let token = host.token();
    let port = pong_server();
    let allowed = format!("http://127.0.0.1:{port}");
    deployed(
        &host,
        &token,
        json!({ "name": "caller", "allowed_outbound_hosts": [allowed] }),
        spin5(),
    );
    deployed(&host, &token, json!({ "name": "closed" }), spin5());

    let bearer = format!("Bearer {token}");
    let fetch = |function: &str, target: &str| {
        host.request(
            "GET",
            &format!("/fn/{function}/fetch"),
            &[("authorization", bearer.as_str()), ("x-target", target)],
            vec![],
        )
    };
    let reached = fetch("caller", &format!("http://127.0.0.1:{port}/ping"));
    assert_eq!(reached.status, 200, "{}", reached.text());
    assert_eq!(reached.text(), "status=200 body=pong");

    // Each of these would reach a server (another pong server, the host
    // itself) or hang (an address nothing answers) were it let through;
    // the host's log says it refused each one.
    let other_port = pong_server();
    let started = std::time::Instant::now();
    for (function, target) in [
        ("closed", format!("http://127.0.0.1:{port}/ping")),
        ("caller", format!("http://localhost:{port}/ping")),
        ("caller", format!("https://127.0.0.1:{port}/ping")),
        (
            "caller",
            format!("http://127.0.0.1:{other_port}/ping?key=hunter2"),
        ),
        (
            "caller",
            format!("http://127.0.0.1:{port}@127.0.0.1:{other_port}/ping"),
        ),
        ("caller", "http://10.255.255.1/ping".to_owned()),
        ("caller", host.url("/health")),
    ] {
        let denied = fetch(function, &target);
        assert_eq!(
            denied.status,
            502,
            "{function} → {target}: {}",
            denied.text()
        );
        assert!(
            denied.text().starts_with("outbound failed"),
            "{}",
            denied.text()
        );
        assert!(
            host.log()
                .lines()
                .any(|line| line.contains("outbound request denied")
                    && line.contains(&logged_destination(&target))),
            "no denial of {target} in the host's log"
        );
    }
    assert!(
        !host.log().contains("hunter2"),
        "a query string (a function's secret, say) reached the host's log"
    );
    // A URL without a host names none that could be allowed (Spin's
    // CVE-2024-32980 sent such a request to the app itself).
    let relative = fetch("caller", "/fn/caller/hello");
    assert_eq!(relative.status, 502, "{}", relative.text());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a denied request fails at once"
    );
}

/// A loopback HTTP server that answers each request `pong` after `delay`,
/// a thread per connection; its port, and the most requests it held
/// unanswered at once.
fn slow_server(
    delay: std::time::Duration,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let most = std::sync::Arc::new(AtomicUsize::new(0));
    let waiting = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (most, waiting) = (most.clone(), waiting.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let now = waiting.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(delay);
                waiting.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong",
                );
            });
        }
    });
    (port, seen)
}

#[test]
fn a_function_has_a_bounded_number_of_outbound_requests_open() {
    let host = Host::builder()
        .config("[functions]\nblocked_networks = []\n")
        .start();
    let token = host.token();
    let (port, most) = slow_server(std::time::Duration::from_millis(100));
    let target = format!("http://127.0.0.1:{port}/");
    deployed(
        &host,
        &token,
        json!({ "name": "fanout", "allowed_outbound_hosts": [format!("http://127.0.0.1:{port}")] }),
        spin7(),
    );
    let bearer = format!("Bearer {token}");
    // 300 sent at once: 256 admitted, connecting 32 at a time; the rest
    // refused at once, not queued without bound.
    let fanned = host.request(
        "GET",
        "/fn/fanout/fanout",
        &[
            ("authorization", bearer.as_str()),
            ("x-target", target.as_str()),
            ("x-count", "300"),
        ],
        vec![],
    );
    assert_eq!(fanned.status, 200, "{}", fanned.text());
    assert_eq!(fanned.text(), "ok=256 limited=44 failed=0");
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=32).contains(&most),
        "{most} requests were waiting at once"
    );
}

#[test]
fn spins_interfaces_are_never_cut_short_by_the_row_cap() {
    let host = Host::builder().config("[sql]\nmax_rows = 1\n").start();
    let token = host.token();
    deployed(&host, &token, json!({ "name": "capped" }), spin7());
    // Key-value lists every key (two, over a cap of one), a page at a time.
    assert_eq!(
        fn_get(&host, &token, "/fn/capped/kv").text(),
        "calls=1 keys=calls,seen"
    );
    // A query with more rows than the cap fails saying so, rather than
    // answering with the first of them.
    assert_eq!(
        fn_get(&host, &token, "/fn/capped/pg").text(),
        "inserted=1\n1:from spin-sdk 7"
    );
    let over = fn_get(&host, &token, "/fn/capped/pg");
    assert_eq!(over.status, 500, "{}", over.text());
    assert!(
        over.text().starts_with("postgres failed")
            && over.text().contains("what this host returns at once"),
        "{}",
        over.text()
    );
}

#[test]
fn an_arrays_elements_count_against_the_result_cap() {
    // `{0,0,...}` is two bytes an element as Postgres sends it, and a value
    // of its own each as the host types it: typed, 100,000 of them are past
    // 4 MiB, though their text is not.
    let host = Host::builder()
        .config("[sql]\nmax_result_bytes = 4194304\n")
        .start();
    let token = host.token();
    deployed(&host, &token, json!({ "name": "arrays" }), spin7());
    let zeros = |count: u32| {
        host.request(
            "GET",
            "/fn/arrays/pg-array",
            &[
                ("authorization", format!("Bearer {token}").as_str()),
                ("x-count", count.to_string().as_str()),
            ],
            vec![],
        )
    };
    assert_eq!(zeros(1000).text(), "elements=1000");
    let over = zeros(100_000);
    assert_eq!(over.status, 500, "{}", over.text());
    assert!(
        over.text()
            .contains("larger than this host returns at once"),
        "{}",
        over.text()
    );
    assert_eq!(zeros(1000).text(), "elements=1000");
}

#[test]
fn results_a_function_leaves_unread_are_bounded() {
    // WASI 0.3 hands rows over as a stream: held by the host until read.
    let host = Host::start();
    let token = host.token();
    deployed(&host, &token, json!({ "name": "hoarder" }), spin7());
    let answer = fn_get(&host, &token, "/fn/hoarder/pg-hoard");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    // 8 MB each, 64 MiB unread at most.
    assert!(text.starts_with("held=8\n"), "{text}");
    assert!(text.contains("still unread"), "{text}");
    assert!(text.ends_with("again=1"), "{text}");
}

/// A WASI 0.3 guest starting many calls at once: each call's arguments are
/// copied into the host as it starts, so they count against the store's
/// bound on what it holds of the host while the call runs, and a call past
/// it is refused at once rather than held while it waits for a connection.
#[test]
fn calls_started_at_once_hold_only_so_much_of_the_host() {
    let host = Host::start();
    let token = host.token();
    deployed(
        &host,
        &token,
        json!({ "name": "flooder", "memory_mb": 512 }),
        spin7(),
    );
    let tally = |path: &str| -> (u32, u32, String) {
        let answer = fn_get(&host, &token, path);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let text = answer.text();
        let field = |name: &str| -> u32 {
            text.split(' ')
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{text}"))
        };
        (field("ok"), field("held"), text.clone())
    };
    // 16 statements of 6 MiB: at most about 64 MiB of them run at once.
    let (ok, held, text) = tally("/fn/flooder/pg-flood");
    assert!(ok >= 10 && held >= 1 && ok + held == 16, "{text}");
    assert!(text.ends_with("failed=[]"), "{text}");
    // 100 writes of 1 MiB likewise.
    let (ok, held, text) = tally("/fn/flooder/kv-flood");
    assert!(ok >= 60 && held >= 1 && ok + held == 100, "{text}");
    assert!(text.ends_with("failed=[]"), "{text}");
}

#[test]
fn work_a_function_does_after_its_response_is_done() {
    // WASI 0.3: a guest may go on after returning its response. That work
    // runs to its end, with no further request to the function.
    let host = Host::start();
    let token = host.token();
    deployed(&host, &token, json!({ "name": "later" }), spin7());
    assert_eq!(fn_get(&host, &token, "/fn/later/later").text(), "answered");
    let mut stored = Value::Null;
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
            stored = call(
                &host,
                "POST",
                "/v1/sql",
                &token,
                Some(&json!({ "query": "SELECT convert_from(value, 'UTF8') AS v FROM zatabase_kv WHERE key = 'later'" })),
            )
            .json();
            stored["rows"] == json!([{ "v": "after request 1" }])
        }),
        "{stored}"
    );
    // The instance is kept, and serves the next request.
    assert_eq!(fn_get(&host, &token, "/fn/later/served").text(), "2");
}

/// A host asked to stop waits (within its grace period) for work a function
/// goes on with after its answer, before it stops Postgres: the write made
/// 1.5 s after the answer is there after a restart.
#[test]
fn a_stop_waits_for_work_a_function_does_after_its_answer() {
    let mut host = Host::start();
    let token = host.token();
    deployed(&host, &token, json!({ "name": "later" }), spin7());
    let bearer = format!("Bearer {token}");
    let answer = host.request(
        "GET",
        "/fn/later/later",
        &[("authorization", &bearer), ("x-delay-ms", "1500")],
        Vec::new(),
    );
    assert_eq!(answer.text(), "answered");
    host.keep_data();
    assert!(host.stop().success());
    let data_dir = host.data_dir.clone();
    drop(host);

    let again = Host::builder().data_dir(&data_dir).start();
    let stored = call(
        &again,
        "POST",
        "/v1/sql",
        &token,
        Some(
            &json!({ "query": "SELECT convert_from(value, 'UTF8') AS v FROM zatabase_kv WHERE key = 'later'" }),
        ),
    );
    assert_eq!(
        stored.json()["rows"],
        json!([{ "v": "after request 1" }]),
        "{}",
        stored.text()
    );
    drop(again);
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}

/// A loopback HTTP server (IPv4, and IPv6 on the same port where it can)
/// answering `host=<its Host header>` to every request; its port.
fn host_echo_server() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = v4.local_addr().unwrap().port();
    let v6 = std::net::TcpListener::bind(("::1", port)).ok();
    for listener in std::iter::once(v4).chain(v6) {
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut line, mut host) = (String::new(), String::new());
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("host")
                    {
                        host = value.trim().to_owned();
                    }
                    line.clear();
                }
                let body = format!("host={host}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }
    port
}

#[test]
fn a_request_checked_against_blocked_networks_goes_to_the_address_checked() {
    // Blocked: a network loopback is not in. The name is resolved and
    // checked, and the request sent to the address found, under its name.
    let host = Host::builder()
        .config("[functions]\nblocked_networks = [\"203.0.113.0/24\"]\n")
        .start();
    let token = host.token();
    let port = host_echo_server();
    deployed(
        &host,
        &token,
        json!({ "name": "named", "allowed_outbound_hosts": [format!("http://localhost:{port}")] }),
        spin5(),
    );
    let bearer = format!("Bearer {token}");
    let target = format!("http://localhost:{port}/who?x=1");
    let reached = host.request(
        "GET",
        "/fn/named/fetch",
        &[("authorization", bearer.as_str()), ("x-target", &target)],
        vec![],
    );
    assert_eq!(reached.status, 200, "{}", reached.text());
    assert_eq!(
        reached.text(),
        format!("status=200 body=host=localhost:{port}")
    );
}

/// An HTTPS server on loopback (both families, one port) with a
/// certificate for `localhost` from `tests/certs` (its authority in
/// `ca.pem`), answering the name the client asked for (SNI) and its `Host`
/// header. Returns its port and how many requests it has read.
fn tls_echo_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs");
    let chain = CertificateDer::pem_file_iter(format!("{certs}/localhost.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{certs}/localhost.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let served = Arc::new(AtomicUsize::new(0));
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = v4.local_addr().unwrap().port();
    let v6 = std::net::TcpListener::bind(("::1", port)).ok();
    for listener in std::iter::once(v4).chain(v6) {
        let (config, served) = (config.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut host = String::new();
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                let mut read = false;
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    read = true;
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("host")
                    {
                        host = value.trim().to_owned();
                    }
                    line.clear();
                }
                if !read {
                    continue;
                }
                served.fetch_add(1, Ordering::SeqCst);
                let sni = tls.conn.server_name().unwrap_or("none").to_owned();
                let body = format!("sni={sni} host={host}");
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
    }
    (port, served)
}

#[test]
fn https_reaches_an_allowed_host_under_its_name_with_its_certificate_checked() {
    use std::sync::atomic::Ordering;
    let (port, served) = tls_echo_server();
    let allowed = json!([format!("https://localhost:{port}")]);
    let target = format!("https://localhost:{port}/who");
    // Both spin-sdk lines deployed on `host`, each asked to fetch `target`.
    let fetch = |host: &Host| {
        let token = host.token();
        for (name, wasm) in [("five", spin5()), ("seven", spin7())] {
            let settings = json!({ "name": name, "allowed_outbound_hosts": allowed });
            deployed(host, &token, settings, wasm);
        }
        let bearer = format!("Bearer {token}");
        ["five", "seven"].map(|name| {
            host.request(
                "GET",
                &format!("/fn/{name}/fetch"),
                &[("authorization", bearer.as_str()), ("x-target", &target)],
                vec![],
            )
        })
    };
    // Loopback is let through; the test CA is trusted besides Mozilla's.
    let trusting = Host::builder()
        .config(&format!(
            "[functions]\nblocked_networks = [\"203.0.113.0/24\"]\nroot_certificates = [\"{}\"]\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/certs/ca.pem")
        ))
        .start();
    for reached in fetch(&trusting) {
        assert_eq!(reached.status, 200, "{}", reached.text());
        assert_eq!(
            reached.text(),
            format!("status=200 body=sni=localhost host=localhost:{port}")
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
    // Without the test CA the certificate is refused (the guest is told
    // so), and no request is sent.
    let doubting = Host::builder()
        .config("[functions]\nblocked_networks = [\"203.0.113.0/24\"]\n")
        .start();
    for refused in fetch(&doubting) {
        assert_eq!(refused.status, 502, "{}", refused.text());
        assert!(
            refused.text().contains("TlsCertificateError"),
            "{}",
            refused.text()
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[test]
fn outbound_http_never_reaches_a_blocked_network() {
    // The default: `private` blocked, whatever a function's list allows.
    let host = Host::start();
    let token = host.token();
    let port = pong_server();
    deployed(
        &host,
        &token,
        json!({
            "name": "inward",
            "allowed_outbound_hosts": [
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}"),
                "http://169.254.169.254",
                "http://2130706433",
            ]
        }),
        spin5(),
    );
    let bearer = format!("Bearer {token}");
    for target in [
        format!("http://127.0.0.1:{port}/ping"),
        // A name, resolved by the host: its address is what is checked.
        format!("http://localhost:{port}/ping"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        // 127.0.0.1 as one number, as resolvers read it.
        "http://2130706433/".to_owned(),
    ] {
        let refused = host.request(
            "GET",
            "/fn/inward/fetch",
            &[("authorization", bearer.as_str()), ("x-target", &target)],
            vec![],
        );
        assert_eq!(refused.status, 502, "{target}: {}", refused.text());
        assert!(
            refused.text().starts_with("outbound failed"),
            "{}",
            refused.text()
        );
        assert!(
            host.log()
                .lines()
                .any(|line| line.contains("a blocked network")
                    && line.contains(&logged_destination(&target))),
            "no refusal of {target} in the host's log"
        );
    }
}

/// A function's oldest lines go as it floods, not on a clock: past its
/// `functions.log_lines_kept` by a tenth, it is pruned to them (the newest).
#[test]
fn a_flooding_function_keeps_only_its_newest_lines() {
    let host = Host::builder()
        .config("[functions]\nlog_lines_kept = 100\n")
        .start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "flood" }), spin7());
    let newest = || fn_get(&host, &token, &format!("/v1/functions/{id}/logs?limit=1")).json();
    // Lines are written a batch at a time after the response, by a writer
    // that yields to requests, and what waits unwritten is bounded (a
    // flooding request loses its tail when the writer is behind). Each
    // request's lines are waited for: its last is its notice that it wrote
    // too much.
    let mut last = String::new();
    for _ in 0..5 {
        let flooded = fn_get(&host, &token, "/fn/flood/flood");
        assert_eq!(flooded.status, 200, "{}", flooded.text());
        last = flooded.header("x-request-id").unwrap().to_owned();
        let notice = |logs: &serde_json::Value| {
            logs["logs"][0]["request_id"] == last.as_str()
                && logs["logs"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("more than 1 MiB"))
        };
        assert!(
            zatabase_tests::eventually(std::time::Duration::from_secs(30), || notice(&newest())),
            "{}",
            newest()
        );
    }
    let count = || {
        host.platform_sql(&format!(
            "SELECT count(*) FROM zatabase.function_logs WHERE function_id = '{id}'"
        ))
    };
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(30), || count() == "100"),
        "{} lines kept",
        count()
    );
    // The hundred kept are the newest: all the last request's.
    let kept = fn_get(
        &host,
        &token,
        &format!("/v1/functions/{id}/logs?limit=1000"),
    )
    .json();
    let lines = kept["logs"].as_array().unwrap();
    assert_eq!(lines.len(), 100);
    assert!(
        lines.iter().all(|l| l["request_id"] == last.as_str()),
        "{kept}"
    );
}

#[test]
fn a_request_logs_a_mebibyte_at_most() {
    let host = Host::start();
    let token = host.token();
    // WASI 0.3: the second request is served by the first one's instance,
    // whose budget is filled again.
    deployed(&host, &token, json!({ "name": "flood" }), spin7());
    for _ in 0..2 {
        let flooded = fn_get(&host, &token, "/fn/flood/flood");
        assert_eq!(flooded.status, 200, "{}", flooded.text());
    }
    assert_eq!(fn_get(&host, &token, "/fn/flood/served").text(), "3");
    let log = host.log();
    let written = log
        .lines()
        .filter(|l| l.contains("flood 0") || l.contains("flood 1"))
        .count();
    // Each request: 984 of its 1001-byte lines (64 bytes more each, of a
    // MiB), then one notice.
    assert_eq!(written, 2 * 984, "lines written");
    assert!(
        !log.contains("flood 1999"),
        "past the budget, a line was written"
    );
    assert_eq!(
        log.matches("this request wrote more than 1 MiB of log lines")
            .count(),
        2
    );
}

/// A function's log is read a page at a time, newest first: each page's
/// `next_before` starts the next, lines of the same instant are told apart
/// by their order of writing, and a line written meanwhile does not shift
/// the pages still to read.
#[test]
fn a_functions_log_is_read_page_by_page() {
    let host = Host::start();
    let token = host.token();
    let id = create(&host, &token, json!({ "name": "paged" }))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Seven lines, `line 1` the oldest; lines 3 to 5 at the same instant.
    host.platform_sql(&format!(
        "INSERT INTO zatabase.function_logs (function_id, request_id, level, message, at)
         SELECT '{id}', 'r' || n, 'info', 'line ' || n,
                timestamptz '2026-11-01 00:00:00.000001Z'
                  + make_interval(secs => CASE WHEN n BETWEEN 3 AND 5 THEN 3 ELSE n END)
         FROM generate_series(1, 7) AS n ORDER BY n"
    ));
    let page = |query: &str| {
        let answer = fn_get(&host, &token, &format!("/v1/functions/{id}/logs?{query}"));
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()
    };
    let mut read = Vec::new();
    let mut query = "limit=2".to_owned();
    let mut pages = 0;
    loop {
        let got = page(&query);
        pages += 1;
        for line in got["logs"].as_array().unwrap() {
            assert_eq!(line.as_object().unwrap().len(), 4, "{line}");
            read.push(line["message"].as_str().unwrap().to_owned());
        }
        match got["next_before"].as_str() {
            Some(cursor) => query = format!("limit=2&before={cursor}"),
            None => break,
        }
        if pages == 1 {
            // Written after the first page was read: newer than every
            // page still to come, so none of them shows it.
            host.platform_sql(&format!(
                "INSERT INTO zatabase.function_logs (function_id, request_id, level, message, at)
                 VALUES ('{id}', 'late', 'info', 'line 8', now())"
            ));
        }
    }
    let want: Vec<String> = (1..=7).rev().map(|n| format!("line {n}")).collect();
    assert_eq!(read, want);
    assert_eq!(pages, 4, "seven lines, two a page");
    // A full last page says there is no next one.
    let all = page("limit=8");
    assert_eq!(all["logs"].as_array().unwrap().len(), 8, "{all}");
    assert_eq!(all["next_before"], Value::Null, "{all}");
    // The filter by request holds across pages too.
    let one = page("request_id=r4&limit=1");
    assert_eq!(one["logs"][0]["message"], "line 4", "{one}");
    assert_eq!(one["next_before"], Value::Null, "{one}");

    // What the endpoints do not take is refused, not ignored.
    for query in [
        "before=12",
        "before=a_1",
        "before=1_-2",
        "before=",
        // Past the years Postgres's timestamps reach.
        "before=9223372036854775807_1",
        "limt=5",
        "request=r4",
    ] {
        let refused = fn_get(&host, &token, &format!("/v1/functions/{id}/logs?{query}"));
        refused.expect_error(400);
    }
    fn_get(&host, &token, &format!("/v1/functions/{id}/metrics?hour=2")).expect_error(400);
}

#[test]
fn a_functions_logs_and_metrics_are_recorded() {
    let host = Host::start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "chatty" }), spin5());
    let logged = fn_get(&host, &token, "/fn/chatty/log");
    assert_eq!(logged.status, 200, "{}", logged.text());
    let request_id = logged.header("x-request-id").unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(fn_get(&host, &token, "/fn/chatty/hello").status, 200);
    }
    fn_get(&host, &token, "/fn/chatty/panic").expect_error(500);

    let logs_path = format!("/v1/functions/{id}/logs?request_id={request_id}");
    let mut logs = Value::Null;
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
            logs = fn_get(&host, &token, &logs_path).json();
            logs["logs"].as_array().is_some_and(|l| l.len() == 2)
        }),
        "{logs}"
    );
    let lines: Vec<(&str, &str, &str)> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap(),
                l["message"].as_str().unwrap(),
                l["request_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        lines.contains(&("info", "a line on stdout", request_id.as_str())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("warn", "a line on stderr", request_id.as_str())),
        "{lines:?}"
    );

    let mut metrics = Value::Null;
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
            metrics = fn_get(&host, &token, &format!("/v1/functions/{id}/metrics")).json();
            metrics["invocations"] == 5
        }),
        "{metrics}"
    );
    assert_eq!(metrics["errors"], 1, "{metrics}");
    assert_eq!(metrics["cold_starts"], 1, "{metrics}");
    assert_eq!(metrics["by_status"], json!({ "200": 4, "500": 1 }));
    let p50 = metrics["duration_ms"]["p50"].as_f64().unwrap();
    let p99 = metrics["duration_ms"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{metrics}");
    // A later write adds to the minute's row (unless a minute began
    // between: then it is the next row).
    assert_eq!(fn_get(&host, &token, "/fn/chatty/hello").status, 200);
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
            metrics = fn_get(&host, &token, &format!("/v1/functions/{id}/metrics")).json();
            metrics["invocations"] == 6
        }),
        "{metrics}"
    );
    assert_eq!(metrics["by_status"], json!({ "200": 5, "500": 1 }));
    let rows = host.platform_sql(&format!(
        "SELECT count(*) FROM zatabase.function_invocation_minutes WHERE function_id = '{id}'"
    ));
    assert!(rows == "1" || rows == "2", "{rows} rows");
    // Percentiles are by nearest rank, from a histogram: within 2.2 % of
    // a duration some call took, never a value between two. Of a 1 ms call
    // and a 100 ms one, p50 is about 1 ms, p95 and p99 about 100 ms.
    // Minutes far apart are added up; one older than the window is not.
    let quiet = create(&host, &token, json!({ "name": "two-calls" }))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    host.platform_sql(&format!(
        "INSERT INTO zatabase.function_invocation_minutes (function_id, minute, invocations,
           errors, cold_starts, min_us, max_us, statuses, status_counts, buckets, bucket_counts)
         VALUES ('{quiet}', date_trunc('minute', now()), 1, 0, 0, 1000, 1000, '{{200}}', '{{1}}',
                 '{{159}}', '{{1}}'),
                ('{quiet}', date_trunc('minute', now()) - interval '23 hours', 1, 1, 1, 100000,
                 100000, '{{503}}', '{{1}}', '{{265}}', '{{1}}'),
                ('{quiet}', now() - interval '25 hours', 1, 1, 0, 5, 5, '{{500}}', '{{1}}',
                 '{{37}}', '{{1}}')"
    ));
    let two = fn_get(&host, &token, &format!("/v1/functions/{quiet}/metrics")).json();
    let ms = |p: &str| two["duration_ms"][p].as_f64().unwrap();
    let near = |p: &str, want: f64| (ms(p) - want).abs() <= want * 0.022;
    assert!(
        near("p50", 1.0) && near("p95", 100.0) && near("p99", 100.0),
        "{two}"
    );
    assert_eq!(two["invocations"], 2, "{two}");
    assert_eq!(two["by_status"], json!({ "200": 1, "503": 1 }), "{two}");
    assert_eq!(two["errors"], 1, "{two}");
    assert_eq!(two["cold_starts"], 1, "{two}");
    let week = fn_get(
        &host,
        &token,
        &format!("/v1/functions/{quiet}/metrics?hours=168"),
    )
    .json();
    assert_eq!(week["invocations"], 3, "{week}");
    assert_eq!(
        week["by_status"],
        json!({ "200": 1, "500": 1, "503": 1 }),
        "{week}"
    );
    // Ranks 1 to 3 are 5 µs, 1 ms and 100 ms: p50 is the 1 ms call.
    assert!(
        (week["duration_ms"]["p50"].as_f64().unwrap() - 1.0).abs() <= 0.022,
        "{week}"
    );
    // The host's own metrics count them under the `fn` group.
    let exposition = host.get("/metrics").text();
    for line in [
        r#"zatabase_http_requests_total{group="fn",status="200"} 5"#,
        r#"zatabase_http_requests_total{group="fn",status="500"} 1"#,
        r#"zatabase_http_request_duration_seconds_count{group="fn"} 6"#,
    ] {
        assert!(
            exposition.lines().any(|l| l == line),
            "{line} in\n{exposition}"
        );
    }

    // Another tenant sees neither; bad parameters are 400.
    let other = host
        .signup(&unique_email("peer"), "a long test password")
        .access_token;
    fn_get(&host, &other, &format!("/v1/functions/{id}/logs")).expect_error(404);
    fn_get(&host, &other, &format!("/v1/functions/{id}/metrics")).expect_error(404);
    fn_get(&host, &token, &format!("/v1/functions/{id}/logs?limit=0")).expect_error(400);
    // A filter that does not decode is refused, not dropped (which would
    // answer every request's lines).
    for query in ["request_id=%FF", "limit=%zz"] {
        fn_get(&host, &token, &format!("/v1/functions/{id}/logs?{query}")).expect_error(400);
    }
    fn_get(
        &host,
        &token,
        &format!("/v1/functions/{id}/logs?request_id=a%00b"),
    )
    .expect_error(400);
    fn_get(
        &host,
        &token,
        &format!("/v1/functions/{id}/metrics?hours=1000"),
    )
    .expect_error(400);
    // A change of settings makes the deployment anew: its first call is
    // a cold start too.
    let changed = call(
        &host,
        "PUT",
        &format!("/v1/functions/{id}"),
        &token,
        Some(&json!({ "variables": { "greeting": "changed" } })),
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert!(zatabase_tests::eventually(
        std::time::Duration::from_secs(5),
        || { fn_get(&host, &token, "/fn/chatty/var/greeting").text() == "changed" }
    ));
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
            metrics = fn_get(&host, &token, &format!("/v1/functions/{id}/metrics")).json();
            metrics["cold_starts"] == 2
        }),
        "{metrics}"
    );
}

#[test]
fn the_marketplace_lists_templates_and_installs_them_as_callable_functions() {
    let host = Host::start();
    let token = host.token();
    let listed = fn_get(&host, &token, "/v1/functions/templates").json();
    let templates = listed["templates"].as_array().unwrap();
    let names: Vec<&str> = templates
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // Every template folder is listed (each is also installed and called
    // by a test of its own), and nothing else.
    let mut folders: Vec<String> = std::fs::read_dir(zatabase_tests::workspace().join("templates"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("template.toml").is_file())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, folders);
    let webhook = templates.iter().find(|t| t["name"] == "webhook").unwrap();
    let secret = webhook["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "signing_secret")
        .unwrap();
    assert_eq!(secret["required"], true);
    assert_eq!(secret["secret"], true);
    assert_eq!(secret["format"], "text");
    assert_eq!(webhook["public"], true, "a webhook's sender has no token");

    // hello: a parameter given, and one left to its default.
    let install = |template: &str, body: Value| {
        call(
            &host,
            "POST",
            &format!("/v1/functions/templates/{template}/install"),
            &token,
            Some(&body),
        )
    };
    let greeted = install(
        "hello",
        json!({ "function_name": "bonjour", "parameters": { "greeting": "Bonjour" } }),
    );
    assert_eq!(greeted.status, 201, "{}", greeted.text());
    assert_eq!(greeted.json()["template"], "hello");
    assert_eq!(greeted.json()["active_deployment"]["version"], 1);
    assert_eq!(
        fn_get(&host, &token, "/fn/bonjour/le/monde").text(),
        "Bonjour, world! (you called /le/monde)"
    );
    assert_eq!(
        install("hello", json!({ "function_name": "plain" })).status,
        201
    );
    assert_eq!(
        fn_get(&host, &token, "/fn/plain").text(),
        "Hello, world! (you called /)"
    );

    // webhook: the secret is a secret; only a correct signature passes.
    let hooked = install(
        "webhook",
        json!({ "function_name": "hook", "parameters": { "signing_secret": "whsec_test" } }),
    );
    assert_eq!(hooked.status, 201, "{}", hooked.text());
    assert_eq!(hooked.json()["secrets"], json!(["signing_secret"]));
    assert!(!hooked.text().contains("whsec_test"));
    assert_eq!(hooked.json()["public"], true);
    let body = br#"{"type":"payment.succeeded","id":42}"#.to_vec();
    let sign = |key: &[u8], body: &[u8]| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    // Sent as GitHub sends it: no token, the project named by a header.
    let whoami = fn_get(&host, &token, "/v1/whoami").json();
    let project = whoami["project_id"].as_str().unwrap().to_owned();
    let environment = whoami["environment"].as_str().unwrap().to_owned();
    let post = |signature: Option<String>, body: Vec<u8>| {
        let mut headers = vec![
            ("x-zatabase-project", project.clone()),
            ("x-zatabase-environment", environment.clone()),
        ];
        if let Some(signature) = signature {
            headers.push(("x-hub-signature-256", signature));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        host.request("POST", "/fn/hook", &headers, body)
    };
    let accepted = post(
        Some(format!("sha256={}", sign(b"whsec_test", &body))),
        body.clone(),
    );
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(
        accepted.json(),
        json!({ "received": true, "bytes": body.len(), "type": "payment.succeeded" })
    );
    assert_eq!(
        post(Some(sign(b"wrong key", &body)), body.clone()).status,
        401
    );
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert_eq!(post(Some(sign(b"whsec_test", &body)), tampered).status, 401);
    assert_eq!(post(None, body.clone()).status, 401);
    assert_eq!(fn_get(&host, &token, "/fn/hook").status, 405);

    // Bad installs: clear errors, and no function left behind.
    install("nope", json!({ "function_name": "x" })).expect_error(404);
    let missing = install("webhook", json!({ "function_name": "hook2" })).expect_error(422);
    assert!(missing.contains("signing_secret"), "{missing}");
    install(
        "hello",
        json!({ "function_name": "x", "parameters": { "unknown": "1" } }),
    )
    .expect_error(422);
    install("hello", json!({ "function_name": "Bad Name" })).expect_error(422);
    install("hello", json!({ "function_name": "bonjour" })).expect_error(409);
    // Values that would make a broken function: an empty signing secret
    // (a key anyone can sign with), a table name no query can use, a
    // header name no request can carry.
    for (template, parameters, says) in [
        (
            "webhook",
            json!({ "signing_secret": "" }),
            "must not be empty",
        ),
        (
            "webhook",
            json!({ "signing_secret": "s", "signature_header": "x sig" }),
            "header name",
        ),
        ("crud", json!({ "table": "Bad Name" }), "plain table name"),
        ("hello", json!({ "greeting": "a\u{0}b" }), "NUL"),
    ] {
        let refused = install(
            template,
            json!({ "function_name": "refused", "parameters": parameters }),
        )
        .expect_error(422);
        assert!(refused.contains(says), "{template}: {refused}");
    }
    let names: Vec<String> = fn_get(&host, &token, "/v1/functions").json()["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bonjour", "hook", "plain"]);
}

/// Installs `template` as `name` (with `parameters`), asserting it worked.
fn install(host: &Host, token: &str, template: &str, name: &str, parameters: Value) {
    let installed = call(
        host,
        "POST",
        &format!("/v1/functions/templates/{template}/install"),
        token,
        Some(&json!({ "function_name": name, "parameters": parameters })),
    );
    assert_eq!(installed.status, 201, "{}", installed.text());
}

fn send(host: &Host, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    call(host, method, path, token, body.as_ref())
}

#[test]
fn the_crud_template_keeps_json_in_a_table_of_the_tenant() {
    let host = Host::start();
    let token = host.token();
    install(&host, &token, "crud", "notes", json!({ "table": "notes" }));

    let created = send(
        &host,
        &token,
        "POST",
        "/fn/notes",
        Some(json!({ "title": "first" })),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_i64().unwrap();
    assert_eq!(created.json()["data"], json!({ "title": "first" }));
    send(
        &host,
        &token,
        "POST",
        "/fn/notes",
        Some(json!({ "title": "second" })),
    );

    let listed = send(&host, &token, "GET", "/fn/notes", None).json();
    let titles: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["second", "first"]);

    let path = format!("/fn/notes/{id}");
    let replaced = send(
        &host,
        &token,
        "PUT",
        &path,
        Some(json!({ "title": "changed" })),
    );
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    assert_eq!(
        send(&host, &token, "GET", &path, None).json()["data"]["title"],
        "changed"
    );
    // The function's table is the tenant's: /v1/sql sees it.
    let rows = host.sql_ok("SELECT data->>'title' AS title FROM notes ORDER BY id", &[]);
    assert_eq!(
        rows["rows"],
        json!([{ "title": "changed" }, { "title": "second" }])
    );

    assert_eq!(send(&host, &token, "DELETE", &path, None).status, 204);
    assert_eq!(send(&host, &token, "GET", &path, None).status, 404);
    assert_eq!(send(&host, &token, "DELETE", &path, None).status, 404);
    assert_eq!(
        send(&host, &token, "POST", "/fn/notes", Some(json!([1, 2]))).status,
        422
    );

    // Another tenant's function of the same template has its own table.
    let other = host
        .signup(&unique_email("crud"), "a long test password")
        .access_token;
    install(&host, &other, "crud", "notes", json!({ "table": "notes" }));
    let theirs = send(&host, &other, "GET", "/fn/notes", None).json();
    assert_eq!(theirs["items"], json!([]));

    // A reserved word is a table name like any other.
    install(&host, &token, "crud", "orders", json!({ "table": "order" }));
    let ordered = send(&host, &token, "POST", "/fn/orders", Some(json!({ "n": 1 })));
    assert_eq!(ordered.status, 201, "{}", ordered.text());
    let rows = host.sql_ok("SELECT data->>'n' AS n FROM \"order\"", &[]);
    assert_eq!(rows["rows"], json!([{ "n": "1" }]));

    // A document Postgres cannot store is the client's 400, in the
    // platform's error shape.
    let nul = send(
        &host,
        &token,
        "POST",
        "/fn/notes",
        Some(json!({ "t": "a\u{0}b" })),
    );
    assert!(nul.expect_error(400).contains("NUL"));

    // Pointed at a table that is not its own, the function touches
    // nothing of it: every request is a 409 naming both shapes.
    host.sql_ok(
        "CREATE TABLE ledger (id int8 PRIMARY KEY, amount numeric)",
        &[],
    );
    host.sql_ok("INSERT INTO ledger VALUES (5, 10)", &[]);
    install(&host, &token, "crud", "wrong", json!({ "table": "ledger" }));
    for (method, path) in [("GET", "/fn/wrong"), ("DELETE", "/fn/wrong/5")] {
        let refused = send(&host, &token, method, path, None);
        let message = refused.expect_error(409);
        assert!(message.contains("amount numeric"), "{message}");
    }
    let kept = host.sql_ok("SELECT count(*) AS n FROM ledger", &[]);
    assert_eq!(kept["rows"], json!([{ "n": 1 }]));
}

#[test]
fn the_vector_search_template_finds_the_nearest_embeddings() {
    let host = Host::start();
    let token = host.token();
    install(&host, &token, "vector-search", "similar", json!({}));
    for (id, embedding, label) in [
        ("a", [1.0, 0.0, 0.0], "east"),
        ("b", [0.0, 1.0, 0.0], "north"),
        ("c", [0.9, 0.1, 0.0], "mostly east"),
    ] {
        let stored = send(
            &host,
            &token,
            "PUT",
            &format!("/fn/similar/{id}"),
            Some(json!({ "embedding": embedding, "document": { "label": label } })),
        );
        assert_eq!(stored.status, 200, "{}", stored.text());
    }
    let search = |body: Value| send(&host, &token, "POST", "/fn/similar/search", Some(body));
    let found = search(json!({ "embedding": [1, 0, 0], "k": 2 }));
    assert_eq!(found.status, 200, "{}", found.text());
    let results = found.json()["results"].clone();
    let ids: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(results[0]["distance"].as_f64().unwrap(), 0.0);
    assert_eq!(results[1]["document"], json!({ "label": "mostly east" }));
    let by_l2 = search(json!({ "embedding": [0, 1, 0], "k": 1, "metric": "l2" })).json();
    assert_eq!(by_l2["results"][0]["id"], "b");

    assert_eq!(
        search(json!({ "embedding": [1, 0], "k": 1 })).status,
        400,
        "wrong dimension"
    );
    assert_eq!(search(json!({ "embedding": [], "k": 1 })).status, 400);
    assert_eq!(
        search(json!({ "embedding": [1, 0, 0], "k": 0 })).status,
        400
    );
    assert_eq!(
        search(json!({ "embedding": [1, 0, 0], "metric": "manhattan" })).status,
        400
    );
    for bad in [
        json!({ "embedding": [1, 0, 0], "metric": 5 }),
        json!({ "embedding": [1, 0, 0], "k": 5.5 }),
        json!({ "embedding": [1, 0, 0], "k": "5" }),
        json!({ "embedding": [1e300, 0, 0] }),
    ] {
        search(bad.clone()).expect_error(400);
    }
    // The stored length holds: another is refused, and search still works.
    let put = |id: &str, embedding: Value| {
        send(
            &host,
            &token,
            "PUT",
            &format!("/fn/similar/{id}"),
            Some(json!({ "embedding": embedding })),
        )
    };
    let message = put("d", json!([1, 0])).expect_error(400);
    assert!(message.contains("the stored ones have 3"), "{message}");
    put("e", json!([1e300, 0, 0])).expect_error(400);
    assert_eq!(
        put("c", json!([0.8, 0.2, 0.0])).status,
        200,
        "a replacement of the same length"
    );
    assert_eq!(
        search(json!({ "embedding": [1, 0, 0], "k": 1 })).status,
        200
    );
    assert_eq!(
        send(&host, &token, "DELETE", "/fn/similar/a", None).status,
        204
    );
    let after = search(json!({ "embedding": [1, 0, 0], "k": 1 })).json();
    assert_eq!(after["results"][0]["id"], "c");

    // Postgres's jsonb holds no NUL: the client's mistake, not a 500.
    let nul = send(
        &host,
        &token,
        "PUT",
        "/fn/similar/f",
        Some(json!({ "embedding": [1, 0, 0], "document": { "t": "a\u{0}b" } })),
    );
    assert!(nul.expect_error(400).contains("NUL"));
    // An embedding of another length (written through SQL here; two first
    // PUTs at once in the template's own use) does not break searches:
    // each finds those of its own length.
    host.sql_ok(
        "INSERT INTO embeddings (id, embedding) VALUES ('z', '[1,0]')",
        &[],
    );
    let mixed = search(json!({ "embedding": [1, 0, 0], "k": 5 })).json();
    assert_eq!(mixed["results"].as_array().unwrap().len(), 2, "{mixed}");
    let short = search(json!({ "embedding": [0, 1], "k": 5 })).json();
    assert_eq!(short["results"][0]["id"], "z", "{short}");
    assert_eq!(short["results"].as_array().unwrap().len(), 1, "{short}");
}

#[test]
fn the_kv_counter_template_counts_in_its_own_store() {
    let host = Host::start();
    let token = host.token();
    install(&host, &token, "kv-counter", "counter", json!({}));
    install(
        &host,
        &token,
        "kv-counter",
        "other-counter",
        json!({ "default_counter": "x" }),
    );
    for n in 1..=3 {
        let counted = send(&host, &token, "POST", "/fn/counter", None);
        assert_eq!(counted.status, 200, "{}", counted.text());
        assert_eq!(counted.json(), json!({ "counter": "hits", "count": n }));
    }
    assert_eq!(
        send(&host, &token, "GET", "/fn/counter/", None).json()["count"],
        3
    );
    assert_eq!(
        send(&host, &token, "POST", "/fn/counter/visits", None).json()["count"],
        1
    );
    // One store per function: the other counter starts from nothing.
    assert_eq!(
        send(&host, &token, "GET", "/fn/other-counter/hits", None).json()["count"],
        0
    );
    assert_eq!(
        send(&host, &token, "DELETE", "/fn/counter", None).status,
        204
    );
    assert_eq!(
        send(&host, &token, "GET", "/fn/counter", None).json()["count"],
        0
    );
    assert_eq!(
        send(&host, &token, "GET", "/fn/counter/visits", None).json()["count"],
        1
    );
    // The store lives in the tenant's schema.
    let keys = host.sql_ok("SELECT key FROM zatabase_kv ORDER BY key", &[]);
    assert_eq!(keys["rows"], json!([{ "key": "counter:visits" }]));

    // Another tenant's function of the same name counts in a store of its
    // own, in its own schema; neither sees the other's counts.
    let other = host
        .signup(&unique_email("kv"), "a long test password")
        .access_token;
    install(&host, &other, "kv-counter", "counter", json!({}));
    for n in 1..=2 {
        assert_eq!(
            send(&host, &other, "POST", "/fn/counter/visits", None).json()["count"],
            n
        );
    }
    assert_eq!(
        send(&host, &token, "GET", "/fn/counter/visits", None).json()["count"],
        1
    );
    let theirs = call(
        &host,
        "POST",
        "/v1/sql",
        &other,
        Some(&json!({ "query": "SELECT key, convert_from(value, 'UTF8') AS count FROM zatabase_kv" })),
    )
    .json();
    assert_eq!(
        theirs["rows"],
        json!([{ "key": "counter:visits", "count": "2" }])
    );

    // `/` counts the installed default counter.
    assert_eq!(
        send(&host, &token, "POST", "/fn/other-counter", None).json(),
        json!({ "counter": "x", "count": 1 })
    );
    // A default counter the function would refuse is refused at install.
    let refused = call(
        &host,
        "POST",
        "/v1/functions/templates/kv-counter/install",
        &token,
        Some(
            &json!({ "function_name": "spaced", "parameters": { "default_counter": "page views" } }),
        ),
    );
    assert!(refused.expect_error(422).contains("default_counter"));
    // A stored value that is no count is answered in the error shape.
    host.sql_ok(
        "UPDATE zatabase_kv SET value = convert_to('many', 'UTF8') WHERE key = 'counter:visits'",
        &[],
    );
    let broken = send(&host, &token, "GET", "/fn/counter/visits", None);
    assert!(broken.expect_error(500).contains("does not hold a count"));
    assert_eq!(broken.json()["status"], 500);
}

/// Adds a trigger that calls `path` of the function `id` every second.
fn every_second(host: &Host, token: &str, id: &str, path: &str) {
    let created = call(
        host,
        "POST",
        &format!("/v1/functions/{id}/triggers"),
        token,
        Some(&json!({ "type": "cron", "schedule": "* * * * * *", "path": path })),
    );
    assert_eq!(created.status, 201, "{}", created.text());
}

/// A tick whose function fails after its response's head went out (a trap
/// while its body streams) is recorded as the failure it is, not as the
/// head's 200.
#[test]
fn a_tick_that_fails_after_its_head_is_recorded_as_failed() {
    let host = Host::start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "halfway" }), spin7());
    let triggers = format!("/v1/functions/{id}/triggers");
    every_second(&host, &token, &id, "/half");
    let mut listed = Value::Null;
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(15), || {
            listed = fn_get(&host, &token, &triggers).json();
            !listed["triggers"][0]["last_status"].is_null()
        }),
        "{listed}"
    );
    assert_eq!(listed["triggers"][0]["last_status"], 500, "{listed}");
}

/// A host runs at most 16 of one project's ticks at once (of its 64), so
/// one project's every-second schedules on a slow function leave the rest
/// to other projects; what it leaves stays due and runs at the next claim.
#[test]
fn one_projects_ticks_take_only_their_share_of_a_host() {
    let host = Host::start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "napper" }), spin7());
    let triggers = format!("/v1/functions/{id}/triggers");
    for _ in 0..20 {
        every_second(&host, &token, &id, "/nap");
    }
    let mut listed = Value::Null;
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(30), || {
            listed = fn_get(&host, &token, &triggers).json();
            listed["triggers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["last_status"] == 200)
        }),
        "every trigger ticks: {listed}"
    );
    // How many ran at once, by their lines' times: a tick runs from its
    // first line to its last (or on, if that is not written yet).
    let logs = fn_get(
        &host,
        &token,
        &format!("/v1/functions/{id}/logs?limit=1000"),
    )
    .json();
    let mut ticks: std::collections::HashMap<String, (Option<String>, Option<String>)> =
        std::collections::HashMap::new();
    for line in logs["logs"].as_array().unwrap() {
        let tick = ticks
            .entry(line["request_id"].as_str().unwrap().to_owned())
            .or_default();
        let at = Some(line["at"].as_str().unwrap().to_owned());
        match line["message"].as_str().unwrap() {
            "nap begins" => tick.0 = at,
            "nap ends" => tick.1 = at,
            other => panic!("{other}"),
        }
    }
    let mut events: Vec<(String, i32)> = Vec::new();
    for (begun, ended) in ticks.into_values() {
        if let Some(begun) = begun {
            events.push((begun, 1));
            events.push((ended.unwrap_or_else(|| "9999".to_owned()), -1));
        }
    }
    // An end before a begin at one instant.
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in &events {
        now += step;
        most = most.max(now);
    }
    assert!(
        (2..=16).contains(&most),
        "{most} of one project's ticks ran at once"
    );
    assert!(
        !host.log().contains("a claimed tick found no room"),
        "every claimed tick ran"
    );
}

#[test]
fn functions_are_listed_a_page_at_a_time_and_an_environment_holds_so_many() {
    let host = Host::builder()
        .config("[functions]\nmax_functions = 3\n")
        .start();
    let token = host.token();
    let mut ids = Vec::new();
    for name in ["cee", "ay", "bee"] {
        ids.push(create(&host, &token, json!({ "name": name }))["id"].clone());
    }
    // The environment is full: creating or installing one more is refused,
    // and nothing is left of the attempt.
    for (path, body) in [
        ("/v1/functions", json!({ "name": "dee" })),
        (
            "/v1/functions/templates/hello/install",
            json!({ "function_name": "dee" }),
        ),
    ] {
        let refused = call(&host, "POST", path, &token, Some(&body)).expect_error(422);
        assert!(refused.contains("at most 3 functions"), "{path}: {refused}");
    }
    let page = |query: &str| fn_get(&host, &token, &format!("/v1/functions?{query}"));
    let names = |page: &Value| -> Vec<String> {
        page["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page("limit=2").json();
    assert_eq!(names(&first), ["ay", "bee"], "{first}");
    assert_eq!(first["next_after"], "bee");
    let rest = page("limit=2&after=bee").json();
    assert_eq!(names(&rest), ["cee"], "{rest}");
    assert_eq!(rest["next_after"], Value::Null);
    let all = page("").json();
    assert_eq!(names(&all), ["ay", "bee", "cee"]);
    assert_eq!(all["next_after"], Value::Null);
    for bad in ["limit=0", "limit=1001", "limit=x", "after=%00", "page=2"] {
        page(bad).expect_error(400);
    }

    // Deleting one makes room.
    let id = ids[0].as_str().unwrap();
    assert_eq!(
        call(
            &host,
            "DELETE",
            &format!("/v1/functions/{id}"),
            &token,
            None
        )
        .status,
        204
    );
    create(&host, &token, json!({ "name": "dee" }));
    // The other environment of the project is another tenant, with room of
    // its own (the switch ends this session, so it comes last).
    // The other environment of the project is another tenant, with room.
    let switched = host.call(
        "POST",
        "/v1/auth/switch",
        &token,
        Some(&json!({ "environment": "live" })),
    );
    assert_eq!(switched.status, 200, "{}", switched.text());
    let live = switched.json()["access_token"].as_str().unwrap().to_owned();
    create(&host, &live, json!({ "name": "dee" }));
}

#[test]
fn a_cron_trigger_calls_the_function_on_schedule() {
    let host = Host::start();
    let token = host.token();
    let id = deployed(&host, &token, json!({ "name": "ticker" }), spin5());
    let triggers = format!("/v1/functions/{id}/triggers");

    // Bad triggers are refused and leave none.
    for (body, says) in [
        (
            json!({ "type": "cron", "schedule": "61 * * * *" }),
            "minute",
        ),
        (json!({ "type": "cron", "schedule": "* * *" }), "5 fields"),
        (
            json!({ "type": "event", "schedule": "* * * * *" }),
            "events",
        ),
        (
            json!({ "type": "cron", "schedule": "* * * * *", "path": "log" }),
            "path",
        ),
        // Not a URL's path (these once panicked the scheduler at every tick).
        (
            json!({ "type": "cron", "schedule": "* * * * *", "path": "/a<b" }),
            "path",
        ),
        (
            json!({ "type": "cron", "schedule": "* * * * *", "path": "/x`y" }),
            "path",
        ),
        (
            json!({ "type": "cron", "schedule": "* * * * *", "path": "/q?a=\"b\"" }),
            "path",
        ),
        // A valid schedule, but sent with every tick and read at every claim.
        (
            json!({ "type": "cron", "schedule": format!("{} * * * *", vec!["0"; 200].join(",")) }),
            "at most 256",
        ),
    ] {
        let message = call(&host, "POST", &triggers, &token, Some(&body)).expect_error(422);
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(
        fn_get(&host, &token, &triggers).json()["triggers"],
        json!([])
    );

    // Every second, on /log (its query is not part of the function's path):
    // the function's own log shows the calls. The schedule is kept as its
    // fields, one space apart, whatever spaces it came with.
    let created = call(
        &host,
        "POST",
        &triggers,
        &token,
        Some(&json!({
            "type": "cron",
            "schedule": " *  * *\t* *\n* ",
            "path": "/log?from=cron"
        })),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let trigger = created.json()["id"].as_str().unwrap().to_owned();
    assert!(created.json()["next_run"].is_string());
    assert_eq!(created.json()["schedule"], "* * * * * *");
    let mut metrics = Value::Null;
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(10), || {
            metrics = fn_get(&host, &token, &format!("/v1/functions/{id}/metrics")).json();
            metrics["invocations"].as_i64().unwrap_or(0) >= 2
        }),
        "{metrics}"
    );
    let listed = fn_get(&host, &token, &triggers).json();
    assert_eq!(listed["triggers"][0]["last_status"], 200, "{listed}");
    let logs = fn_get(&host, &token, &format!("/v1/functions/{id}/logs")).json();
    let line = &logs["logs"][0];
    assert_eq!(line["message"], "a line on stderr", "{logs}");
    assert!(
        line["request_id"].as_str().unwrap().starts_with("cron-"),
        "{logs}"
    );

    // Removed, it stops: the count holds still.
    let removed = call(
        &host,
        "DELETE",
        &format!("{triggers}/{trigger}"),
        &token,
        None,
    );
    assert_eq!(removed.status, 204, "{}", removed.text());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before =
        fn_get(&host, &token, &format!("/v1/functions/{id}/metrics")).json()["invocations"]
            .as_i64()
            .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = fn_get(&host, &token, &format!("/v1/functions/{id}/metrics")).json()["invocations"]
        .as_i64()
        .unwrap();
    assert_eq!(before, after, "no calls after the trigger is gone");
    call(
        &host,
        "DELETE",
        &format!("{triggers}/{trigger}"),
        &token,
        None,
    )
    .expect_error(404);
}

#[test]
fn the_sdk_example_reaches_the_tenant_and_the_log() {
    let host = Host::start();
    let token = host.token();
    let me = fn_get(&host, &token, "/v1/whoami").json();
    let id = create(
        &host,
        &token,
        json!({ "name": "guestbook", "public": true }),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wasm = std::fs::read(zatabase_tests::sdk_example()).unwrap();
    let deployed = deploy(&host, &token, &id, wasm);
    assert_eq!(deployed.status, 201, "{}", deployed.text());

    let signed = send(
        &host,
        &token,
        "POST",
        "/fn/guestbook",
        Some(json!({ "name": "Ada", "message": "hello" })),
    );
    assert_eq!(signed.status, 201, "{}", signed.text());
    assert_eq!(signed.json()["name"], "Ada");
    let request_id = signed.header("x-request-id").unwrap().to_owned();
    let read = send(&host, &token, "GET", "/fn/guestbook", None).json();
    assert_eq!(read["entries"][0]["message"], "hello", "{read}");
    assert_eq!(
        host.sql_ok("SELECT name FROM guestbook", &[])["rows"],
        json!([{ "name": "Ada" }])
    );
    assert_eq!(
        send(
            &host,
            &token,
            "POST",
            "/fn/guestbook",
            Some(json!({ "nope": 1 }))
        )
        .status,
        400
    );
    // Public: anyone reads, but signing takes Write on the table, which an
    // anonymous caller does not hold.
    let project = me["project_id"].as_str().unwrap();
    let environment = me["environment"].as_str().unwrap();
    let anonymous = |method: &str, body: Vec<u8>| {
        host.request(
            method,
            "/fn/guestbook",
            &[
                ("x-zatabase-project", project),
                ("x-zatabase-environment", environment),
                ("content-type", "application/json"),
            ],
            body,
        )
    };
    assert_eq!(
        anonymous("GET", Vec::new()).json()["entries"][0]["name"],
        "Ada"
    );
    anonymous("POST", br#"{"name":"Eve","message":"hi"}"#.to_vec()).expect_error(403);
    assert_eq!(
        host.sql_ok("SELECT count(*) AS n FROM guestbook", &[])["rows"],
        json!([{ "n": 1 }])
    );
    let expected = format!("Ada signed (caller {})", me["user_id"].as_str().unwrap());
    let path = format!("/v1/functions/{id}/logs?request_id={request_id}");
    let mut logs = Value::Null;
    assert!(
        zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
            logs = fn_get(&host, &token, &path).json();
            logs["logs"][0]["message"] == expected.as_str()
        }),
        "{logs}"
    );
}

#[test]
fn a_restarted_host_loads_active_deployments_before_it_listens() {
    let mut host = Host::start();
    let token = host.token();
    install(&host, &token, "hello", "greeter", json!({}));
    assert_eq!(fn_get(&host, &token, "/fn/greeter").status, 200);
    host.keep_data();
    let data_dir = host.data_dir.clone();
    drop(host);

    // What a restart finds in the compile cache beside live entries: an
    // older engine's entry, a crashed write, a component no longer stored.
    let cache = data_dir.join("cache/components");
    let entries = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let live = entries();
    let key = live[0]
        .split_once('-')
        .unwrap()
        .1
        .trim_end_matches(".cwasm")
        .to_owned();
    let stale = [
        format!("{}-0123456789abcdef.cwasm", "a".repeat(64)),
        format!("{}-{key}.tmp-4000000000-0", "b".repeat(64)),
        format!("{}-{key}.cwasm", "c".repeat(64)),
    ];
    for name in &stale {
        std::fs::copy(cache.join(&live[0]), cache.join(name)).unwrap();
    }

    let again = Host::builder().data_dir(&data_dir).start();
    assert!(
        again
            .log()
            .lines()
            .any(|line| line.contains("function components preloaded") && line.contains("count=1")),
        "the active deployment was not loaded at start:\n{}",
        again.log()
    );
    let answered = fn_get(&again, &token, "/fn/greeter");
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(
        entries(),
        live,
        "the stale entries stay, or a live one went"
    );
    drop(again);
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}

/// A public spin-sdk 5 function `name` in a new user's sandbox; its
/// project's id (what an anonymous call names in `X-Zatabase-Project`).
fn public_spin5(host: &Host, name: &str) -> String {
    let token = host.token();
    deployed(
        host,
        &token,
        json!({ "name": name, "public": true }),
        spin5(),
    );
    fn_get(host, &token, "/v1/whoami").json()["project_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_function_that_sets_its_own_cors_keeps_it() {
    let host = Host::start();
    let project = public_spin5(&host, "site");
    let send = |method: &str, path: &str, preflight: bool| {
        let mut headers = vec![
            ("x-zatabase-project", project.as_str()),
            ("x-zatabase-environment", "sandbox"),
            ("origin", "https://app.example"),
        ];
        if preflight {
            headers.push(("access-control-request-method", "PUT"));
        }
        host.request(method, path, &headers, Vec::new())
    };

    // Its preflight and its answers carry its policy, not the platform's.
    let preflight = send("OPTIONS", "/fn/site/cors", true);
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    let actual = send("GET", "/fn/site/cors", false);
    assert_eq!(actual.text(), "cors by the function");
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        actual.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(actual.header("access-control-expose-headers"), None);
    assert!(actual.header("x-request-id").is_some());

    // A route of it that sets none gets the platform's, preflight included.
    let preflight = send("OPTIONS", "/fn/site/hello", true);
    assert_eq!(preflight.status, 200, "{}", preflight.text());
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(preflight.header("access-control-allow-methods"), Some("*"));
    let actual = send("GET", "/fn/site/hello", false);
    assert_eq!(actual.text(), "hello from spin-sdk 5");
    assert_eq!(actual.header("access-control-allow-origin"), Some("*"));
    assert!(actual.header("access-control-expose-headers").is_some());
    // One that sets CORS headers but no origin gets the platform's policy
    // alone: its `Allow-Credentials` does not stay beside it.
    let partial = send("GET", "/fn/site/cors-partial", false);
    assert_eq!(partial.text(), "partial cors");
    assert_eq!(partial.header("access-control-allow-origin"), Some("*"));
    assert_eq!(partial.header("access-control-allow-credentials"), None);
    assert_eq!(partial.header("access-control-max-age"), None);
}

#[test]
fn a_host_header_past_ascii_is_the_clients_mistake() {
    use std::io::{Read, Write};
    let host = Host::start();
    let project = public_spin5(&host, "plain");
    // An HTTP client may send obs-text in a header; a WASI 0.2 guest's
    // authority must be text. Sent raw: client libraries refuse to.
    let mut request = format!(
        "GET /fn/plain/hello HTTP/1.1\r\nX-Zatabase-Project: {project}\r\n\
         X-Zatabase-Environment: sandbox\r\nConnection: close\r\nHost: "
    )
    .into_bytes();
    request.extend_from_slice(b"ex\xe4mple.com\r\n\r\n");
    let address = host.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(&request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"status\":400"), "{answer}");
    assert!(answer.contains("Host header"), "{answer}");
}

#[test]
fn secrets_are_sealed_by_the_host_and_open_only_where_they_were_written() {
    let mut host = Host::start();
    let owner = host.token();
    let mine = deployed(
        &host,
        &owner,
        json!({ "name": "mine", "secrets": { "api_key": "owner-secret" } }),
        spin5(),
    );
    let other = host
        .signup(&unique_email("other"), "a long test password")
        .access_token;
    deployed(
        &host,
        &other,
        json!({ "name": "theirs", "secrets": { "api_key": "their-secret" } }),
        spin5(),
    );
    assert_eq!(
        fn_get(&host, &other, "/fn/theirs/var/api_key").text(),
        "their-secret"
    );
    let stored = |name: &str| {
        host.platform_sql(&format!(
            "SELECT secrets->>'api_key' FROM zatabase.functions WHERE name = '{name}'"
        ))
    };
    assert!(
        stored("mine").starts_with("sealed:v2:"),
        "{}",
        stored("mine")
    );

    // The host checks a secret's value before it seals it; nothing is
    // stored of a refused request.
    let refused = |method: &str, path: &str, body: Value| {
        call(&host, method, path, &owner, Some(&body)).expect_error(422)
    };
    let message = refused(
        "POST",
        "/v1/functions",
        json!({ "name": "long", "secrets": { "k": "x".repeat(16 * 1024 + 1) } }),
    );
    assert!(
        message.contains("`secrets.k` is longer than 16384 bytes"),
        "{message}"
    );
    let path = format!("/v1/functions/{mine}");
    let message = refused("PUT", &path, json!({ "secrets": { "api_key": "a\u{0}b" } }));
    assert!(message.contains("NUL"), "{message}");
    assert_eq!(
        fn_get(&host, &owner, "/fn/mine/var/api_key").text(),
        "owner-secret"
    );
    let message = refused(
        "POST",
        "/v1/functions/templates/webhook/install",
        json!({ "function_name": "hook", "parameters": { "signing_secret": "  " } }),
    );
    assert!(
        message.contains("`signing_secret` must not be empty"),
        "{message}"
    );
    assert_eq!(
        fn_get(&host, &owner, "/v1/functions").json()["functions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A value that reads as sealed is sealed like any other.
    let update = call(
        &host,
        "PUT",
        &path,
        &owner,
        Some(&json!({ "secrets": { "api_key": "sealed:v2:not really" } })),
    );
    assert_eq!(update.status, 200, "{}", update.text());
    assert_eq!(
        fn_get(&host, &owner, "/fn/mine/var/api_key").text(),
        "sealed:v2:not really"
    );
    // However the request is spelled, what the route group takes for a
    // write of secrets gets them sealed.
    let spelled = {
        use std::io::{Read, Write};
        let address = host.url("").trim_start_matches("http://").to_owned();
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let body = r#"{"secrets": {"api_key": "lower-case put"}}"#;
        write!(
            stream,
            "put {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {owner}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answered = String::new();
        let _ = stream.read_to_string(&mut answered);
        answered
    };
    assert!(spelled.starts_with("HTTP/1.1 200"), "{spelled}");
    assert!(zatabase_tests::eventually(
        std::time::Duration::from_secs(5),
        || { fn_get(&host, &owner, "/fn/mine/var/api_key").text() == "lower-case put" }
    ));
    let encoded = call(
        &host,
        "POST",
        "/v1/functions/templates/web%68ook/install",
        &owner,
        Some(&json!({ "function_name": "encoded", "parameters": { "signing_secret": "whsec" } })),
    );
    assert_eq!(encoded.status, 201, "{}", encoded.text());
    let encoded = format!("/v1/functions/{}", encoded.json()["id"].as_str().unwrap());
    assert_eq!(call(&host, "DELETE", &encoded, &owner, None).status, 204);

    // Whoever can write the platform's tables can copy a sealed value into
    // another tenant's function, or under another name: it opens in
    // neither place.
    host.platform_sql(
        "UPDATE zatabase.functions t
         SET secrets = jsonb_build_object('api_key', m.secrets->'api_key', 'other', m.secrets->'api_key')
         FROM zatabase.functions m WHERE m.name = 'mine' AND t.name = 'theirs'",
    );
    assert!(zatabase_tests::eventually(
        std::time::Duration::from_secs(5),
        || { fn_get(&host, &other, "/fn/theirs/var/api_key").status == 404 }
    ));
    assert_eq!(fn_get(&host, &other, "/fn/theirs/var/other").status, 404);

    // A secret stored before secrets were bound (here in the clear) is
    // sealed again, bound, at the next start.
    host.platform_sql(
        "UPDATE zatabase.functions SET secrets = '{\"api_key\": \"from before\"}' WHERE name = 'mine'",
    );
    host.keep_data();
    assert!(host.stop().success());
    let data_dir = host.data_dir.clone();
    drop(host);
    let again = Host::builder().data_dir(&data_dir).start();
    let resealed = again
        .platform_sql("SELECT secrets->>'api_key' FROM zatabase.functions WHERE name = 'mine'");
    assert!(resealed.starts_with("sealed:v2:"), "{resealed}");
    assert_eq!(
        fn_get(&again, &owner, "/fn/mine/var/api_key").text(),
        "from before"
    );
}

#[test]
fn a_call_is_recorded_as_its_body_ends_not_as_its_head_leaves() {
    use std::io::{Read, Write};
    let host = Host::start();
    let token = host.token();
    // Both WASI versions: the head says 200, then the function traps while
    // its body is sent.
    let stream5 = std::fs::read(function_fixture("stream5")).unwrap();
    for (name, wasm, path) in [("halfway", spin7(), "/half"), ("halfway5", stream5, "/")] {
        let id = deployed(&host, &token, json!({ "name": name }), wasm);
        let address = host.url("").trim_start_matches("http://").to_owned();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /fn/{name}{path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answered = Vec::new();
        let _ = stream.read_to_end(&mut answered);
        let answered = String::from_utf8_lossy(&answered);
        assert!(answered.starts_with("HTTP/1.1 200"), "{name}: {answered}");
        assert!(answered.contains("the first half"), "{name}: {answered}");
        // Cut, not ended: chunked encoding's last chunk never comes, so the
        // client cannot take half an answer for a whole one.
        assert!(!answered.ends_with("0\r\n\r\n"), "{name}: {answered:?}");
        let mut metrics = Value::Null;
        assert!(
            zatabase_tests::eventually(std::time::Duration::from_secs(5), || {
                metrics = fn_get(&host, &token, &format!("/v1/functions/{id}/metrics")).json();
                metrics["invocations"] == 1
            }),
            "{name}: {metrics}"
        );
        assert_eq!(
            metrics["by_status"],
            json!({ "500": 1 }),
            "{name}: {metrics}"
        );
        let duration = metrics["duration_ms"]["p50"].as_f64().unwrap();
        assert!(
            duration >= 250.0,
            "{name}: the whole call, to the cut: {metrics}"
        );
    }
}

#[test]
fn a_projects_subdomain_serves_only_its_own_functions() {
    use std::io::{Read, Write};
    let host = Host::builder()
        .config("[functions]\nbase_domain = \"fn.test\"\n")
        .start();
    // The victim's public `page` (spin-sdk 5), and another tenant's public
    // `page` (the hello fixture) that would like to answer at the victim's
    // origin.
    let victim = public_spin5(&host, "page");
    let slug = host.platform_sql(&format!(
        "SELECT slug FROM zatabase.projects WHERE id = '{victim}'"
    ));
    let attacker_token = host
        .signup(&unique_email("subdomain"), "a long test password")
        .access_token;
    deployed(
        &host,
        &attacker_token,
        json!({ "name": "page", "public": true }),
        std::fs::read(fixture("hello")).unwrap(),
    );
    let attacker = fn_get(&host, &attacker_token, "/v1/whoami").json()["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ask = |host_header: &str, extra: &[(&str, &str)]| -> String {
        let mut request = format!(
            "GET /fn/page/hello HTTP/1.1\r\nHost: {host_header}\r\n\
             X-Zatabase-Environment: sandbox\r\nConnection: close\r\n"
        );
        for (name, value) in extra {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let address = host.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let at_victim = format!("{slug}.fn.test");
    let own = ask(&at_victim, &[]);
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    assert!(own.contains("hello from spin-sdk 5"), "{own}");
    assert!(
        own.to_ascii_lowercase()
            .contains("vary: authorization, x-zatabase-project, x-zatabase-environment"),
        "{own}"
    );
    // Neither a project header nor another project's token moves the
    // victim's origin to another project.
    let named = ask(&at_victim, &[("X-Zatabase-Project", &attacker)]);
    assert!(named.contains("hello from spin-sdk 5"), "{named}");
    let bearer = format!("Bearer {attacker_token}");
    let tokened = ask(&at_victim, &[("Authorization", &bearer)]);
    assert!(tokened.starts_with("HTTP/1.1 404"), "{tokened}");
    // Off the subdomains, the header and the token name the project.
    let elsewhere = ask("api.example", &[("X-Zatabase-Project", &attacker)]);
    assert!(elsewhere.contains(r#"{"hello":"world"}"#), "{elsewhere}");
    let tokened = ask("api.example", &[("Authorization", &bearer)]);
    assert!(tokened.contains(r#"{"hello":"world"}"#), "{tokened}");
}

#[test]
fn an_answer_begun_before_its_request_body_crossed_the_limit_is_cut() {
    use std::io::{Read, Write};
    let host = Host::builder()
        // Room for the component's deployment (68 KB), not for the body.
        .config("[http]\nbody_limit_bytes = 131072\n")
        .start();
    let token = host.token();
    let stream5 = std::fs::read(function_fixture("stream5")).unwrap();
    deployed(&host, &token, json!({ "name": "late" }), stream5);
    let address = host.url("").trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let chunk = |stream: &mut std::net::TcpStream, bytes: usize| {
        write!(stream, "{bytes:x}\r\n{}\r\n", "a".repeat(bytes)).unwrap();
    };
    write!(
        stream,
        "POST /fn/late/late-echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    chunk(&mut stream, 500);
    // The function answers before it reads: its head comes first.
    let mut answered = Vec::new();
    let mut byte = [0u8; 1];
    while !answered.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the head never came");
        answered.push(byte[0]);
    }
    assert!(answered.starts_with(b"HTTP/1.1 200"));
    // Then the body crosses the limit: the answer, made of a cut body,
    // must not end as if whole.
    for _ in 0..4 {
        let _ = write!(stream, "{:x}\r\n{}\r\n", 65536, "b".repeat(65536));
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let _ = stream.read_to_end(&mut answered);
    let answered = String::from_utf8_lossy(&answered);
    assert!(!answered.ends_with("0\r\n\r\n"), "{answered:?}");
}

/// A request to the functions route group whose body stops coming is cut
/// at the route group's timeout with a 408, before the host reads it to
/// seal its secrets: it does not hold its connection for good.
#[test]
fn a_body_that_stops_coming_is_cut_at_the_route_groups_timeout() {
    use std::io::{Read, Write};
    let manifest = zatabase_tests::manifest_with_auth(
        &zatabase_tests::scratch(),
        &format!(
            r#"[[trigger.http]]
route = "/v1/functions"
component = "functions"

[component.functions]
source = {functions:?}
[component.functions.tool.zatabase]
capabilities = ["session", "platform-db", "functions", "log"]
feature = "functions"
timeout_ms = 1500
"#,
            functions = zatabase_tests::builtin_guest("functions")
                .display()
                .to_string(),
        ),
    );
    let host = Host::builder().manifest(&manifest).start();
    let token = host.token();
    let address = host.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    stream
        .write_all(
            format!(
                "POST /v1/functions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\": \"slow\""
            )
            .as_bytes(),
        )
        .unwrap();
    // Until the host closes the connection (it cannot be used again with
    // the rest of a body owed on it), or the read times out.
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    while let Ok(read @ 1..) = stream.read(&mut chunk) {
        answer.extend_from_slice(&chunk[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"status\":408"), "{answer}");
    assert!(answer.contains("did not arrive within 1500 ms"), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    // Nothing was created.
    let listed = fn_get(&host, &token, "/v1/functions").json();
    assert_eq!(listed["functions"], json!([]), "{listed}");
}
