//! Durable sessions (PROTOCOL.md 12.3, docs/durability.md): the state
//! directory, its lock, each session's metadata and record log, and
//! reading them back at start.
//!
//! Layout under the state directory (directories 0700, files 0600):
//! - `lock`: held (flock) by the running daemon, holding its pid;
//! - `sessions/<id>/meta.json`: the session's metadata ([`Meta`]), replaced
//!   atomically;
//! - `sessions/<id>/log/*.rec`: its record log ([`log`]);
//! - `sessions/<id>/agent/`: the adapter's `{state}` directory.
//!
//! A session directory without `meta.json` is one being deleted (DELETE
//! removes `meta.json` first) and is removed at start. A session whose
//! files cannot be read is moved aside (`<id>.corrupt`) with one log line.
//! A write that fails during a run (a full disk) stops persistence for the
//! whole daemon with one log line; the relay goes on.

pub(crate) mod log;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

pub(crate) use log::{Logged, RecordLog, Syncer};

/// Creates `dir` (and its parents) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// What is kept about one session besides its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) instance_id: String,
    pub(crate) cwd: Option<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// `running` or `crashed` (a running one is respawned at start).
    pub(crate) status: String,
    pub(crate) created_at: u64,
    /// Creation order within one run of the daemon (ties of `created_at`).
    #[serde(default)]
    pub(crate) order: u64,
    pub(crate) spawned_at: u64,
    #[serde(default)]
    pub(crate) exited: bool,
    #[serde(default)]
    pub(crate) exit_code: Option<i32>,
    #[serde(default)]
    pub(crate) signal: Option<String>,
    /// The adapter's latest resume token.
    #[serde(default)]
    pub(crate) resume_token: Option<String>,
    /// The last sequence number when this file was written (the log may
    /// hold later ones).
    #[serde(default)]
    pub(crate) last_seq: u64,
}

/// A session read back at start.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) meta: Meta,
    pub(crate) records: Vec<Logged>,
}

/// The daemon's state directory, locked for this process.
pub struct StateDir {
    root: PathBuf,
    sessions: PathBuf,
    /// Held for the daemon's life: the flock is the lock.
    _lock: File,
    syncer: Arc<Syncer>,
    stopped: AtomicBool,
}

fn is_session_id(name: &str) -> bool {
    name.len() == 12
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl StateDir {
    /// Creates (0700) and locks the state directory. The error says what
    /// is wrong with which directory: unwritable, or in use by another
    /// daemon (with its pid).
    pub fn open(root: &Path) -> Result<StateDir, String> {
        let fail = |what: &str, e: std::io::Error| {
            format!(
                "AMARRE_STATE_DIR: cannot use the state directory {}: {what}: {e}",
                root.display()
            )
        };
        create_private_dir(root).map_err(|e| fail("cannot create it", e))?;
        // Private even when it existed before (the token file and every
        // session's env live here).
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail("cannot make it private (0700)", e))?;
        let sessions = root.join("sessions");
        create_private_dir(&sessions).map_err(|e| fail("cannot create sessions/", e))?;
        let _ = std::fs::set_permissions(&sessions, std::fs::Permissions::from_mode(0o700));
        let lock_path = root.join("lock");
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| fail("cannot open its lock file", e))?;
        // SAFETY: flock on a file descriptor this function owns.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(format!(
                "AMARRE_STATE_DIR: the state directory {} is in use by another amarre daemon (pid {}); stop it first or choose another directory",
                root.display(),
                if pid.is_empty() { "unknown" } else { pid }
            ));
        }
        let written = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(lock, "{}", std::process::id()));
        written.map_err(|e| fail("cannot write its lock file", e))?;
        // A probe: the directory must take new files.
        let probe = sessions.join(".probe");
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|mut f| f.write_all(b"ok"))
            .map_err(|e| fail("cannot write in it", e))?;
        let _ = std::fs::remove_file(&probe);
        let syncer = Syncer::start().map_err(|e| fail("cannot start the sync thread", e))?;
        Ok(StateDir {
            root: root.to_owned(),
            sessions,
            _lock: lock,
            syncer,
            stopped: AtomicBool::new(false),
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A session's directory.
    pub(crate) fn session_dir(&self, id: &str) -> PathBuf {
        self.sessions.join(id)
    }

    /// The adapter's `{state}` directory of a session.
    pub(crate) fn agent_dir(&self, id: &str) -> PathBuf {
        self.session_dir(id).join("agent")
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.session_dir(id).join("meta.json")
    }

    /// Whether persistence still runs (a failed write stops it).
    pub(crate) fn active(&self) -> bool {
        !self.stopped.load(Ordering::Acquire)
    }

    /// A write failed: persistence stops for the daemon, with one log line;
    /// sessions keep running.
    pub(crate) fn failed(&self, what: &str, path: &Path, e: &std::io::Error) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            tracing::error!(path = %path.display(), error = %e, "persistence stopped: failed to {what}; sessions keep running but will not survive a restart");
        }
    }

    /// Writes a session's metadata (atomically). False when persistence is
    /// off or the write failed (then it is off).
    pub(crate) fn save_meta(&self, meta: &Meta) -> bool {
        if !self.active() {
            return false;
        }
        let dir = self.session_dir(&meta.id);
        if let Err(e) = create_private_dir(&dir) {
            self.failed("create a session directory", &dir, &e);
            return false;
        }
        let path = self.meta_path(&meta.id);
        let bytes = match serde_json::to_vec_pretty(meta) {
            Ok(b) => b,
            Err(e) => {
                self.failed("encode session metadata", &path, &std::io::Error::other(e));
                return false;
            }
        };
        let tmp = dir.join("meta.json.tmp");
        if let Err(e) = crate::util::write_private_atomic(&path, &tmp, &bytes) {
            self.failed("write session metadata", &path, &e);
            return false;
        }
        true
    }

    /// Opens a session's record log for numbers from `next_seq` on.
    pub(crate) fn open_log(
        &self,
        id: &str,
        next_seq: u64,
        limits: &crate::config::Limits,
    ) -> Option<RecordLog> {
        if !self.active() {
            return None;
        }
        let dir = self.session_dir(id).join("log");
        match RecordLog::open(
            &dir,
            next_seq,
            limits.replay_records,
            limits.replay_bytes,
            self.syncer.clone(),
        ) {
            Ok(l) => Some(l),
            Err(e) => {
                self.failed("open a record log", &dir, &e);
                None
            }
        }
    }

    /// Forgets a session for good (DELETE): its metadata goes first, so a
    /// crash half-way leaves a directory the next start removes.
    pub(crate) fn forget(&self, id: &str) {
        let _ = std::fs::remove_file(self.meta_path(id));
        let _ = std::fs::remove_dir_all(self.session_dir(id));
    }

    /// Syncs every log written since the last sync (shutdown).
    pub(crate) fn sync_now(&self) {
        self.syncer.sync_now();
    }

    /// Reads every stored session. Damaged ones are moved aside with one
    /// log line each and skipped; leftovers of a delete are removed.
    pub(crate) fn load(&self) -> Vec<Loaded> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.sessions) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(path = %self.sessions.display(), error = %e, "cannot read the stored sessions; starting without them");
                return out;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_session_id(&name) {
                continue;
            }
            let dir = entry.path();
            let meta_path = dir.join("meta.json");
            if !meta_path.exists() {
                // A delete that did not finish.
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            match read_session(&dir, &meta_path, &name) {
                Ok(loaded) => out.push(loaded),
                Err((file, why)) => {
                    let aside = self.sessions.join(format!("{name}.corrupt"));
                    let _ = std::fs::remove_dir_all(&aside);
                    let moved = std::fs::rename(&dir, &aside);
                    tracing::error!(session = %name, file = %file.display(), error = %why, moved_to = %aside.display(), moved = moved.is_ok(), "skipped a stored session whose state cannot be read");
                }
            }
        }
        out.sort_by_key(|l| (l.meta.created_at, l.meta.order, l.meta.id.clone()));
        out
    }
}

fn read_session(dir: &Path, meta_path: &Path, name: &str) -> Result<Loaded, (PathBuf, String)> {
    let bad = |p: &Path, e: String| (p.to_owned(), e);
    let bytes = std::fs::read(meta_path).map_err(|e| bad(meta_path, e.to_string()))?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| bad(meta_path, e.to_string()))?;
    if meta.id != name {
        return Err(bad(
            meta_path,
            format!("it names session {} in the directory of {name}", meta.id),
        ));
    }
    if meta.status != "running" && meta.status != "crashed" {
        return Err(bad(meta_path, format!("unknown status {:?}", meta.status)));
    }
    let log_dir = dir.join("log");
    let read = log::read(&log_dir).map_err(|e| bad(&log_dir, e.to_string()))?;
    if let Some((path, kept, had)) = &read.truncated {
        tracing::warn!(session = %name, file = %path.display(), kept, had, "a record log ended in a partial record; restored the records before it");
    }
    Ok(Loaded {
        meta,
        records: read.records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        std::env::temp_dir().join(format!("amarre-state-{}", uuid::Uuid::new_v4()))
    }

    fn meta(id: &str) -> Meta {
        Meta {
            id: id.into(),
            name: Some("n".into()),
            instance_id: "default".into(),
            cwd: None,
            env: BTreeMap::new(),
            status: "running".into(),
            created_at: 1,
            order: 0,
            spawned_at: 1,
            exited: false,
            exit_code: None,
            signal: None,
            resume_token: Some("tok".into()),
            last_seq: 0,
        }
    }

    #[test]
    fn a_second_open_is_refused_naming_the_pid() {
        let root = temp();
        let first = StateDir::open(&root).unwrap();
        let err = StateDir::open(&root).err().unwrap();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        assert!(err.contains(&root.display().to_string()), "{err}");
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        drop(first);
        assert!(
            StateDir::open(&root).is_ok(),
            "the lock goes with the daemon"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn sessions_come_back_and_damaged_or_deleted_ones_do_not() {
        let root = temp();
        let state = StateDir::open(&root).unwrap();
        assert!(state.save_meta(&meta("aaaaaaaaaaaa")));
        assert!(state.save_meta(&meta("bbbbbbbbbbbb")));
        assert!(state.save_meta(&meta("cccccccccccc")));
        let mode = std::fs::metadata(state.meta_path("aaaaaaaaaaaa"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(state.meta_path("bbbbbbbbbbbb"), b"{not json").unwrap();
        state.forget("cccccccccccc");
        let loaded = state.load();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].meta, meta("aaaaaaaaaaaa"));
        assert!(
            root.join("sessions/bbbbbbbbbbbb.corrupt/meta.json")
                .exists()
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
