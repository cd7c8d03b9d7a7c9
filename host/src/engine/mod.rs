//! The WebAssembly engine: wasmtime configured once for the whole host.
//!
//! Component model on, instances from a pooling allocator (instantiation is a
//! few page-table updates, not mmap calls), epoch interruption with a ticker
//! thread (a request's deadline is counted in ticks), and compiled code cached
//! on disk (see [`cache`]).

pub mod cache;
pub mod limits;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Linear memory kept resident in a free instance slot (see `Engine::new`).
const KEEP_RESIDENT: usize = 4 << 20;

/// Free slots kept warm; with `KEEP_RESIDENT` this bounds the memory idle
/// slots hold (128 MiB) while covering a busy host's concurrency.
const WARM_SLOTS: u32 = 32;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instances alive at once, across all components.
    pub max_instances: u32,
    /// The ceiling of any instance's linear memory; per-component caps are
    /// enforced below it by [`limits::MemoryLimiter`].
    pub max_memory_bytes: usize,
}

/// The shared engine and its epoch ticker.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    ticker: Arc<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Engine {
    pub fn new(config: &EngineConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            // WASI 0.3 functions (spin-sdk 7): async exports, streams, futures.
            .wasm_component_model_async(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            // Instances are short-lived and their slots are reset in place:
            // copying a component's small data segments in is cheaper than
            // mapping its memory image on every instantiation.
            .memory_init_cow(false);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 2)
            .total_stacks(config.max_instances)
            .max_memories_per_component(limits::MEMORIES_PER_COMPONENT)
            .max_tables_per_component(limits::TABLES_PER_COMPONENT)
            .max_core_instances_per_component(limits::CORE_INSTANCES_PER_COMPONENT)
            .max_memory_size(config.max_memory_bytes)
            // A request's instance reuses a warm slot: reset its memory with
            // memset (or the kernel's dirty-page scan) instead of returning
            // the pages and faulting them back in on the next request.
            .pagemap_scan(Enabled::Auto)
            // Warm slots keep their resident memory: bound how many wait.
            .max_unused_warm_slots(WARM_SLOTS)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(128 << 10);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let inner = wasmtime::Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticking = inner.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticking.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Self {
            inner,
            ticker: Arc::new(Ticker { stop }),
        })
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// Ticks to wait for `timeout`, at least one.
    pub fn ticks(timeout: Duration) -> u64 {
        (timeout.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64).max(1)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("ticker_running", &!self.ticker.stop.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
