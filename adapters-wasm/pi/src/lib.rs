//! `pi`: runs `pi --mode rpc` with amarre's permission gate extension.
//!
//! pi already speaks the client dialect, so both directions are
//! pass-through: the daemon never calls into this component per record.
//! The gate (`gate/pi-gate.ts`) travels inside the component; the host
//! writes it to the session's private directory and pi loads it with `-e`.
//!
//! - Program: the instance's `command`, else `PI_BIN`, else `pi` on PATH.
//! - `AMARRE_PI_GATE`: another gate file; empty disables the gate.
//! - `PI_TELEMETRY=0` unless the instance or session sets it.
//! - The operator's `args` are appended.
//! - Durable sessions (PROTOCOL.md 12.3): pi keeps its conversation in
//!   `{state}/session.jsonl` (`--session`), the session's state directory,
//!   which outlives the agent; that path is the resume token, so a
//!   respawned pi continues the same conversation. Not when the operator
//!   passes `--no-session`.

use amarre_adapter_sdk::*;

const GATE_FILE: &str = "pi-gate.ts";
const GATE_SOURCE: &str = include_str!("../gate/pi-gate.ts");
/// pi's session file, in the session's state directory.
const SESSION_FILE: &str = "{state}/session.jsonl";

struct Pi;

impl Adapter for Pi {
    type Session = PassThrough;

    fn info() -> AdapterInfo {
        AdapterInfo::new("pi", env!("CARGO_PKG_VERSION"))
            .programs(["pi"])
            .program_env(["PI_BIN"])
            .capabilities([
                Capability::PermissionGate,
                Capability::PiDialect,
                Capability::Resume,
            ])
    }

    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
        let mut spec = SpawnSpec::new(request.program(&["PI_BIN"], "pi"))
            .args(["--mode", "rpc"])
            .env("PI_TELEMETRY", "0")
            .cwd(request.cwd.clone());
        if !request.args.iter().any(|a| a == "--no-session") {
            spec = spec
                .args(["--session", SESSION_FILE])
                .resume_token(SESSION_FILE);
        }
        match request.env("AMARRE_PI_GATE") {
            // An empty value disables the gate.
            Some("") => {}
            Some(path) => spec = spec.args(["-e", path]),
            None => {
                spec = spec
                    .file(GATE_FILE, GATE_SOURCE)
                    .args(["-e".to_owned(), format!("{{files}}/{GATE_FILE}")]);
            }
        }
        Ok(spec.args(request.args).passthrough())
    }
}

export_adapter!(Pi);
