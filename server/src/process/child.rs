//! Starting an agent without copying the daemon: `clone(CLONE_VM |
//! CLONE_VFORK)`, the way `posix_spawn` starts a process, with the child
//! steps the daemon needs before `exec` (its own process group, the
//! parent-death signal, the parent-pid re-check) that `posix_spawn` cannot
//! take. A `fork` copies the daemon's page tables and then takes a
//! copy-on-write fault for every page the daemon touches until the child
//! has called `exec`: about half a millisecond per spawn here
//! (docs/PERFORMANCE.md, "Spawn").
//!
//! The child runs on a stack of its own in the daemon's memory while the
//! calling thread is suspended (until the `exec` or the child's exit), so it
//! only makes system calls on data prepared beforehand: it never allocates,
//! locks or unwinds. All signals are blocked around the `clone`, and the
//! child sets every caught signal back to its default before unblocking, so
//! none of the daemon's handlers can run in it.
//!
//! [`Child`] is the started agent: its pipes as tokio pipes, and a pidfd to
//! wait on. A child dropped before it was reaped is reaped in the
//! background.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::SpawnPlan;

/// The agent's stdin, as the session writes it.
pub type ChildStdin = pipe::Sender;
/// The agent's stdout, as the session reads it.
pub type ChildStdout = pipe::Receiver;
/// The agent's stderr, as the session logs it.
pub type ChildStderr = pipe::Receiver;

/// How a child's exit is awaited: its pidfd, or (on a kernel without
/// pidfds) a thread blocked in `waitpid` for it.
enum Exit {
    Pidfd(AsyncFd<OwnedFd>),
    Thread(tokio::sync::oneshot::Receiver<ExitStatus>),
    Reaped(ExitStatus),
}

/// A started agent.
pub struct Child {
    pid: libc::pid_t,
    exit: Exit,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Child {
    /// Its pid, until it has been reaped.
    pub fn id(&self) -> Option<u32> {
        match self.exit {
            Exit::Reaped(_) => None,
            _ => u32::try_from(self.pid).ok(),
        }
    }

    /// Waits for it to exit and reaps it. Cancel-safe; once reaped, the
    /// same status again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = match &mut self.exit {
            Exit::Reaped(status) => return Ok(*status),
            Exit::Pidfd(pidfd) => reap_when_exited(self.pid, pidfd).await?,
            Exit::Thread(rx) => rx
                .await
                .map_err(|_| io::Error::other("the thread reaping the agent ended"))?,
        };
        self.exit = Exit::Reaped(status);
        Ok(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let pid = self.pid;
        // A thread already reaps it; a reaped one needs nothing.
        let Exit::Pidfd(pidfd) =
            std::mem::replace(&mut self.exit, Exit::Reaped(ExitStatus::from_raw(0)))
        else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = reap_when_exited(pid, &pidfd).await;
                });
            }
            Err(_) => {
                drop(pidfd);
                reap_on_a_thread(pid, None);
            }
        }
    }
}

/// Reaps `pid` once its pidfd says it has exited.
async fn reap_when_exited(pid: libc::pid_t, pidfd: &AsyncFd<OwnedFd>) -> io::Result<ExitStatus> {
    loop {
        let mut ready = pidfd.readable().await?;
        if let Some(status) = waitpid(pid, libc::WNOHANG)? {
            return Ok(status);
        }
        ready.clear_ready();
    }
}

/// Reaps `pid` on a thread of its own (blocking), sending its status.
fn reap_on_a_thread(pid: libc::pid_t, tx: Option<tokio::sync::oneshot::Sender<ExitStatus>>) {
    let _ = std::thread::Builder::new()
        .name("amarre-reap".into())
        .spawn(move || {
            if let (Ok(Some(status)), Some(tx)) = (waitpid(pid, 0), tx) {
                let _ = tx.send(status);
            }
        });
}

/// `waitpid` for our own child `pid`, retried when interrupted: its status
/// once reaped, `None` when `WNOHANG` found it still running.
fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; only `status` is written.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in a program, argument, variable or directory",
        )
    })
}

/// A pipe whose ends are closed on `exec`: (read end, write end).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// The descriptor moved to 3 or above, so that the child's `dup2` onto 0,
/// 1 and 2 never overwrites one of its own pipes (a daemon started with a
/// closed stdin gets descriptor 0 for its first pipe).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicates a descriptor owned here; the original is closed
    // when `fd` drops.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` was just created and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Everything the child needs, prepared by the parent: pointers into
/// memory the parent keeps alive until the child has called `exec` or
/// exited.
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Null for the daemon's own directory.
    cwd: *const libc::c_char,
    /// What becomes the child's descriptors 0, 1 and 2.
    stdio: [RawFd; 3],
    parent: libc::pid_t,
    /// The agent's signal mask (empty, as `std::process::Command` gives),
    /// set right before `exec`.
    mask: libc::sigset_t,
    /// Set by the child when a step failed: the errno (the parent reads it
    /// once the child has exited; memory is shared).
    errno: libc::c_int,
}

/// The child's side: system calls only, on prepared data.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and not touched by
    // the parent until this child has called `exec` or exited (vfork).
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        let fail = |a: &mut ChildArgs| -> ! {
            a.errno = *libc::__errno_location();
            libc::_exit(127)
        };
        // No handler of the daemon may run here: every caught signal back
        // to its default (the table is the child's own: no CLONE_SIGHAND),
        // and SIGPIPE, which the daemon ignores, too.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        for (to, &from) in a.stdio.iter().enumerate() {
            if libc::dup2(from, to as libc::c_int) < 0 {
                fail(a);
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(a);
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) != 0 {
            fail(a);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(a);
        }
        // The daemon may have died before the signal was armed.
        if libc::getppid() != a.parent {
            libc::_exit(1);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &a.mask, std::ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(a)
    }
}

/// Starts `plan` with piped stdio in a new process group, the parent-death
/// signal armed. Must run on a thread that lives as long as the daemon
/// (the signal follows the thread that started the child) and inside a
/// tokio runtime (the pipes and the pidfd are registered with it).
pub fn spawn(plan: &SpawnPlan) -> io::Result<Child> {
    let path = cstring(plan.program.as_os_str())?;
    let mut args = Vec::with_capacity(plan.args.len() + 1);
    args.push(path.clone());
    for a in &plan.args {
        args.push(cstring(OsStr::new(a))?);
    }
    let mut env = Vec::with_capacity(plan.env.len());
    for (k, v) in &plan.env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env.push(cstring(OsStr::from_bytes(&kv))?);
    }
    let cwd = plan
        .cwd
        .as_deref()
        .map(|d| cstring(d.as_os_str()))
        .transpose()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

    let (stdin_r, stdin_w) = pipe_pair()?;
    let (stdout_r, stdout_w) = pipe_pair()?;
    let (stderr_r, stderr_w) = pipe_pair()?;

    // SAFETY: plain libc calls on memory owned here; the child only reads
    // `args`, `argv`, `envp` and the strings they point to, all alive
    // until `clone` returns (the parent is suspended until the child has
    // called `exec` or exited), and writes `errno` in `child_args`.
    unsafe {
        let mut child_args = ChildArgs {
            path: path.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdio: [
                stdin_r.as_raw_fd(),
                stdout_w.as_raw_fd(),
                stderr_w.as_raw_fd(),
            ],
            parent: libc::getpid(),
            mask: std::mem::zeroed(),
            errno: 0,
        };
        libc::sigemptyset(&mut child_args.mask);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut parent_mask: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut parent_mask);
        // The child's stack: it runs only the steps above.
        let mut stack = vec![0u8; 64 * 1024];
        let top = (stack.as_mut_ptr().add(stack.len()) as usize & !15) as *mut libc::c_void;
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut child_args as *mut ChildArgs as *mut libc::c_void,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &parent_mask, std::ptr::null_mut());
        drop(stack);
        if pid < 0 {
            return Err(clone_error);
        }
        let errno = std::ptr::read_volatile(&child_args.errno);
        if errno != 0 {
            // A step before `exec`, or `exec` itself, failed: the child has
            // exited; reap it and say why.
            let _ = waitpid(pid, 0);
            return Err(io::Error::from_raw_os_error(errno));
        }
        drop((stdin_r, stdout_w, stderr_w));
        // The agent runs: a failure from here on must not leave it behind.
        let started = adopt(pid, stdin_w, stdout_r, stderr_r);
        if started.is_err() {
            libc::kill(pid, libc::SIGKILL);
            let _ = waitpid(pid, 0);
        }
        started
    }
}

/// The started agent `pid` with its ends of the pipes.
fn adopt(
    pid: libc::pid_t,
    stdin_w: OwnedFd,
    stdout_r: OwnedFd,
    stderr_r: OwnedFd,
) -> io::Result<Child> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    let exit = if pidfd >= 0 {
        // SAFETY: `pidfd` was just created and is owned here; the
        // OwnedFd keeps it open for the AsyncFd's whole lifetime.
        let fd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // SAFETY: as above: a valid descriptor owned by the AsyncFd.
        Exit::Pidfd(
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?,
        )
    } else {
        // A kernel without pidfds (before 5.3).
        let (tx, rx) = tokio::sync::oneshot::channel();
        reap_on_a_thread(pid, Some(tx));
        Exit::Thread(rx)
    };
    Ok(Child {
        pid,
        exit,
        stdin: Some(pipe::Sender::from_owned_fd(stdin_w)?),
        stdout: Some(pipe::Receiver::from_owned_fd(stdout_r)?),
        stderr: Some(pipe::Receiver::from_owned_fd(stderr_r)?),
    })
}
