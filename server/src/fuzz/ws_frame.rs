//! The WebSocket frame path: bytes a client sends after the upgrade, read
//! by the same WebSocket implementation and limits as the daemon's sockets
//! (tungstenite, server role, the frame limit doubled as in `http::ws`),
//! then split into records and parsed as the reader does. Frames are built
//! from the input (opcodes, FIN, masks, lengths, payloads of JSON lines or
//! any bytes), some of them broken on purpose. Nothing panics, reading
//! ends (with messages, a close or an error), and every record handed on
//! is a line within the limit that parses as JSON.

use arbitrary::{Arbitrary, Unstructured};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::session::framing::split_frame;
use crate::session::record::parse_head;

const MAX_FRAME: usize = 4096;
const MAX_LINE: usize = 512;

#[derive(Debug, Arbitrary)]
struct Frame {
    fin: bool,
    /// 0..=15; the common ones most often.
    opcode: u8,
    masked: bool,
    mask: [u8; 4],
    /// Lie about the length (a broken frame).
    length_delta: Option<i8>,
    payload: Payload,
}

#[derive(Debug, Arbitrary)]
enum Payload {
    Lines(Vec<String>),
    Bytes(Vec<u8>),
    Close(u16, String),
}

fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let payload: Vec<u8> = match &frame.payload {
        Payload::Lines(lines) => lines
            .iter()
            .map(|l| {
                if l.len() % 3 == 0 {
                    serde_json::json!({"type": "prompt", "message": l}).to_string()
                } else {
                    l.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
        Payload::Bytes(b) => b.clone(),
        Payload::Close(code, reason) => {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason.as_bytes());
            p
        }
    };
    let opcode = match frame.opcode % 16 {
        0..=5 => 1,
        6 => 0,
        7 => 2,
        8 => 8,
        9 => 9,
        10 => 10,
        n => n,
    };
    out.push(u8::from(frame.fin) << 7 | opcode);
    let len = match frame.length_delta {
        Some(d) => (payload.len() as i64 + d as i64).max(0) as u64,
        None => payload.len() as u64,
    };
    let mask_bit = u8::from(frame.masked) << 7;
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u16::MAX as u64 {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if frame.masked {
        out.extend_from_slice(&frame.mask);
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ frame.mask[i % 4]),
        );
    } else {
        out.extend_from_slice(&payload);
    }
}

async fn read_all(bytes: Vec<u8>) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME * 2))
        .max_frame_size(Some(MAX_FRAME * 2));
    let mut ws = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
    let writer = tokio::spawn(async move {
        let _ = client.write_all(&bytes).await;
        let _ = client.shutdown().await;
        // Keep the client's end open until the reader is done, reading
        // what the server answers (pongs, the close).
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut sink).await;
    });
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(frame)) => {
                if frame.len() > MAX_FRAME {
                    break;
                }
                for line in split_frame(frame.as_str()) {
                    if line.len() > MAX_LINE {
                        continue;
                    }
                    if let Some(head) = parse_head(line.as_bytes()) {
                        assert!(!line.contains('\n'));
                        assert!(
                            serde_json::from_str::<serde_json::Value>(line).is_ok()
                                || !head.is_object,
                            "a record taken as JSON is not: {line}"
                        );
                    }
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(ws);
    let _ = writer.await;
}

/// The bytes of an input: after a first byte 0xff, the input is what the
/// client sends, as is (the corpus holds such inputs); any other is
/// decoded into frames.
fn check(rt: &tokio::runtime::Runtime, data: &[u8]) {
    if let Some(raw) = data.strip_prefix(b"\xff") {
        return read(rt, raw.to_vec());
    }
    let mut u = Unstructured::new(data);
    let mut bytes = Vec::new();
    while let Ok(true) = u.arbitrary::<bool>() {
        if u.ratio(1, 16).unwrap_or(false) {
            // Raw bytes between frames.
            let n = u.int_in_range(0..=32).unwrap_or(0);
            bytes.extend(u.bytes(n).unwrap_or_default());
            continue;
        }
        let Ok(frame) = Frame::arbitrary(&mut u) else {
            break;
        };
        encode(&frame, &mut bytes);
    }
    read(rt, bytes);
}

fn read(rt: &tokio::runtime::Runtime, bytes: Vec<u8>) {
    let done = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), read_all(bytes)).await
    });
    assert!(done.is_ok(), "reading the frames never ended");
}

#[test]
fn fuzz_websocket_frames() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    super::run("ws_frame", |data| check(&rt, data));
}
