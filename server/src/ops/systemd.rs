//! The systemd notification protocol (sd_notify(3)), spoken directly: a
//! datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Without `NOTIFY_SOCKET` every call is a no-op, so the daemon
//! behaves the same outside systemd. Variables come from the environment
//! read once at start-up (`util::environment`).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends a notification (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, ...).
pub fn notify(state: &str) {
    let Some(target) = crate::util::environment().get("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let sent = if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), target)
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, socket = %target, "sd_notify failed");
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the
/// watchdog is enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let env = crate::util::environment();
    let usec: u64 = env.get("WATCHDOG_USEC")?.parse().ok()?;
    if let Some(pid) = env.get("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Whether stderr goes to the journal (`$JOURNAL_STREAM` names it), so log
/// lines need no timestamp of their own.
pub fn logging_to_journal() -> bool {
    use std::os::fd::AsRawFd;
    let Some(stream) = crate::util::environment().get("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes into `st` for a valid descriptor (stderr).
    let rc = unsafe { libc::fstat(std::io::stderr().as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}
