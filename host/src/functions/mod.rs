//! Users' functions as this host runs them: checking and compiling an
//! uploaded component, resolving a name to its active deployment, and the
//! compiled components themselves.
//!
//! The functions route group (`guests/functions`) owns the platform tables:
//! it stores each deployment's component by content (sha256) and activates
//! it in one transaction. The host resolves `/fn/:name` from those tables and
//! remembers the answer while it listens to `zatabase_function_changed` (a
//! trigger on `zatabase.functions`; the channel's name is private to the
//! platform, `db::notify`); the route group also tells this host at
//! once (`functions.forget`), so a deleted function is 404 on its next request.
//! A forgotten function read again as it was gets the deployment (linked
//! component, kept instances) this host already made of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::postgres::PgPool;
use wasmtime::component::{Component, Linker, Val};

use crate::caps::log::FunctionLog;
use crate::caps::outbound::{AllowedHost, Egress};
use crate::caps::zatabase::platform::functions::{Bounds as Limits, ComponentInfo, Template};
use crate::caps::{self, Capability};
use crate::config::FunctionsConfig;
use crate::db::notify::{FUNCTION_CHANGED, Listener};
use crate::db::{Db, Tenant};
use crate::dispatch::{self, FunctionContext, HostState, Linking, LoadedComponent};
use crate::engine::Engine;
use crate::engine::cache::{CacheFault, CompileCache, Origin};
use crate::metrics::Metrics;
use crate::secrets::SecretBox;
use telemetry::Telemetry;

pub mod cron;
pub mod scheduler;
pub mod sealing;
pub mod telemetry;
pub mod templates;

/// Active deployments whose components a starting host loads before it
/// listens, and the most time it spends on them.
const PRELOAD_AT_MOST: i64 = 64;
const PRELOAD_WITHIN: Duration = Duration::from_secs(1);
/// Changed functions queued to be made again in the background; past it,
/// their next requests make them.
const MADE_AGAIN_QUEUED: usize = 64;
/// Compiled components kept in memory; past it they are dropped and read
/// again from the on-disk cache when next resolved (a resolved function
/// holds its own).
const COMPILED_AT_MOST: usize = 256;

/// What `/fn` needs of a function, joined with its active deployment.
macro_rules! lookup {
    ($($rest:literal),*) => {
        concat!(
            "SELECT f.id::text AS id, f.name, f.project_id::text AS project_id,
                (SELECT slug FROM zatabase.projects WHERE id = f.project_id) AS project_slug,
                f.environment, f.public, f.timeout_ms, f.memory_mb,
                f.variables::text AS variables, f.secrets::text AS secrets,
                f.allowed_outbound_hosts,
                d.version, d.sha256
            FROM zatabase.functions f
            LEFT JOIN zatabase.function_deployments d ON d.id = f.active_deployment_id ",
            $($rest),*
        )
    };
}

/// By project id, environment and name.
const BY_NAME: &str =
    lookup!("WHERE f.project_id = $1::uuid AND f.environment = $2 AND f.name = $3");
/// By project id, environment and function id.
const BY_ID: &str =
    lookup!("WHERE f.project_id = $1::uuid AND f.environment = $2 AND f.id = $3::uuid");
/// A public function by project (id or slug), environment and name.
const PUBLIC: &str = lookup!(
    "JOIN zatabase.projects p ON p.id = f.project_id
     WHERE (p.slug = $1 OR p.id::text = $1) AND f.environment = $2 AND f.name = $3 AND f.public"
);

/// The statements every request path of `/fn` runs, each with three text
/// parameters: prepared on each new platform connection (`Db::connect`).
pub const STATEMENTS: [&str; 3] = [BY_NAME, BY_ID, PUBLIC];

/// How a request names a function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// By name in a project environment (a caller's token said which).
    Name {
        project_id: String,
        environment: String,
        name: String,
    },
    /// By id in a project environment.
    Id {
        project_id: String,
        environment: String,
        id: String,
    },
    /// A public function by name, its project named by id or slug.
    Public {
        project: String,
        environment: String,
        name: String,
    },
}

/// A function as resolved: its settings and, when deployed, its component.
pub struct Function {
    pub id: String,
    pub name: String,
    pub public: bool,
    /// Its project's slug (slugs never change): a request whose `Host`
    /// names a project's subdomain reaches only that project's functions.
    pub project_slug: String,
    /// None until its first deployment.
    pub deployment: Option<Arc<Deployment>>,
    /// Spin's `spin-base-path` and `spin-matched-route` for it
    /// (`/fn/<name>`, `/fn/<name>/...`), made once rather than per request.
    pub base_path: http::HeaderValue,
    pub matched_route: http::HeaderValue,
}

pub struct Deployment {
    pub version: i32,
    pub component: Arc<LoadedComponent>,
    pub context: Arc<FunctionContext>,
    /// Whether it has served a request: its first is a cold start.
    served: AtomicBool,
}

pub struct Functions {
    db: Arc<Db>,
    engine: Engine,
    cache: CompileCache,
    metrics: Arc<Metrics>,
    limits: Limits,
    resolved: Mutex<Resolved>,
    deployments: Deployments,
    /// Compiled components by sha256 (at most `COMPILED_AT_MOST`).
    compiled: Mutex<HashMap<String, Component>>,
    /// One load of a component at a time: the requests of a burst on a
    /// host that has not loaded it wait for the first one's, rather than
    /// each compiling it.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Compiles (of uploads, and of components not in the cache), one a
    /// core at a time.
    compiling: crate::turns::Turns,
    listening: AtomicBool,
    /// Changed functions to make again ([`Functions::make_changed_again`]),
    /// and the wake-up of the task that does.
    making_again: Mutex<std::collections::VecDeque<String>>,
    made_again_wake: tokio::sync::Notify,
    telemetry: Arc<Telemetry>,
    /// What every function is linked against, built once.
    linker: Linker<HostState>,
    /// Seals secrets at rest, opens them for the function they belong to.
    secrets: SecretBox,
    /// Where functions' outbound HTTP may go, and how.
    egress: Arc<Egress>,
    templates: Vec<templates::Embedded>,
}

/// What this host resolved, by lookup. An answer is remembered only if
/// nothing was forgotten while it was being fetched: a change notified
/// then (a deletion, another version activated) must not be overwritten by
/// the answer read before it.
#[derive(Default)]
struct Resolved {
    by_lookup: HashMap<Lookup, Arc<Function>>,
    /// Counts every forgetting; an answer fetched across one is stale.
    generation: u64,
}

/// When a fetch was started, for [`Resolved::remember`].
#[derive(Debug, Clone, Copy)]
struct Asked(u64);

impl Resolved {
    /// The remembered answer, or when to say the fetch for it started.
    fn get(&self, lookup: &Lookup) -> Result<Arc<Function>, Asked> {
        self.by_lookup
            .get(lookup)
            .cloned()
            .ok_or(Asked(self.generation))
    }

    fn remember(&mut self, asked: Asked, lookup: &Lookup, function: &Arc<Function>) {
        if asked.0 != self.generation {
            return;
        }
        if self.by_lookup.len() > 10_000 {
            self.by_lookup.clear();
        }
        self.by_lookup.insert(lookup.clone(), function.clone());
    }

    /// Forgets the function `id`, or everything.
    fn forget(&mut self, id: Option<&str>) {
        self.generation += 1;
        match id {
            // Ids are UUIDs: the API accepts them in either case.
            Some(id) => self
                .by_lookup
                .retain(|_, function| !function.id.eq_ignore_ascii_case(id)),
            None => self.by_lookup.clear(),
        }
    }
}

/// Everything a function's deployment is made from: its instances, and
/// what they were given, depend on nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Defined {
    function_id: String,
    name: String,
    project_id: String,
    environment: String,
    version: i32,
    sha256: String,
    timeout_ms: i32,
    memory_mb: i32,
    /// As stored (JSON text; secrets sealed).
    variables: String,
    secrets: String,
    allowed_outbound_hosts: Vec<String>,
}

/// How long a deployment nothing resolves to any more is kept for a
/// re-read to find (a change notified for its function, a reconnect of the
/// listener).
const DEPLOYMENT_KEPT_UNUSED: Duration = Duration::from_secs(10);

/// The deployments this host made, by function id, with what each was made
/// from. Forgetting a resolution (every change of a function, whatever it
/// changed, and every reconnect of the listener forgets) does not drop its
/// deployment at once: a function read again as it was gets the same one,
/// its kept instances with it, rather than starting afresh.
#[derive(Default)]
struct Deployments(Mutex<HashMap<String, KeptDeployment>>);

struct KeptDeployment {
    defined: Defined,
    deployment: Arc<Deployment>,
    /// When a read of its function last found it.
    found: std::time::Instant,
}

impl Deployments {
    /// The deployment made from exactly `defined`, if there is one.
    fn find(&self, defined: &Defined) -> Option<Arc<Deployment>> {
        let mut kept = self.0.lock().expect("deployments poisoned");
        Self::prune(&mut kept);
        let found = kept.get_mut(&defined.function_id)?;
        if found.defined != *defined {
            return None;
        }
        found.found = std::time::Instant::now();
        Some(found.deployment.clone())
    }

    /// Keeps `deployment`, in place of what its function had.
    fn keep(&self, defined: Defined, deployment: &Arc<Deployment>) {
        let mut kept = self.0.lock().expect("deployments poisoned");
        kept.insert(
            defined.function_id.clone(),
            KeptDeployment {
                defined,
                deployment: deployment.clone(),
                found: std::time::Instant::now(),
            },
        );
    }

    /// Whether this host serves the function `id`: a deployment of it is
    /// held (by a resolution, which a request made since the function's
    /// last change, or by a request), or was found lately.
    fn made_for(&self, id: &str) -> bool {
        let kept = self.0.lock().expect("deployments poisoned");
        kept.iter().any(|(function_id, kept)| {
            function_id.eq_ignore_ascii_case(id)
                && (Arc::strong_count(&kept.deployment) > 1
                    || kept.found.elapsed() < DEPLOYMENT_KEPT_UNUSED)
        })
    }

    /// Drops the instances of every deployment idle for `idle` or longer.
    fn expire_idle(&self, idle: Duration) {
        let deployments: Vec<Arc<Deployment>> = {
            let kept = self.0.lock().expect("deployments poisoned");
            kept.values().map(|kept| kept.deployment.clone()).collect()
        };
        for deployment in deployments {
            deployment.component.expire_idle(idle);
        }
    }

    /// Drops what no resolution or request holds and no read has found for
    /// a while (a deleted function's, one replaced by a change).
    fn prune(kept: &mut HashMap<String, KeptDeployment>) {
        kept.retain(|_, kept| {
            Arc::strong_count(&kept.deployment) > 1 || kept.found.elapsed() < DEPLOYMENT_KEPT_UNUSED
        });
    }
}

impl Functions {
    pub fn new(
        db: Arc<Db>,
        engine: Engine,
        cache: CompileCache,
        metrics: Arc<Metrics>,
        config: &FunctionsConfig,
        max_memory_mb: u64,
        secrets: SecretBox,
    ) -> anyhow::Result<Self> {
        let linker = dispatch::linker(&engine, &Linking::function())?;
        Ok(Self {
            db,
            engine,
            cache,
            metrics,
            limits: Limits {
                default_timeout_ms: config.timeout_ms,
                max_timeout_ms: config.max_timeout_ms,
                default_memory_mb: config.memory_mb,
                max_memory_mb: u32::try_from(max_memory_mb).unwrap_or(u32::MAX),
                max_deployments: config.max_deployments,
                max_functions: config.max_functions,
            },
            resolved: Mutex::new(Resolved::default()),
            deployments: Deployments::default(),
            compiled: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            compiling: crate::turns::Turns::per_core(),
            listening: AtomicBool::new(false),
            making_again: Mutex::new(std::collections::VecDeque::new()),
            made_again_wake: tokio::sync::Notify::new(),
            telemetry: Arc::new(Telemetry::default()),
            linker,
            secrets,
            egress: Arc::new(Egress::new(
                config.blocked_networks.clone(),
                &config.root_certificates,
            )?),
            templates: templates::load()?,
        })
    }

    /// Seals again, bound to its tenant and name, every secret stored
    /// before secrets were bound (or before they were sealed at all). Runs
    /// at start; a value that does not open is left as it is (and warned of
    /// when its function loads).
    pub async fn seal_unbound_secrets(&self) -> anyhow::Result<usize> {
        let rows: Vec<(String, String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT id::text, project_id::text, environment, secrets FROM zatabase.functions f
             WHERE EXISTS (SELECT 1 FROM jsonb_each_text(f.secrets) e
                           WHERE e.value NOT LIKE 'sealed:v2:%')",
        )
        .fetch_all(self.db.platform_pool())
        .await?;
        let mut sealed = 0;
        for (id, project_id, environment, before) in rows {
            let Ok(mut secrets) =
                serde_json::from_value::<BTreeMap<String, String>>(before.clone())
            else {
                continue;
            };
            let mut changed = false;
            for (name, value) in secrets.iter_mut() {
                if SecretBox::is_sealed(value) {
                    continue;
                }
                let Some(plain) = self.secrets.open_unbound(value) else {
                    continue;
                };
                let context = sealing::secret_context(&project_id, &environment, name);
                // A host of before sealed again what a newer one had
                // sealed bound (it took that for a value in the clear):
                // the bound value is the secret's.
                *value = if self.secrets.open(&plain, &context).is_some() {
                    plain
                } else {
                    self.secrets.seal(&plain, &context)
                };
                changed = true;
                sealed += 1;
            }
            if !changed {
                continue;
            }
            // Unless it changed meanwhile: the next start looks again.
            sqlx::query(
                "UPDATE zatabase.functions SET secrets = $2 WHERE id = $1::uuid AND secrets = $3",
            )
            .bind(&id)
            .bind(serde_json::to_value(&secrets)?)
            .bind(&before)
            .execute(self.db.platform_pool())
            .await?;
        }
        Ok(sealed)
    }

    /// The marketplace's templates.
    pub fn templates(&self) -> Vec<Template> {
        self.templates.iter().map(|t| t.info.clone()).collect()
    }

    /// The component of the template `name`.
    pub fn template_component(&self, name: &str) -> Option<&'static [u8]> {
        self.templates
            .iter()
            .find(|t| t.info.name == name)
            .map(|t| t.wasm)
    }

    /// Drops functions' instances idle for `idle` or longer, and what they
    /// held (a WASI 0.3 function keeps its sockets and handles between
    /// requests).
    pub fn expire_idle_instances(&self, idle: Duration) {
        self.deployments.expire_idle(idle);
    }

    /// Where functions' invocations and log lines go.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Checks that `wasm` is a component this host can run as a function,
    /// and compiles it into the on-disk cache (so activating it costs no
    /// compilation). The error is for the uploader: it names the problem.
    /// `Err` when the host could not check it (its compile cache failed),
    /// which is no fault of the upload's.
    pub async fn prepare(&self, wasm: Vec<u8>) -> anyhow::Result<Result<ComponentInfo, String>> {
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let linker = self.linker.clone();
        let checked = self
            .compiling
            .run(move || inspect(&engine, &cache, &linker, &wasm))
            .await
            .context("checking an uploaded component")??;
        Ok(checked.map(|(info, component)| {
            self.keep_compiled(info.sha256.clone(), component);
            info
        }))
    }

    /// Clears the compile cache of what no component can use any more (see
    /// [`CompileCache::retain`]): at start, once the route groups are loaded.
    pub async fn tidy_cache(&self) {
        let stored: Vec<String> =
            match sqlx::query_scalar("SELECT sha256 FROM zatabase.function_blobs")
                .fetch_all(self.db.platform_pool())
                .await
            {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "compile cache not tidied");
                    return;
                }
            };
        let cache = self.cache.clone();
        let removed =
            tokio::task::spawn_blocking(move || cache.retain(&stored.into_iter().collect()))
                .await
                .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "stale compiled components removed");
        }
    }

    /// Loads the compiled components of the most recently deployed active
    /// deployments (up to `PRELOAD_AT_MOST`) from the on-disk cache, so
    /// that the first request after a restart does not read and map its
    /// component on its own path, as the first one after a deploy does not.
    /// Only cache hits: a component missing there (a new engine, a cleared
    /// cache) is compiled by its first request, not at start. Stops at
    /// `PRELOAD_WITHIN`; returns how many were loaded.
    pub async fn preload(&self) -> usize {
        let started = std::time::Instant::now();
        let hashes: Vec<String> = match sqlx::query_scalar(
            "SELECT d.sha256 FROM zatabase.functions f
             JOIN zatabase.function_deployments d ON d.id = f.active_deployment_id
             GROUP BY d.sha256 ORDER BY max(d.created_at) DESC LIMIT $1",
        )
        .bind(PRELOAD_AT_MOST)
        .fetch_all(self.db.platform_pool())
        .await
        {
            Ok(hashes) => hashes,
            Err(error) => {
                tracing::warn!(%error, "active deployments not preloaded");
                return 0;
            }
        };
        let (engine, cache) = (self.engine.clone(), self.cache.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            hashes
                .into_iter()
                .take_while(|_| started.elapsed() < PRELOAD_WITHIN)
                .filter_map(|sha256| {
                    let component = cache.load_compiled(engine.wasmtime(), &sha256)?;
                    Some((sha256, component))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let count = loaded.len();
        for (sha256, component) in loaded {
            self.keep_compiled(sha256, component);
        }
        tracing::info!(
            count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "function components preloaded"
        );
        count
    }

    /// Forgets what this host resolved for the function `id`.
    pub fn forget(&self, id: &str) {
        self.resolved
            .lock()
            .expect("resolved functions poisoned")
            .forget(Some(id));
    }

    fn forget_all(&self) {
        self.resolved
            .lock()
            .expect("resolved functions poisoned")
            .forget(None);
    }

    /// True for the first request a deployment, as this host made it
    /// (compiled or taken from the cache, then linked), serves: a cold
    /// start. A function re-read unchanged keeps the deployment already
    /// made, so only a real load counts: a version activated again, or
    /// made again with changed settings or after going unused, does.
    pub fn cold(&self, deployment: &Deployment) -> bool {
        !deployment.served.swap(true, Ordering::Relaxed)
    }

    /// The function `lookup` names, if there is one.
    pub async fn resolve(&self, lookup: &Lookup) -> anyhow::Result<Option<Arc<Function>>> {
        let asked = match self
            .resolved
            .lock()
            .expect("resolved functions poisoned")
            .get(lookup)
        {
            Ok(found) => return Ok(Some(found)),
            Err(asked) => asked,
        };
        let Some(function) = self.fetch(lookup).await? else {
            return Ok(None);
        };
        let function = Arc::new(function);
        // Remembered only while a notification of its next change would
        // reach this host.
        if self.listening.load(Ordering::Acquire) {
            self.resolved
                .lock()
                .expect("resolved functions poisoned")
                .remember(asked, lookup, &function);
        }
        Ok(Some(function))
    }

    async fn fetch(&self, lookup: &Lookup) -> anyhow::Result<Option<Function>> {
        let pool = self.db.platform_pool();
        let (statement, keys) = match lookup {
            Lookup::Name {
                project_id,
                environment,
                name,
            } => (BY_NAME, [project_id, environment, name]),
            Lookup::Id {
                project_id,
                environment,
                id,
            } => {
                if uuid::Uuid::parse_str(id).is_err() {
                    return Ok(None);
                }
                (BY_ID, [project_id, environment, id])
            }
            Lookup::Public {
                project,
                environment,
                name,
            } => (PUBLIC, [project, environment, name]),
        };
        let row = sqlx::query(statement)
            .bind(keys[0])
            .bind(keys[1])
            .bind(keys[2])
            .fetch_optional(pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id")?;
        let name: String = row.try_get("name")?;
        let deployment = match row.try_get::<Option<String>, _>("sha256")? {
            None => None,
            Some(sha256) => {
                let defined = Defined {
                    function_id: id.clone(),
                    name: name.clone(),
                    project_id: row.try_get("project_id")?,
                    environment: row.try_get("environment")?,
                    version: row.try_get("version")?,
                    sha256,
                    timeout_ms: row.try_get("timeout_ms")?,
                    memory_mb: row.try_get("memory_mb")?,
                    variables: row.try_get("variables")?,
                    secrets: row.try_get("secrets")?,
                    allowed_outbound_hosts: row.try_get("allowed_outbound_hosts")?,
                };
                Some(self.deployment(defined).await?)
            }
        };
        Ok(Some(Function {
            base_path: http::HeaderValue::try_from(format!("/fn/{name}"))?,
            matched_route: http::HeaderValue::try_from(format!("/fn/{name}/..."))?,
            id,
            name,
            public: row.try_get("public")?,
            project_slug: row.try_get("project_slug")?,
            deployment,
        }))
    }

    /// The deployment `defined` describes: the one this host already made
    /// of it when a function reads as it did, so that a re-read after a
    /// change that left it alone (or after a reconnect of the listener, or
    /// by another lookup of the same function) finds its kept instances.
    async fn deployment(&self, defined: Defined) -> anyhow::Result<Arc<Deployment>> {
        if let Some(kept) = self.deployments.find(&defined) {
            return Ok(kept);
        }
        let deployment = Arc::new(self.load_deployment(&defined).await?);
        self.deployments.keep(defined, &deployment);
        Ok(deployment)
    }

    async fn load_deployment(&self, defined: &Defined) -> anyhow::Result<Deployment> {
        let name = &defined.name;
        let started = std::time::Instant::now();
        let component = self.component(&defined.sha256).await?;
        let compiled = started.elapsed();
        // Within what this host allows now: a maximum the operator lowered
        // holds for the functions stored above it too.
        let timeout = Duration::from_millis(
            u64::try_from(defined.timeout_ms)?.min(u64::from(self.limits.max_timeout_ms)),
        );
        let memory_mb = u64::try_from(defined.memory_mb)?.min(u64::from(self.limits.max_memory_mb));
        let stubbed = linker_for(&self.engine, &self.linker, &component)?;
        let loaded = dispatch::load_function(
            stubbed.as_ref().unwrap_or(&self.linker),
            &component,
            name,
            timeout,
            memory_mb,
            &self.metrics,
        )
        .with_context(|| format!("linking function `{name}`"))?;
        tracing::debug!(
            function = %name,
            load_us = compiled.as_micros() as u64,
            link_us = loaded.load_time.as_micros() as u64,
            "function loaded"
        );
        let mut variables: HashMap<String, String> = serde_json::from_str(&defined.variables)?;
        let secrets: HashMap<String, String> = serde_json::from_str(&defined.secrets)?;
        for (key, sealed) in secrets {
            let context = sealing::secret_context(&defined.project_id, &defined.environment, &key);
            match self.secrets.open(&sealed, &context) {
                Some(value) => {
                    variables.insert(key, value);
                }
                None => tracing::warn!(
                    function = %name,
                    secret = %key,
                    "a secret does not open under this host's master key"
                ),
            }
        }
        Ok(Deployment {
            version: defined.version,
            component: Arc::new(loaded),
            context: Arc::new(FunctionContext {
                tenant: Arc::new(Tenant::for_environment(
                    &defined.project_id,
                    &defined.environment,
                )?),
                variables,
                log: FunctionLog {
                    function_id: Arc::from(defined.function_id.as_str()),
                    telemetry: self.telemetry.clone(),
                },
                allowed_outbound_hosts: defined
                    .allowed_outbound_hosts
                    .iter()
                    .filter_map(|entry| AllowedHost::parse(entry))
                    .collect(),
                egress: self.egress.clone(),
            }),
            served: AtomicBool::new(false),
        })
    }

    /// The compiled component of `sha256`: in memory, in the on-disk cache,
    /// or compiled from the stored bytes.
    async fn component(&self, sha256: &str) -> anyhow::Result<Component> {
        if let Some(component) = self.compiled(sha256) {
            return Ok(component);
        }
        let gate = self
            .loading
            .lock()
            .expect("loading components poisoned")
            .entry(sha256.to_owned())
            .or_default()
            .clone();
        let loading = gate.lock().await;
        // Loaded by the request this one waited for.
        if let Some(component) = self.compiled(sha256) {
            return Ok(component);
        }
        let loaded = self.load(sha256).await;
        if let Ok(component) = &loaded {
            self.keep_compiled(sha256.to_owned(), component.clone());
        }
        drop(loading);
        self.loading
            .lock()
            .expect("loading components poisoned")
            .remove(sha256);
        loaded
    }

    async fn load(&self, sha256: &str) -> anyhow::Result<Component> {
        if let Some(component) = self.cache.load_compiled(self.engine.wasmtime(), sha256) {
            return Ok(component);
        }
        let wasm: Vec<u8> =
            sqlx::query_scalar("SELECT wasm FROM zatabase.function_blobs WHERE sha256 = $1")
                .bind(sha256)
                .fetch_one(self.db.platform_pool())
                .await
                .with_context(|| format!("loading component {sha256}"))?;
        let (engine, cache) = (self.engine.clone(), self.cache.clone());
        Ok(self
            .compiling
            .run(move || cache.load(engine.wasmtime(), &wasm))
            .await??
            .0)
    }

    fn compiled(&self, sha256: &str) -> Option<Component> {
        self.compiled
            .lock()
            .expect("compiled components poisoned")
            .get(sha256)
            .cloned()
    }

    fn keep_compiled(&self, sha256: String, component: Component) {
        let mut compiled = self.compiled.lock().expect("compiled components poisoned");
        if compiled.len() >= COMPILED_AT_MOST && !compiled.contains_key(&sha256) {
            compiled.clear();
        }
        compiled.insert(sha256, component);
    }

    /// Listens for changed functions until the process ends, reconnecting
    /// after a failure (and remembering nothing meanwhile).
    pub async fn listen(&self, pool: PgPool) {
        loop {
            if let Err(error) = self.listen_once(&pool).await {
                tracing::warn!(%error, "function listener failed; resolving every request until it is back");
            }
            self.listening.store(false, Ordering::Release);
            self.forget_all();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = Listener::start(pool, &[FUNCTION_CHANGED], &self.metrics).await?;
        self.forget_all();
        self.listening.store(true, Ordering::Release);
        while let Some((_, function_id)) = listener.next().await? {
            // Forgotten at once: the next request reads what changed (a
            // deletion is 404 from then on). A function this host serves is
            // also made again in the background, so that request does not
            // wait for a new version's compile.
            let served_here = self.deployments.made_for(&function_id);
            self.forget(&function_id);
            if served_here {
                self.make_again(function_id);
            }
        }
        Ok(())
    }

    /// Queues the function `id` to be made again by
    /// [`Functions::make_changed_again`]; a function already queued is
    /// read when its turn comes, its latest change with it.
    fn make_again(&self, id: String) {
        let mut queue = self.making_again.lock().expect("making again poisoned");
        if queue.len() < MADE_AGAIN_QUEUED && !queue.contains(&id) {
            queue.push_back(id);
            self.made_again_wake.notify_one();
        }
        // Past the bound, its next request makes it.
    }

    /// Makes changed functions this host serves again, one at a time (one
    /// compile turn at most), until the process ends: each read as a
    /// request would read it, compiled and linked, and kept for the
    /// request that finds it.
    pub async fn make_changed_again(&self) {
        loop {
            let next = self
                .making_again
                .lock()
                .expect("making again poisoned")
                .pop_front();
            match next {
                Some(id) => {
                    if let Err(error) = self.make_again_once(&id).await {
                        // Its next request tries again, and answers for it.
                        tracing::warn!(function_id = %id, error = format!("{error:#}"), "making a changed function again");
                    }
                }
                None => self.made_again_wake.notified().await,
            }
        }
    }

    async fn make_again_once(&self, id: &str) -> anyhow::Result<()> {
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT project_id::text, environment FROM zatabase.functions WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_optional(self.db.platform_pool())
        .await?;
        let Some((project_id, environment)) = found else {
            // Deleted.
            return Ok(());
        };
        let lookup = Lookup::Id {
            project_id,
            environment,
            id: id.to_owned(),
        };
        // Fetched, not remembered as resolved: what keeps it is its
        // deployment, until a request finds it (or, unused, it goes).
        if let Some(function) = self.fetch(&lookup).await? {
            let version = function.deployment.as_ref().map(|d| d.version);
            tracing::info!(function_id = %id, version, "changed function made again");
        }
        Ok(())
    }
}

/// The Spin interfaces this host implements; a function importing another
/// of Spin's still loads, and each call of it fails with a clear message
/// (see [`linker_for`]).
const SPIN_PROVIDED: [&str; 7] = [
    "fermyon:spin/variables@2.0.0",
    "fermyon:spin/key-value@2.0.0",
    "spin:postgres/postgres@3.0.0",
    "spin:variables/variables@3.0.0",
    "spin:key-value/key-value@3.0.0",
    "spin:postgres/postgres@4.2.0",
    "wasi:config/store@0.2.0-draft-2024-09-27",
];

/// Whether an import is one of the interfaces of Spin's platform this host
/// does not implement (Redis, MySQL, SQLite, LLM, MQTT, `wasi:keyvalue`,
/// `wasi:config`, newer versions, ...). An older version of one it does
/// implement (spin-sdk 5's `pg4` imports postgres@4.0.0) is provided by the
/// newer one: wasmtime's linker matches semver-compatible names, and a
/// version adds to the one before it.
fn unsupported_spin(name: &str) -> bool {
    const SPINS: [&str; 4] = ["fermyon:spin/", "spin:", "wasi:keyvalue/", "wasi:config/"];
    SPINS.iter().any(|prefix| name.starts_with(prefix))
        && !SPIN_PROVIDED
            .iter()
            .any(|provided| provides(provided, name))
}

/// Whether `provided` (`package/interface@x.y.z`) serves an import of
/// `wanted`: the same interface, the same major version (1 or more), and
/// no newer; a version with a pre-release tag only itself.
fn provides(provided: &str, wanted: &str) -> bool {
    /// `package/interface` and `[major, minor, patch]`.
    fn split(name: &str) -> Option<(&str, [u64; 3])> {
        let (interface, version) = name.split_once('@')?;
        let mut parts = version.split('.').map(|part| part.parse::<u64>().ok());
        let version = [parts.next()??, parts.next()??, parts.next()??];
        parts.next().is_none().then_some((interface, version))
    }
    match (split(provided), split(wanted)) {
        (Some((have, have_version)), Some((want, want_version))) => {
            have == want
                && have_version[0] > 0
                && want_version[0] == have_version[0]
                && want_version <= have_version
        }
        _ => provided == wanted,
    }
}

/// `linker`, or when `component` imports Spin interfaces this host does
/// not implement, a copy of it where every function of those interfaces
/// fails with "not supported on this platform" when called (a spin-sdk
/// component imports what its crate uses, so an unused Redis binding must
/// not stop it from loading).
fn linker_for(
    engine: &Engine,
    linker: &Linker<HostState>,
    component: &Component,
) -> anyhow::Result<Option<Linker<HostState>>> {
    use wasmtime::component::types::ComponentItem;
    let wasmtime = engine.wasmtime();
    let ty = component.component_type();
    let unsupported: Vec<(String, ComponentItem)> = ty
        .imports(wasmtime)
        .filter(|(name, _)| unsupported_spin(name))
        .map(|(name, item)| (name.to_owned(), item.ty))
        .collect();
    if unsupported.is_empty() {
        return Ok(None);
    }
    let mut linker = linker.clone();
    for (interface, item) in unsupported {
        let ComponentItem::ComponentInstance(instance) = item else {
            continue;
        };
        let mut defined = linker.instance(&interface)?;
        for (name, export) in instance.exports(wasmtime) {
            match export.ty {
                ComponentItem::ComponentFunc(func) => {
                    let message = format!(
                        "`{interface}#{name}` is not supported on this platform (functions get \
                         Spin's variables, key-value and postgres)"
                    );
                    // Answered as the function's own error where its type
                    // has one that carries a message (Spin's `other`, ...),
                    // so the guest can handle it; else a trap naming it.
                    let is_async = func.async_();
                    let answer = move |results: &mut [Val]| match refusal(&func, &message) {
                        Some(error) if results.len() == 1 => {
                            results[0] = error;
                            Ok(())
                        }
                        _ => Err(wasmtime::format_err!("{message}")),
                    };
                    // An `async func` (Spin 3.x interfaces) needs a host
                    // function of the concurrent kind.
                    if is_async {
                        defined.func_new_concurrent(name, move |_, _, _, results| {
                            let answered = answer(results);
                            Box::pin(async move { answered })
                        })?;
                    } else {
                        defined.func_new(name, move |_, _, _, results| answer(results))?;
                    }
                }
                ComponentItem::Resource(_) => {
                    defined.resource(
                        name,
                        wasmtime::component::ResourceType::host::<()>(),
                        |_, _| Ok(()),
                    )?;
                }
                _ => {}
            }
        }
    }
    Ok(Some(linker))
}

/// The error value a stubbed function answers with `message`, when its
/// result is `result<_, E>` and `E` can carry a message: a string, or a
/// variant with a string case (Spin's `other`, else `runtime-error` or
/// `io`, else the first).
fn refusal(func: &wasmtime::component::types::ComponentFunc, message: &str) -> Option<Val> {
    use wasmtime::component::types::Type;
    let mut results = func.results();
    let (Some(Type::Result(result)), None) = (results.next(), results.next()) else {
        return None;
    };
    let error = match result.err()? {
        Type::String => Val::String(message.to_owned()),
        Type::Variant(variant) => {
            let case = variant
                .cases()
                .filter(|case| matches!(case.ty, Some(Type::String)))
                .min_by_key(|case| match case.name {
                    "other" => 0,
                    "runtime-error" | "io" => 1,
                    _ => 2,
                })?;
            Val::Variant(
                case.name.to_owned(),
                Some(Box::new(Val::String(message.to_owned()))),
            )
        }
        _ => return None,
    };
    Some(Val::Result(Err(Some(Box::new(error)))))
}

/// The first eight bytes of a WebAssembly binary: magic, then the version
/// (core modules) or version and layer (components).
const CORE_MODULE: [u8; 8] = *b"\0asm\x01\0\0\0";
const COMPONENT: [u8; 8] = *b"\0asm\x0d\0\x01\0";

/// Checks and compiles an uploaded component (blocking: compilation): the
/// component with what it is, or why it is refused (the uploader's
/// mistake); `Err` when the host failed (its compile cache).
fn inspect(
    engine: &Engine,
    cache: &CompileCache,
    linker: &Linker<HostState>,
    wasm: &[u8],
) -> anyhow::Result<Result<(ComponentInfo, Component), String>> {
    let loaded = match wasm.get(..8) {
        Some(header) if header == COMPONENT => cache.load(engine.wasmtime(), wasm),
        _ => return Ok(Err(refused_header(wasm))),
    };
    let (component, origin) = match loaded {
        Ok(loaded) => loaded,
        Err(e) if e.downcast_ref::<CacheFault>().is_some() => return Err(e),
        Err(e) => {
            return Ok(Err(format!(
                "the component does not validate: {}",
                chain(&e)
            )));
        }
    };
    let sha256 = hex::encode(Sha256::digest(wasm));
    let checked = check(engine, linker, &component).map(|(handler, imports)| ComponentInfo {
        sha256: sha256.clone(),
        size: wasm.len() as u64,
        handler,
        imports,
        min_memory_mb: min_memory_mb(&component),
    });
    // A refused upload leaves nothing in the compile cache.
    if checked.is_err() && origin == Origin::Compiled {
        cache.remove(&sha256);
    }
    Ok(checked.map(|info| (info, component)))
}

/// Why an upload without a component's header is refused.
fn refused_header(wasm: &[u8]) -> String {
    match wasm.get(..8) {
        Some(header) if header == CORE_MODULE => "this is a core WebAssembly module, not a \
             component; build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
            .to_owned(),
        Some(header) if header.starts_with(b"\0asm") => {
            "this WebAssembly binary has a version this host does not know".to_owned()
        }
        _ => "the body is not a WebAssembly component (no `\\0asm` header)".to_owned(),
    }
}

/// What `inspect` asks of a compiled component: that it exports a
/// `wasi:http` handler (which one is returned, with its imports) and that
/// this host can link and pre-instantiate it.
fn check(
    engine: &Engine,
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<(String, Vec<String>), String> {
    let ty = component.component_type();
    let wasmtime = engine.wasmtime();
    let exports: Vec<String> = ty
        .exports(wasmtime)
        .map(|(name, _)| name.to_owned())
        .collect();
    let Some(handler) = exports.iter().find(|name| {
        name.starts_with("wasi:http/incoming-handler@0.2.") || *name == "wasi:http/handler@0.3.0"
    }) else {
        return Err(format!(
            "the component exports neither `wasi:http/incoming-handler@0.2.x` (WASI 0.2, \
             spin-sdk 5) nor `wasi:http/handler@0.3.0` (WASI 0.3, spin-sdk 7){}",
            if exports.is_empty() {
                String::new()
            } else {
                format!("; it exports: {}", exports.join(", "))
            }
        ));
    };
    let imports: Vec<String> = ty
        .imports(wasmtime)
        .map(|(name, _)| name.to_owned())
        .collect();
    let linking = Linking::function();
    caps::check_imports(wasmtime, component, "function", linking.grants).map_err(|e| {
        e.to_string().replace(
            "; grant them in spin.toml under [component.function.tool.zatabase] capabilities",
            &format!(
                " (functions may import {} and Spin's variables)",
                [Capability::Session, Capability::Sql, Capability::Log]
                    .map(|c| c.interface())
                    .join(", ")
            ),
        )
    })?;
    let stubbed = linker_for(engine, linker, component)
        .map_err(|e| format!("the component cannot run here: {}", chain(&e)))?;
    dispatch::pre_instantiate(stubbed.as_ref().unwrap_or(linker), component)
        .map_err(|e| format!("the component cannot run here: {}", chain(&e)))?;
    Ok((handler.clone(), imports))
}

/// The memory an instance of `component` starts with, in MiB rounded up:
/// its largest linear memory's initial size (0 when that cannot be told,
/// for a component that instantiates a core module it imports).
fn min_memory_mb(component: &Component) -> u32 {
    const PAGE: u64 = 64 * 1024;
    let pages = component
        .resources_required()
        .and_then(|required| required.max_initial_memory_size)
        .unwrap_or(0);
    u32::try_from(pages.saturating_mul(PAGE).div_ceil(1024 * 1024)).unwrap_or(u32::MAX)
}

/// An error and its causes on one line.
fn chain(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(id: &str, name: &str) -> Arc<Function> {
        Arc::new(Function {
            id: id.to_owned(),
            name: name.to_owned(),
            public: false,
            project_slug: "p".to_owned(),
            deployment: None,
            base_path: http::HeaderValue::from_static("/fn/x"),
            matched_route: http::HeaderValue::from_static("/fn/x/..."),
        })
    }

    fn ask(resolved: &Resolved, lookup: &Lookup) -> Asked {
        match resolved.get(lookup) {
            Ok(_) => panic!("{lookup:?} is remembered"),
            Err(asked) => asked,
        }
    }

    fn by_name(name: &str) -> Lookup {
        Lookup::Name {
            project_id: "p".to_owned(),
            environment: "live".to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn older_versions_of_what_is_provided_are_provided() {
        for provided in [
            "spin:postgres/postgres@4.0.0",
            "spin:postgres/postgres@4.1.0",
            "spin:postgres/postgres@4.2.0",
            "spin:postgres/postgres@3.0.0",
            "fermyon:spin/variables@2.0.0",
        ] {
            assert!(!unsupported_spin(provided), "{provided}");
        }
        for unsupported in [
            // Newer than what the host has: it may use what it lacks.
            "spin:postgres/postgres@4.3.0",
            "spin:postgres/postgres@5.0.0",
            "spin:postgres/postgres@4.0.0-rc1",
            "fermyon:spin/redis@2.0.0",
            "spin:sqlite/sqlite@3.0.0",
            "wasi:keyvalue/store@0.2.0-draft2",
            "wasi:config/store@0.2.0-draft-2024-10-01",
        ] {
            assert!(unsupported_spin(unsupported), "{unsupported}");
        }
        assert!(!unsupported_spin("wasi:http/types@0.2.0"));
        assert!(!unsupported_spin(
            "wasi:config/store@0.2.0-draft-2024-09-27"
        ));
    }

    #[test]
    fn an_answer_fetched_across_a_change_is_not_remembered() {
        let mut resolved = Resolved::default();
        let lookup = by_name("hello");
        let asked = ask(&resolved, &lookup);
        // The function is deleted (or another version activated) while the
        // first request still reads and compiles what it was.
        resolved.forget(Some("0b7e8f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"));
        resolved.remember(
            asked,
            &lookup,
            &function("0b7e8f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "hello"),
        );
        assert!(resolved.get(&lookup).is_err(), "a stale answer was kept");
        // Asked again after the change, the answer is kept until the next.
        let asked = ask(&resolved, &lookup);
        resolved.remember(
            asked,
            &lookup,
            &function("0b7e8f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "hello"),
        );
        assert!(resolved.get(&lookup).is_ok());
        // Forgetting everything (the listener reconnecting) counts too.
        let other = by_name("other");
        let asked = ask(&resolved, &other);
        resolved.forget(None);
        resolved.remember(asked, &other, &function("1", "other"));
        assert!(resolved.get(&other).is_err());
        assert!(resolved.get(&lookup).is_err());
    }

    #[test]
    fn a_function_is_forgotten_whatever_case_its_id_is_named_in() {
        let mut resolved = Resolved::default();
        let lookup = by_name("hello");
        let asked = ask(&resolved, &lookup);
        resolved.remember(
            asked,
            &lookup,
            &function("0b7e8f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "hello"),
        );
        resolved.forget(Some("0B7E8F3A-1C2D-4E5F-8A9B-0C1D2E3F4A5B"));
        assert!(resolved.get(&lookup).is_err());
    }
}
