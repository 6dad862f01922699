//! The agent's pipes and its exit, as the session task sees them: stdout
//! read into the line splitter, the stdin queue and its writes, the child
//! to reap, and the short drain of output after it exited. Its stderr goes
//! to the log line by line ([`log_stderr`]).
//!
//! The three parts are separate fields so that the session's `select!` can
//! wait on all of them at once; each waiting method is cancel-safe
//! (`read_buf`, `write`, `wait`), and is pending forever when its pipe or
//! child is gone, so a branch needs no guard of its own.

use std::time::{Duration, Instant};

use crate::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::framing::{LineSplitter, Split};
use crate::process::describe_exit;

/// How long output is still read after the agent exited, for a descendant
/// that keeps its stdout open.
pub(crate) const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// The longest stderr line kept in the log.
const MAX_STDERR_LOG_BYTES: usize = 8 * 1024;

/// How the agent exited: its code or its signal's name.
pub(crate) type ExitInfo = (Option<i32>, Option<String>);

/// Bytes for the agent not yet written: records with their newlines.
#[derive(Debug, Default)]
pub(crate) struct StdinQueue {
    buf: BytesMut,
    records: usize,
}

impl StdinQueue {
    /// Appends one record and its newline.
    pub(crate) fn push(&mut self, line: &[u8]) {
        self.buf.extend_from_slice(line);
        self.buf.extend_from_slice(b"\n");
        self.records += 1;
    }

    /// What is left to write.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Records queued since the queue was last empty.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// `n` bytes were written.
    pub(crate) fn advance(&mut self, n: usize) {
        self.buf.advance(n.min(self.buf.len()));
        if self.buf.is_empty() {
            self.records = 0;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
    }
}

/// The agent's stdout and its framing.
pub(crate) struct AgentOut {
    stdout: Option<ChildStdout>,
    splitter: LineSplitter,
}

impl AgentOut {
    pub(crate) fn new(max_line: usize) -> AgentOut {
        AgentOut {
            stdout: None,
            splitter: LineSplitter::new(max_line),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.stdout.is_some()
    }

    /// Reads a chunk into the splitter; pending when stdout is closed.
    pub(crate) async fn read(&mut self) -> std::io::Result<usize> {
        match &mut self.stdout {
            Some(s) => s.read_buf(self.splitter.buffer()).await,
            None => std::future::pending().await,
        }
    }

    /// The complete lines after a read; at end of file (or a read error)
    /// the last unterminated line too, and stdout counts as closed.
    pub(crate) fn lines(&mut self, read: &std::io::Result<usize>) -> (Split, bool) {
        let mut split = Split::default();
        let eof = !matches!(read, Ok(n) if *n > 0);
        if eof {
            self.splitter.finish(&mut split);
            self.stdout = None;
        } else {
            self.splitter.drain(&mut split);
        }
        (split, eof)
    }

    /// Stops reading; returns what is left as lines.
    pub(crate) fn finish(&mut self) -> Split {
        let mut split = Split::default();
        if self.stdout.take().is_some() {
            self.splitter.finish(&mut split);
        }
        split
    }

    pub(crate) fn close(&mut self) {
        self.stdout = None;
    }
}

/// The agent's stdin and what is queued for it.
#[derive(Default)]
pub(crate) struct AgentIn {
    stdin: Option<ChildStdin>,
    pub(crate) queue: StdinQueue,
}

impl AgentIn {
    /// Whether there is something to write.
    pub(crate) fn writing(&self) -> bool {
        self.stdin.is_some() && !self.queue.is_empty()
    }

    /// Whether another client record may be taken: the queue is below
    /// `max_records` records and `max_bytes` bytes (so it holds at most
    /// `max_bytes` plus one record).
    pub(crate) fn taking(&self, max_records: usize, max_bytes: usize) -> bool {
        self.stdin.is_some()
            && self.queue.records() < max_records
            && self.queue.bytes().len() < max_bytes
    }

    /// Queues a record (dropped when stdin is closed).
    pub(crate) fn queue(&mut self, line: &[u8]) {
        if self.stdin.is_some() {
            self.queue.push(line);
        }
    }

    /// Writes as much of the queue as the pipe takes; pending when stdin is
    /// closed.
    pub(crate) async fn write(&mut self) -> std::io::Result<usize> {
        match &mut self.stdin {
            Some(s) => s.write(self.queue.bytes()).await,
            None => std::future::pending().await,
        }
    }

    /// Accounts for a write; a failed or empty write closes stdin and drops
    /// the queue (the agent stopped reading). Returns the error, if any.
    pub(crate) fn written(&mut self, written: std::io::Result<usize>) -> Option<std::io::Error> {
        match written {
            Ok(n) if n > 0 => {
                self.queue.advance(n);
                None
            }
            result => {
                self.close();
                result.err()
            }
        }
    }

    pub(crate) fn close(&mut self) {
        self.stdin = None;
        self.queue.clear();
    }
}

/// The child to reap and, once reaped, how it exited while its output
/// drains.
#[derive(Default)]
pub(crate) struct AgentExit {
    child: Option<Child>,
    exited: Option<ExitInfo>,
    drain_deadline: Option<Instant>,
}

impl AgentExit {
    /// Whether the child is still to be reaped.
    pub(crate) fn waiting(&self) -> bool {
        self.child.is_some() && self.exited.is_none()
    }

    /// Waits for the child; pending when there is none.
    pub(crate) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match &mut self.child {
            Some(c) => c.wait().await,
            None => std::future::pending().await,
        }
    }

    /// Waits up to `within` for the child to be reaped.
    pub(crate) async fn wait_for(&mut self, within: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        tokio::time::timeout(within, child.wait()).await.is_ok()
    }

    /// Notes the exit. True when the session should end now (stdout is
    /// already closed); otherwise output drains until the deadline.
    pub(crate) fn exited(
        &mut self,
        status: std::io::Result<std::process::ExitStatus>,
        stdout_open: bool,
        now: Instant,
    ) -> bool {
        self.exited = Some(status.map(describe_exit).unwrap_or((None, None)));
        if stdout_open {
            self.drain_deadline = Some(now + DRAIN_AFTER_EXIT);
            false
        } else {
            true
        }
    }

    /// Whether the child was reaped and its output is draining.
    pub(crate) fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    /// Until when output still drains after the exit.
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        self.drain_deadline
    }

    /// The end of the agent: how it exited (if reaped); forgets the child.
    pub(crate) fn end(&mut self) -> ExitInfo {
        self.child = None;
        self.drain_deadline = None;
        self.exited.take().unwrap_or((None, None))
    }

    /// Gives up the child without reaping it here (the caller reaps it).
    pub(crate) fn take_child(&mut self) -> Option<Child> {
        self.exited = None;
        self.drain_deadline = None;
        self.child.take()
    }

    pub(crate) fn stop_draining(&mut self) {
        self.drain_deadline = None;
    }
}

/// Everything of one running agent the session task waits on.
pub(crate) struct Agent {
    pub(crate) out: AgentOut,
    pub(crate) inp: AgentIn,
    pub(crate) exit: AgentExit,
}

impl Agent {
    pub(crate) fn new(max_line: usize) -> Agent {
        Agent {
            out: AgentOut::new(max_line),
            inp: AgentIn::default(),
            exit: AgentExit::default(),
        }
    }

    /// Takes over a freshly spawned child: its pipes (stderr to the log).
    pub(crate) fn install(&mut self, session: &str, mut child: Child, max_line: usize) {
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(session.to_owned(), stderr));
        }
        self.out = AgentOut::new(max_line);
        self.out.stdout = child.stdout.take();
        self.inp = AgentIn {
            stdin: child.stdin.take(),
            queue: StdinQueue::default(),
        };
        self.exit = AgentExit {
            child: Some(child),
            exited: None,
            drain_deadline: None,
        };
    }

    /// Forgets the agent's pipes and whatever was queued for it.
    pub(crate) fn drop_io(&mut self) {
        self.inp.close();
        self.out.close();
        self.exit.stop_draining();
    }
}

/// Logs the agent's stderr until it closes. Long lines are dropped with a
/// note, never buffered without bound.
pub(crate) async fn log_stderr(session: String, mut stderr: ChildStderr) {
    let mut splitter = LineSplitter::new(MAX_STDERR_LOG_BYTES);
    loop {
        let n = stderr.read_buf(splitter.buffer()).await.unwrap_or(0);
        let mut split = Split::default();
        if n == 0 {
            splitter.finish(&mut split);
        } else {
            splitter.drain(&mut split);
        }
        for line in &split.lines {
            tracing::info!(target: "amarre::agent", session = %session, "stderr: {}", String::from_utf8_lossy(line));
        }
        for bytes in &split.dropped {
            tracing::info!(target: "amarre::agent", session = %session, bytes, "stderr: (a line too long to log)");
        }
        if n == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_stdin_queue_counts_records_until_it_is_written_empty() {
        let mut q = StdinQueue::default();
        q.push(b"{\"a\":1}");
        q.push(b"{}");
        assert_eq!(q.bytes(), b"{\"a\":1}\n{}\n");
        assert_eq!(q.records(), 2);
        q.advance(3);
        assert_eq!(q.records(), 2, "a partial write keeps the count");
        assert_eq!(q.bytes(), b"\":1}\n{}\n");
        q.advance(100);
        assert!(q.is_empty());
        assert_eq!(q.records(), 0);
    }

    #[test]
    fn a_closed_stdin_takes_nothing_and_a_failed_write_drops_the_queue() {
        let mut inp = AgentIn::default();
        assert!(
            !inp.taking(10, 100),
            "no stdin: no client records are taken"
        );
        inp.queue(b"{}");
        assert!(inp.queue.is_empty(), "dropped while closed");
        assert!(!inp.writing());
        inp.queue.push(b"{}");
        let e = inp.written(Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)));
        assert!(e.is_some());
        assert!(inp.queue.is_empty() && inp.stdin.is_none());
        inp.queue.push(b"{}");
        assert!(inp.written(Ok(0)).is_none(), "a zero write closes too");
        assert!(inp.queue.is_empty());
    }

    #[test]
    fn an_exit_ends_at_once_without_stdout_and_drains_with_it() {
        let now = Instant::now();
        let mut exit = AgentExit::default();
        assert!(exit.exited(Ok(std::process::ExitStatus::from_raw(3 << 8)), false, now));
        assert_eq!(exit.end(), (Some(3), None));
        let mut exit = AgentExit::default();
        assert!(!exit.exited(
            Ok(std::process::ExitStatus::from_raw(libc::SIGKILL)),
            true,
            now
        ));
        assert_eq!(exit.drain_deadline, Some(now + DRAIN_AFTER_EXIT));
        assert!(exit.has_exited());
        assert_eq!(exit.end(), (None, Some("SIGKILL".to_owned())));
        assert!(!exit.has_exited() && exit.drain_deadline.is_none());
        let mut exit = AgentExit::default();
        assert!(exit.exited(Err(std::io::Error::other("gone")), false, now));
        assert_eq!(exit.end(), (None, None));
    }

    #[test]
    fn output_lines_are_framed_and_eof_flushes_the_last_one() {
        let mut out = AgentOut::new(16);
        out.splitter
            .buffer()
            .extend_from_slice(b"{\"a\":1}\n{\"b\"");
        let (split, eof) = out.lines(&Ok(12));
        assert!(!eof);
        assert_eq!(split.lines, vec![Bytes::from_static(b"{\"a\":1}")]);
        out.splitter.buffer().extend_from_slice(b":2}");
        let (split, eof) = out.lines(&Ok(0));
        assert!(eof && !out.is_open());
        assert_eq!(split.lines, vec![Bytes::from_static(b"{\"b\":2}")]);
    }
}
