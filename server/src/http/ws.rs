//! The WebSocket data plane at `/sessions/{id}` (PROTOCOL.md section 4).
//!
//! The handler asks the session to attach a client and gets one value back
//! ([`Attachment`]): the catch-up to send first, the client's outbox, and a
//! way to detach. Each socket then has a reader (this task) and a writer
//! task. The reader splits text frames into records, drops what is not
//! JSON, and hands records to the session, waiting when the session's stdin
//! queue is full (TCP backpressure). The writer sends the catch-up and then
//! what arrives in the outbox, several frames per flush, pings, and closes
//! the socket when told or when the client has been silent for too long.
//! Once the catch-up is out, the writer opens the client's lane
//! ([`SocketLane`]): while nothing is queued for the client, the session
//! writes its records to the socket itself, without waking the writer.
//! The session never waits for either. Records become WebSocket text frames
//! here, at the writer ([`frame`]), and nowhere else.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{FromRequestParts, Request, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::oneshot;

use super::App;
use crate::config::Limits;
use crate::session::dropped::Reason;
use crate::session::framing::split_frame;
use crate::session::record::parse_head;
use crate::session::{
    AttachOptions, Attachment, CloseWith, Delivery, Inbound, Lane, Outbox, SessionHandle, Status,
    Text,
};
use crate::util::now_ms;

/// Replay records written before a flush, at most.
const MAX_BATCH: usize = 256;
/// How long the reader waits for the close handshake once the writer ended.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The options of the WebSocket URL; `Err` names a `since` that is not a
/// sequence number.
fn attach_options(query: Option<&str>) -> Result<AttachOptions, String> {
    let params: HashMap<String, String> = query
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let flag = |k: &str| {
        params
            .get(k)
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | ""))
    };
    let since = match params.get("since") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| format!("`since` must be a sequence number, not {v:?}"))?,
        ),
    };
    Ok(AttachOptions {
        seq: flag("seq"),
        hello: flag("hello"),
        since,
    })
}

/// Answers an upgrade request for session `id`.
pub async fn upgrade(app: Arc<App>, id: String, req: Request) -> Response {
    let Some(handle) = app.sessions.get(&id) else {
        return text(StatusCode::NOT_FOUND, "Session not found".into());
    };
    let status = handle.status();
    if status != Status::Running {
        return text(
            StatusCode::CONFLICT,
            format!("Session {}; restart it first", status.as_str()),
        );
    }
    let opts = match attach_options(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let auth = crate::auth::http::SocketAuth::of(&req);
    // The socket keeps its connection's slot under the connection cap.
    let slot = req.extensions().get::<super::listen::ConnSlot>().cloned();
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    // The client is attached before the 101 answer goes out: every record
    // the session publishes once the client has its answer is queued for
    // it (a record sent by another client right after this one connected
    // is never missed). If the upgrade fails, the attachment is dropped,
    // which detaches the client.
    let attachment = match handle.attach(opts).await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(session = %handle.id, error = ?e, "attach refused");
            let status = match e {
                crate::session::AttachError::NotRunning(s) => s,
                crate::session::AttachError::Gone => Status::Stopped,
            };
            return text(
                StatusCode::CONFLICT,
                format!("Session {}; restart it first", status.as_str()),
            );
        }
    };
    let limits = app.limits.clone();
    // Frames up to twice the limit are read whole so they can be refused
    // with a clean 1009 close handshake; larger ones fail in the codec,
    // before any of their payload is buffered.
    let codec_limit = limits.max_frame_bytes.saturating_mul(2);
    upgrade
        .max_message_size(codec_limit)
        .max_frame_size(codec_limit)
        .on_upgrade(move |socket| async move {
            serve(socket, handle, attachment, limits, auth).await;
            drop(slot);
        })
}

async fn serve(
    socket: WebSocket,
    handle: Arc<SessionHandle>,
    attachment: Attachment,
    limits: Limits,
    auth: Option<crate::auth::http::SocketAuth>,
) {
    let (sink, stream) = socket.split();
    let Attachment {
        client,
        catchup,
        outbox,
        detach,
    } = attachment;
    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let (stop_tx, stop_rx) = oneshot::channel();
    let session = handle.id.clone();
    let mut writer = tokio::spawn(write_task(
        sink,
        catchup,
        outbox,
        stop_rx,
        last_seen.clone(),
        limits.ws_ping,
        limits.ws_idle,
        session.clone(),
        client,
        auth,
    ));
    // A panic in the reader is this connection's alone: it is logged and
    // the socket closed with 1011; the session never notices (the client
    // is detached as usual).
    let reader =
        AssertUnwindSafe(read_loop(stream, &handle, client, &limits, &last_seen)).catch_unwind();
    tokio::pin!(reader);
    tokio::select! {
        read = &mut reader => {
            let closing = read.unwrap_or_else(|panic| {
                tracing::error!(session = %session, client, panic = panic_text(&*panic), "the connection's reader panicked; closing it with 1011");
                Some((1011, "internal error"))
            });
            if let Some(with) = closing {
                // Ask the writer to close, and let the close frame go out
                // before the socket is dropped.
                let _ = stop_tx.send(with);
                let _ = tokio::time::timeout(CLOSE_HANDSHAKE, &mut writer).await;
            }
        }
        _ = &mut writer => {
            // The writer closed the socket; give the client a moment to
            // answer the close frame.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, &mut reader).await;
        }
    }
    writer.abort();
    detach.detach().await;
}

/// The text of a panic payload, for the log.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Reads the client's frames until the socket ends; returns the close to
/// send, if any (the client's own Close is answered with its code).
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    handle: &SessionHandle,
    client: u64,
    limits: &Limits,
    last_seen: &AtomicU64,
) -> Option<CloseWith> {
    while let Some(msg) = stream.next().await {
        last_seen.store(now_ms(), Ordering::Relaxed);
        match msg {
            Ok(Message::Text(frame)) => {
                if frame.len() > limits.max_frame_bytes {
                    tracing::warn!(session = %handle.id, client, bytes = frame.len(), "client frame over the size limit; closing it with 1009");
                    return Some((1009, "frame too large"));
                }
                handle.touch_client_text();
                let bytes = Bytes::from(frame.clone());
                for line in split_frame(frame.as_str()) {
                    if line.len() > limits.max_line_bytes {
                        crate::ops::metrics::add(&handle.metrics().dropped_too_long, 1);
                        tracing::warn!(session = %handle.id, client, bytes = line.len(), "dropped a client record longer than the limit");
                        handle.report_dropped(Reason::LineTooLong, line.len());
                        continue;
                    }
                    let Some(head) = parse_head(line.as_bytes()) else {
                        crate::ops::metrics::add(&handle.metrics().dropped_not_json, 1);
                        tracing::warn!(session = %handle.id, client, bytes = line.len(), "dropped a client record that is not JSON");
                        handle.report_dropped(Reason::NotJson, line.len());
                        continue;
                    };
                    let record = Inbound {
                        line: bytes.slice_ref(line.as_bytes()),
                        head,
                        charged: 0,
                    };
                    if !handle.send(record).await {
                        return None;
                    }
                }
            }
            Ok(Message::Binary(_)) => {
                tracing::debug!(session = %handle.id, client, "ignored a binary frame");
            }
            Ok(Message::Close(frame)) => {
                // RFC 6455 section 5.5.1: answer with a Close, echoing the
                // status code.
                let code = frame
                    .map(|f| f.code)
                    .filter(|c| matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999))
                    .unwrap_or(1000);
                tracing::debug!(session = %handle.id, client, code, "the client closed its socket");
                return Some((code, ""));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Err(e) => {
                if is_capacity(&e) {
                    tracing::warn!(session = %handle.id, client, "client frame over the size limit; closing it with 1009");
                    return Some((1009, "frame too large"));
                }
                let text = e.to_string();
                if text.contains("UTF-8") || text.contains("utf-8") {
                    tracing::warn!(session = %handle.id, client, error = %text, "a client text frame is not valid UTF-8; closing it with 1007");
                    return Some((1007, "invalid UTF-8"));
                }
                // A phone that loses its network or a closed laptop lid: the
                // connection ends without a Close. Routine, not an attack.
                if text.contains("without closing handshake") {
                    tracing::debug!(session = %handle.id, client, "the client went away without a Close");
                    return None;
                }
                if text.contains("protocol error") || text.contains("Protocol error") {
                    tracing::warn!(session = %handle.id, client, error = %text, "a client broke the WebSocket protocol; closing it with 1002");
                    return Some((1002, "protocol error"));
                }
                tracing::debug!(session = %handle.id, client, error = %text, "client socket error");
                return None;
            }
        }
    }
    None
}

fn is_capacity(e: &axum::Error) -> bool {
    let text = e.to_string();
    // tungstenite's `Error::Capacity` ("Space limit exceeded: Message too long").
    text.contains("Space limit exceeded") || text.contains("too long")
}

/// A record as a WebSocket text frame: the one place the core's [`Text`]
/// becomes an axum type.
fn frame(text: Text) -> Message {
    // `Text` is valid UTF-8 by construction; the check cannot fail.
    Message::Text(Utf8Bytes::try_from(text.into_bytes()).unwrap_or_default())
}

/// Waits for a one-shot value once. After it resolved (with a value or
/// because its sender went away) it is never polled again: a completed
/// `oneshot::Receiver` panics when polled a second time.
async fn once<T>(slot: &mut Option<oneshot::Receiver<T>>) -> T {
    if let Some(rx) = slot.as_mut() {
        let got = rx.await;
        *slot = None;
        if let Ok(value) = got {
            return value;
        }
    }
    std::future::pending().await
}

/// A client's socket as both its writer task and the session write to it:
/// the sink behind an async lock that the writer waits for and the session
/// only tries ([`Lane::try_write`] never waits), and a flush the session
/// leaves to the writer when the socket could not take it at once.
struct SocketLane {
    sink: tokio::sync::Mutex<SplitSink<WebSocket, Message>>,
    /// The session handed frames to the socket that it could not flush:
    /// nothing more goes out directly until the writer has flushed them.
    owed: std::sync::atomic::AtomicBool,
    flush: tokio::sync::Notify,
    /// The writer has ended (the socket is closed or broken): the session
    /// lets go of the client instead of writing to it.
    ended: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SocketLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketLane")
            .field("owed", &self.owed)
            .finish_non_exhaustive()
    }
}

impl Lane for SocketLane {
    fn try_write(&self, texts: &[Text]) -> Result<usize, ()> {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        // Outside the session task's cooperative budget: these are
        // attempts that never wait, and a budget spent by the step's
        // other work would otherwise turn them into hand-offs to every
        // client's writer (one wake-up each).
        let mut cx = Context::from_waker(Waker::noop());
        let attempt = std::pin::pin!(tokio::task::unconstrained(std::future::poll_fn(|cx| {
            Poll::Ready(self.write_now(cx, texts))
        })));
        match attempt.poll(&mut cx) {
            Poll::Ready(written) => written,
            Poll::Pending => Ok(0),
        }
    }
}

impl SocketLane {
    fn write_now(&self, cx: &mut std::task::Context<'_>, texts: &[Text]) -> Result<usize, ()> {
        use futures_util::Sink;
        use std::pin::Pin;
        use std::task::Poll;
        if self.ended.load(Ordering::Acquire) {
            return Err(());
        }
        if self.owed.load(Ordering::Acquire) {
            return Ok(0);
        }
        // The writer holds the socket: it is writing, so the records queue
        // behind what it writes.
        let Ok(mut sink) = self.sink.try_lock() else {
            return Ok(0);
        };
        let mut sink = Pin::new(&mut *sink);
        let mut taken = 0;
        let mut stuck = false;
        for text in texts {
            match sink.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {
                    stuck = true;
                    break;
                }
            }
            sink.as_mut()
                .start_send(frame(text.clone()))
                .map_err(|_| ())?;
            taken += 1;
        }
        if taken > 0 && !stuck {
            match sink.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => stuck = true,
            }
        }
        if stuck {
            // The writer flushes with a waker of its own; until then
            // everything goes through the queue, behind what is here.
            self.owed.store(true, Ordering::Release);
            self.flush.notify_one();
        }
        Ok(taken)
    }
}

/// The writer task: [`write_loop`], and a panic in it logged and answered
/// with 1011 on the socket, never touching the session.
#[allow(clippy::too_many_arguments)]
async fn write_task(
    sink: SplitSink<WebSocket, Message>,
    catchup: Vec<Text>,
    outbox: Outbox,
    stop: oneshot::Receiver<CloseWith>,
    last_seen: Arc<AtomicU64>,
    ping_every: Duration,
    idle_after: Duration,
    session: String,
    client: u64,
    auth: Option<crate::auth::http::SocketAuth>,
) {
    let lane = Arc::new(SocketLane {
        sink: tokio::sync::Mutex::new(sink),
        owed: std::sync::atomic::AtomicBool::new(false),
        flush: tokio::sync::Notify::new(),
        ended: std::sync::atomic::AtomicBool::new(false),
    });
    let written = AssertUnwindSafe(write_loop(
        &lane, catchup, outbox, stop, last_seen, ping_every, idle_after, auth,
    ))
    .catch_unwind()
    .await;
    if let Err(panic) = written {
        tracing::error!(session = %session, client, panic = panic_text(&*panic), "the connection's writer panicked; closing it with 1011");
        let mut sink = lane.sink.lock().await;
        let _ = close(&mut sink, 1011, "internal error").await;
    }
    lane.ended.store(true, Ordering::Release);
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    lane: &Arc<SocketLane>,
    catchup: Vec<Text>,
    mut outbox: Outbox,
    stop: oneshot::Receiver<CloseWith>,
    last_seen: Arc<AtomicU64>,
    ping_every: Duration,
    idle_after: Duration,
    auth: Option<crate::auth::http::SocketAuth>,
) {
    {
        let mut sink = lane.sink.lock().await;
        for chunk in catchup.chunks(MAX_BATCH) {
            for text in chunk {
                if sink.feed(frame(text.clone())).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        // The catch-up is out: live records may now go straight to the
        // socket whenever nothing is queued for this client.
        outbox.open_lane(lane.clone());
    }
    let mut stop = Some(stop);
    // Token mode: a socket opened with a token that has been rotated since
    // is closed (PROTOCOL.md 12.5).
    let rotated = crate::auth::http::SocketAuth::rotated(auth);
    tokio::pin!(rotated);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            (code, reason) = once(&mut stop) => {
                let _ = close(&mut *lane.sink.lock().await, code, reason).await;
                return;
            }
            () = &mut rotated => {
                tracing::info!("closing a socket opened with a rotated token");
                let (code, reason) = crate::auth::http::ROTATED;
                let _ = close(&mut *lane.sink.lock().await, code, reason).await;
                return;
            }
            next = outbox.next() => {
                let mut sink = lane.sink.lock().await;
                let Some(mut next) = next else {
                    let _ = close(&mut sink, 1011, "session ended").await;
                    return;
                };
                // What the session left unflushed goes out with this flush.
                lane.owed.store(false, Ordering::Release);
                // Everything queued now goes out with one flush.
                loop {
                    match next {
                        Delivery::Records(mut batch) => {
                            for text in batch.drain() {
                                if sink.feed(frame(text)).await.is_err() {
                                    return;
                                }
                            }
                            // Dropping the batch settles its accounting.
                            drop(batch);
                        }
                        Delivery::Close((code, reason)) => {
                            let _ = close(&mut sink, code, reason).await;
                            return;
                        }
                    }
                    match outbox.try_next() {
                        Some(d) => next = d,
                        None => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            () = lane.flush.notified() => {
                let mut sink = lane.sink.lock().await;
                lane.owed.store(false, Ordering::Release);
                if sink.flush().await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                let silent_ms = now_ms().saturating_sub(last_seen.load(Ordering::Relaxed));
                let mut sink = lane.sink.lock().await;
                if silent_ms >= idle_after.as_millis() as u64 {
                    tracing::info!(silent_ms, "client answered nothing for too long; dropping it");
                    let _ = close(&mut sink, 1001, "idle timeout").await;
                    return;
                }
                if sink.send(Message::Ping(Bytes::from_static(b"amarre"))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends a Close. When the client closed first, the WebSocket layer has
/// already queued its answer (tungstenite echoes the client's code) and
/// refuses a second Close: closing the sink then flushes that answer.
async fn close(
    sink: &mut SplitSink<WebSocket, Message>,
    code: u16,
    reason: &'static str,
) -> Result<(), axum::Error> {
    let sent = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
    match sent {
        Ok(()) => Ok(()),
        Err(_) => sink.close().await,
    }
}
