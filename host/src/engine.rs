//! The one [`Engine`] of a process, configured for serving.
//!
//! - the pooling allocator, sized for the number of requests served at once, unless the
//!   address-space probe says this machine cannot reserve that much (as `wasmtime serve` does);
//! - copy-on-write memory images, so an instance starts from its data segments without copying;
//! - epoch interruption, so a guest that computes without pause still yields to the other
//!   requests and can be stopped at its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, Result};
use wasmtime_cli_flags::CommonOptions;

/// Default for `-O pooling-memory-keep-resident`. Measured with the CPython snapshot (26 MB of
/// memory image) on 2 cores: 230 req/s at 0, 620 req/s at 16 MiB; the price is resident memory
/// that stays with the slots used at peak concurrency (90 MB vs 360 MB at 16 connections).
pub const MEMORY_KEEP_RESIDENT: usize = 16 << 20;

/// Default for `-O pooling-table-keep-resident`: a freed table slot is zeroed in place instead
/// of being handed back with `madvise`, which costs a TLB shootdown on every core the process
/// runs on. hello-http on 2 cores: 13k req/s at 0, 21k at 64 KiB (8192 entries).
pub const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Default for `-O pooling-pagemap-scan`: where the kernel has `PAGEMAP_SCAN` (Linux 6.7+), a
/// freed memory slot resets only the pages the request dirtied instead of memsetting all it
/// keeps resident. hello-http on 2 cores: 24k req/s without, 27k-33k with.
pub const PAGEMAP_SCAN: wasmtime::Enabled = wasmtime::Enabled::Auto;

/// Default for `-O memory-guaranteed-dense-image-size`: a module whose data spans up to this
/// much of its memory starts each instance from a copy-on-write image, however sparse the span.
/// Past wasmtime's 16 MiB default an interpreter snapshot copies its data into every instance
/// instead: php-cgi's (7.5 MiB of data over 19 MiB) served 560 req/s that way, 1 390 with the
/// image. A snapshot taken after work (an app's scripts compiled into OPcache) also leaves the
/// allocator's freed blocks at the top of memory: a warmed DokuWiki spans 191 MiB with 60 MiB
/// of data. The zeros cost only disk in the compile cache, which is mapped, not read.
pub const DENSE_IMAGE_SIZE: u64 = 256 << 20;

/// How often the epoch advances. A running guest yields to the scheduler at every tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine from `wasmtime`-style options (`-O`, `-C`, `-W`, ...). `max_concurrent` is
/// how many requests may run at once; the pooling allocator gets room for that many instances
/// unless `-O pooling-total-*` says otherwise.
pub fn new_engine(options: &mut CommonOptions, max_concurrent: u32) -> Result<Engine> {
    // Parses the raw `-O`/`-W`/... flags into their typed fields (logging stays off).
    options.init_logging()?;
    options
        .opts
        .memory_guaranteed_dense_image_size
        .get_or_insert(DENSE_IMAGE_SIZE);
    let pooling_by_default = pooling_fits_address_space();
    if options
        .opts
        .pooling_allocator
        .or(pooling_by_default)
        .unwrap_or(false)
    {
        size_pool(options, max_concurrent);
    }
    let mut config = options.config(pooling_by_default)?;
    config.wasm_component_model(true);
    // WASI 0.3 components are async ones, as `wasmtime serve` runs them by default.
    if options.wasm.component_model_async.is_none() {
        config.wasm_component_model_async(true);
    }
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    Engine::new(&config)
}

/// Room for `n` requests at once. A component built by Rust or wit-component holds a handful of
/// core instances and tables (program, adapter, shims), so those get several slots per request.
///
/// A freed memory slot keeps up to [`MEMORY_KEEP_RESIDENT`] of its pages: giving them back and
/// faulting them in again costs an interpreter snapshot more than its whole request. Tables
/// likewise keep [`TABLE_KEEP_RESIDENT`]. [`PAGEMAP_SCAN`] makes the reset touch only what
/// the request dirtied.
fn size_pool(options: &mut CommonOptions, n: u32) {
    let opts = &mut options.opts;
    opts.pooling_memory_keep_resident
        .get_or_insert(MEMORY_KEEP_RESIDENT);
    opts.pooling_table_keep_resident
        .get_or_insert(TABLE_KEEP_RESIDENT);
    opts.pooling_pagemap_scan.get_or_insert(PAGEMAP_SCAN);
    opts.pooling_total_component_instances.get_or_insert(n);
    opts.pooling_total_core_instances.get_or_insert(n * 8);
    opts.pooling_total_memories.get_or_insert(n * 2);
    opts.pooling_total_tables.get_or_insert(n * 4);
    opts.pooling_total_stacks.get_or_insert(n);
}

/// For a server that forks its workers and then drops root, as Apache does; call it in the
/// parent. [`PAGEMAP_SCAN`] reads `/proc/self/pagemap`, which a child that has become another
/// user can no longer open (it is not dumpable); wasmtime opens it once per process and reopens
/// it in each forked child at fork time, while the child still can. Opening it here, with a
/// throwaway one-slot pool, lets every child use it. Starts no threads and installs no signal
/// handlers: wasmtime installs those once per process, and a child must install its own, after
/// the server has set its signals up.
pub fn open_pagemap_for_children() {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(1)
        .total_core_instances(1)
        .total_memories(1)
        .total_tables(1)
        .total_stacks(1)
        .pagemap_scan(PAGEMAP_SCAN);
    let mut config = wasmtime::Config::new();
    config.signals_based_traps(false);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let _ = Engine::new(&config);
}

/// The pooling allocator reserves address space for every slot up front (several TiB by
/// default). Some systems give a process less than that, so probe first: reserving a 2^42-byte
/// memory tells whether the pool would fit.
fn pooling_fits_address_space() -> Option<bool> {
    const BITS: u32 = 42;
    let mut config = wasmtime::Config::new();
    config.wasm_memory64(true);
    config.memory_reservation(1 << BITS);
    let engine = Engine::new(&config).ok()?;
    let mut store = wasmtime::Store::new(&engine, ());
    let ty = wasmtime::MemoryType::new64(0, Some(1 << (BITS - 16)));
    wasmtime::Memory::new(&mut store, ty)
        .is_ok()
        .then_some(true)
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until dropped. Create it
/// where it will live: in the process that serves (after Apache's fork, not before).
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("wasmbridge-epoch".into())
            .spawn({
                let (engine, stop) = (engine.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("failed to start the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
