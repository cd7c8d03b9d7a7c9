//! Bad requests get the right status in the error shape, and lose nothing.

use serde_json::json;
use zatabase_tests::Host;

#[test]
fn malformed_and_misshapen_bodies() {
    let host = Host::start();
    let json_header = [("content-type", "application/json")];
    let message = host
        .authed("POST", "/v1/sql", &json_header, b"{\"query\": ".to_vec())
        .expect_error(400);
    assert!(message.contains("malformed JSON"), "{message}");
    host.authed("POST", "/v1/sql", &json_header, Vec::new())
        .expect_error(400);
    host.authed(
        "POST",
        "/v1/sql",
        &[("content-type", "text/plain")],
        b"{}".to_vec(),
    )
    .expect_error(415);
    host.authed("POST", "/v1/sql", &[], b"{\"query\":\"select 1\"}".to_vec())
        .expect_error(415);
    let missing = host
        .authed_post("/v1/sql", &json!({ "params": [] }))
        .expect_error(422);
    assert!(missing.contains("query"), "{missing}");
    host.authed_post("/v1/sql", &json!({ "query": 42 }))
        .expect_error(422);
    host.authed_post("/v1/sql", &json!({ "query": "select 1", "params": "nope" }))
        .expect_error(422);
    host.authed_post("/v1/sql", &json!({ "query": "select 1", "extra": true }))
        .expect_error(422);
    host.authed_post("/v1/sql", &json!({ "query": "   " }))
        .expect_error(422);
    host.authed_post("/v1/sql", &json!([1, 2]))
        .expect_error(422);
}

#[test]
fn unknown_routes_and_wrong_methods() {
    let host = Host::start();
    let message = host.get("/v1/nowhere").expect_error(404);
    assert!(message.contains("/v1/nowhere"), "{message}");
    host.authed("DELETE", "/v1/sql", &[], Vec::new())
        .expect_error(405);
    let wrong = host.authed_get("/v1/sql");
    wrong.expect_error(405);
    assert_eq!(wrong.header("allow"), Some("POST"));
    host.authed("POST", "/health", &[], Vec::new())
        .expect_error(405);
    host.authed("PUT", "/metrics", &[], Vec::new())
        .expect_error(405);
}

#[test]
fn oversize_bodies_answer_413_whether_declared_or_streamed() {
    let host = Host::builder()
        .config("[http]\nbody_limit_bytes = 1024\n")
        .start();
    host.sql_ok("CREATE TABLE big (t text)", &[]);
    let filler = "x".repeat(2000);
    let body =
        serde_json::to_vec(&json!({ "query": "INSERT INTO big VALUES ($1)", "params": [filler] }))
            .unwrap();
    let message = host
        .authed(
            "POST",
            "/v1/sql",
            &[("content-type", "application/json")],
            body.clone(),
        )
        .expect_error(413);
    assert!(message.contains("1024"), "{message}");
    let bearer = format!("Bearer {}", host.token());
    let streamed = host.try_request_streamed(
        "POST",
        "/v1/sql",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        std::io::Cursor::new(body),
    );
    // The host answers 413 as soon as the body crosses the limit and closes
    // the connection without reading the rest; a client still sending can
    // see that close before it reads the answer (known: the host does not
    // linger to drain the rest). Either way the body is refused.
    match streamed {
        Ok(response) => {
            response.expect_error(413);
        }
        Err(error) => assert!(
            error.contains("disconnected") || error.contains("reset") || error.contains("pipe"),
            "{error}"
        ),
    }
    // Nothing of either attempt was written.
    assert_eq!(
        host.sql_ok("SELECT count(*) AS n FROM big", &[])["rows"],
        json!([{ "n": 0 }])
    );
    // A body under the limit is fine.
    host.sql_ok("INSERT INTO big VALUES ($1)", &[json!("small")]);

    // Functions' routes have the host's limit too, checked before anything
    // else (even whether the function exists).
    for path in [
        "/fn/anything/at/all",
        "/v1/functions/00000000-0000-0000-0000-000000000000/invoke",
    ] {
        let message = host
            .authed("POST", path, &[], filler.clone().into_bytes())
            .expect_error(413);
        assert!(message.contains("1024"), "{path}: {message}");
    }
    host.authed("POST", "/fn/anything", &[], b"small".to_vec())
        .expect_error(404);
}

#[test]
fn cors_preflight_and_exposed_headers() {
    let host = Host::start();
    let preflight = host.request(
        "OPTIONS",
        "/v1/sql",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
        Vec::new(),
    );
    assert_eq!(preflight.status, 200, "{}", preflight.text());
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(preflight.header("access-control-allow-methods"), Some("*"));
    // Browsers keep the answer ten minutes rather than asking again at
    // every request (their default is five seconds).
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    // `*` does not cover Authorization in a browser: it is named.
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("*, authorization")
    );
    assert!(preflight.header("x-request-id").is_some());
    let actual = host.request(
        "GET",
        "/health",
        &[("origin", "https://app.example")],
        Vec::new(),
    );
    assert_eq!(actual.header("access-control-allow-origin"), Some("*"));
    let exposed = actual.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("x-ratelimit-remaining"), "{exposed}");
    // A 429's wait, for a browser app to honour.
    assert!(exposed.contains("retry-after"), "{exposed}");
}

#[test]
fn cors_with_listed_origins_answers_only_those() {
    let host = Host::builder()
        .config("[http]\ncors_allowed_origins = [\"https://app.example\"]\n")
        .start();
    let from = |origin: &str| host.request("GET", "/health", &[("origin", origin)], Vec::new());
    let listed = from("https://app.example");
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(listed.header("vary"), Some("origin"));
    let other = from("https://elsewhere.example");
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.header("access-control-expose-headers"), None);
    let preflight = host.request(
        "OPTIONS",
        "/v1/sql",
        &[
            ("origin", "https://elsewhere.example"),
            ("access-control-request-method", "POST"),
        ],
        Vec::new(),
    );
    assert_eq!(preflight.header("access-control-allow-origin"), None);
}

#[test]
fn rate_limits_count_down_and_refuse_with_429() {
    let host = Host::builder()
        .config("[rate_limit]\nrequests = 3\nwindow_secs = 3600\n")
        .start();
    for remaining in ["2", "1", "0"] {
        let response = host.authed_post("/v1/sql", &json!({ "query": "select 1" }));
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(response.header("x-ratelimit-remaining"), Some(remaining));
        let reset: u64 = response
            .header("x-ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(reset > now && reset <= now + 3600, "{reset} vs {now}");
    }
    let refused = host.authed_post("/v1/sql", &json!({ "query": "select 1" }));
    refused.expect_error(429);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    // Probes are never limited.
    assert_eq!(host.get("/health").status, 200);
    assert_eq!(host.get("/health/ready").status, 200);
}

#[test]
fn a_token_does_not_take_logins_off_their_addresss_limit() {
    let host = Host::builder()
        .config("[rate_limit]\nrequests = 4\nwindow_secs = 3600\n")
        .start();
    // The signup is the address's first request.
    let bearer = format!("Bearer {}", host.token());
    // Spelled as the accounts route group's router reads it too.
    let paths = ["/v1/auth/login", "/v1/auth//login", "/v1/auth/login/"];
    let login = |i: u32| {
        host.request(
            "POST",
            paths[i as usize % paths.len()],
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&json!({
                "email": format!("nobody-{i}@example.com"),
                "password": "not the password",
            }))
            .unwrap(),
        )
    };
    for i in 0..3 {
        login(i).expect_error(401);
    }
    login(3).expect_error(429);
    // The token's organization was charged nothing.
    assert_eq!(host.authed_get("/v1/whoami").status, 200);
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let limited = |config: &str| {
        Host::builder()
            .config(&format!(
                "[rate_limit]\nrequests = 2\nwindow_secs = 3600\n{config}"
            ))
            .start()
    };
    let from = |host: &Host, client: &str| {
        host.request(
            "GET",
            "/v1/openapi.json",
            &[("x-forwarded-for", client)],
            Vec::new(),
        )
    };
    let proxied = limited("[http]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n");
    for _ in 0..2 {
        assert_eq!(from(&proxied, "203.0.113.1").status, 200);
    }
    from(&proxied, "203.0.113.1").expect_error(429);
    assert_eq!(from(&proxied, "203.0.113.2").status, 200, "another client");
    // A client that names itself is still the one its proxy saw.
    from(&proxied, "203.0.113.2, 203.0.113.1").expect_error(429);

    // A host that trusts no proxy counts the socket's address, whatever
    // the header says.
    let direct = limited("");
    for client in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(from(&direct, client).status, 200);
    }
    from(&direct, "203.0.113.3").expect_error(429);
}

/// Reads one HTTP/1.1 response (with a `content-length`) from `stream`:
/// its status line and body.
fn read_response(stream: &mut std::io::BufReader<std::net::TcpStream>) -> (String, String) {
    use std::io::{BufRead, Read};
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (
        status.trim().to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[test]
fn a_request_refused_before_its_body_was_read_leaves_the_connection_usable() {
    use std::io::Write;
    let host = Host::start();
    let token = host.token();
    let address = host.base.trim_start_matches("http://").to_owned();
    let stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);
    // Refused (no such function, no such route group caller, no such
    // collection) without the handler needing the body, which arrives a moment after the head (as
    // clients send them); then the next request on the same connection.
    for refused in [
        format!(
            "POST /v1/functions/00000000-0000-0000-0000-000000000000/invoke HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        ),
        "POST /v1/sql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
            .to_owned(),
        "POST /fn/nothing HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello".to_owned(),
        // A route group's streaming route answering before it reads.
        format!(
            "POST /v1/collections/nothing/ingest HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {token}\r\ncontent-type: application/x-ndjson\r\ncontent-length: 2\r\n\r\n{{}}"
        ),
    ] {
        let (head, body) = refused.split_at(refused.find("\r\n\r\n").unwrap() + 4);
        writer.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        writer.write_all(body.as_bytes()).unwrap();
        let (status, _) = read_response(&mut reader);
        assert!(status.contains(" 40"), "{status}");
        writer
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let (status, body) = read_response(&mut reader);
        assert!(status.contains(" 200"), "{status}");
        assert!(body.contains("ok"), "{body}");
    }
}

/// A body declared over the limit but small (up to 1 MiB) is read and
/// dropped before the 413: the client, still writing it, never meets a
/// connection closed under it, and the connection serves the next request.
/// A larger one is refused without being read.
#[test]
fn a_small_body_over_the_limit_is_read_before_its_413() {
    use std::io::Write;
    let host = Host::builder()
        .config("[http]\nbody_limit_bytes = 1024\n")
        .start();
    let stream = std::net::TcpStream::connect(address(&host)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let size = 1 << 20;
    // More than the kernel buffers between the two ends take at once, so
    // the writes below block until the host reads.
    writer
        .write_all(
            format!(
                "POST /v1/sql HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: {size}\r\n\r\n",
                host.token()
            )
            .as_bytes(),
        )
        .unwrap();
    writer.write_all(&vec![b' '; size]).unwrap();
    let (status, body) = read_response(&mut reader);
    assert!(status.contains(" 413"), "{status}");
    assert!(body.contains("1024"), "{body}");
    writer
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let (status, _) = read_response(&mut reader);
    assert!(status.contains(" 200"), "{status}");

    // Past 1 MiB the 413 comes at once and the connection is closed.
    let mut big = std::net::TcpStream::connect(address(&host)).unwrap();
    big.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    big.write_all(
        format!(
            "POST /v1/sql HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            (size as u64) << 4
        )
        .as_bytes(),
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(big);
    let (status, _) = read_response(&mut reader);
    assert!(status.contains(" 413"), "{status}");
}

/// A route group's request reaches it in one call when the host can read
/// the body first (none, or a declared length up to 1 MiB), over
/// `wasi:http` otherwise (chunked, or larger). Either way the same answer.
#[test]
fn a_route_group_answers_alike_whether_its_body_is_read_first_or_streamed() {
    let host = Host::start();
    let bearer = format!("Bearer {}", host.token());
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    // Past the 1 MiB the host reads first, within its 10 MiB limit.
    let large = "q".repeat(1_500_000);
    for body in [
        json!({ "query": "SELECT $1::int + 1 AS n", "params": [41] }),
        json!({ "query": "SELECT length($1) AS n", "params": [large] }),
        json!({ "query": "SELEC 1" }),
        json!({ "query": 7 }),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        let whole = host.request("POST", "/v1/sql", &headers, bytes.clone());
        let streamed = host
            .try_request_streamed("POST", "/v1/sql", &headers, std::io::Cursor::new(bytes))
            .unwrap();
        assert_eq!(whole.status, streamed.status, "{}", whole.text());
        assert_eq!(whole.json(), streamed.json());
        assert_eq!(
            whole.header("content-type"),
            streamed.header("content-type")
        );
    }
    let answer = |body: &serde_json::Value| {
        host.request(
            "POST",
            "/v1/sql",
            &headers,
            serde_json::to_vec(body).unwrap(),
        )
        .json()
    };
    assert_eq!(
        answer(&json!({ "query": "SELECT $1::int + 1 AS n", "params": [41] }))["rows"],
        json!([{ "n": 42 }])
    );
    assert_eq!(
        answer(&json!({ "query": "SELECT length($1) AS n", "params": [large] }))["rows"],
        json!([{ "n": 1_500_000 }])
    );
    // A GET (no body) answers, and a HEAD with the GET's length.
    let whoami = host.request("GET", "/v1/whoami", &headers[1..], Vec::new());
    assert_eq!(whoami.status, 200, "{}", whoami.text());
    let head = host.request("HEAD", "/v1/whoami", &headers[1..], Vec::new());
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(whoami.body.len().to_string().as_str())
    );
}

/// Which way a request took, seen in the host's trace of `wasi:http` calls:
/// none for a request the host read whole, some for a chunked one.
#[test]
fn small_bodies_take_one_call_and_chunked_ones_go_over_wasi_http() {
    let host = Host::builder()
        .env("RUST_LOG", "info,wasmtime_wasi_http=trace")
        .start();
    let bearer = format!("Bearer {}", host.token());
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let body = serde_json::to_vec(&json!({ "query": "SELECT 1 AS one" })).unwrap();
    let traced_by = |send: &dyn Fn() -> u16| {
        let before = host.log().len();
        assert_eq!(send(), 200);
        // The guest's last calls (finishing the body) may follow the answer.
        std::thread::sleep(std::time::Duration::from_millis(200));
        host.log()[before..].matches("wasmtime_wasi_http").count()
    };
    let whole = traced_by(&|| {
        host.request("POST", "/v1/sql", &headers, body.clone())
            .status
    });
    assert_eq!(whole, 0, "{}", host.log());
    let streamed = traced_by(&|| {
        host.try_request_streamed(
            "POST",
            "/v1/sql",
            &headers,
            std::io::Cursor::new(body.clone()),
        )
        .unwrap()
        .status
    });
    assert!(streamed > 5, "{streamed}: {}", host.log());
}

/// The `host:port` a host listens on.
fn address(host: &Host) -> String {
    host.url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Whether the host closed `stream` (it reads the end, or a reset) within
/// `within`, rather than leaving it open.
fn closed_within(stream: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer (hyper may say 408) before closing.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_that_sends_half_a_head_is_not_waited_for() {
    use std::io::Write;
    let host = Host::builder()
        .config("[http]\nheader_read_timeout_ms = 500\n")
        .start();
    let mut slow = std::net::TcpStream::connect(address(&host)).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nX-A: ").unwrap();
    let started = std::time::Instant::now();
    assert!(closed_within(&mut slow, std::time::Duration::from_secs(10)));
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(400)
            && waited < std::time::Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert_eq!(host.get("/health").status, 200);
}

/// Opens `count` connections to the host and holds them; then the next
/// one, asking for something, is closed unanswered (an answered one would
/// stay open). The held ones.
fn hold_and_see_the_next_closed(host: &Host, count: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    let held = (0..count)
        .map(|_| std::net::TcpStream::connect(address(host)).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut surplus = std::net::TcpStream::connect(address(host)).unwrap();
    let _ = surplus.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_within(
        &mut surplus,
        std::time::Duration::from_secs(5)
    ));
    held
}

#[test]
fn connections_past_the_cap_are_closed_and_the_others_served() {
    use std::io::Write;
    let host = Host::builder()
        .config("[http]\nmax_connections = 3\n")
        .start();
    let held = hold_and_see_the_next_closed(&host, 3);
    // One held connection asks for something: it is served.
    let mut first = held.into_iter().next().unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut first, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A connection to `address` from `source` (another loopback address:
/// another client).
fn connect_from(source: [u8; 4], address: &str) -> std::net::TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let target: std::net::SocketAddr = address.parse().unwrap();
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &std::net::SocketAddr::from((source, 0))).unwrap();
    connect(&fd, &target).unwrap();
    std::net::TcpStream::from(fd)
}

/// Whether `stream` is answered 200 to a health check (then closed).
fn served(mut stream: std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn one_client_holds_only_its_share_of_the_connections() {
    let host = Host::builder()
        .config("[http]\nmax_connections_per_client = 2\n")
        .start();
    let mut held = hold_and_see_the_next_closed(&host, 2);
    // Another client is served meanwhile.
    assert!(served(connect_from([127, 0, 0, 2], &address(&host))));
    // One of its own closed, the client has a slot again.
    drop(held.remove(0));
    assert!(zatabase_tests::eventually(
        std::time::Duration::from_secs(5),
        || served(std::net::TcpStream::connect(address(&host)).unwrap())
    ));
}

#[test]
fn a_client_that_reads_none_of_its_answers_is_cut_off() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let host = Host::builder()
        .config(
            "[http]\nmax_connections = 1\nsend_timeout_ms = 500\n\
             [rate_limit]\nenabled = false\n",
        )
        .start();
    // Asks for far more than the socket buffers hold, and reads nothing:
    // the host's writes stop going through, and the one connection slot is
    // held.
    let stalled = std::net::TcpStream::connect(address(&host)).unwrap();
    let mut writer = stalled.try_clone().unwrap();
    std::thread::spawn(move || {
        let request = b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..5_000 {
            if writer.write_all(request).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Until it is cut, another client's connection is closed at once.
    let started = Instant::now();
    let served = loop {
        let mut next = std::net::TcpStream::connect(address(&host)).unwrap();
        next.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = next.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut next, &mut answer);
        if answer.starts_with("HTTP/1.1 200") {
            break true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(served, "the stalled client still holds the only connection");
    drop(stalled);
}

#[test]
fn a_head_past_64_kib_is_refused() {
    use std::io::Write;
    let host = Host::start();
    let ask = |header_bytes: usize| -> String {
        let mut stream = std::net::TcpStream::connect(address(&host)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let _ = write!(
            stream,
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(header_bytes)
        );
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
        answer
    };
    assert!(ask(32 * 1024).starts_with("HTTP/1.1 200"));
    let refused = ask(100 * 1024);
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
}
