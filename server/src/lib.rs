//! amarre: a daemon that lets a person drive CLI coding agents from a phone
//! or another machine on their private network.
//!
//! One folder per concern (docs/architecture.md has the map and the three
//! paths through it):
//! - [`adapter`]: the WebAssembly adapter host (the only module that names
//!   wasmtime types) and the spawn policy;
//! - [`config`]: every setting, declared once, from flags, the environment
//!   and the file;
//! - `instances`: configured instances, loading, watching and reloading
//!   their adapters;
//! - `process`: spawning agents in process groups and signalling them;
//! - `session`: the registry, the per-session task and its parts;
//! - `http`: the application state, REST, WebSocket and the browser-safety
//!   guard;
//! - `push`: Expo push notifications;
//! - `ops`: metrics and systemd integration;
//! - `transcript`: golden transcripts (adapter tooling);
//! - `util`: the clock, atomic private files, the start-up environment;
//! - [`auth`]: the optional token (PROTOCOL.md 12.5);
//! - [`client`]: the client side of the protocol (the terminal client);
//! - `review`: the read-only view of a session's working tree (git);
//! - `state`: durable sessions (the state directory, record logs);
//! - [`cli`]: the command line.
//!
//! Only what the test and bench programs use is public.

pub mod adapter;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub(crate) mod http;
pub(crate) mod instances;
pub(crate) mod ops;
pub(crate) mod process;
pub(crate) mod push;
pub(crate) mod review;
pub(crate) mod session;
pub(crate) mod state;
pub(crate) mod transcript;
pub(crate) mod util;

#[cfg(test)]
mod fuzz;

/// Whether the web client was compiled into this binary (served on
/// `/app/`; the `web` capability of `amarre.hello`).
pub fn web_client_compiled_in() -> bool {
    http::app::compiled_in()
}

/// The daemon's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The wire protocol this server speaks (PROTOCOL.md section 11).
pub const PROTOCOL_VERSION: &str = "2.4.0";
