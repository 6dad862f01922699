//! The client side of the public protocol (PROTOCOL.md sections 3, 4, 7,
//! 11 and 12): what `amarre attach`, `new`, `send`, `approve` and
//! `sessions` use to talk to a daemon, local or behind `tailscale serve`.
//! Nothing here reaches into the daemon's own state: every call is a REST
//! request or a WebSocket, so it works against any amarre daemon.
//!
//! - [`token`]: where the token comes from (12.5);
//! - [`api`]: REST calls, session lookup by id or name, errors a person
//!   understands, exit codes;
//! - [`conn`]: one session's WebSocket with reconnect and `since`;
//! - [`render`]: pi-dialect records as lines of text;
//! - [`questions`]: answers to `extension_ui_request`s;
//! - [`tui`]: the interactive terminal of `amarre attach`.

pub mod api;
pub mod conn;
pub mod questions;
pub mod render;
pub mod token;
pub mod tui;

pub use api::{Api, ClientError};

/// Exit codes of the client commands (documented in `amarre help`).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A failure at run time: the turn failed, the agent crashed, the
    /// daemon answered something unexpected.
    pub const FAILURE: i32 = 1;
    /// A usage or configuration error (a bad flag, an unreadable token file).
    pub const USAGE: i32 = 2;
    /// `send --wait`: the agent asked a question; it is printed, unanswered.
    pub const QUESTION: i32 = 3;
    /// The daemon could not be reached (not running, wrong `--url`).
    pub const UNREACHABLE: i32 = 4;
    /// No session has that id or name, or a name matches several.
    pub const NOT_FOUND: i32 = 5;
    /// The daemon refused the token (or wants one and none was found).
    pub const UNAUTHORIZED: i32 = 6;
}
