//! Where a client finds the daemon's token (PROTOCOL.md 12.5), in order:
//! `--token-file`, `AMARRE_TOKEN`, the local daemon's token file. Never a
//! command-line argument: a token there is visible to every user of the
//! machine in the process list.
//!
//! The local daemon's token file is used only when the client talks to the
//! local daemon (no `--url`, or a loopback one), so a token never travels to
//! another machine unless the person gave it for that machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The token file's name in the daemon's state or configuration directory.
pub const TOKEN_FILE_NAME: &str = "token";

/// Where a token came from (for messages; never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--token-file PATH`.
    Flag(PathBuf),
    /// The `AMARRE_TOKEN` variable.
    Env,
    /// The local daemon's token file.
    Local(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(p) => write!(f, "--token-file {}", p.display()),
            Source::Env => f.write_str("AMARRE_TOKEN"),
            Source::Local(p) => write!(f, "the local daemon's token file {}", p.display()),
        }
    }
}

/// A token and where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub source: Source,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the value.
        write!(f, "Token(from {})", self.source)
    }
}

/// The candidate token files of the local daemon, most specific first:
/// `$AMARRE_STATE_DIR`, the state directory (`$XDG_STATE_HOME/amarre`, else
/// `~/.local/state/amarre`), the configuration file's directory, the
/// configuration directory (`$XDG_CONFIG_HOME/amarre`, else
/// `~/.config/amarre`).
pub fn local_candidates(env: &HashMap<String, String>, config_file: Option<&Path>) -> Vec<PathBuf> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    if let Some(d) = get("AMARRE_STATE_DIR") {
        out.push(PathBuf::from(d).join(TOKEN_FILE_NAME));
    }
    let home = get("HOME").map(PathBuf::from);
    match (get("XDG_STATE_HOME"), &home) {
        (Some(d), _) => out.push(PathBuf::from(d).join("amarre").join(TOKEN_FILE_NAME)),
        (None, Some(h)) => out.push(h.join(".local/state/amarre").join(TOKEN_FILE_NAME)),
        _ => {}
    }
    if let Some(dir) = config_file.and_then(Path::parent) {
        out.push(dir.join(TOKEN_FILE_NAME));
    }
    match (get("XDG_CONFIG_HOME"), &home) {
        (Some(d), _) => out.push(PathBuf::from(d).join("amarre").join(TOKEN_FILE_NAME)),
        (None, Some(h)) => out.push(h.join(".config/amarre").join(TOKEN_FILE_NAME)),
        _ => {}
    }
    out.dedup();
    out
}

fn read_token(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let t = text.trim();
            if t.is_empty() {
                Err(format!("the token file {} is empty", path.display()))
            } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!(
                    "the token file {} does not hold one token (it has spaces or several lines)",
                    path.display()
                ))
            } else {
                Ok(Some(t.to_owned()))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read the token file {}: {e}",
            path.display()
        )),
    }
}

/// Finds the token: `flag` (`--token-file`; it must be readable), then
/// `AMARRE_TOKEN`, then (only when `local` is true) the first local token
/// file that exists. `None` when there is none (a daemon without auth needs
/// none).
pub fn find(
    flag: Option<&Path>,
    env: &HashMap<String, String>,
    local: bool,
    config_file: Option<&Path>,
) -> Result<Option<Token>, String> {
    if let Some(path) = flag {
        return match read_token(path)? {
            Some(value) => Ok(Some(Token {
                value,
                source: Source::Flag(path.to_owned()),
            })),
            None => Err(format!("the token file {} does not exist", path.display())),
        };
    }
    if let Some(v) = env
        .get("AMARRE_TOKEN")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        return Ok(Some(Token {
            value: v.to_owned(),
            source: Source::Env,
        }));
    }
    if local {
        for path in local_candidates(env, config_file) {
            // An unreadable candidate of the local daemon is skipped: it may
            // belong to another user's daemon.
            if let Ok(Some(value)) = read_token(&path) {
                return Ok(Some(Token {
                    value,
                    source: Source::Local(path),
                }));
            }
        }
    }
    Ok(None)
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

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("amarre-token-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_flag_wins_over_the_variable_and_the_local_file() {
        let d = scratch("order");
        std::fs::write(d.join("flag"), "from-flag\n").unwrap();
        std::fs::create_dir_all(d.join("state")).unwrap();
        std::fs::write(d.join("state/token"), "from-local").unwrap();
        let e = env(&[
            ("AMARRE_TOKEN", "from-env"),
            ("AMARRE_STATE_DIR", d.join("state").to_str().unwrap()),
        ]);
        let t = find(Some(&d.join("flag")), &e, true, None)
            .unwrap()
            .unwrap();
        assert_eq!(t.value, "from-flag");
        let t = find(None, &e, true, None).unwrap().unwrap();
        assert_eq!((t.value.as_str(), t.source), ("from-env", Source::Env));
        let e = env(&[("AMARRE_STATE_DIR", d.join("state").to_str().unwrap())]);
        let t = find(None, &e, true, None).unwrap().unwrap();
        assert_eq!(t.value, "from-local");
        // The local file is not sent to a daemon elsewhere.
        assert_eq!(find(None, &e, false, None).unwrap(), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_or_malformed_token_file_is_a_clear_error() {
        let d = scratch("bad");
        let err = find(Some(&d.join("nope")), &env(&[]), true, None).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::write(d.join("two"), "a\nb\n").unwrap();
        let err = find(Some(&d.join("two")), &env(&[]), true, None).unwrap_err();
        assert!(err.contains("does not hold one token"), "{err}");
        std::fs::write(d.join("empty"), "\n").unwrap();
        let err = find(Some(&d.join("empty")), &env(&[]), true, None).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn candidates_follow_the_xdg_directories_and_the_config_file() {
        let e = env(&[("HOME", "/home/u")]);
        let c = local_candidates(&e, Some(Path::new("/etc/amarre/amarre.toml")));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/home/u/.local/state/amarre/token"),
                PathBuf::from("/etc/amarre/token"),
                PathBuf::from("/home/u/.config/amarre/token"),
            ]
        );
        let t = Token {
            value: "secret".into(),
            source: Source::Env,
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
