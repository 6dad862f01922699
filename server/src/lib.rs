//! amarre: a daemon that lets a person drive CLI coding agents from a phone
//! or another machine on their private network.
//!
//! One folder per concern:
//! - [`adapter`]: the WebAssembly adapter host (the only module that names
//!   wasmtime types), the spawn policy and golden transcripts;
//! - [`config`]: settings from flags and the environment;
//! - [`process`]: spawning agents in process groups and signalling them;
//! - [`session`]: the registry, the per-session task, framing and replay;
//! - [`http`]: REST, WebSocket and the browser-safety guard;
//! - [`push`]: Expo push notifications;
//! - [`cli`]: the command line.

pub mod adapter;
pub mod cli;
pub mod config;
pub mod http;
pub mod ops;
pub mod process;
pub mod push;
pub mod session;
pub mod util;

/// The daemon's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The wire protocol this server speaks (PROTOCOL.md section 11).
pub const PROTOCOL_VERSION: &str = "2.4.0";
