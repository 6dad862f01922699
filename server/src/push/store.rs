//! The push token store: a JSON array of tokens in one file, loaded at
//! start and written atomically (temp file in the same directory, fsync,
//! rename) on every change. A corrupt or unreadable file, or a directory
//! that cannot be written, disables push and leaves the file untouched.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The longest token accepted.
const MAX_TOKEN_CHARS: usize = 200;
/// The longest device name kept.
const MAX_DEVICE_NAME_CHARS: usize = 64;
/// The largest store file read at start: 10,000 tokens (the highest
/// `AMARRE_PUSH_MAX_TOKENS`) of at most about 2 KiB each (a 200-character
/// token and a 64-character name, every character escaped).
const MAX_STORE_BYTES: u64 = 32 << 20;

/// Why a registration failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// As many tokens as allowed are registered already.
    Full,
    /// The file could not be written (the message says why).
    Store(String),
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushToken {
    pub token: String,
    pub device_name: Option<String>,
    pub platform: Option<String>,
    pub registered_at: u64,
}

/// Whether `token` looks like an Expo push token.
pub fn valid_token(token: &str) -> bool {
    (token.starts_with("ExponentPushToken[") || token.starts_with("ExpoPushToken["))
        && token.ends_with(']')
        && token.chars().count() <= MAX_TOKEN_CHARS
}

/// The tokens and their file.
pub struct TokenStore {
    path: PathBuf,
    /// A registration beyond this many tokens is refused, so the file
    /// stays small even though every change rewrites it whole.
    max_tokens: usize,
    tokens: Mutex<Vec<PushToken>>,
}

impl TokenStore {
    /// Loads the store; creates the directory when the file is missing.
    /// `Err` says which path failed and why.
    pub fn open(path: &Path, max_tokens: usize) -> Result<TokenStore, String> {
        if let Ok(meta) = std::fs::metadata(path)
            && meta.len() > MAX_STORE_BYTES
        {
            return Err(format!(
                "push token store {} is too large ({} bytes, at most {MAX_STORE_BYTES}); left untouched",
                path.display(),
                meta.len()
            ));
        }
        let tokens = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Vec<PushToken>>(&bytes).map_err(|e| {
                format!(
                    "push token store {} is corrupt ({e}); left untouched",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        format!(
                            "cannot create the directory of the push token store {}: {e}",
                            path.display()
                        )
                    })?;
                }
                Vec::new()
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the push token store {}: {e}",
                    path.display()
                ));
            }
        };
        let store = TokenStore {
            path: path.to_owned(),
            max_tokens,
            tokens: Mutex::new(tokens),
        };
        // Prove now that changes can be saved, rather than at the first one.
        let probe = store.temp_path();
        std::fs::File::create(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                format!(
                    "the directory of the push token store {} is not writable: {e}",
                    path.display()
                )
            })?;
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PushToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn temp_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path
            .with_file_name(format!(".{name}.tmp-{}", std::process::id()))
    }

    /// The most tokens kept.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Every token.
    pub fn tokens(&self) -> Vec<PushToken> {
        self.lock().clone()
    }

    /// Registers a token; returns it as stored and whether it is new. A
    /// known token keeps its first registration.
    pub fn register(
        &self,
        token: &str,
        device_name: Option<&str>,
        platform: Option<&str>,
    ) -> Result<(PushToken, bool), RegisterError> {
        let mut tokens = self.lock();
        if let Some(known) = tokens.iter().find(|t| t.token == token) {
            return Ok((known.clone(), false));
        }
        if tokens.len() >= self.max_tokens {
            return Err(RegisterError::Full);
        }
        let entry = PushToken {
            token: token.to_owned(),
            device_name: device_name.map(|n| n.chars().take(MAX_DEVICE_NAME_CHARS).collect()),
            platform: platform
                .filter(|p| matches!(*p, "ios" | "android" | "web"))
                .map(str::to_owned),
            registered_at: crate::util::now_ms(),
        };
        let mut next = tokens.clone();
        next.push(entry.clone());
        self.save(&next).map_err(RegisterError::Store)?;
        *tokens = next;
        Ok((entry, true))
    }

    /// Removes tokens (absent ones are ignored).
    pub fn remove_all(&self, gone: &[String]) -> Result<(), String> {
        let mut tokens = self.lock();
        let next: Vec<PushToken> = tokens
            .iter()
            .filter(|t| !gone.contains(&t.token))
            .cloned()
            .collect();
        if next.len() == tokens.len() {
            return Ok(());
        }
        self.save(&next)?;
        *tokens = next;
        Ok(())
    }

    fn save(&self, tokens: &[PushToken]) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(tokens).unwrap_or_default();
        crate::util::write_private_atomic(&self.path, &self.temp_path(), &bytes).map_err(|e| {
            format!(
                "cannot save the push token store {}: {e}",
                self.path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        // Tests run in parallel: a counter keeps their directories apart.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "amarre-store-{}-{}-{}",
            std::process::id(),
            crate::util::now_ms(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tokens_are_validated() {
        assert!(valid_token("ExponentPushToken[abc]"));
        assert!(valid_token("ExpoPushToken[abc]"));
        assert!(!valid_token("ExponentPushToken[abc"));
        assert!(!valid_token("hello"));
        assert!(!valid_token(&format!("ExpoPushToken[{}]", "x".repeat(200))));
    }

    #[test]
    fn registrations_persist_and_the_first_one_is_kept() {
        let d = dir();
        let path = d.join("sub/tokens.json");
        let store = TokenStore::open(&path, 1000).unwrap();
        let long = "n".repeat(80);
        let (t, new) = store
            .register("ExpoPushToken[a]", Some(&long), Some("ios"))
            .unwrap();
        assert!(new);
        assert_eq!(t.device_name.as_ref().unwrap().chars().count(), 64);
        let (again, new) = store
            .register("ExpoPushToken[a]", Some("other"), Some("bogus"))
            .unwrap();
        assert!(!new);
        assert_eq!(again, t);
        let (w, _) = store
            .register("ExpoPushToken[b]", None, Some("plan9"))
            .unwrap();
        assert_eq!(w.platform, None);
        let reopened = TokenStore::open(&path, 1000).unwrap();
        assert_eq!(reopened.tokens().len(), 2);
        reopened.remove_all(&["ExpoPushToken[a]".into()]).unwrap();
        assert_eq!(TokenStore::open(&path, 1000).unwrap().tokens().len(), 1);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_corrupt_file_disables_the_store_and_is_left_untouched() {
        let d = dir();
        let path = d.join("tokens.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = TokenStore::open(&path, 1000).err().unwrap();
        assert!(
            err.contains("corrupt") && err.contains("tokens.json"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn registrations_stop_at_the_cap_and_the_file_stays_small() {
        let d = dir();
        let path = d.join("tokens.json");
        const MAX_TOKENS: usize = 100;
        let store = TokenStore::open(&path, MAX_TOKENS).unwrap();
        let name = "n".repeat(200);
        let token = |i: usize| format!("ExpoPushToken[{i:0>180}]");
        for i in 0..MAX_TOKENS {
            assert!(
                store
                    .register(&token(i), Some(&name), Some("ios"))
                    .unwrap()
                    .1
            );
        }
        assert_eq!(
            store.register(&token(MAX_TOKENS), None, None),
            Err(RegisterError::Full)
        );
        // A known token is still answered, and a removal makes room.
        assert!(!store.register(&token(3), None, None).unwrap().1);
        store.remove_all(&[token(3)]).unwrap();
        assert!(store.register(&token(MAX_TOKENS), None, None).unwrap().1);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 100 * 1024, "{size} bytes");
        assert_eq!(
            TokenStore::open(&path, MAX_TOKENS).unwrap().tokens().len(),
            MAX_TOKENS
        );
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn an_oversized_file_disables_the_store_without_being_read() {
        let d = dir();
        let path = d.join("tokens.json");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(1 << 30).unwrap();
        drop(f);
        let err = TokenStore::open(&path, 1000).err().unwrap();
        assert!(err.contains("too large"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 30);
        std::fs::remove_dir_all(d).ok();
    }
}
