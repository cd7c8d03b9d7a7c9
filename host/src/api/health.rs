//! `/health`, `/healthz` (liveness) and `/health/ready` (readiness).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use super::error::ApiError;
use crate::db::Db;
use crate::server::AppState;

/// How long one look at the database answers readiness for. The route is
/// public and not rate limited, so without this every probe, from anyone,
/// would take a platform connection and two queries.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The database half of readiness, looked at no more than once a
/// [`FRESH_FOR`]: callers arriving while a look is under way wait for it
/// and share its answer.
pub struct Probe {
    last: tokio::sync::Mutex<Option<(Instant, Database)>>,
    fresh_for: Duration,
    /// The host was told to stop and serves on for `http.shutdown_delay_secs`
    /// so that a load balancer sees it not ready before its listener closes.
    draining: AtomicBool,
}

impl Default for Probe {
    fn default() -> Self {
        Self::fresh_for(FRESH_FOR)
    }
}

#[derive(Clone, Copy)]
struct Database {
    postgres: bool,
    migrations: bool,
}

impl Probe {
    fn fresh_for(fresh_for: Duration) -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
            fresh_for,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on readiness answers 503: the host is stopping.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The last answer while it is fresh, else a new one from `look`.
    async fn database<F>(&self, look: impl FnOnce() -> F) -> Database
    where
        F: Future<Output = Database>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, seen)) = *last
            && at.elapsed() < self.fresh_for
        {
            return seen;
        }
        let seen = look().await;
        *last = Some((Instant::now(), seen));
        seen
    }
}

/// How long one look may take: probes share it, so it must not wait out
/// the pool's acquire timeout.
const LOOK_WITHIN: Duration = Duration::from_secs(3);

async fn look(db: &Db) -> Database {
    let looked = tokio::time::timeout(LOOK_WITHIN, async {
        let postgres = db.ping().await;
        Database {
            postgres,
            migrations: postgres && db.migrations_applied().await.unwrap_or(false),
        }
    });
    looked.await.unwrap_or(Database {
        postgres: false,
        migrations: false,
    })
}

/// The process is up and serving.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Postgres answers, migrations are applied, every component is loaded:
/// 200 with each subsystem's status, or 503 in the error shape with the same.
/// The database's half may be up to a second old.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.readiness.draining.load(Ordering::Relaxed) {
        let error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the host is stopping (it serves what it is sent until its listener closes)",
        );
        let mut body = error.body();
        body["checks"] = json!({ "shutdown": { "status": "draining" } });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let Database {
        postgres,
        migrations,
    } = state.readiness.database(|| look(&state.db)).await;
    let components = state.components.len();
    let expected = state.app.components.len();
    let up = |ok: bool| if ok { "up" } else { "down" };
    let checks = json!({
        "postgres": { "status": up(postgres) },
        "migrations": { "status": up(migrations) },
        "components": { "status": up(components == expected), "loaded": components, "expected": expected },
    });
    if postgres && migrations && components == expected {
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    let mut down = Vec::new();
    if !postgres {
        down.push("postgres is unreachable");
    } else if !migrations {
        down.push("migrations are not applied");
    }
    if components != expected {
        down.push("components are not all loaded");
    }
    let error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}", down.join(", ")),
    );
    let mut body = error.body();
    body["checks"] = checks;
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn the_database_is_looked_at_once_while_fresh_whoever_asks() {
        let looks = std::sync::Arc::new(AtomicU32::new(0));
        let ask = |probe: &std::sync::Arc<Probe>| {
            let (probe, looks) = (probe.clone(), looks.clone());
            tokio::spawn(async move {
                probe
                    .database(|| async {
                        looks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Database {
                            postgres: true,
                            migrations: true,
                        }
                    })
                    .await
                    .postgres
            })
        };
        let probe = std::sync::Arc::new(Probe::fresh_for(Duration::from_secs(3600)));
        let at_once: Vec<_> = (0..20).map(|_| ask(&probe)).collect();
        for asked in at_once {
            assert!(asked.await.unwrap());
        }
        assert_eq!(
            looks.load(Ordering::SeqCst),
            1,
            "concurrent probes share one look"
        );
        assert!(ask(&probe).await.unwrap());
        assert_eq!(looks.load(Ordering::SeqCst), 1, "a fresh answer is reused");
        let stale = std::sync::Arc::new(Probe::fresh_for(Duration::ZERO));
        assert!(ask(&stale).await.unwrap());
        assert!(ask(&stale).await.unwrap());
        assert_eq!(looks.load(Ordering::SeqCst), 3, "a stale one is not");
    }
}
