//! The one wasmtime `Engine` of the process and its epoch ticker.
//!
//! Instances come from the pooling allocator, sized for the configured
//! concurrency, with copy-on-write memory images so instantiation maps the
//! initial heap instead of copying it. Compiled artifacts are cached on disk
//! under the state directory, keyed by content, so a restart does not
//! recompile. CPU time is bounded by epoch interruption: a background thread
//! advances the epoch every [`TICK`].

use crate::config::Limits;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

/// How often the epoch advances; the granularity of CPU-time limits.
pub const TICK: Duration = Duration::from_millis(10);

/// Upper bound on core instances, memories and tables one component may hold
/// (a Rust `wasm32-wasip2` component uses about four core instances).
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MAX_TABLES_PER_COMPONENT: u32 = 32;
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
/// Bytes of each freed memory and table kept resident (reset with memset
/// instead of madvise), which avoids page faults and TLB shootdowns on the
/// next instance. With the kernel's PAGEMAP_SCAN (Linux 6.7+, used when
/// present) only the pages the guest dirtied are reset, so this can be large.
const KEEP_RESIDENT: usize = 8 * 1024 * 1024;
/// Set (to anything) to write `/tmp/perf-PID.map` for `perf`, naming guest
/// functions in profiles.
pub const PERFMAP_ENV: &str = "WASMHOST_PERFMAP";
/// Stack size of each guest call.
const MAX_WASM_STACK: usize = 1024 * 1024;

/// Builds the engine; `cache_dir` holds compiled artifacts between runs.
pub fn build(limits: &Limits, cache_dir: &Path) -> Result<Engine> {
    let instances = limits.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * MAX_CORE_INSTANCES_PER_COMPONENT / 4)
        .total_memories(instances * 2)
        .total_tables(instances * MAX_TABLES_PER_COMPONENT / 4)
        .total_stacks(instances)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_memory_size(limits.memory_ceiling)
        .max_unused_warm_slots(instances / 2)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 16)
        .async_stack_keep_resident(KEEP_RESIDENT / 4);

    let mut cache = CacheConfig::new();
    // Entries are never rewritten in place (no recompression), so the MAC
    // recorded for each (see `cache_guard`) stays valid.
    cache
        .with_directory(cache_dir)
        .with_optimized_compression_usage_counter_threshold(u64::MAX);
    let cache = Cache::new(cache)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "failed to set up the compiled-artifact cache in {}",
                cache_dir.display()
            )
        })?;

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .cache(Some(cache));
    // For profiling: `perf` can then name the guests' compiled functions.
    if std::env::var_os(PERFMAP_ENV).is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to create the wasmtime engine")
}

/// Bounds the threads that compile components to all cores but one, so a
/// large or hostile component never takes every core from the request path.
/// (wasmtime's parallel compilation runs on rayon's global pool.)
pub fn limit_compile_threads() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.saturating_sub(1).max(1);
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wasmhost-compile-{i}"))
        .build_global();
    if built.is_ok() {
        tracing::debug!(threads, "compile pool sized");
    }
}

/// Starts the thread that advances the engine's epoch every [`TICK`]; it ends
/// when the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .context("failed to start the epoch thread")?;
    Ok(())
}
