//! Small helpers shared by several concerns.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Replaces `path` with `bytes` atomically: writes `tmp` (mode 0600),
/// syncs it and renames it over `path`. On failure `tmp` is removed and
/// `path` is left as it was.
pub fn write_private_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// The process environment, read once (at start-up) and never again:
/// configuration, the daemon's environment for agents and the CLI's
/// commands all use this copy.
pub fn environment() -> &'static std::collections::HashMap<String, String> {
    static ENV: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    ENV.get_or_init(|| std::env::vars().collect())
}
