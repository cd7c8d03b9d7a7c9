//! The cost of the WebAssembly path: the smallest route-group component
//! (tests/fixtures/hello) against a host-native axum handler that returns
//! the same bytes, both mounted in one host process under the same layers,
//! driven by the same wrk.

use axum::Router;
use axum::routing::get;

use crate::{server, wrk};

const BODY: &str = r#"{"hello":"world"}"#;
const ROUNDS: usize = 4;

/// One wrk run and the host CPU it cost.
struct Run {
    load: wrk::Load,
    cpu_us_per_request: f64,
}

/// CPU seconds this process has used (user + system, all threads).
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub async fn run(seconds: u64, connections: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("zatabase-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(zatabase_tests::fixture("hello"), dir.join("hello.wasm"))?;
    std::fs::write(
        dir.join("spin.toml"),
        "spin_manifest_version = 2\n[application]\nname = \"bench\"\n\
         [[trigger.http]]\nroute = \"/bench/wasm\"\ncomponent = \"hello\"\n\
         [component.hello]\nsource = \"hello.wasm\"\n\
         [component.hello.tool.zatabase]\npublic_routes = [\"/bench/wasm\"]\n",
    )?;
    let mut config = server::config(&dir.join("data"));
    config.manifest = Some(dir.join("spin.toml"));
    let native = Router::new().route(
        "/bench/native",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                BODY,
            )
        }),
    );
    let (platform, base) = server::start(config, native).await?;
    let url = |path: &str| format!("{base}{path}");

    println!(
        "wasm path: {connections} connections, {seconds} s per run, wrk -t2, {ROUNDS} rounds, alternating"
    );
    let (native_url, wasm_url) = (url("/bench/native"), url("/bench/wasm"));
    let measure = move |url: String, secs: u64| {
        tokio::task::spawn_blocking(move || {
            let before = cpu_time();
            let load = wrk::run(&url, secs, connections)?;
            let cpu = cpu_time() - before;
            anyhow::Ok(Run {
                cpu_us_per_request: cpu * 1e6 / (load.requests_per_sec * secs as f64),
                load,
            })
        })
    };
    let measure_one = move |url: String, secs: u64| {
        tokio::task::spawn_blocking(move || {
            let load = wrk::run_with(&url, secs, 1, 1)?;
            anyhow::Ok(Run {
                load,
                cpu_us_per_request: 0.0,
            })
        })
    };
    // Warm both paths (the component's first instances, the allocator pool).
    measure(native_url.clone(), 2).await??;
    measure(wasm_url.clone(), 2).await??;
    let mut native = Vec::new();
    let mut wasm = Vec::new();
    for round in 0..ROUNDS {
        // Alternate which goes first, so drift in the machine hits both.
        if round % 2 == 0 {
            native.push(measure(native_url.clone(), seconds).await??);
            wasm.push(measure(wasm_url.clone(), seconds).await??);
        } else {
            wasm.push(measure(wasm_url.clone(), seconds).await??);
            native.push(measure(native_url.clone(), seconds).await??);
        }
    }
    let mean =
        |runs: &[Run], f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
    let rps = |r: &Run| r.load.requests_per_sec;
    let p50 = |r: &Run| r.load.p50_us;
    let p99 = |r: &Run| r.load.p99_us;
    let cpu = |r: &Run| r.cpu_us_per_request;
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>14} {:>7}",
        "", "req/s", "p50 µs", "p99 µs", "host CPU µs/req", "errors"
    );
    for (name, runs) in [
        ("host-native axum handler", &native),
        ("route-group component", &wasm),
    ] {
        println!(
            "{name:<28} {:>10.0} {:>8.0} {:>8.0} {:>14.1} {:>7}",
            mean(runs, rps),
            mean(runs, p50),
            mean(runs, p99),
            mean(runs, cpu),
            runs.iter().map(|r| r.load.errors).sum::<u64>()
        );
    }
    let mut ratios: Vec<f64> = wasm
        .iter()
        .zip(&native)
        .map(|(w, n)| w.load.requests_per_sec / n.load.requests_per_sec)
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio (component / native): throughput {:.2} of means, per round {} (target >= 0.50)",
        mean(&wasm, rps) / mean(&native, rps),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "added host CPU per request: {:.1} µs (component {:.1}, native {:.1})",
        mean(&wasm, cpu) - mean(&native, cpu),
        mean(&wasm, cpu),
        mean(&native, cpu)
    );

    // Unloaded latency: one connection, so queueing does not hide the cost.
    let mut native_one = Vec::new();
    let mut wasm_one = Vec::new();
    for _ in 0..2 {
        native_one.push(measure_one(native_url.clone(), seconds).await??);
        wasm_one.push(measure_one(wasm_url.clone(), seconds).await??);
    }
    println!("one connection (latency without queueing):");
    for (name, runs) in [
        ("host-native axum handler", &native_one),
        ("route-group component", &wasm_one),
    ] {
        println!(
            "{name:<28} {:>10.0} {:>8.0} {:>8.0}",
            mean(runs, rps),
            mean(runs, p50),
            mean(runs, p99)
        );
    }
    println!(
        "p50 added by the component path: {:.0} µs (target <= 100)",
        mean(&wasm_one, p50) - mean(&native_one, p50)
    );
    platform.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
