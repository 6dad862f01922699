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
//! The session never waits for either. Records become WebSocket text frames
//! here, at the writer ([`frame`]), and nowhere else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{FromRequestParts, Request, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;

use super::App;
use crate::config::Limits;
use crate::session::framing::split_frame;
use crate::session::record::parse_head;
use crate::session::{
    AttachOptions, Attachment, CloseWith, Delivery, Inbound, Outbox, SessionHandle, Status, Text,
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

fn attach_options(query: Option<&str>) -> AttachOptions {
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
    AttachOptions {
        seq: flag("seq"),
        hello: flag("hello"),
        since: params.get("since").and_then(|v| v.parse().ok()),
    }
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
    let opts = attach_options(req.uri().query());
    let auth = crate::auth::http::SocketAuth::of(&req);
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = app.limits.clone();
    // Frames up to twice the limit are read whole so they can be refused
    // with a clean 1009 close handshake; larger ones fail in the codec,
    // before any of their payload is buffered.
    let codec_limit = limits.max_frame_bytes.saturating_mul(2);
    upgrade
        .max_message_size(codec_limit)
        .max_frame_size(codec_limit)
        .on_upgrade(move |socket| serve(socket, handle, opts, limits, auth))
}

async fn serve(
    socket: WebSocket,
    handle: Arc<SessionHandle>,
    opts: AttachOptions,
    limits: Limits,
    auth: Option<crate::auth::http::SocketAuth>,
) {
    let (sink, stream) = socket.split();
    let Attachment {
        client,
        catchup,
        outbox,
        detach,
    } = match handle.attach(opts).await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(session = %handle.id, error = ?e, "attach refused");
            let mut sink = sink;
            let _ = close(&mut sink, 1011, "session not running").await;
            return;
        }
    };
    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(
        sink,
        catchup,
        outbox,
        stop_rx,
        last_seen.clone(),
        limits.ws_ping,
        limits.ws_idle,
        auth,
    ));
    let reader = read_loop(stream, &handle, client, &limits, &last_seen, stop_tx);
    tokio::pin!(reader);
    tokio::select! {
        closing = &mut reader => {
            if closing {
                // The reader asked the writer to close: let the close
                // frame go out before the socket is dropped.
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

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    handle: &SessionHandle,
    client: u64,
    limits: &Limits,
    last_seen: &AtomicU64,
    stop: oneshot::Sender<CloseWith>,
) -> bool {
    while let Some(msg) = stream.next().await {
        last_seen.store(now_ms(), Ordering::Relaxed);
        match msg {
            Ok(Message::Text(frame)) => {
                if frame.len() > limits.max_frame_bytes {
                    tracing::warn!(session = %handle.id, client, bytes = frame.len(), "client frame over the size limit; closing it with 1009");
                    let _ = stop.send((1009, "frame too large"));
                    return true;
                }
                handle.touch_client_text();
                let bytes = Bytes::from(frame.clone());
                for line in split_frame(frame.as_str()) {
                    if line.len() > limits.max_line_bytes {
                        crate::ops::metrics::add(&handle.metrics().dropped_too_long, 1);
                        tracing::warn!(session = %handle.id, client, bytes = line.len(), "dropped a client record longer than the limit");
                        continue;
                    }
                    let Some(head) = parse_head(line.as_bytes()) else {
                        crate::ops::metrics::add(&handle.metrics().dropped_not_json, 1);
                        tracing::warn!(session = %handle.id, client, bytes = line.len(), "dropped a client record that is not JSON");
                        continue;
                    };
                    let record = Inbound {
                        line: bytes.slice_ref(line.as_bytes()),
                        head,
                    };
                    if !handle.send(record).await {
                        return false;
                    }
                }
            }
            Ok(Message::Binary(_)) => {
                tracing::debug!(session = %handle.id, client, "ignored a binary frame");
            }
            Ok(Message::Close(_)) => return false,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Err(e) => {
                if is_capacity(&e) {
                    tracing::warn!(session = %handle.id, client, "client frame over the size limit; closing it with 1009");
                    let _ = stop.send((1009, "frame too large"));
                    return true;
                }
                tracing::debug!(session = %handle.id, client, error = %e, "client socket error");
                return false;
            }
        }
    }
    false
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

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    catchup: Vec<Text>,
    mut outbox: Outbox,
    stop: oneshot::Receiver<CloseWith>,
    last_seen: Arc<AtomicU64>,
    ping_every: Duration,
    idle_after: Duration,
    auth: Option<crate::auth::http::SocketAuth>,
) {
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
                let _ = close(&mut sink, code, reason).await;
                return;
            }
            () = &mut rotated => {
                tracing::info!("closing a socket opened with a rotated token");
                let (code, reason) = crate::auth::http::ROTATED;
                let _ = close(&mut sink, code, reason).await;
                return;
            }
            next = outbox.next() => {
                let Some(mut next) = next else {
                    let _ = close(&mut sink, 1011, "session ended").await;
                    return;
                };
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
            _ = ping.tick() => {
                let silent_ms = now_ms().saturating_sub(last_seen.load(Ordering::Relaxed));
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

async fn close(
    sink: &mut SplitSink<WebSocket, Message>,
    code: u16,
    reason: &'static str,
) -> Result<(), axum::Error> {
    sink.send(Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    })))
    .await
}
