//! `claude-code-raw`: starts Claude Code exactly like `claude-code` but
//! translates nothing: clients speak Claude's own stream-json and control
//! protocol. Both directions are pass-through, so the daemon never calls
//! into this component per record.

use amarre_adapter_sdk::*;

#[path = "../../claude-code/src/spawn.rs"]
mod spawn;

struct ClaudeCodeRaw;

impl Adapter for ClaudeCodeRaw {
    type Session = PassThrough;

    fn info() -> AdapterInfo {
        AdapterInfo::new("claude-code-raw", env!("CARGO_PKG_VERSION"))
            .programs(["claude"])
            .program_env(["CLAUDE_BIN"])
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        Ok(spawn::spec(&request, None).passthrough())
    }
}

export_adapter!(ClaudeCodeRaw);
