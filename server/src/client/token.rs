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
/// `AMARRE_TOKEN`, then the local daemon's token file (`local`, given only
/// when the client talks to the local daemon; the daemon places it with
/// [`crate::auth::token_file_path`]) when it exists. `None` when there is
/// none (a daemon without auth needs none).
pub fn find(
    flag: Option<&Path>,
    env: &HashMap<String, String>,
    local: Option<&Path>,
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
    if let Some(path) = local {
        // An unreadable local file is skipped: it may belong to another
        // user's daemon.
        if let Ok(Some(value)) = read_token(path) {
            return Ok(Some(Token {
                value,
                source: Source::Local(path.to_owned()),
            }));
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
        let local = d.join("state/token");
        let e = env(&[("AMARRE_TOKEN", "from-env")]);
        let t = find(Some(&d.join("flag")), &e, Some(&local))
            .unwrap()
            .unwrap();
        assert_eq!(t.value, "from-flag");
        let t = find(None, &e, Some(&local)).unwrap().unwrap();
        assert_eq!((t.value.as_str(), t.source), ("from-env", Source::Env));
        let e = env(&[]);
        let t = find(None, &e, Some(&local)).unwrap().unwrap();
        assert_eq!(t.value, "from-local");
        // The local file is not sent to a daemon elsewhere.
        assert_eq!(find(None, &e, None).unwrap(), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_or_malformed_token_file_is_a_clear_error() {
        let d = scratch("bad");
        let err = find(Some(&d.join("nope")), &env(&[]), None).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::write(d.join("two"), "a\nb\n").unwrap();
        let err = find(Some(&d.join("two")), &env(&[]), None).unwrap_err();
        assert!(err.contains("does not hold one token"), "{err}");
        std::fs::write(d.join("empty"), "\n").unwrap();
        let err = find(Some(&d.join("empty")), &env(&[]), None).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_token_never_prints_its_value() {
        let t = Token {
            value: "secret".into(),
            source: Source::Env,
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
