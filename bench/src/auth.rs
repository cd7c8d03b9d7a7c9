//! Authentication costs.
//!
//! - `GET /v1/whoami` (token verification, the session's liveness query, a
//!   component and its platform query) against the host-native `/health`,
//!   same process, same wrk.
//! - `POST /v1/auth/login` (argon2id dominates by design) against the bare
//!   argon2id verification rate with the same parameters, on both cores.

use std::time::{Duration, Instant};

use zatabase::auth::password::Passwords;

use crate::{server, wrk};

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("zatabase-bench-auth-{}", std::process::id()));
    let mut config = server::config(&dir.join("data"));
    config.auth.max_failed_logins_per_ip = u32::MAX;
    let (memory, iterations, parallelism) = (
        config.auth.argon2_memory_kib,
        config.auth.argon2_iterations,
        config.auth.argon2_parallelism,
    );
    let (platform, base) = server::start(config, axum::Router::new()).await?;

    let (email, password) = ("bench@example.com", "bench password 123");
    let signup: serde_json::Value = tokio::task::spawn_blocking({
        let url = format!("{base}/v1/auth/signup");
        move || {
            ureq::post(&url)
                .send_json(serde_json::json!({ "email": email, "password": password }))
                .map_err(anyhow::Error::from)
                .and_then(|mut r| Ok(r.body_mut().read_json::<serde_json::Value>()?))
        }
    })
    .await??;
    let token = signup["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(!token.is_empty(), "signup failed: {signup}");

    let header = format!("Authorization: Bearer {token}");
    let load = |path: &str, secs: u64, connections: u64, extra: Vec<String>| {
        let url = format!("{base}{path}");
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            wrk::run_args(&url, secs, connections, 2, &extra)
        })
    };
    load("/health", 2, 32, vec![]).await??;
    load("/v1/whoami", 2, 32, vec!["-H".into(), header.clone()]).await??;
    let health = load("/health", seconds, 32, vec![]).await??;
    let whoami = load("/v1/whoami", seconds, 32, vec!["-H".into(), header.clone()]).await??;
    println!("token check + component ({seconds} s, 32 connections, wrk -t2)");
    println!(
        "{:<34} {:>10} {:>8} {:>8} {:>7}",
        "", "req/s", "p50 µs", "p99 µs", "errors"
    );
    for (name, l) in [
        ("GET /health (host-native)", &health),
        ("GET /v1/whoami (token + component)", &whoami),
    ] {
        println!(
            "{name:<34} {:>10.0} {:>8.0} {:>8.0} {:>7}",
            l.requests_per_sec, l.p50_us, l.p99_us, l.errors
        );
    }
    println!(
        "ratio (whoami / health): {:.2}",
        whoami.requests_per_sec / health.requests_per_sec
    );

    // Login: a Lua script makes wrk POST the credentials.
    let script = dir.join("login.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"email\":\"{email}\",\"password\":\"{password}\"}}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let login = load(
        "/v1/auth/login",
        seconds,
        4,
        vec!["-s".into(), script.display().to_string()],
    )
    .await??;

    // The anchor: argon2id verification alone, one thread per core.
    let passwords = Passwords::new(memory, iterations, parallelism)?;
    let hash = passwords.hash(password)?;
    let deadline = Instant::now() + Duration::from_secs(seconds.min(5));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (passwords, hash) = (passwords.clone(), hash.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    assert!(passwords.verify(password, Some(&hash)));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let verified: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let anchor = verified as f64 / seconds.min(5) as f64;
    println!("login (argon2id m={memory} KiB, t={iterations}, p={parallelism}; 4 connections)");
    println!(
        "  POST /v1/auth/login {:>8.1} req/s  p50 {:.1} ms  p99 {:.1} ms  errors {}",
        login.requests_per_sec,
        login.p50_us / 1e3,
        login.p99_us / 1e3,
        login.errors
    );
    println!("  argon2id verify alone (2 threads) {anchor:>8.1} /s");
    println!(
        "  ratio (login / bare verification): {:.2}",
        login.requests_per_sec / anchor
    );
    platform.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
