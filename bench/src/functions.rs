//! `/fn/hello` on Zatabase against `wasmtime serve -Scli` serving the same
//! component, for both spin-sdk lines: spin-sdk 5 (`tests/functions/hello`,
//! WASI 0.2) and spin-sdk 7 (`tests/functions/hello7`, WASI 0.3), with the
//! same load generator (wrk, 32 connections), in alternating rounds; then
//! the first request after a deploy and after a host restart, and deploy
//! times.
//!
//! The anchor is wasmtime 48.0.8's CLI, the wasmtime the host links
//! (`cargo install wasmtime-cli@48.0.8 --locked`; bench/run does).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::wrk;

const CONNECTIONS: u64 = 32;
const ROUNDS: usize = 3;

/// `wasmtime serve` on a free port, killed when dropped.
struct Anchor {
    child: Child,
    url: String,
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wasmtime_binary() -> anyhow::Result<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")));
    for dir in candidates {
        let path = dir.join("wasmtime");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("no `wasmtime` binary: cargo install wasmtime-cli@48.0.8 --locked (bench/run does)")
}

fn serve_anchor(wasm: &Path, options: &[&str]) -> anyhow::Result<Anchor> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(wasmtime_binary()?)
        .args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")])
        .args(options)
        .arg(wasm)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting wasmtime serve")?;
    let anchor = Anchor {
        child,
        url: format!("http://127.0.0.1:{port}/hello"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ureq::get(&anchor.url).call().is_ok() {
            return Ok(anchor);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("wasmtime serve did not answer within 30 s")
}

/// A client of one host: its base URL, a token, the project's id.
struct Client {
    base: String,
    token: String,
    project: String,
}

impl Client {
    fn signup(base: &str) -> anyhow::Result<Self> {
        let token = crate::common::signup(base, "fn@example.com")?;
        let mut me = ureq::get(&format!("{base}/v1/whoami"))
            .header("authorization", &format!("Bearer {token}"))
            .call()?;
        let me: serde_json::Value = me.body_mut().read_json()?;
        Ok(Self {
            base: base.to_owned(),
            token,
            project: me["project_id"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Creates a public function and deploys `wasm`; the deploy's duration.
    fn function(&self, name: &str, wasm: &[u8]) -> anyhow::Result<Duration> {
        let bearer = format!("Bearer {}", self.token);
        let mut created = ureq::post(&format!("{}/v1/functions", self.base))
            .header("authorization", &bearer)
            .send_json(serde_json::json!({ "name": name, "public": true }))?;
        let created: serde_json::Value = created.body_mut().read_json()?;
        let id = created["id"].as_str().unwrap_or_default();
        let started = Instant::now();
        ureq::post(&format!("{}/v1/functions/{id}/deployments", self.base))
            .header("authorization", &bearer)
            .header("content-type", "application/wasm")
            .send(wasm)?;
        Ok(started.elapsed())
    }

    /// One anonymous request to a public function: its latency.
    fn first_request(&self, name: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let response = ureq::get(&format!("{}/fn/{name}/hello", self.base))
            .header("x-zatabase-project", &self.project)
            .header("x-zatabase-environment", "sandbox")
            .call()?;
        let elapsed = started.elapsed();
        anyhow::ensure!(response.status() == 200, "{}", response.status());
        Ok(elapsed)
    }
}

fn start_host(data_dir: Option<&Path>) -> zatabase_tests::Host {
    let mut builder = zatabase_tests::Host::builder().config("[rate_limit]\nenabled = false\n");
    if let Some(dir) = data_dir {
        builder = builder.data_dir(dir);
    }
    builder.start()
}

/// The spin5 fixture (more of spin-sdk in use) built without
/// optimisation: about 2 MB of real code, for the deploy time of a large
/// component.
fn large_component() -> anyhow::Result<Vec<u8>> {
    let root = zatabase_tests::workspace().join("tests/functions");
    let target = zatabase_tests::target_dir().join("fixtures");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(&root)
        .args([
            "build",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "unoptimized",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    anyhow::ensure!(status.success(), "building the unoptimized fixture");
    Ok(std::fs::read(
        target.join("wasm32-wasip2/unoptimized/zatabase_fn_spin5.wasm"),
    )?)
}

/// One spin-sdk line's throughput against `wasmtime serve` on the same
/// component: alternating rounds of (ours, anchor).
fn compare(
    host: &zatabase_tests::Host,
    client: &Client,
    name: &str,
    wasm: &Path,
    anchor_options: &[&str],
    seconds: u64,
) -> anyhow::Result<Vec<(wrk::Load, wrk::Load)>> {
    let anchor = serve_anchor(wasm, anchor_options)?;
    let ours = format!("{}/fn/{name}/hello", host.base);
    let headers = [
        "-H".to_owned(),
        format!("X-Zatabase-Project: {}", client.project),
        "-H".to_owned(),
        "X-Zatabase-Environment: sandbox".to_owned(),
    ];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    wrk::run_args(&ours, 2, CONNECTIONS, 2, &headers)?;
    wrk::run_args(&anchor.url, 2, CONNECTIONS, 2, &[])?;
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let zatabase = wrk::run_args(&ours, seconds, CONNECTIONS, 2, &headers)?;
        anyhow::ensure!(
            zatabase.errors == 0,
            "/fn/{name}: {} errors",
            zatabase.errors
        );
        let wasmtime = wrk::run_args(&anchor.url, seconds, CONNECTIONS, 2, &[])?;
        anyhow::ensure!(
            wasmtime.errors == 0,
            "wasmtime serve {name}: {} errors",
            wasmtime.errors
        );
        rounds.push((zatabase, wasmtime));
    }
    Ok(rounds)
}

fn print_rounds(title: &str, rounds: &[(wrk::Load, wrk::Load)]) {
    println!("{title}");
    println!(
        "{:>12} {:>9} {:>9} {:>12} {:>9} {:>9} {:>7} {:>9}  per round",
        "ours req/s", "p50 µs", "p99 µs", "anchor req/s", "p50 µs", "p99 µs", "ratio", "p99 ×"
    );
    let mean = |f: &dyn Fn(&(wrk::Load, wrk::Load)) -> f64| {
        rounds.iter().map(f).sum::<f64>() / rounds.len() as f64
    };
    let per_round: Vec<String> = rounds
        .iter()
        .map(|(z, w)| format!("{:.2}", z.requests_per_sec / w.requests_per_sec))
        .collect();
    println!(
        "{:>12.0} {:>9.0} {:>9.0} {:>12.0} {:>9.0} {:>9.0} {:>7.2} {:>9.2}  {}",
        mean(&|r| r.0.requests_per_sec),
        mean(&|r| r.0.p50_us),
        mean(&|r| r.0.p99_us),
        mean(&|r| r.1.requests_per_sec),
        mean(&|r| r.1.p50_us),
        mean(&|r| r.1.p99_us),
        mean(&|r| r.0.requests_per_sec) / mean(&|r| r.1.requests_per_sec),
        mean(&|r| r.0.p99_us) / mean(&|r| r.1.p99_us),
        per_round.join(" ")
    );
}

pub fn run(seconds: u64) -> anyhow::Result<()> {
    let wasm_path = zatabase_tests::function_fixture("hello");
    let wasm = std::fs::read(&wasm_path)?;
    let wasm7_path = zatabase_tests::function_fixture("hello7");
    let wasm7 = std::fs::read(&wasm7_path)?;
    let large = large_component()?;
    let mut host = start_host(None);
    let client = Client::signup(&host.base)?;
    let deploy_small = client.function("hello", &wasm)?;
    client.function("hello7", &wasm7)?;
    let deploy_large = client.function("large", &large)?;

    // Cold: the first request after a deploy (compiled at deploy, not yet
    // resolved or linked), the median of five functions of each line.
    let mut cold = Vec::new();
    let mut cold7 = Vec::new();
    for n in 0..5 {
        let name = format!("cold{n}");
        client.function(&name, &wasm)?;
        cold.push(client.first_request(&name)?);
        let name = format!("coldseven{n}");
        client.function(&name, &wasm7)?;
        cold7.push(client.first_request(&name)?);
    }
    cold.sort();
    cold7.sort();

    let rounds = compare(&host, &client, "hello", &wasm_path, &[], seconds)?;
    let rounds7 = compare(&host, &client, "hello7", &wasm7_path, &[], seconds)?;
    // wasmtime serve keeps a WASI 0.3 instance for 128 requests, 16 at a
    // time; the same anchor with a fresh instance per request shows what
    // that reuse is worth.
    let fresh = ["--max-instance-reuse-count", "1"];
    let rounds7_fresh = compare(&host, &client, "hello7", &wasm7_path, &fresh, seconds)?;

    // After a restart: the compile cache on disk is warm, memory is not.
    host.keep_data();
    let data_dir = host.data_dir.clone();
    drop(host);
    let host = start_host(Some(&data_dir));
    let restarted = Client {
        base: host.base.clone(),
        ..client
    };
    let after_restart = restarted.first_request("cold0")?;
    let warm = restarted.first_request("cold0")?;
    let after_restart7 = restarted.first_request("coldseven0")?;
    drop(host);
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap_or(&data_dir));

    print_rounds(
        &format!(
            "/fn/hello, spin-sdk 5 (WASI 0.2, {} KB) vs wasmtime serve -Scli, {CONNECTIONS} connections, {ROUNDS} alternating rounds of {seconds} s",
            wasm.len() / 1024
        ),
        &rounds,
    );
    print_rounds(
        &format!(
            "/fn/hello7, spin-sdk 7 (WASI 0.3, {} KB) vs wasmtime serve -Scli, same load",
            wasm7.len() / 1024
        ),
        &rounds7,
    );
    print_rounds(
        "/fn/hello7 vs wasmtime serve -Scli --max-instance-reuse-count 1 (a fresh instance per request)",
        &rounds7_fresh,
    );
    println!("target: >= 0.90 of the anchor's throughput, p99 <= 1.2x");
    println!(
        "first request after a deploy: spin-sdk 5 {:.1} ms (median of 5; min {:.1}, max {:.1}), spin-sdk 7 {:.1} ms (min {:.1}, max {:.1}); \
         after a restart: {:.1} ms (the next one: {:.1} ms), spin-sdk 7 {:.1} ms; target <= 5 ms",
        ms(cold[2]),
        ms(cold[0]),
        ms(cold[4]),
        ms(cold7[2]),
        ms(cold7[0]),
        ms(cold7[4]),
        ms(after_restart),
        ms(warm),
        ms(after_restart7)
    );
    println!(
        "deploy: {} KB in {:.0} ms; {} KB (unoptimised, with symbols) in {:.0} ms",
        wasm.len() / 1024,
        ms(deploy_small),
        large.len() / 1024,
        ms(deploy_large)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
