//! Generated bindings for `wit/adapter.wit` and the per-store host state:
//! the `host` import (log, time, ids) and a WASI context that grants nothing.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "amarre:adapter/adapter@0.1.0",
    exports: { default: async },
});

pub use self::amarre::adapter::types as wit;

/// What each wasmtime `Store` holds.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: Limits,
    /// `name@version` (or the file name before the info is known), for logs.
    pub label: Arc<str>,
    /// Golden transcripts run with a fixed clock and counted ids, so that
    /// their expected output is deterministic (docs/transcripts.md).
    pub deterministic: Option<u64>,
    /// The running call's guest time (read by the epoch callback).
    pub budget: super::engine::CallBudget,
}

/// The time `now-ms` returns in transcript runs.
pub const TRANSCRIPT_NOW_MS: u64 = 1_700_000_000_000;

impl HostState {
    /// A store state with no files, no environment, no network, no
    /// arguments, an empty stdin, and stdout/stderr sent to `tracing`.
    pub fn new(label: Arc<str>, memory_bytes: usize, tick: std::time::Duration) -> HostState {
        let wasi = WasiCtxBuilder::new()
            .stdout(super::logstream::LogStream::new(label.clone(), false))
            .stderr(super::logstream::LogStream::new(label.clone(), true))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .memories(4)
            .tables(16)
            .instances(64)
            .trap_on_grow_failure(true)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits {
                caps: limits,
                memory_bytes: 0,
            },
            label,
            deterministic: None,
            budget: super::engine::CallBudget::new(tick),
        }
    }
}

/// The store's caps, and how much linear memory its instance holds.
pub struct Limits {
    caps: StoreLimits,
    /// Bytes of linear memory allocated (initial sizes plus growth).
    pub memory_bytes: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
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

impl wit::Host for HostState {}

impl self::amarre::adapter::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let adapter = &*self.label;
        match level {
            wit::LogLevel::Trace => {
                tracing::trace!(target: "amarre::adapter", adapter, "{message}")
            }
            wit::LogLevel::Debug => {
                tracing::debug!(target: "amarre::adapter", adapter, "{message}")
            }
            wit::LogLevel::Info => tracing::info!(target: "amarre::adapter", adapter, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(target: "amarre::adapter", adapter, "{message}"),
            wit::LogLevel::Error => {
                tracing::error!(target: "amarre::adapter", adapter, "{message}")
            }
        }
    }

    fn now_ms(&mut self) -> u64 {
        match self.deterministic {
            Some(_) => TRANSCRIPT_NOW_MS,
            None => crate::util::now_ms(),
        }
    }

    fn new_id(&mut self) -> String {
        match self.deterministic.as_mut() {
            Some(n) => {
                *n += 1;
                format!("00000000-0000-4000-8000-{:012}", *n)
            }
            None => uuid::Uuid::new_v4().to_string(),
        }
    }
}
