//! The one wasmtime `Engine` of the process and its epoch ticker.
//!
//! Instances come from the pooling allocator, sized for the configured
//! concurrency, with copy-on-write memory images so instantiation maps the
//! initial heap instead of copying it. Compiled artifacts are cached on disk
//! under the state directory, keyed by content, so a restart does not
//! recompile. CPU time is bounded by epoch interruption: a background thread
//! advances the epoch every [`TICK`].
//!
//! Freed instance memory is reset with the kernel's `PAGEMAP_SCAN` (only
//! the pages the guest wrote) unless swap is on: a written page that was
//! swapped out is not present, so the scan misses it and the next instance
//! in that slot could read it (wasmtime#14357). With swap the whole kept
//! memory is reset instead ([`MemoryReset`]).

use crate::config::{Limits, MemoryResetMode};
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

/// How freed instance memory is reset before the next instance uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryReset {
    /// Only the pages `PAGEMAP_SCAN` reports written (where the kernel has
    /// it, Linux 6.7+; wasmtime falls back to the full reset elsewhere).
    Scan,
    /// Every kept-resident byte, as `--memory-reset full` asks.
    Full,
    /// Every kept-resident byte, because swap is on (`areas` names them).
    SwapOn { areas: String },
}

impl MemoryReset {
    /// Chooses from the text of `/proc/swaps` (`None` when it cannot be
    /// read: a kernel without swap support has no such file). Any area
    /// listed below the header line is active swap.
    pub fn choose(proc_swaps: Option<&str>) -> Self {
        let areas: Vec<&str> = proc_swaps
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        if areas.is_empty() {
            MemoryReset::Scan
        } else {
            MemoryReset::SwapOn {
                areas: areas.join(", "),
            }
        }
    }

    /// The reset `--memory-reset` asks for on this machine (`/proc/swaps`
    /// read now).
    pub fn detect(mode: MemoryResetMode) -> Self {
        match mode {
            MemoryResetMode::Full => MemoryReset::Full,
            MemoryResetMode::Auto => {
                Self::choose(std::fs::read_to_string("/proc/swaps").ok().as_deref())
            }
        }
    }

    fn pagemap_scan(&self) -> wasmtime::Enabled {
        match self {
            MemoryReset::Scan => wasmtime::Enabled::Auto,
            MemoryReset::Full | MemoryReset::SwapOn { .. } => wasmtime::Enabled::No,
        }
    }

    /// Says at start which reset is used and why.
    fn log(&self) {
        match self {
            MemoryReset::Scan => tracing::debug!(
                reset = "pagemap-scan",
                "freed instance memory is reset page by page (no swap)"
            ),
            MemoryReset::Full => tracing::info!(
                reset = "full",
                "freed instance memory is reset in full (--memory-reset full)"
            ),
            MemoryReset::SwapOn { areas } => tracing::warn!(
                reset = "full",
                swap = %areas,
                "swap is on: freed instance memory is reset in full, not with PAGEMAP_SCAN, which misses written pages that were swapped out (wasmtime#14357); requests cost more, isolation holds. Turn swap off for the faster reset"
            ),
        }
    }
}

/// Builds the engine; `cache_dir` holds compiled artifacts between runs.
pub fn build(
    limits: &Limits,
    cache_dir: &Path,
    reset: &MemoryReset,
    incremental: bool,
) -> Result<Engine> {
    reset.log();
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
        .pagemap_scan(reset.pagemap_scan())
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
    // Recompiles of a changed component reuse its unchanged functions.
    if incremental {
        config
            .enable_incremental_compilation(std::sync::Arc::new(
                crate::function_cache::FunctionCache::default(),
            ))
            .map_err(anyhow::Error::from)
            .context("failed to enable incremental compilation")?;
    }
    // For profiling: `perf` can then name the guests' compiled functions.
    if std::env::var_os(PERFMAP_ENV).is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to create the wasmtime engine")
}

/// How much lower than the request path's the compile threads' scheduling
/// priority is (niceness added; at 10 a busy compile thread gets about a
/// tenth of a core that the request path also wants).
const COMPILE_NICENESS: i32 = 10;

/// Sizes the pool that compiles components (wasmtime's parallel
/// compilation runs on rayon's global pool) to every core, each thread at
/// [`lower_priority`]. While nothing else runs — a first start on a cold
/// cache, before anything serves — compiles get every core; once requests
/// flow, the kernel gives the cores to them first, so a large or hostile
/// component's compile only gets what serving leaves.
pub fn size_compile_pool() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wasmhost-compile-{i}"))
        .start_handler(|_| lower_priority())
        .build_global();
    if built.is_ok() {
        tracing::debug!(threads, niceness = COMPILE_NICENESS, "compile pool sized");
    }
}

/// Lowers the calling thread's scheduling priority by [`COMPILE_NICENESS`]
/// (on Linux niceness is per thread; elsewhere this does nothing).
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        // `None` is the calling thread on Linux (the niceness of NPTL threads
        // is their own).
        let lowered = getpriority_process(None)
            .and_then(|now| setpriority_process(None, (now + COMPILE_NICENESS).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "cannot lower a compile thread's priority");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    #[test]
    fn no_swap_keeps_the_page_scan() {
        assert_eq!(MemoryReset::choose(Some(HEADER)), MemoryReset::Scan);
        assert_eq!(MemoryReset::choose(None), MemoryReset::Scan);
        assert_eq!(MemoryReset::choose(Some("")), MemoryReset::Scan);
    }

    #[test]
    fn any_swap_area_means_a_full_reset() {
        let swaps = format!(
            "{HEADER}/swapfile                               file\t\t4194300\t\t0\t\t-2\n/dev/zram0                              partition\t8388604\t\t1024\t\t100\n"
        );
        assert_eq!(
            MemoryReset::choose(Some(&swaps)),
            MemoryReset::SwapOn {
                areas: "/swapfile, /dev/zram0".into()
            }
        );
        assert_eq!(
            MemoryReset::SwapOn { areas: "x".into() }.pagemap_scan(),
            wasmtime::Enabled::No
        );
        assert_eq!(MemoryReset::Scan.pagemap_scan(), wasmtime::Enabled::Auto);
        assert_eq!(MemoryReset::Full.pagemap_scan(), wasmtime::Enabled::No);
    }

    #[test]
    fn an_engine_builds_with_every_reset() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits::default();
        for reset in [
            MemoryReset::Scan,
            MemoryReset::Full,
            MemoryReset::SwapOn {
                areas: "/swapfile".into(),
            },
        ] {
            build(&limits, dir.path(), &reset, false).unwrap();
        }
    }
}
