//! The WebSocket data plane, its limits, and browser safety (PROTOCOL.md
//! sections 3, 4 and 9).

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

async fn daemon(extra: &[(&str, &str)]) -> Daemon {
    let instances = fake_instance(json!({}));
    let mut env = vec![("AMARRE_INSTANCES_JSON", instances.as_str())];
    env.extend_from_slice(extra);
    Daemon::start(&env).await
}

async fn session(d: &Daemon) -> String {
    d.create(json!({})).await["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn records_round_trip_and_a_frame_may_carry_several() {
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_text("{\"n\":1}\n{\"n\":2}\r\n\n{\"n\":3}").await;
    for n in 1..=3 {
        assert_eq!(ws.recv_json("echoed record").await, json!({"n": n}));
    }
    // Records pass untouched, byte for byte.
    ws.send_text(r#"{"b":1,  "a":[ 2 ]}"#).await;
    assert_eq!(
        ws.recv_text("untouched record").await,
        r#"{"b":1,  "a":[ 2 ]}"#
    );
    assert_eq!(d.get(&format!("/sessions/{id}")).await.1["clients"], 1);
}

#[tokio::test]
async fn non_json_records_are_dropped_and_binary_frames_ignored() {
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_text("not json\n{\"n\":1}").await;
    ws.ws
        .send(Message::binary(b"{\"n\":99}".to_vec()))
        .await
        .unwrap();
    ws.send_json(json!({"n": 2})).await;
    // The drop is reported to the session's clients (PROTOCOL 12.6).
    assert_eq!(
        ws.recv_json("the drop report").await,
        json!({"type": "amarre.record_dropped", "direction": "from_client", "bytes": 8,
            "reason": "not_json", "count": 1})
    );
    assert_eq!(ws.recv_json("first JSON record").await, json!({"n": 1}));
    assert_eq!(ws.recv_json("second JSON record").await, json!({"n": 2}));
    d.wait_log("not JSON").await;
}

#[tokio::test]
async fn agent_output_is_split_on_bytes_without_breaking_characters() {
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    // The second line is cut inside the 4-byte emoji, the first in the
    // middle of the line; the fake agent writes each chunk separately.
    let bytes = "{\"a\":1}\n{\"t\":\"héllo 🌍\"}\r\n\n{\"c\":3}\n".as_bytes();
    let emoji_at = bytes.windows(4).position(|w| w == "🌍".as_bytes()).unwrap();
    let cuts = [0, 4, emoji_at + 2, bytes.len()];
    let chunks: Vec<Vec<u8>> = cuts
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect();
    ws.send_json(json!({"type": "fake.raw", "bytes": chunks, "delayMs": 30}))
        .await;
    assert_eq!(
        ws.recv_json("line split across writes").await,
        json!({"a": 1})
    );
    assert_eq!(
        ws.recv_json("line with multi-byte characters").await,
        json!({"t": "héllo 🌍"})
    );
    assert_eq!(
        ws.recv_json("line after an empty one").await,
        json!({"c": 3})
    );
}

#[tokio::test]
async fn a_partial_last_line_is_delivered_when_the_agent_exits() {
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.raw", "chunks": ["{\"last\":true}"], "delayMs": 1}))
        .await;
    ws.send_json(json!({"type": "fake.exit", "code": 0})).await;
    let (closed, texts) = ws.closed("close after exit").await;
    assert_eq!(closed.code, Some(1011));
    assert_eq!(
        texts.first().map(String::as_str),
        Some("{\"last\":true}"),
        "{texts:?}"
    );
    assert!(texts[1].contains("amarre.session_event"));
}

#[tokio::test]
async fn every_client_receives_everything_in_order_and_sessions_are_isolated() {
    let d = daemon(&[]).await;
    let a = session(&d).await;
    let b = session(&d).await;
    let mut a1 = d.ws(&a, "").await;
    let mut a2 = d.ws(&a, "").await;
    let mut b1 = d.ws(&b, "").await;
    a1.send_json(json!({"type": "fake.flood", "count": 500, "size": 50}))
        .await;
    for ws in [&mut a1, &mut a2] {
        for i in 0..500 {
            let v = ws.recv_json("flood record").await;
            assert_eq!(v["i"], i);
        }
    }
    b1.expect_silence(
        Duration::from_millis(200),
        "session B must not see session A's records",
    )
    .await;
    assert_eq!(d.get(&format!("/sessions/{a}")).await.1["clients"], 2);
}

#[tokio::test]
async fn a_client_is_attached_once_its_upgrade_is_answered() {
    // A record sent by another client right after a socket's upgrade was
    // answered reaches that socket: the client is attached before the 101
    // goes out, not some time after it.
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let mut sender = d.ws(&id, "").await;
    for n in 0..100 {
        let mut late = d.ws(&id, "").await;
        sender.send_json(json!({"n": n})).await;
        assert_eq!(sender.recv_json("the sender's echo").await["n"], n);
        let got = late.recv_json("the record sent after the upgrade").await;
        assert_eq!(got, json!({"n": n}), "attempt {n}: the first record seen");
    }
}

#[tokio::test]
async fn a_client_leaving_does_not_affect_the_agent() {
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let ws = d.ws(&id, "").await;
    drop(ws);
    d.wait_summary(&id, "no clients", |s| s["clients"] == 0)
        .await;
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"n": 1})).await;
    assert_eq!(ws.recv_json("echo after reconnect").await, json!({"n": 1}));
    assert_eq!(
        d.get(&format!("/sessions/{id}")).await.1["status"],
        "running"
    );
}

#[tokio::test]
async fn upgrades_follow_the_path_and_status_rules() {
    let d = daemon(&[]).await;
    assert_eq!(
        d.ws_refused("/sessions/000000000000", &[]).await,
        (404, "Session not found".into())
    );
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.exit", "code": 1})).await;
    d.wait_summary(&id, "crashed", |s| s["status"] == "crashed")
        .await;
    assert_eq!(
        d.ws_refused(&format!("/sessions/{id}"), &[]).await,
        (409, "Session crashed; restart it first".into())
    );
    let (st, body) = d.ws_refused("/", &[]).await;
    assert_eq!(
        (st, body.as_str()),
        (426, "Use /sessions/<id>; see docs/PROTOCOL.md")
    );
    let (st, body) = d.ws_refused("/instances", &[]).await;
    assert_eq!(st, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "not_found"})
    );
}

#[tokio::test]
async fn an_oversized_frame_closes_the_client_with_1009() {
    let d = daemon(&[("AMARRE_MAX_FRAME_BYTES", "1024")]).await;
    let id = session(&d).await;
    let mut other = d.ws(&id, "").await;
    let mut ws = d.ws(&id, "").await;
    ws.send_text(&format!("{{\"pad\":\"{}\"}}", "x".repeat(2000)))
        .await;
    let (closed, _) = ws.closed("close for a big frame").await;
    assert_eq!(closed.code, Some(1009));
    other.send_json(json!({"n": 1})).await;
    assert_eq!(
        other.recv_json("the other client is unaffected").await,
        json!({"n": 1})
    );
}

#[tokio::test]
async fn an_over_long_last_line_cut_off_by_the_exit_is_reported_before_the_crash() {
    let d = daemon(&[("AMARRE_MAX_LINE_BYTES", "100")]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    // 300 bytes with no newline (six client records each under the limit),
    // then the agent exits.
    for _ in 0..6 {
        ws.send_json(json!({"type": "fake.raw", "chunks": ["y".repeat(50)]}))
            .await;
    }
    ws.send_json(json!({"type": "fake.exit", "code": 3})).await;
    let report = ws.recv_json("the drop report").await;
    assert_eq!(
        report,
        json!({"type": "amarre.record_dropped", "direction": "from_agent",
               "bytes": 300, "reason": "line_too_long", "count": 1}),
        "{}",
        d.log()
    );
    let crashed = ws.recv_json("the crash").await;
    assert_eq!(crashed["event"], "crashed", "{crashed}");
    assert_eq!(crashed["exitCode"], 3);
}

#[tokio::test]
async fn oversized_lines_are_dropped_in_both_directions() {
    let d = daemon(&[("AMARRE_MAX_LINE_BYTES", "100")]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    // A client record over the line limit (in a frame under the frame limit).
    ws.send_text(&format!("{{\"pad\":\"{}\"}}\n{{\"n\":1}}", "x".repeat(200)))
        .await;
    let report = ws.recv_json("the drop report").await;
    assert_eq!(report["type"], "amarre.record_dropped");
    assert_eq!(report["reason"], "line_too_long");
    assert_eq!(report["direction"], "from_client");
    assert_eq!(
        ws.recv_json("the record after the dropped one").await,
        json!({"n": 1})
    );
    // An agent line over the limit.
    ws.send_json(json!({"type": "fake.flood", "count": 1, "size": 300}))
        .await;
    ws.send_json(json!({"n": 2})).await;
    assert_eq!(
        ws.recv_json("the line after the dropped one").await,
        json!({"n": 2})
    );
    d.wait_log("dropped an agent line longer than the limit")
        .await;
    d.wait_log("dropped a client record longer than the limit")
        .await;
}

#[tokio::test]
async fn a_slow_client_is_closed_with_1008_and_never_stalls_the_others() {
    // A 4 MiB queue: small beside the 40 MB flood, large enough that a
    // reader on a busy machine is not taken for a slow one.
    let d = daemon(&[("AMARRE_CLIENT_QUEUE_BYTES", "4194304")]).await;
    let id = session(&d).await;
    // The slow client never reads; its socket buffers fill, then its queue.
    let slow = d.ws(&id, "").await;
    let mut fast = d.ws(&id, "").await;
    // 40 MB, paced so that a reading client keeps up.
    let count = 100_000;
    fast.send_json(
        json!({"type": "fake.flood", "count": count, "size": 400, "burst": 200, "pauseMs": 2}),
    )
    .await;
    for i in 0..count {
        let v = fast.recv_json("flood record at the fast client").await;
        assert_eq!(v["i"], i);
    }
    d.wait_log("client too slow").await;
    d.wait_summary(&id, "only the fast client left", |s| s["clients"] == 1)
        .await;
    drop(slow);
}

#[tokio::test]
async fn a_burst_never_closes_clients_that_keep_reading_but_a_stalled_one_is_closed() {
    // Default queue limits (PROTOCOL.md section 4, 2.4.0); a short stall
    // time so that the stalled client is closed within the test.
    let d = daemon(&[("AMARRE_CLIENT_STALL_MS", "2000")]).await;
    let id = session(&d).await;
    let stalled = d.ws(&id, "").await;
    let mut a = d.ws(&id, "").await;
    let b = d.ws(&id, "").await;
    let count = 100_000u64;
    // One unpaced burst of 100 000 short lines.
    a.send_json(json!({"type": "fake.flood", "count": count, "size": 10}))
        .await;
    let readers: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(n, mut ws)| {
            tokio::spawn(async move {
                for i in 0..count {
                    let v = ws.recv_json("a burst record at a reading client").await;
                    assert_eq!(v["i"], i, "reader {n}: every record, in order");
                    // A reader that loses the processor for a moment (as a
                    // phone does) is still a client that drains.
                    if i == 2_000 && n == 1 {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
                ws
            })
        })
        .collect();
    let mut readers_back = Vec::new();
    for r in readers {
        readers_back.push(r.await.expect("reader"));
    }
    // The stalled client has taken nothing for longer than the stall time
    // while records wait: the next records close it, not the readers.
    let mut closed = false;
    for _ in 0..60 {
        readers_back[0]
            .send_json(json!({"type": "fake.flood", "count": 1, "size": 1}))
            .await;
        for ws in &mut readers_back {
            ws.recv_json("a record after the burst").await;
        }
        let (_, s) = d.get(&format!("/sessions/{id}")).await;
        if s["clients"] == 2 {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(closed, "the stalled client was never closed");
    d.wait_log("client too slow").await;
    drop(stalled);
}

#[tokio::test]
async fn a_full_stdin_queue_applies_backpressure_and_loses_nothing() {
    let d = daemon(&[("AMARRE_STDIN_QUEUE_RECORDS", "4")]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.pause", "ms": 300})).await;
    let mut frame = String::new();
    for i in 0..3000 {
        frame.push_str(&format!("{{\"i\":{i}}}\n"));
    }
    ws.send_text(&frame).await;
    assert_eq!(ws.recv_json("resumed").await["type"], "fake.resumed");
    for i in 0..3000 {
        assert_eq!(
            ws.recv_json("record after the pause").await,
            json!({"i": i})
        );
    }
}

#[tokio::test]
async fn the_server_pings_and_drops_a_silent_client() {
    let d = daemon(&[("AMARRE_WS_PING_MS", "40"), ("AMARRE_WS_IDLE_MS", "300")]).await;
    let id = session(&d).await;
    // A client that reads (and so answers pings) stays.
    let mut live = d.ws(&id, "").await;
    let got_ping = tokio::time::timeout(STEP, async {
        loop {
            match futures_util::StreamExt::next(&mut live.ws).await {
                Some(Ok(Message::Ping(_))) => return true,
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    })
    .await
    .expect("a ping within the step");
    assert!(got_ping);
    // A client that never reads never answers: dropped after the idle time.
    let _silent = d.ws(&id, "").await;
    d.wait_summary(&id, "two clients", |s| s["clients"] == 2)
        .await;
    let pump = async {
        loop {
            match futures_util::StreamExt::next(&mut live.ws).await {
                Some(Ok(_)) => continue,
                _ => return,
            }
        }
    };
    tokio::select! {
        _ = pump => panic!("the live client was dropped"),
        s = d.wait_summary(&id, "the silent client dropped", |s| s["clients"] == 1) => {
            assert_eq!(s["clients"], 1);
        }
    }
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_and_good_ones_accepted() {
    let d = daemon(&[
        ("AMARRE_ALLOWED_ORIGINS", "https://app.example"),
        ("AMARRE_ALLOWED_HOSTS", "agents.example"),
    ])
    .await;
    let id = session(&d).await;
    let path = format!("/sessions/{id}");
    let (st, body) = d
        .ws_refused(&path, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(st, 403);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "forbidden_origin"})
    );
    let (st, body) = d.ws_refused(&path, &[("host", "evil.example")]).await;
    assert_eq!(st, 403);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "forbidden_host"})
    );
    // Accepted: an Origin equal to the Host (the Android app), localhost
    // origins, a configured origin, tailnet and configured hosts.
    let host = format!("127.0.0.1:{}", d.port);
    for headers in [
        vec![("origin", format!("http://{host}"))],
        vec![("origin", "http://localhost:5173".to_owned())],
        vec![("origin", "https://app.example".to_owned())],
        vec![("host", "box.tail123.ts.net".to_owned())],
        vec![("host", "100.100.1.2:8341".to_owned())],
        vec![("host", "agents.example".to_owned())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut ws = d.ws_with(&id, "", &h).await;
        ws.send_json(json!({"ok": true})).await;
        assert_eq!(
            ws.recv_json("accepted socket works").await,
            json!({"ok": true}),
            "{headers:?}"
        );
    }
    // REST follows the same rules; CORS only for configured origins.
    let resp = d
        .http()
        .get(format!("{}/sessions", d.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = d
        .http()
        .get(format!("{}/sessions", d.url))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "forbidden_host"})
    );
    let resp = d
        .http()
        .get(format!("{}/sessions", d.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let resp = d
        .http()
        .get(format!("{}/sessions", d.url))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = d
        .http()
        .request(reqwest::Method::OPTIONS, format!("{}/sessions", d.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

/// Opens `/sessions/{id}` as a WebSocket over a bare TCP stream, to send
/// frames a well-behaved client library refuses to build.
async fn raw_socket(d: &Daemon, id: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", d.port))
        .await
        .expect("connect");
    let req = format!(
        "GET /sessions/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        d.port
    );
    s.write_all(req.as_bytes()).await.expect("send the upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut b))
            .await
            .expect("timed out waiting for the upgrade answer")
            .expect("read the upgrade answer");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame (payload under 126 bytes).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames until a Close; its status code (None: the
/// connection ended without one).
async fn close_code(s: &mut tokio::net::TcpStream) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut h = [0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut h))
            .await
            .expect("timed out waiting for the server's close");
        if read.is_err() {
            return None;
        }
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.ok()?;
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.ok()?;
            len = u64::from_be_bytes(l) as usize;
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        if h[0] & 0x0f == 8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

#[tokio::test]
async fn a_client_close_is_answered_and_bad_frames_get_1007_or_1002() {
    use tokio::io::AsyncWriteExt;
    let d = daemon(&[]).await;
    let id = session(&d).await;
    // A Close is answered with a Close echoing its code.
    let mut s = raw_socket(&d, &id).await;
    s.write_all(&client_frame(0x88, &4000u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut s).await,
        Some(4000),
        "the close is answered: {}",
        d.log()
    );
    // Invalid UTF-8 in a text frame: 1007.
    let mut s = raw_socket(&d, &id).await;
    s.write_all(&client_frame(0x81, b"{\"a\":\"\xff\xfe\"}"))
        .await
        .unwrap();
    assert_eq!(close_code(&mut s).await, Some(1007), "invalid UTF-8");
    d.wait_log("not valid UTF-8").await;
    // Reserved bits set: a protocol error, 1002.
    let mut s = raw_socket(&d, &id).await;
    s.write_all(&client_frame(0xC1, b"{}")).await.unwrap();
    assert_eq!(close_code(&mut s).await, Some(1002), "protocol error");
    d.wait_log("broke the WebSocket protocol").await;
    // A connection that just ends without a Close (a client killed, a
    // browser tab discarded) is a client going away, not a protocol error:
    // no warning, no 1002 in the log.
    let before = d.log().matches("broke the WebSocket protocol").count();
    let mut s = raw_socket(&d, &id).await;
    s.write_all(&client_frame(0x81, b"{\"gone\":1}"))
        .await
        .unwrap();
    // The connection ends without a Close frame.
    drop(s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, info) = d.get(&format!("/sessions/{id}")).await;
        if info["clients"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client was never detached: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        d.log().matches("broke the WebSocket protocol").count(),
        before,
        "a connection ending without a Close is not a protocol error: {}",
        d.log()
    );
    // The session is untouched.
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"n": 1})).await;
    assert_eq!(ws.recv_json("an echo afterwards").await, json!({"n": 1}));
}

#[tokio::test]
async fn attaching_and_detaching_during_replay_neither_panics_nor_ends_the_session() {
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.flood", "count": 1100, "size": 10}))
        .await;
    for i in 0..1100 {
        assert_eq!(ws.recv_json("the first flood").await["i"], i);
    }
    // Records keep flowing while clients attach with a replay of 1100+
    // records and leave at once.
    ws.send_json(
        json!({"type": "fake.flood", "count": 20_000, "size": 10, "burst": 50, "pauseMs": 1}),
    )
    .await;
    let drain = tokio::spawn(async move {
        for i in 0..20_000 {
            assert_eq!(ws.recv_json("the second flood").await["i"], i);
        }
        ws
    });
    for round in 0..150 {
        let query = if round % 2 == 0 {
            "?since=0"
        } else {
            "?since=500&hello=1"
        };
        let c = d.ws(&id, query).await;
        drop(c);
    }
    let mut ws = drain.await.expect("the reading client");
    ws.send_json(json!({"n": 1})).await;
    assert_eq!(ws.recv_json("an echo afterwards").await, json!({"n": 1}));
    let (_, s) = d.get(&format!("/sessions/{id}")).await;
    assert_eq!(s["status"], "running");
    let log = d.log();
    assert!(
        !log.contains("panicked"),
        "a connection task panicked:\n{log}"
    );
    assert!(!log.contains("session ended"), "{log}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_flooding_an_agent_that_does_not_read_keeps_the_daemon_within_its_bounds() {
    let d = daemon(&[]).await;
    let id = session(&d).await;
    let mut ws = d.ws(&id, "").await;
    ws.send_json(json!({"type": "fake.pause", "ms": 8000}))
        .await;
    let before = rss_kib(d.pid());
    // 4 MiB records, as fast as the daemon takes them, at an agent that
    // reads nothing: the stdin and inbound queues are bounded in bytes
    // (16 MiB each by default, docs/security.md), not only in records.
    let record = format!("{{\"pad\":\"{}\"}}", "x".repeat(4 << 20));
    let sender = tokio::spawn(async move {
        for _ in 0..400 {
            if ws.ws.send(Message::text(record.clone())).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = rss_kib(d.pid());
    sender.abort();
    assert!(
        after.saturating_sub(before) < 160 * 1024,
        "the daemon grew from {before} KiB to {after} KiB"
    );
}
