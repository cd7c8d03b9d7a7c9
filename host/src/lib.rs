//! The Zatabase host.
//!
//! A request's way: `server` (axum, the layer stack) → a host-native
//! endpoint in `api`, or a route group from the `manifest` → `dispatch`
//! (an instance of a precompiled component from the `engine`, fresh or
//! kept for the same caller) → the
//! component calls the host's capabilities in `caps` → `db` (Postgres).
//! `platform` starts and stops it all; `config` says how.

pub mod api;
pub mod auth;
pub mod caps;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod engine;
pub mod functions;
pub mod manifest;
pub mod metrics;
pub mod net;
pub mod platform;
pub mod secrets;
pub mod server;
pub mod tasks;
pub mod turns;

use std::process::ExitCode;

use config::{Cli, Command, Config};

/// Runs a parsed command line on a runtime sized by its configuration.
/// Logging set up as the configuration says, and the command run.
pub fn main(cli: Cli) -> ExitCode {
    let config = match &cli.command {
        // A configuration error is reported by `run`, with the others.
        Command::Serve(args) | Command::Init(args) => Config::load(args).ok(),
        Command::InstallPostgres { .. } => None,
    };
    init_logging(config.as_ref().map_or_else(
        || config::log_json_from_env().ok().flatten().unwrap_or(false),
        |config| config.log_json,
    ));
    let workers = config.as_ref().map_or(1, Config::worker_threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    exit_code(runtime.block_on(run(cli)))
}

/// Raises the soft limit on open files to the hard one: every client
/// connection, database connection and outbound request is a descriptor,
/// and a soft limit of 1024 (many systems' default) is below what
/// `http.max_connections` allows.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "the open-file limit stays as it was");
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(&args)?;
            raise_open_file_limit();
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
            // Signals are caught from here on: a stop during start-up waits
            // for start-up, then drains.
            let shutdown = server::shutdown_signal()?;
            let platform = platform::Platform::start(config).await?;
            let state = server::AppState::new(&platform);
            let address = listener.local_addr()?;
            println!("zatabase listening on http://{address}");
            tracing::info!(%address, workers = platform.config.worker_threads(), "listening");
            // Cron triggers call functions: not when functions are off.
            if platform.config.feature_enabled("functions") {
                platform
                    .tasks
                    .spawn(functions::scheduler::run(state.clone()));
            }
            let served = server::serve(state, listener, shutdown).await;
            platform.stop().await?;
            served
        }
        Command::Init(args) => {
            let config = Config::load(&args)?;
            let platform = platform::Platform::start(config).await?;
            println!(
                "zatabase: data directory {} is ready",
                platform.config.data_dir.display()
            );
            platform.stop().await
        }
        Command::InstallPostgres { dir } => {
            let dir = dir.unwrap_or_else(db::install::default_dir);
            db::install::ensure(&dir).await?;
            println!(
                "zatabase: PostgreSQL {} is in {}",
                db::install::VERSION,
                dir.display()
            );
            Ok(())
        }
    }
}

/// Sets up logging from `RUST_LOG` (default: info for Zatabase, warnings
/// for its libraries). Postgres's notices are never logged, whatever
/// `RUST_LOG` says: sqlx logs each as it comes, and a tenant's statements
/// choose their text and number (`RAISE WARNING` in a loop), which would
/// write past the functions' log budgets, line breaks and all.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,wasmtime=warn,cranelift_codegen=warn"))
        .add_directive(
            "sqlx::postgres::notice=off"
                .parse()
                .expect("a valid directive"),
        );
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The process's exit code for an outcome, printing the error chain.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zatabase: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
