//! Runs `wrk` (Debian's package) and reads its summary.

use std::process::Command;

use anyhow::{Context, bail};

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

fn micros(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// `wrk -t2 -c<connections> -d<seconds>s --latency <url>`.
pub fn run(url: &str, seconds: u64, connections: u64) -> anyhow::Result<Load> {
    run_with(url, seconds, connections, 2)
}

/// `wrk -t<threads> -c<connections> -d<seconds>s --latency <url>`.
pub fn run_with(url: &str, seconds: u64, connections: u64, threads: u64) -> anyhow::Result<Load> {
    run_args(url, seconds, connections, threads, &[])
}

/// As [`run_with`], with extra wrk arguments (`-H`, `-s`).
pub fn run_args(
    url: &str,
    seconds: u64,
    connections: u64,
    threads: u64,
    extra: &[&str],
) -> anyhow::Result<Load> {
    let output = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .args(extra)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk; bench/run does)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut load = Load {
        requests_per_sec: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        errors: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => load.requests_per_sec = value.parse()?,
            ["50%", value] => load.p50_us = micros(value).context("p50")?,
            ["99%", value] => load.p99_us = micros(value).context("p99")?,
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>()?,
            _ if line.contains("Socket errors") => {
                load.errors += line
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if load.requests_per_sec == 0.0 {
        bail!("could not read wrk's output:\n{text}");
    }
    Ok(load)
}
