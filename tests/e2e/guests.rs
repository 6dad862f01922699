//! Adapters that misbehave or are given too much: a guest call never
//! blocks other sessions or the control plane, an adapter's memory holds
//! through long sessions, and what the host drops is reported to clients
//! (`amarre.record_dropped`, PROTOCOL 12.6).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// Reads text frames until one contains `needle` (no JSON parsing of the
/// large records in between).
async fn recv_containing(ws: &mut Ws, d: &Daemon, what: &str, needle: &str) -> String {
    use futures_util::FutureExt;
    loop {
        let t = std::panic::AssertUnwindSafe(ws.recv_text(what))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| panic!("{what}: daemon log:\n{}", d.log()));
        if t.contains(needle) {
            return t;
        }
    }
}

#[tokio::test]
async fn looping_adapters_fed_large_lines_never_stall_another_session_or_healthz() {
    let agent = fake_agent();
    let instances = json!([
        {"id": "default", "agent": "stdio", "command": agent},
        {"id": "loop", "agentPath": adapter_file("fixture-loop"), "command": agent},
    ])
    .to_string();
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &instances)]).await;
    let healthy = d.create(json!({})).await;
    let mut hws = d.ws(healthy["id"].as_str().unwrap(), "").await;
    hws.send_json(json!({"type": "warm"})).await;
    hws.recv_json("the healthy session's first echo").await;

    // Two sessions whose adapter loops on a 3 MiB line: each call's budget
    // is its cap (2 s of guest time), far more than the bound below.
    let looping = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let s = d.create(json!({"instanceId": "loop"})).await;
        let mut ws = d.ws(s["id"].as_str().unwrap(), "").await;
        ws.send_json(json!({"type": "warm"})).await;
        ws.recv_json("a record through the looping adapter").await;
        let line = json!({"type": "please loop", "pad": "x".repeat(3 << 20)});
        ws.send_json(line).await;
        looping.fetch_add(1, Ordering::SeqCst);
        let count = looping.clone();
        loops.push(tokio::spawn(async move {
            let (closed, _) = ws.closed("the looping session's trap").await;
            count.fetch_sub(1, Ordering::SeqCst);
            closed
        }));
    }
    let bound = Duration::from_secs(1);
    let mut probes_during_loops = 0;
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    while looping.load(Ordering::SeqCst) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the looping calls never trapped"
        );
        let t = Instant::now();
        let (st, _) = d.get("/healthz").await;
        assert_eq!(st, 200);
        let healthz = t.elapsed();
        let t = Instant::now();
        hws.send_json(json!({"type": "ping", "n": probes_during_loops}))
            .await;
        let echo = hws.recv_json("the healthy session's echo").await;
        assert_eq!(echo["n"], probes_during_loops);
        let round_trip = t.elapsed();
        worst = worst.max(healthz).max(round_trip);
        assert!(
            healthz < bound && round_trip < bound,
            "while adapters looped: /healthz took {healthz:?}, a record through another session {round_trip:?}"
        );
        if looping.load(Ordering::SeqCst) > 0 {
            probes_during_loops += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for l in loops {
        let closed = l.await.unwrap();
        assert_eq!(closed.code, Some(1011), "the loop ends in a budget trap");
    }
    assert!(
        probes_during_loops >= 3,
        "only {probes_during_loops} probes ran while the adapters looped (worst {worst:?})"
    );
    assert!(d.log().contains("exceeded its time budget"), "{}", d.log());
}

fn claude_instances() -> String {
    json!([{"id": "default", "agent": "claude-code", "command": fake_agent()}]).to_string()
}

#[tokio::test]
async fn claude_code_survives_300_turns_of_500_kb_and_a_12_mib_line() {
    let d = Daemon::start(&[("AMARRE_INSTANCES_JSON", &claude_instances())]).await;
    let s = d.create(json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "").await;
    // A client record too large for the adapter is dropped and reported.
    ws.send_json(json!({"type": "prompt", "id": "big", "message": "z".repeat(5 << 20)}))
        .await;
    let dropped = recv_containing(
        &mut ws,
        &d,
        "the client drop report",
        "amarre.record_dropped",
    )
    .await;
    let dropped: Value = serde_json::from_str(&dropped).unwrap();
    assert_eq!(dropped["direction"], "from_client");
    assert_eq!(dropped["reason"], "adapter_limit");
    // A second later, so that the agent-side drop below is reported at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for n in 0..300 {
        ws.send_json(json!({"type": "prompt", "id": format!("p{n}"), "message": "BIG 500000"}))
            .await;
        recv_containing(
            &mut ws,
            &d,
            &format!("turn {n}'s agent_end"),
            "\"agent_end\"",
        )
        .await;
    }
    // A line too large for the adapter: dropped and reported, not a trap.
    ws.send_json(json!({"type": "prompt", "id": "huge", "message": format!("BIG {}", 12 << 20)}))
        .await;
    let dropped = recv_containing(&mut ws, &d, "the drop report", "amarre.record_dropped").await;
    let dropped: Value = serde_json::from_str(&dropped).unwrap();
    assert_eq!(dropped["direction"], "from_agent");
    assert_eq!(dropped["reason"], "adapter_limit");
    assert_eq!(dropped["count"], 1);
    assert!(dropped["bytes"].as_u64().unwrap() > 12 << 20, "{dropped}");
    // The turn still ends (its result line is small).
    recv_containing(&mut ws, &d, "the huge turn's agent_end", "\"agent_end\"").await;
    ws.send_json(json!({"type": "get_messages", "id": "m"}))
        .await;
    let answer = recv_containing(&mut ws, &d, "the get_messages answer", "\"get_messages\"").await;
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["success"], true, "{}", &answer.to_string()[..200]);
    assert_eq!(answer["data"]["truncated"], true);
    let kept = answer["data"]["messages"].as_array().unwrap().len() as u64;
    assert!(kept >= 2, "{kept}");
    // 301 prompts, 300 answers.
    assert_eq!(
        answer["data"]["omittedMessages"].as_u64().unwrap() + kept,
        601
    );
    let summary = d.get(&format!("/sessions/{id}")).await.1;
    assert_eq!(summary["status"], "running", "{summary}");
    assert!(!d.log().contains("adapter trapped"), "{}", d.log());
}

#[tokio::test]
async fn records_the_host_drops_are_reported_to_every_client_once_a_second_per_reason() {
    let instances = fake_instance(json!({}));
    let d = Daemon::start(&[
        ("AMARRE_INSTANCES_JSON", &instances),
        ("AMARRE_MAX_LINE_BYTES", "4096"),
    ])
    .await;
    let s = d.create(json!({})).await;
    let id = s["id"].as_str().unwrap();
    let mut a = d.ws(id, "").await;
    let mut b = d.ws(id, "").await;
    let is_drop = |v: &Value| v["type"] == "amarre.record_dropped";

    a.send_text("this is not JSON").await;
    for ws in [&mut a, &mut b] {
        let r = ws.recv_until("the not_json report", is_drop).await;
        assert_eq!(
            r,
            json!({"type": "amarre.record_dropped", "direction": "from_client",
                "bytes": 16, "reason": "not_json", "count": 1})
        );
    }
    a.send_json(json!({"type": "x", "pad": "y".repeat(5000)}))
        .await;
    for ws in [&mut a, &mut b] {
        let r = ws
            .recv_until("the client line_too_long report", is_drop)
            .await;
        assert_eq!(r["direction"], "from_client");
        assert_eq!(r["reason"], "line_too_long");
        assert_eq!(r["count"], 1);
    }

    // Five agent lines over the limit (after the second of the last
    // line_too_long report): one report at once, the other four in one
    // report a second later; the session keeps running.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.send_json(json!({"type": "fake.flood", "count": 5, "size": 5000}))
        .await;
    let first = a
        .recv_until("the agent line_too_long report", is_drop)
        .await;
    assert_eq!(first["direction"], "from_agent");
    assert_eq!(first["reason"], "line_too_long");
    assert_eq!(first["count"], 1);
    let rest = a.recv_until("the held reports", is_drop).await;
    assert_eq!(rest["reason"], "line_too_long");
    assert_eq!(rest["count"], 4, "{rest}");
    a.send_json(json!({"type": "still", "n": 1})).await;
    assert_eq!(
        a.recv_json("an echo after the drops").await["type"],
        "still"
    );
}
