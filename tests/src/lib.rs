//! The end-to-end harness: builds fixtures, starts the real `zatabase`
//! binary on a free port with its own data directory (a copy of a template
//! cluster, so each test gets a fresh embedded Postgres in well under a
//! second), and talks HTTP to it like any client.

pub mod http;
pub mod postgres;
pub mod runtime;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use http::{Account, Resp, unique_email};

/// The `zatabase` binary under test: `$ZATABASE_BIN`, or the one cargo
/// built next to this test's profile directory.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ZATABASE_BIN") {
        return PathBuf::from(bin);
    }
    let bin = profile_dir().join("zatabase");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build --release`; scripts/test does)",
        bin.display()
    );
    bin
}

/// `<target>/<profile>`, from this executable's path (a test runs from
/// `<target>/<profile>/deps`, a benchmark from `<target>/<profile>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("an executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("profile dir has a parent")
        .to_path_buf()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh directory of the test's own, under the system's temp dir.
pub fn scratch() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join("zatabase-tests").join(format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Holds an exclusive lock on a file until dropped (across processes:
/// nextest runs each test in a process of its own).
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn take(path: &Path) -> Self {
        let file = std::fs::File::create(path).unwrap();
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
        Self { _file: file }
    }
}

/// Settings every test host runs with: throwaway clusters need no fsync.
const BASE_CONFIG: &str = r#"
[postgres]
fsync = false
shared_buffers = "32MB"
max_connections = 60
"#;

/// Merges `extra` (TOML) into `base`, table by table.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(extra)) => merge(inner, extra),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn config_text(extra: &str) -> String {
    let mut table: toml::Table = BASE_CONFIG.parse().unwrap();
    merge(&mut table, extra.parse().expect("test config is TOML"));
    toml::to_string(&table).unwrap()
}

/// A data directory with an initialised cluster, migrations applied and the
/// built-in components compiled: made once per binary, copied per test.
fn template() -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let bin = binary();
            let meta = std::fs::metadata(&bin).unwrap();
            let stamp = meta
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = target_dir().join(format!("test-template-{stamp:x}-{:x}", meta.len()));
            let _lock = FileLock::take(&target_dir().join("test-template.lock"));
            if !dir.join("ready").exists() {
                // Templates of older binaries are of no more use.
                for entry in std::fs::read_dir(target_dir()).unwrap().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with("test-template-") && entry.path().is_dir() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
                std::fs::create_dir_all(&dir).unwrap();
                let config = dir.join("test.toml");
                std::fs::write(&config, config_text("")).unwrap();
                let output = Command::new(&bin)
                    .arg("init")
                    .arg("--data-dir")
                    .arg(&dir)
                    .arg("--config")
                    .arg(&config)
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "zatabase init failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                std::fs::write(dir.join("ready"), "").unwrap();
            }
            dir
        })
        .clone()
}

/// How to start a host.
#[derive(Default)]
pub struct HostBuilder {
    config: String,
    manifest: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    fresh: bool,
}

impl HostBuilder {
    /// Extra configuration (TOML), merged over the test defaults.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_owned();
        self
    }

    /// Serve this manifest instead of the built-in one.
    pub fn manifest(mut self, path: &Path) -> Self {
        self.manifest = Some(path.to_path_buf());
        self
    }

    /// Reuse a data directory (a restart) instead of a fresh copy.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Start from an empty data directory (initdb runs), not the template.
    pub fn fresh_cluster(mut self) -> Self {
        self.fresh = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the host; panics with its log if it does not come up.
    pub fn start(self) -> Host {
        match self.try_start() {
            Ok(host) => host,
            Err(log) => panic!("the host did not start:\n{log}"),
        }
    }

    /// Starts the host, or returns its log when it exits instead.
    pub fn try_start(self) -> Result<Host, String> {
        let (data_dir, owned) = match &self.data_dir {
            Some(dir) => (dir.clone(), false),
            None => {
                let dir = scratch().join("data");
                if self.fresh {
                    std::fs::create_dir_all(&dir).unwrap();
                } else {
                    let status = Command::new("cp")
                        .arg("-a")
                        .arg(template())
                        .arg(&dir)
                        .status()
                        .unwrap();
                    assert!(status.success(), "copying the template cluster failed");
                }
                (dir, true)
            }
        };
        let config = data_dir.join("test.toml");
        std::fs::write(&config, config_text(&self.config)).unwrap();
        let log_path = data_dir.join("host.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(manifest) = &self.manifest {
            command.arg("--manifest").arg(manifest);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawning zatabase");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("zatabase listening on ") {
                    let _ = tx.send(address.to_owned());
                }
            }
        });
        let started = Instant::now();
        let base = loop {
            if let Ok(address) = rx.recv_timeout(Duration::from_millis(50)) {
                break address;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited with {status}\n{log}"));
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("did not listen within 120 s\n{log}"));
            }
        };
        Ok(Host {
            child: Some(child),
            base,
            data_dir,
            owned,
            agent: http::agent(),
            token: std::sync::Mutex::new(None),
        })
    }
}

/// A running `zatabase serve`.
pub struct Host {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub data_dir: PathBuf,
    owned: bool,
    agent: ureq::Agent,
    /// The access token the helpers send; a fresh account's, made on first
    /// use, unless one is set.
    token: std::sync::Mutex<Option<String>>,
}

impl Host {
    /// A host on a fresh copy of the template cluster, built-in manifest.
    pub fn start() -> Host {
        Host::builder().start()
    }

    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    pub fn pid(&self) -> rustix::process::Pid {
        let id = self.child.as_ref().expect("host running").id();
        rustix::process::Pid::from_raw(id as i32).unwrap()
    }

    /// The embedded Postgres's postmaster pid, from its lock file.
    pub fn postgres_pid(&self) -> Option<rustix::process::Pid> {
        let text = std::fs::read_to_string(self.data_dir.join("postgres/postmaster.pid")).ok()?;
        text.lines()
            .next()?
            .trim()
            .parse()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
    }

    /// Runs `sql` on the platform database as its superuser, over the
    /// embedded Postgres's socket: for what no API shows (rows of schema
    /// `zatabase`). Unaligned, tuples only, trimmed.
    pub fn platform_sql(&self, sql: &str) -> String {
        let socket = self.data_dir.join("postgres");
        let socket = socket.to_str().expect("a UTF-8 data directory");
        postgres::psql(&["-h", socket, "-U", "zatabase", "-d", "zatabase"], sql)
            .trim()
            .to_owned()
    }

    /// What the host wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("host.log")).unwrap_or_default()
    }

    /// Sends a signal and waits for the host to exit.
    pub fn stop_with(&mut self, signal: rustix::process::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("host running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the host did not exit within 60 s of {signal:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with(rustix::process::Signal::TERM)
    }

    /// Keeps the data directory after the host is dropped (for restarts).
    pub fn keep_data(&mut self) {
        self.owned = false;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows what the host saw.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- host log (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if self.child.is_some() {
            self.stop();
        }
        if self.owned && std::env::var_os("ZATABASE_KEEP_TEST_DATA").is_none() {
            let _ = std::fs::remove_dir_all(self.data_dir.parent().unwrap_or(&self.data_dir));
        }
    }
}

/// Whether a process exists.
pub fn alive(pid: rustix::process::Pid) -> bool {
    rustix::process::test_kill_process(pid).is_ok()
        && std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
            .is_ok_and(|stat| !stat.contains(") Z "))
}

/// Waits until `check` holds, up to `timeout`.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    check()
}

/// Builds a fixture component (`tests/fixtures/<name>`) and returns its path.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let mut args = vec!["build", "--target", "wasm32-wasip2", "--profile", "guest"];
    let packages: Vec<String> = std::fs::read_dir(workspace().join("tests/fixtures"))
        .unwrap()
        .map(|f| {
            format!(
                "zatabase-fixture-{}",
                f.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    for package in &packages {
        args.extend(["-p", package.as_str()]);
    }
    let target = cargo_wasm(&BUILT, &workspace(), &args, "the fixtures");
    let path = target
        .join("wasm32-wasip2/guest")
        .join(format!("zatabase_fixture_{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "fixture {name} was not built at {}",
        path.display()
    );
    path
}

/// A built-in route group's component, as the host's build left it
/// (`zatabase_guest_<name>.wasm` in the guests' target directory), for
/// manifests that mount it beside a fixture.
/// A manifest in `dir`: the built-in auth route group (so a test can sign
/// up, log in and grant) beside `rest` (more triggers and components, as
/// TOML, their sources relative to `dir`).
pub fn manifest_with_auth(dir: &Path, rest: &str) -> PathBuf {
    let manifest = dir.join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"spin_manifest_version = 2

[application]
name = "test"

[[trigger.http]]
route = "/v1/auth/..."
component = "auth"

[[trigger.http]]
route = "/v1/whoami"
component = "auth"

[[trigger.http]]
route = "/v1/permissions/..."
component = "auth"

[component.auth]
source = {auth:?}
[component.auth.tool.zatabase]
capabilities = ["session", "platform-db", "auth", "log"]
public_routes = ["/v1/auth/signup", "/v1/auth/login", "/v1/auth/refresh"]

{rest}"#,
            auth = builtin_guest("auth").display().to_string(),
        ),
    )
    .unwrap();
    manifest
}

pub fn builtin_guest(name: &str) -> PathBuf {
    let path = target_dir()
        .join("guests/wasm32-wasip2/guest")
        .join(format!("zatabase_guest_{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Runs `cargo <args>` in `dir` into the shared fixtures target directory
/// (once per `built`, per test process), failing with cargo's output.
fn cargo_wasm(built: &OnceLock<()>, dir: &Path, args: &[&str], what: &str) -> PathBuf {
    let target = target_dir().join("fixtures");
    built.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .current_dir(dir)
            .args(args)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .expect("running cargo");
        assert!(
            output.status.success(),
            "building {what} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
    target
}

/// A user's function from `tests/functions/<name>`, built for wasm32-wasip2
/// (once per test process) the way a user builds one: its own workspace,
/// spin-sdk from crates.io.
pub fn function_fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let target = cargo_wasm(
        &BUILT,
        &workspace().join("tests/functions"),
        &[
            "build",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--release",
        ],
        "the function fixtures",
    );
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("zatabase_fn_{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "function fixture {name} was not built at {}",
        path.display()
    );
    path
}

/// The SDK's example function (`sdk/example`), built for wasm32-wasip2 with
/// the one command its docs give.
pub fn sdk_example() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let target = cargo_wasm(
        &BUILT,
        &workspace(),
        &[
            "build",
            "--locked",
            "--manifest-path",
            "sdk/example/Cargo.toml",
            "--target",
            "wasm32-wasip2",
            "--release",
        ],
        "sdk/example",
    );
    target.join("wasm32-wasip2/release/zatabase_sdk_example.wasm")
}
