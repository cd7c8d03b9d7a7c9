//! A function as a Spin user writes it with spin-sdk 7 (WASI 0.3:
//! `wasi:http/handler@0.3.0`, async), dispatching on Spin's `spin-path-info`
//! header (the path when absent):
//!
//! - `/hello`: a plain text greeting
//! - `/`, `/echo`: what arrived (method, uri, path info, query, some headers, body)
//! - `/var/<name>`: the Spin variable `<name>` (`spin:variables@3.0.0`; 404 when undefined)
//! - `/kv`: counts its calls in the default key-value store and lists its keys
//!   (`spin:key-value@3.0.0`)
//! - `/pg`: creates a table, inserts a row, reads every row back
//!   (`spin:postgres@4.2.0`, streamed rows)
//! - `/pg-array`: an int4 array of `x-count` zeros from Postgres; its length
//! - `/pg-hoard`: asks for ten 8 MB rows without reading any; how many the
//!   host handed over, its refusal, and a read once they are dropped
//! - `/pg-types`: one value of each of Postgres 4.2's types, out and in
//! - `/stream`: a body streamed in 100 chunks after the response has started
//! - `/fetch`: an outbound GET of the URL in the `x-target` header; its
//!   status and body, or 502 with the error
//! - `/fanout`: `x-count` outbound GETs of `x-target` sent at once; how many
//!   answered, how many the host refused for too many at once, how many failed
//! - `/redis`: opens a Redis connection (an interface the host does not
//!   provide: the call must fail clearly, the rest keep working)
//! - `/served`: how many requests this instance has served (a WASI 0.3
//!   instance may serve several)
//! - `/later`: answers at once, then sets the key `later` in its store
//!   (`x-delay-ms` after the answer)
//! - `/log`: a line on stdout naming that count
//! - `/flood`: 2000 lines of a thousand bytes on stdout (2 MB)
//! - `/panic`, `/loop`: a trap, a spin past any timeout

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::wasip3::http::types::{ErrorCode, Response};
use spin_sdk::{key_value, pg, variables};

type Answer = Result<Response, ErrorCode>;

fn text(status: u16, body: impl Into<String>) -> Answer {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?
        .into_response()
}

/// Requests this instance has served, this one included.
static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[http_service]
async fn handle(request: Request) -> Answer {
    let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let path_info = match header("spin-path-info") {
        info if info.is_empty() => request.uri().path().to_owned(),
        info => info,
    };
    match path_info.as_str() {
        "/hello" => text(200, "hello from spin-sdk 7"),
        "/served" => text(200, served.to_string()),
        "/later" => {
            // Answers at once, then writes to its store (`x-delay-ms`
            // later): work a Worker would hand to `waitUntil`.
            let delay: u64 = header("x-delay-ms").parse().unwrap_or(0);
            spin_sdk::wasip3::spawn(async move {
                spin_sdk::wasip3::clocks::monotonic_clock::wait_for(delay * 1_000_000).await;
                if let Ok(store) = key_value::Store::open_default().await {
                    let _ = store.set("later", format!("after request {served}")).await;
                }
            });
            text(200, "answered")
        }
        "/nap" => {
            // A slow tick: its lines' times say when it ran.
            println!("nap begins");
            spin_sdk::wasip3::clocks::monotonic_clock::wait_for(1_500_000_000).await;
            println!("nap ends");
            text(200, "napped")
        }
        "/log" => {
            println!("request {served} of this instance");
            text(200, "logged")
        }
        "/flood" => {
            let filler = "x".repeat(990);
            for line in 0..2000 {
                println!("flood {line:04} {filler}");
            }
            text(200, "flooded")
        }
        "/" | "/echo" => {
            let (method, uri) = (request.method().clone(), request.uri().clone());
            let (probe, authorization) = (header("x-probe"), header("authorization"));
            let client = header("spin-client-addr");
            // The platform's own headers, none of which may arrive from a client.
            let routing = [
                "x-zatabase-project",
                "x-zatabase-environment",
                "x-zatabase-trigger",
                "x-zatabase-schedule",
            ]
            .map(header)
            .concat();
            let body = match request.into_body().bytes().await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(error) => return text(400, format!("reading the body: {error:?}")),
            };
            text(
                201,
                format!(
                    "method={method}\nuri={uri}\npath_info={path_info}\nquery={}\nx-probe={probe}\nauthorization={authorization}\nrouting={routing}\nclient={client}\nbody={body}",
                    uri.query().unwrap_or(""),
                ),
            )
        }
        "/kv" => match count().await {
            Ok(body) => text(200, body),
            Err(error) => text(500, format!("key-value failed: {error}")),
        },
        "/pg" => match postgres().await {
            Ok(body) => text(200, body),
            Err(error) => text(500, format!("postgres failed: {error}")),
        },
        "/pg-array" => match zeros(header("x-count").parse().unwrap_or(0)).await {
            Ok(body) => text(200, body),
            Err(error) => text(500, format!("postgres failed: {error}")),
        },
        "/pg-hoard" => match hoard().await {
            Ok(body) => text(200, body),
            Err(error) => text(500, format!("postgres failed: {error}")),
        },
        "/pg-flood" => text(200, pg_flood().await),
        "/kv-flood" => text(200, kv_flood().await),
        "/pg-types" => match types().await {
            Ok(body) => text(200, body),
            Err(error) => text(500, format!("postgres failed: {error}")),
        },
        "/stream" => {
            let (mut tx, body) = spin_sdk::http::body::stream::<String>();
            spin_sdk::wasip3::spawn(async move {
                use futures::SinkExt;
                for i in 0..100 {
                    if tx.send(format!("chunk {i}\n")).await.is_err() {
                        break;
                    }
                }
            });
            http::Response::builder()
                .status(200)
                .body(body)
                .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?
                .into_response()
        }
        "/half" => {
            // A head and a first chunk, then a trap while the body is sent.
            let (mut tx, body) = spin_sdk::http::body::stream::<String>();
            spin_sdk::wasip3::spawn(async move {
                use futures::SinkExt;
                let _ = tx.send("the first half\n".to_owned()).await;
                // Long enough for the head and the first half to go out.
                spin_sdk::wasip3::clocks::monotonic_clock::wait_for(300_000_000).await;
                panic!("the function failed halfway through its body");
            });
            http::Response::builder()
                .status(200)
                .body(body)
                .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?
                .into_response()
        }
        "/fetch" => match spin_sdk::http::get(header("x-target")).await {
            Ok(response) => {
                let status = response.status();
                match response.into_body().bytes().await {
                    Ok(body) => text(
                        200,
                        format!(
                            "status={} body={}",
                            status.as_u16(),
                            String::from_utf8_lossy(&body)
                        ),
                    ),
                    Err(error) => text(502, format!("outbound body failed: {error:?}")),
                }
            }
            Err(error) => text(502, format!("outbound failed: {error:?}")),
        },
        "/fanout" => {
            let count: usize = header("x-count").parse().unwrap_or(1);
            let target = header("x-target");
            let sent = (0..count).map(|_| spin_sdk::http::get(target.clone()));
            let results = futures::future::join_all(sent).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            let limited = results
                .iter()
                .filter(
                    |r| matches!(r, Err(e) if format!("{e:?}").contains("ConnectionLimitReached")),
                )
                .count();
            text(
                200,
                format!("ok={ok} limited={limited} failed={}", count - ok - limited),
            )
        }
        "/redis" => match spin_sdk::redis::Connection::open("redis://127.0.0.1:6379").await {
            Ok(_) => text(200, "connected to Redis"),
            Err(error) => text(502, format!("redis failed: {error}")),
        },
        "/panic" => panic!("the function panicked on purpose"),
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        other => match other.strip_prefix("/var/") {
            Some(name) => match variables::get(name).await {
                Ok(value) => text(200, value),
                Err(variables::Error::Undefined(message)) => text(404, message),
                Err(error) => text(400, format!("{error:?}")),
            },
            None => text(404, format!("no route {other}")),
        },
    }
}

/// Increments `calls` and answers `calls=N keys=a,b`.
async fn count() -> Result<String, key_value::Error> {
    let store = key_value::Store::open_default().await?;
    let calls = match store.get("calls").await? {
        Some(bytes) => String::from_utf8_lossy(&bytes).parse::<u64>().unwrap_or(0),
        None => 0,
    } + 1;
    store.set("calls", calls.to_string()).await?;
    store.set("seen", b"yes").await?;
    let mut keys = store.get_keys().await.collect().await?;
    keys.sort();
    Ok(format!("calls={calls} keys={}", keys.join(",")))
}

/// Writes a row and reads every row back as `id:note` lines.
async fn postgres() -> Result<String, pg::Error> {
    let db = pg::Connection::open("host=anything dbname=ignored").await?;
    db.execute(
        "CREATE TABLE IF NOT EXISTS spin7_notes (id serial PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        [],
    )
    .await?;
    let inserted = db
        .execute(
            "INSERT INTO spin7_notes (note) VALUES ($1)",
            [pg::ParameterValue::Str("from spin-sdk 7".to_owned())],
        )
        .await?;
    let rows = db
        .query("SELECT id, note FROM spin7_notes ORDER BY id", [])
        .await?
        .collect()
        .await?;
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{}:{}",
                row.get::<i32>("id").unwrap_or(-1),
                row.get::<String>("note").unwrap_or_default()
            )
        })
        .collect();
    Ok(format!("inserted={inserted}\n{}", lines.join("\n")))
}

/// An array of `count` zeros, read back: how many elements arrived.
async fn zeros(count: i32) -> Result<String, pg::Error> {
    let db = pg::Connection::open("any address").await?;
    let rows = db
        .query(
            "SELECT array_fill(0, ARRAY[$1::int4]) AS zeros",
            [pg::ParameterValue::Int32(count)],
        )
        .await?
        .collect()
        .await?;
    match rows.first().map(|row| &row[0]) {
        Some(pg::DbValue::ArrayInt32(zeros)) => Ok(format!("elements={}", zeros.len())),
        other => Ok(format!("unexpected {other:?}")),
    }
}

/// Ten results of one 8 MB value each, none read: the host streams a
/// bounded number, then refuses; once they are dropped, it answers again.
async fn hoard() -> Result<String, pg::Error> {
    let db = pg::Connection::open("any address").await?;
    let mut held = Vec::new();
    let mut refused = String::new();
    for _ in 0..10 {
        match db.query("SELECT repeat('x', 8000000) AS big", []).await {
            Ok(result) => held.push(result),
            Err(error) => {
                refused = error.to_string();
                break;
            }
        }
    }
    let count = held.len();
    drop(held);
    let again = db
        .query("SELECT repeat('x', 8000000) AS big", [])
        .await?
        .collect()
        .await?
        .len();
    Ok(format!("held={count}\nrefused={refused}\nagain={again}"))
}

/// 16 statements started at once, each with a 6 MiB parameter (each copied
/// into the host as it starts): how many ran, how many the host refused at
/// once for what calls still running hold, and what else failed.
async fn pg_flood() -> String {
    let db = match pg::Connection::open("any address").await {
        Ok(db) => db,
        Err(error) => return format!("open failed: {error}"),
    };
    let calls = (0..16).map(|_| {
        db.execute(
            "SELECT length($1)",
            [pg::ParameterValue::Str("x".repeat(6 << 20))],
        )
    });
    let results = futures::future::join_all(calls).await;
    tally(
        results
            .into_iter()
            .map(|r| r.map(drop).map_err(|e| e.to_string())),
    )
}

/// 100 writes of 1 MiB started at once, tallied as `pg_flood`'s.
async fn kv_flood() -> String {
    let store = match key_value::Store::open_default().await {
        Ok(store) => store,
        Err(error) => return format!("open failed: {error}"),
    };
    let value = vec![7u8; 1 << 20];
    let calls = (0..100).map(|i| store.set(format!("flood-{i}"), &value));
    let results = futures::future::join_all(calls).await;
    tally(results.into_iter().map(|r| r.map_err(|e| e.to_string())))
}

fn tally(results: impl Iterator<Item = Result<(), String>>) -> String {
    let (mut ok, mut held, mut failed) = (0, 0, Vec::new());
    for result in results {
        match result {
            Ok(()) => ok += 1,
            Err(error) if error.contains("held by calls still running") => held += 1,
            Err(error) => failed.push(error),
        }
    }
    format!("ok={ok} held={held} failed={failed:?}")
}

/// A value of each type spin-sdk 7 maps, read back as `column=value` lines;
/// the `p_` columns are parameters sent as the same types.
async fn types() -> Result<String, pg::Error> {
    use pg::{Interval, ParameterValue as P, RangeBoundKind};
    let db = pg::Connection::open("any address").await?;
    let rows = db
        .query(
            "SELECT '7c9e6679-7425-40de-944b-e07fc1f90ae7'::uuid AS uuid, '{\"a\": 1}'::jsonb AS jsonb,
                29.99::numeric AS decimal, ARRAY[1, NULL, 3]::int4[] AS int4s,
                ARRAY['x', 'y']::text[] AS texts, '1 mon 2 days 3.5 seconds'::interval AS interval,
                int4range(1, 5) AS range, '2024-03-01'::date AS date, true AS bool, NULL::text AS null,
                $1::uuid AS p_uuid, $2::numeric AS p_decimal, $3::int8[] AS p_int8s,
                $4::interval AS p_interval, $5::int8range AS p_range, $6::jsonb AS p_jsonb",
            [
                P::Uuid("00000000-0000-0000-0000-000000000001".to_owned()),
                P::Decimal("-0.5".to_owned()),
                P::ArrayInt64(vec![Some(1), None]),
                P::Interval(Interval { micros: 1_500_000, days: 1, months: 2 }),
                P::RangeInt64((Some((10, RangeBoundKind::Inclusive)), None)),
                P::Jsonb(br#"[true]"#.to_vec()),
            ],
        )
        .await?;
    let columns: Vec<String> = rows.columns().iter().map(|c| c.name.clone()).collect();
    let rows = rows.collect().await?;
    let row = &rows[0];
    Ok(columns
        .iter()
        .enumerate()
        .map(|(i, name)| match &row[i] {
            pg::DbValue::Jsonb(bytes) => {
                format!("{name}=Jsonb({})", String::from_utf8_lossy(bytes))
            }
            value => format!("{name}={value:?}"),
        })
        .collect::<Vec<_>>()
        .join("\n"))
}
