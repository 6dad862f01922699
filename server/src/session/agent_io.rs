//! The tasks around one agent process: a stdout reader that frames lines and
//! reaps the child, a stdin writer that batches records into few writes, and
//! a stderr reader that sends the agent's stderr to the log.
//!
//! Backpressure runs end to end: if the session task is slow, the reader's
//! bounded channel fills, the reader stops reading and the agent blocks on
//! its stdout pipe. Nothing is dropped except oversized lines.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;

use super::framing::{LineSplitter, Split};
use crate::process::describe_exit;

/// How long output is still read after the agent exited, for a descendant
/// that keeps its stdout open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// The longest stderr line kept in the log.
const MAX_STDERR_LOG_BYTES: usize = 8 * 1024;
/// Bytes gathered before a write to the agent's stdin is forced.
const STDIN_BATCH_BYTES: usize = 64 * 1024;

/// What the stdout reader reports, in stream order.
#[derive(Debug)]
pub enum AgentEvent {
    /// Complete lines.
    Lines(Vec<Bytes>),
    /// The agent exited (after its last output, including a partial line).
    Exited {
        code: Option<i32>,
        signal: Option<String>,
    },
}

/// Reads stdout until EOF, then reaps the child and reports its exit.
pub async fn read_stdout(
    session: String,
    mut child: Child,
    mut stdout: ChildStdout,
    max_line: usize,
    tx: mpsc::Sender<AgentEvent>,
) {
    let mut splitter = LineSplitter::new(max_line);
    let mut status = None;
    let mut tx = Some(tx);
    loop {
        let read = if status.is_some() {
            match tokio::time::timeout(DRAIN_AFTER_EXIT, stdout.read_buf(splitter.buffer())).await {
                Ok(r) => r,
                Err(_) => Ok(0),
            }
        } else {
            tokio::select! {
                r = stdout.read_buf(splitter.buffer()) => r,
                s = child.wait() => {
                    status = s.ok();
                    continue;
                }
            }
        };
        let mut split = Split::default();
        let n = read.unwrap_or(0);
        if n == 0 {
            splitter.finish(&mut split);
        } else {
            splitter.drain(&mut split);
        }
        for bytes in &split.dropped {
            tracing::warn!(session = %session, bytes, max_line, "dropped an agent line longer than the limit");
        }
        if !split.lines.is_empty()
            && let Some(t) = &tx
            && t.send(AgentEvent::Lines(split.lines)).await.is_err()
        {
            // The session no longer listens (deleted or ended by an
            // adapter trap); keep reaping the child.
            tx = None;
        }
        if n == 0 {
            break;
        }
    }
    let status = match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    };
    let (code, signal) = status.map(describe_exit).unwrap_or((None, None));
    if let Some(t) = tx {
        let _ = t.send(AgentEvent::Exited { code, signal }).await;
    }
}

/// Writes records to the agent's stdin, each followed by `\n`, gathering
/// whatever is queued into one write.
pub async fn write_stdin(session: String, stdin: ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    let mut w = BufWriter::with_capacity(STDIN_BATCH_BYTES, stdin);
    while let Some(first) = rx.recv().await {
        let mut result = write_line(&mut w, &first).await;
        while result.is_ok() && w.buffer().len() < STDIN_BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => result = write_line(&mut w, &line).await,
                Err(_) => break,
            }
        }
        if let Err(e) = result.and(w.flush().await) {
            tracing::debug!(session = %session, error = %e, "the agent's stdin is closed");
            return;
        }
    }
    // All senders are gone: close stdin so the agent sees EOF.
    let _ = w.shutdown().await;
}

async fn write_line(w: &mut BufWriter<ChildStdin>, line: &[u8]) -> std::io::Result<()> {
    w.write_all(line).await?;
    w.write_all(b"\n").await
}

/// Logs the agent's stderr line by line (long lines are dropped with a
/// note, never buffered without bound).
pub async fn log_stderr(session: String, mut stderr: ChildStderr) {
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
