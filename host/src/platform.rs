//! Everything the HTTP server stands on, started in order and stopped in
//! reverse: data directory, manifest, engine and components, Postgres,
//! migrations, the authenticator.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;

use crate::auth::Auth;
use crate::config::Config;
use crate::db::embedded::{self, Embedded};
use crate::db::exec::Limits;
use crate::db::{self, Db, install};
use crate::dispatch::{self, ComponentDefaults, LoadedComponent};
use crate::engine::cache::{CompileCache, Origin};
use crate::engine::{Engine, EngineConfig};
use crate::functions::Functions;
use crate::manifest::{self, App};
use crate::metrics::Metrics;
use crate::secrets::MasterKey;
use crate::tasks::Tasks;

/// What each new platform connection prepares (see `db::WarmStatement`).
const WARM_STATEMENTS: [db::WarmStatement; 4] = [
    (crate::auth::SESSION_QUERY, 1),
    (crate::functions::STATEMENTS[0], 3),
    (crate::functions::STATEMENTS[1], 3),
    (crate::functions::STATEMENTS[2], 3),
];

/// The running platform, minus its HTTP listener.
pub struct Platform {
    pub config: Arc<Config>,
    pub app: App,
    pub engine: Engine,
    pub components: HashMap<String, Arc<LoadedComponent>>,
    pub db: Arc<Db>,
    pub auth: Arc<Auth>,
    pub functions: Arc<Functions>,
    pub metrics: Arc<Metrics>,
    /// Connections, guests' runs after their answers, cron ticks: what a
    /// stop waits for before Postgres goes.
    pub tasks: Tasks,
    embedded: Option<Embedded>,
    session_listener: tokio::task::JoinHandle<()>,
    function_listener: tokio::task::JoinHandle<()>,
    /// Makes functions changed elsewhere again before their requests do.
    function_maker: tokio::task::JoinHandle<()>,
    telemetry_writer: tokio::task::JoinHandle<()>,
    idle_sweeper: tokio::task::JoinHandle<()>,
    session_sweeper: tokio::task::JoinHandle<()>,
    cache_tidier: tokio::task::JoinHandle<()>,
    _lock: File,
}

impl Platform {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        let lock = lock_data_dir(&config.data_dir)?;
        let source = match &config.manifest {
            Some(path) => manifest::Source::File(path.clone()),
            None => manifest::Source::Embedded,
        };
        let app = manifest::load(&source, &|flag| config.feature_enabled(flag))?;
        // A misspelt flag would leave on what it meant to turn off.
        if let Some(unknown) = config.features.keys().find(|f| !app.features.contains(*f)) {
            bail!(
                "[features] names `{unknown}`, which no route group sits behind; known: {}",
                app.features.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let engine = Engine::new(&EngineConfig {
            max_instances: config.components.max_instances,
            max_memory_bytes: usize::try_from(config.components.max_memory_mb << 20)
                .unwrap_or(usize::MAX),
        })?;
        let cache =
            CompileCache::new(&config.data_dir.join("cache/components"), engine.wasmtime())?;
        for spec in &app.components {
            if spec
                .memory_mb
                .is_some_and(|m| m > config.components.max_memory_mb)
            {
                bail!(
                    "component `{}` asks for {} MiB, above components.max_memory_mb ({})",
                    spec.id,
                    spec.memory_mb.unwrap_or_default(),
                    config.components.max_memory_mb
                );
            }
        }

        // Compile (or load from the cache) while Postgres starts.
        let defaults = ComponentDefaults {
            timeout: Duration::from_millis(config.components.timeout_ms),
            memory_mb: config.components.memory_mb,
            max_memory_mb: config.components.max_memory_mb,
        };
        let metrics = Arc::new(Metrics::new());
        let specs = app.components.clone();
        let function_cache = cache.clone();
        let compile_engine = engine.clone();
        let compile_metrics = metrics.clone();
        let compiling = tokio::task::spawn_blocking(move || {
            specs
                .into_iter()
                .map(|spec| {
                    dispatch::load(&compile_engine, &cache, spec, defaults, &compile_metrics)
                        .map(Arc::new)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        });

        let key = MasterKey::load(
            std::env::var("ZATABASE_MASTER_KEY").ok().as_deref(),
            &config.data_dir.join("master.key"),
        )?;
        let auth = Arc::new(Auth::new(&config.auth, &key)?);
        let function_secrets = key.secret_box("function-secrets");
        let (options, embedded) = match &config.database_url {
            Some(url) => (
                url.parse::<PgConnectOptions>()
                    .context("DATABASE_URL is not a Postgres URL")?,
                None,
            ),
            None => {
                let embedded = Embedded::start(&embedded_config(&config)).await?;
                (embedded.connect_options(), Some(embedded))
            }
        };
        let rest = async {
            let db = Db::connect(
                options,
                pool_config(&config, embedded.is_some()),
                limits(&config),
                key,
                &WARM_STATEMENTS,
            )
            .await?;
            db.check_pgvector().await?;
            db.migrate().await.context("applying migrations")?;
            db.warm_up().await;
            let components = compiling.await??;
            let functions = Arc::new(Functions::new(
                db.clone(),
                engine.clone(),
                function_cache,
                metrics.clone(),
                &config.functions,
                config.components.max_memory_mb,
                function_secrets,
            )?);
            let resealed = functions
                .seal_unbound_secrets()
                .await
                .context("sealing function secrets stored unbound")?;
            if resealed > 0 {
                tracing::info!(
                    resealed,
                    "function secrets sealed again, bound to their tenant"
                );
            }
            anyhow::Ok((db, components, functions))
        }
        .await;
        // Whatever failed, the embedded Postgres stops with the start.
        let (db, components, functions) = match rest {
            Ok(parts) => parts,
            Err(e) => {
                if let Some(embedded) = embedded {
                    let _ = embedded.stop().await;
                }
                return Err(e);
            }
        };
        for component in &components {
            tracing::info!(
                component = component.id(),
                cached = component.origin == Origin::Cached,
                load_ms = component.load_time.as_millis() as u64,
                "component loaded"
            );
        }
        let session_listener = tokio::spawn({
            let (auth, pool, metrics) = (auth.clone(), db.platform_pool().clone(), metrics.clone());
            async move { auth.sessions.listen(pool, &metrics).await }
        });
        functions.preload().await;
        functions.tidy_cache().await;
        let function_listener = tokio::spawn({
            let (functions, pool) = (functions.clone(), db.platform_pool().clone());
            async move { functions.listen(pool).await }
        });
        let function_maker = tokio::spawn({
            let functions = functions.clone();
            async move { functions.make_changed_again().await }
        });
        let telemetry_writer = tokio::spawn({
            let (functions, db) = (functions.clone(), db.clone());
            let kept = config.functions.log_lines_kept;
            async move { functions.telemetry().run(db, kept).await }
        });
        // Idle tenant connections, and instances idle past
        // `components.idle_instance_secs` (route groups' and functions').
        let idle_sweeper = tokio::spawn({
            let (db, functions) = (db.clone(), functions.clone());
            let groups = components.clone();
            let idle = Duration::from_secs(config.components.idle_instance_secs);
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(10).min(idle / 2));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    db.sweep_idle();
                    for group in &groups {
                        group.expire_idle(idle);
                    }
                    functions.expire_idle_instances(idle);
                }
            }
        });
        let session_sweeper = tokio::spawn(crate::auth::expiry::run(db.platform_pool().clone()));
        // Compiled components no stored deployment uses any more (pruned
        // versions, deleted functions, uploads that failed after their
        // compile) leave the disk hourly, not only at the next start.
        let cache_tidier = tokio::spawn({
            let functions = functions.clone();
            async move {
                let hour = Duration::from_secs(3600);
                let mut every = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
                loop {
                    every.tick().await;
                    functions.tidy_cache().await;
                }
            }
        });
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "platform started"
        );
        Ok(Self {
            config: Arc::new(config),
            app,
            engine,
            components: components
                .into_iter()
                .map(|c| (c.id().to_owned(), c))
                .collect(),
            db,
            auth,
            functions,
            metrics,
            tasks: Tasks::default(),
            embedded,
            session_listener,
            function_listener,
            function_maker,
            telemetry_writer,
            idle_sweeper,
            session_sweeper,
            cache_tidier,
            _lock: lock,
        })
    }

    /// Closes the pools, then stops the embedded Postgres.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.session_listener.abort();
        self.function_listener.abort();
        self.function_maker.abort();
        self.telemetry_writer.abort();
        match self.db.platform_pool().acquire().await {
            Ok(mut conn) => {
                self.functions.telemetry().flush(&mut conn).await;
            }
            Err(error) => tracing::warn!(%error, "function telemetry not written at shut-down"),
        }
        self.idle_sweeper.abort();
        self.session_sweeper.abort();
        self.cache_tidier.abort();
        self.db.close().await;
        if let Some(embedded) = self.embedded {
            embedded.stop().await?;
            tracing::info!("Postgres stopped");
        }
        Ok(())
    }
}

/// Only one host per data directory: the embedded cluster has one owner.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("zatabase.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "another zatabase is using the data directory {}; stop it or choose another with --data-dir",
            dir.display()
        );
    }
    Ok(file)
}

pub fn postgres_install_dir(config: &Config) -> PathBuf {
    config
        .postgres
        .install_dir
        .clone()
        .unwrap_or_else(install::default_dir)
}

fn embedded_config(config: &Config) -> embedded::Config {
    embedded::Config {
        data_dir: config.data_dir.clone(),
        install_dir: postgres_install_dir(config),
        port: config.postgres.port,
        fsync: config.postgres.fsync,
        max_connections: config.postgres.max_connections,
        // The platform pool and the host's three connections of its own
        // (two listeners, the telemetry writer).
        reserved_connections: config.pool.max_connections + 3,
        shared_buffers: config.postgres.shared_buffers.clone(),
        run_as: config.postgres.run_as.clone(),
        start_timeout: Duration::from_secs(config.postgres.start_timeout_secs),
    }
}

fn pool_config(config: &Config, local_server: bool) -> db::PoolConfig {
    db::PoolConfig {
        platform_max_connections: config.pool.max_connections,
        tenant_max_connections: config.pool.tenant_max_connections,
        acquire_timeout: Duration::from_millis(config.pool.acquire_timeout_ms),
        tenant_idle_timeout: Duration::from_secs(config.pool.tenant_idle_timeout_secs),
        local_server,
    }
}

fn limits(config: &Config) -> Limits {
    Limits {
        statement_timeout: Duration::from_millis(config.sql.statement_timeout_ms),
        max_rows: config.sql.max_rows,
        max_result_bytes: config.sql.max_result_bytes,
        index_build_memory_mb: config.sql.index_build_memory_mb,
    }
}
