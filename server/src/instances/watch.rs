//! Watches the `agentPath` files of instances and reloads an instance when
//! its file changes: debounced (a change is acted on once the file has been
//! quiet for the debounce time) and coalesced (a burst of events is one
//! reload). The directory is watched, not the file, because editors and
//! build tools replace files by renaming a new one over them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Instances;

/// Starts the watcher task; `None` when no instance has a file or the
/// watcher cannot be created (logged).
pub(crate) fn start(
    instances: Arc<Instances>,
    debounce: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let files: Vec<PathBuf> = instances
        .all()
        .iter()
        .filter_map(|i| i.path().cloned())
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    if files.is_empty() {
        return None;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch adapter files; reload them with SIGHUP or POST /instances/{{id}}/reload");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(PathBuf::from))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch an adapter directory");
        }
    }
    tracing::info!(
        files = files.len(),
        debounce_ms = debounce.as_millis() as u64,
        "watching adapter files for changes"
    );
    Some(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut due: HashMap<PathBuf, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                path = rx.recv() => {
                    let Some(path) = path else { return };
                    if files.contains(&path) {
                        due.insert(path, Instant::now() + debounce);
                    }
                }
                () = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = Instant::now();
                    let ready: Vec<PathBuf> = due.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
                    for path in ready {
                        due.remove(&path);
                        for instance in instances.all() {
                            let watched = instance.path().map(|p| std::path::absolute(p).unwrap_or(p.clone()));
                            if watched.as_ref() == Some(&path) {
                                tracing::info!(instance = %instance.config.id, path = %path.display(), "adapter file changed; reloading");
                                let _ = instances.reload(&instance).await;
                            }
                        }
                    }
                }
            }
        }
    }))
}
