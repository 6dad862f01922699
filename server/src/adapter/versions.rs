//! The WIT package versions this host loads side by side (docs/wit-versioning.md):
//! `amarre:adapter@0.1.0` (frozen, `bindings`) and `amarre:adapter@0.2.0`
//! (`wit/0.2.0/adapter.wit`, bound here). [`Pre`] and [`Exports`] hide
//! which one a component was built against; everything they return is a
//! host type from `types`, so 0.1.0 components simply never produce the
//! newer values (a handshake is empty for them).

use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

use super::bindings::{self, HostState};
use super::types::*;

/// Bindings for `wit/0.2.0/adapter.wit`.
mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0/adapter.wit",
        world: "amarre:adapter/adapter@0.2.0",
        exports: { default: async },
    });

    pub use self::amarre::adapter::types as wit;
}

use v2::wit as w2;

/// Adds the 0.2.0 host interface to a linker that has the 0.1.0 one.
pub(super) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    v2::Adapter::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |s| s)
}

impl w2::Host for HostState {}

impl v2::amarre::adapter::host::Host for HostState {
    fn log(&mut self, level: w2::LogLevel, message: String) {
        use bindings::wit::LogLevel as L1;
        let level = match level {
            w2::LogLevel::Trace => L1::Trace,
            w2::LogLevel::Debug => L1::Debug,
            w2::LogLevel::Info => L1::Info,
            w2::LogLevel::Warn => L1::Warn,
            w2::LogLevel::Error => L1::Error,
        };
        bindings::amarre::adapter::host::Host::log(self, level, message)
    }

    fn now_ms(&mut self) -> u64 {
        bindings::amarre::adapter::host::Host::now_ms(self)
    }

    fn new_id(&mut self) -> String {
        bindings::amarre::adapter::host::Host::new_id(self)
    }
}

/// A component pre-instantiated against the bindings of its WIT version.
#[derive(Clone)]
pub(super) enum Pre {
    V1(bindings::AdapterPre<HostState>),
    V2(v2::AdapterPre<HostState>),
}

impl Pre {
    /// Checks the component's exports against the bindings of `version`.
    pub(super) fn new(version: &str, pre: InstancePre<HostState>) -> wasmtime::Result<Pre> {
        match version {
            "0.2.0" => v2::AdapterPre::new(pre).map(Pre::V2),
            _ => bindings::AdapterPre::new(pre).map(Pre::V1),
        }
    }

    pub(super) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Exports> {
        match self {
            Pre::V1(p) => p.instantiate_async(store).await.map(Exports::V1),
            Pre::V2(p) => p.instantiate_async(store).await.map(Exports::V2),
        }
    }
}

/// An instance's exports.
pub(super) enum Exports {
    V1(bindings::Adapter),
    V2(v2::Adapter),
}

type Call<T> = wasmtime::Result<Result<T, AdapterError>>;

fn emits1(e: Vec<bindings::wit::Emit>) -> Vec<Emit> {
    e.into_iter().map(Into::into).collect()
}

fn emits2(e: Vec<w2::Emit>) -> Vec<Emit> {
    e.into_iter().map(Into::into).collect()
}

fn lift<T, U, E: Into<AdapterError>>(
    r: wasmtime::Result<Result<T, E>>,
    f: impl FnOnce(T) -> U,
) -> Call<U> {
    r.map(|inner| inner.map(f).map_err(Into::into))
}

// The method names mirror the WIT (`from-client`, `from-agent`).
#[allow(clippy::wrong_self_convention)]
impl Exports {
    /// Whether the component's WIT version has `handshake` (0.2.0).
    pub(super) fn has_handshake(&self) -> bool {
        matches!(self, Exports::V2(_))
    }

    pub(super) async fn info(&self, store: &mut Store<HostState>) -> wasmtime::Result<AdapterInfo> {
        match self {
            Exports::V1(e) => e.call_info(store).await.map(Into::into),
            Exports::V2(e) => e.call_info(store).await.map(Into::into),
        }
    }

    pub(super) async fn spawn(
        &self,
        store: &mut Store<HostState>,
        request: &SpawnRequest,
    ) -> Call<SpawnSpec> {
        match self {
            Exports::V1(e) => lift(e.call_spawn(store, &request.into()).await, Into::into),
            Exports::V2(e) => lift(e.call_spawn(store, &request.into()).await, Into::into),
        }
    }

    pub(super) async fn create(
        &self,
        store: &mut Store<HostState>,
        request: &SpawnRequest,
        saved: Option<&str>,
    ) -> Call<ResourceAny> {
        match self {
            Exports::V1(e) => {
                let r = e
                    .amarre_adapter_translator()
                    .session()
                    .call_create(store, &request.into(), saved)
                    .await;
                lift(r, |s| s)
            }
            Exports::V2(e) => {
                let r = e
                    .amarre_adapter_translator()
                    .session()
                    .call_create(store, &request.into(), saved)
                    .await;
                lift(r, |s| s)
            }
        }
    }

    pub(super) async fn handshake(
        &self,
        store: &mut Store<HostState>,
        session: ResourceAny,
    ) -> Call<Vec<Emit>> {
        match self {
            Exports::V1(_) => Ok(Ok(Vec::new())),
            Exports::V2(e) => {
                let r = e
                    .amarre_adapter_translator()
                    .session()
                    .call_handshake(store, session)
                    .await;
                lift(r, emits2)
            }
        }
    }

    pub(super) async fn from_client(
        &self,
        store: &mut Store<HostState>,
        session: ResourceAny,
        record: &str,
    ) -> Call<Vec<Emit>> {
        match self {
            Exports::V1(e) => {
                let r = e
                    .amarre_adapter_translator()
                    .session()
                    .call_from_client(store, session, record)
                    .await;
                lift(r, emits1)
            }
            Exports::V2(e) => {
                let r = e
                    .amarre_adapter_translator()
                    .session()
                    .call_from_client(store, session, record)
                    .await;
                lift(r, emits2)
            }
        }
    }

    pub(super) async fn from_agent(
        &self,
        store: &mut Store<HostState>,
        session: ResourceAny,
        line: &str,
    ) -> Call<Vec<Emit>> {
        match self {
            Exports::V1(e) => {
                let r = e
                    .amarre_adapter_translator()
                    .session()
                    .call_from_agent(store, session, line)
                    .await;
                lift(r, emits1)
            }
            Exports::V2(e) => {
                let r = e
                    .amarre_adapter_translator()
                    .session()
                    .call_from_agent(store, session, line)
                    .await;
                lift(r, emits2)
            }
        }
    }

    pub(super) async fn on_exit(
        &self,
        store: &mut Store<HostState>,
        session: ResourceAny,
        code: Option<i32>,
        signal: Option<&str>,
    ) -> wasmtime::Result<Vec<Emit>> {
        match self {
            Exports::V1(e) => e
                .amarre_adapter_translator()
                .session()
                .call_on_exit(store, session, code, signal)
                .await
                .map(emits1),
            Exports::V2(e) => e
                .amarre_adapter_translator()
                .session()
                .call_on_exit(store, session, code, signal)
                .await
                .map(emits2),
        }
    }

    pub(super) async fn save(
        &self,
        store: &mut Store<HostState>,
        session: ResourceAny,
    ) -> wasmtime::Result<Option<String>> {
        match self {
            Exports::V1(e) => {
                e.amarre_adapter_translator()
                    .session()
                    .call_save(store, session)
                    .await
            }
            Exports::V2(e) => {
                e.amarre_adapter_translator()
                    .session()
                    .call_save(store, session)
                    .await
            }
        }
    }
}

// ----- 0.2.0 conversions ------------------------------------------------------

impl From<w2::Capability> for Capability {
    fn from(c: w2::Capability) -> Self {
        match c {
            w2::Capability::StateHandover => Capability::StateHandover,
            w2::Capability::PermissionGate => Capability::PermissionGate,
            w2::Capability::PlanCapture => Capability::PlanCapture,
            w2::Capability::PiDialect => Capability::PiDialect,
            w2::Capability::Handshake => Capability::Handshake,
            w2::Capability::Resume => Capability::Resume,
            w2::Capability::AcpDialect => Capability::AcpDialect,
        }
    }
}

impl From<w2::AdapterInfo> for AdapterInfo {
    fn from(i: w2::AdapterInfo) -> Self {
        AdapterInfo {
            name: i.name,
            version: i.version,
            programs: i.programs,
            program_env: i.program_env,
            capabilities: i.capabilities.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&SpawnRequest> for w2::SpawnRequest {
    fn from(r: &SpawnRequest) -> Self {
        w2::SpawnRequest {
            session_id: r.session_id.clone(),
            instance_id: r.instance_id.clone(),
            cwd: r.cwd.clone(),
            env: r.env.clone(),
            command: r.command.clone(),
            args: r.args.clone(),
            work_dir: r.work_dir.clone(),
            resume_token: r.resume_token.clone(),
        }
    }
}

impl From<w2::SpawnSpec> for SpawnSpec {
    fn from(s: w2::SpawnSpec) -> Self {
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
            resume_token: s.resume_token,
        }
    }
}

impl From<w2::Emit> for Emit {
    fn from(e: w2::Emit) -> Self {
        match e {
            w2::Emit::ToAgent(s) => Emit::ToAgent(s),
            w2::Emit::ToClient(s) => Emit::ToClient(s),
            w2::Emit::ResumeToken(s) => Emit::ResumeToken(s),
        }
    }
}

impl From<w2::AdapterError> for AdapterError {
    fn from(e: w2::AdapterError) -> Self {
        match e {
            w2::AdapterError::InvalidFrame(m) => AdapterError::InvalidFrame(m),
            w2::AdapterError::Unsupported(m) => AdapterError::Unsupported(m),
            w2::AdapterError::IncompatibleState(m) => AdapterError::IncompatibleState(m),
            w2::AdapterError::Internal(m) => AdapterError::Internal(m),
        }
    }
}
