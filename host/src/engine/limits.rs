//! Per-instance resource limits, enforced while the guest runs.

use wasmtime::ResourceLimiter;

/// The guest tried to grow its memory past its cap. Raised as a trap, so the
/// instance stops there and the dispatcher can say why.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub requested: usize,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the component exceeded its memory limit of {} MiB (it asked for {} MiB)",
            self.limit >> 20,
            self.requested.div_ceil(1 << 20)
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// Memories, tables and core instances one component may have (one
/// store's instance): spin-sdk's and the route groups' have one or two
/// memories, a few tables, a handful of core instances. Without a bound
/// one upload could take every slot of the host's instance pool, and its
/// memories each up to the memory limit.
pub const MEMORIES_PER_COMPONENT: u32 = 8;
pub const TABLES_PER_COMPONENT: u32 = 16;
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 64;

/// Caps linear memory (all of a store's memories together) and table
/// growth for one store.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimiter {
    pub max_memory: usize,
    pub max_table_elements: usize,
    /// What the store's memories hold now, together.
    pub used: usize,
}

impl MemoryLimiter {
    pub fn new(max_memory: usize, max_table_elements: usize) -> Self {
        Self {
            max_memory,
            max_table_elements,
            used: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.used - current.min(self.used)).saturating_add(desired);
        if total > self.max_memory {
            return Err(MemoryLimitExceeded {
                limit: self.max_memory,
                requested: total,
            }
            .into());
        }
        self.used = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        TABLES_PER_COMPONENT as usize
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stores_memories_share_one_limit() {
        let mut limiter = MemoryLimiter::new(10 << 20, 100);
        // Two memories of 4 MiB each at instantiation: 8 MiB in all.
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        // The first grows to 6 MiB: 10 in all, the limit.
        assert!(limiter.memory_growing(4 << 20, 6 << 20, None).unwrap());
        // A third memory of one page is past it, though small alone.
        let refused = limiter.memory_growing(0, 64 << 10, None).unwrap_err();
        let refused = refused.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!(refused.limit, 10 << 20);
        assert_eq!(refused.requested, (10 << 20) + (64 << 10));
        // One memory past the limit alone, as before.
        let mut alone = MemoryLimiter::new(10 << 20, 100);
        assert!(alone.memory_growing(0, 11 << 20, None).is_err());
        assert!(alone.memory_growing(0, 10 << 20, None).unwrap());
    }
}
