//! The adapter host: loads adapter components and runs them sandboxed.
//!
//! This module alone names wasmtime types; everything it exposes is a plain
//! Rust type from [`types`]. It owns the engine, the linker, the epoch
//! ticker, the compiled-component cache and the spawn policy. It does not
//! spawn processes or touch sockets: the session layer does that with the
//! spawn specs this module has checked.
//!
//! Each session with translation owns one [`AdapterInstance`] (one wasmtime
//! `Store`); a trap or budget overrun poisons that instance only.

mod bindings;
pub mod builtin;
pub mod cache;
mod engine;
mod logstream;
pub mod policy;
pub mod types;
mod versions;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny};
use wasmtime::{Engine, Store};

use bindings::{HostState, wit};
pub use types::*;
use versions::{Exports, Pre};

/// Budgets applied to every adapter instance.
#[derive(Debug, Clone, Copy)]
pub struct AdapterLimits {
    /// Longest a single guest call may run before it traps.
    pub call_budget: Duration,
    /// Extra time a translation call gets per KiB of its input: the budget
    /// stops runaway loops, not work that grows with the record (a large
    /// tool output through an interpreted adapter).
    pub call_budget_per_kib: Duration,
    /// Largest linear memory an instance may grow to.
    pub memory_bytes: usize,
}

/// Extra budget per KiB of a call's input (not a setting).
const CALL_BUDGET_PER_KIB: Duration = Duration::from_millis(1);

/// The most guest time one call may get, however large its input (unless
/// the configured base budget is larger): the per-KiB growth is for work
/// that grows with the record, and without a cap a looping adapter fed a
/// 16 MiB line would burn 16 s of a core per line.
pub const MAX_CALL_BUDGET: Duration = Duration::from_secs(2);

/// A translated record may be at most this fraction of an instance's memory
/// cap (a sixteenth: 4 MiB of the default 64 MiB). Translating a record
/// holds several copies of it at once (the line, its parsed form, and each
/// record made from it: the claude-code adapter emits an assistant text as
/// a delta, a block end, a message end, a turn end and an agent end), plus
/// the history the adapter keeps; a larger record is dropped by the host
/// and reported (`amarre.record_dropped`, reason `adapter_limit`) instead of
/// running the adapter out of memory, which would end the session.
pub const RECORD_LIMIT_DIVISOR: usize = 16;

impl From<&crate::config::Limits> for AdapterLimits {
    fn from(limits: &crate::config::Limits) -> Self {
        AdapterLimits {
            call_budget: limits.adapter_call,
            call_budget_per_kib: CALL_BUDGET_PER_KIB,
            memory_bytes: limits.adapter_memory_bytes,
        }
    }
}

/// The configuration's defaults (declared once, in `config::settings`).
impl Default for AdapterLimits {
    fn default() -> Self {
        AdapterLimits::from(&crate::config::Limits::default())
    }
}

/// Where a loaded adapter came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSource {
    /// Embedded in the binary under this name.
    Builtin(String),
    /// Loaded from a `.wasm` file.
    File(PathBuf),
}

impl std::fmt::Display for AdapterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterSource::Builtin(name) => write!(f, "built-in adapter `{name}`"),
            AdapterSource::File(path) => write!(f, "adapter {}", path.display()),
        }
    }
}

/// Why a component could not be loaded as an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// The process's adapter runtime. Cheap to clone.
#[derive(Clone)]
pub struct AdapterHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<HostState>,
    ticker: Arc<engine::Ticker>,
    limits: AdapterLimits,
    /// Pre-instantiated components by content hash: a component is compiled
    /// once per process whatever loads it.
    compiled: Mutex<HashMap<String, Pre>>,
    /// Compiled components on disk, across restarts.
    disk: Option<cache::DiskCache>,
    compilations: AtomicU64,
    disk_hits: AtomicU64,
    calls: AtomicU64,
    traps: AtomicU64,
}

impl AdapterHost {
    /// Creates the engine, the linker and the epoch ticker, without a disk
    /// cache.
    pub fn new(limits: AdapterLimits) -> anyhow::Result<AdapterHost> {
        AdapterHost::with_cache(limits, None)
    }

    /// Like [`AdapterHost::new`], with compiled components kept in
    /// `cache_dir`. A directory that cannot be created is logged and the
    /// host runs without it.
    pub fn with_cache(
        limits: AdapterLimits,
        cache_dir: Option<&Path>,
    ) -> anyhow::Result<AdapterHost> {
        let engine = engine::build_engine()?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("failed to link WASI: {e}"))?;
        bindings::Adapter::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("failed to link the host interface: {e}"))?;
        versions::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("failed to link the 0.2.0 host interface: {e}"))?;
        // A tenth of the budget per tick keeps the overrun small; never
        // tick faster than every millisecond nor slower than every 10 ms.
        let tick =
            (limits.call_budget / 10).clamp(Duration::from_millis(1), Duration::from_millis(10));
        let ticker = engine::Ticker::start(&engine, tick)?;
        let disk = cache_dir.and_then(|dir| match cache::DiskCache::open(dir, &engine) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{e}; compiling adapters at every start");
                None
            }
        });
        Ok(AdapterHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                ticker,
                limits,
                compiled: Mutex::new(HashMap::new()),
                disk,
                compilations: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                traps: AtomicU64::new(0),
            }),
        })
    }

    /// The budgets instances run with.
    pub fn limits(&self) -> AdapterLimits {
        self.inner.limits
    }

    /// How many components this process has compiled with Cranelift
    /// (misses of both the in-memory and the disk cache).
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// Guest calls made, and how many of them trapped.
    pub fn calls_and_traps(&self) -> (u64, u64) {
        (
            self.inner.calls.load(Ordering::Relaxed),
            self.inner.traps.load(Ordering::Relaxed),
        )
    }

    /// How many components were loaded from the disk cache.
    pub fn disk_cache_hits(&self) -> u64 {
        self.inner.disk_hits.load(Ordering::Relaxed)
    }

    /// The disk cache directory, if one is in use.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.disk.as_ref().map(|d| d.dir())
    }

    /// Loads a built-in adapter by name.
    pub async fn load_builtin(&self, name: &str) -> Result<Arc<Adapter>, LoadError> {
        let bytes = builtin::bytes(name).ok_or_else(|| {
            LoadError(format!(
                "unknown built-in adapter `{name}` (built-ins: {})",
                builtin::names().join(", ")
            ))
        })?;
        self.load(bytes.to_vec(), AdapterSource::Builtin(name.to_owned()))
            .await
    }

    /// Loads an adapter component from a file.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<Adapter>, LoadError> {
        let bytes = read_component_file(path).await.map_err(LoadError)?;
        self.load(bytes, AdapterSource::File(path.to_owned())).await
    }

    /// Compiles (or finds in the cache), validates and describes a component.
    pub async fn load(
        &self,
        bytes: Vec<u8>,
        source: AdapterSource,
    ) -> Result<Arc<Adapter>, LoadError> {
        let hash = content_hash(&bytes);
        let cached = self.lock_compiled().get(&hash).cloned();
        let mut compiled = false;
        let pre = match cached {
            Some(pre) => pre,
            None => {
                let host = self.clone();
                let src = source.clone();
                let key = hash.clone();
                // Compiling takes tens of milliseconds to seconds: never on
                // the async runtime's workers.
                let (pre, fresh) =
                    tokio::task::spawn_blocking(move || host.compile(&bytes, &key, &src))
                        .await
                        .map_err(|e| {
                            LoadError(format!("failed to load {source}: compile task failed: {e}"))
                        })??;
                compiled = fresh;
                self.lock_compiled().insert(hash.clone(), pre.clone());
                pre
            }
        };
        let label: Arc<str> = Arc::from(source.to_string());
        let mut instance = AdapterInstance::new(self.inner.clone(), &pre, label)
            .await
            .map_err(|e| LoadError(format!("failed to instantiate {source}: {}", e.detail())))?;
        let info = instance
            .info()
            .await
            .map_err(|e| LoadError(format!("{source}: `info` failed: {}", e.detail())))?;
        validate_info(&info).map_err(|m| LoadError(format!("{source}: {m}")))?;
        Ok(Arc::new(Adapter {
            info,
            hash,
            source,
            loaded_at_ms: crate::util::now_ms(),
            compiled,
            pre,
            host: self.inner.clone(),
        }))
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pre>> {
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Compiles a component and checks it is an adapter of a WIT version
    /// this host has bindings for. Blocking.
    /// Returns the pre-instantiated component and whether Cranelift ran.
    fn compile(
        &self,
        bytes: &[u8],
        hash: &str,
        source: &AdapterSource,
    ) -> Result<(Pre, bool), LoadError> {
        let engine = &self.inner.engine;
        let cached = match &self.inner.disk {
            Some(disk) => match disk.load(engine, hash) {
                cache::Lookup::Hit(c) => Some(c),
                cache::Lookup::Miss(reason) => {
                    if let Some(r) = reason {
                        tracing::warn!("component cache: {r}; recompiling {source}");
                    }
                    None
                }
            },
            None => None,
        };
        let fresh = cached.is_none();
        let component = match cached {
            Some(c) => {
                self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
                c
            }
            None => {
                let c = Component::new(engine, bytes)
                    .map_err(|e| LoadError(format!("failed to compile {source}: {e:#}")))?;
                self.inner.compilations.fetch_add(1, Ordering::Relaxed);
                if let Some(disk) = &self.inner.disk
                    && let Err(e) = disk.store(hash, &c)
                {
                    tracing::warn!("component cache: {e}");
                }
                c
            }
        };
        let version = check_wit_version(engine, &component)
            .map_err(|m| LoadError(format!("{source}: {m}")))?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError(format!("{source} cannot be linked: {e:#}")))?;
        Pre::new(version, pre)
            .map(|pre| (pre, fresh))
            .map_err(|e| LoadError(format!("{source} is not an amarre adapter: {e:#}")))
    }
}

/// Refuses components built against an `amarre:adapter` version this host
/// has no bindings for, with a message that says which; returns the version.
fn check_wit_version(engine: &Engine, component: &Component) -> Result<&'static str, String> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .exports(engine)
        .map(|(n, _)| n.to_owned())
        .chain(ty.imports(engine).map(|(n, _)| n.to_owned()))
        .collect();
    let ours: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("amarre:adapter/"))
        .collect();
    if ours.is_empty() {
        return Err(format!(
            "not an amarre adapter: it neither imports nor exports `amarre:adapter` (it exports: {})",
            ty.exports(engine)
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut found: Option<&'static str> = None;
    for name in ours {
        let version = name.rsplit_once('@').map(|(_, v)| v).unwrap_or("none");
        let Some(known) = WIT_VERSIONS.iter().copied().find(|v| *v == version) else {
            return Err(format!(
                "built against WIT package amarre:adapter@{version} (`{name}`); this host has bindings for {} only",
                WIT_VERSIONS
                    .iter()
                    .map(|v| format!("amarre:adapter@{v}"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        };
        match found {
            Some(other) if other != known => {
                return Err(format!(
                    "mixes WIT packages amarre:adapter@{other} and amarre:adapter@{known} (`{name}`)"
                ));
            }
            _ => found = Some(known),
        }
    }
    Ok(found.unwrap_or(WIT_VERSION))
}

fn validate_info(info: &AdapterInfo) -> Result<(), String> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(format!(
            "invalid adapter name `{}` (lowercase letters, digits and `-`, at most 64)",
            info.name
        ));
    }
    if info.version.is_empty() || info.version.len() > 64 {
        return Err(format!("invalid adapter version `{}`", info.version));
    }
    Ok(())
}

/// The content hash of a component (or any bytes): SHA-256, lowercase hex.
/// The one definition, used for an adapter's identity, reload's "did it
/// change" and the disk cache's sidecars.
pub fn content_hash(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One loaded, validated version of an adapter component.
pub struct Adapter {
    /// What the adapter said about itself.
    pub info: AdapterInfo,
    /// SHA-256 of the component's bytes, lowercase hex.
    pub hash: String,
    /// Where it came from.
    pub source: AdapterSource,
    /// When it was loaded (ms since the epoch).
    pub loaded_at_ms: u64,
    /// Whether this load ran Cranelift (false: a cache had it).
    pub compiled: bool,
    pre: Pre,
    host: Arc<HostInner>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("info", &self.info)
            .field("hash", &self.hash)
            .field("source", &self.source)
            .finish()
    }
}

impl Adapter {
    /// `name@version`.
    pub fn label(&self) -> String {
        self.info.label()
    }

    /// A fresh instance (its own store, memory and budget).
    pub async fn instantiate(&self) -> Result<AdapterInstance, CallError> {
        AdapterInstance::new(self.host.clone(), &self.pre, Arc::from(self.label())).await
    }

    /// Checks a spawn spec against the policy for this adapter.
    pub fn check_spawn(
        &self,
        spec: &SpawnSpec,
        operator: &policy::OperatorPrograms,
    ) -> Result<(), policy::SpawnRefusal> {
        policy::check(&self.info, spec, operator)
    }
}

/// One instance of an adapter: a wasmtime store, its exports and, once
/// created, the session's translator resource.
pub struct AdapterInstance {
    store: Store<HostState>,
    exports: Exports,
    session: Option<ResourceAny>,
    poisoned: Option<String>,
    host: Arc<HostInner>,
    /// The largest input a call of this instance was given: an adapter that
    /// took in a large record may emit it again later from a small one (a
    /// 4 MiB assistant message goes out once more in `turn_end` and
    /// `agent_end` when the small `result` line arrives), so every call's
    /// budget grows with it.
    largest_input: usize,
}

impl AdapterInstance {
    async fn new(
        host: Arc<HostInner>,
        pre: &Pre,
        label: Arc<str>,
    ) -> Result<AdapterInstance, CallError> {
        let mut store = Store::new(
            &host.engine,
            HostState::new(label.clone(), host.limits.memory_bytes, host.ticker.tick()),
        );
        store.limiter(|s| &mut s.limits);
        // At every epoch the call yields to the runtime or traps when its
        // budget is spent (`engine::CallBudget`): a long call never holds a
        // runtime worker for more than about a tick.
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().budget.on_epoch()));
        store.data_mut().budget.start(host.limits.call_budget);
        store.set_epoch_deadline(1);
        let exports = {
            let _in_flight = host.ticker.enter();
            pre.instantiate(&mut store).await
        };
        let exports = exports.map_err(|e| CallError::Trap {
            adapter: label.to_string(),
            detail: describe_trap(&e, &host.limits),
        })?;
        Ok(AdapterInstance {
            store,
            exports,
            session: None,
            poisoned: None,
            host,
            largest_input: 0,
        })
    }

    /// `name@version` of this instance's adapter.
    pub fn label(&self) -> String {
        self.store.data().label.to_string()
    }

    /// Switches the host's clock and ids to transcript mode (fixed time,
    /// counted ids).
    pub(crate) fn make_deterministic(&mut self) {
        self.store.data_mut().deterministic = Some(0);
    }

    /// Bytes of linear memory this instance holds (it never shrinks).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes
    }

    /// The largest record [`Self::from_agent`] and [`Self::from_client`]
    /// pass to the guest ([`RECORD_LIMIT_DIVISOR`]).
    pub fn record_limit(&self) -> usize {
        self.host.limits.memory_bytes / RECORD_LIMIT_DIVISOR
    }

    fn check_size(&self, bytes: usize) -> Result<(), CallError> {
        let limit = self.record_limit();
        if bytes > limit {
            return Err(CallError::TooLarge {
                adapter: self.label(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// Whether an earlier call trapped.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// The one way into the guest: checks the instance is usable, sets the
    /// call's budget (it grows by `call_budget_per_kib` for each whole KiB
    /// of the largest input the instance was given, this one included, up
    /// to [`MAX_CALL_BUDGET`]), runs `f` with the epoch
    /// ticker on, and turns a trap into a poisoned instance. Every export
    /// goes through here. The call runs on the calling task and yields to
    /// the runtime at every epoch tick, so it never blocks other sessions
    /// or the control plane (`engine::CallBudget`).
    async fn call<R>(
        &mut self,
        input: usize,
        f: impl AsyncFnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        if let Some(detail) = &self.poisoned {
            return Err(CallError::Trap {
                adapter: self.label(),
                detail: format!("unusable after an earlier trap: {detail}"),
            });
        }
        self.largest_input = self.largest_input.max(input);
        let budget = call_budget(&self.host.limits, self.largest_input);
        self.store.data_mut().budget.start(budget);
        self.store.set_epoch_deadline(1);
        self.host.calls.fetch_add(1, Ordering::Relaxed);
        let result = {
            let _in_flight = self.host.ticker.enter();
            f(&self.exports, &mut self.store).await
        };
        result.map_err(|e| {
            self.host.traps.fetch_add(1, Ordering::Relaxed);
            let detail = describe_trap(&e, &self.host.limits);
            self.poisoned = Some(detail.clone());
            CallError::Trap {
                adapter: self.label(),
                detail,
            }
        })
    }

    fn adapter_error(&self, error: AdapterError) -> CallError {
        CallError::Adapter {
            adapter: self.label(),
            error,
        }
    }

    fn session(&self) -> Result<ResourceAny, CallError> {
        self.session.ok_or_else(|| CallError::Adapter {
            adapter: self.label(),
            error: AdapterError::Internal("no translator session was created".into()),
        })
    }

    /// Calls `info`.
    pub async fn info(&mut self) -> Result<AdapterInfo, CallError> {
        self.call(0, async |x, store| x.info(store).await).await
    }

    /// Calls `spawn`.
    pub async fn spawn(&mut self, request: &SpawnRequest) -> Result<SpawnSpec, CallError> {
        match self
            .call(0, async |x, store| x.spawn(store, request).await)
            .await?
        {
            Ok(spec) => Ok(spec),
            Err(e) => Err(self.adapter_error(e)),
        }
    }

    /// Creates the translator session (with hand-over state, if any).
    pub async fn create_session(
        &mut self,
        request: &SpawnRequest,
        saved: Option<&str>,
    ) -> Result<(), CallError> {
        let created = self
            .call(0, async |x, store| x.create(store, request, saved).await)
            .await?;
        match created {
            Ok(session) => {
                self.session = Some(session);
                Ok(())
            }
            Err(e) => Err(self.adapter_error(e)),
        }
    }

    /// Calls the translator's `handshake` (WIT 0.2.0; a 0.1.0 instance
    /// makes no guest call and counts none): records to deliver before
    /// any other.
    pub async fn handshake(&mut self) -> Result<Vec<Emit>, CallError> {
        if !self.exports.has_handshake() {
            return Ok(Vec::new());
        }
        let session = self.session()?;
        match self
            .call(0, async |x, store| x.handshake(store, session).await)
            .await?
        {
            Ok(emits) => Ok(emits),
            Err(e) => Err(self.adapter_error(e)),
        }
    }

    /// Translates a client record.
    /// A record over [`Self::record_limit`] is not passed to the guest
    /// ([`CallError::TooLarge`]).
    pub async fn from_client(&mut self, record: &str) -> Result<Vec<Emit>, CallError> {
        let session = self.session()?;
        self.check_size(record.len())?;
        match self
            .call(record.len(), async |x, store| {
                x.from_client(store, session, record).await
            })
            .await?
        {
            Ok(emits) => Ok(emits),
            Err(e) => Err(self.adapter_error(e)),
        }
    }

    /// Translates an agent line.
    /// A line over [`Self::record_limit`] is not passed to the guest
    /// ([`CallError::TooLarge`]).
    pub async fn from_agent(&mut self, line: &str) -> Result<Vec<Emit>, CallError> {
        let session = self.session()?;
        self.check_size(line.len())?;
        match self
            .call(line.len(), async |x, store| {
                x.from_agent(store, session, line).await
            })
            .await?
        {
            Ok(emits) => Ok(emits),
            Err(e) => Err(self.adapter_error(e)),
        }
    }

    /// Tells the translator the agent exited.
    pub async fn on_exit(
        &mut self,
        code: Option<i32>,
        signal: Option<&str>,
    ) -> Result<Vec<Emit>, CallError> {
        let session = self.session()?;
        self.call(0, async |x, store| {
            x.on_exit(store, session, code, signal).await
        })
        .await
    }

    /// Asks the translator for hand-over state.
    pub async fn save(&mut self) -> Result<Option<String>, CallError> {
        let session = self.session()?;
        self.call(0, async |x, store| x.save(store, session).await)
            .await
    }
}

/// The guest time a call with `input` bytes gets: the base budget plus
/// `call_budget_per_kib` per whole KiB, at most [`MAX_CALL_BUDGET`] (or the
/// base budget, if that is larger).
pub fn call_budget(limits: &AdapterLimits, input: usize) -> Duration {
    let kib = u32::try_from(input / 1024).unwrap_or(u32::MAX);
    let grown = limits
        .call_budget
        .saturating_add(limits.call_budget_per_kib.saturating_mul(kib));
    grown.min(MAX_CALL_BUDGET.max(limits.call_budget))
}

/// Says why a guest call failed, in terms an operator understands.
fn describe_trap(error: &wasmtime::Error, limits: &AdapterLimits) -> String {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::Interrupt => {
                return format!(
                    "exceeded its time budget of {} ms per call (+{} ms per KiB of the largest input it was given, at most {} ms)",
                    limits.call_budget.as_millis(),
                    limits.call_budget_per_kib.as_millis(),
                    MAX_CALL_BUDGET.max(limits.call_budget).as_millis()
                );
            }
            wasmtime::Trap::StackOverflow => return "overflowed its stack".into(),
            _ => {}
        }
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") || text.contains("memory allocation of") {
        return format!(
            "exceeded its memory cap of {} MiB ({text})",
            limits.memory_bytes >> 20
        );
    }
    text
}

impl From<wit::Capability> for Capability {
    fn from(c: wit::Capability) -> Self {
        match c {
            wit::Capability::StateHandover => Capability::StateHandover,
            wit::Capability::PermissionGate => Capability::PermissionGate,
            wit::Capability::PlanCapture => Capability::PlanCapture,
            wit::Capability::PiDialect => Capability::PiDialect,
        }
    }
}

impl From<wit::AdapterInfo> for AdapterInfo {
    fn from(i: wit::AdapterInfo) -> Self {
        AdapterInfo {
            name: i.name,
            version: i.version,
            programs: i.programs,
            program_env: i.program_env,
            capabilities: i.capabilities.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&SpawnRequest> for wit::SpawnRequest {
    fn from(r: &SpawnRequest) -> Self {
        wit::SpawnRequest {
            session_id: r.session_id.clone(),
            instance_id: r.instance_id.clone(),
            cwd: r.cwd.clone(),
            env: r.env.clone(),
            command: r.command.clone(),
            args: r.args.clone(),
        }
    }
}

impl From<wit::SpawnSpec> for SpawnSpec {
    fn from(s: wit::SpawnSpec) -> Self {
        SpawnSpec {
            command: s.command,
            args: s.args,
            env: s.env,
            cwd: s.cwd,
            files: s
                .files
                .into_iter()
                .map(|f| FileSpec {
                    path: f.path,
                    contents: f.contents,
                    executable: f.executable,
                })
                .collect(),
            passthrough_from_client: s.passthrough_from_client,
            passthrough_from_agent: s.passthrough_from_agent,
            resume_token: None,
        }
    }
}

impl From<wit::Emit> for Emit {
    fn from(e: wit::Emit) -> Self {
        match e {
            wit::Emit::ToAgent(s) => Emit::ToAgent(s),
            wit::Emit::ToClient(s) => Emit::ToClient(s),
        }
    }
}

impl From<wit::AdapterError> for AdapterError {
    fn from(e: wit::AdapterError) -> Self {
        match e {
            wit::AdapterError::InvalidFrame(m) => AdapterError::InvalidFrame(m),
            wit::AdapterError::Unsupported(m) => AdapterError::Unsupported(m),
            wit::AdapterError::IncompatibleState(m) => AdapterError::IncompatibleState(m),
            wit::AdapterError::Internal(m) => AdapterError::Internal(m),
        }
    }
}

/// The largest adapter component file read (docs/security.md): the
/// JavaScript components are about 12 MiB.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Reads an adapter component file, refusing one over
/// [`MAX_COMPONENT_BYTES`] without reading it (nor more of it than the
/// cap, should it grow while read).
pub async fn read_component_file(path: &Path) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let failed = |e: std::io::Error| format!("failed to read adapter {}: {e}", path.display());
    let too_large = |len: u64| {
        format!(
            "adapter {} is too large ({len} bytes; components are limited to {MAX_COMPONENT_BYTES} bytes)",
            path.display()
        )
    };
    let file = tokio::fs::File::open(path).await.map_err(failed)?;
    let len = file.metadata().await.map_err(failed)?.len();
    if len > MAX_COMPONENT_BYTES {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
