//! An in-process platform serving on a free loopback port, for benchmarks
//! that compare it with something else in the same process.

use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use zatabase::config::Config;
use zatabase::platform::Platform;
use zatabase::server::{AppState, app_with};

/// The configuration benchmarks start from: a throwaway data directory, no
/// rate limit, no fsync.
pub fn config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.rate_limit.enabled = false;
    config.postgres.fsync = false;
    config
}

/// Starts the platform with `extra` routes beside its own and serves it;
/// returns it and its base URL.
pub async fn start(config: Config, extra: Router<AppState>) -> anyhow::Result<(Platform, String)> {
    let platform = Platform::start(config).await?;
    let app = app_with(AppState::new(&platform), extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .await;
    });
    Ok((platform, format!("http://{address}")))
}
