//! One session's WebSocket (PROTOCOL.md sections 4 and 11), kept open:
//! after a drop it reconnects with `?hello=1&seq=1&since=N`, N being the
//! last `_seq` it delivered, so nothing is lost or delivered twice
//! (records at or below N are skipped; a replay gap is reported). Records
//! written while the socket is down wait and are sent once it is back.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::api::{Api, error_chain};

/// What the connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The socket is open; `hello` is the server's `amarre.hello` (Null
    /// when the server sent none); `again` is false the first time.
    Connected { hello: Value, again: bool },
    /// The socket dropped; the connection retries by itself.
    Disconnected { reason: String, retry_in: Duration },
    /// Records `from..=to` are older than the server's replay buffer.
    Gap { from: u64, to: u64 },
    /// A record of the session's stream (each delivered once), or a pending
    /// question the server repeats on a new socket (`repeat`).
    Record { record: Value, repeat: bool },
    /// The connection is over; no more events follow.
    Ended(End),
}

/// Why a connection ended for good.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The agent exited (close 1011 after `amarre.session_event`).
    Crashed,
    /// The session was deleted (close 1000), or is not there any more.
    Gone,
    /// The session exists but is not running (409 on reconnect).
    NotRunning(String),
    /// The daemon refused the token.
    Unauthorized,
    /// We closed it.
    Closed,
}

/// A handle on the connection task: send records, receive events.
pub struct Conn {
    out: Option<mpsc::UnboundedSender<String>>,
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Starts connecting to session `id`.
    pub fn open(api: Api, id: String) -> Conn {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(api, id, out_rx, ev_tx));
        Conn {
            out: Some(out_tx),
            events: ev_rx,
            task,
        }
    }

    /// Queues one record for the agent (sent now, or after a reconnect).
    pub fn send(&self, record: &Value) {
        if let Some(out) = &self.out {
            let _ = out.send(record.to_string());
        }
    }

    /// Closes the socket (normal closure) and waits a little for it.
    pub async fn close(mut self) {
        self.out = None;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

enum Outcome {
    /// Reconnect after this reason.
    Retry(String),
    End(End),
}

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(3);

async fn run(
    api: Api,
    id: String,
    mut out_rx: mpsc::UnboundedReceiver<String>,
    ev: mpsc::UnboundedSender<Event>,
) {
    let mut last_seq: Option<u64> = None;
    let mut outbox: VecDeque<String> = VecDeque::new();
    let mut connected_once = false;
    let mut retry = FIRST_RETRY;
    loop {
        let outcome = session_socket(
            &api,
            &id,
            &mut last_seq,
            &mut outbox,
            &mut out_rx,
            &ev,
            &mut connected_once,
            &mut retry,
        )
        .await;
        match outcome {
            Outcome::End(end) => {
                let _ = ev.send(Event::Ended(end));
                return;
            }
            Outcome::Retry(reason) => {
                if ev
                    .send(Event::Disconnected {
                        reason,
                        retry_in: retry,
                    })
                    .is_err()
                {
                    return;
                }
                // Keep taking records to send while waiting; stop when the
                // owner closed the connection.
                let sleep = tokio::time::sleep(retry);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        r = out_rx.recv() => match r {
                            Some(text) => outbox.push_back(text),
                            None => {
                                let _ = ev.send(Event::Ended(End::Closed));
                                return;
                            }
                        },
                    }
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session_socket(
    api: &Api,
    id: &str,
    last_seq: &mut Option<u64>,
    outbox: &mut VecDeque<String>,
    out_rx: &mut mpsc::UnboundedReceiver<String>,
    ev: &mpsc::UnboundedSender<Event>,
    connected_once: &mut bool,
    retry: &mut Duration,
) -> Outcome {
    let query = match last_seq {
        Some(n) => format!("?hello=1&seq=1&since={n}"),
        None => "?hello=1&seq=1".to_owned(),
    };
    let url = api.ws_url(id, &query);
    let mut req = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Outcome::End(End::NotRunning(format!("bad URL {url}: {e}"))),
    };
    if let Some(auth) = api.authorization()
        && let Ok(v) = HeaderValue::from_str(&auth)
    {
        req.headers_mut().insert("authorization", v);
    }
    let connect = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await;
    let mut ws = match connect {
        Err(_) => return Outcome::Retry("connecting timed out".into()),
        Ok(Err(WsError::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return match resp.status().as_u16() {
                401 => Outcome::End(End::Unauthorized),
                404 => Outcome::End(End::Gone),
                409 => Outcome::End(End::NotRunning(body)),
                s => Outcome::Retry(format!("the daemon answered {s}: {body}")),
            };
        }
        Ok(Err(e)) => return Outcome::Retry(error_chain(&e)),
        Ok(Ok((ws, _))) => ws,
    };
    *retry = FIRST_RETRY;
    let mut said_connected = false;
    loop {
        // Records waiting from while the socket was down go first, once the
        // server said hello (so the seam is known).
        if said_connected && let Some(text) = outbox.pop_front() {
            if let Err(e) = ws.send(Message::text(text.clone())).await {
                outbox.push_front(text);
                return Outcome::Retry(error_chain(&e));
            }
            continue;
        }
        tokio::select! {
            r = out_rx.recv(), if said_connected => match r {
                Some(text) => outbox.push_back(text),
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return Outcome::End(End::Closed);
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                    match v["type"].as_str() {
                        Some("amarre.hello") if !said_connected => {
                            said_connected = true;
                            if last_seq.is_none() {
                                *last_seq = v["seq"].as_u64();
                            }
                            let again = *connected_once;
                            *connected_once = true;
                            let _ = ev.send(Event::Connected { hello: v, again });
                            continue;
                        }
                        Some("amarre.replay_gap") => {
                            let (from, to) = (v["from"].as_u64().unwrap_or(0), v["to"].as_u64().unwrap_or(0));
                            *last_seq = Some(last_seq.unwrap_or(0).max(to));
                            let _ = ev.send(Event::Gap { from, to });
                            continue;
                        }
                        _ => {}
                    }
                    if !said_connected {
                        // A server without hello: count from here.
                        said_connected = true;
                        let again = *connected_once;
                        *connected_once = true;
                        let _ = ev.send(Event::Connected { hello: Value::Null, again });
                    }
                    let repeat = match v["_seq"].as_u64() {
                        Some(n) if last_seq.is_some_and(|l| n <= l) => true,
                        Some(n) => {
                            *last_seq = Some(n);
                            false
                        }
                        None => false,
                    };
                    if repeat && v["type"] != "extension_ui_request" {
                        continue;
                    }
                    let _ = ev.send(Event::Record { record: v, repeat });
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map(|f| f.code);
                    return match code {
                        Some(CloseCode::Error) => Outcome::End(End::Crashed),
                        Some(CloseCode::Normal) => Outcome::End(End::Gone),
                        Some(CloseCode::Policy) if frame.as_ref().is_some_and(|f| f.reason.as_str().contains("token")) => {
                            Outcome::End(End::Unauthorized)
                        }
                        _ => Outcome::Retry(match frame {
                            Some(f) => format!("closed by the daemon ({}{}{})", u16::from(f.code), if f.reason.is_empty() { "" } else { ": " }, f.reason),
                            None => "closed by the daemon".into(),
                        }),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Outcome::Retry(error_chain(&e)),
                None => return Outcome::Retry("the connection ended".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `https://` URLs go through TLS (rustls): a server that is not a TLS
    /// server is a connection error to retry, never a panic or a success.
    #[tokio::test]
    async fn an_https_daemon_is_reached_over_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 1];
            let _ = sock.read_exact(&mut first).await;
            let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            // 0x16: a TLS handshake record, so the client spoke TLS.
            first[0]
        });
        let api = Api::with(&format!("https://127.0.0.1:{port}"), None).unwrap();
        let mut conn = Conn::open(api, "abc".into());
        let event = tokio::time::timeout(Duration::from_secs(10), conn.events.recv())
            .await
            .expect("an event");
        assert!(
            matches!(event, Some(Event::Disconnected { .. })),
            "{event:?}"
        );
        assert_eq!(server.await.unwrap(), 0x16);
        conn.close().await;
    }
}
