//! Agent processes: spawning in their own process group with a parent-death
//! signal, signalling the group, and describing how a process ended.
//!
//! Linux delivers `PR_SET_PDEATHSIG` when the *thread* that started the
//! child exits, not the process (see prctl(2)). Tokio's blocking-pool
//! threads come and go, so every agent is started from one dedicated thread
//! that lives as long as the daemon. The child also re-checks its parent pid
//! after arming the signal, closing the race where the daemon died while
//! the child started. The child is started without copying the daemon
//! ([`child`]: a `vfork`-style clone, as `posix_spawn` does, with these
//! steps before `exec`).
//!
//! This module knows nothing about sessions, adapters or sockets.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

pub mod child;

pub use child::{Child, ChildStderr, ChildStdin, ChildStdout};

/// Everything needed to start an agent.
#[derive(Debug, Clone)]
pub struct SpawnPlan {
    /// An absolute path (the session layer resolves names on PATH first).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment of the child (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
}

type Job = (SpawnPlan, oneshot::Sender<io::Result<Child>>);

/// Forks agents from one long-lived thread. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    jobs: std_mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawner thread; it enters the current tokio runtime so that
    /// the children's pipes and pidfds are registered with that runtime.
    pub fn start() -> io::Result<Spawner> {
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("amarre-spawner".into())
            .spawn(move || {
                let _runtime = handle.enter();
                while let Ok((plan, reply)) = rx.recv() {
                    let _ = reply.send(spawn_now(&plan));
                }
            })?;
        Ok(Spawner { jobs: tx })
    }

    /// Spawns the agent with piped stdio in a new process group.
    pub async fn spawn(&self, plan: SpawnPlan) -> io::Result<Child> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((plan, tx))
            .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
    }
}

fn spawn_now(plan: &SpawnPlan) -> io::Result<Child> {
    child::spawn(plan)
}

/// Sends `signal` to every process of the group `pgid`. A group that is
/// already gone is not an error.
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory
    // is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether any process of the group `pgid` is still alive.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Whether any process of group `pgid` still runs, zombies excluded (they
/// hold no resources and may wait for another parent to reap them). Reads
/// `/proc`; a member that vanishes while it is read counts as gone.
pub fn group_running(pgid: u32) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    let want = pgid.to_string();
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After the command (which may contain spaces): state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[2] == want && fields[0] != "Z"
    })
}

/// Waits (up to `within`) until no process of group `pgid` runs.
pub async fn wait_group_gone(pgid: u32, within: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while group_running(pgid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    true
}

/// How a process ended: its exit code, or the name of the signal that
/// killed it.
pub fn describe_exit(status: ExitStatus) -> (Option<i32>, Option<String>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), None),
        (None, Some(sig)) => (None, Some(signal_name(sig))),
        _ => (None, None),
    }
}

/// `SIGTERM` for 15, and so on; `SIG<n>` for unknown numbers.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("SIG{sig}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_run_in_their_own_group_and_die_with_it() {
        let spawner = Spawner::start().unwrap();
        let mut child = spawner
            .spawn(SpawnPlan {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), "sleep 30".into()],
                env: vec![],
                cwd: None,
            })
            .await
            .unwrap();
        let pid = child.id().unwrap();
        // SAFETY: getpgid only reads.
        assert_eq!(
            unsafe { libc::getpgid(pid as libc::pid_t) },
            pid as libc::pid_t
        );
        assert!(group_alive(pid));
        signal_group(pid, libc::SIGTERM);
        let status = child.wait().await.unwrap();
        assert_eq!(describe_exit(status), (None, Some("SIGTERM".into())));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_io_error() {
        let spawner = Spawner::start().unwrap();
        let err = spawner
            .spawn(SpawnPlan {
                program: "/no/such/program".into(),
                args: vec![],
                env: vec![],
                cwd: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    fn plan(program: &str, args: &[&str]) -> SpawnPlan {
        SpawnPlan {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            cwd: None,
        }
    }

    /// A field of /proc/<pid>/status as a number (hex masks).
    fn status_mask(pid: u32, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {text}"));
        u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
    }

    #[tokio::test]
    async fn the_pipes_the_directory_and_the_environment_are_the_plans() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let spawner = Spawner::start().unwrap();
        let mut p = plan(
            "/bin/sh",
            &[
                "-c",
                "read line; echo \"$line $GREETING $(pwd)\"; echo oops >&2",
            ],
        );
        p.env = vec![("GREETING".into(), "hello".into())];
        p.cwd = Some("/tmp".into());
        let mut child = spawner.spawn(p).await.unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"said\n").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        assert_eq!(out, "said hello /tmp\n");
        assert_eq!(err, "oops\n");
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(0));
        assert_eq!(child.wait().await.unwrap().code(), Some(0), "reaped once");
        assert_eq!(child.id(), None);
    }

    #[tokio::test]
    async fn a_child_starts_with_no_signal_blocked_and_sigpipe_not_ignored() {
        let spawner = Spawner::start().unwrap();
        // The daemon ignores SIGPIPE (Rust does) and blocks every signal
        // around the start; neither may reach the agent.
        let mut child = spawner.spawn(plan("/bin/cat", &[])).await.unwrap();
        let pid = child.id().unwrap();
        assert_eq!(status_mask(pid, "SigBlk:"), 0);
        let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(status_mask(pid, "SigIgn:") & pipe_bit, 0);
        assert_eq!(status_mask(pid, "SigCgt:"), 0, "no handler survives exec");
        drop(child.stdin.take());
        assert_eq!(child.wait().await.unwrap().code(), Some(0));
    }

    #[tokio::test]
    async fn a_file_that_cannot_run_or_a_missing_directory_is_an_error() {
        let spawner = Spawner::start().unwrap();
        let dir = std::env::temp_dir().join(format!("amarre-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-executable");
        std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
        let err = spawner
            .spawn(plan(file.to_str().unwrap(), &[]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let mut p = plan("/bin/cat", &[]);
        p.cwd = Some(dir.join("missing"));
        let err = spawner.spawn(p).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_child_dropped_unreaped_is_reaped_in_the_background() {
        let spawner = Spawner::start().unwrap();
        let mut child = spawner.spawn(plan("/bin/true", &[])).await.unwrap();
        let pid = child.id().unwrap();
        drop(child.stdin.take());
        drop(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Gone from /proc once reaped (a zombie stays listed).
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(std::time::Instant::now() < deadline, "{pid} never reaped");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
