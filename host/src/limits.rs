//! Per-request limits, and the resource limiter that enforces them and remembers which one a
//! guest hit, so that a trap can be reported as "memory limit" rather than "unreachable".

use std::time::Duration;

use wasmtime::{ResourceLimiter, Result, StoreLimits, StoreLimitsBuilder, bail, format_err};

/// What one request may use. `None` means no limit beyond the engine's own.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Linear memory, in bytes, per memory (`-W max-memory-size`).
    pub max_memory_size: Option<usize>,
    /// Wall-clock time for the whole request, body included (`-W timeout`).
    pub timeout: Option<Duration>,
    /// Fuel units; most instructions cost one (`-W fuel`).
    pub fuel: Option<u64>,
    /// Entries in the resource table: handles, streams, pollables (`-S max-resources`).
    pub max_resources: Option<usize>,
    /// Table elements per table (`-W max-table-elements`).
    pub max_table_elements: Option<usize>,
    /// Instances, tables and memories per request (`-W max-instances`, `max-tables`, `max-memories`).
    pub max_instances: Option<usize>,
    pub max_tables: Option<usize>,
    pub max_memories: Option<usize>,
    /// Trap at once when memory cannot grow, instead of returning -1 to the guest.
    pub trap_on_grow_failure: bool,
    /// Fuel for host calls that copy guest data (`-S hostcall-fuel`).
    pub hostcall_fuel: Option<usize>,
    /// Component handles per request (`-S max-component-handles`).
    pub max_component_handles: Option<usize>,
    /// How much of a request body is taken, and how long the next piece may take.
    pub body: crate::body::BodyLimits,
}

/// Which limit a request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    Memory { requested: usize, limit: usize },
    TableElements { requested: usize, limit: usize },
}

/// Enforces [`Limits`] for one store and records the first limit hit.
pub struct Limiter {
    inner: StoreLimits,
    max_memory_size: Option<usize>,
    max_table_elements: Option<usize>,
    pub hit: Option<LimitHit>,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        let mut builder =
            StoreLimitsBuilder::new().trap_on_grow_failure(limits.trap_on_grow_failure);
        if let Some(max) = limits.max_memory_size {
            builder = builder.memory_size(max);
        }
        if let Some(max) = limits.max_table_elements {
            builder = builder.table_elements(max);
        }
        if let Some(max) = limits.max_instances {
            builder = builder.instances(max);
        }
        if let Some(max) = limits.max_tables {
            builder = builder.tables(max);
        }
        if let Some(max) = limits.max_memories {
            builder = builder.memories(max);
        }
        Limiter {
            inner: builder.build(),
            max_memory_size: limits.max_memory_size,
            max_table_elements: limits.max_table_elements,
            hit: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(limit) = self.max_memory_size.filter(|limit| desired > *limit) {
            self.hit.get_or_insert(LimitHit::Memory {
                requested: desired,
                limit,
            });
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(limit) = self.max_table_elements.filter(|limit| desired > *limit) {
            self.hit.get_or_insert(LimitHit::TableElements {
                requested: desired,
                limit,
            });
        }
        self.inner.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// `500ms`, `30s`, `2m`, `1h`, or a number of seconds; `us` (`μs`) and `ns` as `wasmtime serve`
/// takes them too.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format_err!("`{s}` is not a duration (500ms, 30s, 2m, 1h)"))?;
    Ok(match unit {
        "ns" => Duration::from_nanos(n),
        "us" | "μs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(
            n.checked_mul(60)
                .ok_or_else(|| format_err!("`{s}` is too long"))?,
        ),
        "h" => Duration::from_secs(
            n.checked_mul(3600)
                .ok_or_else(|| format_err!("`{s}` is too long"))?,
        ),
        _ => bail!("`{s}` is not a duration (500ms, 30s, 2m, 1h)"),
    })
}

/// A number of bytes, with an optional K, M or G (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let (number, shift) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format_err!("`{s}` is not a size (bytes, or with K, M or G)"))
}
