//! Zatabase's benchmarks. Each runs our code and its anchor in one run, on
//! one machine, and prints the ratio (absolute times are not comparable
//! across machines; ratios roughly are).
//!
//! ```text
//! zatabase-bench wasm-path  [--seconds N] [--connections N]
//! zatabase-bench cold-start [--runs N]
//! zatabase-bench auth       [--seconds N]
//! zatabase-bench sql        [--seconds N]
//! zatabase-bench fn         [--seconds N]
//! zatabase-bench collections [--seconds N]
//! zatabase-bench zql        [--seconds N]
//! ```
//!
//! `bench/run` builds everything, installs wrk and runs them all.

mod auth;
mod cold_start;
mod collections;
mod common;
mod functions;
mod native;
mod server;
mod sql;
mod wasm_path;
mod wrk;
mod zql;

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("wasm-path") => runtime.block_on(wasm_path::run(
            flag(&args, "--seconds", 10),
            flag(&args, "--connections", 32),
        )),
        Some("cold-start") => cold_start::run(flag(&args, "--runs", 5) as usize),
        Some("auth") => runtime.block_on(auth::run(flag(&args, "--seconds", 10))),
        Some("sql") => runtime.block_on(sql::run(flag(&args, "--seconds", 10))),
        Some("fn") => functions::run(flag(&args, "--seconds", 10)),
        Some("collections") => runtime.block_on(collections::run(flag(&args, "--seconds", 10))),
        Some("zql") => runtime.block_on(zql::run(flag(&args, "--seconds", 10))),
        _ => {
            eprintln!(
                "usage: zatabase-bench wasm-path|cold-start|auth|sql|fn|collections|zql [options]"
            );
            std::process::exit(2);
        }
    }
}
