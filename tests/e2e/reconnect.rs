//! Lossless reconnect (PROTOCOL.md section 11, protocol 2.3.0): sequence
//! numbers, replay, the gap record, pending questions and the hello.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

async fn daemon(extra: &[(&str, &str)]) -> Daemon {
    let instances = fake_instance(json!({}));
    let mut env = vec![("AMARRE_INSTANCES_JSON", instances.as_str())];
    env.extend_from_slice(extra);
    Daemon::start(&env).await
}

fn seq(v: &Value) -> u64 {
    v["_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no _seq in {v}"))
}

#[tokio::test]
async fn a_client_without_parameters_receives_records_unchanged() {
    let d = daemon(&[]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut plain = d.ws(&id, "").await;
    let mut numbered = d.ws(&id, "?seq=1").await;
    plain.send_text(r#"{"type":"x",  "n":1}"#).await;
    assert_eq!(
        plain.recv_text("plain record").await,
        r#"{"type":"x",  "n":1}"#
    );
    assert_eq!(
        numbered.recv_text("numbered record").await,
        r#"{"_seq":1,"type":"x",  "n":1}"#
    );
    // Lines that are not JSON objects get no number.
    plain.send_text("[1,2]").await;
    assert_eq!(numbered.recv_text("array record").await, "[1,2]");
    plain.send_json(json!({"n": 2})).await;
    assert_eq!(seq(&numbered.recv_json("second object").await), 2);
}

#[tokio::test]
async fn the_hello_comes_first_with_exactly_its_fields() {
    let d = daemon(&[]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "").await;
    for n in 0..3 {
        ws.send_json(json!({"n": n})).await;
        ws.recv_json("echo").await;
    }
    let mut h = d.ws(&id, "?hello=1").await;
    let hello = h.recv_json("hello").await;
    let adapter_version = hello["adapter"]["version"].clone();
    let mut caps = vec!["seq", "replay", "pending-questions", "question-resolved"];
    if amarre::web_client_compiled_in() {
        caps.push("web");
    }
    caps.extend(["review", "acp"]);
    assert_eq!(
        hello,
        json!({
            "type": "amarre.hello",
            "protocol": "2.4.0",
            "server": {"name": "amarre", "version": env!("CARGO_PKG_VERSION")},
            "sessionId": id,
            "instanceId": "default",
            "adapter": {"name": "stdio", "version": adapter_version},
            "capabilities": caps,
            "seq": 3,
        })
    );
    assert!(adapter_version.is_string());
    // hello=1 alone does not number records.
    ws.send_json(json!({"n": 9})).await;
    assert_eq!(h.recv_json("live record").await, json!({"n": 9}));
}

#[tokio::test]
async fn reconnecting_with_since_mid_flood_loses_and_duplicates_nothing() {
    let d = daemon(&[]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    let total = 6000u64;
    ws.send_json(
        json!({"type": "fake.flood", "count": total, "size": 100, "burst": 100, "pauseMs": 2}),
    )
    .await;
    let mut last_seq = 0;
    let mut next_i = 0u64;
    // Read part of the flood, then drop the socket mid-flood.
    for _ in 0..1500 {
        let v = ws.recv_json("flood before the disconnect").await;
        assert_eq!(v["i"], next_i);
        assert_eq!(seq(&v), last_seq + 1);
        last_seq = seq(&v);
        next_i += 1;
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ws = d.ws(&id, &format!("?since={last_seq}")).await;
    let hello = ws.recv_json("hello").await;
    assert_eq!(hello["type"], "amarre.hello");
    assert!(hello["seq"].as_u64().unwrap() >= last_seq);
    while next_i < total {
        let v = ws.recv_json("flood after the reconnect").await;
        assert_ne!(
            v["type"], "amarre.replay_gap",
            "the buffer holds the whole flood"
        );
        assert_eq!(v["i"], next_i, "no gap, no duplicate");
        assert_eq!(seq(&v), last_seq + 1);
        last_seq = seq(&v);
        next_i += 1;
    }
}

#[tokio::test]
async fn a_since_older_than_the_buffer_gets_the_gap_record_first() {
    let d = daemon(&[("AMARRE_REPLAY_RECORDS", "10")]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    ws.send_json(json!({"type": "fake.flood", "count": 50, "size": 1}))
        .await;
    for _ in 0..50 {
        ws.recv_json("flood").await;
    }
    let mut late = d.ws(&id, "?since=5").await;
    assert_eq!(late.recv_json("hello").await["type"], "amarre.hello");
    assert_eq!(
        late.recv_json("gap").await,
        json!({"type": "amarre.replay_gap", "from": 6, "to": 40})
    );
    for n in 41..=50u64 {
        let v = late.recv_json("replayed record").await;
        assert_eq!(seq(&v), n);
        assert_eq!(v["i"], n - 1);
    }
    // Caught up: no gap when since is inside the buffer.
    let mut again = d.ws(&id, "?since=45").await;
    again.recv_json("hello").await;
    assert_eq!(seq(&again.recv_json("first replayed").await), 46);
}

#[tokio::test]
async fn a_late_client_gets_pending_questions_until_they_are_answered() {
    let d = daemon(&[]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut first = d.ws(&id, "").await;
    first
        .send_json(json!({"type": "fake.ask", "id": "q1", "method": "confirm"}))
        .await;
    first
        .send_json(json!({"type": "fake.ask", "id": "n1", "method": "notify"}))
        .await;
    first
        .send_json(json!({"type": "fake.ask", "id": "q2", "method": "select"}))
        .await;
    for _ in 0..3 {
        first.recv_json("questions at the first client").await;
    }
    // A late client, with no parameters, receives both open questions in
    // order and never the notify.
    let mut late = d.ws(&id, "").await;
    assert_eq!(late.recv_json("pending q1").await["id"], "q1");
    assert_eq!(late.recv_json("pending q2").await["id"], "q2");
    late.expect_silence(Duration::from_millis(150), "a notify is never pending")
        .await;
    // With seq, pending questions carry their original numbers.
    let mut numbered = d.ws(&id, "?seq=1").await;
    assert_eq!(seq(&numbered.recv_json("pending q1").await), 1);
    assert_eq!(seq(&numbered.recv_json("pending q2").await), 3);
    // Answered questions are forgotten.
    first
        .send_json(json!({"type": "extension_ui_response", "id": "q1", "confirmed": true}))
        .await;
    // 2.4.0: the answer resolves the question (amarre.question_resolved),
    // then the fake agent echoes it.
    let resolved = first.recv_json("question_resolved").await;
    assert_eq!(
        (resolved["type"].clone(), resolved["id"].clone()),
        (json!("amarre.question_resolved"), json!("q1"))
    );
    first.recv_json("the fake agent echoes the answer").await;
    let mut later = d.ws(&id, "").await;
    assert_eq!(later.recv_json("only q2 remains").await["id"], "q2");
    later
        .expect_silence(Duration::from_millis(150), "q1 was answered")
        .await;
    // A replayed question is not sent twice.
    let mut replaying = d.ws(&id, "?since=0").await;
    let mut ids = Vec::new();
    replaying.recv_json("hello").await;
    for _ in 0..5 {
        let r = replaying.recv_json("replay").await;
        ids.push((r["type"].clone(), r["id"].clone()));
    }
    let ask = json!("extension_ui_request");
    assert_eq!(
        ids,
        vec![
            (ask.clone(), json!("q1")),
            (ask.clone(), json!("n1")),
            (ask, json!("q2")),
            (json!("amarre.question_resolved"), json!("q1")),
            (json!("extension_ui_response"), json!("q1")),
        ]
    );
    replaying
        .expect_silence(
            Duration::from_millis(150),
            "no pending copy of a replayed question",
        )
        .await;
}

#[tokio::test]
async fn a_question_past_its_timeout_is_not_pending() {
    let d = daemon(&[]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut first = d.ws(&id, "").await;
    first
        .send_json(json!({"type": "fake.ask", "id": "t1", "method": "confirm", "timeout": 100}))
        .await;
    first.recv_json("question").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = d.ws(&id, "").await;
    late.expect_silence(Duration::from_millis(150), "the question timed out")
        .await;
}

#[tokio::test]
async fn sequence_numbers_survive_a_restart_and_crashes_forget_questions() {
    let d = daemon(&[]).await;
    let id = d.create(json!({})).await["id"].as_str().unwrap().to_owned();
    let mut ws = d.ws(&id, "?seq=1").await;
    ws.send_json(json!({"type": "fake.ask", "id": "q1", "method": "confirm"}))
        .await;
    assert_eq!(seq(&ws.recv_json("question").await), 1);
    ws.send_json(json!({"type": "fake.exit", "code": 1})).await;
    let (_, texts) = ws.closed("crash").await;
    let crash: Value = serde_json::from_str(texts.last().unwrap()).unwrap();
    assert_eq!(crash["type"], "amarre.session_event");
    // 2.4.0: the crash cancels the question first (amarre.question_resolved).
    let cancelled: Value = serde_json::from_str(&texts[texts.len() - 2]).unwrap();
    assert_eq!(cancelled["type"], "amarre.question_resolved");
    assert_eq!(
        seq(&cancelled),
        2,
        "the server's own records are numbered too"
    );
    assert_eq!(seq(&crash), 3);
    let (st, _) = d.post(&format!("/sessions/{id}/restart"), "").await;
    assert_eq!(st, 200);
    let mut ws = d.ws(&id, "?seq=1").await;
    ws.expect_silence(Duration::from_millis(150), "the crash forgot the question")
        .await;
    ws.send_json(json!({"n": 1})).await;
    assert_eq!(
        seq(&ws.recv_json("first record after the restart").await),
        4
    );
    let mut replay = d.ws(&id, "?since=0").await;
    replay.recv_json("hello").await;
    let seqs: Vec<u64> = [
        replay.recv_json("r1").await,
        replay.recv_json("r2").await,
        replay.recv_json("r3").await,
        replay.recv_json("r4").await,
    ]
    .iter()
    .map(seq)
    .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}
