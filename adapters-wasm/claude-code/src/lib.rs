//! `claude-code`: drives the `claude` CLI over stream-json with stdio
//! permission prompts and translates both ways between Claude Code's
//! protocol and the pi dialect the clients speak, including remote
//! permission approval and plan capture. Only the `claude` binary is
//! needed (the original ran a separate SDK process for this).
//!
//! Spawn rules are in [`spawn`], the translation in [`translate`].

use amarre_adapter_sdk::*;

pub mod spawn;
pub mod translate;

use translate::{Clock, Out, Translator};

struct ClaudeCode;

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

/// The per-session translator as the SDK sees it, and the conversation's
/// `session_id` last reported to the host as the resume token.
pub struct ClaudeSession(Translator<HostClock>, Option<String>);

/// The `session_id` of a `system` `init` line (the start of every turn):
/// the conversation `--resume` continues. Other lines are not parsed.
fn init_session_id(line: &str) -> Option<String> {
    if !line.contains("\"init\"") || !line.contains("\"system\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["type"] != "system" || v["subtype"] != "init" {
        return None;
    }
    v["session_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn emits(out: Vec<Out>) -> Vec<Emit> {
    out.into_iter()
        .map(|o| match o {
            Out::Agent(a) => Emit::ToAgent(a),
            Out::Client(c) => Emit::ToClient(c),
        })
        .collect()
}

impl Session for ClaudeSession {
    fn create(request: SpawnRequest, saved: Option<String>) -> Result<Self, AdapterError> {
        Translator::new(HostClock, saved.as_deref())
            .map(|t| ClaudeSession(t, request.resume_token.clone()))
            .map_err(|e| AdapterError::IncompatibleState(e.0))
    }

    fn from_client(&mut self, record: String) -> Result<Vec<Emit>, AdapterError> {
        self.0
            .from_client(&record)
            .map(emits)
            .map_err(|e| AdapterError::InvalidFrame(e.0))
    }

    fn from_agent(&mut self, line: String) -> Result<Vec<Emit>, AdapterError> {
        let token = init_session_id(&line).filter(|id| self.1.as_ref() != Some(id));
        let mut out = self
            .0
            .from_agent(&line)
            .map(emits)
            .map_err(|e| AdapterError::InvalidFrame(e.0))?;
        if let Some(id) = token {
            self.1 = Some(id.clone());
            out.insert(0, Emit::ResumeToken(id));
        }
        Ok(out)
    }

    fn on_exit(&mut self, code: Option<i32>, signal: Option<String>) -> Vec<Emit> {
        emits(self.0.on_exit(code, signal.as_deref()))
    }

    fn save(&self) -> Option<String> {
        Some(self.0.save())
    }
}

impl Adapter for ClaudeCode {
    type Session = ClaudeSession;

    fn info() -> AdapterInfo {
        AdapterInfo::new("claude-code", env!("CARGO_PKG_VERSION"))
            .programs(["claude"])
            .program_env(["CLAUDE_BIN"])
            .capabilities([
                Capability::PermissionGate,
                Capability::PlanCapture,
                Capability::PiDialect,
                Capability::StateHandover,
                Capability::Resume,
            ])
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        Ok(spawn::spec(&request, request.resume_token.as_deref()))
    }
}

export_adapter!(ClaudeCode);
