//! `my-adapter`: a template for an amarre adapter in Rust.
//!
//! It runs the operator's `command` (an agent that already speaks the
//! client dialect) and passes its JSON records through, and turns the lines
//! that are not JSON objects (stray log output on stdout) into notifications
//! the client shows, instead of records the client cannot read.

use amarre_adapter_sdk::*;

struct MyAdapter;

impl Adapter for MyAdapter {
    type Session = MySession;

    fn info() -> AdapterInfo {
        AdapterInfo::new("my-adapter", env!("CARGO_PKG_VERSION"))
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        let command = request
            .command
            .clone()
            .ok_or_else(|| AdapterError::Unsupported("set the instance's `command`".into()))?;
        let mut spec = SpawnSpec::new(command).args(request.args).cwd(request.cwd);
        // Client records go to the agent as they are: `from_client` is
        // never called. Agent lines go through `from_agent`.
        spec.passthrough_from_client = true;
        Ok(spec)
    }
}

struct MySession;

impl Session for MySession {
    fn create(_request: SpawnRequest, _saved: Option<String>) -> Result<Self, AdapterError> {
        Ok(MySession)
    }

    fn from_agent(&mut self, line: String) -> Result<Vec<Emit>, AdapterError> {
        if line.trim().is_empty() {
            return Ok(Vec::new());
        }
        if let Ok(serde_json::Value::Object(_)) = serde_json::from_str(&line) {
            return Ok(vec![Emit::ToClient(line)]);
        }
        let notice = serde_json::json!({
            "type": "extension_ui_request",
            "id": new_id(),
            "method": "notify",
            "message": line,
            "notifyType": "info",
        });
        Ok(vec![Emit::ToClient(notice.to_string())])
    }
}

export_adapter!(MyAdapter);
