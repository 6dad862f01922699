//! The listener's limits (docs/security.md): header and body read
//! timeouts, and the connection cap.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

async fn connect(d: &Daemon) -> TcpStream {
    tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", d.port)))
        .await
        .expect("timed out connecting")
        .expect("connect")
}

/// Reads until the daemon closes the connection; what it sent, or `None`
/// when it was still open after `within`.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// A whole request on a connection of its own; the answer, read to its end.
async fn request(d: &Daemon, text: &str) -> String {
    let mut s = connect(d).await;
    s.write_all(text.as_bytes()).await.expect("write");
    until_closed(&mut s, STEP)
        .await
        .expect("the daemon never finished its answer")
}

fn healthz(d: &Daemon) -> String {
    format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        d.port
    )
}

#[tokio::test]
async fn half_sent_requests_neither_stop_the_daemon_nor_stay_open_past_the_header_timeout() {
    let d = Daemon::start(&[("AMARRE_HEADER_TIMEOUT_MS", "1500")]).await;
    let half = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", d.port);
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = connect(&d).await;
        s.write_all(half.as_bytes()).await.expect("write");
        held.push(s);
    }
    // The daemon still answers while they hang.
    let answer = request(&d, &healthz(&d)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Every one of them is closed after the header timeout (a generous
    // bound: the machine may be busy), none before it.
    for (n, s) in held.iter_mut().enumerate() {
        let closed = until_closed(s, Duration::from_secs(30)).await;
        assert!(
            closed.is_some(),
            "half-sent request {n} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed before the header timeout"
    );
    let answer = request(&d, &healthz(&d)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_and_the_cap_frees_up() {
    let d = Daemon::start(&[
        ("AMARRE_MAX_CONNECTIONS", "20"),
        ("AMARRE_HEADER_TIMEOUT_MS", "4000"),
    ])
    .await;
    let half = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", d.port);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = connect(&d).await;
        s.write_all(half.as_bytes()).await.expect("write");
        held.push(s);
    }
    // The daemon accepts in order: the 21st connection is over the cap.
    let answer = request(&d, &healthz(&d)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "over the cap: {answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).expect("a JSON body"),
        serde_json::json!({"error": "too_many_connections"})
    );
    d.wait_log("too many open connections").await;
    // The held connections time out; their slots are free again.
    for s in &mut held {
        assert!(
            until_closed(s, Duration::from_secs(30)).await.is_some(),
            "a held connection was never closed"
        );
    }
    let answer = request(&d, &healthz(&d)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after the cap: {answer}"
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_closed() {
    let d = Daemon::start(&[("AMARRE_BODY_TIMEOUT_MS", "1000")]).await;
    let mut s = connect(&d).await;
    let head = format!(
        "POST /sessions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"cwd\":",
        d.port
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let answer = until_closed(&mut s, Duration::from_secs(30))
        .await
        .expect("the connection was still open long after the body timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"error":"body_timeout"}"#), "{answer}");
    // No session was created from the half body.
    let (_, list) = d.get("/sessions").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

#[tokio::test]
async fn websockets_hold_their_connection_slot_until_they_close() {
    let instances = fake_instance(serde_json::json!({}));
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", instances.as_str()),
        ("AMARRE_MAX_CONNECTIONS", "4"),
    ])
    .await;
    let id = d.create(serde_json::json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("ws://127.0.0.1:{}/sessions/{id}", d.port);
    let connect = || async {
        tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .expect("timed out connecting a WebSocket")
    };
    // Sockets are opened until the cap refuses one (the test's HTTP client
    // may hold a keep-alive connection of its own).
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        match connect().await {
            Ok((ws, _)) => open.push(ws),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("every socket was accepted: sockets hold no slot");
    assert!(refused.contains("503"), "{refused}");
    assert!(
        (3..=4).contains(&open.len()),
        "{} sockets opened",
        open.len()
    );
    // A socket that closes gives its slot back.
    drop(open.pop());
    let deadline = Instant::now() + STEP;
    loop {
        if connect().await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed socket's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
