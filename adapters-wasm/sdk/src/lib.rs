//! The amarre adapter SDK: write an agent adapter as a plain Rust type.
//!
//! An adapter implements [`Adapter`] (what it is and how to spawn its agent)
//! and, through its associated [`Session`] type, the per-session translator.
//! [`export_adapter!`] registers the type as the component's exports. The WIT
//! contract (`wit/adapter.wit`, package `amarre:adapter@0.1.0`) and
//! wit-bindgen stay behind this crate: adapters never name generated code.
//!
//! With the cargo feature `wit-0-2` the crate builds `amarre:adapter@0.2.0`
//! components (`wit/0.2.0/adapter.wit`) instead: the same API, plus
//! [`Session::handshake`], resume tokens ([`SpawnSpec::resume_token`],
//! [`Emit::ResumeToken`], [`SpawnRequest::resume_token`]) and
//! [`SpawnRequest::work_dir`]. Every new call has a default, so a 0.1.0
//! adapter ported to 0.2.0 changes its Cargo.toml only.
//!
//! This crate owns the guest side of the boundary only. It must not grow
//! agent-specific logic; that belongs in the adapters.
//!
//! A minimal pass-through adapter:
//! ```no_run
//! use amarre_adapter_sdk::*;
//! struct Echo;
//! impl Adapter for Echo {
//!     type Session = PassThrough;
//!     fn info() -> AdapterInfo { AdapterInfo::new("echo", "0.1.0").programs(["cat"]) }
//!     fn spawn(req: SpawnRequest) -> Result<SpawnSpec, AdapterError> {
//!         Ok(SpawnSpec::new("cat").passthrough())
//!     }
//! }
//! export_adapter!(Echo);
//! ```

use std::cell::RefCell;

#[cfg(not(feature = "wit-0-2"))]
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/adapter.wit",
        world: "amarre:adapter/adapter@0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_raw",
        default_bindings_module: "amarre_adapter_sdk::bindings",
    });
}

#[cfg(feature = "wit-0-2")]
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.2.0/adapter.wit",
        world: "amarre:adapter/adapter@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_raw",
        default_bindings_module: "amarre_adapter_sdk::bindings",
    });
}

/// The WIT package version this build of the SDK produces components for.
#[cfg(not(feature = "wit-0-2"))]
pub const WIT_VERSION: &str = "0.1.0";
/// The WIT package version this build of the SDK produces components for.
#[cfg(feature = "wit-0-2")]
pub const WIT_VERSION: &str = "0.2.0";

pub use bindings::amarre::adapter::types::{
    AdapterError, AdapterInfo, Capability, Emit, File, LogLevel, SpawnRequest, SpawnSpec,
};

/// What a component adapter is: its description and its spawn rule.
pub trait Adapter {
    /// The per-session translator. Use [`PassThrough`] when the adapter never
    /// translates (its spawn specs say pass-through in both directions).
    type Session: Session;

    /// Describes the adapter; called once when the daemon loads it.
    fn info() -> AdapterInfo;

    /// Says how to start the agent for one session.
    fn spawn(request: SpawnRequest) -> Result<SpawnSpec, AdapterError>;
}

/// One session's translator. Every method has a pass-through default.
// The method names mirror the WIT (`from-client`, `from-agent`).
#[allow(clippy::wrong_self_convention)]
pub trait Session: Sized + 'static {
    /// Creates the translator; `saved` is state from [`Session::save`] of an
    /// older version during a hot reload.
    fn create(request: SpawnRequest, saved: Option<String>) -> Result<Self, AdapterError>;

    /// Records the adapter sends first, right after the agent is spawned and
    /// before any client record or agent line (WIT 0.2.0). None by default.
    #[cfg(feature = "wit-0-2")]
    fn handshake(&mut self) -> Result<Vec<Emit>, AdapterError> {
        Ok(Vec::new())
    }

    /// Translates one client record (a JSON value as text).
    fn from_client(&mut self, record: String) -> Result<Vec<Emit>, AdapterError> {
        Ok(vec![Emit::ToAgent(record)])
    }

    /// Translates one agent stdout line (without the newline).
    fn from_agent(&mut self, line: String) -> Result<Vec<Emit>, AdapterError> {
        Ok(vec![Emit::ToClient(line)])
    }

    /// The agent exited; returns final records.
    fn on_exit(&mut self, _code: Option<i32>, _signal: Option<String>) -> Vec<Emit> {
        Vec::new()
    }

    /// State for a newer version of this adapter (hot reload), if supported.
    fn save(&self) -> Option<String> {
        None
    }
}

/// A translator that forwards everything unchanged.
pub struct PassThrough;

impl Session for PassThrough {
    fn create(_request: SpawnRequest, _saved: Option<String>) -> Result<Self, AdapterError> {
        Ok(PassThrough)
    }
}

impl AdapterInfo {
    /// An adapter description with no programs, overrides or capabilities.
    pub fn new(name: &str, version: &str) -> Self {
        AdapterInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            programs: Vec::new(),
            program_env: Vec::new(),
            capabilities: Vec::new(),
        }
    }

    /// Declares programs the adapter may ask to spawn.
    pub fn programs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, programs: I) -> Self {
        self.programs.extend(programs.into_iter().map(Into::into));
        self
    }

    /// Declares environment variables that may override the program.
    pub fn program_env<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.program_env.extend(names.into_iter().map(Into::into));
        self
    }

    /// Declares capabilities.
    pub fn capabilities<I: IntoIterator<Item = Capability>>(mut self, caps: I) -> Self {
        self.capabilities.extend(caps);
        self
    }
}

impl SpawnRequest {
    /// The value of a variable the adapter may see (see the WIT for which).
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The program to run: the operator's `command`, else the first of
    /// `overrides` set to a non-empty value, else `default`.
    pub fn program(&self, overrides: &[&str], default: &str) -> String {
        if let Some(command) = self.command.as_deref().filter(|c| !c.is_empty()) {
            return command.to_owned();
        }
        overrides
            .iter()
            .find_map(|name| self.env(name).filter(|v| !v.is_empty()))
            .unwrap_or(default)
            .to_owned()
    }

    /// The absolute directory the agent will run in (the session's cwd,
    /// else the daemon's).
    #[cfg(feature = "wit-0-2")]
    pub fn work_dir(&self) -> &str {
        &self.work_dir
    }

    /// The resume token of an earlier run of this session, if any.
    #[cfg(feature = "wit-0-2")]
    pub fn resume_token(&self) -> Option<&str> {
        self.resume_token.as_deref()
    }
}

impl SpawnSpec {
    /// A spec running `command` with no arguments, translated both ways.
    pub fn new(command: impl Into<String>) -> Self {
        SpawnSpec {
            command: command.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            files: Vec::new(),
            passthrough_from_client: false,
            passthrough_from_agent: false,
            #[cfg(feature = "wit-0-2")]
            resume_token: None,
        }
    }

    /// Reports a resume token as soon as the agent is spawned (WIT 0.2.0);
    /// `{state}` in it is left as is, like every token the host hands back.
    #[cfg(feature = "wit-0-2")]
    pub fn resume_token(mut self, token: impl Into<String>) -> Self {
        self.resume_token = Some(token.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable for the agent.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: Option<String>) -> Self {
        self.cwd = cwd;
        self
    }

    /// Adds a file the host writes to the session's private directory
    /// (`{files}` in args and env expands to that directory).
    pub fn file(mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push(File {
            path: path.into(),
            contents: contents.into(),
            executable: false,
        });
        self
    }

    /// Marks both directions pass-through: the translator is never called.
    pub fn passthrough(mut self) -> Self {
        self.passthrough_from_client = true;
        self.passthrough_from_agent = true;
        self
    }
}

/// Writes a line to the daemon's log under the adapter's name.
pub fn log(level: LogLevel, message: &str) {
    bindings::amarre::adapter::host::log(level, message);
}

/// Wall-clock milliseconds since the Unix epoch, from the host.
pub fn now_ms() -> u64 {
    bindings::amarre::adapter::host::now_ms()
}

/// A fresh UUID v4 from the host.
pub fn new_id() -> String {
    bindings::amarre::adapter::host::new_id()
}

/// Holds a [`Session`] behind the `&self` methods of the generated resource.
#[doc(hidden)]
pub struct SessionCell<S>(RefCell<S>);

impl<S: Session> bindings::exports::amarre::adapter::translator::GuestSession for SessionCell<S> {
    fn create(
        request: SpawnRequest,
        saved: Option<String>,
    ) -> Result<bindings::exports::amarre::adapter::translator::Session, AdapterError> {
        let session = S::create(request, saved)?;
        Ok(
            bindings::exports::amarre::adapter::translator::Session::new(SessionCell(
                RefCell::new(session),
            )),
        )
    }

    #[cfg(feature = "wit-0-2")]
    fn handshake(&self) -> Result<Vec<Emit>, AdapterError> {
        self.0.borrow_mut().handshake()
    }

    fn from_client(&self, record: String) -> Result<Vec<Emit>, AdapterError> {
        self.0.borrow_mut().from_client(record)
    }

    fn from_agent(&self, line: String) -> Result<Vec<Emit>, AdapterError> {
        self.0.borrow_mut().from_agent(line)
    }

    fn on_exit(&self, code: Option<i32>, signal: Option<String>) -> Vec<Emit> {
        self.0.borrow_mut().on_exit(code, signal)
    }

    fn save(&self) -> Option<String> {
        self.0.borrow().save()
    }
}

/// Registers a type implementing [`Adapter`] as this component's exports.
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        #[doc(hidden)]
        struct __AmarreExports;

        impl $crate::bindings::Guest for __AmarreExports {
            fn info() -> $crate::AdapterInfo {
                <$adapter as $crate::Adapter>::info()
            }
            fn spawn(
                request: $crate::SpawnRequest,
            ) -> ::core::result::Result<$crate::SpawnSpec, $crate::AdapterError> {
                <$adapter as $crate::Adapter>::spawn(request)
            }
        }

        impl $crate::bindings::exports::amarre::adapter::translator::Guest for __AmarreExports {
            type Session = $crate::SessionCell<<$adapter as $crate::Adapter>::Session>;
        }

        $crate::bindings::__export_raw!(__AmarreExports);
    };
}
