//! `acp-raw`: starts an Agent Client Protocol agent exactly like `acp` but
//! translates nothing: clients speak ACP (JSON-RPC 2.0) themselves,
//! handshake included. Both directions are pass-through, so the daemon never
//! calls into this component per record.

use amarre_adapter_sdk::*;

#[path = "../../acp/src/spawn.rs"]
mod spawn;

struct AcpRaw;

impl Adapter for AcpRaw {
    type Session = PassThrough;

    fn info() -> AdapterInfo {
        AdapterInfo::new("acp-raw", env!("CARGO_PKG_VERSION"))
            .capabilities([Capability::AcpDialect])
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        Ok(spawn::spec(&request, "acp-raw")?.passthrough())
    }
}

export_adapter!(AcpRaw);
