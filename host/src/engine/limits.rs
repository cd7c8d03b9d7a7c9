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

/// Caps linear memory and table growth for one store.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimiter {
    pub max_memory: usize,
    pub max_table_elements: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(MemoryLimitExceeded {
                limit: self.max_memory,
                requested: desired,
            }
            .into());
        }
        Ok(true)
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
