//! The listener: accepts TCP connections and serves HTTP/1.1 (and the
//! WebSocket upgrades) on them, within the connection limits of
//! docs/security.md.
//!
//! - A request's head must arrive within the header timeout
//!   (`AMARRE_HEADER_TIMEOUT_MS`), counted from the first byte of the
//!   request (or from the connection, for its first request); an idle
//!   keep-alive connection is closed after the same time. A client that
//!   half-sends a request is dropped then.
//! - A request's body may pause at most the body timeout
//!   (`AMARRE_BODY_TIMEOUT_MS`) between two reads; the REST handlers answer
//!   `408 {"error":"body_timeout"}` and the connection is closed.
//! - At most `AMARRE_MAX_CONNECTIONS` connections are open at once,
//!   WebSockets included (an upgraded socket keeps its connection's slot
//!   until it closes). A connection beyond the cap is answered
//!   `503 {"error":"too_many_connections"}` at once, without reading its
//!   request, and closed.
//! - `accept` failing (out of file descriptors) is logged and retried after
//!   a pause; the daemon keeps serving the connections it has.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower_http::timeout::TimeoutBody;
use tower_service::Service;

/// The connection limits (settings `server.*` in docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

/// A connection's slot under the cap, kept in each request's extensions so
/// that an upgraded WebSocket holds it until the socket ends.
#[derive(Debug, Clone)]
pub(crate) struct ConnSlot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Refusals (503) being written at once, at most; beyond it a connection
/// over the cap is closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to read its 503.
const REFUSE_TIME: Duration = Duration::from_secs(1);
/// Pause after `accept` failed (file descriptors exhausted, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(250);
/// How long connections still open at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 32\r\n\
retry-after: 1\r\n\
connection: close\r\n\r\n\
{\"error\":\"too_many_connections\"}";

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// open connections finish (briefly).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if !is_connection_error(&e) {
                        tracing::warn!(error = %e, "cannot accept a connection; retrying shortly");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Records are small writes: without TCP_NODELAY, Nagle's algorithm
        // holds them back until the peer's (delayed) ACK, stalling a stream
        // for milliseconds at a time (measured in docs/PERFORMANCE.md).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse(tcp, &refusing, limits.max_connections);
            continue;
        };
        let slot = ConnSlot(Arc::new(permit));
        let conn = connection(
            tcp,
            router.clone(),
            slot,
            limits,
            stop_rx.clone(),
            done_rx.clone(),
        );
        tokio::spawn(conn);
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    if tokio::time::timeout(SHUTDOWN_GRACE, done_tx.closed())
        .await
        .is_err()
    {
        tracing::debug!(
            open = done_tx.receiver_count(),
            "connections still open at shutdown"
        );
    }
}

/// Serves one connection; `_done` is dropped when it ends.
async fn connection(
    tcp: TcpStream,
    router: Router,
    slot: ConnSlot,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
) {
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut router = router.clone();
        let mut req = req.map(|b| Body::new(TimeoutBody::new(body_timeout, b)));
        req.extensions_mut().insert(slot.clone());
        async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers a connection over the cap with a 503 and closes it, in the
/// background and briefly; closes it at once when too many are refused
/// already.
fn refuse(mut tcp: TcpStream, refusing: &Arc<Semaphore>, max: usize) {
    // One log line a second at most, with the count: a storm of
    // connections must not become a storm of log lines.
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LOGGED_MS: AtomicU64 = AtomicU64::new(0);
    let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = crate::util::now_ms();
    let last = LOGGED_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 1000
        && LOGGED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            max_connections = max,
            refused_so_far = refused,
            "connection refused: too many open connections (AMARRE_MAX_CONNECTIONS)"
        );
    }
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSE_TIME, async {
            tcp.write_all(REFUSAL).await?;
            tcp.shutdown().await?;
            // Read what the client sent, so that closing does not reset the
            // connection before the client has read the answer.
            let mut sink = [0u8; 4096];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        drop(permit);
    });
}

/// Errors of one connection (the next `accept` may well succeed at once).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_json_answer() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v, serde_json::json!({"error": "too_many_connections"}));
    }
}
