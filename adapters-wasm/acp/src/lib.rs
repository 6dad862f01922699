//! `acp`: drives any agent that speaks the Agent Client Protocol (ACP v1,
//! JSON-RPC 2.0 over stdio) and translates both ways between ACP and the pi
//! dialect the clients speak, with remote permission approval (as `select`
//! questions) and plan capture. AGENTS.md section 5 is the contract;
//! docs/adapters/acp.md the table as implemented.
//!
//! Spawn rules are in [`spawn`], the translation in [`translate`].

use amarre_adapter_sdk::*;

pub mod spawn;
pub mod translate;

use translate::{Clock, Out, Translator};

struct Acp;

/// The host's clock and ids.
struct HostClock;

impl Clock for HostClock {
    fn now_ms(&mut self) -> u64 {
        now_ms()
    }

    fn new_id(&mut self) -> String {
        new_id()
    }
}

/// The per-session translator as the SDK sees it.
pub struct AcpSession(Translator<HostClock>);

fn emits(out: Vec<Out>) -> Vec<Emit> {
    out.into_iter()
        .map(|o| match o {
            Out::Agent(a) => Emit::ToAgent(a),
            Out::Client(c) => Emit::ToClient(c),
            Out::Resume(t) => Emit::ResumeToken(t),
        })
        .collect()
}

impl Session for AcpSession {
    fn create(request: SpawnRequest, saved: Option<String>) -> Result<Self, AdapterError> {
        let setup = translate::Setup {
            cwd: request.work_dir.clone(),
            resume: request.resume_token.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Translator::new(HostClock, setup, saved.as_deref())
            .map(AcpSession)
            .map_err(|e| AdapterError::IncompatibleState(e.0))
    }

    fn handshake(&mut self) -> Result<Vec<Emit>, AdapterError> {
        Ok(emits(self.0.handshake()))
    }

    fn from_client(&mut self, record: String) -> Result<Vec<Emit>, AdapterError> {
        self.0
            .from_client(&record)
            .map(emits)
            .map_err(|e| AdapterError::InvalidFrame(e.0))
    }

    fn from_agent(&mut self, line: String) -> Result<Vec<Emit>, AdapterError> {
        self.0
            .from_agent(&line)
            .map(emits)
            .map_err(|e| AdapterError::InvalidFrame(e.0))
    }

    fn on_exit(&mut self, code: Option<i32>, signal: Option<String>) -> Vec<Emit> {
        emits(self.0.on_exit(code, signal.as_deref()))
    }

    fn save(&self) -> Option<String> {
        Some(self.0.save())
    }
}

impl Adapter for Acp {
    type Session = AcpSession;

    fn info() -> AdapterInfo {
        AdapterInfo::new("acp", env!("CARGO_PKG_VERSION")).capabilities([
            Capability::PermissionGate,
            Capability::PlanCapture,
            Capability::PiDialect,
            Capability::StateHandover,
            Capability::Handshake,
            Capability::Resume,
        ])
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        spawn::spec(&request, "acp")
    }
}

export_adapter!(Acp);
