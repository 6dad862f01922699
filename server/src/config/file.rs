//! The configuration file (TOML): everything the environment can say, plus
//! what it cannot (instances with env, command and args). Unknown keys are
//! errors that name the key. What each key means, its type and bounds are
//! declared in [`super::settings`], which also applies the file's values
//! (flags > environment > file > defaults); this module reads the file,
//! its `[[instances]]`, and prints a configuration back as a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::Deserialize;

use super::settings::{self, INSTANCE_KEYS, SETTINGS};
use super::{Config, ConfigError, InstanceConfig, validate_instances};

/// Every key the file accepts, as `section.key` (`instances.*` for the
/// fields of each `[[instances]]`), derived from [`settings::SETTINGS`].
/// The NixOS module's keys are checked against this list by the tests.
pub const KNOWN_KEYS: KnownKeys = KnownKeys;

/// The list behind [`KNOWN_KEYS`]: a slice of `section.key` strings.
#[derive(Debug, Clone, Copy)]
pub struct KnownKeys;

static KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut keys: Vec<&'static str> = SETTINGS.iter().filter_map(|s| s.key).collect();
    keys.extend(
        INSTANCE_KEYS
            .iter()
            .map(|k| &*Box::leak(format!("instances.{k}").into_boxed_str())),
    );
    keys
});

impl std::ops::Deref for KnownKeys {
    type Target = [&'static str];
    fn deref(&self) -> &[&'static str] {
        &KEYS
    }
}

impl IntoIterator for KnownKeys {
    type Item = &'static &'static str;
    type IntoIter = std::slice::Iter<'static, &'static str>;
    fn into_iter(self) -> Self::IntoIter {
        KEYS.iter()
    }
}

/// A parsed configuration file whose sections and keys are all known.
#[derive(Debug, Default)]
pub struct FileConfig {
    table: toml::Table,
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
    /// Reads and parses a configuration file; unknown sections and keys
    /// are errors naming them.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read it: {e}")))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| err(path, e.to_string().trim().to_owned()))?;
        settings::check_file_keys(path, &table)?;
        Ok(FileConfig { table })
    }

    /// The parsed file.
    pub(crate) fn table(&self) -> &toml::Table {
        &self.table
    }

    /// The file's instances, if it defines any (checked).
    pub fn instances(&self, path: &Path) -> Result<Option<Vec<InstanceConfig>>, ConfigError> {
        let Some(value) = self.table.get("instances") else {
            return Ok(None);
        };
        let list: Vec<Instance> = value.clone().try_into().map_err(|e: toml::de::Error| {
            err(path, format!("[[instances]]: {}", e.to_string().trim()))
        })?;
        let list: Vec<InstanceConfig> = list
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
        validate_instances(&list, "agent_path")
            .map_err(|p| err(path, format!("[[instances]]: {p}")))?;
        Ok(Some(list))
    }
}

/// The effective configuration in the file's own layout (for
/// `amarre config check`).
pub fn to_toml(cfg: &Config) -> String {
    use toml::Value;
    let mut root = settings::to_toml_sections(cfg);
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let instances: Vec<Value> = cfg
        .instances
        .iter()
        .map(|i| {
            let mut t = toml::Table::new();
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
