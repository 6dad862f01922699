//! Every setting of the daemon, declared once in [`SETTINGS`]: its key in
//! the configuration file, its environment variable(s), its flag, its type
//! and bounds, its default and its documentation line. The same entry
//! parses the file, the environment and the flag, checks the bounds,
//! names itself in errors (the TOML key in file errors, the variable in
//! environment errors, the flag in flag errors), prints the effective
//! configuration (`amarre config check`) and writes the table in
//! docs/configuration.md (a test keeps that table in step).
//!
//! Adding a setting is one change here: a field in [`super::Config`] (or
//! one of its parts) and one [`Setting`] entry below, with `get` and `set`
//! mapping the field to a [`Value`]. If it has a flag, add it to
//! `cli::ServeArgs` and name it in [`super::Overrides::value`]. Run the
//! config tests: they print the new docs table if docs/configuration.md is
//! out of date.
//!
//! Instances (`[[instances]]`, `AMARRE_INSTANCES_JSON` and the shortcuts
//! for instance `default`) are declared here for the documentation
//! ([`Kind::Instances`]); their layering is [`super::instances`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, ConfigError, LogFormat, Overrides};

/// A setting's value, whatever layer it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Num(u64),
    Text(String),
    List(Vec<String>),
    /// Not set (an optional setting).
    Unset,
}

impl Value {
    fn num(&self) -> u64 {
        match self {
            Value::Num(n) => *n,
            _ => 0,
        }
    }
    fn flag(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
    fn text(&self) -> Option<String> {
        match self {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
    fn list(&self) -> Vec<String> {
        match self {
            Value::List(l) => l.clone(),
            _ => Vec::new(),
        }
    }
}

/// A setting's type, with its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`.
    Bool,
    /// A whole number in `min..=max`; `unit` is for the documentation.
    Num {
        min: u64,
        max: u64,
        unit: &'static str,
    },
    /// An IP address (or `localhost`).
    Host,
    Text,
    /// An `http://` or `https://` URL.
    Url,
    Path,
    /// A comma-separated list (an array in the file).
    List,
    /// `text` or `json`.
    LogFormat,
    /// A `tracing` filter (`info,amarre=debug`).
    LogFilter,
    /// One word of a fixed list.
    OneOf(&'static [&'static str]),
    /// Read by the instance resolver; listed for the documentation.
    Instances,
}

const DAY_MS: u64 = 86_400_000;
const MS_FROM_0: Kind = Kind::Num {
    min: 0,
    max: DAY_MS,
    unit: "ms",
};
const MS_FROM_1: Kind = Kind::Num {
    min: 1,
    max: DAY_MS,
    unit: "ms",
};
const COUNT: Kind = Kind::Num {
    min: 1,
    max: u32::MAX as u64,
    unit: "",
};
const BYTES: Kind = Kind::Num {
    min: 1,
    max: 1 << 40,
    unit: "bytes",
};

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Bool => "boolean".into(),
            Kind::Num { min, max, unit } => {
                let unit = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" {unit}")
                };
                format!("integer{unit}, {min}-{max}")
            }
            Kind::Host => "IP address".into(),
            Kind::Text => "string".into(),
            Kind::Url => "http(s) URL".into(),
            Kind::Path => "path".into(),
            Kind::List => "list".into(),
            Kind::LogFormat => "`text` or `json`".into(),
            Kind::LogFilter => "log filter".into(),
            Kind::OneOf(words) => words
                .iter()
                .map(|w| format!("`{w}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            Kind::Instances => "instances".into(),
        }
    }

    fn bounds(self, n: u64) -> Result<Value, String> {
        if let Kind::Num { min, max, .. } = self {
            if n < min {
                return Err(format!("must be at least {min}"));
            }
            if n > max {
                return Err(format!("must be at most {max}"));
            }
        }
        Ok(Value::Num(n))
    }

    /// Parses a value from the environment, a flag or a default.
    pub fn parse_str(self, v: &str) -> Result<Value, String> {
        match self {
            Kind::Bool => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
                "0" | "false" | "no" | "off" => Ok(Value::Bool(false)),
                _ => Err(format!(
                    "`{v}` is not a boolean (1, true, yes, on / 0, false, no, off)"
                )),
            },
            Kind::Num { .. } => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("`{v}` is not a non-negative integer"))?;
                self.bounds(n)
            }
            Kind::Host => super::parse_host(v).map(|_| Value::Text(v.to_owned())),
            Kind::Url => {
                if v.starts_with("http://") || v.starts_with("https://") {
                    Ok(Value::Text(v.to_owned()))
                } else {
                    Err(format!("`{v}` is not an http(s) URL"))
                }
            }
            Kind::List => Ok(Value::List(
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            )),
            Kind::LogFormat => match v {
                "text" | "json" => Ok(Value::Text(v.to_owned())),
                _ => Err(format!("`{v}` is not `text` or `json`")),
            },
            Kind::LogFilter => tracing_subscriber::EnvFilter::try_new(v)
                .map(|_| Value::Text(v.to_owned()))
                .map_err(|e| format!("`{v}` is not a valid log filter: {e}")),
            Kind::OneOf(words) => {
                if words.contains(&v) {
                    Ok(Value::Text(v.to_owned()))
                } else {
                    Err(format!("`{v}` is not {}", self.name()))
                }
            }
            Kind::Text | Kind::Path | Kind::Instances => Ok(Value::Text(v.to_owned())),
        }
    }

    /// Parses a value from the configuration file.
    pub fn parse_toml(self, v: &toml::Value) -> Result<Value, String> {
        match self {
            Kind::Bool => v
                .as_bool()
                .map(Value::Bool)
                .ok_or_else(|| "expected true or false".to_owned()),
            Kind::Num { .. } => match v.as_integer() {
                Some(n) if n >= 0 => self.bounds(n as u64),
                Some(n) => Err(format!("{n} is negative")),
                None => Err(format!("expected an integer, found {}", v.type_str())),
            },
            Kind::List => match v.as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| "expected an array of strings".to_owned())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::List),
                None => Err(format!("expected an array, found {}", v.type_str())),
            },
            _ => match v.as_str() {
                Some(s) => self.parse_str(s),
                None => Err(format!("expected a string, found {}", v.type_str())),
            },
        }
    }
}

/// One setting.
pub struct Setting {
    /// `section.key` in the configuration file (None: not in the file).
    pub key: Option<&'static str>,
    /// Environment variables, the first set one wins.
    pub env: &'static [&'static str],
    /// The `amarre serve` flag.
    pub flag: Option<&'static str>,
    pub kind: Kind,
    /// The default, as it would be written in the environment (None:
    /// unset, or computed as the doc line says).
    pub default: Option<&'static str>,
    pub doc: &'static str,
    /// The effective value (for `config check`).
    pub get: fn(&Config) -> Value,
    /// Stores a parsed, checked value.
    pub set: fn(&mut Config, Value),
}

fn ms(v: &Value) -> Duration {
    Duration::from_millis(v.num())
}

fn ms_of(d: Duration) -> Value {
    Value::Num(d.as_millis().min(u64::MAX as u128) as u64)
}

fn opt_path(p: &Option<PathBuf>) -> Value {
    p.as_ref()
        .map(|p| Value::Text(p.display().to_string()))
        .unwrap_or(Value::Unset)
}

/// Every setting.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: None,
        env: &["AMARRE_CONFIG"],
        flag: Some("--config"),
        kind: Kind::Path,
        default: None,
        doc: "The configuration file (TOML); re-read on SIGHUP.",
        get: |c| opt_path(&c.config_file),
        set: |c, v| c.config_file = v.text().map(PathBuf::from),
    },
    Setting {
        key: Some("server.host"),
        env: &["AMARRE_HOST"],
        flag: Some("--host"),
        kind: Kind::Host,
        default: Some("127.0.0.1"),
        doc: "Bind address; a non-loopback one also needs allow_non_loopback.",
        get: |c| Value::Text(c.host.to_string()),
        set: |c, v| {
            if let Some(Ok(ip)) = v.text().map(|h| super::parse_host(&h)) {
                c.host = ip;
            }
        },
    },
    Setting {
        key: Some("server.port"),
        env: &["AMARRE_PORT"],
        flag: Some("--port"),
        kind: Kind::Num {
            min: 0,
            max: 65535,
            unit: "",
        },
        default: Some("8341"),
        doc: "TCP port; 0 picks a free one.",
        get: |c| Value::Num(c.port.into()),
        set: |c, v| c.port = v.num() as u16,
    },
    Setting {
        key: Some("server.max_sessions"),
        env: &["AMARRE_MAX_SESSIONS"],
        flag: Some("--max-sessions"),
        kind: COUNT,
        default: Some("8"),
        doc: "Cap on running sessions (429 beyond it).",
        get: |c| Value::Num(c.max_sessions as u64),
        set: |c, v| c.max_sessions = v.num() as usize,
    },
    Setting {
        key: Some("server.max_connections"),
        env: &["AMARRE_MAX_CONNECTIONS"],
        flag: None,
        kind: Kind::Num {
            min: 1,
            max: 1_000_000,
            unit: "",
        },
        default: Some("512"),
        doc: "Cap on open connections, WebSockets included; a connection beyond it is answered 503 `too_many_connections` and closed.",
        get: |c| Value::Num(c.conn.max_connections as u64),
        set: |c, v| c.conn.max_connections = v.num() as usize,
    },
    Setting {
        key: Some("server.header_timeout_ms"),
        env: &["AMARRE_HEADER_TIMEOUT_MS"],
        flag: None,
        kind: MS_FROM_1,
        default: Some("15000"),
        doc: "A request's head must arrive within this time (and an idle keep-alive connection is closed after it).",
        get: |c| ms_of(c.conn.header_timeout),
        set: |c, v| c.conn.header_timeout = ms(&v),
    },
    Setting {
        key: Some("server.body_timeout_ms"),
        env: &["AMARRE_BODY_TIMEOUT_MS"],
        flag: None,
        kind: MS_FROM_1,
        default: Some("30000"),
        doc: "Longest pause while a request's body is read (408 `body_timeout`).",
        get: |c| ms_of(c.conn.body_timeout),
        set: |c, v| c.conn.body_timeout = ms(&v),
    },
    Setting {
        key: Some("server.allow_non_loopback"),
        env: &["AMARRE_ALLOW_NON_LOOPBACK"],
        flag: Some("--allow-non-loopback"),
        kind: Kind::Bool,
        default: Some("false"),
        doc: "Allow binding a non-loopback address (there is no authentication).",
        get: |c| Value::Bool(c.allow_non_loopback),
        set: |c, v| c.allow_non_loopback = v.flag(),
    },
    Setting {
        key: Some("server.allowed_hosts"),
        env: &["AMARRE_ALLOWED_HOSTS"],
        flag: None,
        kind: Kind::List,
        default: Some(""),
        doc: "Extra Host header names accepted (the guard, PROTOCOL.md section 10).",
        get: |c| Value::List(c.allowed_hosts.clone()),
        set: |c, v| c.allowed_hosts = v.list(),
    },
    Setting {
        key: Some("server.allowed_origins"),
        env: &["AMARRE_ALLOWED_ORIGINS"],
        flag: None,
        kind: Kind::List,
        default: Some(""),
        doc: "Browser origins accepted (the guard, PROTOCOL.md section 10).",
        get: |c| Value::List(c.allowed_origins.clone()),
        set: |c, v| {
            c.allowed_origins = v
                .list()
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect()
        },
    },
    Setting {
        key: Some("auth"),
        env: &["AMARRE_AUTH"],
        flag: None,
        kind: Kind::OneOf(&["none", "token"]),
        default: Some("none"),
        doc: "`token`: every route but /healthz and the app's static files needs the daemon's token (PROTOCOL.md 12.5).",
        get: |c| Value::Text(c.auth.as_str().into()),
        set: |c, v| {
            if let Some(Ok(mode)) = v.text().map(|t| crate::auth::AuthMode::parse(&t)) {
                c.auth = mode;
            }
        },
    },
    Setting {
        key: Some("state_dir"),
        env: &["AMARRE_STATE_DIR"],
        flag: None,
        kind: Kind::Path,
        default: None,
        doc: "The daemon's state directory: sessions and their records survive a restart (durable sessions, docs/durability.md); the token file lives there too. Unset: sessions end with the daemon.",
        get: |c| opt_path(&c.state_dir),
        set: |c, v| c.state_dir = v.text().map(PathBuf::from),
    },
    Setting {
        key: Some("server.cache_dir"),
        env: &["AMARRE_CACHE_DIR"],
        flag: None,
        kind: Kind::Path,
        default: None,
        doc: "Compiled-component cache; default systemd's CACHE_DIRECTORY, else $XDG_CACHE_HOME/amarre or ~/.cache/amarre.",
        get: |c| opt_path(&c.cache_dir),
        set: |c, v| c.cache_dir = v.text().map(PathBuf::from),
    },
    Setting {
        key: Some("limits.max_line_bytes"),
        env: &["AMARRE_MAX_LINE_BYTES"],
        flag: None,
        kind: BYTES,
        default: Some("16777216"),
        doc: "Longest record, either direction; longer agent lines are dropped.",
        get: |c| Value::Num(c.limits.max_line_bytes as u64),
        set: |c, v| c.limits.max_line_bytes = v.num() as usize,
    },
    Setting {
        key: Some("limits.max_frame_bytes"),
        env: &["AMARRE_MAX_FRAME_BYTES"],
        flag: None,
        kind: BYTES,
        default: Some("16777216"),
        doc: "Largest WebSocket frame from a client (1009 beyond it).",
        get: |c| Value::Num(c.limits.max_frame_bytes as u64),
        set: |c, v| c.limits.max_frame_bytes = v.num() as usize,
    },
    Setting {
        key: Some("limits.client_queue_records"),
        env: &["AMARRE_CLIENT_QUEUE_RECORDS"],
        flag: None,
        kind: COUNT,
        default: Some("1048576"),
        doc: "Records queued toward one client before it counts as slow (1008); high, so that the byte bound is met first.",
        get: |c| Value::Num(c.limits.client_queue_records as u64),
        set: |c, v| c.limits.client_queue_records = v.num() as usize,
    },
    Setting {
        key: Some("limits.client_queue_bytes"),
        env: &["AMARRE_CLIENT_QUEUE_BYTES"],
        flag: None,
        kind: BYTES,
        default: Some("16777216"),
        doc: "Bytes queued toward one client, each record counted with its memory overhead, before it counts as slow (1008).",
        get: |c| Value::Num(c.limits.client_queue_bytes as u64),
        set: |c, v| c.limits.client_queue_bytes = v.num() as usize,
    },
    Setting {
        key: Some("limits.client_stall_ms"),
        env: &["AMARRE_CLIENT_STALL_MS"],
        flag: None,
        kind: MS_FROM_1,
        default: Some("15000"),
        doc: "A client that has taken nothing this long while records wait for it is slow (1008).",
        get: |c| ms_of(c.limits.client_stall),
        set: |c, v| c.limits.client_stall = ms(&v),
    },
    Setting {
        key: Some("limits.stdin_queue_records"),
        env: &["AMARRE_STDIN_QUEUE_RECORDS"],
        flag: None,
        kind: COUNT,
        default: Some("1024"),
        doc: "Records queued toward the agent's stdin before clients are no longer read.",
        get: |c| Value::Num(c.limits.stdin_queue_records as u64),
        set: |c, v| c.limits.stdin_queue_records = v.num() as usize,
    },
    Setting {
        key: Some("limits.stdin_queue_bytes"),
        env: &["AMARRE_STDIN_QUEUE_BYTES"],
        flag: None,
        kind: BYTES,
        default: Some("16777216"),
        doc: "Bytes queued toward the agent's stdin before clients are no longer read (one record may go over it).",
        get: |c| Value::Num(c.limits.stdin_queue_bytes as u64),
        set: |c, v| c.limits.stdin_queue_bytes = v.num() as usize,
    },
    Setting {
        key: Some("limits.ws_ping_ms"),
        env: &["AMARRE_WS_PING_MS"],
        flag: None,
        kind: MS_FROM_1,
        default: Some("25000"),
        doc: "Interval of WebSocket pings.",
        get: |c| ms_of(c.limits.ws_ping),
        set: |c, v| c.limits.ws_ping = ms(&v),
    },
    Setting {
        key: Some("limits.ws_idle_ms"),
        env: &["AMARRE_WS_IDLE_MS"],
        flag: None,
        kind: MS_FROM_1,
        default: Some("90000"),
        doc: "A client silent this long is closed with 1001.",
        get: |c| ms_of(c.limits.ws_idle),
        set: |c, v| c.limits.ws_idle = ms(&v),
    },
    Setting {
        key: Some("limits.kill_grace_ms"),
        env: &["AMARRE_KILL_GRACE_MS"],
        flag: None,
        kind: MS_FROM_0,
        default: Some("5000"),
        doc: "Time between SIGTERM and SIGKILL when a session is stopped.",
        get: |c| ms_of(c.limits.kill_grace),
        set: |c, v| c.limits.kill_grace = ms(&v),
    },
    Setting {
        key: Some("limits.adapter_call_ms"),
        env: &["AMARRE_ADAPTER_CALL_MS"],
        flag: None,
        kind: Kind::Num {
            min: 1,
            max: 60_000,
            unit: "ms",
        },
        default: Some("50"),
        doc: "Time budget of one adapter call (plus 1 ms per KiB of the largest input the session's adapter was given, at most 2 s).",
        get: |c| ms_of(c.limits.adapter_call),
        set: |c, v| c.limits.adapter_call = ms(&v),
    },
    Setting {
        key: Some("limits.adapter_memory_mb"),
        env: &["AMARRE_ADAPTER_MEMORY_MB"],
        flag: None,
        kind: Kind::Num {
            min: 1,
            max: 4096,
            unit: "MiB",
        },
        default: Some("64"),
        doc: "Linear memory cap of one adapter instance.",
        get: |c| Value::Num((c.limits.adapter_memory_bytes >> 20) as u64),
        set: |c, v| c.limits.adapter_memory_bytes = (v.num() as usize) << 20,
    },
    Setting {
        key: Some("limits.replay_records"),
        env: &["AMARRE_REPLAY_RECORDS"],
        flag: None,
        kind: COUNT,
        default: Some("10000"),
        doc: "Records kept per session for replay (`since`).",
        get: |c| Value::Num(c.limits.replay_records as u64),
        set: |c, v| c.limits.replay_records = v.num() as usize,
    },
    Setting {
        key: Some("limits.replay_bytes"),
        env: &["AMARRE_REPLAY_BYTES"],
        flag: None,
        kind: BYTES,
        default: Some("16777216"),
        doc: "Bytes kept per session for replay (`since`).",
        get: |c| Value::Num(c.limits.replay_bytes as u64),
        set: |c, v| c.limits.replay_bytes = v.num() as usize,
    },
    Setting {
        key: Some("limits.reload_watch"),
        env: &["AMARRE_RELOAD_WATCH"],
        flag: None,
        kind: Kind::Bool,
        default: Some("true"),
        doc: "Watch adapter files (`agent_path`) and reload them when they change.",
        get: |c| Value::Bool(c.limits.reload_watch),
        set: |c, v| c.limits.reload_watch = v.flag(),
    },
    Setting {
        key: Some("limits.reload_debounce_ms"),
        env: &["AMARRE_RELOAD_DEBOUNCE_MS"],
        flag: None,
        kind: MS_FROM_0,
        default: Some("200"),
        doc: "Quiet time after a file's last change before it is reloaded.",
        get: |c| ms_of(c.limits.reload_debounce),
        set: |c, v| c.limits.reload_debounce = ms(&v),
    },
    Setting {
        key: Some("limits.review_max_bytes"),
        env: &["AMARRE_REVIEW_MAX_BYTES"],
        flag: None,
        kind: BYTES,
        default: Some("1048576"),
        doc: "Largest file or diff the review routes serve (413 beyond it; docs/review.md).",
        get: |c| Value::Num(c.limits.review_max_bytes as u64),
        set: |c, v| c.limits.review_max_bytes = v.num() as usize,
    },
    Setting {
        key: Some("limits.review_timeout_ms"),
        env: &["AMARRE_REVIEW_TIMEOUT_MS"],
        flag: None,
        kind: MS_FROM_1,
        default: Some("5000"),
        doc: "Time limit of a review request (504 beyond it; its git processes are killed).",
        get: |c| ms_of(c.limits.review_timeout),
        set: |c, v| c.limits.review_timeout = ms(&v),
    },
    Setting {
        key: Some("push.tokens_path"),
        env: &["AMARRE_PUSH_TOKENS_PATH"],
        flag: None,
        kind: Kind::Path,
        default: None,
        doc: "The push token store; push is off when unset.",
        get: |c| opt_path(&c.push.tokens_path),
        set: |c, v| c.push.tokens_path = v.text().map(PathBuf::from),
    },
    Setting {
        key: Some("push.grace_ms"),
        env: &["AMARRE_PUSH_GRACE_MS"],
        flag: None,
        kind: MS_FROM_0,
        default: Some("15000"),
        doc: "How long a question waits before an awaiting-input push.",
        get: |c| ms_of(c.push.grace),
        set: |c, v| c.push.grace = ms(&v),
    },
    Setting {
        key: Some("push.max_tokens"),
        env: &["AMARRE_PUSH_MAX_TOKENS"],
        flag: None,
        kind: Kind::Num {
            min: 1,
            max: 10_000,
            unit: "",
        },
        default: Some("1000"),
        doc: "The most push tokens kept (409 `too_many_tokens` beyond it): the store file, rewritten on every change, stays small.",
        get: |c| Value::Num(c.push.max_tokens as u64),
        set: |c, v| c.push.max_tokens = v.num() as usize,
    },
    Setting {
        key: Some("push.expo_url"),
        env: &["AMARRE_PUSH_EXPO_URL"],
        flag: None,
        kind: Kind::Url,
        default: Some("https://exp.host/--/api/v2/push/send"),
        doc: "The Expo push endpoint.",
        get: |c| Value::Text(c.push.expo_url.clone()),
        set: |c, v| c.push.expo_url = v.text().unwrap_or_default(),
    },
    Setting {
        key: Some("log.format"),
        env: &["AMARRE_LOG_FORMAT"],
        flag: Some("--log-format"),
        kind: Kind::LogFormat,
        default: Some("text"),
        doc: "Log lines as text or as JSON objects.",
        get: |c| {
            Value::Text(
                match c.log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
                .into(),
            )
        },
        set: |c, v| {
            c.log_format = match v.text().as_deref() {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Text,
            }
        },
    },
    Setting {
        key: Some("log.filter"),
        env: &["AMARRE_LOG", "RUST_LOG"],
        flag: None,
        kind: Kind::LogFilter,
        default: None,
        doc: "A `tracing` filter such as `info,amarre=debug`; `info` when unset. A bad filter is a start-up error.",
        get: |c| {
            c.log_filter
                .clone()
                .map(Value::Text)
                .unwrap_or(Value::Unset)
        },
        set: |c, v| c.log_filter = v.text(),
    },
    Setting {
        key: None,
        env: &["AMARRE_INSTANCES_JSON"],
        flag: Some("--instances-json"),
        kind: Kind::Instances,
        default: None,
        doc: "Instances as a JSON array (`id`, `agent`, `agentPath`, `env`, `command`, `args`); wins over the shortcuts and the file.",
        get: |_| Value::Unset,
        set: |_, _| {},
    },
    Setting {
        key: None,
        env: &["AMARRE_AGENT"],
        flag: Some("--agent"),
        kind: Kind::Instances,
        default: Some("pi"),
        doc: "Shortcut: the built-in adapter of instance `default`.",
        get: |_| Value::Unset,
        set: |_, _| {},
    },
    Setting {
        key: None,
        env: &["AMARRE_AGENT_PATH"],
        flag: Some("--agent-path"),
        kind: Kind::Instances,
        default: None,
        doc: "Shortcut: an adapter component file for instance `default`.",
        get: |_| Value::Unset,
        set: |_, _| {},
    },
    Setting {
        key: None,
        env: &["AMARRE_COMMAND"],
        flag: Some("--command"),
        kind: Kind::Instances,
        default: None,
        doc: "Shortcut: the program of instance `default`, replacing the adapter's.",
        get: |_| Value::Unset,
        set: |_, _| {},
    },
    Setting {
        key: None,
        env: &["AMARRE_ARGS_JSON"],
        flag: Some("--arg"),
        kind: Kind::Instances,
        default: None,
        doc: "Shortcut: arguments appended for instance `default` (a JSON array; the flag repeats).",
        get: |_| Value::Unset,
        set: |_, _| {},
    },
    Setting {
        key: None,
        env: &["AMARRE_CLAUDE_RAW"],
        flag: None,
        kind: Kind::Instances,
        default: None,
        doc: "Shortcut: with AMARRE_AGENT=claude-code, serve `claude-code-raw` instead.",
        get: |_| Value::Unset,
        set: |_, _| {},
    },
];

/// The fields of each `[[instances]]` entry in the file.
pub const INSTANCE_KEYS: &[&str] = &["id", "agent", "agent_path", "env", "command", "args"];

/// A variable's value, trimmed; empty counts as unset.
pub(crate) fn env_get<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A configuration with every declared default.
pub(crate) fn defaults(cfg: &mut Config) {
    for s in SETTINGS.iter().filter(|s| s.kind != Kind::Instances) {
        let value = match s.default {
            Some(d) => s.kind.parse_str(d).unwrap_or(Value::Unset),
            None => Value::Unset,
        };
        (s.set)(cfg, value);
    }
}

/// Looks `section.key` up in a parsed file.
/// A `section.key` setting stands in its section; a top-level one (no
/// dot, such as `auth`) at the top of the file or in `[server]`, the
/// top winning.
/// Returns the value and the key as the file spells it.
fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<(&'a toml::Value, String)> {
    match key.split_once('.') {
        Some((section, name)) => Some((table.get(section)?.as_table()?.get(name)?, key.to_owned())),
        None => match table.get(key).filter(|v| !v.is_table()) {
            Some(v) => Some((v, key.to_owned())),
            None => Some((
                table.get("server")?.as_table()?.get(key)?,
                format!("server.{key}"),
            )),
        },
    }
}

fn file_err(path: &Path, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: format!("config file {}", path.display()),
        problem: problem.into(),
    }
}

/// Refuses sections and keys the file may not have, naming them.
pub(crate) fn check_file_keys(path: &Path, table: &toml::Table) -> Result<(), ConfigError> {
    for (section, value) in table {
        if section == "instances" {
            continue;
        }
        let known = |k: &str| SETTINGS.iter().any(|s| s.key == Some(k));
        let Some(inner) = value.as_table() else {
            if known(section) {
                continue;
            }
            return Err(file_err(path, format!("unknown key `{section}`")));
        };
        if !SETTINGS
            .iter()
            .filter_map(|s| s.key)
            .any(|k| k.starts_with(&format!("{section}.")))
        {
            return Err(file_err(path, format!("unknown section `[{section}]`")));
        }
        for name in inner.keys() {
            let top_level_in_server = section == "server" && known(name);
            if !top_level_in_server && !known(&format!("{section}.{name}")) {
                return Err(file_err(path, format!("unknown key `{section}.{name}`")));
            }
        }
    }
    Ok(())
}

/// Applies the file, then the environment, then the flags, setting by
/// setting; every value is checked and an error names where it came from.
pub(crate) fn apply_layers(
    cfg: &mut Config,
    file: Option<(&Path, &toml::Table)>,
    env: &HashMap<String, String>,
    flags: &Overrides,
) -> Result<(), ConfigError> {
    for s in SETTINGS.iter().filter(|s| s.kind != Kind::Instances) {
        if let (Some((path, table)), Some(key)) = (file, s.key)
            && let Some((v, spelled)) = lookup(table, key)
        {
            let value = s
                .kind
                .parse_toml(v)
                .map_err(|p| file_err(path, format!("{spelled}: {p}")))?;
            (s.set)(cfg, value);
        }
        if let Some((name, v)) = s
            .env
            .iter()
            .find_map(|name| env_get(env, name).map(|v| (name, v)))
        {
            let value = s.kind.parse_str(v).map_err(|p| super::err(name, p))?;
            (s.set)(cfg, value);
        }
        if let Some(flag) = s.flag
            && let Some(v) = flags.value(flag)
        {
            let value = s.kind.parse_str(&v).map_err(|p| super::err(flag, p))?;
            (s.set)(cfg, value);
        }
    }
    Ok(())
}

/// Where the effective value of the setting with file key `key` came from:
/// its flag, its variable, or the file (for messages after start-up
/// checks, such as the non-loopback refusal).
pub fn origin(key: &str, env: &HashMap<String, String>, flags: &Overrides, cfg: &Config) -> String {
    let Some(s) = SETTINGS.iter().find(|s| s.key == Some(key)) else {
        return key.to_owned();
    };
    if let Some(flag) = s.flag.filter(|f| flags.value(f).is_some()) {
        return flag.to_owned();
    }
    if let Some(name) = s.env.iter().find(|n| env_get(env, n).is_some()) {
        return (*name).to_owned();
    }
    match &cfg.config_file {
        Some(path) => format!("{key} in config file {}", path.display()),
        None => s.env.first().copied().unwrap_or(key).to_owned(),
    }
}

/// The effective configuration's settings as a TOML table per section.
pub(crate) fn to_toml_sections(cfg: &Config) -> toml::Table {
    use toml::Value as T;
    let mut root = toml::Table::new();
    for s in SETTINGS {
        let Some(key) = s.key else {
            continue;
        };
        let value = match (s.get)(cfg) {
            Value::Bool(b) => T::Boolean(b),
            Value::Num(n) => T::Integer(n.min(i64::MAX as u64) as i64),
            Value::Text(t) => T::String(t),
            Value::List(l) => T::Array(l.into_iter().map(T::String).collect()),
            Value::Unset => continue,
        };
        let Some((section, name)) = key.split_once('.') else {
            // A top-level key (`auth`).
            root.insert(key.to_owned(), value);
            continue;
        };
        if let T::Table(t) = root
            .entry(section)
            .or_insert_with(|| T::Table(toml::Table::new()))
        {
            t.insert(name.to_owned(), value);
        }
    }
    root
}

/// The settings table of docs/configuration.md.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| file key | environment | flag | type | default | what it does |\n|---|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let code = |v: &str| format!("`{v}`");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            s.key.map(code).unwrap_or_else(|| {
                if s.kind == Kind::Instances {
                    "`[[instances]]`".into()
                } else {
                    String::new()
                }
            }),
            s.env.iter().map(|e| code(e)).collect::<Vec<_>>().join(", "),
            s.flag.map(code).unwrap_or_default(),
            s.kind.name(),
            s.default
                .map(|d| if d.is_empty() {
                    "(empty)".into()
                } else {
                    code(d)
                })
                .unwrap_or_default(),
            s.doc,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_within_its_bounds() {
        for s in SETTINGS {
            if let Some(d) = s.default
                && s.kind != Kind::Instances
            {
                assert!(s.kind.parse_str(d).is_ok(), "{:?}: default {d}", s.key);
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in SETTINGS {
            for name in s.key.iter().chain(s.env).chain(s.flag.iter()) {
                assert!(seen.insert(*name), "{name} is declared twice");
            }
        }
    }

    #[test]
    fn docs_configuration_md_lists_every_setting() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/configuration.md is out of date; its settings table must be:\n\n{table}"
        );
    }
}
