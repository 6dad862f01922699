//! The configuration file (TOML): everything the environment can say, plus
//! what it cannot (instances with env, command and args). Unknown keys are
//! errors that name the key. Layering (flags > environment > file >
//! defaults) is done by [`super::Config::from_layers`]; this module only
//! reads the file and applies it on top of the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError, InstanceConfig, LogFormat, validate_instances};

/// Every key the file accepts, as `section.key` (`instances.*` for the
/// fields of each `[[instances]]`). The NixOS module's keys are checked
/// against this list by the tests.
pub const KNOWN_KEYS: &[&str] = &[
    "server.host",
    "server.port",
    "server.max_sessions",
    "server.allow_non_loopback",
    "server.allowed_hosts",
    "server.allowed_origins",
    "server.cache_dir",
    "server.auth",
    "server.state_dir",
    "limits.max_line_bytes",
    "limits.max_frame_bytes",
    "limits.client_queue_records",
    "limits.client_queue_bytes",
    "limits.stdin_queue_records",
    "limits.ws_ping_ms",
    "limits.ws_idle_ms",
    "limits.kill_grace_ms",
    "limits.adapter_call_ms",
    "limits.adapter_memory_mb",
    "limits.replay_records",
    "limits.replay_bytes",
    "limits.reload_watch",
    "limits.reload_debounce_ms",
    "push.tokens_path",
    "push.grace_ms",
    "push.expo_url",
    "log.format",
    "log.filter",
    "instances.id",
    "instances.agent",
    "instances.agent_path",
    "instances.env",
    "instances.command",
    "instances.args",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `auth = "token"` and `state_dir = ...` may also stand at the top of
    /// the file, before any section (PROTOCOL.md 12.3 and 12.5 name them
    /// so); `[server]` wins when both are given.
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    server: Server,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    push: Push,
    #[serde(default)]
    log: Log,
    #[serde(default)]
    instances: Option<Vec<Instance>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Server {
    host: Option<String>,
    port: Option<u16>,
    max_sessions: Option<usize>,
    allow_non_loopback: Option<bool>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    cache_dir: Option<PathBuf>,
    auth: Option<String>,
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_line_bytes: Option<usize>,
    max_frame_bytes: Option<usize>,
    client_queue_records: Option<usize>,
    client_queue_bytes: Option<usize>,
    stdin_queue_records: Option<usize>,
    ws_ping_ms: Option<u64>,
    ws_idle_ms: Option<u64>,
    kill_grace_ms: Option<u64>,
    adapter_call_ms: Option<u64>,
    adapter_memory_mb: Option<usize>,
    replay_records: Option<usize>,
    replay_bytes: Option<usize>,
    reload_watch: Option<bool>,
    reload_debounce_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    tokens_path: Option<PathBuf>,
    grace_ms: Option<u64>,
    expo_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Log {
    format: Option<String>,
    filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Instance {
    id: String,
    agent: Option<String>,
    agent_path: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

fn err(path: &Path, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: format!("config file {}", path.display()),
        problem: problem.into(),
    }
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read it: {e}")))?;
        toml::from_str(&text).map_err(|e| err(path, e.to_string().trim().to_owned()))
    }

    /// The file's instances, if it defines any (checked).
    pub fn instances(&self, path: &Path) -> Result<Option<Vec<InstanceConfig>>, ConfigError> {
        let Some(list) = &self.instances else {
            return Ok(None);
        };
        let list: Vec<InstanceConfig> = list
            .iter()
            .map(|i| InstanceConfig {
                id: i.id.clone(),
                agent: i.agent.clone(),
                agent_path: i.agent_path.clone(),
                env: i.env.clone(),
                command: i.command.clone(),
                args: i.args.clone(),
            })
            .collect();
        validate_instances(&list).map_err(|p| err(path, format!("[[instances]]: {p}")))?;
        Ok(Some(list))
    }

    /// Applies the file's settings (not its instances) over `cfg`.
    pub fn apply(&self, path: &Path, cfg: &mut Config) -> Result<(), ConfigError> {
        let s = &self.server;
        if let Some(h) = &s.host {
            cfg.host = super::parse_host(h).map_err(|p| err(path, format!("server.host: {p}")))?;
        }
        if let Some(p) = s.port {
            cfg.port = p;
        }
        if let Some(n) = s.max_sessions {
            cfg.max_sessions = n;
        }
        if let Some(b) = s.allow_non_loopback {
            cfg.allow_non_loopback = b;
        }
        if let Some(h) = &s.allowed_hosts {
            cfg.allowed_hosts = h.clone();
        }
        if let Some(o) = &s.allowed_origins {
            cfg.allowed_origins = o
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect();
        }
        if let Some(d) = &s.cache_dir {
            cfg.cache_dir = Some(d.clone());
        }
        for (key, auth) in [("auth", &self.auth), ("server.auth", &s.auth)] {
            if let Some(a) = auth {
                cfg.auth = crate::auth::AuthMode::parse(a)
                    .map_err(|p| err(path, format!("{key}: {p}")))?;
            }
        }
        if let Some(d) = s.state_dir.as_ref().or(self.state_dir.as_ref()) {
            cfg.state_dir = Some(d.clone());
        }
        let l = &self.limits;
        let at_least_one = |v: Option<usize>, key: &str| -> Result<Option<usize>, ConfigError> {
            match v {
                Some(0) => Err(err(path, format!("limits.{key}: must be at least 1"))),
                other => Ok(other),
            }
        };
        let c = &mut cfg.limits;
        if let Some(v) = at_least_one(l.max_line_bytes, "max_line_bytes")? {
            c.max_line_bytes = v;
        }
        if let Some(v) = at_least_one(l.max_frame_bytes, "max_frame_bytes")? {
            c.max_frame_bytes = v;
        }
        if let Some(v) = at_least_one(l.client_queue_records, "client_queue_records")? {
            c.client_queue_records = v;
        }
        if let Some(v) = at_least_one(l.client_queue_bytes, "client_queue_bytes")? {
            c.client_queue_bytes = v;
        }
        if let Some(v) = at_least_one(l.stdin_queue_records, "stdin_queue_records")? {
            c.stdin_queue_records = v;
        }
        if let Some(v) = at_least_one(l.replay_records, "replay_records")? {
            c.replay_records = v;
        }
        if let Some(v) = at_least_one(l.replay_bytes, "replay_bytes")? {
            c.replay_bytes = v;
        }
        if let Some(v) = at_least_one(l.adapter_memory_mb, "adapter_memory_mb")? {
            c.adapter_memory_bytes = v << 20;
        }
        let ms = |v: Option<u64>, slot: &mut Duration| {
            if let Some(v) = v {
                *slot = Duration::from_millis(v);
            }
        };
        ms(l.ws_ping_ms, &mut c.ws_ping);
        ms(l.ws_idle_ms, &mut c.ws_idle);
        ms(l.kill_grace_ms, &mut c.kill_grace);
        ms(l.reload_debounce_ms, &mut c.reload_debounce);
        if l.adapter_call_ms == Some(0) {
            return Err(err(path, "limits.adapter_call_ms: must be at least 1"));
        }
        ms(l.adapter_call_ms, &mut c.adapter_call);
        if let Some(w) = l.reload_watch {
            c.reload_watch = w;
        }
        let p = &self.push;
        if let Some(t) = &p.tokens_path {
            cfg.push.tokens_path = Some(t.clone());
        }
        if let Some(g) = p.grace_ms {
            cfg.push.grace = Duration::from_millis(g);
        }
        if let Some(u) = &p.expo_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(err(
                    path,
                    format!("push.expo_url: `{u}` is not an http(s) URL"),
                ));
            }
            cfg.push.expo_url = u.clone();
        }
        if let Some(f) = &self.log.format {
            cfg.log_format = match f.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(err(
                        path,
                        format!("log.format: `{other}` is not `text` or `json`"),
                    ));
                }
            };
        }
        if let Some(f) = &self.log.filter {
            cfg.log_filter = Some(f.clone());
        }
        Ok(())
    }
}

/// The effective configuration in the file's own layout (for
/// `amarre config check`).
pub fn to_toml(cfg: &Config) -> String {
    use toml::{Table, Value};
    let mut root = Table::new();
    let mut server = Table::new();
    server.insert("host".into(), Value::String(cfg.host.to_string()));
    server.insert("port".into(), Value::Integer(cfg.port.into()));
    server.insert(
        "max_sessions".into(),
        Value::Integer(cfg.max_sessions as i64),
    );
    server.insert(
        "allow_non_loopback".into(),
        Value::Boolean(cfg.allow_non_loopback),
    );
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    server.insert("allowed_hosts".into(), strings(&cfg.allowed_hosts));
    server.insert("allowed_origins".into(), strings(&cfg.allowed_origins));
    if let Some(d) = &cfg.cache_dir {
        server.insert("cache_dir".into(), Value::String(d.display().to_string()));
    }
    server.insert("auth".into(), Value::String(cfg.auth.as_str().into()));
    if let Some(d) = &cfg.state_dir {
        server.insert("state_dir".into(), Value::String(d.display().to_string()));
    }
    root.insert("server".into(), Value::Table(server));
    let l = &cfg.limits;
    let mut limits = Table::new();
    let int = |n: u128| Value::Integer(n.min(i64::MAX as u128) as i64);
    limits.insert("max_line_bytes".into(), int(l.max_line_bytes as u128));
    limits.insert("max_frame_bytes".into(), int(l.max_frame_bytes as u128));
    limits.insert(
        "client_queue_records".into(),
        int(l.client_queue_records as u128),
    );
    limits.insert(
        "client_queue_bytes".into(),
        int(l.client_queue_bytes as u128),
    );
    limits.insert(
        "stdin_queue_records".into(),
        int(l.stdin_queue_records as u128),
    );
    limits.insert("ws_ping_ms".into(), int(l.ws_ping.as_millis()));
    limits.insert("ws_idle_ms".into(), int(l.ws_idle.as_millis()));
    limits.insert("kill_grace_ms".into(), int(l.kill_grace.as_millis()));
    limits.insert("adapter_call_ms".into(), int(l.adapter_call.as_millis()));
    limits.insert(
        "adapter_memory_mb".into(),
        int((l.adapter_memory_bytes >> 20) as u128),
    );
    limits.insert("replay_records".into(), int(l.replay_records as u128));
    limits.insert("replay_bytes".into(), int(l.replay_bytes as u128));
    limits.insert("reload_watch".into(), Value::Boolean(l.reload_watch));
    limits.insert(
        "reload_debounce_ms".into(),
        int(l.reload_debounce.as_millis()),
    );
    root.insert("limits".into(), Value::Table(limits));
    let mut push = Table::new();
    if let Some(t) = &cfg.push.tokens_path {
        push.insert("tokens_path".into(), Value::String(t.display().to_string()));
    }
    push.insert("grace_ms".into(), int(cfg.push.grace.as_millis()));
    push.insert("expo_url".into(), Value::String(cfg.push.expo_url.clone()));
    root.insert("push".into(), Value::Table(push));
    let mut log = Table::new();
    log.insert(
        "format".into(),
        Value::String(match cfg.log_format {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        }),
    );
    if let Some(f) = &cfg.log_filter {
        log.insert("filter".into(), Value::String(f.clone()));
    }
    root.insert("log".into(), Value::Table(log));
    let instances: Vec<Value> = cfg
        .instances
        .iter()
        .map(|i| {
            let mut t = Table::new();
            t.insert("id".into(), Value::String(i.id.clone()));
            if let Some(a) = &i.agent {
                t.insert("agent".into(), Value::String(a.clone()));
            }
            if let Some(p) = &i.agent_path {
                t.insert("agent_path".into(), Value::String(p.display().to_string()));
            }
            if let Some(c) = &i.command {
                t.insert("command".into(), Value::String(c.clone()));
            }
            if !i.args.is_empty() {
                t.insert("args".into(), strings(&i.args));
            }
            if !i.env.is_empty() {
                t.insert(
                    "env".into(),
                    Value::Table(
                        i.env
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect(),
                    ),
                );
            }
            Value::Table(t)
        })
        .collect();
    root.insert("instances".into(), Value::Array(instances));
    toml::to_string(&root).unwrap_or_default()
}
