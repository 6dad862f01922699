//! How an ACP agent is started, shared by `acp` and `acp-raw`.
//!
//! ACP is a protocol, not a program: about forty agents speak it, each with
//! its own command line (`qwen --acp`, `codex-acp`, `claude-agent-acp`, ...).
//! The adapter cannot know which one an instance means, so the operator's
//! `command` is required and the spec is exactly `command` + `args`; the
//! instance's `env` is applied by the host.

use amarre_adapter_sdk::{AdapterError, SpawnRequest, SpawnSpec};

/// The spawn spec for an ACP agent, or a clear error without `command`.
pub fn spec(request: &SpawnRequest, adapter: &str) -> Result<SpawnSpec, AdapterError> {
    let Some(command) = request.command.as_deref().filter(|c| !c.trim().is_empty()) else {
        return Err(AdapterError::Unsupported(format!(
            "the {adapter} adapter needs the instance's `command`: the ACP agent to run, for example \
             {{\"agent\":\"{adapter}\",\"command\":\"qwen\",\"args\":[\"--acp\",\"--approval-mode\",\"default\"]}} \
             (instance `{}`)",
            request.instance_id
        )));
    };
    Ok(SpawnSpec::new(command).args(request.args.iter().cloned()))
}
