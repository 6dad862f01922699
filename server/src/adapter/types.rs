//! Host-side mirrors of the WIT types (`wit/adapter.wit` and
//! `wit/0.2.0/adapter.wit`), so that the rest of the daemon never names
//! generated wasmtime bindings. They hold the newest package's fields; a
//! 0.1.0 component simply never sees or sets the newer ones.

use serde::Serialize;

/// The oldest WIT package version this host has bindings for (reported as
/// `witVersion`).
pub const WIT_VERSION: &str = "0.1.0";

/// Every WIT package version this host has bindings for.
pub const WIT_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// A feature an adapter declares (the WIT `capability` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    StateHandover,
    PermissionGate,
    PlanCapture,
    PiDialect,
    Handshake,
    Resume,
    AcpDialect,
}

impl Capability {
    /// The name used on the wire and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::StateHandover => "state-handover",
            Capability::PermissionGate => "permission-gate",
            Capability::PlanCapture => "plan-capture",
            Capability::PiDialect => "pi-dialect",
            Capability::Handshake => "handshake",
            Capability::Resume => "resume",
            Capability::AcpDialect => "acp-dialect",
        }
    }
}

/// What an adapter says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterInfo {
    pub name: String,
    pub version: String,
    pub programs: Vec<String>,
    pub program_env: Vec<String>,
    pub capabilities: Vec<Capability>,
}

impl AdapterInfo {
    /// `name@version`, the label used in logs and errors.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Whether the adapter declared `cap`.
    pub fn has(&self, cap: Capability) -> bool {
        self.capabilities.contains(&cap)
    }

    /// The prefix of daemon environment variables this adapter may see:
    /// `AMARRE_<FIRST>_` where FIRST is its name up to the first `-`,
    /// uppercased (`claude-code` sees `AMARRE_CLAUDE_*`).
    pub fn env_prefix(&self) -> String {
        let first = self.name.split('-').next().unwrap_or(&self.name);
        format!("AMARRE_{}_", first.to_ascii_uppercase())
    }
}

/// The session facts given to `spawn` and `session.create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpawnRequest {
    pub session_id: String,
    pub instance_id: String,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub command: Option<String>,
    pub args: Vec<String>,
    /// The absolute directory the agent runs in (WIT 0.2.0).
    pub work_dir: String,
    /// The session's latest resume token (WIT 0.2.0).
    pub resume_token: Option<String>,
}

/// A file the host writes to the session's private directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub contents: Vec<u8>,
    pub executable: bool,
}

/// How to start an agent, as an adapter returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub files: Vec<FileSpec>,
    pub passthrough_from_client: bool,
    pub passthrough_from_agent: bool,
    /// A resume token known at spawn (WIT 0.2.0).
    pub resume_token: Option<String>,
}

impl SpawnSpec {
    /// Whether the translator is never called for this session.
    pub fn passthrough_both(&self) -> bool {
        self.passthrough_from_client && self.passthrough_from_agent
    }
}

/// One record out of a translator call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    ToAgent(String),
    ToClient(String),
    /// A newer resume token for the session (WIT 0.2.0): kept by the host,
    /// sent nowhere.
    ResumeToken(String),
}

/// An error an adapter returned (not a trap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterError {
    InvalidFrame(String),
    Unsupported(String),
    IncompatibleState(String),
    Internal(String),
}

impl std::fmt::Display for AdapterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterError::InvalidFrame(m) => write!(f, "invalid frame: {m}"),
            AdapterError::Unsupported(m) => write!(f, "unsupported: {m}"),
            AdapterError::IncompatibleState(m) => write!(f, "incompatible state: {m}"),
            AdapterError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

/// Why a call into an adapter failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The adapter returned an error; its instance is still usable.
    Adapter {
        adapter: String,
        error: AdapterError,
    },
    /// The adapter trapped, ran out of time or memory, or was already
    /// poisoned by an earlier trap; its instance must not be used again.
    Trap { adapter: String, detail: String },
    /// The record is larger than this adapter is given
    /// ([`crate::adapter::AdapterInstance::record_limit`]); the host dropped it
    /// without calling the guest, and the instance is still usable.
    TooLarge {
        adapter: String,
        bytes: usize,
        limit: usize,
    },
}

impl CallError {
    /// Whether the instance is poisoned.
    pub fn is_trap(&self) -> bool {
        matches!(self, CallError::Trap { .. })
    }

    /// `name@version` of the adapter that failed.
    pub fn adapter(&self) -> &str {
        match self {
            CallError::Adapter { adapter, .. }
            | CallError::Trap { adapter, .. }
            | CallError::TooLarge { adapter, .. } => adapter,
        }
    }

    /// The failure without the adapter's name.
    pub fn detail(&self) -> String {
        match self {
            CallError::Adapter { error, .. } => error.to_string(),
            CallError::Trap { detail, .. } => detail.clone(),
            CallError::TooLarge { bytes, limit, .. } => {
                format!("a record of {bytes} bytes is over the adapter's limit of {limit} bytes")
            }
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Adapter { adapter, error } => write!(f, "adapter {adapter}: {error}"),
            CallError::Trap { adapter, detail } => write!(f, "adapter {adapter} trapped: {detail}"),
            CallError::TooLarge { adapter, .. } => {
                write!(f, "adapter {adapter}: {}", self.detail())
            }
        }
    }
}

impl std::error::Error for CallError {}
