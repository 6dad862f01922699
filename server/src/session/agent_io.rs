//! The agent's stderr, sent to the log line by line. (Its stdin and stdout
//! belong to the session task itself.) Long lines are dropped with a note,
//! never buffered without bound.

use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;

use super::framing::{LineSplitter, Split};

/// The longest stderr line kept in the log.
const MAX_STDERR_LOG_BYTES: usize = 8 * 1024;

/// Logs the agent's stderr until it closes.
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
