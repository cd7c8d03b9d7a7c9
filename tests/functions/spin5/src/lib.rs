//! A function as a Spin user writes it (spin-sdk 5, `wasi:http/incoming-handler@0.2.0`),
//! dispatching on Spin's `spin-path-info` header (the path when absent):
//!
//! - `/hello`: a plain text greeting
//! - `/`, `/echo`: what arrived (method, uri, path info, query, some headers, body) as JSON-ish text
//! - `/var/<name>`: the Spin variable `<name>` (404 when undefined)
//! - `/log`: a line on stdout and one on stderr
//! - `/fetch`: an outbound GET of the URL in the `x-target` header; its
//!   status and body, or 502 with the error
//! - `/redis`: opens a Redis connection (an interface the host does not
//!   provide: the call must fail clearly, the rest keep working)
//! - `/cors`: its own CORS policy (one origin, with credentials), preflights too
//! - `/pg4`: a query through spin-sdk's `pg4` (`spin:postgres/postgres@4.0.0`)
//!   at a made-up address: the host runs it in the function's tenant
//! - `/config`: the variable `greeting`, one that is not set, and every
//!   name, through `wasi:config/store` (Spin's other way to its variables)
//! - `/stores`: opens the key-value store over and over, keeping every
//!   handle, until the host refuses one
//! - `/fields-big`: builds a header map of one 40 KB header
//! - `/fields-many`: builds small header maps, keeping every one, up to 10,000
//! - `/panic`, `/loop`, `/alloc`: a trap, a spin past any timeout, unbounded memory

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::variables;

#[http_component]
fn handle(request: Request) -> anyhow::Result<impl IntoResponse> {
    // Spin (and Zatabase) say which part of the path is the function's;
    // under a plain wasi:http server (`wasmtime serve`) it is the whole path.
    let path_info = request
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| request.path())
        .to_owned();
    Ok(match path_info.as_str() {
        "/hello" => Response::new(200, "hello from spin-sdk 5"),
        "/log" => {
            println!("a line on stdout");
            eprintln!("a line on stderr");
            Response::new(200, "logged")
        }
        "/" | "/echo" => {
            let header = |name: &str| {
                request
                    .header(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            let body = String::from_utf8_lossy(request.body()).into_owned();
            let text = format!(
                "method={:?}\nuri={}\npath_info={}\nfull_url={}\nbase_path={}\nmatched_route={}\nquery={}\nx-probe={}\nauthorization={}\nrouting={}{}{}{}\nbody={}",
                request.method(),
                request.uri(),
                path_info,
                header("spin-full-url"),
                header("spin-base-path"),
                header("spin-matched-route"),
                request.query(),
                header("x-probe"),
                header("authorization"),
                // The platform's own headers, none of which may arrive from a client.
                header("x-zatabase-project"),
                header("x-zatabase-environment"),
                header("x-zatabase-trigger"),
                header("x-zatabase-schedule"),
                body
            );
            Response::builder()
                .status(201)
                .header("content-type", "text/plain")
                .header("x-echoed", "yes")
                .body(text)
                .build()
        }
        "/fetch" => {
            let target = request
                .header("x-target")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            let sent: Result<Response, _> =
                spin_sdk::http::run(spin_sdk::http::send(Request::get(target)));
            match sent {
                Ok(response) => Response::new(
                    200,
                    format!(
                        "status={} body={}",
                        response.status(),
                        String::from_utf8_lossy(response.body())
                    ),
                ),
                Err(error) => Response::new(502, format!("outbound failed: {error}")),
            }
        }
        "/redis" => match spin_sdk::redis::Connection::open("redis://127.0.0.1:6379") {
            Ok(_) => Response::new(200, "connected to Redis"),
            Err(error) => Response::new(502, format!("redis failed: {error}")),
        },
        // CORS headers without an `Allow-Origin`: the platform's policy
        // applies, and these must not stay beside it.
        "/cors-partial" => Response::builder()
            .status(200)
            .header("access-control-allow-credentials", "true")
            .header("access-control-max-age", "600")
            .body("partial cors")
            .build(),
        "/cors" => {
            let preflight = *request.method() == spin_sdk::http::Method::Options;
            let mut response = Response::builder();
            response
                .status(if preflight { 204 } else { 200 })
                .header("access-control-allow-origin", "https://app.example")
                .header("access-control-allow-credentials", "true")
                .header("vary", "origin");
            if preflight {
                response.header("access-control-allow-methods", "GET, PUT");
            }
            response
                .body(if preflight {
                    ""
                } else {
                    "cors by the function"
                })
                .build()
        }
        "/pg4" => {
            use spin_sdk::pg4::{Connection, Decode, ParameterValue};
            let db = Connection::open("host=elsewhere user=nobody dbname=nothing")?;
            let rows = db.query(
                "SELECT $1::int4 + 1 AS n, current_schema() AS schema",
                &[ParameterValue::Int32(41)],
            )?;
            let row = &rows.rows[0];
            let n = i32::decode(&row[0])?;
            let schema = String::decode(&row[1])?;
            Response::new(200, format!("n={n} schema={schema}"))
        }
        "/config" => {
            use spin_sdk::wit::wasi::config::store;
            let read = (
                store::get("greeting"),
                store::get("missing"),
                store::get_all(),
            );
            match read {
                (Ok(greeting), Ok(missing), Ok(all)) => {
                    let names: Vec<String> = all.into_iter().map(|(name, _)| name).collect();
                    Response::new(
                        200,
                        format!(
                            "greeting={greeting:?} missing={missing:?} names={}",
                            names.join(",")
                        ),
                    )
                }
                other => Response::new(502, format!("config failed: {other:?}")),
            }
        }
        "/stores" => {
            let mut open = Vec::new();
            let refused = loop {
                match spin_sdk::key_value::Store::open_default() {
                    Ok(store) if open.len() < 10_000 => open.push(store),
                    Ok(_) => break "never".to_owned(),
                    Err(error) => break format!("{error:?}"),
                }
            };
            Response::new(200, format!("opened={} refused={refused}", open.len()))
        }
        "/fields-big" => {
            let big =
                spin_sdk::http::Fields::from_list(&[("x-pad".to_owned(), vec![b'x'; 40_000])]);
            Response::new(200, format!("{:?}", big.map(drop)))
        }
        "/fields-many" => {
            let mut kept = Vec::new();
            while kept.len() < 10_000 {
                match spin_sdk::http::Fields::from_list(&[("x-pad".to_owned(), b"x".to_vec())]) {
                    Ok(fields) => kept.push(fields),
                    Err(error) => {
                        return Ok(Response::new(200, format!("kept={} {error:?}", kept.len())));
                    }
                }
            }
            Response::new(200, format!("kept={}", kept.len()))
        }
        "/panic" => panic!("the function panicked on purpose"),
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        other => match other.strip_prefix("/var/") {
            Some(name) => match variables::get(name) {
                Ok(value) => Response::new(200, value),
                Err(variables::Error::Undefined(message)) => Response::new(404, message),
                Err(error) => Response::new(400, error.to_string()),
            },
            None => Response::new(404, format!("no route {other}")),
        },
    })
}
