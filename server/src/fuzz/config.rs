//! The configuration: a file and an environment made of the real setting
//! names with arbitrary values. Loading never panics; an error names a
//! setting; an accepted configuration holds every bound its settings
//! declare.

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};

use crate::config::settings::{Kind, SETTINGS, Value};
use crate::config::{Config, Overrides};

const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "8",
    "65535",
    "65536",
    "86400000",
    "86400001",
    "4294967295",
    "18446744073709551616",
    "1e3",
    " 5 ",
    "",
    "yes",
    "maybe",
    "true",
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "localhost",
    "http://127.0.0.1:1",
    "ftp://x",
    "text",
    "json",
    "info,amarre=debug",
    "[",
    "none",
    "token",
    "a,b,,c",
    "/nonexistent/dir/file",
    "[{\"id\":\"default\",\"agent\":\"stdio\",\"command\":\"cat\"}]",
    "[{\"id\":\"\"}]",
    "{}",
    "[\"--x\"]",
];

const TOML_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "8",
    "86400001",
    "18446744073709551615",
    "1.5",
    "true",
    "false",
    "\"\"",
    "\"x\"",
    "\"127.0.0.1\"",
    "\"json\"",
    "\"token\"",
    "[]",
    "[\"a\", 1]",
    "{ a = 1 }",
    "\"http://127.0.0.1:1\"",
    "1979-05-27T07:32:00Z",
];

#[derive(Debug, Arbitrary)]
enum Piece {
    /// A setting's section header.
    Section(u8),
    /// `key = value` with a setting's key and a value from the list.
    Known(u8, u8),
    /// A setting's key and an arbitrary string value.
    KnownText(u8, String),
    /// An `[[instances]]` table with arbitrary fields.
    Instance {
        id: Option<String>,
        agent: Option<String>,
        agent_path: Option<String>,
        command: Option<String>,
        env: Vec<(String, String)>,
    },
    /// Arbitrary text.
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    file: Option<Vec<Piece>>,
    env: Vec<(u8, u8)>,
    env_text: Vec<(u8, String)>,
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn file_text(pieces: &[Piece]) -> String {
    let keys: Vec<&str> = SETTINGS.iter().filter_map(|s| s.key).collect();
    let mut text = String::new();
    for p in pieces {
        match p {
            Piece::Section(k) => {
                let key = keys[*k as usize % keys.len()];
                if let Some((section, _)) = key.split_once('.') {
                    text.push_str(&format!("[{section}]\n"));
                }
            }
            Piece::Known(k, v) => {
                let key = keys[*k as usize % keys.len()];
                let name = key.rsplit('.').next().unwrap_or(key);
                let value = TOML_VALUES[*v as usize % TOML_VALUES.len()];
                text.push_str(&format!("{name} = {value}\n"));
            }
            Piece::KnownText(k, v) => {
                let key = keys[*k as usize % keys.len()];
                let name = key.rsplit('.').next().unwrap_or(key);
                text.push_str(&format!("{name} = {}\n", quote(v)));
            }
            Piece::Instance {
                id,
                agent,
                agent_path,
                command,
                env,
            } => {
                text.push_str("[[instances]]\n");
                for (k, v) in [
                    ("id", id),
                    ("agent", agent),
                    ("agent_path", agent_path),
                    ("command", command),
                ] {
                    if let Some(v) = v {
                        text.push_str(&format!("{k} = {}\n", quote(v)));
                    }
                }
                if !env.is_empty() {
                    let pairs: Vec<String> = env
                        .iter()
                        .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
                        .collect();
                    text.push_str(&format!("env = {{ {} }}\n", pairs.join(", ")));
                }
            }
            Piece::Raw(s) => {
                text.push_str(s);
                text.push('\n');
            }
        }
    }
    text
}

/// Every numeric setting of an accepted configuration is within its
/// declared bounds.
fn within_bounds(cfg: &Config) {
    for s in SETTINGS {
        if let (Kind::Num { min, max, .. }, Value::Num(n)) = (s.kind, (s.get)(cfg)) {
            assert!(
                (min..=max).contains(&n),
                "{:?} = {n} accepted outside {min}..={max}",
                s.env
            );
        }
    }
}

/// The environment and the file of an input. An input that starts with
/// `#!` is text: `NAME=value` lines, then, after a line `---`, the file
/// (the corpus holds such inputs); any other is decoded into setting names
/// with values from the lists above or arbitrary ones.
fn decode(data: &[u8]) -> Option<(HashMap<String, String>, Option<String>)> {
    let mut env = HashMap::new();
    if data.starts_with(b"#!") {
        let text = String::from_utf8_lossy(data);
        let (vars, file) = match text.split_once("\n---\n") {
            Some((v, f)) => (v.to_owned(), Some(f.to_owned())),
            None => (text.into_owned(), None),
        };
        for line in vars.lines().skip(1) {
            if let Some((k, v)) = line.split_once('=') {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        return Some((env, file));
    }
    let input = Input::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    let names: Vec<&str> = SETTINGS
        .iter()
        .flat_map(|s| s.env.iter().copied())
        .collect();
    for (k, v) in &input.env {
        env.insert(
            names[*k as usize % names.len()].to_owned(),
            VALUES[*v as usize % VALUES.len()].to_owned(),
        );
    }
    for (k, v) in &input.env_text {
        env.insert(names[*k as usize % names.len()].to_owned(), v.clone());
    }
    Some((env, input.file.as_deref().map(file_text)))
}

fn check(data: &[u8], dir: &std::path::Path) {
    let Some((mut env, file)) = decode(data) else {
        return;
    };
    // The cache directory and a configuration file come from the input
    // only: never the developer's own.
    env.insert(
        "XDG_CACHE_HOME".into(),
        dir.join("cache").display().to_string(),
    );
    env.remove("AMARRE_CONFIG");
    let mut flags = Overrides::default();
    if let Some(text) = &file {
        let path = dir.join("config.toml");
        if std::fs::write(&path, text).is_err() {
            return;
        }
        flags.config = Some(path);
    }
    match Config::load_from(&env, &flags) {
        Ok(cfg) => within_bounds(&cfg),
        Err(e) => {
            assert!(!e.setting.trim().is_empty(), "an error naming nothing: {e}");
            assert!(!e.problem.trim().is_empty(), "an error saying nothing: {e}");
            let _ = e.to_string();
        }
    }
}

#[test]
fn fuzz_configuration() {
    let dir = std::env::temp_dir().join(format!("amarre-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    super::run("config", |data| check(data, &dir));
    let _ = std::fs::remove_dir_all(&dir);
}
