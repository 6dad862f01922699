//! Reloads the token file when it changes: an inotify watch of its
//! directory (`amarre token --rotate` renames a new file over it), SIGHUP,
//! and a check of the file's metadata every [`POLL`] in case the watch is
//! lost (the directory replaced, or a file system without inotify). A
//! rotation is in force within a second or two; PROTOCOL.md 12.5 allows 5.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::Verifier;

/// How often the file's metadata is compared as a fallback.
pub const POLL: Duration = Duration::from_secs(2);
/// Events closer together than this are one reload.
const SETTLE: Duration = Duration::from_millis(50);

fn stamp(path: &std::path::Path) -> Option<(u64, u64, i64, i64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// Starts the reload task (it lives as long as the daemon).
pub fn start(verifier: Arc<Verifier>) {
    let path: PathBuf = verifier.path().to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_owned());
    let events = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_owned()) == name)
        {
            let _ = events.send(());
        }
    });
    let watcher = match (watcher, path.parent()) {
        (Ok(mut w), Some(dir)) => match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the token file's directory; checking it every {}s", POLL.as_secs());
                None
            }
        },
        (Err(e), _) => {
            tracing::warn!(error = %e, "cannot watch the token file; checking it every {}s", POLL.as_secs());
            None
        }
        (Ok(_), None) => None,
    };
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut last = stamp(&path);
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {
                    let now = stamp(&path);
                    if now == last {
                        continue;
                    }
                }
            }
            last = stamp(&path);
            verifier.reload();
        }
    });
}
