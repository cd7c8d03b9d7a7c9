//! From an HTTP request to a component's response, independent of any socket.
//!
//! Each component is compiled once and pre-instantiated ([`LoadedComponent`]).
//! A request runs in an instance in a [`wasmtime::Store`] holding only that
//! request's state: a fresh one, or one kept from an earlier request that
//! the same instance may serve ([`WarmPool`]: a WASI 0.3 function's next
//! request, a route group's next request from the same caller in the same
//! tenant), so nothing a guest keeps crosses tenants or callers.
//! A request is bounded twice: an epoch deadline stops a guest spinning in
//! its own code, a wall-clock timeout one waiting on the host.

mod coalesce;
pub mod output;
pub mod route;

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use futures::FutureExt;
use http_body_util::BodyExt;
use std::collections::BTreeSet;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::auth::access::SqlGrant;
use crate::auth::{Access, Auth};
use crate::caps::zatabase::platform::session::Principal;
use crate::caps::{
    self, Capability,
    auth::AuthState,
    functions::FunctionsState,
    key_value::KeyValueState,
    log::FunctionLog,
    log::{LogBudget, LogState},
    outbound::{AllowedHost, Egress, OutboundHttp},
    platform_db::PlatformDbState,
    postgres::PostgresState,
    session::SessionState,
    sql::SqlState,
    variables::VariablesState,
};
use crate::db::{Db, PlatformSql, Tenant, TenantSql};
use crate::engine::Engine;
use crate::engine::cache::{CompileCache, Origin};
use crate::engine::limits::{MemoryLimitExceeded, MemoryLimiter};
use crate::functions::Functions;
use crate::manifest::ComponentSpec;
use crate::metrics::Metrics;
use output::{GuestOutput, RequestTag};

/// What a function may do in its own tenant: everything.
static TENANT_ADMIN: std::sync::LazyLock<Arc<Access>> =
    std::sync::LazyLock::new(|| Arc::new(Access::admin()));

/// Epoch ticks a guest runs before it yields to the other tasks.
const YIELD_TICKS: u64 = 2;

/// A store's data: WASI, wasi:http and each capability's per-request state.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHttp,
    limiter: MemoryLimiter,
    pub session: SessionState,
    pub sql: SqlState,
    pub platform_db: PlatformDbState,
    pub auth: AuthState,
    pub functions: FunctionsState,
    pub variables: VariablesState,
    pub postgres: PostgresState,
    pub key_value: KeyValueState,
    pub log: LogState,
    /// What the guest's stdout and stderr lines are tagged with.
    output_tag: RequestTag,
    /// Epoch ticks the current request has used, and may use.
    ticks_used: u64,
    tick_budget: u64,
}

impl HostState {
    /// Makes a kept instance's state the next request's: its caller, its
    /// request id, a fresh deadline. What belongs to the function (tenant,
    /// variables, allow-list, limits) stays.
    fn begin(&mut self, ctx: &RequestContext) {
        if ctx.function.is_none() {
            // A route group's SQL runs under the caller's grants as they
            // are now (the tenant is the same: see `Owner`).
            self.sql.access = ctx.access.clone();
        }
        self.session = SessionState {
            principal: ctx.principal.clone(),
            access: ctx.access.clone(),
            request_id: ctx.request_id.clone(),
        };
        self.auth.client = ctx.client;
        self.sql.body_streams = false;
        self.log.request_id = ctx.request_id.clone();
        self.log.budget.refill();
        self.output_tag.set(ctx.request_id.clone());
        self.ticks_used = 0;
    }

    /// Whether the guest holds no host resource (an open transaction, a
    /// stream, ...) between requests: only then may its instance serve
    /// another.
    fn holds_nothing(&self) -> bool {
        self.table.is_empty()
            && self.sql.table.is_empty()
            && self.platform_db.table.is_empty()
            && self.postgres.table.is_empty()
            && self.key_value.table.is_empty()
    }

    /// Whether the guest holds no open transaction: an idle instance that
    /// did would keep its pooled connection in a transaction, holding back
    /// Postgres's vacuum for every tenant, for as long as it waits.
    fn holds_no_transaction(&self) -> bool {
        self.sql.table.is_empty() && self.platform_db.table.is_empty()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// What every request's capabilities reach.
#[derive(Clone)]
pub struct Services {
    pub db: Arc<Db>,
    pub auth: Arc<Auth>,
    pub functions: Arc<Functions>,
    /// Where a guest's run after its answer goes on.
    pub tasks: crate::tasks::Tasks,
}

/// Marks a request whose `Authorization` header is not a credential of the
/// platform's: the guest gets it as sent. Set only by the functions gateway,
/// for a public function.
#[derive(Debug, Clone, Copy)]
pub struct ForeignAuthorization;

/// What the host established about a request before dispatching it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    /// The authenticated caller, its session checked live.
    pub principal: Option<Principal>,
    /// What the caller may do in its project (nothing when anonymous).
    pub access: Arc<Access>,
    pub client: std::net::IpAddr,
    /// Set when the request runs a user's function.
    pub function: Option<Arc<FunctionContext>>,
}

impl RequestContext {
    /// The context of a request from `caller` (none: anonymous, no
    /// permissions), running a function or not.
    pub fn new(
        request_id: Arc<str>,
        caller: Option<(Principal, Arc<Access>)>,
        client: std::net::IpAddr,
        function: Option<Arc<FunctionContext>>,
    ) -> Self {
        let (principal, access) = match caller {
            Some((principal, access)) => (Some(principal), access),
            None => (None, Arc::new(Access::none())),
        };
        Self {
            request_id,
            principal,
            access,
            client,
            function,
        }
    }
}

/// What a user's function runs with: its own tenant, whoever calls it, and
/// its variables (secrets included: they are the function's own; its
/// `Debug` names them without their values).
pub struct FunctionContext {
    pub tenant: Arc<Tenant>,
    pub variables: std::collections::HashMap<String, String>,
    /// Where its outbound HTTP may go (nowhere when empty).
    pub allowed_outbound_hosts: Arc<[AllowedHost]>,
    /// How it gets there: the networks it never reaches whatever that
    /// list says, the certificate authorities it trusts.
    pub egress: Arc<Egress>,
    /// Its own logs.
    pub log: FunctionLog,
}

impl std::fmt::Debug for FunctionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.variables.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("FunctionContext")
            .field("tenant", &self.tenant)
            .field("variables", &names)
            .field("allowed_outbound_hosts", &self.allowed_outbound_hosts)
            .finish_non_exhaustive()
    }
}

/// Limits applied when the manifest names none.
#[derive(Debug, Clone, Copy)]
pub struct ComponentDefaults {
    pub timeout: Duration,
    pub memory_mb: u64,
    /// `components.max_memory_mb`: a component naming more is refused at
    /// load (the engine's slots are no larger).
    pub max_memory_mb: u64,
}

/// The instances of one component that may go on working after their
/// response at once (a WASI 0.3 guest's spawned work), each until it ends
/// or its request's deadline: each holds an instance slot of the host's.
const MAX_LINGERING: usize = 16;

/// A compiled, linked, pre-instantiated component.
pub struct LoadedComponent {
    /// The id, shared by every request's log and metric labels.
    pub name: Arc<str>,
    /// Exact paths served without authentication.
    pub public_routes: Vec<String>,
    /// The largest request body its routes take, when not the host's.
    pub body_limit: Option<usize>,
    instantiations: prometheus_client::metrics::histogram::Histogram,
    /// The request series its responses are counted in: the route group's
    /// own, or `fn` for every user's function.
    pub requests: Arc<crate::metrics::GroupSeries>,
    pre: HandlerPre,
    /// A route group's buffered entry point (never a user's function's:
    /// theirs is `wasi:http` alone).
    route: Option<route::Indices>,
    /// Instances kept between requests.
    warm: WarmPool,
    /// Turns for WASI 0.3 instances at work after their response.
    lingering: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
    memory_bytes: usize,
    /// The grants through which its `sql` reaches the caller's tenant.
    sql_grants: Arc<[SqlGrant]>,
    pub origin: Origin,
    pub load_time: Duration,
}

impl LoadedComponent {
    pub fn id(&self) -> &str {
        &self.name
    }

    /// The wall-clock limit of one of its requests.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Drops its instances idle for `idle` or longer.
    pub fn expire_idle(&self, idle: Duration) {
        drop(self.warm.expire(idle));
    }
}

/// An instance between requests, with how many it has served.
pub struct Warm {
    store: Store<HostState>,
    handler: Handler,
    served: u32,
    /// The requests it may serve next.
    owner: Owner,
}

/// An instantiated `wasi:http` handler of either version.
enum Handler {
    /// With a route group's buffered entry point, when it has one.
    P2(
        wasmtime_wasi_http::p2::bindings::Proxy,
        Option<route::RouteEntry>,
    ),
    P3(wasmtime_wasi_http::p3::bindings::Service),
}

/// Whose requests a kept instance may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// Any request of its deployment (a WASI 0.3 function: the tenant's
    /// own code, serving the tenant's callers, as in Workers).
    Deployment,
    /// One caller's requests in one tenant (a route group: platform code
    /// serving every tenant, so what it holds between requests must not
    /// reach anyone else).
    Caller {
        user_id: String,
        project_id: String,
        environment: String,
    },
}

impl Owner {
    /// Who may share an instance with the request `ctx` describes; `None`
    /// when its instance must be its own (a WASI 0.2 function, whose
    /// authors expect Spin's fresh instance per request; an anonymous
    /// request to a route group).
    ///
    /// Only a user's function is shared by its deployment's requests: a
    /// route group acts in its caller's tenant, so even a WASI 0.3 one
    /// (none is built so today) is kept per caller.
    fn of(pre: &HandlerPre, ctx: &RequestContext) -> Option<Owner> {
        match (pre, &ctx.function, &ctx.principal) {
            (HandlerPre::P3(_), Some(_), _) => Some(Owner::Deployment),
            (HandlerPre::P2(_), Some(_), _) | (_, None, None) => None,
            (_, None, Some(principal)) => Some(Owner::Caller {
                user_id: principal.user_id.clone(),
                project_id: principal.project_id.clone(),
                environment: principal.environment.clone(),
            }),
        }
    }
}

/// Requests one instance serves before it is dropped (as `wasmtime serve`
/// does), bounding what a guest can accumulate.
const MAX_REUSE: u32 = 128;
/// Instances kept idle per component, and in the whole host: each holds
/// an instance slot and its resident memory.
const WARM_PER_COMPONENT: usize = 32;
const WARM_IN_HOST: usize = 64;
static WARM_TOTAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A component's idle instances. An instance that answered cleanly serves a
/// later request its [`Owner`] allows, one request at a time, with that
/// request's caller, request id and deadline swapped in; one that trapped
/// or ran out of time is never reused, nor a route group's that still holds
/// a host resource (a function may keep its own, as a Worker keeps its
/// globals: they are its tenant's). One idle past the host's
/// `components.idle_instance_secs` is dropped ([`WarmPool::expire`]), and
/// what it held with it.
#[derive(Default)]
pub struct WarmPool(std::sync::Mutex<Vec<(Instant, Warm)>>);

impl WarmPool {
    /// The most recently kept instance `owner` may use.
    fn take(&self, owner: &Owner) -> Option<Warm> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = idle.iter().rposition(|(_, warm)| &warm.owner == owner)?;
        let (_, warm) = idle.remove(at);
        WARM_TOTAL.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Some(warm)
    }

    fn keep(&self, warm: Warm) {
        if warm.served >= MAX_REUSE {
            return;
        }
        let kept = (Instant::now(), warm);
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= WARM_PER_COMPONENT {
            // The least recently kept makes room.
            idle.remove(0);
            idle.push(kept);
            return;
        }
        let total = WARM_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if total >= WARM_IN_HOST {
            WARM_TOTAL.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        idle.push(kept);
    }

    /// Drops the instances kept longer than `idle` ago; their stores are
    /// dropped after the lock is let go.
    fn expire(&self, idle: Duration) -> Vec<Warm> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Kept in order: the oldest first.
        let stale = kept.partition_point(|(at, _)| at.elapsed() >= idle);
        WARM_TOTAL.fetch_sub(stale, std::sync::atomic::Ordering::Relaxed);
        kept.drain(..stale).map(|(_, warm)| warm).collect()
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let idle = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        WARM_TOTAL.fetch_sub(idle.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// A pre-instantiated component, by the `wasi:http` handler it exports.
#[derive(Clone)]
pub enum HandlerPre {
    /// `wasi:http/incoming-handler@0.2.x` (WASI 0.2: spin-sdk 5, route groups).
    P2(ProxyPre<HostState>),
    /// `wasi:http/handler@0.3.0` (WASI 0.3, async: spin-sdk 7).
    P3(ServicePre<HostState>),
}

/// What a component is linked against, beyond WASI and `wasi:http`.
#[derive(Debug, Clone)]
pub struct Linking<'a> {
    pub grants: &'a BTreeSet<Capability>,
    /// Spin's interfaces a user's function may import (variables,
    /// key-value, postgres).
    pub spin: bool,
}

/// Compiles (or loads from the cache), checks grants, links and
/// pre-instantiates a route group.
pub fn load(
    engine: &Engine,
    cache: &CompileCache,
    spec: Arc<ComponentSpec>,
    defaults: ComponentDefaults,
    metrics: &Metrics,
) -> anyhow::Result<LoadedComponent> {
    let started = Instant::now();
    let id = spec.id.clone();
    let (component, origin) = cache
        .load_pinned(engine.wasmtime(), &spec.wasm)
        .with_context(|| format!("component `{id}`"))?;
    caps::check_imports(engine.wasmtime(), &component, &id, &spec.grants)?;
    let pre = link(
        engine,
        &component,
        &Linking {
            grants: &spec.grants,
            spin: false,
        },
    )
    .with_context(|| format!("component `{id}`"))?;
    let memory_mb = spec.memory_mb.unwrap_or(defaults.memory_mb);
    anyhow::ensure!(
        memory_mb <= defaults.max_memory_mb,
        "component `{id}`: memory_mb {memory_mb} is past components.max_memory_mb ({})",
        defaults.max_memory_mb
    );
    let route = match &pre {
        HandlerPre::P2(proxy) => route::indices(engine, &component, proxy.instance_pre())
            .with_context(|| format!("component `{id}`"))?,
        HandlerPre::P3(_) => None,
    };
    if route.is_none() {
        tracing::info!(component = %id, "no `{}` export: every request goes over wasi:http", route::EXPORT);
    }
    Ok(LoadedComponent {
        name: Arc::from(id.as_str()),
        public_routes: spec.public_routes.clone(),
        body_limit: spec.body_limit_bytes,
        instantiations: metrics.instantiations(&id),
        requests: metrics.group(&id),
        timeout: spec.timeout.unwrap_or(defaults.timeout),
        memory_bytes: usize::try_from(memory_mb << 20).unwrap_or(usize::MAX),
        sql_grants: spec.sql_grants.clone(),
        pre,
        route,
        warm: WarmPool::default(),
        lingering: Arc::new(tokio::sync::Semaphore::new(MAX_LINGERING)),
        origin,
        load_time: started.elapsed(),
    })
}

/// A user's function: its compiled component linked for functions, under its
/// own limits. Instantiation metrics share the label `fn`.
pub fn load_function(
    linker: &Linker<HostState>,
    component: &Component,
    name: &str,
    timeout: Duration,
    memory_mb: u64,
    metrics: &Metrics,
) -> anyhow::Result<LoadedComponent> {
    let started = Instant::now();
    let pre = pre_instantiate(linker, component)?;
    Ok(LoadedComponent {
        name: Arc::from(name),
        public_routes: Vec::new(),
        body_limit: None,
        instantiations: metrics.instantiations("fn"),
        requests: metrics.functions().clone(),
        timeout,
        memory_bytes: usize::try_from(memory_mb << 20).unwrap_or(usize::MAX),
        sql_grants: Arc::new([SqlGrant::EVERY_TABLE]),
        pre,
        route: None,
        warm: WarmPool::default(),
        lingering: Arc::new(tokio::sync::Semaphore::new(MAX_LINGERING)),
        origin: Origin::Cached,
        load_time: started.elapsed(),
    })
}

impl Linking<'static> {
    /// What a user's function is linked against: session, sql, log and
    /// Spin's variables.
    pub fn function() -> Self {
        static GRANTS: std::sync::LazyLock<BTreeSet<Capability>> = std::sync::LazyLock::new(|| {
            BTreeSet::from([Capability::Session, Capability::Sql, Capability::Log])
        });
        Linking {
            grants: &GRANTS,
            spin: true,
        }
    }
}

/// Links `component` and pre-instantiates it as a `wasi:http` handler.
pub fn link(
    engine: &Engine,
    component: &Component,
    linking: &Linking<'_>,
) -> anyhow::Result<HandlerPre> {
    pre_instantiate(&linker(engine, linking)?, component)
}

/// A linker with WASI, `wasi:http` and what `linking` grants (built once
/// and reused for every user's function).
pub fn linker(engine: &Engine, linking: &Linking<'_>) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    caps::add_to_linker(&mut linker, linking.grants)?;
    if linking.spin {
        // A user's function may be a WASI 0.3 component (spin-sdk 7).
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        caps::variables::add_to_linker(&mut linker)?;
        caps::postgres::add_to_linker(&mut linker)?;
        caps::key_value::add_to_linker(&mut linker)?;
    }
    Ok(linker)
}

/// Pre-instantiates `component` against `linker` as a `wasi:http` handler
/// of either version.
pub fn pre_instantiate(
    linker: &Linker<HostState>,
    component: &Component,
) -> anyhow::Result<HandlerPre> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .context("its imports cannot be satisfied")?;
    if let Ok(service) = ServicePre::new(pre.clone()) {
        return Ok(HandlerPre::P3(service));
    }
    ProxyPre::new(pre)
        .map(HandlerPre::P2)
        .map_err(anyhow::Error::from)
        .context("it exports neither wasi:http/incoming-handler@0.2 nor wasi:http/handler@0.3")
}

/// Why a component did not answer normally.
#[derive(Debug)]
pub enum DispatchError {
    /// It ran past its deadline.
    Timeout { component: String, after: Duration },
    /// It tried to grow its memory past its cap.
    MemoryLimit {
        component: String,
        error: MemoryLimitExceeded,
    },
    /// It trapped or failed before responding.
    Failed {
        component: String,
        error: anyhow::Error,
    },
    /// The request's body could not be read.
    BadRequest(String),
    /// The host could not set the request up.
    Host(anyhow::Error),
}

/// The most WASI resources (streams, pollables, header maps, requests and
/// responses) a guest may hold at once, and the most bytes one header map
/// it builds may take. Both are host memory outside the guest's own limit:
/// wasmtime's defaults (a million handles, 128 KiB a map) let one request
/// hold over 100 GB. At these, a store holds at most 128 MiB of maps; a
/// guest past either bound traps (wasi:http's own answer to both).
const MAX_WASI_HANDLES: usize = 4096;
const MAX_FIELDS_BYTES: usize = 32 * 1024;

/// Runs requests through components.
#[derive(Clone)]
pub struct Dispatcher {
    engine: Engine,
    services: Services,
}

impl Dispatcher {
    pub fn new(engine: Engine, services: Services) -> Self {
        Self { engine, services }
    }

    fn store(&self, component: &LoadedComponent, ctx: &RequestContext) -> Store<HostState> {
        let id = component.name.clone();
        let function_log = ctx.function.as_ref().map(|f| f.log.clone());
        let output_tag = RequestTag::new(ctx.request_id.clone());
        let log_budget = LogBudget::new();
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::stdout(
                id.clone(),
                output_tag.clone(),
                function_log.clone(),
                log_budget.clone(),
            ))
            .stderr(GuestOutput::stderr(
                id.clone(),
                output_tag.clone(),
                function_log.clone(),
                log_budget.clone(),
            ))
            .build();
        let unread = crate::caps::unread::Unread::default();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_WASI_HANDLES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let state = HostState {
            table,
            wasi,
            http,
            hooks: OutboundHttp::new(
                ctx.function
                    .as_ref()
                    .map_or_else(|| Arc::from([]), |f| f.allowed_outbound_hosts.clone()),
                ctx.function.as_ref().map(|f| f.egress.clone()),
                ctx.function.as_ref().map_or("", |f| f.tenant.key.as_str()),
            ),
            limiter: MemoryLimiter::new(component.memory_bytes, 100_000),
            session: SessionState {
                principal: ctx.principal.clone(),
                access: ctx.access.clone(),
                request_id: ctx.request_id.clone(),
            },
            // A function acts in its own tenant with the tenant's full rights
            // (it is the tenant's code); a route group in its caller's, under
            // the caller's grants.
            sql: match &ctx.function {
                Some(function) => SqlState {
                    tenant: Some(TenantSql::new(
                        self.services.db.clone(),
                        function.tenant.clone(),
                    )),
                    access: TENANT_ADMIN.clone(),
                    grants: component.sql_grants.clone(),
                    table: ResourceTable::new(),
                    body_streams: false,
                    open_transactions: 0,
                },
                None => SqlState {
                    tenant: ctx.principal.as_ref().and_then(|p| {
                        let tenant = Tenant::for_environment(&p.project_id, &p.environment).ok()?;
                        Some(TenantSql::new(self.services.db.clone(), Arc::new(tenant)))
                    }),
                    access: ctx.access.clone(),
                    grants: component.sql_grants.clone(),
                    table: ResourceTable::new(),
                    body_streams: false,
                    open_transactions: 0,
                },
            },
            platform_db: PlatformDbState {
                db: PlatformSql::new(self.services.db.clone()),
                table: ResourceTable::new(),
            },
            auth: AuthState {
                auth: self.services.auth.clone(),
                client: ctx.client,
            },
            functions: FunctionsState {
                functions: self.services.functions.clone(),
            },
            variables: VariablesState {
                function: ctx.function.clone(),
            },
            postgres: PostgresState {
                db: self.services.db.clone(),
                function: ctx.function.clone(),
                table: crate::caps::handle_table(),
                unread: unread.clone(),
            },
            key_value: KeyValueState {
                db: self.services.db.clone(),
                function: ctx.function.clone(),
                table: crate::caps::handle_table(),
                unread,
            },
            log: LogState {
                component: id,
                request_id: ctx.request_id.clone(),
                budget: log_budget,
                function: function_log,
            },
            output_tag,
            ticks_used: 0,
            tick_budget: Engine::ticks(component.timeout),
        };
        let mut store = Store::new(self.engine.wasmtime(), state);
        store.limiter(|state| &mut state.limiter);
        // Guest code yields to the scheduler every slice, so a spinning guest
        // shares the cores with every other request, and traps once it has
        // used its whole deadline.
        store.set_epoch_deadline(YIELD_TICKS);
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            state.ticks_used += YIELD_TICKS;
            if state.ticks_used >= state.tick_budget {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::YieldCustom(
                YIELD_TICKS,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        store
    }

    /// Runs one request through an instance of `component`: a kept one
    /// the request may use, else a fresh one.
    pub async fn dispatch(
        &self,
        component: &Arc<LoadedComponent>,
        ctx: RequestContext,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Body>, DispatchError> {
        // The guest gets the principal, never the credential it came from
        // (a credential that is not the platform's is a public function's
        // to read: see `api::functions::call`).
        if request.extensions().get::<ForeignAuthorization>().is_none() {
            request.headers_mut().remove(http::header::AUTHORIZATION);
        }
        // `wasi:http` gives a guest its authority as text: a `Host` that is
        // not (bytes past ASCII) is the client's mistake, said before any
        // guest runs.
        if request
            .headers()
            .get(http::header::HOST)
            .is_some_and(|host| host.to_str().is_err())
        {
            return Err(DispatchError::BadRequest(
                "the Host header is not ASCII text".to_owned(),
            ));
        }
        if let Some(indices) = &component.route
            && route::buffers(&request)
        {
            return self
                .dispatch_buffered(component, indices, ctx, request)
                .await;
        }
        if !request.headers().contains_key(http::header::HOST) {
            request.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let request = request.map(|body| body.map_err(body_error as fn(_) -> _));
        let instantiations = component.instantiations.clone();
        // The guest's run, and its answer: the response (which may come
        // before the run ends, its body still being written) or the
        // `wasi:http` error code it answered with.
        let owner = Owner::of(&component.pre, &ctx);
        let mut instance = self.instance(component, &ctx, owner.as_ref());
        // Its body streams in as the guest reads it.
        instance.store_mut().data_mut().sql.body_streams = true;
        let cut = Cut::default();
        let (run, receiver) = match &component.pre {
            HandlerPre::P2(pre) => {
                let (sender, receiver) = tokio::sync::oneshot::channel();
                let run = run_p2(
                    pre.clone(),
                    component.clone(),
                    (instance, owner),
                    request,
                    sender,
                    instantiations,
                    cut.clone(),
                );
                let answer = receiver.map(|answer| {
                    answer.map(|answer| {
                        answer
                            .map(|response| response.map(Body::new))
                            .map_err(|code| format!("{code:?}"))
                    })
                });
                (run.boxed(), answer.boxed())
            }
            HandlerPre::P3(pre) => {
                let (sender, receiver) = tokio::sync::oneshot::channel();
                let run = run_p3(
                    pre.clone(),
                    component.clone(),
                    instance,
                    request,
                    sender,
                    instantiations,
                    cut.clone(),
                );
                (run.boxed(), receiver.boxed())
            }
        };
        // Past the deadline the store is dropped, and with it the response
        // sender: this one timer bounds every wait below.
        let timeout = component.timeout;
        let timed_out = cut.clone();
        let mut run = Box::pin(async move {
            let mut run = run;
            tokio::select! {
                result = &mut run => result,
                () = tokio::time::sleep(timeout) => {
                    // Said before the run (and its store) is dropped.
                    timed_out.cut();
                    drop(run);
                    Err(anyhow::Error::new(Trap::Interrupt))
                }
            }
        });

        // Run the guest on this task until it has answered. A guest that
        // returns with its response (the usual case) never leaves this task;
        // one still streaming its body is moved to a task of its own.
        let mut receiver = receiver;
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = run.as_mut().poll(cx) {
                return Poll::Ready(Err(result));
            }
            receiver.as_mut().poll(cx).map(Ok)
        })
        .await;
        let answered = match outcome {
            Ok(Ok(Ok(response))) => {
                let response = response.map(|body| cut.body(body));
                // A small body the guest has written by now leaves with
                // the head, in one write.
                let (response, running) = coalesce::written_body(response, run).await;
                if let Some(run) = running {
                    self.services
                        .tasks
                        .spawn(after_answer(component.name.clone(), run));
                }
                Ok(Ok(response))
            }
            Ok(Ok(Err(code))) => {
                self.services
                    .tasks
                    .spawn(after_answer(component.name.clone(), run));
                Ok(Err(code))
            }
            // The guest dropped its response slot unused: its own result says why.
            Ok(Err(_)) => match run.await {
                Ok(()) => Err(anyhow::anyhow!("the component returned without a response")),
                Err(error) => Err(error),
            },
            Err(Ok(())) => match receiver.now_or_never() {
                Some(Ok(answer)) => Ok(answer),
                _ => Err(anyhow::anyhow!("the component returned without a response")),
            },
            Err(Err(error)) => Err(error),
        };
        match answered {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(DispatchError::Failed {
                component: component.id().to_owned(),
                error: anyhow::anyhow!("the component answered with an error: {code}"),
            }),
            Err(error) => Err(classify(component.id().to_owned(), timeout, error)),
        }
    }

    /// A kept instance `owner` may use, else a fresh store.
    fn instance(
        &self,
        component: &LoadedComponent,
        ctx: &RequestContext,
        owner: Option<&Owner>,
    ) -> Instance {
        match owner.and_then(|owner| component.warm.take(owner)) {
            Some(mut warm) => {
                warm.store.data_mut().begin(ctx);
                warm.store.set_epoch_deadline(YIELD_TICKS);
                Instance::Warm(warm)
            }
            None => Instance::Fresh(self.store(component, ctx)),
        }
    }

    /// Runs a route group's request through its buffered entry point: the
    /// body read (under the same deadline as the guest), one call, the
    /// response its return value.
    async fn dispatch_buffered(
        &self,
        component: &Arc<LoadedComponent>,
        indices: &route::Indices,
        ctx: RequestContext,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, DispatchError> {
        let owner = Owner::of(&component.pre, &ctx);
        let run = async {
            let request = route::request(request).await?;
            let HandlerPre::P2(pre) = &component.pre else {
                anyhow::bail!("a route group's entry point without its wasi:http handler");
            };
            let (mut store, handler, served) = match self.instance(component, &ctx, owner.as_ref())
            {
                Instance::Warm(Warm {
                    store,
                    handler,
                    served,
                    ..
                }) => (store, handler, served),
                Instance::Fresh(mut store) => {
                    let (proxy, buffered) =
                        instantiate_p2(pre, Some(indices), &mut store, &component.instantiations)
                            .await?;
                    (store, Handler::P2(proxy, buffered), 0)
                }
            };
            let Handler::P2(_, Some(buffered)) = &handler else {
                anyhow::bail!("a kept instance without the route group's entry point");
            };
            let answer = buffered
                .zatabase_platform_route()
                .call_handle(&mut store, &request)
                .await?;
            if let Some(owner) = owner
                && store.data().holds_nothing()
            {
                component.warm.keep(Warm {
                    store,
                    handler,
                    served: served + 1,
                    owner,
                });
            }
            route::response(answer)
        };
        let timeout = component.timeout;
        let outcome = match tokio::time::timeout(timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::Error::new(Trap::Interrupt)),
        };
        outcome.map_err(|error| match error.downcast::<route::BodyError>() {
            Ok(route::BodyError(message)) => DispatchError::BadRequest(message),
            Err(error) => classify(component.id().to_owned(), timeout, error),
        })
    }
}

/// Instantiates a WASI 0.2 component in `store`, with the route group's
/// buffered entry point when `indices` say where it is.
async fn instantiate_p2(
    pre: &ProxyPre<HostState>,
    indices: Option<&route::Indices>,
    store: &mut Store<HostState>,
    instantiations: &prometheus_client::metrics::histogram::Histogram,
) -> anyhow::Result<(
    wasmtime_wasi_http::p2::bindings::Proxy,
    Option<route::RouteEntry>,
)> {
    let started = Instant::now();
    let handler = match indices {
        None => (pre.instantiate_async(&mut *store).await?, None),
        Some(indices) => {
            let instance = pre.instance_pre().instantiate_async(&mut *store).await?;
            let proxy = indices.proxy.load(&mut *store, &instance)?;
            (proxy, Some(indices.entry.load(&mut *store, &instance)?))
        }
    };
    instantiations.observe(started.elapsed().as_secs_f64());
    Ok(handler)
}

/// Where a WASI 0.3 guest's answer goes: its response, or the `wasi:http`
/// error code it answered with instead.
type Answer = tokio::sync::oneshot::Sender<Result<http::Response<Body>, String>>;

/// Where a WASI 0.2 guest's response out-parameter sends its answer.
type Outparam = tokio::sync::oneshot::Sender<
    Result<
        hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
    >,
>;

/// A request's body as the host hands it to `wasi:http`.
type IncomingBody =
    http_body_util::combinators::MapErr<Body, fn(axum::Error) -> wasmtime_wasi_http::Error>;

fn body_error(error: axum::Error) -> wasmtime_wasi_http::Error {
    wasmtime_wasi_http::Error::InternalError(Some(error.to_string()))
}

/// Runs a WASI 0.2 component: `incoming-handler.handle` with a response
/// out-parameter the guest sets (perhaps before it has finished writing
/// the body: the call then runs on until it has). An instance that may
/// serve its owner again is kept once the call has returned and the guest
/// holds no host resource.
async fn run_p2(
    pre: ProxyPre<HostState>,
    component: Arc<LoadedComponent>,
    (instance, owner): (Instance, Option<Owner>),
    request: http::Request<IncomingBody>,
    answer: Outparam,
    instantiations: prometheus_client::metrics::histogram::Histogram,
    failed: Cut,
) -> anyhow::Result<()> {
    let (mut store, (proxy, entry), served) = match instance {
        Instance::Warm(Warm {
            store,
            handler: Handler::P2(proxy, entry),
            served,
            ..
        }) => (store, (proxy, entry), served),
        Instance::Warm(Warm { mut store, .. }) | Instance::Fresh(mut store) => {
            let handler =
                instantiate_p2(&pre, component.route.as_ref(), &mut store, &instantiations).await?;
            (store, handler, 0)
        }
    };
    let (incoming, outparam) = {
        let mut http = store.data_mut().http();
        let incoming = http.new_incoming_request(Scheme::Http, request)?;
        (incoming, http.new_response_outparam(answer)?)
    };
    let handled = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut store, incoming, outparam)
        .await;
    if handled.is_err() {
        // Before the store, and the body's stream with it, is dropped.
        failed.cut();
    }
    handled?;
    if let Some(owner) = owner
        && store.data().holds_nothing()
    {
        component.warm.keep(Warm {
            store,
            handler: Handler::P2(proxy, entry),
            served: served + 1,
            owner,
        });
    }
    Ok(())
}

/// The rest of a guest's run once it has answered (its body, work it
/// spawned), which no one waits for: how it ended is logged.
async fn after_answer(component: Arc<str>, run: impl Future<Output = anyhow::Result<()>>) {
    if let Err(error) = run.await {
        let error = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => "it ran past its timeout".to_owned(),
            _ => format!("{error:#}"),
        };
        tracing::warn!(%component, %error, "a guest failed after its answer");
    }
}

/// An instance to serve a request with.
enum Instance {
    /// A new store; the component is instantiated in it.
    Fresh(Store<HostState>),
    /// An instance kept from an earlier request it may serve after.
    Warm(Warm),
}

impl Instance {
    fn store_mut(&mut self) -> &mut Store<HostState> {
        match self {
            Self::Fresh(store) | Self::Warm(Warm { store, .. }) => store,
        }
    }
}

/// Runs a WASI 0.3 component: `handler.handle` is an async export that
/// returns its response, whose body the guest may go on writing; the
/// store's event loop runs until that body has been read (or dropped) and
/// the guest's tasks have ended, all within the request's deadline.
/// An instance that served its request cleanly is kept for the next one.
async fn run_p3(
    pre: ServicePre<HostState>,
    component: Arc<LoadedComponent>,
    instance: Instance,
    request: http::Request<IncomingBody>,
    answer: Answer,
    instantiations: prometheus_client::metrics::histogram::Histogram,
    failed: Cut,
) -> anyhow::Result<()> {
    let (mut store, service, served) = match instance {
        Instance::Warm(Warm {
            store,
            handler: Handler::P3(service),
            served,
            ..
        }) => (store, service, served),
        Instance::Warm(Warm { mut store, .. }) | Instance::Fresh(mut store) => {
            let started = Instant::now();
            let service = pre.instantiate_async(&mut store).await?;
            instantiations.observe(started.elapsed().as_secs_f64());
            (store, service, 0)
        }
    };
    let (parts, body) = request.into_parts();
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|host| host.to_str().ok()?.parse().ok());
    // As with WASI 0.2, forbidden headers (`host`, `connection`, ...) never
    // reach the guest.
    let headers =
        wasmtime_wasi_http::FieldMap::new_immutable(store.data_mut().http().hooks, parts.headers);
    let (request, io) = wasmtime_wasi_http::p3::Request::new(
        parts.method,
        Some(http::uri::Scheme::HTTP),
        authority,
        parts.uri.path_and_query().cloned(),
        headers,
        None,
        body,
    );
    let lingering = component.lingering.clone();
    let handled = store
        .run_concurrent(async |accessor| -> wasmtime::Result<bool> {
            match service.handle(accessor, request).await? {
                Err(code) => {
                    let _ = answer.send(Err(format!("{code:?}")));
                }
                Ok(response) => {
                    let response = accessor.with(|mut access| {
                        response.into_http_with_getter(
                            &mut access,
                            io,
                            <HostState as WasiHttpView>::http,
                        )
                    })?;
                    let (read, finished) = tokio::sync::oneshot::channel::<()>();
                    let response =
                        response.map(|body| Body::new(UntilRead { body, _read: read }));
                    if answer.send(Ok(response)).is_ok() {
                        let _ = finished.await;
                    }
                }
            }
            // What the guest goes on with after its answer (work it
            // spawned: a write, a call) runs to its end, within the
            // request's deadline, before the instance is kept: parked with
            // the store, it would stop where it was, holding what it held
            // (a tenant connection), until the instance's next request. At
            // most MAX_LINGERING instances of a component wait so; past
            // that, the work is dropped with its store.
            let idle = std::future::poll_fn(|cx| {
                Poll::Ready(accessor.poll_no_interesting_tasks(cx).is_ready())
            })
            .await;
            if idle {
                return Ok(true);
            }
            let Ok(_turn) = lingering.try_acquire_owned() else {
                tracing::warn!(
                    component = %component.name,
                    "work after the response dropped: {MAX_LINGERING} instances are at such work already"
                );
                return Ok(false);
            };
            std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
            Ok(true)
        })
        .await;
    if !matches!(handled, Ok(Ok(_))) {
        // Before the store, and the body's stream with it, is dropped.
        failed.cut();
    }
    let settled = handled??;
    // A WASI 0.3 instance may keep what it holds between requests (its
    // sockets, its Spin handles, as a Worker keeps its globals), but not a
    // transaction, nor work still under way.
    if settled && store.data().holds_no_transaction() {
        component.warm.keep(Warm {
            store,
            handler: Handler::P3(service),
            served: served + 1,
            owner: Owner::Deployment,
        });
    }
    Ok(())
}

/// A response body that tells, by being dropped, that the client has it.
struct UntilRead<B> {
    body: B,
    _read: tokio::sync::oneshot::Sender<()>,
}

impl<B: http_body::Body + Unpin> http_body::Body for UntilRead<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether a guest's run failed, said before its store (and with it the
/// stream its body comes from) is dropped. A dropped store ends that
/// stream as if the body were whole, in both WASI versions; a body read
/// through [`Cut::body`] ends in an error instead, so a client is never
/// handed half an answer for a whole one.
#[derive(Clone, Default)]
pub struct Cut(Arc<std::sync::atomic::AtomicBool>);

impl Cut {
    fn cut(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    fn body(&self, body: Body) -> Body {
        Body::new(CutBody {
            body,
            cut: self.clone(),
        })
    }
}

struct CutBody {
    body: Body,
    cut: Cut,
}

impl http_body::Body for CutBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            None if this.cut.0.load(std::sync::atomic::Ordering::Acquire) => {
                Poll::Ready(Some(Err(axum::Error::new(
                    "the function failed while sending its body",
                ))))
            }
            polled => Poll::Ready(polled),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn classify(component: String, timeout: Duration, error: anyhow::Error) -> DispatchError {
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return DispatchError::MemoryLimit {
            component,
            error: *limit,
        };
    }
    if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return DispatchError::Timeout {
            component,
            after: timeout,
        };
    }
    DispatchError::Failed { component, error }
}
