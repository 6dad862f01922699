//! Optional authentication (PROTOCOL.md 12.5): the daemon's token, its
//! file, the constant-time check, and reloading after a rotation.
//!
//! - [`AuthMode`]: `none` (the default, the 2.2.0 model) or `token`.
//! - [`Token`]: 32 random bytes from the OS, base64url without padding
//!   (43 characters). Its `Debug` never shows it.
//! - [`token_file_path`]: the one place that says where the local daemon's
//!   token file is (`<state_dir>/token`, else `<config dir>/amarre/token`).
//! - [`Verifier`]: the running daemon's current token and its generation;
//!   [`http`] is the middleware that asks it, [`watch`] reloads it.
//! - [`client_token`]: how clients of this machine find the token
//!   (`--token-file`, `AMARRE_TOKEN`, the local token file).
//!
//! The token never goes to logs, metrics, error messages or `/adapters`,
//! and is never taken from a command-line argument.

pub mod http;
pub mod watch;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch as tokio_watch;

use crate::config::Config;

/// Length of a token in characters (32 bytes in base64url, no padding).
pub const TOKEN_CHARS: usize = 43;
/// The token file's name inside its directory.
pub const TOKEN_FILE_NAME: &str = "token";

/// Whether the daemon asks for a token (`AMARRE_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No authentication: the tailnet ACL and the loopback bind are the
    /// boundary (2.2.0).
    #[default]
    None,
    /// Every route but `/healthz`, `/app/` and the browser redirect of `/`
    /// needs the daemon's token.
    Token,
}

impl AuthMode {
    /// Parses `none` or `token`.
    pub fn parse(v: &str) -> Result<AuthMode, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(AuthMode::None),
            "token" => Ok(AuthMode::Token),
            other => Err(format!("`{other}` is not `none` or `token`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Token => "token",
        }
    }
}

/// A token. Compared only through [`Token::digest`] in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A new token: 32 bytes from the operating system's random source.
    pub fn generate() -> Result<Token, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| format!("cannot read random bytes from the operating system: {e}"))?;
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Reads a token from a file's text (surrounding whitespace ignored).
    /// The error never repeats the text.
    pub fn parse(text: &str) -> Result<Token, String> {
        let t = text.trim();
        let well_formed = t.len() == TOKEN_CHARS
            && URL_SAFE_NO_PAD
                .decode(t.as_bytes())
                .is_ok_and(|b| b.len() == 32);
        if well_formed {
            Ok(Token(t.to_owned()))
        } else {
            Err(format!(
                "it does not hold a token ({TOKEN_CHARS} base64url characters)"
            ))
        }
    }

    /// The token's text, for the few places that must show or send it
    /// (`amarre token`, `amarre pair`, a client's `Authorization`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token: what the daemon keeps to compare against.
    pub fn digest(&self) -> [u8; 32] {
        digest(self.0.as_bytes())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether `presented` is the token whose digest is `expected`. Both sides
/// are hashed to a fixed length first, so the comparison takes the same
/// time whatever the length or content of the presented value; the final
/// comparison is constant-time (`subtle`). A missing value is hashed too.
pub fn matches(expected: &[u8; 32], presented: Option<&[u8]>) -> bool {
    let got = digest(presented.unwrap_or_default());
    let equal: bool = got[..].ct_eq(&expected[..]).into();
    equal && presented.is_some()
}

/// The local daemon's token file: `<state_dir>/token` when a state
/// directory is configured (`AMARRE_STATE_DIR`, `state_dir`), else
/// `$XDG_CONFIG_HOME/amarre/token`, else `~/.config/amarre/token`. Clients
/// of this machine (`amarre token`, `amarre pair`, the terminal client)
/// read the same file.
pub fn token_file_path(cfg: &Config) -> Result<PathBuf, String> {
    let env: HashMap<String, String> = std::env::vars().collect();
    token_file_path_in(cfg, &env)
}

/// [`token_file_path`] with an explicit environment.
pub fn token_file_path_in(cfg: &Config, env: &HashMap<String, String>) -> Result<PathBuf, String> {
    if let Some(dir) = &cfg.state_dir {
        return Ok(dir.join(TOKEN_FILE_NAME));
    }
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    get("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .map(|d| d.join("amarre"))
        .or_else(|| get("HOME").map(|h| h.join(".config/amarre")))
        .map(|d| d.join(TOKEN_FILE_NAME))
        .ok_or_else(|| {
            "cannot place the token file: set AMARRE_STATE_DIR (or state_dir), XDG_CONFIG_HOME or HOME".to_owned()
        })
}

/// Reads the token file, refusing one that group or others may access, one
/// owned by another user, or one that holds no token. Errors name the file
/// and never show its content.
pub fn read_token_file(path: &Path) -> Result<Token, std::io::Error> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(invalid(format!(
            "token file {}: it is not a regular file",
            path.display()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(invalid(format!(
            "token file {}: its mode is {mode:04o}, so other users may read or change it; \
refusing it (run `chmod 600 {}` and, since it may have been read, `amarre token --rotate`)",
            path.display(),
            path.display()
        )));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(invalid(format!(
            "token file {}: it belongs to uid {}, not to this user (uid {me}); refusing it",
            path.display(),
            meta.uid()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("token file {}: {e}", path.display()))
    })?;
    Token::parse(&text).map_err(|p| {
        invalid(format!(
            "token file {}: {p}; remove it or run `amarre token --rotate` to write a new one",
            path.display()
        ))
    })
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))
}

/// The token of the file at `path`, creating the file (mode 0600, its
/// directory 0700) with a new token when it does not exist.
pub fn load_or_create(path: &Path) -> Result<(Token, bool), String> {
    match read_token_file(path) {
        Ok(t) => return Ok((t, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(e.to_string()),
        Err(e) => return Err(format!("token file {}: {e}", path.display())),
    }
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let token = Token::generate()?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| {
            f.write_all(format!("{}\n", token.expose()).as_bytes())?;
            f.sync_all()
        });
    match created {
        Ok(()) => Ok((token, true)),
        // Another process created it meanwhile: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_token_file(path)
            .map(|t| (t, false))
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!(
            "cannot create the token file {}: {e}",
            path.display()
        )),
    }
}

/// Replaces the token file with a new token, atomically (a private
/// temporary file renamed over it).
pub fn rotate(path: &Path) -> Result<Token, String> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let token = Token::generate()?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| TOKEN_FILE_NAME.to_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    crate::util::write_private_atomic(path, &tmp, format!("{}\n", token.expose()).as_bytes())
        .map_err(|e| format!("cannot write the token file {}: {e}", path.display()))?;
    Ok(token)
}

/// How a client of this machine finds the token (PROTOCOL.md 12.5), in
/// this order: the `--token-file` it was given, `AMARRE_TOKEN`, the local
/// daemon's token file from the configuration (only if it exists). Never a
/// command-line argument. `Ok(None)`: no token anywhere (the daemon is
/// presumably in `none` mode).
pub fn client_token(token_file: Option<&Path>, cfg: &Config) -> Result<Option<Token>, String> {
    if let Some(path) = token_file {
        return read_token_file(path)
            .map(Some)
            .map_err(|e| with_path(e, path));
    }
    if let Some(v) = std::env::var("AMARRE_TOKEN")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return Token::parse(&v)
            .map(Some)
            .map_err(|p| format!("AMARRE_TOKEN: {p}"));
    }
    let path = token_file_path(cfg)?;
    match read_token_file(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(with_path(e, &path)),
    }
}

/// [`client_token`] with the configuration of this machine (flags aside:
/// `AMARRE_CONFIG`, `AMARRE_STATE_DIR`, ...), read only when neither a
/// token file nor `AMARRE_TOKEN` is given.
pub fn local_client_token(token_file: Option<&Path>) -> Result<Option<Token>, String> {
    let from_env = std::env::var("AMARRE_TOKEN").is_ok_and(|v| !v.trim().is_empty());
    if token_file.is_some() || from_env {
        return client_token(token_file, &Config::default());
    }
    let cfg = Config::load(&crate::config::Overrides::default()).map_err(|e| e.to_string())?;
    client_token(None, &cfg)
}

/// An HTTP client for this machine's daemon that sends
/// `Authorization: Bearer <token>` when [`local_client_token`] finds one.
pub fn http_client(token_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = local_client_token(token_file)? {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

fn with_path(e: std::io::Error, path: &Path) -> String {
    if e.kind() == std::io::ErrorKind::InvalidData {
        e.to_string()
    } else {
        format!("token file {}: {e}", path.display())
    }
}

/// The running daemon's token: its digest, the file it came from, and a
/// generation that changes whenever the token does (sockets watch it).
pub struct Verifier {
    path: PathBuf,
    current: RwLock<[u8; 32]>,
    generation: tokio_watch::Sender<u64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads (or creates) the token file at `path`.
    pub fn open(path: PathBuf) -> Result<Verifier, String> {
        let (token, created) = load_or_create(&path)?;
        if created {
            tracing::info!(file = %path.display(), "created the token file (mode 0600)");
        }
        Ok(Verifier::new(path, &token))
    }

    /// A verifier for `token` (whose file is `path`).
    pub fn new(path: PathBuf, token: &Token) -> Verifier {
        Verifier {
            path,
            current: RwLock::new(token.digest()),
            generation: tokio_watch::Sender::new(0),
        }
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a presented token. On success, a receiver of the token's
    /// generation, already marked seen: it changes when the token does.
    pub fn check(&self, presented: Option<&[u8]>) -> Option<tokio_watch::Receiver<u64>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        // Subscribed under the lock, so a rotation after this point is
        // always seen as a change.
        let rx = self.generation.subscribe();
        matches(&current, presented).then_some(rx)
    }

    /// Takes `token` as the current one; returns whether it changed.
    pub fn replace(&self, token: &Token) -> bool {
        let next = token.digest();
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed: bool = (!current[..].ct_eq(&next[..])).into();
        if changed {
            *current = next;
            self.generation.send_modify(|g| *g += 1);
        }
        changed
    }

    /// Re-reads the token file. A file that cannot be used leaves the
    /// current token in force (logged).
    pub fn reload(&self) -> bool {
        match read_token_file(&self.path) {
            Ok(token) => {
                let changed = self.replace(&token);
                if changed {
                    tracing::info!(file = %self.path.display(), "token file changed: the new token is in force; sockets opened with the old one are closed");
                }
                changed
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "cannot reload the token file, the current token stays in force: {}", with_path(e, &self.path));
                false
            }
        }
    }
}

/// Sets up authentication for `cfg`: `None` in `none` mode; in `token`
/// mode the verifier (the token file read or created, refused when others
/// may read it), its file watcher and its SIGHUP reload.
pub fn start(cfg: &Config) -> Result<Option<std::sync::Arc<Verifier>>, String> {
    match cfg.auth {
        AuthMode::None => Ok(None),
        AuthMode::Token => {
            let path = token_file_path(cfg).map_err(|p| format!("AMARRE_AUTH=token: {p}"))?;
            let path = std::path::absolute(&path).unwrap_or(path);
            let verifier = std::sync::Arc::new(Verifier::open(path)?);
            watch::start(verifier.clone());
            tracing::info!(file = %verifier.path().display(), "token authentication is on");
            Ok(Some(verifier))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("amarre-auth-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generated_tokens_are_43_base64url_characters_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
        assert_eq!(Token::parse(&format!("{}\n", a.expose())).unwrap(), a);
        assert_eq!(format!("{a:?}"), "Token(<redacted>)");
    }

    #[test]
    fn malformed_tokens_are_refused_without_repeating_them() {
        let good = Token::generate().unwrap();
        let secretish = format!("{}x", good.expose());
        for bad in [
            "",
            "short",
            &secretish,
            &good.expose()[..42],
            // 43 characters, but not base64url.
            "+++++++++++++++++++++++++++++++++++++++++++",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ=",
        ] {
            let e = Token::parse(bad).unwrap_err();
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
    }

    #[test]
    fn only_the_exact_token_matches() {
        let t = Token::generate().unwrap();
        let d = t.digest();
        assert!(matches(&d, Some(t.expose().as_bytes())));
        assert!(!matches(&d, None));
        assert!(!matches(&d, Some(b"")));
        assert!(!matches(&d, Some(&t.expose().as_bytes()[..42])));
        assert!(!matches(&d, Some(format!("{} ", t.expose()).as_bytes())));
        let mut flipped = t.expose().as_bytes().to_vec();
        flipped[0] ^= 1;
        assert!(!matches(&d, Some(&flipped)));
        // The digest of nothing does not open a verifier either.
        let empty = digest(b"");
        assert!(!matches(&empty, None));
    }

    #[test]
    fn the_file_is_created_private_reused_and_refused_when_others_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("file");
        let path = dir.join("state").join(TOKEN_FILE_NAME);
        let (t, created) = load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again, t);
        for bad in [0o640, 0o604, 0o620, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
            let e = load_or_create(&path).unwrap_err();
            assert!(e.contains(&format!("{bad:04o}")), "{e}");
            assert!(!e.contains(t.expose()), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a token\n").unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(e.contains("does not hold a token"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rotation_replaces_the_token_and_the_verifier_notices() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("rotate");
        let path = dir.join(TOKEN_FILE_NAME);
        let v = Verifier::open(path.clone()).unwrap();
        let old = read_token_file(&path).unwrap();
        let mut rx = v.check(Some(old.expose().as_bytes())).expect("old token");
        assert!(!rx.has_changed().unwrap());
        let new = rotate(&path).unwrap();
        assert_ne!(new, old);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(v.reload(), "the new token is taken");
        assert!(v.check(Some(old.expose().as_bytes())).is_none());
        assert!(v.check(Some(new.expose().as_bytes())).is_some());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // Reloading the same token changes nothing.
        assert!(!v.reload());
        assert!(!rx.has_changed().unwrap());
        // A broken file keeps the current token.
        std::fs::write(&path, "garbage").unwrap();
        assert!(!v.reload());
        assert!(v.check(Some(new.expose().as_bytes())).is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_file_lives_in_the_state_dir_else_the_config_dir() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut cfg = Config::default();
        assert_eq!(
            token_file_path_in(&cfg, &env(&[("HOME", "/home/u")])).unwrap(),
            PathBuf::from("/home/u/.config/amarre/token")
        );
        assert_eq!(
            token_file_path_in(
                &cfg,
                &env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/cfg")])
            )
            .unwrap(),
            PathBuf::from("/cfg/amarre/token")
        );
        assert!(token_file_path_in(&cfg, &env(&[])).is_err());
        cfg.state_dir = Some(PathBuf::from("/var/lib/amarre"));
        assert_eq!(
            token_file_path_in(&cfg, &env(&[("HOME", "/home/u")])).unwrap(),
            PathBuf::from("/var/lib/amarre/token")
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(AuthMode::parse("token"), Ok(AuthMode::Token));
        assert_eq!(AuthMode::parse(" NONE "), Ok(AuthMode::None));
        assert!(
            AuthMode::parse("password")
                .unwrap_err()
                .contains("password")
        );
    }
}
