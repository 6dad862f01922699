//! Configuration: defaults, the configuration file ([`file`]), the
//! environment (the original's variable names and ours, PROTOCOL.md section
//! 9) and command-line flags, in that order of increasing precedence. Every
//! setting is declared once, in [`settings`] (how to add one is explained
//! there). Instances come wholly from the highest layer that defines any.
//! Parsing only: nothing here opens sockets or loads adapters. Every error
//! names the setting as its layer spells it (the TOML key, the variable or
//! the flag) and what is wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub mod file;
pub mod settings;

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
    /// A client that took nothing this long while records wait is slow.
    pub client_stall: Duration,
    pub stdin_queue_records: usize,
    pub stdin_queue_bytes: usize,
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

/// The defaults declared in [`settings::SETTINGS`].
impl Default for Limits {
    fn default() -> Self {
        Config::default().limits
    }
}

/// Push notification settings (section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The token store; push is disabled when unset.
    pub tokens_path: Option<PathBuf>,
    pub grace: Duration,
    pub expo_url: String,
    /// The most tokens kept; a registration beyond it is refused.
    pub max_tokens: usize,
}

/// The defaults declared in [`settings::SETTINGS`].
impl Default for PushConfig {
    fn default() -> Self {
        Config::default().push
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
    /// Connection cap and HTTP read timeouts (docs/security.md).
    pub conn: crate::http::listen::ConnLimits,
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
    /// Who may use the API (`AMARRE_AUTH`; PROTOCOL.md 12.5).
    pub auth: crate::auth::AuthMode,
    /// The daemon's state directory (`AMARRE_STATE_DIR`); the token file
    /// lives there when it is set (see [`crate::auth::token_file_path`]).
    pub state_dir: Option<PathBuf>,
}

/// Every default declared in [`settings::SETTINGS`], and instance
/// `default` serving [`DEFAULT_AGENT`].
impl Default for Config {
    fn default() -> Self {
        let mut cfg = Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            allow_non_loopback: false,
            max_sessions: 0,
            conn: crate::http::listen::ConnLimits {
                max_connections: 0,
                header_timeout: Duration::ZERO,
                body_timeout: Duration::ZERO,
            },
            instances: vec![default_instance()],
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            limits: Limits {
                max_line_bytes: 0,
                max_frame_bytes: 0,
                client_queue_records: 0,
                client_queue_bytes: 0,
                client_stall: Duration::ZERO,
                stdin_queue_records: 0,
                stdin_queue_bytes: 0,
                ws_ping: Duration::ZERO,
                ws_idle: Duration::ZERO,
                kill_grace: Duration::ZERO,
                adapter_call: Duration::ZERO,
                adapter_memory_bytes: 0,
                replay_records: 0,
                replay_bytes: 0,
                reload_watch: false,
                reload_debounce: Duration::ZERO,
                review_max_bytes: 0,
                review_timeout: Duration::ZERO,
            },
            push: PushConfig {
                tokens_path: None,
                grace: Duration::ZERO,
                expo_url: String::new(),
                max_tokens: 0,
            },
            log_format: LogFormat::Text,
            log_filter: None,
            cache_dir: None,
            config_file: None,
            auth: crate::auth::AuthMode::None,
            state_dir: None,
        };
        settings::defaults(&mut cfg);
        cfg
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

pub(crate) fn err(setting: &str, problem: impl Into<String>) -> ConfigError {
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

impl Overrides {
    /// The value given for `flag` (as named in [`settings::SETTINGS`]).
    pub fn value(&self, flag: &str) -> Option<String> {
        match flag {
            "--config" => self.config.as_ref().map(|p| p.display().to_string()),
            "--host" => self.host.clone(),
            "--port" => self.port.map(|p| p.to_string()),
            "--max-sessions" => self.max_sessions.map(|n| n.to_string()),
            "--allow-non-loopback" => self.allow_non_loopback.then(|| "true".to_owned()),
            "--log-format" => self.log_format.clone(),
            _ => None,
        }
    }
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
        Config::load_from(crate::util::environment(), flags)
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
        let mut cfg = Config::default();
        let mut file_instances = None;
        if let Some((path, f)) = file {
            file_instances = f.instances(path)?;
        }
        settings::apply_layers(&mut cfg, file.map(|(p, f)| (p, f.table())), env, flags)?;
        if let Some((path, _)) = file {
            cfg.config_file = Some(path.to_owned());
        }
        if cfg.cache_dir.is_none() {
            cfg.cache_dir = crate::adapter::cache::default_dir(env);
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
        validate_instances(&list, "agentPath").map_err(|p| err(json_setting, p))?;
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
/// adapter. `path_key` is how the layer spells `agent_path`.
pub fn validate_instances(list: &[InstanceConfig], path_key: &str) -> Result<(), String> {
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
                "instance `{}` needs `agent` or `{path_key}`",
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
    fn bounds_are_checked_and_errors_name_the_setting_as_its_layer_spells_it() {
        for (var, value) in [
            ("AMARRE_WS_PING_MS", "0"),
            ("AMARRE_WS_IDLE_MS", "0"),
            ("AMARRE_MAX_SESSIONS", "0"),
            ("AMARRE_RELOAD_WATCH", "maybe"),
            ("AMARRE_ALLOW_NON_LOOPBACK", "perhaps"),
            ("AMARRE_WS_PING_MS", "99999999999"),
            ("AMARRE_LOG", "amarre=loud"),
            ("RUST_LOG", "amarre=loud"),
            ("AMARRE_LOG_FORMAT", "xml"),
        ] {
            let e = load("", &[(var, value)], Overrides::default()).unwrap_err();
            assert_eq!(e.setting, var, "{e}");
        }
        for (text, key) in [
            ("[limits]\nws_ping_ms = 0\n", "limits.ws_ping_ms"),
            ("[limits]\nws_idle_ms = 0\n", "limits.ws_idle_ms"),
            ("[server]\nmax_sessions = 0\n", "server.max_sessions"),
            ("[server]\nhost = \"box\"\n", "server.host"),
            (
                "[limits]\nreload_watch = \"maybe\"\n",
                "limits.reload_watch",
            ),
            ("[log]\nfilter = \"amarre=loud\"\n", "log.filter"),
            ("[[instances]]\nid = \"a\"\n", "agent_path"),
        ] {
            let e = load(text, &[], Overrides::default()).unwrap_err();
            assert!(e.setting.starts_with("config file "), "{e}");
            assert!(e.problem.contains(key), "{text}: {e}");
            assert!(!e.problem.contains("AMARRE_"), "{text}: {e}");
        }
        let e = load(
            "",
            &[],
            Overrides {
                host: Some("box".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.setting, "--host");
        // A good filter is kept; the environment beats the file.
        let c = load(
            "[log]\nfilter = \"warn\"\n",
            &[("AMARRE_LOG", "info,amarre=debug")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.log_filter.as_deref(), Some("info,amarre=debug"));
    }

    #[test]
    fn defaults_are_declared_once_and_shared() {
        let adapter = crate::adapter::AdapterLimits::default();
        let limits = Limits::default();
        assert_eq!(adapter.call_budget, limits.adapter_call);
        assert_eq!(adapter.memory_bytes, limits.adapter_memory_bytes);
        assert_eq!(limits.ws_ping, Duration::from_millis(25_000));
        assert_eq!(PushConfig::default().grace, Duration::from_millis(15_000));
    }

    #[test]
    fn auth_and_state_dir_come_from_the_file_top_or_server_and_the_environment() {
        use crate::auth::AuthMode;
        let c = load(
            "auth = \"token\"\nstate_dir = \"/s\"\n",
            &[],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.auth, AuthMode::Token);
        assert_eq!(c.state_dir.as_deref(), Some(std::path::Path::new("/s")));
        let c = load(
            "[server]\nauth = \"token\"\n",
            &[("AMARRE_AUTH", "none")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.auth, AuthMode::None, "the environment beats the file");
        let e = load("[server]\nauth = \"pin\"\n", &[], Overrides::default()).unwrap_err();
        assert!(e.problem.contains("server.auth"), "{e}");
        let e = load("", &[("AMARRE_AUTH", "yes")], Overrides::default()).unwrap_err();
        assert_eq!(e.setting, "AMARRE_AUTH");
        assert_eq!(Config::default().auth, AuthMode::None);
    }

    #[test]
    fn every_known_key_is_accepted_and_printed_back() {
        let mut doc = String::new();
        // Top-level keys come first, before any section.
        for key in file::KNOWN_KEYS.iter().filter(|k| !k.contains('.')) {
            let value = match *key {
                "auth" => "\"token\"",
                _ => "\"/tmp/x\"",
            };
            doc.push_str(&format!("{key} = {value}\n"));
        }
        let mut sections: Vec<&str> = file::KNOWN_KEYS
            .iter()
            .filter(|k| k.contains('.'))
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
                    "cache_dir" | "tokens_path" | "agent_path" | "state_dir" => "\"/tmp/x\"",
                    "auth" => "\"token\"",
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
