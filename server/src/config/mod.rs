//! Configuration: defaults, the configuration file ([`file`]), the
//! environment (the original's variable names and ours, PROTOCOL.md section
//! 9) and command-line flags, in that order of increasing precedence.
//! Instances come wholly from the highest layer that defines any. Parsing only: nothing here opens sockets or loads
//! adapters. Every error names the variable (or flag) and what is wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub mod file;

/// The default port of the original and of this implementation.
pub const DEFAULT_PORT: u16 = 8341;
/// The default agent of instance `default`.
pub const DEFAULT_AGENT: &str = "pi";

/// One configured instance: which adapter serves it and the operator's
/// overrides for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceConfig {
    pub id: String,
    /// A built-in adapter name (used when `agent_path` is unset).
    pub agent: Option<String>,
    /// An adapter component file; loaded instead of `agent` when set.
    pub agent_path: Option<PathBuf>,
    /// Environment for the instance's agents (and visible to its adapter).
    pub env: BTreeMap<String, String>,
    /// Replaces the adapter's program.
    pub command: Option<String>,
    /// Appended to the adapter's arguments.
    pub args: Vec<String>,
}

/// Limits and timers (section 9). Every timer is configurable so that tests
/// can run in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_line_bytes: usize,
    pub max_frame_bytes: usize,
    pub client_queue_records: usize,
    pub client_queue_bytes: usize,
    pub stdin_queue_records: usize,
    pub ws_ping: Duration,
    pub ws_idle: Duration,
    pub kill_grace: Duration,
    pub adapter_call: Duration,
    pub adapter_memory_bytes: usize,
    pub replay_records: usize,
    pub replay_bytes: usize,
    /// Watch `agentPath` files and reload them when they change.
    pub reload_watch: bool,
    /// Quiet time after the last change of a file before it is reloaded.
    pub reload_debounce: Duration,
    /// The review routes (section 12.4): largest file served, and time limit.
    pub review_max_bytes: usize,
    pub review_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 16 << 20,
            max_frame_bytes: 16 << 20,
            client_queue_records: 4096,
            client_queue_bytes: 16 << 20,
            stdin_queue_records: 1024,
            ws_ping: Duration::from_millis(25_000),
            ws_idle: Duration::from_millis(90_000),
            kill_grace: Duration::from_millis(5_000),
            adapter_call: Duration::from_millis(50),
            adapter_memory_bytes: 64 << 20,
            replay_records: 10_000,
            replay_bytes: 16 << 20,
            reload_watch: true,
            reload_debounce: Duration::from_millis(200),
            review_max_bytes: 1 << 20,
            review_timeout: Duration::from_millis(5_000),
        }
    }
}

/// Push notification settings (section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The token store; push is disabled when unset.
    pub tokens_path: Option<PathBuf>,
    pub grace: Duration,
    pub expo_url: String,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            tokens_path: None,
            grace: Duration::from_millis(15_000),
            expo_url: "https://exp.host/--/api/v2/push/send".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The daemon's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub allow_non_loopback: bool,
    pub max_sessions: usize,
    pub instances: Vec<InstanceConfig>,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    pub push: PushConfig,
    pub log_format: LogFormat,
    /// A `tracing` filter (`info,amarre=debug`); `AMARRE_LOG` or `RUST_LOG`.
    pub log_filter: Option<String>,
    /// The compiled-component cache directory.
    pub cache_dir: Option<PathBuf>,
    /// The configuration file this came from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            allow_non_loopback: false,
            max_sessions: 8,
            instances: vec![default_instance()],
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            limits: Limits::default(),
            push: PushConfig::default(),
            log_format: LogFormat::Text,
            log_filter: None,
            cache_dir: None,
            config_file: None,
        }
    }
}

fn default_instance() -> InstanceConfig {
    InstanceConfig {
        id: "default".into(),
        agent: Some(DEFAULT_AGENT.into()),
        ..Default::default()
    }
}

/// A configuration error: the setting and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn err(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

/// Values given on the command line; each overrides its variable.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The configuration file (`--config`; else `AMARRE_CONFIG`).
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub max_sessions: Option<usize>,
    pub allow_non_loopback: bool,
    pub agent: Option<String>,
    pub agent_path: Option<PathBuf>,
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub instances_json: Option<String>,
    pub log_format: Option<String>,
}

/// The instance layout of `AMARRE_INSTANCES_JSON` (the original's names).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstanceJson {
    id: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    agent_path: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
}

impl Config {
    /// Builds the configuration from the process environment, flags, and the
    /// configuration file they name (`--config`, else `AMARRE_CONFIG`).
    pub fn load(flags: &Overrides) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::load_from(&env, flags)
    }

    /// Like [`Config::load`] with an explicit environment.
    pub fn load_from(
        env: &HashMap<String, String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let path = flags.config.clone().or_else(|| {
            env.get("AMARRE_CONFIG")
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from)
        });
        match path {
            Some(path) => {
                let file = file::FileConfig::read(&path)?;
                Config::from_layers(Some((&path, &file)), env, flags)
            }
            None => Config::from_layers(None, env, flags),
        }
    }

    /// Builds the configuration from an environment map and flags (no file).
    pub fn from_sources(
        env: &HashMap<String, String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        Config::from_layers(None, env, flags)
    }

    /// Defaults, then the file, then the environment, then the flags.
    pub fn from_layers(
        file: Option<(&std::path::Path, &file::FileConfig)>,
        env: &HashMap<String, String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut cfg = Config::default();
        let mut file_instances = None;
        if let Some((path, f)) = file {
            f.apply(path, &mut cfg)?;
            file_instances = f.instances(path)?;
            cfg.config_file = Some(path.to_owned());
        }

        let host_var = if flags.host.is_some() {
            "--host"
        } else {
            "AMARRE_HOST"
        };
        if let Some(host) = flags.host.as_deref().or(get("AMARRE_HOST")) {
            cfg.host = parse_host(host).map_err(|p| err(host_var, p))?;
        }
        if let Some(port) = flags.port {
            cfg.port = port;
        } else if let Some(v) = get("AMARRE_PORT") {
            cfg.port = v.parse().map_err(|_| {
                err(
                    "AMARRE_PORT",
                    format!("`{v}` is not a port number (0-65535)"),
                )
            })?;
        }
        if let Some(n) = flags.max_sessions {
            cfg.max_sessions = n;
        } else if let Some(v) = get("AMARRE_MAX_SESSIONS") {
            cfg.max_sessions = parse_num(v, "AMARRE_MAX_SESSIONS")?;
        }
        if flags.allow_non_loopback {
            cfg.allow_non_loopback = true;
        } else if let Some(v) = get("AMARRE_ALLOW_NON_LOOPBACK") {
            cfg.allow_non_loopback = truthy(v);
        }
        if let Some(v) = get("AMARRE_ALLOWED_HOSTS") {
            cfg.allowed_hosts = list(Some(v));
        }
        if let Some(v) = get("AMARRE_ALLOWED_ORIGINS") {
            cfg.allowed_origins = list(Some(v))
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect();
        }
        if let Some(f) = get("AMARRE_LOG").or(get("RUST_LOG")) {
            cfg.log_filter = Some(f.to_owned());
        }
        if let Some(d) = get("AMARRE_CACHE_DIR") {
            cfg.cache_dir = Some(PathBuf::from(d));
        }
        if cfg.cache_dir.is_none() {
            cfg.cache_dir = crate::adapter::cache::default_dir(env);
        }
        if let Some(v) = flags.log_format.as_deref().or(get("AMARRE_LOG_FORMAT")) {
            cfg.log_format = match v {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(err(
                        "AMARRE_LOG_FORMAT",
                        format!("`{v}` is not `text` or `json`"),
                    ));
                }
            };
        }

        let l = &mut cfg.limits;
        bytes_var(get, "AMARRE_MAX_LINE_BYTES", &mut l.max_line_bytes)?;
        bytes_var(get, "AMARRE_MAX_FRAME_BYTES", &mut l.max_frame_bytes)?;
        count_var(
            get,
            "AMARRE_CLIENT_QUEUE_RECORDS",
            &mut l.client_queue_records,
        )?;
        bytes_var(get, "AMARRE_CLIENT_QUEUE_BYTES", &mut l.client_queue_bytes)?;
        count_var(
            get,
            "AMARRE_STDIN_QUEUE_RECORDS",
            &mut l.stdin_queue_records,
        )?;
        ms_var(get, "AMARRE_WS_PING_MS", &mut l.ws_ping)?;
        ms_var(get, "AMARRE_WS_IDLE_MS", &mut l.ws_idle)?;
        ms_var(get, "AMARRE_KILL_GRACE_MS", &mut l.kill_grace)?;
        ms_var(get, "AMARRE_ADAPTER_CALL_MS", &mut l.adapter_call)?;
        if let Some(v) = get("AMARRE_ADAPTER_MEMORY_MB") {
            let mb: usize = parse_num(v, "AMARRE_ADAPTER_MEMORY_MB")?;
            if mb == 0 {
                return Err(err("AMARRE_ADAPTER_MEMORY_MB", "must be at least 1"));
            }
            l.adapter_memory_bytes = mb << 20;
        }
        count_var(get, "AMARRE_REPLAY_RECORDS", &mut l.replay_records)?;
        if let Some(v) = get("AMARRE_RELOAD_WATCH") {
            l.reload_watch = truthy(v);
        }
        ms_var(get, "AMARRE_RELOAD_DEBOUNCE_MS", &mut l.reload_debounce)?;
        bytes_var(get, "AMARRE_REPLAY_BYTES", &mut l.replay_bytes)?;
        bytes_var(get, "AMARRE_REVIEW_MAX_BYTES", &mut l.review_max_bytes)?;
        ms_var(get, "AMARRE_REVIEW_TIMEOUT_MS", &mut l.review_timeout)?;
        if l.adapter_call.is_zero() {
            return Err(err("AMARRE_ADAPTER_CALL_MS", "must be at least 1"));
        }

        if let Some(p) = get("AMARRE_PUSH_TOKENS_PATH") {
            cfg.push.tokens_path = Some(PathBuf::from(p));
        }
        ms_var(get, "AMARRE_PUSH_GRACE_MS", &mut cfg.push.grace)?;
        if let Some(u) = get("AMARRE_PUSH_EXPO_URL") {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(err(
                    "AMARRE_PUSH_EXPO_URL",
                    format!("`{u}` is not an http(s) URL"),
                ));
            }
            cfg.push.expo_url = u.to_owned();
        }

        cfg.instances = instances(env, flags, file_instances)?;
        Ok(cfg)
    }

    /// The instance `POST /sessions` uses without `instanceId`: `default`,
    /// else the first.
    pub fn default_instance_id(&self) -> Option<&str> {
        self.instances
            .iter()
            .find(|i| i.id == "default")
            .or(self.instances.first())
            .map(|i| i.id.as_str())
    }
}

fn instances(
    env: &HashMap<String, String>,
    flags: &Overrides,
    from_file: Option<Vec<InstanceConfig>>,
) -> Result<Vec<InstanceConfig>, ConfigError> {
    let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    // Instances come wholly from the highest layer that defines any.
    let (json_setting, json) = match (&flags.instances_json, get("AMARRE_INSTANCES_JSON")) {
        (Some(j), _) => ("--instances-json", Some(j.as_str())),
        (None, Some(j)) => ("AMARRE_INSTANCES_JSON", Some(j)),
        _ => ("", None),
    };
    let shortcut_flags = flags.agent.is_some()
        || flags.agent_path.is_some()
        || flags.command.is_some()
        || flags.args.is_some();
    if let (Some(json), false) = (json, shortcut_flags) {
        let parsed: Vec<InstanceJson> = serde_json::from_str(json)
            .map_err(|e| err(json_setting, format!("not a JSON array of instances: {e}")))?;
        let list: Vec<InstanceConfig> = parsed
            .into_iter()
            .map(|i| InstanceConfig {
                id: i.id,
                agent: i.agent,
                agent_path: i.agent_path,
                env: i.env,
                command: i.command,
                args: i.args,
            })
            .collect();
        validate_instances(&list).map_err(|p| err(json_setting, p))?;
        return Ok(list);
    }

    let shortcuts = shortcut_flags
        || [
            "AMARRE_AGENT",
            "AMARRE_AGENT_PATH",
            "AMARRE_COMMAND",
            "AMARRE_ARGS_JSON",
        ]
        .iter()
        .any(|k| get(k).is_some());
    if let (Some(list), false) = (from_file, shortcuts) {
        return Ok(list);
    }
    let mut inst = InstanceConfig {
        id: "default".into(),
        ..Default::default()
    };
    inst.agent = Some(
        flags
            .agent
            .clone()
            .or(get("AMARRE_AGENT").map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_AGENT.into()),
    );
    if inst.agent.as_deref() == Some("claude-code") && get("AMARRE_CLAUDE_RAW").is_some_and(truthy)
    {
        inst.agent = Some("claude-code-raw".into());
    }
    inst.agent_path = flags
        .agent_path
        .clone()
        .or(get("AMARRE_AGENT_PATH").map(PathBuf::from));
    inst.command = flags
        .command
        .clone()
        .or(get("AMARRE_COMMAND").map(str::to_owned));
    inst.args = match (&flags.args, get("AMARRE_ARGS_JSON")) {
        (Some(a), _) => a.clone(),
        (None, Some(j)) => serde_json::from_str(j).map_err(|e| {
            err(
                "AMARRE_ARGS_JSON",
                format!("not a JSON array of strings: {e}"),
            )
        })?,
        _ => Vec::new(),
    };
    Ok(vec![inst])
}

/// Checks ids (non-empty, unique, URL-safe) and that each instance names an
/// adapter.
pub fn validate_instances(list: &[InstanceConfig]) -> Result<(), String> {
    if list.is_empty() {
        return Err("at least one instance is needed".into());
    }
    let mut seen = HashSet::new();
    for inst in list {
        let id_ok = !inst.id.is_empty()
            && inst.id.len() <= 64
            && inst
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !id_ok {
            return Err(format!(
                "instance id `{}` is invalid (1-64 characters of letters, digits, `-`, `_`, `.`)",
                inst.id
            ));
        }
        if !seen.insert(inst.id.as_str()) {
            return Err(format!("duplicate instance id `{}`", inst.id));
        }
        if inst.agent.as_deref().is_none_or(str::is_empty) && inst.agent_path.is_none() {
            return Err(format!(
                "instance `{}` needs `agent` or `agentPath`",
                inst.id
            ));
        }
    }
    Ok(())
}

fn parse_host(host: &str) -> Result<IpAddr, String> {
    if host == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    host.trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| format!("`{host}` is not an IP address"))
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

fn list(v: Option<&str>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn parse_num<T: std::str::FromStr>(v: &str, name: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| err(name, format!("`{v}` is not a non-negative integer")))
}

fn count_var<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    name: &str,
    slot: &mut usize,
) -> Result<(), ConfigError> {
    if let Some(v) = get(name) {
        let n: usize = parse_num(v, name)?;
        if n == 0 {
            return Err(err(name, "must be at least 1"));
        }
        *slot = n;
    }
    Ok(())
}

fn bytes_var<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    name: &str,
    slot: &mut usize,
) -> Result<(), ConfigError> {
    count_var(get, name, slot)
}

fn ms_var<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    name: &str,
    slot: &mut Duration,
) -> Result<(), ConfigError> {
    if let Some(v) = get(name) {
        let ms: u64 = parse_num(v, name)?;
        *slot = Duration::from_millis(ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_bind_loopback_and_serve_one_default_instance() {
        let cfg = Config::from_sources(&env(&[]), &Overrides::default()).unwrap();
        assert_eq!(cfg.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(cfg.port, 8341);
        assert_eq!(cfg.max_sessions, 8);
        assert_eq!(cfg.instances.len(), 1);
        assert_eq!(cfg.instances[0].id, "default");
        assert_eq!(cfg.instances[0].agent.as_deref(), Some("pi"));
        assert_eq!(cfg.instances[0].command, None);
        assert_eq!(cfg.limits, Limits::default());
    }

    #[test]
    fn flags_override_the_environment() {
        let cfg = Config::from_sources(
            &env(&[("AMARRE_PORT", "9000"), ("AMARRE_HOST", "127.0.0.2")]),
            &Overrides {
                port: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.port, 0);
        assert_eq!(cfg.host, IpAddr::from([127, 0, 0, 2]));
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Config::from_sources(&env(&[("AMARRE_PORT", "http")]), &Overrides::default())
            .unwrap_err();
        assert_eq!(e.setting, "AMARRE_PORT");
        let e = Config::from_sources(
            &env(&[("AMARRE_INSTANCES_JSON", "{")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.setting, "AMARRE_INSTANCES_JSON");
        let e = Config::from_sources(&env(&[("AMARRE_WS_PING_MS", "-1")]), &Overrides::default())
            .unwrap_err();
        assert_eq!(e.setting, "AMARRE_WS_PING_MS");
    }

    #[test]
    fn instances_json_wins_over_the_shortcuts_and_rejects_duplicates() {
        let cfg = Config::from_sources(
            &env(&[
                ("AMARRE_AGENT", "pi"),
                ("AMARRE_INSTANCES_JSON", r#"[{"id":"a","agent":"stdio","command":"cat","env":{"X":"1"}},{"id":"b","agentPath":"/x.wasm"}]"#),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.instances.len(), 2);
        assert_eq!(cfg.instances[0].env["X"], "1");
        assert_eq!(cfg.default_instance_id(), Some("a"));
        let dup = Config::from_sources(
            &env(&[(
                "AMARRE_INSTANCES_JSON",
                r#"[{"id":"a","agent":"pi"},{"id":"a","agent":"pi"}]"#,
            )]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(dup.problem.contains("duplicate instance id `a`"), "{dup}");
        let no_agent = Config::from_sources(
            &env(&[("AMARRE_INSTANCES_JSON", r#"[{"id":"a"}]"#)]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(no_agent.problem.contains("needs `agent`"), "{no_agent}");
    }

    #[test]
    fn the_shortcuts_configure_instance_default() {
        let cfg = Config::from_sources(
            &env(&[
                ("AMARRE_AGENT", "stdio"),
                ("AMARRE_COMMAND", "/bin/agent"),
                ("AMARRE_ARGS_JSON", r#"["-v"]"#),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        let i = &cfg.instances[0];
        assert_eq!(i.id, "default");
        assert_eq!(i.agent.as_deref(), Some("stdio"));
        assert_eq!(i.command.as_deref(), Some("/bin/agent"));
        assert_eq!(i.args, vec!["-v".to_string()]);
        let raw = Config::from_sources(
            &env(&[("AMARRE_AGENT", "claude-code"), ("AMARRE_CLAUDE_RAW", "1")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(raw.instances[0].agent.as_deref(), Some("claude-code-raw"));
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    fn write(text: &str) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("amarre-cfg-{}-{n}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load(text: &str, env: &[(&str, &str)], flags: Overrides) -> Result<Config, ConfigError> {
        let path = write(text);
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let flags = Overrides {
            config: Some(path.clone()),
            ..flags
        };
        let out = Config::load_from(&env, &flags);
        std::fs::remove_file(path).ok();
        out
    }

    const FILE: &str = r#"
[server]
host = "127.0.0.2"
port = 9100
max_sessions = 3
allowed_hosts = ["box.lan"]

[limits]
kill_grace_ms = 1500
adapter_memory_mb = 32

[push]
tokens_path = "/var/lib/amarre/push.json"
grace_ms = 5000

[log]
format = "json"

[[instances]]
id = "pi"
agent = "pi"
env = { PI_TELEMETRY = "1" }

[[instances]]
id = "claude"
agent = "claude-code"
command = "/opt/claude"
args = ["--verbose"]
"#;

    #[test]
    fn the_file_sets_everything_it_names() {
        let c = load(FILE, &[], Overrides::default()).unwrap();
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 2]));
        assert_eq!(c.port, 9100);
        assert_eq!(c.max_sessions, 3);
        assert_eq!(c.allowed_hosts, vec!["box.lan".to_string()]);
        assert_eq!(c.limits.kill_grace, Duration::from_millis(1500));
        assert_eq!(c.limits.adapter_memory_bytes, 32 << 20);
        assert_eq!(c.limits.max_line_bytes, Limits::default().max_line_bytes);
        assert_eq!(
            c.push.tokens_path.as_deref(),
            Some(std::path::Path::new("/var/lib/amarre/push.json"))
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.instances.len(), 2);
        assert_eq!(c.instances[0].env["PI_TELEMETRY"], "1");
        assert_eq!(c.instances[1].command.as_deref(), Some("/opt/claude"));
        assert_eq!(c.instances[1].args, vec!["--verbose".to_string()]);
        assert!(c.config_file.is_some());
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let c = load(
            FILE,
            &[("AMARRE_PORT", "9200"), ("AMARRE_MAX_SESSIONS", "4")],
            Overrides {
                max_sessions: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.port, 9200, "environment over file");
        assert_eq!(c.max_sessions, 5, "flag over environment");
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 2]), "file over default");
        assert_eq!(
            c.allowed_hosts,
            vec!["box.lan".to_string()],
            "an unset variable keeps the file's value"
        );
    }

    #[test]
    fn instances_come_wholly_from_the_highest_layer_defining_any() {
        // The environment's shortcut defines instances: the file's are ignored.
        let c = load(
            FILE,
            &[("AMARRE_AGENT", "stdio"), ("AMARRE_COMMAND", "cat")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.instances.len(), 1);
        assert_eq!(c.instances[0].id, "default");
        assert_eq!(c.instances[0].agent.as_deref(), Some("stdio"));
        let c = load(
            FILE,
            &[("AMARRE_INSTANCES_JSON", r#"[{"id":"x","agent":"pi"}]"#)],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.instances
                .iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>(),
            vec!["x"]
        );
        // A flag beats both.
        let c = load(
            FILE,
            &[("AMARRE_INSTANCES_JSON", r#"[{"id":"x","agent":"pi"}]"#)],
            Overrides {
                agent: Some("stdio".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.instances[0].id, "default");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_them() {
        let e = load("[server]\nhots = \"x\"\n", &[], Overrides::default()).unwrap_err();
        assert!(e.setting.starts_with("config file "), "{e}");
        assert!(e.problem.contains("hots"), "{e}");
        let e = load("[sever]\nhost = \"x\"\n", &[], Overrides::default()).unwrap_err();
        assert!(e.problem.contains("sever"), "{e}");
        let e = load(
            "[[instances]]\nid = \"a\"\nagnet = \"pi\"\n",
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.problem.contains("agnet"), "{e}");
        let e = load("[server]\nport = \"high\"\n", &[], Overrides::default()).unwrap_err();
        assert!(e.problem.contains("port"), "{e}");
        let e = load("[log]\nformat = \"xml\"\n", &[], Overrides::default()).unwrap_err();
        assert!(e.problem.contains("log.format"), "{e}");
        let e = load("[[instances]]\nid = \"a\"\nagent = \"pi\"\n[[instances]]\nid = \"a\"\nagent = \"pi\"\n", &[], Overrides::default())
            .unwrap_err();
        assert!(e.problem.contains("duplicate instance id `a`"), "{e}");
        let e = load("not = [toml", &[], Overrides::default()).unwrap_err();
        assert!(e.setting.contains("config file"), "{e}");
    }

    #[test]
    fn every_known_key_is_accepted_and_printed_back() {
        let mut doc = String::new();
        let mut sections: Vec<&str> = file::KNOWN_KEYS
            .iter()
            .map(|k| k.split('.').next().unwrap())
            .collect();
        sections.dedup();
        for section in sections {
            let keys: Vec<&str> = file::KNOWN_KEYS
                .iter()
                .filter(|k| k.starts_with(&format!("{section}.")))
                .map(|k| &k[section.len() + 1..])
                .collect();
            doc.push_str(if section == "instances" {
                "[[instances]]\n"
            } else {
                ""
            });
            if section != "instances" {
                doc.push_str(&format!("[{section}]\n"));
            }
            for key in keys {
                let value = match key {
                    "host" => "\"127.0.0.1\"",
                    "allowed_hosts" | "allowed_origins" | "args" => "[\"a\"]",
                    "allow_non_loopback" | "reload_watch" => "true",
                    "cache_dir" | "tokens_path" | "agent_path" => "\"/tmp/x\"",
                    "expo_url" => "\"https://example.com/push\"",
                    "format" => "\"json\"",
                    "filter" => "\"info\"",
                    "id" | "agent" | "command" => "\"x\"",
                    "env" => "{ A = \"1\" }",
                    _ => "7",
                };
                doc.push_str(&format!("{key} = {value}\n"));
            }
        }
        let c = load(&doc, &[], Overrides::default()).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        let printed = file::to_toml(&c);
        for key in file::KNOWN_KEYS {
            let name = key.rsplit('.').next().unwrap();
            assert!(
                printed.contains(&format!("{name} =")) || printed.contains(&format!(".{name}]")),
                "{key} missing from:\n{printed}"
            );
        }
        // What config check prints is itself a valid file.
        let again = load(&printed, &[], Overrides::default()).unwrap();
        assert_eq!(again.instances, c.instances);
        assert_eq!(again.limits, c.limits);
    }
}
