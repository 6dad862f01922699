//! Adapter stdout/stderr as `tracing` lines under the adapter's name. Output
//! is split into lines and each line capped, so a chatty adapter cannot make
//! the host buffer without bound.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept from an adapter's stdout or stderr.
const MAX_LOG_LINE_BYTES: usize = 4096;

/// A `StdoutStream` that logs.
pub struct LogStream {
    label: Arc<str>,
    is_stderr: bool,
}

impl LogStream {
    pub fn new(label: Arc<str>, is_stderr: bool) -> LogStream {
        LogStream { label, is_stderr }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LogWriter::new(self.label.clone(), self.is_stderr))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LogWriter::new(self.label.clone(), self.is_stderr))
    }
}

struct LogWriter {
    label: Arc<str>,
    is_stderr: bool,
    line: BytesMut,
}

impl LogWriter {
    fn new(label: Arc<str>, is_stderr: bool) -> LogWriter {
        LogWriter {
            label,
            is_stderr,
            line: BytesMut::new(),
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            self.extend(&bytes[..pos]);
            self.emit();
            bytes = &bytes[pos + 1..];
        }
        self.extend(bytes);
    }

    fn extend(&mut self, bytes: &[u8]) {
        let room = MAX_LOG_LINE_BYTES.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let adapter = &*self.label;
        if self.is_stderr {
            tracing::warn!(target: "amarre::adapter", adapter, stream = "stderr", "{text}");
        } else {
            tracing::info!(target: "amarre::adapter", adapter, stream = "stdout", "{text}");
        }
        self.line.clear();
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[async_trait::async_trait]
impl Pollable for LogWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LogWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LogWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
