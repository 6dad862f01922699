//! The floors `amarre-bench` measures the relay against
//! (docs/PERFORMANCE.md):
//!
//! - [`pipe`]: the same loops straight over a `cat` child's pipes with
//!   blocking reads and writes on dedicated threads: the physical limit of
//!   a relay through a child's pipes (no async runtime, no wake-ups other
//!   than the kernel's).
//! - [`ws_echo`]: a minimal WebSocket echo server (axum and tungstenite, as
//!   the daemon uses them, on the same kind of multi-thread runtime) that
//!   speaks just enough of the REST surface (`POST /sessions`, `DELETE`)
//!   for the relay loops' own client to run against it unchanged. The
//!   difference between it and the daemon is the relay; between it and the
//!   pipe, the WebSocket.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::bench::{Flow, index_of, record};

/// Blocking I/O on a `cat` child's pipes.
pub mod pipe {
    use super::*;

    fn cat() -> std::io::Result<Child> {
        Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
    }

    fn fail(what: &str, e: impl std::fmt::Display) -> String {
        format!("pipe floor, {what}: {e}")
    }

    /// Ends and reaps the child (its stdin is closed first).
    fn finish(mut child: Child) {
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Round trips of one record at a time on this thread; µs each.
    pub fn latency(n: u64, size: usize) -> Result<Vec<f64>, String> {
        let mut child = cat().map_err(|e| fail("cat", e))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut out = Vec::with_capacity(n as usize);
        let mut line = Vec::with_capacity(size + 1);
        for i in 0..n {
            let mut rec = record(i, size).into_bytes();
            rec.push(b'\n');
            line.clear();
            let t = Instant::now();
            stdin.write_all(&rec).map_err(|e| fail("write", e))?;
            stdout
                .read_until(b'\n', &mut line)
                .map_err(|e| fail("read", e))?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
            if index_of(&line) != Some(i) {
                return Err(format!("pipe floor: expected record {i}"));
            }
        }
        drop(stdin);
        finish(child);
        Ok(out)
    }

    /// How far the reader got, and a wake-up for a writer waiting on it.
    #[derive(Default)]
    struct Window {
        received: AtomicU64,
        waiting: AtomicBool,
        /// The count the waiting writer needs to see.
        wake_at: AtomicU64,
        lock: Mutex<()>,
        changed: Condvar,
    }

    /// A writer thread and a reader thread, at most `window` records in
    /// flight, writes of up to 64 records, as the relay loop's client does.
    /// A writer that finds the window full sleeps until a whole write fits
    /// (woken for each record, blocking threads would write one record at a
    /// time: the floor would measure the wake-ups, not the pipe).
    pub fn throughput(n: u64, size: usize, window: u64) -> Result<Flow, String> {
        let mut child = cat().map_err(|e| fail("cat", e))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let w = Arc::new(Window::default());
        let t = Instant::now();
        let reader = {
            let w = w.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
                let mut line = Vec::with_capacity(size + 1);
                for expected in 0..n {
                    line.clear();
                    stdout
                        .read_until(b'\n', &mut line)
                        .map_err(|e| fail("read", e))?;
                    if index_of(&line) != Some(expected) {
                        return Err(format!("pipe floor: out of order at {expected}"));
                    }
                    w.received.store(expected + 1, Ordering::SeqCst);
                    if w.waiting.load(Ordering::SeqCst)
                        && expected + 1 >= w.wake_at.load(Ordering::SeqCst)
                    {
                        let _g = w.lock.lock().unwrap_or_else(|p| p.into_inner());
                        w.changed.notify_one();
                    }
                }
                Ok(())
            })
        };
        let mut i = 0;
        let mut buf = Vec::with_capacity(64 * (size + 1));
        while i < n {
            let mut done = w.received.load(Ordering::SeqCst);
            let need = (n - i).min(64).min(window);
            if window - (i - done) < need {
                let mut g = w.lock.lock().unwrap_or_else(|p| p.into_inner());
                w.wake_at.store(i + need - window, Ordering::SeqCst);
                w.waiting.store(true, Ordering::SeqCst);
                loop {
                    done = w.received.load(Ordering::SeqCst);
                    if window - (i - done) >= need {
                        break;
                    }
                    g = w.changed.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                w.waiting.store(false, Ordering::SeqCst);
            }
            buf.clear();
            let burst = (window - (i - done)).min(n - i).min(64);
            for _ in 0..burst {
                buf.extend_from_slice(record(i, size).as_bytes());
                buf.push(b'\n');
                i += 1;
            }
            stdin.write_all(&buf).map_err(|e| fail("write", e))?;
        }
        let read = reader.join().map_err(|_| "pipe floor: reader panicked")?;
        let seconds = t.elapsed().as_secs_f64();
        drop(stdin);
        finish(child);
        read?;
        Ok(Flow {
            records: n,
            bytes: n * size as u64,
            seconds,
        })
    }

    /// Start a `cat` to its first echo (fork and exec, the program's own
    /// start, one round trip); µs each. The floor of "spawn".
    pub fn spawn(k: usize) -> Result<Vec<f64>, String> {
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            let t = Instant::now();
            let mut child = cat().map_err(|e| fail("cat", e))?;
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
            let mut rec = record(0, 64).into_bytes();
            rec.push(b'\n');
            stdin.write_all(&rec).map_err(|e| fail("write", e))?;
            let mut line = Vec::new();
            stdout
                .read_until(b'\n', &mut line)
                .map_err(|e| fail("read", e))?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
            if index_of(&line) != Some(0) {
                return Err("pipe floor: unexpected first echo".into());
            }
            drop(stdin);
            finish(child);
        }
        Ok(out)
    }
}

/// A minimal WebSocket echo server, run as a child process of the bench.
pub mod ws_echo {
    use axum::Router;
    use axum::extract::ws::{WebSocket, WebSocketUpgrade};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use futures_util::{FutureExt, SinkExt, StreamExt};

    /// Echoes every text frame back on the same socket; several frames
    /// that are ready at once go out with one flush.
    async fn echo(mut ws: WebSocket) {
        while let Some(Ok(msg)) = ws.next().await {
            if ws.feed(msg).await.is_err() {
                return;
            }
            while let Some(Some(Ok(more))) = ws.next().now_or_never() {
                if ws.feed(more).await.is_err() {
                    return;
                }
            }
            if ws.flush().await.is_err() {
                return;
            }
        }
    }

    fn router() -> Router {
        Router::new()
            .route(
                "/sessions",
                post(|| async { (StatusCode::CREATED, r#"{"id":"echo"}"#) }),
            )
            .route(
                "/sessions/{id}",
                get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) })
                    .delete(|| async { StatusCode::NO_CONTENT.into_response() }),
            )
            .route("/healthz", get(|| async { "ok" }))
    }

    /// Serves on a free loopback port, as the daemon does (TCP_NODELAY on
    /// every socket), after printing `amarre listening on URL`; stops when
    /// its standard input closes (the bench that started it went away).
    pub async fn serve() -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        println!("amarre listening on http://{addr}");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stdin_closed = async {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
        };
        axum::serve(listener, router())
            .with_graceful_shutdown(stdin_closed)
            .await
    }
}

/// The machine's idle CPUs kept polling for the bench's duration.
///
/// On this kind of VM an idle vCPU halts, and waking it costs tens of
/// microseconds, more than the relay itself: the pipe floor's round trip
/// measures about 90 µs with halting CPUs and about 10 µs without, and every
/// figure swings between the two as the machine's load comes and goes. A
/// PM QoS request of 0 µs on `/dev/cpu_dma_latency` (what latency tools such
/// as `cyclictest` hold) keeps idle CPUs in their polling state, so the
/// floors and the relay are measured on steady ground. The request lasts as
/// long as the file stays open.
pub struct CpuWake {
    _held: Option<std::fs::File>,
    /// What was done, for the report.
    pub state: String,
}

impl CpuWake {
    /// Holds the request when `hold` and the device is writable.
    pub fn hold(hold: bool) -> CpuWake {
        if !hold {
            return CpuWake {
                _held: None,
                state: "idle CPUs may halt (--cpu-idle-halt)".into(),
            };
        }
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .and_then(|mut f| f.write_all(&0i32.to_ne_bytes()).map(|()| f));
        match opened {
            Ok(f) => CpuWake {
                _held: Some(f),
                state: "idle CPUs poll (PM QoS 0 µs held on /dev/cpu_dma_latency)".into(),
            },
            Err(e) => CpuWake {
                _held: None,
                state: format!("idle CPUs may halt (/dev/cpu_dma_latency: {e})"),
            },
        }
    }
}
