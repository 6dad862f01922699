//! A fake agent for end-to-end tests. It echoes every stdin line to stdout
//! (like `cat`) and obeys records of type `fake.*`:
//!
//! - `{"type":"fake.exit","code":N}`: exit with code N.
//! - `{"type":"fake.env"}`: print its env, cwd, pid and process group.
//! - `{"type":"fake.flood","count":N,"size":S}`: print N records
//!   `{"type":"fake.flood","i":I,"pad":"..."}` with S bytes of padding;
//!   with `"burst":B,"pauseMs":M` it flushes and pauses M ms every B records.
//! - `{"type":"fake.raw","chunks":["...",...],"delayMs":D}`: write each
//!   chunk as is (no newline added), flushing and pausing D ms between them;
//!   `"bytes":[[b,...],...]` instead of `chunks` writes raw bytes (to cut
//!   inside a multi-byte character).
//! - `{"type":"fake.ask","id":ID,"method":M,"title":T,"timeout":MS?,"delayMs":D?}`:
//!   print an `extension_ui_request` (after D ms).
//! - `{"type":"fake.stderr","text":T}`: write T to stderr.
//! - `{"type":"fake.spawn_child"}`: start `sleep 600` in its process group
//!   and print `{"type":"fake.child","pid":P}`.
//! - `{"type":"fake.signal","signal":N}`: send itself signal N.
//! - `{"type":"fake.pause","ms":N}`: stop reading stdin for N ms, then
//!   print `{"type":"fake.resumed"}`.
//!
//! - a Claude Code `user` line whose text is `STREAM N`: print a Claude
//!   stream-json turn with N text deltas `d<k> ` (for the claude-code
//!   adapter in benchmarks), then its `result`.
//! - a Claude Code `user` line whose text is `BIG N`: print one `assistant`
//!   line whose text is N bytes, then its `result`.
//!
//! Env: `FAKE_IGNORE_TERM=1` ignores SIGTERM; `FAKE_HELLO=text` prints a
//! line at start; `FAKE_EXIT_ON_EOF=0` keeps running after stdin closes;
//! `FAKE_PI=1` makes it a scripted agent speaking pi's RPC dialect instead
//! (see `fake_pi.rs`).

use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::{Value, json};

#[path = "../fake_pi.rs"]
mod fake_pi;

fn main() {
    if std::env::var("FAKE_PI").as_deref() == Ok("1") {
        fake_pi::run();
        return;
    }
    if std::env::var("FAKE_IGNORE_TERM").as_deref() == Ok("1") {
        // SAFETY: installing SIG_IGN for SIGTERM has no memory effects.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Ok(hello) = std::env::var("FAKE_HELLO") {
        let _ = writeln!(out, "{hello}");
        let _ = out.flush();
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let parsed: Option<Value> = serde_json::from_str(&line).ok();
        let kind = parsed
            .as_ref()
            .and_then(|v| v["type"].as_str())
            .unwrap_or("");
        let v = parsed.clone().unwrap_or(Value::Null);
        match kind {
            "fake.exit" => {
                let _ = out.flush();
                std::process::exit(v["code"].as_i64().unwrap_or(0) as i32);
            }
            "fake.env" => {
                let env: serde_json::Map<String, Value> = std::env::vars()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                // SAFETY: getpid/getpgrp only read.
                let (pid, pgid) = unsafe { (libc::getpid(), libc::getpgrp()) };
                let cwd = std::env::current_dir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"type": "fake.env", "env": env, "cwd": cwd, "pid": pid, "pgid": pgid})
                );
            }
            "fake.flood" => {
                let count = v["count"].as_u64().unwrap_or(100);
                let pad = "x".repeat(v["size"].as_u64().unwrap_or(10) as usize);
                let burst = v["burst"].as_u64().unwrap_or(0);
                let pause = Duration::from_millis(v["pauseMs"].as_u64().unwrap_or(0));
                for i in 0..count {
                    let _ = writeln!(out, "{}", json!({"type": "fake.flood", "i": i, "pad": pad}));
                    if burst > 0 && (i + 1) % burst == 0 {
                        let _ = out.flush();
                        std::thread::sleep(pause);
                    }
                }
            }
            "fake.raw" => {
                let delay = Duration::from_millis(v["delayMs"].as_u64().unwrap_or(20));
                let mut chunks: Vec<Vec<u8>> = v["chunks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c.as_str().unwrap_or("").as_bytes().to_vec())
                    .collect();
                chunks.extend(v["bytes"].as_array().into_iter().flatten().map(|c| {
                    c.as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| b.as_u64().unwrap_or(0) as u8)
                        .collect::<Vec<u8>>()
                }));
                for chunk in chunks {
                    let _ = out.write_all(&chunk);
                    let _ = out.flush();
                    std::thread::sleep(delay);
                }
            }
            "fake.ask" => {
                let mut ask = json!({
                    "type": "extension_ui_request",
                    "id": v["id"],
                    "method": v["method"].as_str().unwrap_or("confirm"),
                    "title": v["title"].as_str().unwrap_or("Run bash?"),
                    "message": "{\"command\":\"ls\"}",
                });
                if let Some(t) = v.get("timeout") {
                    ask["timeout"] = t.clone();
                }
                if let Some(ms) = v["delayMs"].as_u64() {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                let _ = writeln!(out, "{ask}");
            }
            "fake.stderr" => {
                eprintln!("{}", v["text"].as_str().unwrap_or(""));
            }
            "fake.spawn_child" => {
                let child = std::process::Command::new("sleep").arg("600").spawn();
                let pid = child.map(|c| c.id()).unwrap_or(0);
                let _ = writeln!(out, "{}", json!({"type": "fake.child", "pid": pid}));
            }
            "user"
                if v["message"]["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("STREAM ")) =>
            {
                let n: u64 = v["message"]["content"].as_str().unwrap_or("")[7..]
                    .trim()
                    .parse()
                    .unwrap_or(0);
                claude_stream(&mut out, n);
            }
            "user"
                if v["message"]["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("BIG ")) =>
            {
                let n: usize = v["message"]["content"].as_str().unwrap_or("")[4..]
                    .trim()
                    .parse()
                    .unwrap_or(0);
                claude_big(&mut out, n);
            }
            "fake.pause" => {
                std::thread::sleep(Duration::from_millis(v["ms"].as_u64().unwrap_or(100)));
                let _ = writeln!(out, "{}", json!({"type": "fake.resumed"}));
            }
            "fake.signal" => {
                let _ = out.flush();
                // SAFETY: raise only delivers a signal to this process.
                unsafe {
                    libc::raise(v["signal"].as_i64().unwrap_or(9) as i32);
                }
            }
            _ => {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
    if std::env::var("FAKE_EXIT_ON_EOF").as_deref() == Ok("0") {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// One Claude Code turn answered by a single assistant text of `n` bytes.
fn claude_big(out: &mut impl Write, n: usize) {
    let _ = writeln!(
        out,
        "{}",
        json!({"type": "system", "subtype": "init", "session_id": "big", "model": "fake", "permissionMode": "default"})
    );
    let _ = writeln!(
        out,
        "{}",
        json!({"type": "assistant", "message": {"id": format!("msg_big_{n}"), "model": "fake", "role": "assistant",
            "content": [{"type": "text", "text": "b".repeat(n)}]}, "session_id": "big", "parent_tool_use_id": null})
    );
    let _ = writeln!(
        out,
        "{}",
        json!({"type": "result", "subtype": "success", "is_error": false, "result": "", "session_id": "big"})
    );
}

/// One Claude Code turn streaming `n` text deltas (stream-json lines).
fn claude_stream(out: &mut impl Write, n: u64) {
    let _ = writeln!(
        out,
        "{}",
        json!({"type": "system", "subtype": "init", "session_id": "bench", "model": "fake", "permissionMode": "default"})
    );
    let event = |e: Value| json!({"type": "stream_event", "event": e, "session_id": "bench", "parent_tool_use_id": null});
    let _ = writeln!(
        out,
        "{}",
        event(
            json!({"type": "message_start", "message": {"id": "msg_bench", "model": "fake", "role": "assistant", "content": []}})
        )
    );
    let _ = writeln!(
        out,
        "{}",
        event(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        )
    );
    for k in 0..n {
        let delta = event(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("d{k} ")}}),
        );
        let _ = writeln!(out, "{delta}");
    }
    let _ = writeln!(
        out,
        "{}",
        event(json!({"type": "content_block_stop", "index": 0}))
    );
    let _ = writeln!(
        out,
        "{}",
        event(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}))
    );
    let _ = writeln!(out, "{}", event(json!({"type": "message_stop"})));
    let _ = writeln!(
        out,
        "{}",
        json!({"type": "result", "subtype": "success", "is_error": false, "result": "", "session_id": "bench"})
    );
}
