//! `stdio`: runs the operator's `command` with its `args` and relays records
//! untouched in both directions. The generic adapter for any agent that
//! already speaks the client dialect; it owns no agent-specific logic.

use amarre_adapter_sdk::*;

struct Stdio;

impl Adapter for Stdio {
    type Session = PassThrough;

    fn info() -> AdapterInfo {
        AdapterInfo::new("stdio", env!("CARGO_PKG_VERSION"))
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        let command = request.command.clone().ok_or_else(|| {
            AdapterError::Unsupported("the stdio adapter needs the instance's `command`".into())
        })?;
        Ok(SpawnSpec::new(command)
            .args(request.args)
            .cwd(request.cwd)
            .passthrough())
    }
}

export_adapter!(Stdio);
